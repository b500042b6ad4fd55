"""Indicators over one year of 1,000,000 stored messages (SQLite): targets ≤ 1 s for
`mailbot indicators` as a command, ≤ 2 s for the weekly report.

    python bench/indicators.py [--messages 1000000] [--db PATH] [--trees DIR,DIR] [--repeat 3]

Builds (or reuses) a database of realistic shape at schema BASE (the revision before the
indicators' own table): 1M acknowledged messages over 2026 in the order they arrive, ~85 %
answered 0-12 days later, 5 % complaints, 10 % transferred. Each tree in ``--trees`` (this
one, and e.g. main exported with ``git archive`` into /tmp) gets its own copy of it, brought
to that tree's head by its own ``mailbot migrate`` (timed apart: the backfill of the
facts), so old and new run in the same run on the same data, the trees taking turns at each
repeat (a change in the machine's load hits them alike). Then, per tree: the year as a
command (wall and CPU of the child, Python start-up included), the year in-process
(``app.indicators.figures``: query + computation, CPU), the weekly report as a command; the
figures must be equal everywhere. ``--phases`` prints, for this tree, the CPU time of each
phase of both commands in-process (imports, store, query, calendar, rendering, chart...).
Last, the cost of the triggers per insert and per reply recorded (SQLite, plain SQL).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
import yaml
from alembic import command
from alembic.config import Config as AlembicConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailbot.store import MIGRATIONS, Store  # noqa: E402

BASE = "0010"  # the schema the database is built at: every tree compared migrates from it
IN_PROCESS = """
import sys, time
from datetime import date
from mailbot.app.indicators import figures
from mailbot.config import load_config
from mailbot.store import Store
config = load_config(sys.argv[1])
store = Store(config.database)
for _ in range(int(sys.argv[2])):
    started = time.process_time()
    figures(config, store, date(2026, 1, 1), date(2026, 12, 31), date(2026, 12, 31))
    print(time.process_time() - started)
"""


# The phases of both commands, in one fresh interpreter, CPU time each (the report's parts in
# the order ReportBuilder.build runs them; its first chart pays matplotlib's import).
PHASES = """
import sys, time
clock, marks = [time.process_time()], []
def mark(name):
    now = time.process_time()
    marks.append((name, now - clock[0]))
    clock[0] = now
from datetime import date
import mailbot.cli
mark("indicators: import mailbot.cli")
from mailbot.config import load_config
mark("indicators: import mailbot.config (pydantic, yaml, sqlalchemy)")
from mailbot.app import indicators
mark("indicators: import app.indicators (store, numpy)")
config = load_config(sys.argv[1])
mark("indicators: load_config")
from mailbot.store import Store
store = Store(config.database)
mark("indicators: open the store (schema at head?)")
from mailbot.core.workdays import calendar_for
calendar = calendar_for(config.timezone)
calendar.holidays, calendar._running
mark("indicators: working-day calendar (holidays)")
found = indicators.figures(config, store, date(2026, 1, 1), date(2026, 12, 31), date(2026, 12, 31))
mark("indicators: query + computation (figures)")
import json
json.dumps({f.name: f.value for f in found.figures()})
mark("indicators: output")
from mailbot.app import report
from mailbot.core.periods import default_period
from mailbot.render.templates import Renderer
mark("report: import app.report, render (jinja, compose)")
renderer = Renderer(config.templates, timezone=config.timezone)
renderer.check_config(config)
builder = report.ReportBuilder(config, store, renderer)
mark("report: renderer, builder")
# The real build, its parts timed where they are called (no copy of build() to go stale).
spent = {}
def timed(owner, name, label):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        begun = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.process_time() - begun
    setattr(owner, name, wrapper)
timed(report.indicators, "figures_of_periods", "report: figures of its 15 periods")
timed(builder, "_messages", "report: listing of the week")
timed(builder, "_breakdown", "report: table per mailbox and service")
timed(report.no_reply, "excluded_rows", "report: excluded messages")
timed(builder, "_passed_over", "report: passed over")
timed(renderer, "render", "report: HTML and text")
timed(report, "chart_png", "report: chart (matplotlib import and drawing)")
timed(builder, "_csv", "report: CSV")
timed(builder.composer, "report", "report: MIME message")
period = default_period("weekly", date(2026, 11, 30), "2026-W47", None)
begun = time.process_time()
builder.build(period, date(2026, 11, 30)).mail.as_bytes()
whole = time.process_time() - begun
clock[0] = time.process_time()
marks.extend(spent.items())
marks.append(("report: the rest of build (glue, summary, signatures)", whole - sum(spent.values())))
for name, seconds in marks:
    print(f"| {name} | {1000 * seconds:.0f} |")
