"""A poll's memory is bounded by its batch, not by the backlog (issue 14: peak RSS of
`poll --once -q` on 20,000 mails within 1.1x of 1,000).

Each mail's ``Outcome`` (its subject, reference, reasons: ~0.5 KB) was kept for the whole
poll: 10 MB on a backlog of 20,000. A quiet poll, and `run`, now keep counts only. The
delivery thread takes a FETCH batch's worth of mail at a time (their bytes in memory until
it ends), not 500, when intake runs ahead of sending.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poison import attachment
from refusals import query
from test_overlap import RECEIVED, Folder, Listed

from mailbot.app.context import App, app_from_config
from mailbot.config import load_config
from mailbot.core.incoming import Outcome
from mailbot.mail.poller import PollRecord
from mailbot.mail.smtp import Envelope, FileTransport
from mailbot.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


def make_app(tmp_path: Path) -> App:
    """The shipped rules, batches of 3 mails, mail written to files."""
    config = load_config(ROOT / "rules.yaml")
    polling = config.polling.model_copy(update={"batch_size": 3})
    config = config.model_copy(update={"polling": polling})
    database = f"sqlite:///{tmp_path / 'mailbot.db'}"
    return app_from_config(config, FileTransport(tmp_path / "out"), database, True)


def watch_sends(app: App) -> list[int]:
    """How many mails each delivery hands to the transport."""
    sizes: list[int] = []
    transport = app.outbox.transport
    send = transport.send_batch

    def send_batch(envelopes: Sequence[Envelope], *rest: Any) -> None:
        sizes.append(len(envelopes))
        send(envelopes, *rest)

    transport.send_batch = send_batch  # type: ignore[method-assign]
    return sizes


def watch_outcomes(app: App) -> list[int]:
    """Before each batch is recorded: how many outcomes of the batches before are alive."""
    refs: list[weakref.ref[Outcome]] = []
    alive: list[int] = []
    record = app.pipeline.process_batch

    def process_batch(*args: Any) -> list[Outcome]:
        alive.append(sum(ref() is not None for ref in refs))
        outcomes = record(*args)
        refs.extend(weakref.ref(outcome) for outcome in outcomes)
        return outcomes

    app.pipeline.process_batch = process_batch  # type: ignore[method-assign]
    return alive


def test_a_quiet_poll_holds_one_batch_of_outcomes_and_sends_a_batch_at_a_time(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    try:
        worker = Worker(app.config, app.pipeline, app.outbox, {"general": Folder(12)})
        records: list[PollRecord] = []
        worker.pollers["general"].observer = records.append
        alive = watch_outcomes(app)
        sends = watch_sends(app)
        assert worker.poll_once(keep=False) == []
        # Four batches of 3: at most the batch before is still referenced (by the loop's
        # variable while the next is recorded); kept (``keep=True``, the default, what a
        # printing `poll --once` asks, test_overlap), it would be 0, 3, 6, 9.
        assert alive == [0, 3, 3, 3]
        assert records[-1].decisions == {"acknowledge": 12}
        sent = query(app.store.url, "SELECT count(*) FROM outbox WHERE status = 'sent'")
        assert sent == [(12,)]
        assert sum(sends) == 12 and max(sends) <= 3  # a batch's worth per delivery
    finally:
        app.store.close()


def test_a_batch_of_large_mails_holds_about_max_message_bytes(tmp_path: Path) -> None:
    """A batch is cut by bytes as well as by count: 200 scans of 20 MB, each under
    ``polling.max_message_bytes``, are not one batch of 4 GB held while it is recorded."""
    app = make_app(tmp_path)  # batches of 3 mails
    try:
        polling = app.config.polling.model_copy(update={"max_message_bytes": 2_500_000})
        config = app.config.model_copy(update={"polling": polling})
        folder = Folder(0)
        folder.mails = [Listed(n, RECEIVED, attachment(n, 1)) for n in range(1, 6)]  # ~1 MB
        worker = Worker(config, app.pipeline, app.outbox, {"general": folder})
        sizes: list[int] = []
        record = app.pipeline.process_batch

        def process_batch(*args: Any) -> list[Outcome]:
            sizes.append(sum(len(mail.raw) for mail in args[3]))
            return record(*args)

        app.pipeline.process_batch = process_batch  # type: ignore[method-assign]
        worker.poll_once(keep=False)
        assert len(sizes) == 3 and sum(sizes) == sum(len(m.raw) for m in folder.mails)
        assert max(sizes) <= 2_500_000
    finally:
        app.store.close()
