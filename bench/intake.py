"""Intake and outbox bookkeeping, old tree against new, in one run (issue 14, points 1-2).

    python bench/intake.py [--mails 2000] [--old DIR] [--repeat 3] [--scenario stay-3k]

For each tree (``--old``: a checkout or a ``git archive`` export; by default this
repository's ``main`` is exported to a temporary directory), a child process with that tree
on PYTHONPATH builds the application from the tree's own ``rules.yaml`` (routing on) on a
fresh SQLite database, warms up on 50 mails, then records ``--mails`` citizens' mails in
FETCH batches of 200 (``process_batch`` where the tree has it, else ``process`` per mail)
and delivers each batch's ARs as the poller does, through a transport that accepts every
mail without a network. The mails are ``tests/poison.citizen``'s short question, or with
``--scenario`` those of a ``bench/run.py`` scenario (stay-short, stay-3k, transfer-short,
transfer-3k: what its throughput part sends, here without IMAP or SMTP). It prints, per mail: CPU time (``time.process_time``, intake and
delivery), transaction commits (SQLAlchemy's ``commit`` event on every engine), SQL
statements sent to the driver (an executemany counts once), and, from
a second run of the child under ``strace -f``, fsync/fdatasync calls per ``--mails``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time, tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
import sqlalchemy as sa
sys.path.insert(0, sys.argv[2])  # the tests of the bench's tree: the same mails for both
from poison import citizen
scenario = sys.argv[4]
if scenario:  # bench/run.py's mails (the bench's tree, for both)
    sys.path.insert(0, str(Path(sys.argv[2]).parent / "bench"))
    from run import scenario_mail
    def mail_bytes(n):
        return scenario_mail(scenario, n)
else:
    def mail_bytes(n):
        return citizen(n, f"Demande numéro {n}")
import mailbot
from mailbot.app.context import build_app
from mailbot.core.incoming import IncomingMail

class Accepting:
    '''Every mail accepted at once: the outbox's bookkeeping without a network.'''
    def send_batch(self, envelopes, before, after, stop=None):
        for envelope in envelopes:
            if before(envelope):
                after(envelope, None)

tree, mails = Path(sys.argv[1]), int(sys.argv[3])
tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-intake-"))
# Statements sent to the driver (an executemany counts once): SQLAlchemy's cursor events,
# plus what a tree runs on the driver's cursor itself (store.transaction).
statements = {"intake": 0, "delivery": 0, "phase": None}
def sent(*_args):
    if statements["phase"]:
        statements[statements["phase"]] += 1
sa.event.listen(sa.engine.Engine, "before_cursor_execute", sent)
from mailbot.store import transaction as _transaction
try:  # the driver classes' own module since the store's split; store.transaction before
    from mailbot.store import drivers as _drivers
except ImportError:
    _drivers = _transaction
def _count_runs(cls):
    run = cls.run
    def counted(self, conn, values):
        sent()
        return run(self, conn, values)
    cls.run = counted
# What each tree runs on the driver's cursor: the classes' names, then before their rename.
for name in ("DriverInsert", "DriverUpdate", "DriverRows", "_DriverInsert", "_DriverUpdate", "_DriverRows"):
    if hasattr(_drivers, name):
        _count_runs(getattr(_drivers, name))
if hasattr(_transaction.Transaction, "_driver_sql"):  # SAVEPOINT, RELEASE...
    _plain = _transaction.Transaction._driver_sql
    def _counted_plain(self, *sql):
        for _ in sql:
            sent()
        return _plain(self, *sql)
    _transaction.Transaction._driver_sql = _counted_plain
app = build_app(tree / "rules.yaml", Accepting(), database=f"sqlite:///{tmp / 'b.db'}")
commits = [0]
sa.event.listen(sa.engine.Engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
batched = hasattr(app.pipeline, "process_batch")

def run(first, count):
    cpu = {"intake": 0.0, "delivery": 0.0}
    for low in range(first, first + count, 200):
        batch = [
            IncomingMail(n, start + timedelta(seconds=n), mail_bytes(n))
            for n in range(low, min(low + 200, first + count))
        ]
        began = time.process_time()
        statements["phase"] = "intake"
        if batched:
            app.pipeline.process_batch("general", "INBOX", 1, batch)
        else:
            for mail in batch:
                app.pipeline.process("general", "INBOX", 1, mail)
        middle = time.process_time()
        statements["phase"] = "delivery"
        # Due now: the outbox dates its rows by the real clock (a fixed date here went stale).
        report = app.outbox.deliver_due(now=datetime.now(UTC) + timedelta(minutes=1))
        statements["phase"] = None
        assert report.sent == report.taken >= len(batch), report  # ARs, and forwards
        cpu["intake"] += middle - began
        cpu["delivery"] += time.process_time() - middle
    return cpu

app.pipeline.start_folder("general", "INBOX", 1)
run(1, 50)  # warm-up: models loaded, statements compiled
commits[0] = statements["intake"] = statements["delivery"] = 0
os.getppid()  # a marker for strace: the measured part starts
cpu = run(51, mails)
os.getppid()  # and ends
import shutil
shutil.rmtree(tmp, ignore_errors=True)  # each run's database: ~30 MB
print(json.dumps({
    "mailbot": mailbot.__file__,
    "batched": batched,
    "intake_ms": cpu["intake"] * 1000 / mails,
    "delivery_ms": cpu["delivery"] * 1000 / mails,
    "commits": commits[0] / mails,
    "statements": statements["intake"] / mails,
    "delivery_statements": statements["delivery"] / mails,
}))
"""