"""


def create_base(path: Path) -> None:
    """An empty database at schema BASE, whatever this tree's head is."""
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, BASE)
    engine.dispose()


def message_rows(count: int, seed: int = 7) -> list[tuple[object, ...]]:
    """``count`` messages over 2026, in the order they arrive (ids follow time)."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    instants = sorted(start + timedelta(seconds=rng.randrange(365 * 86400)) for _ in range(count))
    rows: list[tuple[object, ...]] = []
    for n, received in enumerate(instants, start=1):
        category = "reclamation" if rng.random() < 0.05 else "information"
        service = rng.choice(["general", "etrangers", "cartes-grises", "permis", "cni-passeport"])
        stamp = received.strftime("%Y-%m-%d %H:%M:%S.%f")
        first_reply, complete = None, None
        if rng.random() < 0.85:
            replied = received + timedelta(days=rng.choice([0, 1, 1, 2, 3, 4, 6, 8, 12]))
            first_reply = replied.strftime("%Y-%m-%d %H:%M:%S.%f")
            complete = int(rng.random() < 0.9)
        transferred = int(rng.random() < 0.10)
        row: tuple[object, ...] = (n, "general", "INBOX", 1, n, f"<m{n}@x>", f"h{n}")
        row += (f"SM-2026-{n:07d}", stamp)
        row += (f"u{n % 50000}@example.fr", "Sujet", "acknowledge", "[]", "sent", 1000, "[]")
        rows.append((*row, stamp, service, category, first_reply, complete, transferred))
    return rows


def insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO messages (id, mailbox, folder, uidvalidity, uid, message_id, content_hash, "
        "reference, received_at, sender, subject, decision, reasons, ar_status, size, defects, "
        "created_at, service, category, first_reply_at, first_reply_complete, transferred) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.commit()


def build(path: Path, count: int) -> None:
    create_base(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    rows = message_rows(count)
    for first in range(0, count, 100_000):
        insert(conn, rows[first : first + 100_000])
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Runs:
    """One command's runs with one tree: wall and CPU of the child, its last output."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    out: str = ""

    def __str__(self) -> str:
        return (
            f"median of {len(self.walls)} {statistics.median(self.walls):.2f} s wall, "
            f"{statistics.median(self.cpus):.2f} s CPU"
        )


def run_once(command: list[str], tree: Path, into: Runs) -> None:
    """``command`` once with ``tree``'s mailbot, timed into ``into``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cpu, started = child_cpu(), time.perf_counter()
    into.out = subprocess.run(
        command, capture_output=True, text=True, check=True, env=env, cwd=tree
    ).stdout
    into.walls.append(time.perf_counter() - started)
    into.cpus.append(child_cpu() - cpu)


def in_turns(commands: dict[Path, list[str]], repeat: int) -> dict[Path, Runs]:
    """``repeat`` runs of each tree's command, the trees taking turns: a change in the
    machine's load hits them alike, so their ratio holds even on a busy machine."""
    runs = {tree: Runs() for tree in commands}
    for _ in range(repeat):
        for tree, cli in commands.items():
            run_once(cli, tree, runs[tree])
    return runs


def prepare(tree: Path, base: Path, workdir: Path, n: int) -> Path:
    """A copy of the base database, migrated by ``tree``'s own mailbot; its config."""
    db = workdir / f"tree{n}.db"
    shutil.copyfile(base, db)
    data = yaml.safe_load((tree / "rules.yaml").read_text(encoding="utf-8"))  # its own keys
    data["database"] = f"sqlite:///{db}"
    data["templates"] = str(tree / "templates")
    config = workdir / f"rules{n}.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    cli = [sys.executable, "-m", "mailbot.cli", "--config", str(config), "-q", "migrate"]
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(tree))
    subprocess.run(cli, capture_output=True, check=True, env=env, cwd=tree)
    print(f"{tree}: migrated from {BASE} in {time.perf_counter() - started:.1f} s")
    return config


