"""Sending while recording (issue 14, point 7): `poll --once`, old tree against new, one run.

    python bench/overlap.py [--mails 1000] [--old DIR] [--repeat 3] [--data-ms 1.0]

For each tree (``--old``: a ``git archive`` export of main, say), a child process with that
tree on PYTHONPATH builds the application from the tree's ``rules.yaml`` (routing on) on a
fresh SQLite database and runs ``Worker.poll_once`` over a folder of ``--mails`` citizens'
mails held in memory (no IMAP), with a transport that accepts each mail after ``--data-ms``
of waiting (a server's reply to DATA, the GIL released), in FETCH batches of 200. It prints
per mail: wall and CPU time of the poll, commits, and (new tree) how long the outbox's writes
took, waiting for their turn included (SQLite has one writer). The runs of the two trees alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, tempfile, threading, time
from datetime import UTC, datetime
from pathlib import Path
import sqlalchemy as sa
sys.path.insert(0, sys.argv[2])
from poison import citizen
from mailbot.app.context import build_app
from mailbot.core import language
from mailbot.worker import Worker

class Mail:
    def __init__(self, uid, raw):
        self.uid, self.raw = uid, raw
        self.internaldate = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

class Folder:
    def __init__(self, mails): self.mails = mails
    def connect(self): pass
    def close(self): pass
    def select(self, folder): return 1
    def uids_after(self, last): return [m.uid for m in self.mails if m.uid > last]
    def fetch(self, uids, batch_size):
        wanted = set(uids)
        return iter([m for m in self.mails if m.uid in wanted])
    def supports_idle(self): return False
    def wait_for_changes(self, timeout, stop=None): return False

class Waiting:
    '''Accepts each mail after a round trip's wait, as a server's reply to DATA.'''
    def __init__(self, seconds): self.seconds = seconds
    def send_batch(self, envelopes, before, after, stop=None):
        for envelope in envelopes:
            if before(envelope):
                time.sleep(self.seconds)
                after(envelope, None)
    def close(self): pass

tree, count, data = Path(sys.argv[1]), int(sys.argv[3]), float(sys.argv[4]) / 1000
tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-overlap-"))
app = build_app(tree / "rules.yaml", Waiting(data), database=f"sqlite:///{tmp / 'b.db'}",
                acknowledge_existing=True)
language.warm_up()
commits = [0]
sa.event.listen(sa.engine.Engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
waited = [0.0]
desk = getattr(app.store, "desk", None)
if desk is not None:
    submit = desk.submit
    def timed(work, alone):
        began = time.perf_counter()
        try:
            return submit(work, alone)
        finally:
            waited[0] += time.perf_counter() - began
    desk.submit = timed
mails = [Mail(n, citizen(n, f"Demande numéro {n}")) for n in range(1, count + 1)]
worker = Worker(app.config, app.pipeline, app.outbox, {"general": Folder(mails)})
wall, cpu = time.perf_counter(), time.process_time()
outcomes = worker.poll_once()
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
sent = sa.create_engine(f"sqlite:///{tmp / 'b.db'}").connect().execute(
    sa.text("SELECT count(*) FROM outbox WHERE status = 'sent'")).scalar()
assert sent == count == len(outcomes), (sent, count, len(outcomes))
print(json.dumps({"wall": wall * 1000 / count, "cpu": cpu * 1000 / count,
                  "commits": commits[0] / count, "waited": waited[0] * 1000 / count}))
"""


def child(tree: Path, mails: int, data_ms: float) -> dict[str, float]:
    command = [sys.executable, "-c", CHILD, str(tree), str(ROOT / "tests"), str(mails)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [*command, str(data_ms)], capture_output=True, text=True, env=env, cwd=tree, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--old", type=Path, required=True, help="the old tree")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-ms", type=float, default=1.0, help="the wait for DATA's reply")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": ROOT}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.repeat):  # alternating: a busy minute favours neither tree
        for name, tree in trees.items():
            runs[name].append(child(tree, args.mails, args.data_ms))
    print(
        f"poll --once, {args.mails} mails in memory, {args.data_ms} ms per DATA; "
        f"median of {args.repeat} (per mail)"
    )
    print(f"{'':<5} {'wall ms':>8} {'CPU ms':>7} {'commits':>8} {'sender writes ms':>17}")
    for name, found in runs.items():
        med = {k: statistics.median(r[k] for r in found) for k in found[0]}
        print(
            f"{name:<5} {med['wall']:>8.2f} {med['cpu']:>7.2f} {med['commits']:>8.2f} "
            f"{med['waited']:>17.3f}"
        )


if __name__ == "__main__":
    main()
