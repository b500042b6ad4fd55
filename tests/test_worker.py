"""`mailbot run` as a real process: IDLE pick-up, reconnection after a drop, clean SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from servers import DovecotServer, MailUser, SmtpServer, free_port
from test_e2e import citizen_mail, write_config

from mailbot import demo
from mailbot.config import PollingConfig
from mailbot.core.statuses import OutboxKind
from mailbot.mail.imap import ImapMailbox
from mailbot.mail.poller import MailboxPoller
from mailbot.mail.smtp import Envelope


def start_worker(config: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailbot.cli", "--config", str(config), "run", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop_by_sigterm(worker: subprocess.Popen[str], timeout: float = 30) -> str:
    """SIGTERM, then the worker's stderr once it has exited (killed if it has not)."""
    try:
        worker.send_signal(signal.SIGTERM)
        return worker.communicate(timeout=timeout)[1]
    finally:
        if worker.poll() is None:
            worker.kill()


class CountedMailbox(ImapMailbox):
    """A real IMAP source whose connection attempts are counted, at the poller's clock."""

    def __init__(self, *args: object, clock: FakeClock, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.clock = clock
        self.attempts: list[float] = []

    def connect(self) -> None:
        self.attempts.append(self.clock.now)
        super().connect()


class FakeClock:
    """The poller's clock: its waits move it on at once (no sleep, nothing timed)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> bool:
        self.now += seconds
        return False


class Unread:
    """No mail is ever read: every connection is refused before."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the pipeline was used ({name}) with no server")


def test_the_backoff_delay_holds_across_cycles_against_a_server_that_is_down(
    imap_user: MailUser,
) -> None:
    """The IMAP server down (a closed port): each failed poll logs ``retry_in`` and the
    next is not tried before it, within a cycle and in the next ones. Before, every cycle
    (each polling interval) connected again at once, whatever the delay had grown to:
    with a 60 s interval, once a minute for ever instead of 1, 2, 4… 300 s apart. The
    scheduler's cycles are played on the poller's clock, which its waits move on."""
    clock = FakeClock()
    config = imap_user.imap_config().model_copy(update={"port": free_port()})
    source = CountedMailbox(config, name="general", clock=clock)
    polling = PollingConfig(interval_seconds=60, max_backoff_seconds=300, use_idle=False)
    poller = MailboxPoller("general", "INBOX", source, Unread(), polling, lambda: None)
    poller.clock, poller.pause = clock, clock.pause
    for n in range(12):  # what APScheduler does: a cycle every interval, 95 % of it long
        clock.now = n * 60.0
        poller.cycle(60 * 0.95)
    # 1, 2, 4… s apart: each poll after the delay the one before it logged, then 300 s
    assert source.attempts == [0, 1, 3, 7, 15, 31, 63, 127, 255, 511]
    assert poller.retry_at == 811  # the next, after the ceiling of 300 s


