"""The next FETCH batch is read while one is recorded (issue 14, sixth session), against a
real Dovecot: one batch ahead and no more, a stop drops what was read ahead (the next poll
reads it again: the UID high-water mark moves only with a recorded batch), an IMAP drop
while reading ahead is the poll's MailboxError and the poller reconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from servers import MailUser
from test_imap import mail

from mailbot.config import PollingConfig
from mailbot.core.incoming import IncomingMail, Outcome
from mailbot.errors import MailboxError
from mailbot.mail.imap import FetchedMail, ImapMailbox
from mailbot.mail.poller import MailboxPoller

WAIT = 5.0  # seconds: only a broken fetch-ahead waits this long


class Watched:
    """An ImapMailbox whose FETCH progress the test sees: each mail read, and a gate the
    reader passes before asking the server for each batch after the first."""

    def __init__(self, box: ImapMailbox) -> None:
        self.box = box
        self.read: list[int] = []
        self.seen = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)

    def fetch(self, uids: Sequence[int], batch_size: int) -> Iterator[FetchedMail]:
        for index, fetched in enumerate(self.box.fetch(uids, batch_size)):
            with self.seen:
                self.read.append(fetched.uid)
                self.seen.notify_all()
            yield fetched
            if (index + 1) % batch_size == 0:
                assert self.gate.wait(WAIT)  # the next batch's FETCH starts after this

    def wait_for(self, uid: int, timeout: float = WAIT) -> bool:
        with self.seen:
            return self.seen.wait_for(lambda: uid in self.read, timeout)


class Recorder:
    """A processor that records UIDs, keeps the high-water mark, and runs a hook per batch."""

    def __init__(self) -> None:
        self.recorded: list[list[int]] = []
        self.high = 0
        self.during: Callable[[int], None] = lambda _n: None

    def start_folder(
        self, mailbox: str, folder: str, uidvalidity: int, existing: Callable[[], int] | None = None
    ) -> int:
        return self.high

    def process_batch(
        self, mailbox: str, folder: str, uidvalidity: int, mails: Sequence[IncomingMail]
    ) -> list[Outcome]:
        self.during(len(self.recorded))
        self.recorded.append([m.uid for m in mails])
        self.high = mails[-1].uid
        return [Outcome(mailbox, m.uid, "ack", (), None, "", None) for m in mails]


@pytest.fixture
def watched(imap_user: MailUser) -> Iterator[Watched]:
    for n in range(1, 9):
        imap_user.append(mail(n))
    box = ImapMailbox(imap_user.imap_config(), name="accueil")
    yield Watched(box)
    box.close()


def poller(source: Watched, recorder: Recorder) -> MailboxPoller:
    polling = PollingConfig(batch_size=2, use_idle=False)
    return MailboxPoller("accueil", "INBOX", source, recorder, polling, deliver=lambda: None)


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fetch-ahead")]


def test_the_next_batch_is_read_while_one_is_recorded_and_no_further(
    watched: Watched,
) -> None:
    recorder = Recorder()
    ahead: list[bool] = []
    further: list[list[int]] = []

    def during(n: int) -> None:
        if n == 0:
            ahead.append(watched.wait_for(4))  # batch 2 arrives while batch 1 is recorded
            watched.wait_for(5, timeout=0.3)  # time for a reader going further to show it
            further.append(list(watched.read))

    recorder.during = during
    outcomes = poller(watched, recorder).poll_once()

    assert ahead == [True]
    assert further == [[1, 2, 3, 4]]  # one batch ahead, not two (memory stays bounded)
    assert recorder.recorded == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert [o.uid for o in outcomes] == list(range(1, 9))
    assert reader_threads() == []


def test_a_stop_drops_what_was_read_ahead_and_the_next_poll_reads_it(
    watched: Watched,
) -> None:
    recorder = Recorder()
    mailbox = poller(watched, recorder)

    def during(n: int) -> None:
        if n == 0:
            assert watched.wait_for(4)  # batch 2 read ahead...
            mailbox.stop.set()  # ...then SIGTERM: batch 1 ends, batch 2 is not recorded

    recorder.during = during
    mailbox.poll_once()
    assert recorder.recorded == [[1, 2]]
    assert recorder.high == 2
    assert reader_threads() == []

    mailbox.stop.clear()
    recorder.during = lambda _n: None
    mailbox.poll_once()
    assert recorder.recorded == [[1, 2], [3, 4], [5, 6], [7, 8]]


def test_an_imap_drop_while_reading_ahead_fails_the_poll_and_the_poller_reconnects(
    imap_user: MailUser, watched: Watched
) -> None:
    recorder = Recorder()
    mailbox = poller(watched, recorder)
    watched.gate.clear()  # the reader stops before batch 2's FETCH

    def during(n: int) -> None:
        if n == 0:
            imap_user.drop_connections()
            watched.gate.set()  # batch 2's FETCH meets a closed connection

    recorder.during = during
    with pytest.raises(MailboxError, match="accueil: FETCH"):
        mailbox.poll_once()
    assert recorder.recorded == [[1, 2]]
    assert reader_threads() == []

    recorder.during = lambda _n: None
    mailbox.disconnect_quietly()  # what cycle() does before its backoff
    mailbox.poll_once()
    assert recorder.recorded == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert mailbox.reconnects == 1
