"""mailbot benchmarks, against a real Dovecot and aiosmtpd on loopback.

    python bench/run.py [--backlog 2000] [--burst 1000] [--latency 50] [--rss 1000,20000]

(a) throughput on a backlog, side by side with a raw pipe (imapclient batch FETCH + email
    parse + one aiosmtplib send per message, no logic), and their ratio;
(b) with the worker on IDLE: a burst appended at once, time from the last append to the
    last AR; then single-mail arrival-to-AR latency p50/p95;
(c) peak RSS of `mailbot poll --once` (a child process) on two backlog sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiosmtplib
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import DovecotServer, MailUser, SmtpServer  # noqa: E402

from mailbot.app.context import build_app  # noqa: E402
from mailbot.core import language  # noqa: E402
from mailbot.worker import Worker, imap_sources  # noqa: E402

SUBJECTS = [
    "Demande de carte grise suite à un achat",
    "Échange de permis de conduire étranger",
    "Renouvellement titre de séjour - rendez-vous",
    "Passeport perdu, que faire ?",
    "Question sur ma demande de naturalisation",
]


def realistic_mail(n: int) -> bytes:
    """A citizen's mail of a typical size (~3 KB, some with a small attachment)."""
    body = (
        "Bonjour Madame, Monsieur,\n\n"
        f"Je me permets de vous écrire au sujet de mon dossier n°{100000 + n}. "
        "J'ai déposé ma demande il y a trois semaines sur le site de l'ANTS et je n'ai "
        "toujours pas de nouvelles. Pourriez-vous m'indiquer où en est son traitement ?\n\n"
    ) * 4 + "Je vous remercie par avance.\nCordialement,\nCamille Durand\n06 12 34 56 78\n"
    sender = f"usager{n}@example.fr"  # a backlog is mostly different people
    head = (
        f"Return-Path: <{sender}>\r\nFrom: Camille Durand <{sender}>\r\n"
        "To: pref-contact@seine-maritime.gouv.fr\r\n"
        f"Subject: {SUBJECTS[n % len(SUBJECTS)]}\r\n"
        f"Message-ID: <bench-{n}-{time.time_ns()}@example.fr>\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
    )
    if n % 10:
        return (
            head + "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + body.replace("\n", "\r\n")
        ).encode()
    attachment = "JVBERi0xLjQKJcfs" * 40
    return (
        head + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + body.replace("\n", "\r\n")
        + '\r\n--b\r\nContent-Type: application/pdf; name="piece.pdf"\r\n'
        'Content-Disposition: attachment; filename="piece.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + attachment + "\r\n--b--\r\n"
    ).encode()


def fill(user: MailUser, count: int) -> None:
    """Append ``count`` mails over one connection (MULTIAPPEND is not needed at this size)."""
    with user.connect() as client:
        for n in range(count):
            client.append("INBOX", realistic_mail(n))


def write_config(
    workdir: Path, users: dict[str, MailUser], smtp: SmtpServer, routing: bool = False
) -> Path:
    """The shipped rules.yaml on the test servers; routing off unless asked (core loop only)."""
    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    if not routing:
        data.pop("routing", None)
    else:
        defaults = data["routing"]["defaults"]
        data["routing"]["defaults"] = {name: defaults[name] for name in users}
    data["mailboxes"] = {
        name: {
            **data["mailboxes"][name],
            "imap": user.imap_config().model_dump(mode="json", exclude_none=True),
        }
        for name, user in users.items()
    }
    data["smtp"] = smtp.smtp_config().model_dump(mode="json", exclude_none=True)
    data["database"] = f"sqlite:///{workdir / 'bench.db'}"
    data["templates"] = str(ROOT / "templates")
    data["policy"] = {"rate_limit": {"max_per_sender": 1000, "window_hours": 24}}
    data["polling"] = {"interval_seconds": 3600, "batch_size": 200, "use_idle": True}
    path = workdir / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def raw_pipe(user: MailUser, smtp: SmtpServer, batch: int) -> int:
    """The floor: fetch in batches, parse, send one mail per message over one connection."""

    async def send_all(messages: list[email.message.EmailMessage]) -> None:
        client = aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port, start_tls=False)
        await client.connect()
        for msg in messages:
            await client.send_message(
                msg, sender="", recipients=[str(msg["From"].addresses[0].addr_spec)]
            )
        await client.quit()

    count = 0
    with user.connect() as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        loop = asyncio.new_event_loop()
        for start in range(0, len(uids), batch):
            fetched = client.fetch(uids[start : start + batch], ["BODY.PEEK[]", "INTERNALDATE"])
            parsed = [
                email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
                for data in fetched.values()
            ]
            loop.run_until_complete(send_all(parsed))  # type: ignore[arg-type]
            count += len(parsed)
        loop.close()
    return count


