"""Fuzzing intake: thousands of mutated mails through `mailbot poll --once`, real servers.

The mails are the test corpus (tests/data/routing and the demo mailbox) with seeded
mutations — byte flips, truncation, NUL, lone CR, bad charsets, up to 200 levels of
nesting, duplicated headers, long Message-IDs, 8-bit headers — plus the crafted poison of
tests/poison.py, a 30 MB attachment and a 10 MB subject. Whatever they are, the process
must exit 0, every mail must be recorded (acknowledged, skipped, duplicate or
quarantined: one row each) and memory must stay bounded.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from poison import attachment, huge_subject, mutated_corpus, poison_mails
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config

MUTATED = 2000
PEAK_RSS_MB = 600  # measured 436 MB (about 320 MB of it: the process with its models loaded)


# `mailbot poll --once` in a fresh interpreter that reports its own peak RSS. VmHWM belongs
# to the process image and restarts at exec; ru_maxrss would also count the pages of pytest
# itself, which the child shares between fork and exec (hundreds of MB late in a full run).
PEAK_RSS_RUNNER = """
import re, sys
from mailbot.cli import main
out = sys.argv.pop(1)
try:
    code = main(sys.argv[1:])
finally:
    status = open("/proc/self/status").read()
    open(out, "w").write(re.search(r"VmHWM:\\s+(\\d+)", status).group(1))
sys.exit(code)
"""


def test_fuzzed_mail_is_all_recorded_and_memory_stays_bounded(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    mails = [
        *poison_mails().values(),
        attachment(0, 30),
        huge_subject(0, 10),
        *mutated_corpus(MUTATED),
    ]
    imap_user.deliver(mails)
    started = time.monotonic()
    peak_file = tmp_path / "peak-kb"
    with (tmp_path / "stderr.log").open("wb") as err:
        process = subprocess.run(
            [
                sys.executable,
                "-c",
                PEAK_RSS_RUNNER,
                str(peak_file),
                "--config",
                str(config),
                "-q",
                "poll",
                "--once",
                "--acknowledge-existing",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            check=False,
        )
    seconds = time.monotonic() - started
    peak_mb = int(peak_file.read_text()) / 1024
    with sqlite3.connect(tmp_path / "mailbot.db") as conn:
        decisions = Counter(d for (d,) in conn.execute("SELECT decision FROM messages"))
    print(
        f"\nfuzz: {len(mails)} mails ({MUTATED} mutated), {sum(decisions.values())} rows "
        f"{dict(decisions)}, exit {process.returncode}, peak RSS {peak_mb:.0f} MB, "
        f"{seconds:.1f} s, {len(smtp_server.messages)} mails sent"
    )
    errors = (tmp_path / "stderr.log").read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, errors[-3000:]
    assert sum(decisions.values()) == len(mails)  # recorded or quarantined, none lost
    assert peak_mb < PEAK_RSS_MB
    assert not any(line.startswith("Traceback") for line in errors.splitlines())