def trigger_cost(workdir: Path, count: int = 50_000) -> None:
    """CPU µs per inserted message and per reply recorded, at BASE (no trigger) and at this
    tree's head, plain SQL through sqlite3 (WAL, synchronous=NORMAL, temp_store=MEMORY,
    one transaction)."""
    rows = message_rows(count, seed=8)
    replies = [(row[8], row[0]) for row in rows]
    for label, head in (("no trigger (schema BASE)", False), ("with triggers (head)", True)):
        path = workdir / f"cost-{head}.db"
        create_base(path)
        if head:
            Store(f"sqlite:///{path}").close()
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")  # as mailbot's connections (Store)
        started = time.process_time()
        insert(conn, rows)
        inserted = time.process_time() - started
        started = time.process_time()
        conn.executemany("UPDATE messages SET first_reply_at = ? WHERE id = ?", replies)
        conn.commit()
        updated = time.process_time() - started
        conn.close()
        print(
            f"{label}: {1e6 * inserted / count:.1f} µs CPU per insert, "
            f"{1e6 * updated / count:.1f} µs per reply recorded (UPDATE first_reply_at)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="the base database (built when missing)")
    parser.add_argument("--trees", default=str(ROOT), help="source trees, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phases", action="store_true", help="CPU per phase, this tree")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mailbot-bench-"))
    base = args.db or workdir / "base.db"
    if not base.exists():
        started = time.perf_counter()
        build(base, args.messages)
        print(f"built {args.messages:,} messages in {time.perf_counter() - started:.0f} s: {base}")
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    configs = [prepare(tree, base, workdir, n) for n, tree in enumerate(trees)]
    if args.phases:
        for tree, config in zip(trees, configs, strict=True):
            env = dict(os.environ, PYTHONPATH=str(tree))
            cli = [sys.executable, "-c", PHASES, str(config)]
            table = subprocess.run(
                cli, capture_output=True, text=True, check=True, env=env, cwd=tree
            )
            print(f"{tree}: CPU ms per phase\n| phase | ms |\n|---|---|\n{table.stdout}")
    year = ["indicators", "--from", "2026-01-01", "--to", "2026-12-31", "--format", "json"]
    report = ["-q", "report", "weekly", "--week", "2026-W47", "--as-of", "2026-11-30"]
    clis = {
        tree: [sys.executable, "-m", "mailbot.cli", "--config", str(config)]
        for tree, config in zip(trees, configs, strict=True)
    }
    years = in_turns({tree: [*cli, *year] for tree, cli in clis.items()}, args.repeat)
    reports = in_turns(
        {
            tree: [*cli, *report, "--out", str(workdir / f"report{n}")]
            for n, (tree, cli) in enumerate(clis.items())
        },
        args.repeat,
    )
    for tree, config in zip(trees, configs, strict=True):
        print(
            f"{tree}: indicators for one year as a command: {years[tree]} "
            "(target <= 1 s, Python start-up included)"
        )
        found = subprocess.run(
            [sys.executable, "-c", IN_PROCESS, str(config), str(args.repeat)],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, PYTHONPATH=str(tree)),
            cwd=tree,
        ).stdout.split()
        seconds = ", ".join(f"{float(s):.2f}" for s in found)
        print(f"{tree}: in-process query + computation, CPU s: {seconds}")
        print(
            f"{tree}: weekly report (week 47 of a year of 1M messages, 12-week chart, CSV): "
            f"{reports[tree]} (target <= 2 s)"
        )
    if len(trees) == 2:
        old, new = trees
        for label, runs in (("indicators", years), ("weekly report", reports)):
            wall = statistics.median(runs[new].walls) / statistics.median(runs[old].walls)
            cpu = statistics.median(runs[new].cpus) / statistics.median(runs[old].cpus)
            print(f"{new.name} / {old.name}, {label}: wall {wall:.2f}×, CPU {cpu:.2f}×")
    outputs = {runs.out for runs in years.values()}
    out = years[trees[-1]].out
    print(f"same figures from every tree: {len(outputs) == 1}")
    print(json.dumps({k: v for k, v in json.loads(out).items() if k != "targets"}))
    trigger_cost(workdir)


if __name__ == "__main__":
    main()