def bench_throughput(dovecot: DovecotServer, backlog: int) -> dict[str, float]:
    user = dovecot.new_user("tput")
    fill(user, backlog)
    with SmtpServer() as smtp, tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sent = raw_pipe(user, smtp, 200)
        raw_seconds = time.perf_counter() - start
        smtp.wait_for(sent)
        smtp.clear()
        bot_rate, acknowledged = run_mailbot(Path(tmp) / "core", user, smtp, routing=False)
        smtp.clear()
        routed_user = dovecot.new_user("routed")
        fill(routed_user, backlog)
        routed_rate, _ = run_mailbot(Path(tmp) / "routed", routed_user, smtp, routing=True)
        forwards = len(smtp.messages) - acknowledged
    raw_rate = sent / raw_seconds
    print(
        f"(a) backlog {backlog}: raw pipe {raw_rate:7.1f} msg/s ({raw_seconds:.2f} s), "
        f"mailbot core loop {bot_rate:7.1f} msg/s ({acknowledged} ARs) "
        f"-> ratio {bot_rate / raw_rate:.2f}x (target >= 0.80x)"
    )
    print(
        f"    with routing on (language detection, transfers): {routed_rate:7.1f} msg/s, "
        f"{forwards} forwards besides the ARs -> ratio {routed_rate / raw_rate:.2f}x"
    )
    return {"raw": raw_rate, "mailbot": bot_rate, "routed": routed_rate}


def run_mailbot(
    workdir: Path, user: MailUser, smtp: SmtpServer, routing: bool
) -> tuple[float, int]:
    workdir.mkdir()
    config = write_config(workdir, {"general": user}, smtp, routing=routing)
    app = build_app(config, acknowledge_existing=True)  # the backlog is there before the start
    worker = Worker(app.config, app.pipeline, app.outbox, imap_sources(app.config))
    start = time.perf_counter()
    outcomes = worker.poll_once()
    seconds = time.perf_counter() - start
    acknowledged = sum(o.decision == "acknowledge" for o in outcomes)
    smtp.wait_for(acknowledged)
    app.store.close()
    return acknowledged / seconds, acknowledged


def bench_idle(dovecot: DovecotServer, burst: int, singles: int) -> None:
    user = dovecot.new_user("idle")
    with SmtpServer() as smtp, tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), {"general": user}, smtp)
        app = build_app(config)
        worker = Worker(app.config, app.pipeline, app.outbox, imap_sources(app.config))
        thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
        language.warm_up()  # what `run` does before its first poll, done before the clock starts
        thread.start()
        time.sleep(1.0)  # the job has connected and entered IDLE
        # Each arrival is its own IMAP session, as an MTA's LMTP delivery would be. (Appends
        # on one long session are announced by Dovecot only when the IDLE ends.)
        mails = [realistic_mail(n) for n in range(burst)]
        for raw in mails:
            user.append(raw)
        last_append = time.perf_counter()
        smtp.wait_for(burst, timeout=300)
        burst_seconds = time.perf_counter() - last_append
        print(
            f"(b) burst of {burst}: last AR {burst_seconds:.2f} s after the last append "
            "(target <= 5 s)"
        )
        latencies = []
        for n in range(singles):
            raw = realistic_mail(10_000 + n)
            start = time.perf_counter()
            user.append(raw)
            smtp.wait_for(burst + n + 1, timeout=30)
            latencies.append(time.perf_counter() - start)
        worker.stop.set()
        thread.join(timeout=30)
        app.store.close()
    quantiles = statistics.quantiles(latencies, n=20)
    print(
        f"    single mail over {singles}: p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {quantiles[18] * 1000:.0f} ms (target p95 <= 1000 ms)"
    )


def peak_rss_mb(dovecot: DovecotServer, backlog: int) -> float:
    user = dovecot.new_user(f"rss{backlog}")
    fill(user, backlog)
    with SmtpServer() as smtp, tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), {"general": user}, smtp)
        # VmHWM, the child's own peak: ru_maxrss survives execve on Linux, so a child forked
        # from this (large) bench process would report the bench's size.
        probe = (
            "import re, resource, sys\n"
            "from mailbot.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "status = open('/proc/self/status').read()\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', status)\n"
            "peak = int(hwm.group(1)) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(peak, file=sys.stderr)\n"
            "sys.exit(code)\n"
        )
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                probe,
                "--config",
                str(config),
                "-q",
                "poll",
                "--once",
                "--acknowledge-existing",
            ],
            capture_output=True,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(child.stderr.decode())
        smtp.wait_for(backlog, timeout=120)
        usage = int(child.stderr.decode().strip().splitlines()[-1])
    return usage / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=50)
    parser.add_argument("--rss", default="1000,20000")
    args = parser.parse_args()
    with DovecotServer() as dovecot:
        bench_throughput(dovecot, args.backlog)
        bench_idle(dovecot, args.burst, args.latency)
        sizes = [int(s) for s in args.rss.split(",")]
        results: dict[int, float] = {}
        for size in sizes:
            results[size] = peak_rss_mb(dovecot, size)
            print(f"(c) peak RSS, backlog {size}: {results[size]:.1f} MB")
        if len(sizes) == 2:
            small, large = results[sizes[0]], results[sizes[1]]
            print(f"    {sizes[1]} vs {sizes[0]}: {large / small:.2f}x (target <= 1.20x)")


if __name__ == "__main__":
    main()
