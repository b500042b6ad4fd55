"""What grows with the backlog: RSS after each batch of `mailbot -q poll --once`, and what
Python allocated between two batches (tracemalloc), in a child process of one tree.

    python bench/rss.py [--backlog 20000] [--tree DIR] [--trace] [--frames 1] [--first 5]

Each batch's line: the child's RSS and VmHWM (MB), Python's traced memory with --trace, the
number of objects the collector tracks, and the outbox by status (how far intake runs ahead
of sending). With --trace, at the last batch: the allocations that grew since batch
``--first``, by line (or by traceback with ``--frames`` > 1), and the largest ones. tracemalloc
slows the poll about fourfold and its own tables add to RSS: read the growth, not the level;
the peak without it is bench/run.py's (c). Same servers and mails as bench/run.py (c).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import run as bench
from servers import DovecotServer
from sink import SinkProcess

# The child: the poll of the tree's own CLI, a line on stderr after each batch (the poller's
# batch summary is where a batch ends).
CHILD = r"""
import gc, os, re, sqlite3, sys, tracemalloc
from mailbot.mail import poller

FRAMES, FIRST, LAST = (int(os.environ[k]) for k in ("RSS_FRAMES", "RSS_FIRST", "RSS_LAST"))
if FRAMES:
    tracemalloc.start(FRAMES)
snapshots = []
count = 0
summary = poller.MailboxPoller._summary


def memory():
    status = open("/proc/self/status").read()
    return [int(re.search(k + r":\s+(\d+)", status).group(1)) / 1024 for k in ("VmRSS", "VmHWM")]


def outbox():
    with sqlite3.connect(os.environ["RSS_DB"]) as db:
        return dict(db.execute("SELECT status, count(*) FROM outbox GROUP BY status"))


def report(batch_stats, key):
    for stat in batch_stats[:25]:
        print("  grew", stat, file=sys.stderr)
        if key == "traceback":
            for line in stat.traceback.format()[-10:]:
                print("      ", line, file=sys.stderr)


def observed(self, batch, started):
    global count
    found = summary(self, batch, started)
    count += 1
    rss, hwm = memory()
    traced = tracemalloc.get_traced_memory()[0] / 2**20 if FRAMES else 0.0
    print(
        f"batch {count:4d}  rss {rss:6.1f}  hwm {hwm:6.1f}  traced {traced:5.1f}  "
        f"objects {len(gc.get_objects())}  outbox {outbox()}",
        file=sys.stderr,
        flush=True,
    )
    if FRAMES and count in (FIRST, LAST):
        snapshots.append(tracemalloc.take_snapshot())
    if len(snapshots) == 2 and count == LAST:
        key = "traceback" if FRAMES > 1 else "lineno"
        print(f"allocations grown from batch {FIRST} to {LAST}:", file=sys.stderr)
        report(snapshots[1].compare_to(snapshots[0], key), key)
        print("largest at the end:", file=sys.stderr)
        for stat in snapshots[1].statistics("lineno")[:15]:
            print("  ", stat, file=sys.stderr)
    return found


poller.MailboxPoller._summary = observed
from mailbot.cli import main

code = main(sys.argv[1:])
print("end: rss %.1f  hwm %.1f" % tuple(memory()), file=sys.stderr)
sys.exit(code)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=20000)
    parser.add_argument("--tree", type=Path, default=bench.ROOT)
    parser.add_argument("--trace", action="store_true", help="tracemalloc snapshots")
    parser.add_argument("--frames", type=int, default=1, help="frames per allocation traced")
    parser.add_argument("--first", type=int, default=5, help="the batch compared with the last")
    args = parser.parse_args()
    tree = args.tree.resolve()
    batch = 200  # bench.write_config's polling.batch_size
    with DovecotServer() as dovecot, SinkProcess() as smtp, tempfile.TemporaryDirectory() as tmp:
        user = dovecot.new_user("rss")
        bench.fill(user, args.backlog)
        config = bench.write_config(Path(tmp), {"general": user}, smtp, tree=tree)
        env = dict(
            os.environ,
            PYTHONPATH=str(tree),
            RSS_DB=str(Path(tmp) / "bench.db"),
            RSS_FRAMES=str(args.frames if args.trace else 0),
            RSS_FIRST=str(args.first),
            RSS_LAST=str(-(-args.backlog // batch)),
        )
        command = [sys.executable, "-c", CHILD, "--config", str(config), "-q"]
        subprocess.run(
            [*command, "poll", "--once", "--acknowledge-existing"], env=env, cwd=tree, check=True
        )
        smtp.wait_for(args.backlog, timeout=300)


if __name__ == "__main__":
    main()
