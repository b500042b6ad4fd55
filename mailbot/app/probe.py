"""The mystery e-mail (issue 16): what auditors do by hand, every hour.

``Prober.run`` sends a marked test mail from the probe mailbox to each probed mailbox,
over SMTP like any citizen's; waits for the ARs to come back to the probe mailbox (IMAP);
checks each (``mailbot.core.probe``: reference, date of receipt, deadline, the service's
contacts, headers) and records its latency; then mails the operators (``probe.alert_to``)
about every AR missing, late or wrong. `mailbot status` reports the latest probe of each
mailbox (a failed one is CRITICAL).
"""

from __future__ import annotations

import html
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot.app.delivery import Outbox
from mailbot.app.outgoing import Queued, enqueue
from mailbot.config import Config, ProbeConfig
from mailbot.core.clock import Clock, utcnow
from mailbot.core.message import parse_message
from mailbot.core.probe import SUBJECT, Expected, News, news, problems, verdict
from mailbot.core.statuses import OutboxKind, ProbeStatus
from mailbot.errors import DeliveryError
from mailbot.mail.compose import Composer
from mailbot.mail.imap import ImapMailbox
from mailbot.mail.smtp import Envelope, Transport
from mailbot.render.rendering import RenderedMail
from mailbot.store import Store
from mailbot.store import probes as sql

log = logging.getLogger(__name__)
CHECK_EVERY = 2.0  # seconds between two looks at the probe mailbox


@dataclass
class Sent:
    id: int
    mailbox: str
    message_id: str
    sent_at: datetime


@dataclass(frozen=True)
class Result:
    mailbox: str
    message_id: str
    status: ProbeStatus
    latency: float | None  # seconds from sending the probe to its AR's arrival
    problems: tuple[str, ...]
    probe_id: int


