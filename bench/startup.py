"""Start-up: ``mailbot --help`` and the time to a first mail's AR (issue 14, point 9).

    python bench/startup.py [--repeat 7] [--trees DIR,DIR]

For each source tree (default: this one; give an older checkout too to compare in one
run), each ``--repeat`` times, median and minimum:

* ``mailbot --help``, as the console script runs it (``from mailbot.cli import main``) in a
  fresh interpreter — target ≤ 0.15 s; a bare ``python -c pass`` is printed beside it;
* time to first mail: one mail waiting in a real Dovecot INBOX, ``mailbot poll --once`` with
  the shipped rules (routing on, as in production) in a fresh interpreter, until it exits
  with the AR delivered to the aiosmtpd sink — target ≤ 0.6 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from run import realistic_mail, write_config  # noqa: E402
from servers import DovecotServer, SmtpServer  # noqa: E402

CONSOLE_SCRIPT = "import sys; from mailbot.cli import main; sys.exit(main())"


def timed(run: Callable[[], None], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def child(tree: Path, *args: str) -> Callable[[], None]:
    env = dict(os.environ, PYTHONPATH=str(tree))

    def run() -> None:
        subprocess.run(
            [sys.executable, "-c", CONSOLE_SCRIPT, *args],
            env=env,
            cwd=tree,  # `python -c` puts the working directory first on sys.path
            stdout=subprocess.DEVNULL,
            check=True,
        )

    return run


def first_mail(dovecot: DovecotServer, smtp: SmtpServer, tree: Path, repeat: int) -> list[float]:
    times = []
    for n in range(repeat):
        user = dovecot.new_user(f"first{tree.name}{n}")
        with user.connect() as client:
            client.append("INBOX", realistic_mail(n))
        with tempfile.TemporaryDirectory() as tmp:
            config = write_config(Path(tmp), {"general": user}, smtp, routing=True)
            smtp.clear()
            # The mail is there before the first poll: --acknowledge-existing.
            run = child(
                tree, "--config", str(config), "-q", "poll", "--once", "--acknowledge-existing"
            )
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
            smtp.wait_for(1)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--trees", default=str(ROOT), help="source trees, comma-separated")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    bare = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.repeat)
    print(f"python -c pass: median {bare[0] * 1000:.0f} ms, min {bare[1] * 1000:.0f} ms")
    for tree in trees:
        median, least = timed(child(tree, "--help"), args.repeat)
        print(f"{tree}: mailbot --help median {median * 1000:.0f} ms, min {least * 1000:.0f} ms")
    with DovecotServer() as dovecot, SmtpServer() as smtp:
        for tree in trees:
            times = first_mail(dovecot, smtp, tree, args.repeat)
            print(
                f"{tree}: time to first mail (poll --once, 1 mail, routing on) median "
                f"{statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
