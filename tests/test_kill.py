"""kill -9 at random moments: no mail lost, no AR sent twice, the doubtful ones flagged.

`mailbot run` is a real process against the real Dovecot and aiosmtpd. Mail arrives in
waves; each worker is killed with SIGKILL at a random moment once it has committed a
batch: inside the next FETCH batch's transaction, between two, or while sending. A last
worker finishes (tests/kill_run.py; bench/kill.py runs 1,000 mails and 5 kills). The
delivery guarantee (README) is that an AR interrupted while sending is marked uncertain
and never resent: so every mail has a row, no citizen gets two ARs, and a mail without an
AR is one flagged uncertain. A transferred mail's forward to its service is delivered at
least once instead (a kill while it was leaving sends it again, never 'uncertain': a copy
twice in a service's mailbox is harmless, a forward lost is the citizen's mail the service
never sees): every forward queued is received, and none is uncertain. Before, the forwards
were counted nowhere, and a kill left them uncertain like the ARs.

Two kills and three waves of ~67 mails (three FETCH batches each): a worker's start
(lingua's models: ~3 s of CPU) costs more than 100 mails, so the test kills twice where
bench/kill.py kills five times. The printed figures say where each kill landed (rows
recorded of the mails delivered, items left 'sending'): in the runs measured, both while
their wave was still being recorded and ARs sent.
"""

from __future__ import annotations

from pathlib import Path

from kill_run import run_scenario
from servers import DovecotServer, MailUser, SmtpServer

MAILS = 200
KILLS = 2


def test_kill_9_at_random_moments_loses_nothing_and_never_answers_twice(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    figures = run_scenario(
        tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, mails=MAILS, kills=KILLS
    )
    print(f"\nkill -9: {figures.line()}")
    assert figures.duplicates == 0
    assert figures.lost == 0
    assert figures.not_acknowledged == 0
    assert figures.unflagged == []  # a mail without its AR is always one flagged uncertain
    assert figures.ars + figures.uncertain - figures.delivered_anyway == MAILS
    assert figures.transferred >= MAILS // 4  # one mail in three asks about a carte grise
    assert figures.forwards_missing == []
    assert figures.forwards_uncertain == 0
