"""Fuzzing intake: hundreds of mutated mails through `mailbot poll --once`, real servers.

The mails are the test corpus (tests/data/routing and the demo mailbox) with seeded
mutations — byte flips, truncation, NUL, lone CR, bad charsets, up to 200 levels of
nesting, duplicated headers, long Message-IDs, 8-bit headers — plus the crafted poison of
tests/poison.py, a 30 MB attachment and a 10 MB subject. Whatever they are, the process
must exit 0, every mail must be recorded (acknowledged, skipped, duplicate or
quarantined: one row each) and memory must stay bounded.

The mutated set is targeted rather than drawn at random (``targeted_corpus``): every corpus
mail, every mutation alone and every ordered pair of mutations, then seeded triples. What
2,000 random draws covered by chance is guaranteed with 500 mails, in about half the CPU
time of the test (the big mails and the process's start-up stay).
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from poison import MUTATIONS, attachment, corpus, huge_subject, poison_mails
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import write_config

MUTATED = 500
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


def mutation_plans(count: int, corpus_size: int, rng: random.Random) -> list[tuple[int, ...]]:
    """Which mutations (indexes in MUTATIONS) each mutated mail gets: one each for the
    first ``corpus_size`` mails (taken in turn, so each mutation meets a dozen different
    corpus mails), then every ordered pair of distinct mutations, then seeded triples."""
    plans: list[tuple[int, ...]] = [(n % len(MUTATIONS),) for n in range(corpus_size)]
    plans += list(itertools.permutations(range(len(MUTATIONS)), 2))
    while len(plans) < count:
        plans.append(tuple(rng.sample(range(len(MUTATIONS)), 3)))
    return plans[:count]


def targeted_corpus(count: int = MUTATED, seed: int = 20261126) -> list[bytes]:
    """``count`` mutated corpus mails, after ``mutation_plans``, the n-th made from the
    n-th corpus mail (round the corpus again and again). The mutations' own parameters
    (which bytes, how deep, how long) come from the seeded generator: the same mails
    every run, so ``targeted_corpus()[n]`` reproduces a failure by hand."""
    rng = random.Random(seed)
    base = corpus()
    mails = []
    for n, plan in enumerate(mutation_plans(count, len(base), rng)):
        raw = base[n % len(base)]
        for index in plan:
            raw = MUTATIONS[index](raw, rng)
        mails.append(raw)
    return mails


def test_the_mutated_mails_cover_every_corpus_mail_every_mutation_and_every_pair() -> None:
    size = len(corpus())
    plans = mutation_plans(MUTATED, size, random.Random(1))
    assert len(plans) == MUTATED
    assert {plan[0] for plan in plans[:size]} == set(range(len(MUTATIONS)))
    pairs = {plan for plan in plans if len(plan) == 2}
    assert pairs == set(itertools.permutations(range(len(MUTATIONS)), 2))
    assert size <= MUTATED  # every corpus mail is mutated at least once
    assert len({plan for plan in plans if len(plan) == 3}) > 100  # and varied triples


def test_fuzzed_mail_is_all_recorded_and_memory_stays_bounded(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server)
    mails = [
        *poison_mails().values(),
        attachment(0, 30),
        huge_subject(0, 10),
        *targeted_corpus(),
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
