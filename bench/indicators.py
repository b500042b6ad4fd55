"""Indicators over one year of 1,000,000 stored messages (SQLite), target ≤ 2 s.

    python bench/indicators.py [--messages 1000000] [--db PATH] [--trees DIR,DIR]

Builds (or reuses) a database of realistic shape: 1M acknowledged messages over 2026,
~85 % answered 0-9 working days later, 5 % complaints, 10 % transferred, some relances;
then times `mailbot indicators` for the whole year as a command (target ≤ 1 s) and
in-process (query + computation), and the weekly report as a command (target ≤ 2 s).
``--trees`` times the commands of other checkouts too (an older commit exported with
``git archive``), in the same run, on the same database.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailbot.store import Store  # noqa: E402


def build(path: Path, count: int) -> None:
    Store(f"sqlite:///{path}").close()  # schema via the migrations
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    messages, events = [], []
    for n in range(1, count + 1):
        received = start + timedelta(seconds=rng.randrange(365 * 86400))
        category = "reclamation" if rng.random() < 0.05 else "information"
        service = rng.choice(["general", "etrangers", "cartes-grises", "permis", "cni-passeport"])
        stamp = received.strftime("%Y-%m-%d %H:%M:%S.%f")
        first_reply, complete = None, None
        if rng.random() < 0.85:
            replied = received + timedelta(days=rng.choice([0, 1, 1, 2, 3, 4, 6, 8, 12]))
            first_reply = replied.strftime("%Y-%m-%d %H:%M:%S.%f")
            complete = int(rng.random() < 0.9)
            events.append((n, "reply_sent", "<r@x>", first_reply))
        transferred = int(rng.random() < 0.10)
        if transferred:
            events.append((n, "transferred", service, stamp))
        row = (n, "general", "INBOX", 1, n, f"<m{n}@x>", f"h{n}", f"SM-2026-{n:07d}", stamp)
        row += (f"u{n % 50000}@example.fr", "Sujet", "acknowledge", "[]", "sent", 1000, "[]")
        messages.append((*row, stamp, service, category, first_reply, complete, transferred))
        if len(messages) >= 100_000:
            flush(conn, messages, events)
    flush(conn, messages, events)
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def flush(
    conn: sqlite3.Connection, messages: list[tuple[object, ...]], events: list[tuple[object, ...]]
) -> None:
    conn.executemany(
        "INSERT INTO messages (id, mailbox, folder, uidvalidity, uid, message_id, content_hash, "
        "reference, received_at, sender, subject, decision, reasons, ar_status, size, defects, "
        "created_at, service, category, first_reply_at, first_reply_complete, transferred) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        messages,
    )
    conn.executemany("INSERT INTO events (message_pk, kind, detail, at) VALUES (?,?,?,?)", events)
    conn.commit()
    messages.clear()
    events.clear()


def timed(command: list[str], tree: Path) -> tuple[float, str]:
    """Median of three runs of ``command`` with ``tree``'s mailbot, and its output."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    times, out = [], ""
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, env=env, cwd=tree
        ).stdout
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--trees", default=str(ROOT), help="source trees, comma-separated")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mailbot-bench-"))
    db = args.db or workdir / "year.db"
    if not db.exists():
        started = time.perf_counter()
        build(db, args.messages)
        print(f"built {args.messages:,} messages in {time.perf_counter() - started:.0f} s: {db}")
    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    data["database"] = f"sqlite:///{db}"
    config = workdir / "rules.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "mailbot.cli",
        "--config",
        str(config),
        "indicators",
        "--from",
        "2026-01-01",
        "--to",
        "2026-12-31",
        "--format",
        "json",
    ]
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    outputs = set()
    for tree in trees:
        seconds, out = timed(command, tree)
        outputs.add(out)
        print(
            f"{tree}: indicators for one year as a command: median {seconds:.2f} s of 3 "
            f"(target <= 1 s, Python start-up included)"
        )
    print(f"same figures from every tree: {len(outputs) == 1}")
    from mailbot.core.indicators import arrays_from_store, compute_arrays
    from mailbot.core.workdays import WorkingCalendar

    store = Store(data["database"])
    calendar = WorkingCalendar()
    since = datetime(2026, 1, 1, tzinfo=calendar.zone)
    until = datetime(2027, 1, 1, tzinfo=calendar.zone)
    for attempt in (1, 2):
        started = time.perf_counter()
        columns = store.indicator_arrays(since, until, "reclamation")
        compute_arrays(arrays_from_store(columns, calendar), until.date(), calendar)
        elapsed = time.perf_counter() - started
        print(f"in-process {attempt}: query + computation in {elapsed:.2f} s")
    report = [
        sys.executable,
        "-m",
        "mailbot.cli",
        "--config",
        str(config),
        "-q",
        "report",
        "weekly",
        "--week",
        "2026-W47",
        "--as-of",
        "2026-11-30",
        "--out",
        str(workdir),
    ]
    data["templates"] = str(ROOT / "templates")
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    for tree in trees:
        seconds, _ = timed(report, tree)
        print(
            f"{tree}: weekly report (week 47 of a year of 1M messages, 12-week chart, CSV): "
            f"median {seconds:.2f} s of 3 (target <= 2 s)"
        )
    print(out)


if __name__ == "__main__":
    main()
