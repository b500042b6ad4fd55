"""The agents' console under load (issue 12, point 13): the queue with 10,000 open
messages (target ≤ 200 ms), the message page reading the mail over IMAP on loopback
(≤ 300 ms), and sending a standard reply to the outbox (≤ 100 ms).

    python bench/console.py [--open 10000] [--repeat 30]

A private Dovecot and aiosmtpd (tests/servers.py), a SQLite store holding the open
messages of one service plus one real mail read by the pipeline, and the console served
by uvicorn on 127.0.0.1 (tests/web/webtools.py). Times are whole HTTP requests on loopback
from an httpx client: the server's time plus a little client overhead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "web")]

from deskworld import citizen_mail, in_thread, write_config  # noqa: E402
from servers import DovecotServer, SmtpServer  # noqa: E402
from webtools import csrf_from, local_login, running_console  # noqa: E402

from mailbot.app.context import app_from_config  # noqa: E402
from mailbot.cli import main as cli  # noqa: E402
from mailbot.config import load_config  # noqa: E402
from mailbot.core.statuses import Decision  # noqa: E402
from mailbot.store import NewMessage, Store  # noqa: E402


def fill(store: Store, count: int) -> None:
    """``count`` open messages of etrangers over the last 60 days, in one transaction."""
    now = datetime.now(UTC)
    with store.transaction() as tx:
        for n in range(1, count + 1):
            received = now - timedelta(minutes=(n * 8640 // 1000) % 86400)
            tx.insert_message(
                NewMessage(
                    mailbox="etrangers",
                    folder="Archives",
                    uidvalidity=1,
                    uid=n,
                    message_id=f"<bulk-{n}@example.fr>",
                    content_hash=f"h{n}",
                    received_at=received,
                    sender=f"usager{n}@example.fr",
                    sender_name=f"Usager {n}",
                    subject=f"Titre de séjour, demande {n}",
                    in_reply_to=None,
                    decision=Decision.ACKNOWLEDGE,
                    reasons=["citizen-mail"],
                    size=2000,
                    defects=[],
                    reference=f"SM-2026-{n + 100000:06d}",
                    service="etrangers",
                    category="information",
                )
            )


def timed(work: Callable[[], object], repeat: int) -> tuple[float, float]:
    for _ in range(3):
        work()  # warm-up: templates compiled, connections open
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def run(count: int, repeat: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        DovecotServer() as dovecot,
        SmtpServer() as smtp,
    ):
        general, etrangers = dovecot.new_user("gen"), dovecot.new_user("etr")
        etrangers.append(citizen_mail(1, name="Marie Dupont"))
        path = write_config(Path(tmp), general, etrangers, smtp)
        command = ["--config", str(path), "-q", "poll", "--once", "--acknowledge-existing"]
        assert in_thread(lambda: cli(command)) == 0
        config = load_config(path)
        app = app_from_config(config)
        start = time.perf_counter()
        fill(app.store, count)
        print(f"filled {count} open messages in {time.perf_counter() - start:.1f} s")
        polled = app.store.message(message_id="<citizen-1@example.fr>")
        web = Path(tmp) / "web"
        web.mkdir()
        with (
            running_console(web, accounts=("khaddad",), config=config, backend=app) as console,
            console.client() as client,
        ):
            local_login(client, "khaddad")
            token = csrf_from(client.get("/").text)

            def queue() -> None:
                assert client.get("/").status_code == 200

            def search() -> None:
                assert client.get("/", params={"q": "demande 4242"}).status_code == 200

            def message() -> None:
                page = client.get(f"/courriel/{polled.id}")
                assert page.status_code == 200 and "expire bientôt" in page.text

            numbers = iter(range(1, count + 1))

            def send() -> None:
                pk = next(numbers)
                form = {"csrf_token": token, "modele": "reponse-dossier-etranger", "etat": "0"}
                form["usager_nom"] = f"Usager {pk}"
                reply = client.post(f"/courriel/{pk + 1}/reponse", data=form)
                assert reply.status_code == 303, reply.status_code

            for name, work, target in (
                (f"queue page, {count} open (first page of 50)", queue, 200),
                ("queue page, search by words", search, 200),
                ("message page, mail read over IMAP (loopback)", message, 300),
                ("send a standard reply to the outbox", send, 100),
            ):
                median, p95 = timed(work, repeat)
                print(f"{name}: median {median:.0f} ms, p95 {p95:.0f} ms (target ≤ {target} ms)")
            smtp.wait_for(repeat + 3, timeout=30)
            print(f"replies accepted by the SMTP server: {len(smtp.messages)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--open", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    run(args.open, args.repeat)
