"""Two `mailbot run` workers on one PostgreSQL, one killed -9 and restarted repeatedly while
1,000 mails arrive (issue 16): duplicates, lost mails, uncertain sends, takeover times.

The same scenario as tests/test_cluster.py (tests/cluster_run.py), larger and with the
default lease (15 s): real processes, Dovecot, aiosmtpd and PostgreSQL.

    python bench/cluster.py [--mails 1000] [--kills 8] [--lease 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cluster_run import run_scenario  # noqa: E402
from pg import PostgresServer  # noqa: E402
from servers import DovecotServer, SmtpServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--lease", type=float, default=15)
    args = parser.parse_args()
    postgres, dovecot, smtp = PostgresServer(), DovecotServer(), SmtpServer()
    url = postgres.start()
    dovecot.start()
    smtp.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run_scenario(
                Path(tmp),
                url,
                dovecot.new_user("general"),
                dovecot.new_user("etr"),
                smtp,
                mails=args.mails,
                kills=args.kills,
                lease_seconds=args.lease,
            )
    finally:
        smtp.stop()
        dovecot.cleanup()
        postgres.stop()
    print(f"two workers, kill -9, lease {args.lease:g} s: {figures.line()}")
    if figures.unflagged:
        print(f"WITHOUT AR AND NOT FLAGGED: {figures.unflagged}")


if __name__ == "__main__":
    main()
