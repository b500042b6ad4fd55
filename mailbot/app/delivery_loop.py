"""The delivery thread of ``run`` and ``poll --once``: the outbox delivered beside intake."""

from __future__ import annotations

import logging
import threading

from mailbot.app.delivery import Outbox
from mailbot.logs import RepeatedFailures
from mailbot.store.errors import is_lasting, transient_reason

log = logging.getLogger(__name__)


class DeliveryLoop:
    """Delivers the outbox on a thread of its own, so that intake never waits on SMTP
    (``run`` and ``poll --once``). Its claims come a group at a time (``Outbox.claim_group``):
    on SQLite one that meets an open intake part rides on it (store/desk), which cuts the part
    once per group, not once per mail as when each mail was claimed alone.

    The pollers ``wake()`` it when they queue mail; otherwise it looks for due retries every
    ``interval`` seconds. It ends when the outbox's ``stop`` is set, interrupting the send in
    flight (see Transport): a hung SMTP server cannot hold up a shutdown.

    Each delivery takes at most ``limit`` mails, of them at most ``citizens`` to citizens
    (the worker passes its FETCH batch size for ``citizens`` and twice it for ``limit``: a
    batch's ARs and the forwards between them): their bytes are in memory until the
    delivery ends (an AR is ~13 KB: 200 of them, 2.6 MB), so when intake runs ahead of
    sending, memory stays bounded by a batch (issue 14).
    """

    def __init__(
        self, outbox: Outbox, interval: float, limit: int = 500, citizens: int | None = None
    ) -> None:
        self.outbox = outbox
        self.interval = interval
        self.limit = limit
        self.citizens = citizens
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery", daemon=True)
        self._draining = False  # finish(): deliver until nothing is due, then end
        self._failure: Exception | None = None

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def finish(self) -> None:
        """Deliver everything due, then end the thread: a drain that returns only when the
        mail queued so far has been sent. Raises what the last delivery raised."""
        self._draining = True
        self.join()
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        stop = self.outbox.stop
        failures = RepeatedFailures(
            log,
            "delivery failed, trying again later",
            "delivery works again",
            transient_reason,
            lasting=is_lasting,
        )
        while not stop.is_set():
            self._wake.clear()
            draining = self._draining
            try:
                taken = self.outbox.deliver_due(limit=self.limit, citizens=self.citizens).taken
            except Exception as exc:  # a database hiccup must not end delivery for good
                if draining:
                    self._failure = exc
                    return
                failures.failed(exc)
                taken = 0
            else:
                failures.succeeded()
            if draining and not taken:
                return  # nothing was due after the last wake: all sent
            if not stop.is_set() and not taken:
                self._wake.wait(self.interval)