def child(
    tree: Path, mails: int, scenario: str = "", strace: Path | None = None
) -> dict[str, float]:
    arguments = [sys.executable, "-c", CHILD, str(tree), str(ROOT / "tests"), str(mails), scenario]
    command = arguments
    if strace is not None:
        command = ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,getppid", "-o", str(strace)]
        command += arguments
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # cwd: ``python -c`` puts it first on sys.path, before PYTHONPATH.
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def syncs(trace: Path) -> int:
    """fsync/fdatasync calls between the two getppid markers (any thread)."""
    lines = trace.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if "getppid(" in line]
    inside = lines[marks[0] : marks[-1]] if len(marks) >= 2 else lines
    return sum(bool(re.search(r"\b(fsync|fdatasync)\(", line)) for line in inside)


def export_main() -> Path:
    target = Path(tempfile.mkdtemp(prefix="mailbot-main-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "main"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--old", type=Path, help="the old tree (default: main, exported)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per tree")
    parser.add_argument("--scenario", default="", help="bench/run.py's mails (e.g. stay-3k)")
    parser.add_argument("--no-strace", action="store_true", help="skip the fsync count")
    args = parser.parse_args()
    old = args.old or export_main()
    trees = {"old": old.resolve(), "new": ROOT}
    results: dict[str, dict[str, float]] = {}
    # The trees' runs alternate (old, new, old, new...): a machine shared with other work
    # slows down and speeds up over minutes, and would favour whichever tree ran first.
    every: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.repeat):
        for name, tree in trees.items():
            every[name].append(child(tree, args.mails, args.scenario))
    with tempfile.TemporaryDirectory() as tmp:
        for name, tree in trees.items():
            runs = every[name]
            traced = Path(tmp) / f"{name}.strace"
            if not args.no_strace:
                child(tree, args.mails, args.scenario, strace=traced)
            results[name] = {
                "intake": statistics.median(r["intake_ms"] for r in runs),
                "delivery": statistics.median(r["delivery_ms"] for r in runs),
                "commits": runs[0]["commits"],
                "statements": runs[0]["statements"],
                "delivery_statements": runs[0]["delivery_statements"],
                "syncs": syncs(traced) if not args.no_strace else -1,
                "batched": runs[0]["batched"],
            }
            print(f"{name}: {tree} (mailbot from {runs[0]['mailbot']})", file=sys.stderr)
    if args.old is None:
        shutil.rmtree(old, ignore_errors=True)
    mails = args.scenario or "poison.citizen"
    print(
        f"{args.mails} mails ({mails}), routing on, no network; median of {args.repeat} (CPU ms/mail)"
    )
    print("stmts: SQL statements sent per mail, intake / delivery (an executemany is one)")
    print(
        f"{'':<5} {'intake':>8} {'delivery':>9} {'total':>8} {'commits':>8} {'fsync':>7} "
        f"{'stmts':>11}"
    )
    for name, r in results.items():
        total = r["intake"] + r["delivery"]
        print(
            f"{name:<5} {r['intake']:>8.2f} {r['delivery']:>9.2f} {total:>8.2f} "
            f"{r['commits']:>8.2f} {int(r['syncs']):>7} "
            f"{r['statements']:>5.2f} / {r['delivery_statements']:.2f}"
        )


if __name__ == "__main__":
    main()