class Prober:
    def __init__(
        self,
        config: Config,
        store: Store,
        transport: Transport,
        outbox: Outbox,
        clock: Clock = utcnow,
        reader: Callable[[], ImapMailbox] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        assert config.probe is not None, "no probe: section in rules.yaml"
        self.config = config
        self.probe: ProbeConfig = config.probe
        self.store = store
        self.transport = transport
        self.outbox = outbox
        self.clock = clock
        self.reader = reader or (lambda: ImapMailbox(self.probe.imap, name="probe"))
        self.composer = Composer.from_config(config)
        self.waited = self.probe.wait_seconds
        # The worker's stop: a shutdown does not wait for the ARs (the round is missing).
        self.stop = stop or threading.Event()

    def run(self, wait: float | None = None) -> list[Result]:
        """One round: send, wait for the ARs (``wait`` seconds, default the config's),
        judge, alert. Returns each probed mailbox's result."""
        inbox = self.reader()
        inbox.connect()
        try:
            inbox.select(self.probe.imap.folder)
            known = inbox.uids_after(0)
            sent = self._send(f"{self.clock():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}")
            results = self._collect(inbox, sent, known[-1] if known else 0, wait)
        finally:
            inbox.close()
        self._alert(results)
        return results

    def _send(self, run: str) -> list[Sent]:
        secret = self.probe.secret()
        found: list[tuple[Sent, Envelope]] = []
        for name in self.config.probed:
            address = self.config.mailboxes[name].address
            text = (
                "Ce message est envoyé automatiquement par la sonde de mailbot pour vérifier"
                f" que la boîte {address} accuse bien réception. Merci de ne pas y répondre."
            )
            rendered = RenderedMail(f"{SUBJECT} ({run})", text, f"<p>{html.escape(text)}</p>")
            mail = self.composer.probe(
                rendered, from_address=self.probe.address, to=address, secret=secret
            )
            message_id = str(mail["Message-ID"])
            now = self.clock()
            deadline = now + timedelta(seconds=self.probe.wait_seconds)
            probe_id = sql.add(self.store, run, name, message_id, now, deadline)
            envelope = Envelope(self.probe.address, address, mail.as_bytes(), name=str(probe_id))
            found.append((Sent(probe_id, name, message_id, now), envelope))
        failed: dict[int, str] = {}

        def after(envelope: Envelope, error: DeliveryError | None) -> None:
            if error is not None:
                failed[int(envelope.name)] = str(error)

        try:
            self.transport.send_batch([e for _s, e in found], lambda _e: True, after)
        except DeliveryError as exc:
            failed.update({s.id: str(exc) for s, _e in found})
        for probe, _envelope in found:
            if probe.id in failed:
                sql.settle(self.store, probe.id, ProbeStatus.NOT_SENT, problems=failed[probe.id])
        return [s for s, _e in found if s.id not in failed]

    def _collect(
        self, inbox: ImapMailbox, sent: list[Sent], after_uid: int, wait: float | None
    ) -> list[Result]:
        """Read the probe mailbox until every AR came or the wait is over."""
        waiting = {s.message_id: s for s in sent}
        results: list[Result] = []
        self.waited = self.probe.wait_seconds if wait is None else wait
        end = time.monotonic() + self.waited
        while waiting:
            for uid in inbox.uids_after(after_uid):
                after_uid = max(after_uid, uid)
                for fetched in inbox.fetch([uid], 1):
                    if fetched.refused:  # unreadable: not an AR the probe can judge
                        continue
                    result = self._judge(fetched.raw, fetched.internaldate, waiting)
                    if result is not None:
                        results.append(result)
            if not waiting or time.monotonic() >= end or self.stop.wait(CHECK_EVERY):
                break
            inbox.select(self.probe.imap.folder)  # a fresh look at the folder
        if self.stop.is_set():
            return results  # a shutdown, not a missing AR: the rest stay awaiting
        for probe in waiting.values():
            results.append(self._settle(probe, None, ()))
        return results

    def _judge(self, raw: bytes, arrived: datetime, waiting: dict[str, Sent]) -> Result | None:
        ar = parse_message(raw)
        probe = next((waiting[i] for i in ar.thread_ids if i in waiting), None)
        if probe is None:
            return None  # someone else's mail, or an AR to an earlier round
        del waiting[probe.message_id]
        box = self.config.mailboxes[probe.mailbox]
        service = self.config.services[box.service]
        expected = Expected(
            probe.message_id,
            box.address,
            self.config.sender.reference_prefix,
            (service.name, service.phone, *([service.email] if service.email else [])),
        )
        return self._settle(probe, arrived, tuple(problems(ar, expected)))

    def _settle(self, probe: Sent, arrived: datetime | None, found: tuple[str, ...]) -> Result:
        latency = None if arrived is None else (arrived - probe.sent_at).total_seconds()
        status = verdict(latency, found, self.probe.late_seconds)
        if status is ProbeStatus.MISSING:
            found = (f"aucun accusé de réception après {self.waited:g} s",)
        elif status is ProbeStatus.LATE:
            found = (f"accusé de réception reçu après {latency:.0f} s",)
        sql.settle(
            self.store,
            probe.id,
            status,
            received_at=sql.received_at(self.store, probe.message_id),
            ar_at=arrived,
            latency_seconds=latency,
            problems="; ".join(found),
            checked_at=self.clock(),
        )
        log.info("probe", extra={"mailbox": probe.mailbox, "status": status, "latency": latency})
        return Result(probe.mailbox, probe.message_id, status, latency, found, probe.id)

    def _alert(self, results: list[Result]) -> None:
        """Mail the operators what changed: mailboxes whose probe began to fail (or has
        failed for another day), in one mail; those that work again, in another."""
        if not self.probe.alert_to:
            return
        now = self.clock()
        told: dict[News, list[Result]] = {}
        for result in results:
            failing = sql.failing_run(self.store, result.mailbox, result.probe_id)
            found = news(result.status.failed, failing, now)
            if found is not None:
                told.setdefault(found, []).append(result)
        failed = told.get(News.FAILING, []) + told.get(News.STILL_FAILING, [])
        recovered = told.get(News.RECOVERED, [])
        mails = [*self._failure_mails(failed), *self._recovery_mails(recovered)]
        if not mails:
            return
        with self.store.transaction() as tx:
            enqueue(tx, None, mails)
        self.outbox.deliver_due()

    def _failure_mails(self, failed: list[Result]) -> list[Queued]:
        if not failed:
            return []
        lines = [
            f"- boîte {r.mailbox} : {r.status.value} — {'; '.join(r.problems)}" for r in failed
        ]
        text = (
            "La sonde de mailbot a envoyé un message de test à chaque boîte surveillée."
            " Ces accusés de réception manquent, sont en retard ou sont incomplets :\n\n"
            + "\n".join(lines)
            + "\n\nVérifiez que `mailbot run` tourne (`mailbot status`) et ses journaux."
            " Tant que l'échec dure, ce message est renvoyé une fois par jour ; un autre"
            " dira quand la sonde passe de nouveau.\n"
        )
        subject = "[mailbot] Sonde en échec : " + ", ".join(sorted({r.mailbox for r in failed}))
        return self._to_operators(subject, text)

    def _recovery_mails(self, recovered: list[Result]) -> list[Queued]:
        if not recovered:
            return []
        boxes = ", ".join(sorted({r.mailbox for r in recovered}))
        text = (
            f"La sonde de mailbot passe de nouveau pour : {boxes}. Les accusés de réception"
            " arrivent à temps et complets.\n"
        )
        return self._to_operators(f"[mailbot] Sonde rétablie : {boxes}", text)

    def _to_operators(self, subject: str, text: str) -> list[Queued]:
        rendered = RenderedMail(subject, text, "<pre>" + html.escape(text) + "</pre>")
        sender = self.composer.internal_address
        return [
            Queued.of(
                OutboxKind.PROBE_ALERT,
                self.composer.internal(rendered, to=address),
                address,
                sender,
            )
            for address in self.probe.alert_to
        ]
