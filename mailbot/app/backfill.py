"""Recording a mailbox's history (INBOX and Sent) for the indicators, sending nothing.

Only folders the database does not follow yet: in a followed folder, what lies past the
last UID read is new mail that the next poll must acknowledge. A folder is flagged while
its backfill runs (polls refuse it until then) and marked read up to its newest UID at the
end, older-than-``since`` mail included, so that the next poll answers only mail that
arrives from then on. An interrupted backfill is resumed by running it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import date
from typing import Protocol

from mailbot.app.intake import Pipeline
from mailbot.app.sent import SentPipeline, signature_check
from mailbot.config import Config
from mailbot.core.clock import utcnow
from mailbot.mail.imap import ImapMailbox
from mailbot.mail.poller import Processor, Source, batches
from mailbot.render.templates import Renderer
from mailbot.store import Store


class HistorySource(Source, Protocol):
    def uids_since(self, day: date) -> list[int]: ...


Tick = Callable[[], None]  # one more mail read


class Progress(Protocol):
    """How a face shows a backfill going (the CLI: a progress bar per folder)."""

    def skipped(self, mailbox: str, folder: str) -> None:
        """A followed folder, left to the polls."""

    def folder(
        self, mailbox: str, folder: str, total: int
    ) -> AbstractContextManager[Callable[[], None]]:
        """A folder about to be read: the context gives what to call after each mail."""


def imap_history(config: Config, mailbox: str) -> HistorySource:
    limit = config.polling.max_message_bytes
    return ImapMailbox(config.mailboxes[mailbox].imap, name=mailbox, max_message_bytes=limit)


def backfill(
    config: Config,
    store: Store,
    renderer: Renderer,
    since: date,
    progress: Progress,
    sources: Callable[[Config, str], HistorySource] = imap_history,
) -> None:
    """Record every folder's mail received since ``since`` (see the module docstring)."""
    history = Pipeline(config, store, renderer, send=False)
    replies = SentPipeline(config, store, signature_check)
    try:
        for name, folder, processor in _feeds(config, history, replies):
            with store.transaction() as tx:
                followed = tx.folder_state(name, folder) is not None
                if followed and not tx.backfill_pending(name, folder):
                    progress.skipped(name, folder)
                    continue
                tx.set_backfill_pending(name, folder, True)  # polls refuse it until the end
            source = sources(config, name)
            _backfill_folder(config, store, source, (name, folder), processor, since, progress)
    finally:
        history.close()  # its routing helper, if a large batch started one


def _feeds(
    config: Config, history: Pipeline, replies: SentPipeline
) -> Iterator[tuple[str, str, Processor]]:
    for name, box in config.mailboxes.items():
        yield name, box.imap.folder, history
        if box.imap.sent_folder:
            yield name, box.imap.sent_folder, replies


def _backfill_folder(
    config: Config,
    store: Store,
    source: HistorySource,
    where: tuple[str, str],
    processor: Processor,
    since: date,
    progress: Progress,
) -> None:
    name, folder = where
    source.connect()
    try:
        searched_at = utcnow()  # before SELECT: whatever arrived earlier is at most newest
        uidvalidity = source.select(folder)
        last = processor.start_folder(name, folder, uidvalidity)  # resumes an interrupted one
        newest = max(source.uids_after(0), default=0)
        uids: Sequence[int] = [uid for uid in source.uids_since(since) if last < uid <= newest]
        with progress.folder(name, folder, len(uids)) as advance:
            size, limit = config.polling.batch_size, config.polling.max_message_bytes
            for mails in batches(source, uids, size, limit):
                processor.process_batch(name, folder, uidvalidity, mails)
                for _mail in mails:
                    advance()
        with store.transaction() as tx:
            tx.save_folder_state(name, folder, uidvalidity, max(newest, last))
            # Read up to then, the mail older than ``since`` too: a UIDVALIDITY change
            # later must not acknowledge it (Pipeline.start_folder). No READ_MARGIN: every
            # mail up to ``newest`` is dealt with, and ``since`` is days back.
            tx.folder_read(name, folder, uidvalidity, searched_at.replace(microsecond=0))
            tx.set_backfill_pending(name, folder, False)
    finally:
        source.close()