def test_run_acknowledges_new_mail_reconnects_and_stops_on_sigterm(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    etrangers = dovecot.new_user("etr")
    # As shipped: the language models loaded before the first poll.
    config = write_config(tmp_path, imap_user, etrangers, smtp_server, warm_language_models=True)
    imap_user.append(citizen_mail(1))  # backlog, read at start
    worker = start_worker(config, "--acknowledge-existing")
    try:
        smtp_server.wait_for(1, timeout=60)  # a start: imports, the model, lingua's warm-up
        etrangers.append(
            citizen_mail(
                2,
                sender="idle@example.fr",
                to="pref-etrangers@seine-maritime.gouv.fr",
                body="Bonjour,\nOù en est ma demande de renouvellement de titre de séjour ?\n",
            )  # a question for the mailbox's own service: one AR, no forward
        )
        smtp_server.wait_for(2, timeout=30)  # seen through IDLE, before the 60 s poll

        imap_user.drop_connections()  # the server drops mailbot's session
        time.sleep(0.5)
        imap_user.append(citizen_mail(3, sender="after.drop@example.fr"))
        received = smtp_server.wait_for(3, timeout=30)
        assert received[-1].rcpt_tos == ("after.drop@example.fr",)

        err = stop_by_sigterm(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert 'msg="worker stopped"' in err
    assert err.index('msg="language models loaded"') < err.index("msg=batch ")
    assert "mailbox unreachable, reconnecting later" in err
    # At INFO, one summary line per batch; the line per mail is DEBUG (issue 14, point 8).
    assert "msg=message " not in err
    batches = [line for line in err.splitlines() if "msg=batch " in line]
    assert sum(int(re.search(r" mails=(\d+)", line).group(1)) for line in batches) == 3  # type: ignore[union-attr]
    assert all(re.search(r" acknowledge=\d+ ", line) for line in batches)
    paris = ZoneInfo("Europe/Paris")  # a reference's year is Paris's, whatever the server's zone
    mails = [*imap_user.messages(), *etrangers.messages()]
    years = {m.internaldate.astimezone(paris).year for m in mails}
    for received in smtp_server.messages:
        found = re.search(rb"SM-(\d{4})-\d{6}\b", received.raw)
        assert found and int(found.group(1)) in years  # the year of the mail's INTERNALDATE
    assert "Bonjour" not in err  # no bodies in the logs
    assert len(smtp_server.messages) == 3  # nothing sent twice across the reconnection


def _loading_the_application(pid: int) -> bool:
    """Whether `run` has begun loading the application: its configuration model's
    compiled core (pydantic_core) is mapped; `mailbot.cli` itself never imports it."""
    return "_pydantic_core" in Path(f"/proc/{pid}/maps").read_text()


def test_a_sigterm_while_the_worker_loads_ends_in_a_clean_stop(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    """systemd may stop a worker that is still starting: the stop must be clean (exit 0,
    the worker's own stop), not a death by signal. SIGTERM is sent as soon as `run`
    begins loading the configuration, long before the worker runs."""
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    imap_user.append(citizen_mail(1))
    worker = start_worker(config, "--acknowledge-existing")
    try:
        deadline = time.monotonic() + 20
        while not _loading_the_application(worker.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        err = stop_by_sigterm(worker, timeout=60)
    assert worker.returncode == 0, err
    assert 'msg="worker stopped"' in err


# `mailbot run` whose SIGTERM lands right after the command read what its start-up handlers
# noted (in `_started`: the collector's pass, before the console and `Worker.run`).
SIGTERM_AFTER_LOADING = """
import os, signal, sys
from mailbot import cli
started = cli._started
def _started(collect):
    os.kill(os.getpid(), signal.SIGTERM)
    started(collect)
cli._started = _started
sys.argv[0] = "mailbot"
sys.exit(cli.console())
"""


def test_a_sigterm_after_loading_before_run_takes_its_signals_still_stops_it(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    """Between the application built and ``Worker.run`` installing its handlers, a SIGTERM
    was noted by the start-up's handler after anyone read it: the worker ran on, deaf to
    it (a restarted worker of test_cluster, stopped as it finished starting, hung until
    killed). It now stops cleanly, as at any other moment."""
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    worker = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_AFTER_LOADING, "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert 'msg="worker stopped"' in err


DECISIONS = (["acknowledge"], ["skip"])  # the third column of a row of the demo's table


def test_demo_acknowledges_citizens_only(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(root / "rules.yaml"),
            "demo",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line[:1].isdigit()]
    decisions = [row[2] for row in rows]
    assert decisions.count("acknowledge") == 12
    assert decisions.count("skip") == 3
    skipped = "\n".join(line for line in result.stdout.splitlines() if " skip " in line)
    assert (
        "null-return-path" in skipped and "mailing-list" in skipped and "auto-submitted" in skipped
    )
    outgoing = [path.read_bytes() for path in (tmp_path / "out" / "outgoing").glob("*.eml")]
    to_citizens = [raw for raw in outgoing if b"Auto-Submitted: auto-replied" in raw]
    forwards = [raw for raw in outgoing if b"Content-Type: message/rfc822" in raw]
    assert len(to_citizens) == 12
    table = [line for line in result.stdout.splitlines() if line.split()[2:3] in DECISIONS]
    assert len(forwards) == sum(" → " in line for line in table) >= 5
    assert len(outgoing) == len(to_citizens) + len(forwards)
    # The legend explains the route arrows, right under the table.
    legend = result.stdout.splitlines()[len(table) + 1]
    assert legend.startswith("ROUTE: → transferred") and "↪ re-oriented" in legend


def test_demo_names_files_and_leaves_a_config_for_its_data(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "mailbot.cli"]
    demo = subprocess.run(
        [*cli, "--config", str(root / "rules.yaml"), "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split() for line in demo.stdout.splitlines() if line.split()[2:3] in DECISIONS]
    references = {row[3] for row in rows if row[3] != "-"}
    year = sorted(references)[0].split("-")[1]  # from the data, not the calendar
    names = {path.name for path in (out / "outgoing").glob("*.eml")}
    for row in rows:
        reference, route = row[3], row[4]
        if reference == "-":
            continue
        assert reference.startswith(f"SM-{year}-")
        if route.startswith("↪"):
            assert f"{reference}-reorientation.eml" in names
        else:
            assert f"{reference}-ar.eml" in names
        if route == "→":
            assert f"{reference}-forward-{row[5]}.eml" in names
    forward = (out / "outgoing" / f"SM-{year}-000002-forward-permis.eml").read_bytes()
    assert b"Content-Type: message/rfc822" in forward
    ar = (out / "outgoing" / f"SM-{year}-000002-ar.eml").read_bytes()
    assert b"Auto-Submitted: auto-replied" in ar
    # demo-out/rules.yaml reads the demo's database, from any working directory.
    config = out / "rules.yaml"
    for command in (
        ["indicators", "--from", f"{year}-01-01", "--to", f"{year}-12-31", "--format", "json"],
        ["unanswered"],
    ):
        result = subprocess.run(
            [*cli, "--config", str(config), *command],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        if command[0] == "indicators":
            assert json.loads(result.stdout)["received"] == len(references)
        else:
            assert f"SM-{year}-000001" in result.stdout


def test_demo_names_an_agents_reply_and_a_transfer_notice_for_what_they_are() -> None:
    """`demo --web`: a reply sent from the console, or the notice of an agent's transfer,
    was written as « SM-…-ar-2.eml », like a second AR of the message."""
    message = SimpleNamespace(reference="SM-2026-000001", service="cartes-grises", reorient=False)
    kinds = {"1": OutboxKind.AR, "2": OutboxKind.REPLY, "3": OutboxKind.NOTICE}
    kinds["4"] = OutboxKind.FORWARD
    items = [SimpleNamespace(id=int(n), kind=kind, message_pk=7) for n, kind in kinds.items()]
    store = SimpleNamespace(outbox_items=lambda: items, message=lambda id: message)
    names = [
        demo.outgoing_name(store, Envelope("<>", "x@example.fr", b"", name=n))  # type: ignore[arg-type]
        for n in kinds
    ]
    assert names == [
        "SM-2026-000001-ar",
        "SM-2026-000001-reply",
        "SM-2026-000001-notice",
        "SM-2026-000001-forward-cartes-grises",
    ]


def test_demo_runs_from_any_folder_without_a_config(tmp_path: Path) -> None:
    """`mailbot demo` outside the checkout, no --config: the project's rules.yaml (beside
    the editable install), not "rules.yaml: cannot read file"."""
    result = subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "demo", "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ars = [p for p in (tmp_path / "out" / "outgoing").glob("*.eml") if "-forward-" not in p.name]
    assert len(ars) == 12
    assert (tmp_path / "out" / "rules.yaml").is_file()
