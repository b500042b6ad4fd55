"""What one hostile mail costs: time and memory of the pipeline on crafted mail.

    python bench/poison.py [--subject-mb 10,100] [--repeat 3]

For each size, a citizen's mail whose Subject was duplicated into that many megabytes
(issue 10.7: a 101 MB subject took 290-345 s and 1.7 GB), then a few poison mails
(2,000 nested parts, a 30 MB attachment, an undefined charset): the time of
``Pipeline.process`` (parse, dedupe, decide, route, render the AR, record) and the peak
memory it allocated (tracemalloc), each mail processed in-process against SQLite, the ARs
written to files. The first mail of a run also pays for loading the language models,
so a warm-up mail goes first.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from poison import attachment, citizen, huge_subject, nested  # noqa: E402

from mailbot.app.context import build_app  # noqa: E402
from mailbot.core.incoming import IncomingMail  # noqa: E402
from mailbot.mail.smtp import FileTransport  # noqa: E402

_NUMBERS = itertools.count(1000)


def measure(
    process: Callable[[bytes], str], make: Callable[[int], bytes], repeat: int
) -> tuple[int, float, float, str]:
    """Size, median seconds over ``repeat`` mails, and the peak MB allocated while
    processing one more under tracemalloc (which slows Python down: timed apart). Each is a
    new mail: a copy would be a duplicate, which costs less."""
    times, decision, size = [], "", 0
    for _ in range(repeat):
        raw = make(next(_NUMBERS))  # a new sender each time: no rate limit, no relance
        size = len(raw)
        started = time.perf_counter()
        decision = process(raw)
        times.append(time.perf_counter() - started)
    raw = make(next(_NUMBERS))
    tracemalloc.start()
    process(raw)
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return size, statistics.median(times), peak, decision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subject-mb", default="10,100", help="subject sizes in MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-bench-poison-"))
    app = build_app(
        ROOT / "rules.yaml", FileTransport(tmp / "out"), database=f"sqlite:///{tmp / 'b.db'}"
    )
    uid = iter(range(1, 1_000_000))

    def process(raw: bytes) -> str:
        mail = IncomingMail(next(uid), datetime.now(UTC), raw)
        return app.pipeline.process("general", "INBOX", 1, mail).decision

    process(citizen(0, "Préchauffage : chargement des modèles de langue"))
    cases: list[tuple[str, Callable[[int], bytes]]] = [
        (f"{mb} MB subject", lambda n, mb=float(mb): huge_subject(n, mb))
        for mb in args.subject_mb.split(",")
    ]
    cases += [
        ("2,000 nested parts", lambda n: nested(2000, n)),
        ("30 MB attachment", lambda n: attachment(n, 30)),
        ("undefined charset", lambda n: citizen(n, "=?undefined?q?x?=")),
        ("ordinary mail", lambda n: citizen(n, "Demande de carte grise")),
    ]
    print(f"{'mail':<22} {'size':>10} {'median':>9} {'peak alloc':>11}  decision")
    for name, make in cases:
        size, seconds, peak, decision = measure(process, make, args.repeat)
        print(
            f"{name:<22} {size / 1e6:>8.1f}MB {seconds * 1000:>7.0f}ms {peak:>9.1f}MB  {decision}"
        )


if __name__ == "__main__":
    main()
