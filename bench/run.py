"""mailbot benchmarks, against a real Dovecot and an aiosmtpd sink on loopback.

    python bench/run.py [--backlog 2000] [--scenarios stay-short,stay-3k,transfer-short,transfer-3k]
                        [--repeat 3] [--trees DIR,DIR] [--parts throughput,idle,rss]
                        [--burst 1000] [--latency 50] [--rss 1000,20000] [--rss-repeat 1]
                        [--profile DIR] [--prefill 0]

(a) throughput on a backlog, per scenario, side by side with a raw pipe (imapclient batch
    FETCH + email parse + one aiosmtplib send per message, no logic) on the same mails, and
    their ratio. mailbot runs with the shipped rules.yaml, routing on (as in production),
    `poll --once` in a child process of each source tree (``--trees``: an older checkout,
    e.g. a ``git archive`` export, compared in the same run); CPU ms per mail is that
    process's (time.process_time) over the poll, "+N helper" the CPU of its child processes
    (a routing helper, routing.parallel: its start included) and how long the intake
    waited for the helper's decisions over the poll. The SMTP sink runs in a process of its
    own (bench/sink.py), sharing the GIL with neither side. Scenarios:
      stay-short / stay-3k: plain questions to the general mailbox that stay at its
        service (one AR each), of ~450 characters or ~3 KB;
      transfer-short / transfer-3k: mails routed to another service (an AR and a forward).
(b) with the worker on IDLE: a burst appended at once, time from the last append to the
    last AR; then single-mail arrival-to-AR latency p50/p95;
(c) peak RSS of `mailbot -q poll --once` (a child process of each tree, as cron runs it) on
    two backlog sizes: each size is filled once and read by each tree in turn, on a database
    of its own; the ratio of the sizes per tree and repeat.

Each line of (a) also gives the machine's CPU per mail over that run (``/proc/stat``: all
processes at normal priority, the servers included — a niced job's time is left out) and
what it implies: with N cores, no run can take less wall time than machine CPU / N, so
``ceiling`` is the ratio mailbot would reach if its wall were exactly that floor. It ends
with the poll split in two: the intake (to its last batch recorded) and the delivery that
was left once it ended ("delivery alone"): a long tail means the delivery is what holds the
poll back, not the intake (issue 14, thirty-second session). Then the sink's own CPU per
mail it received (its process's, from ``/proc``; the raw pipe's line gives it too): on a
machine of few cores it is taken from the side measured, and from mailbot's four busy
processes more than from the raw pipe's one. And where the poll's thread spent the poll's
wall (``/proc/…/schedstat``): on a core, waiting for one (the machine's other processes
had them), or blocked (on the routing helper, the GIL, a commit, the network) (issue 14,
thirty-fifth session).

``--prefill N``: each database of (a) holds N earlier messages of the mailbox before its poll
(acknowledged over the last weeks, in another folder; written outside the timing), as a
mailbox in service does: a cost that grows with the mailbox does not show on the empty
database of every other run (issue 14, twenty-second session).

``--profile DIR``: each `poll --once` of (a) runs under py-spy (samples holding the GIL, 100
a second: a few per cent slower), its stacks kept in DIR and its CPU by phase printed
(bench/phases.py).
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import phases  # noqa: E402
from servers import DovecotServer, MailUser  # noqa: E402
from sink import SinkProcess  # noqa: E402

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


# Questions for the general mailbox: the first two stay at its service (general), the
# others go to the cartes-grises service (routing with the shipped rules and model, checked
# with `mailbot explain`).
STAY = [
    (
        "Horaires d'ouverture de l'accueil",
        "Je souhaiterais connaître les horaires d'ouverture de l'accueil de la préfecture à "
        "Rouen, en particulier le vendredi après-midi, ainsi que les moyens d'accès en "
        "transports en commun. ",
    ),
    (
        "Renseignement sur l'accueil",
        "Pourriez-vous m'indiquer l'adresse exacte de l'accueil du public et s'il faut "
        "prendre rendez-vous avant de se présenter au guichet d'information générale ? ",
    ),
]
TRANSFER = [
    (
        "Demande de carte grise suite à un achat",
        "J'ai acheté un véhicule d'occasion il y a trois semaines et ma demande de certificat "
        "d'immatriculation (carte grise) déposée sur le site de l'ANTS est toujours en cours "
        "d'instruction. ",
    ),
    (
        "Carte grise : changement d'adresse",
        "Suite à mon déménagement, je n'arrive pas à faire le changement d'adresse sur la "
        "carte grise de mon véhicule sur le site de l'ANTS, le certificat d'immatriculation "
        "n'est pas mis à jour. ",
    ),
]


def question(n: int, subject: str, paragraph: str, size: int) -> bytes:
    """A plain-text question of about ``size`` characters to the general mailbox."""
    text = f"Bonjour Madame, Monsieur,\n\n{paragraph}\n\n"
    while len(text) < size - 80:
        text += paragraph + f"(dossier n°{100000 + n})\n\n"
    text += "Je vous remercie par avance.\nCordialement,\nCamille Durand\n"
    sender = f"usager{n}@example.fr"
    return (
        f"Return-Path: <{sender}>\r\nFrom: Camille Durand <{sender}>\r\n"
        f"To: pref-contact@seine-maritime.gouv.fr\r\nSubject: {subject}\r\n"
        f"Message-ID: <bench-{n}-{time.time_ns()}@example.fr>\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + text.replace("\n", "\r\n")
    ).encode()


def scenario_mail(scenario: str, n: int) -> bytes:
    kind, _, size = scenario.partition("-")
    subject, paragraph = (STAY if kind == "stay" else TRANSFER)[n % 2]
    return question(n, subject, paragraph, 3000 if size == "3k" else 0)


SCENARIOS: dict[str, Callable[[int], bytes]] = {
    name: (lambda n, name=name: scenario_mail(name, n))  # type: ignore[misc]
    for name in ("stay-short", "stay-3k", "transfer-short", "transfer-3k")
}
FORWARDS = {"stay-short": 0, "stay-3k": 0, "transfer-short": 1, "transfer-3k": 1}


def fill(user: MailUser, count: int, mail: Callable[[int], bytes] = realistic_mail) -> None:
    """``count`` mails into the INBOX at once (Maildir delivery, as an MTA would)."""
    user.deliver([mail(n) for n in range(count)])


def write_config(
    workdir: Path,
    users: dict[str, MailUser],
    smtp: Any,
    routing: bool = False,
    tree: Path = ROOT,
) -> Path:
    """A tree's shipped rules.yaml on the test servers; routing off unless asked. Each tree
    reads its own rules, templates and model: an older tree may not know a newer key."""
    data = yaml.safe_load((tree / "rules.yaml").read_text(encoding="utf-8"))
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
    # What the test server sets only: an older tree may not know a newer default's key.
    data["smtp"] = smtp.smtp_config().model_dump(mode="json", exclude_none=True, exclude_unset=True)
    data["database"] = f"sqlite:///{workdir / 'bench.db'}"
    data["templates"] = str(tree / "templates")
    data["policy"] = {"rate_limit": {"max_per_sender": 1000, "window_hours": 24}}
    data["polling"] = {"interval_seconds": 3600, "batch_size": 200, "use_idle": True}
    path = workdir / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def machine_cpu() -> float:
    """Seconds of CPU the whole machine spent at normal priority (user, system, interrupts;
    not ``nice``: a niced job beside the bench is not the bench's cost)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    user, _nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def raw_pipe(user: MailUser, smtp: SinkProcess, batch: int) -> int:
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


# `poll --once` in a child process of one source tree, timed inside it around the poll only
# (start-up, imports and lingua's models are not the loop's cost): prints a JSON line.
POLL_CHILD = """
import gc, json, os, sys, time
gc.disable()  # as the console script starts `poll` and `run` (mailbot.cli.console)
import mailbot
from mailbot.core import language
from mailbot.worker import Worker, imap_sources
pool_file = os.path.join(os.path.dirname(mailbot.__file__), "app", "routing_pool.py")
if "def start_routing_helper" in open(pool_file, encoding="utf-8").read():
    # As `run` and `poll` build it (cli._worker): the configuration read, the routing helper
    # forked at once, and given to the pipeline, where it decides every mail.
    from mailbot.app.context import app_from_config
    from mailbot.app.routing_pool import start_routing_helper
    from mailbot.config import load_config
    config = load_config(sys.argv[1])
    if os.path.exists(os.path.join(os.path.dirname(mailbot.__file__), "heap.py")):
        from mailbot.heap import map_large_buffers
        map_large_buffers()  # as cli._worker does, before its forks (a newer tree)
    smtp = None
    if os.path.exists(os.path.join(os.path.dirname(mailbot.__file__), "mail", "smtp_process.py")):
        # The SMTP process (smtp.own_process, a newer tree), forked first as cli._worker does.
        from mailbot.mail.smtp_process import start_smtp_process
        smtp = start_smtp_process(config)
    helper = start_routing_helper(config)
    if os.path.exists(os.path.join(os.path.dirname(mailbot.__file__), "cpu.py")):
        # As cli._worker does after its forks (a newer tree): its threads on one CPU.
        from mailbot.cpu import keep_worker_on_one_cpu
        keep_worker_on_one_cpu(config.polling.worker_cpu, config.database)
    app = app_from_config(config, transport=smtp, acknowledge_existing=True, routing_pool=helper)
else:
    from mailbot.app.context import build_app
    app = build_app(sys.argv[1], acknowledge_existing=True)
language.warm_up()
worker = Worker(app.config, app.pipeline, app.outbox, imap_sources(app.config))
from mailbot import cli
if hasattr(cli, "_started"):  # `run`'s end of start-up: the collector on, for the work
    cli._started(collect=True)
else:
    gc.enable()
def machine():  # bench/run.py's machine_cpu: this child runs another tree's code
    with open("/proc/stat", encoding="ascii") as stat:
        user, _nice, system, _idle, _iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    return (user + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
# When the intake's last batch is recorded (a tree whose worker has ``_poll_folders``): what
# the poll takes after it is the delivery left to drain, the tail.
intake_end = []
folders = getattr(worker, "_poll_folders", None)
if folders is not None:
    def timed_folders():
        try:
            return folders()
        finally:
            intake_end.append(time.perf_counter())
    worker._poll_folders = timed_folders
def scheduled():  # the poll thread's seconds on a core and waiting for one (schedstat)
    try:
        with open("/proc/thread-self/schedstat") as stat:
            on_core, waiting = stat.read().split()[:2]
    except OSError:  # a kernel without schedstats
        return None
    return int(on_core) / 1e9, int(waiting) / 1e9
wall, cpu, busy, sched = time.perf_counter(), time.process_time(), machine(), scheduled()
outcomes = worker.poll_once()
ended = time.perf_counter()
tail = ended - intake_end[-1] if intake_end else None
wall, cpu, busy = ended - wall, time.process_time() - cpu, machine() - busy
sched = [b - a for a, b in zip(sched, scheduled())] if sched else None
# A routing helper (routing.parallel, a newer tree) and the SMTP process stopped and waited
# for: their CPU, start included, is then the children's (a process's own CPU leaves it out).
pool = getattr(app.pipeline, "routing_pool", None)
waited = getattr(pool, "waited", 0.0)
getattr(app.pipeline, "close", lambda: None)()
app.outbox.transport.close()  # the SMTP process (a newer tree) ended: its CPU is a child's
import resource
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
helper = usage.ru_utime + usage.ru_stime
acknowledged = sum(o.decision == "acknowledge" for o in outcomes)
print(json.dumps({"mails": len(outcomes), "acknowledged": acknowledged, "wall": wall, "cpu": cpu,
                  "helper": helper, "waited": waited, "machine": busy, "tail": tail,
                  "scheduled": sched}))
"""


# ``--prefill``: the mailbox's earlier messages, written by the tree's own store (its schema).
PREFILL_CHILD = """
import sys
from datetime import UTC, datetime, timedelta
from mailbot.app.context import build_app
from mailbot.store import NewMessage
app = build_app(sys.argv[1], acknowledge_existing=True)
start = datetime.now(UTC) - timedelta(days=60)
with app.store.transaction() as tx:
    for i in range(int(sys.argv[2])):
        tx.insert_message(NewMessage(
            mailbox="general", folder="Archive", uidvalidity=1, uid=i + 1,
            message_id=f"<earlier{i}@example.fr>", content_hash=f"h{i}", fingerprint=f"f{i}",
            received_at=start + timedelta(minutes=i), sender=f"earlier{i}@example.fr",
            subject="Question", in_reply_to=None, decision="acknowledge",
            reasons=["citizen-mail"], size=1000, defects=[], reference=f"SM-2025-{i:06d}",
            ar_status="sent", ar_message_id=f"<ar-earlier{i}@example.fr>"))
app.store.close()
"""


def prefill(tree: Path, config: Path, count: int) -> None:
    """``count`` earlier messages in the database ``config`` names (see ``--prefill``)."""
    child = subprocess.run(
        [sys.executable, "-c", PREFILL_CHILD, str(config), str(count)],
        env=dict(os.environ, PYTHONPATH=str(tree)),
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(child.stderr[-3000:])


def run_mailbot(tree: Path, config: Path, profile: Path | None = None) -> dict[str, float]:
    command = [sys.executable, "-c", POLL_CHILD, str(config)]
    if profile is not None:
        command = ["py-spy", "record", "-g", "-t", "-r", "100", "--format", "raw"]
        command += ["-o", str(profile), "--", sys.executable, "-c", POLL_CHILD, str(config)]
    child = subprocess.run(
        command,
        env=dict(os.environ, PYTHONPATH=str(tree)),
        cwd=tree,  # `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(child.stderr[-3000:])
    # py-spy writes its own lines on stdout: the child's is the JSON one.
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    result: dict[str, float] = json.loads(lines[-1])
    return result


def bench_scenario(
    dovecot: DovecotServer,
    sink: SinkProcess,
    scenario: str,
    backlog: int,
    trees: list[Path],
    label: str,
    profiles: Path | None = None,
    earlier: int = 0,
) -> dict[str, float]:
    """The raw pipe, then mailbot of each tree, on the same backlog; one line each.

    Every tree reads the mailbox the raw pipe read (mailbot only reads it: ``BODY.PEEK``,
    each tree on a database of its own), so that each finds it in the same state: with a
    mailbox per tree, the second tree of a pair was the first to read its mail, Dovecot
    building its cache of it during that tree's poll (bench/README, thirty-second session)."""
    mail = SCENARIOS[scenario]
    user = dovecot.new_user(f"{scenario}-{label}")
    fill(user, backlog, mail)
    sink.clear()
    cpu, start, machine, sink_cpu = (
        time.process_time(),
        time.perf_counter(),
        machine_cpu(),
        sink.cpu(),
    )
    sent = raw_pipe(user, sink, 200)
    sink.wait_for(sent)
    raw_seconds = time.perf_counter() - start
    raw_cpu = time.process_time() - cpu
    raw_machine = (machine_cpu() - machine) / sent * 1000
    raw_rate = sent / raw_seconds
    print(
        f"  {scenario:<15} raw pipe  {raw_rate:7.1f} msg/s  {raw_cpu / sent * 1000:6.2f} CPU ms/mail"
        f"  machine {raw_machine:5.2f} CPU ms/mail (the sink {_per_mail(sink.cpu() - sink_cpu, sent)})"
    )
    ratios: dict[str, float] = {}
    for tree in trees:
        sink.clear()
        with tempfile.TemporaryDirectory() as tmp:
            config = write_config(Path(tmp), {"general": user}, sink, routing=True, tree=tree)
            profile = profiles / f"{scenario}-{label}-{tree.name}.raw" if profiles else None
            if earlier:
                prefill(tree, config, earlier)
            sink_cpu = sink.cpu()
            result = run_mailbot(tree, config, profile)
        expected = int(result["acknowledged"]) * (1 + FORWARDS[scenario])
        received = sink.wait_for(expected)
        sink_cpu = sink.cpu() - sink_cpu
        rate = result["mails"] / result["wall"]
        ratios[str(tree)] = rate / raw_rate
        busy = result["machine"] / result["mails"] * 1000
        floor = busy / (os.cpu_count() or 1)  # wall ms a mail if every core were busy
        print(
            f"  {scenario:<15} mailbot   {rate:7.1f} msg/s  "
            f"{result['cpu'] / result['mails'] * 1000:6.2f} CPU ms/mail  "
            f"(+{result.get('helper', 0.0) / result['mails'] * 1000:4.2f} helper, "
            f"{result.get('waited', 0.0) * 1000:.0f} ms waited)  "
            f"ratio {rate / raw_rate:.2f}x  ({int(result['acknowledged'])} ARs, "
            f"{received - sink.to_citizens} forwards)  {tree.name}\n"
            f"  {'':<15} machine {busy:5.2f} CPU ms/mail: wall floor {floor:4.2f} ms/mail, "
            f"ceiling {1000 / floor / raw_rate:.2f}x{_tail(result)}\n"
            f"  {'':<15} the sink {_per_mail(sink_cpu, received)}/mail received{_thread(result)}"
        )
        if profile is not None:
            cpu_ms = result["cpu"] / result["mails"] * 1000
            print(f"    profile {profile}\n" + phases.table(phases.phases(profile), cpu_ms))
    return ratios


def _per_mail(seconds: float, mails: int) -> str:
    return f"{seconds / max(mails, 1) * 1000:.2f} CPU ms"


def _thread(result: dict[str, Any]) -> str:
    """Where the poll's thread spent the poll's wall: on a core, waiting for one (the
    machine's other processes had them: the contention), or blocked (on the routing
    helper, the GIL, a commit, the network)."""
    scheduled = result.get("scheduled")
    if not scheduled:
        return ""
    wall = result["wall"]
    on_core, waiting = (seconds / wall * 100 for seconds in scheduled)
    return (
        f"; the poll's thread {on_core:.0f} % on a core, {waiting:.0f} % waiting for one,"
        f" {100 - on_core - waiting:.0f} % blocked"
    )


def _tail(result: dict[str, float]) -> str:
    """The poll's wall after the intake's last batch: the delivery left to drain (a
    delivery slower than the intake shows here, not in the CPU figures)."""
    tail = result.get("tail")
    if tail is None:
        return ""
    return f"; intake {result['wall'] - tail:.2f} s, then delivery alone {tail:.2f} s"


def bench_throughput(
    dovecot: DovecotServer,
    scenarios: list[str],
    backlog: int,
    repeat: int,
    trees: list[Path],
    profiles: Path | None = None,
    earlier: int = 0,
) -> None:
    targets = {"stay": 0.8, "transfer": 0.6}
    found: dict[tuple[str, str], list[float]] = {}
    with SinkProcess() as sink:
        for round_ in range(repeat):
            print(f"(a) backlog {backlog}, repeat {round_ + 1}/{repeat}")
            for scenario in scenarios:
                ratios = bench_scenario(
                    dovecot, sink, scenario, backlog, trees, f"r{round_}", profiles, earlier
                )
                for tree, ratio in ratios.items():
                    found.setdefault((scenario, tree), []).append(ratio)
    print("    ratios mailbot / raw pipe, each repeat (target: stay >= 0.80x, transfer >= 0.60x)")
    for (scenario, tree), ratios in found.items():
        target = targets[scenario.partition("-")[0]]
        shown = ", ".join(f"{r:.2f}x" for r in ratios)
        print(f"    {scenario:<15} {Path(tree).name:<20} {shown}  (target {target:.2f}x)")


def bench_idle(dovecot: DovecotServer, burst: int, singles: int, routing: bool = False) -> None:
    """(b) in this process: the mailbot on its path (PYTHONPATH=TREE for a given tree)."""
    user = dovecot.new_user("idle")
    with SinkProcess() as smtp, tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), {"general": user}, smtp, routing=routing)
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
        smtp.wait_for(burst, timeout=300, citizens=True)
        burst_seconds = time.perf_counter() - last_append
        print(
            f"(b) burst of {burst}: last AR {burst_seconds:.2f} s after the last append "
            "(target <= 1 s, issue 14)"
        )
        latencies = []
        for n in range(singles):
            raw = realistic_mail(10_000 + n)
            start = time.perf_counter()
            user.append(raw)
            smtp.wait_for(burst + n + 1, timeout=30, citizens=True)
            latencies.append(time.perf_counter() - start)
        worker.stop.set()
        thread.join(timeout=30)
        app.store.close()
    quantiles = statistics.quantiles(latencies, n=20)
    print(
        f"    single mail over {singles}: p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {quantiles[18] * 1000:.0f} ms (target p95 <= 600 ms, issue 14)"
    )


# The child of (c): `mailbot poll --once -q` as cron runs it, then its own peak. VmHWM: ru_maxrss
# survives execve on Linux, so a child forked from this (large) bench process would report
# the bench's size.
RSS_CHILD = """
import re, resource, sys
from mailbot.cli import main
code = main(sys.argv[1:])
status = open('/proc/self/status').read()
hwm = re.search(r'VmHWM:\\s+(\\d+)', status)
peak = int(hwm.group(1)) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak, file=sys.stderr)
sys.exit(code)
"""


def peak_rss_mb(user: MailUser, smtp: SinkProcess, backlog: int, tree: Path) -> float:
    """Peak RSS of one tree's `poll --once` over ``user``'s INBOX, on a database of its own
    (the mail is only read: each tree reads the same backlog)."""
    smtp.clear()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), {"general": user}, smtp, tree=tree)
        command = [sys.executable, "-c", RSS_CHILD, "--config", str(config), "-q"]
        child = subprocess.run(
            [*command, "poll", "--once", "--acknowledge-existing"],
            env=dict(os.environ, PYTHONPATH=str(tree)),
            cwd=tree,  # `python -c` puts the working directory first on sys.path
            capture_output=True,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(child.stderr.decode()[-3000:])
        smtp.wait_for(backlog, timeout=120)
        usage = int(child.stderr.decode().strip().splitlines()[-1])
    return usage / 1024


def bench_rss(dovecot: DovecotServer, sizes: list[int], trees: list[Path], repeat: int) -> None:
    """(c) each backlog size filled once, then each tree's poll in turn, ``repeat`` times;
    the ratio of the largest to the smallest size per tree and repeat (same run)."""
    found: dict[tuple[Path, int], list[float]] = {}
    with SinkProcess() as smtp:
        for size in sizes:
            user = dovecot.new_user(f"rss{size}-")
            fill(user, size)
            for round_ in range(repeat):
                for tree in trees:
                    peak = peak_rss_mb(user, smtp, size, tree)
                    found.setdefault((tree, size), []).append(peak)
                    print(
                        f"(c) peak RSS, backlog {size}, repeat {round_ + 1}: {peak:.1f} MB  {tree}"
                    )
    if len(sizes) < 2:
        return
    small, large = min(sizes), max(sizes)
    for tree in trees:
        ratios = [b / a for a, b in zip(found[tree, small], found[tree, large], strict=True)]
        shown = ", ".join(f"{r:.2f}x" for r in ratios)
        print(f"    {large} vs {small}: {shown} (target <= 1.10x)  {tree}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trees", default=str(ROOT), help="source trees, comma-separated")
    parser.add_argument("--parts", default="throughput,idle,rss")
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument(
        "--idle-routing", action="store_true", help="(b) with the shipped routing on"
    )
    parser.add_argument("--latency", type=int, default=50)
    parser.add_argument("--rss", default="1000,20000")
    parser.add_argument("--rss-repeat", type=int, default=1, help="repeats of (c), each tree")
    parser.add_argument("--profile", type=Path, help="py-spy each poll of (a), stacks here")
    parser.add_argument(
        "--prefill", type=int, default=0, help="(a): earlier messages in each database"
    )
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    parts = args.parts.split(",")
    with DovecotServer() as dovecot:
        if "throughput" in parts:
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
            bench_throughput(
                dovecot, scenarios, args.backlog, args.repeat, trees, args.profile, args.prefill
            )
        if "idle" in parts:
            bench_idle(dovecot, args.burst, args.latency, args.idle_routing)
        if "rss" in parts:
            sizes = [int(s) for s in args.rss.split(",")]
            bench_rss(dovecot, sizes, trees, args.rss_repeat)


if __name__ == "__main__":
    main()
