"""The worker's Prometheus endpoint, scraped live from a real `mailbot run` (issue 16)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

from pg import PostgresServer
from prometheus_client.parser import text_string_to_metric_families
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail, write_config
from test_poison import start_worker, stop_worker, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_live_scrape_shows_what_the_worker_did(
    tmp_path: Path, imap_user: MailUser, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        imap_user,
        dovecot.new_user("etr"),
        smtp_server,
        status={"metrics_port": port},
    )
    imap_user.append(citizen_mail(1))
    worker = start_worker(config, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: len(smtp_server.messages) == 1, 60, "the AR")
        wait_until(lambda: get(base + "/readyz")[0] == 200, 30, "readiness")
        # the poll's figures are counted when its batch is over, just after its AR has left
        wait_until(
            lambda: "mailbot_mails_processed_total{" in get(base + "/metrics")[1], 30, "count"
        )
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/nowhere")[0] == 404
        status, text = get(base + "/metrics")
    finally:
        assert stop_worker(worker) == 0
    assert status == 200
    found = samples(text)
    general = (("mailbox", "general"),)
    assert found[("mailbot_mails_processed_total", (("decision", "acknowledge"), *general))] == 1
    assert found[("mailbot_ars", (("status", "sent"),))] == 1
    assert found[("mailbot_outbox_depth", ())] == 0
    assert found[("mailbot_outbox_oldest_pending_seconds", ())] == 0
    assert found[("mailbot_quarantined", general)] == 0
    assert found[("mailbot_open_messages", (("age", "0-2"), *general))] == 1
    inbox = (("folder", "INBOX"), *general)
    assert found[("mailbot_poll_duration_seconds_count", inbox)] >= 1
    assert 0 <= found[("mailbot_poll_lag_seconds", inbox)] < 120
    assert found[("mailbot_imap_errors", inbox)] == 0
    assert found[("mailbot_imap_reconnects_total", inbox)] == 0
    names = sorted({name for name, _labels in found if name.startswith("mailbot_")})
    print("\nmetrics scraped:", " ".join(names))


def test_readiness_follows_the_database_and_liveness_the_process(
    tmp_path: Path, imap_user: MailUser, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    server = PostgresServer()
    url = server.start()
    port = free_port()
    config = write_config(
        tmp_path,
        imap_user,
        dovecot.new_user("etr"),
        smtp_server,
        database=url,
        status={"metrics_port": port},
    )
    worker = start_worker(config, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    stopped = False
    try:
        wait_until(lambda: get(base + "/readyz")[0] == 200, 60, "readiness")
        server.stop()  # the database goes away
        stopped = True
        wait_until(lambda: get(base + "/readyz") == (503, "not ready\n"), 60, "not ready")
        assert get(base + "/healthz") == (200, "ok\n")  # alive: no restart would help
    finally:
        stop_worker(worker)
        if not stopped:
            server.stop()


def test_a_second_worker_on_the_port_of_the_first_exits_2_saying_why(
    tmp_path: Path, imap_user: MailUser, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    """Two workers on one host with one rules.yaml (the walkthrough of two workers): the
    second could not bind the metrics port and died as a bug would, `unexpected error`
    at CRITICAL with an OSError traceback, exit 1. A socket holds the port here."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        config = write_config(
            tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, status={"metrics_port": port}
        )
        worker = start_worker(config, tmp_path / "worker.log")
        try:
            code = worker.wait(timeout=120)
        finally:
            if worker.poll() is None:
                worker.kill()
    log = (tmp_path / "worker.log").read_text(encoding="utf-8")
    assert code == 2, log
    assert f"error: cannot serve the metrics on 127.0.0.1:{port}" in log
    assert "Address already in use" in log and "give each worker its own port" in log
    assert "unexpected error" not in log
