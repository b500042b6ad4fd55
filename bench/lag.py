"""How far delivery lags behind intake in ``poll --once``, old tree against new, in one run.

    python bench/lag.py [--scenarios transfer-short,transfer-3k] [--trees DIR,DIR]
                        [--backlog 1000] [--repeat 1]

The same servers and mails as ``bench/run.py`` (Dovecot, the SMTP sink in its own process,
the shipped rules.yaml with routing on). For each scenario: the raw pipe, then
``poll --once`` of each tree, printing msg/s and the ratio, the poll's wall time and when
the intake ended (the rest is delivery draining what it had not sent yet), CPU per mail of
the whole process, of the intake thread and of the delivery thread
(``time.thread_time``), and the sink's CPU per mail (/proc). A delivery that keeps up ends
within a batch of the intake; one that lags adds its backlog to the poll's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402
from servers import DovecotServer  # noqa: E402
from sink import SinkProcess  # noqa: E402

CHILD = r"""
import json, sys, time
from mailbot.app import delivery
from mailbot.app.context import build_app
from mailbot.core import language
from mailbot.worker import Worker, imap_sources
app = build_app(sys.argv[1], acknowledge_existing=True)
language.warm_up()
worker = Worker(app.config, app.pipeline, app.outbox, imap_sources(app.config))
marks = {"delivery_cpu": 0.0}
deliver_due = delivery.Outbox.deliver_due
def timed_delivery(self, *args, **kwargs):
    began = time.thread_time()
    try:
        return deliver_due(self, *args, **kwargs)
    finally:
        marks["delivery_cpu"] += time.thread_time() - began
delivery.Outbox.deliver_due = timed_delivery
poll_folders = Worker._poll_folders
def timed_intake(self):
    outcomes = poll_folders(self)
    marks["intake_end"], marks["intake_cpu"] = time.perf_counter(), time.thread_time()
    return outcomes
Worker._poll_folders = timed_intake
# The intake thread's time outside process_batch: mostly waiting on (old) or for (fetch
# ahead) the next FETCH batch; its wall and its CPU (time.thread_time).
marks["record_wall"] = marks["record_cpu"] = 0.0
process_batch = type(app.pipeline).process_batch
def timed_batch(self, *args, **kwargs):
    began, began_cpu = time.perf_counter(), time.thread_time()
    try:
        return process_batch(self, *args, **kwargs)
    finally:
        marks["record_wall"] += time.perf_counter() - began
        marks["record_cpu"] += time.thread_time() - began_cpu
type(app.pipeline).process_batch = timed_batch
wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
outcomes = worker.poll_once()
end, cpu = time.perf_counter(), time.process_time() - cpu
print(json.dumps({
    "mails": len(outcomes), "wall": end - wall, "intake_wall": marks["intake_end"] - wall,
    "cpu": cpu, "intake_cpu": marks["intake_cpu"] - main, "delivery_cpu": marks["delivery_cpu"],
    "record_wall": marks["record_wall"], "record_cpu": marks["record_cpu"],
}))
"""


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def poll(tree: Path, config: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(config)],
        env=env,
        cwd=tree,  # `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def scenario(
    dovecot: DovecotServer, sink: SinkProcess, name: str, trees: list[Path], backlog: int, n: int
) -> None:
    users = [dovecot.new_user(f"lag-{name}-{n}-{i}") for i in range(len(trees))]
    for user in users:
        bench.fill(user, backlog, bench.SCENARIOS[name])
    pid = sink._process.pid  # the sink process (bench/sink.py)
    sink.clear()
    sink_cpu, start = process_cpu(pid), time.perf_counter()
    sent = bench.raw_pipe(users[0], sink, 200)
    raw_rate = sent / (time.perf_counter() - start)
    sink.wait_for(sent)
    sink_ms = (process_cpu(pid) - sink_cpu) * 1000 / sent
    print(f"{name:<15} raw pipe {raw_rate:6.1f} msg/s, sink {sink_ms:.2f} CPU ms/mail", flush=True)
    for tree, user in zip(trees, users, strict=True):
        sink.clear()
        with tempfile.TemporaryDirectory() as tmp:
            config = bench.write_config(Path(tmp), {"general": user}, sink, routing=True, tree=tree)
            sink_cpu = process_cpu(pid)
            r = poll(tree, config)
            sink_ms = (process_cpu(pid) - sink_cpu) * 1000 / r["mails"]
        rate, ms = r["mails"] / r["wall"], 1000 / r["mails"]
        print(
            f"  {tree.name:<14} {rate:6.1f} msg/s {rate / raw_rate:.2f}x  wall {r['wall']:5.1f} s, "
            f"intake ended {r['intake_wall']:5.1f} s  CPU ms/mail: all {r['cpu'] * ms:.2f}, "
            f"intake {r['intake_cpu'] * ms:.2f}, delivery {r['delivery_cpu'] * ms:.2f}, "
            f"sink {sink_ms:.2f}",
            flush=True,
        )
        wait, wait_cpu = r["intake_wall"] - r["record_wall"], r["intake_cpu"] - r["record_cpu"]
        print(
            f"  {'':<14} intake outside process_batch (FETCH): wall {wait * ms:.2f} ms/mail "
            f"({wait / r['intake_wall']:.0%} of the intake), CPU {wait_cpu * ms:.2f} ms/mail",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="transfer-short,transfer-3k")
    parser.add_argument("--trees", default=str(ROOT), help="source trees, comma-separated")
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    with DovecotServer() as dovecot, SinkProcess() as sink:
        for n in range(args.repeat):
            for name in args.scenarios.split(","):
                scenario(dovecot, sink, name, trees, args.backlog, n)


if __name__ == "__main__":
    main()
