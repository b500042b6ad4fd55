"""One `mailbot run` on SQLite killed -9 at random moments while it records batches and
sends (issue 14): duplicate ARs, lost mails, uncertain sends.

The scenario of tests/test_kill.py (tests/kill_run.py), larger: real processes, Dovecot
and aiosmtpd (10 ms per DATA). Mail arrives in waves; each worker is killed at a random
moment after it committed a batch, a last one finishes.

    python bench/kill.py [--mails 1000] [--kills 5] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kill_run import run_scenario  # noqa: E402
from servers import DovecotServer, SmtpServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    dovecot, smtp = DovecotServer(), SmtpServer()
    dovecot.start()
    smtp.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run_scenario(
                Path(tmp),
                dovecot.new_user("general"),
                dovecot.new_user("etr"),
                smtp,
                mails=args.mails,
                kills=args.kills,
                seed=args.seed,
            )
    finally:
        smtp.stop()
        dovecot.cleanup()
    print(f"kill -9 during batches: {figures.line()}")
    if figures.unflagged:
        print(f"WITHOUT AR AND NOT FLAGGED: {figures.unflagged}")


if __name__ == "__main__":
    main()
