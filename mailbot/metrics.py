"""The worker's Prometheus endpoint and its liveness/readiness checks (issue 16).

``/metrics``: what this process counted (mails processed by decision, poll durations,
polls the database failed, IMAP reconnects) and, read from the database at each scrape,
what every worker shares (outbox depth, ARs by status, poll lag and IMAP errors per folder,
quarantined mail, mail passed over in the last 7 days, open messages by age band).
``/healthz``: the process is alive and not stopping (200, else 503). ``/readyz``: it can
work: the database answers, and, sharing it, its worker row is renewed (200, else 503).
Served by the standard library's WSGI server on a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mailbot.app import supervision
from mailbot.config import Config
from mailbot.core.clock import utcnow
from mailbot.errors import MailbotError
from mailbot.mail.poller import MailboxPoller, PollRecord
from mailbot.store import Store

log = logging.getLogger(__name__)
Start = Callable[[str, list[tuple[str, str]]], Any]


class Shared(Collector):
    """The figures every worker shares, read from the database at scrape time."""

    def __init__(self, config: Config, store: Store, pollers: Mapping[str, MailboxPoller]) -> None:
        self.config = config
        self.store = store
        self.pollers = pollers

    def collect(self) -> Iterator[Any]:
        now = utcnow()
        found = supervision.figures(self.config, self.store, now)
        yield _gauge("mailbot_outbox_depth", "Mail waiting to be sent.", found.outbox_depth)
        yield _gauge(
            "mailbot_outbox_oldest_pending_seconds",
            "How long the oldest mail waiting to be sent has waited (0: none waits).",
            found.oldest_pending_seconds or 0,
        )
        ars = GaugeMetricFamily("mailbot_ars", "Messages by AR status.", labels=["status"])
        for status, count in sorted(supervision.ar_counts(self.store).items()):
            ars.add_metric([status], count)
        yield ars
        yield from self._folders(found.folders, now)
        quarantined = GaugeMetricFamily(
            "mailbot_quarantined", "Mail waiting for a person.", labels=["mailbox"]
        )
        for mailbox, count in sorted(found.quarantined.items()):
            quarantined.add_metric([mailbox], count)
        yield quarantined
        # Mail whose quarantine row the database refused, passed over: no row, no AR, on the
        # server for a person; counted over `mailbot status`'s window (its check's figure).
        passed_over = GaugeMetricFamily(
            "mailbot_passed_over",
            "Mail passed over (its quarantine refused) in the last 7 days, waiting for a person.",
            labels=["mailbox"],
        )
        for mailbox, count in sorted(found.passed_over_per_mailbox.items()):
            passed_over.add_metric([mailbox], count)
        yield passed_over
        open_ = GaugeMetricFamily(
            "mailbot_open_messages",
            "Unanswered citizens' messages by age in working days.",
            labels=["mailbox", "age"],
        )
        for mailbox, bands in sorted(
            supervision.open_messages(self.config, self.store, now).items()
        ):
            for _low, _high, band in supervision.AGE_BANDS:
                open_.add_metric([mailbox, band], bands.get(band, 0))
            open_.add_metric(
                [mailbox, supervision.OLDEST_BAND], bands.get(supervision.OLDEST_BAND, 0)
            )
        yield open_

    def _folders(self, folders: Iterable[Any], now: datetime) -> Iterator[Any]:
        lag = GaugeMetricFamily(
            "mailbot_poll_lag_seconds",
            "Seconds since a folder's last successful poll.",
            labels=["mailbox", "folder"],
        )
        errors = GaugeMetricFamily(
            "mailbot_imap_errors", "Failed polls in a row.", labels=["mailbox", "folder"]
        )
        for folder in folders:
            if folder.lag_seconds is not None:
                lag.add_metric([folder.mailbox, folder.folder], folder.lag_seconds)
            errors.add_metric([folder.mailbox, folder.folder], folder.errors)
        yield lag
        yield errors
        reconnects = CounterMetricFamily(
            "mailbot_imap_reconnects",
            "IMAP connections this process made again after the first.",
            labels=["mailbox", "folder"],
        )
        for poller in self.pollers.values():
            reconnects.add_metric([poller.name, poller.folder], poller.reconnects)
        yield reconnects


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class Metrics:
    """The registry of one worker, fed by its pollers (``observe``)."""

    def __init__(self, config: Config, store: Store, pollers: Mapping[str, MailboxPoller]) -> None:
        self.registry = CollectorRegistry()
        self.processed = Counter(
            "mailbot_mails_processed",
            "Mails this process recorded, by decision.",
            ["mailbox", "decision"],
            registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "mailbot_poll_duration_seconds",
            "Duration of successful polls of a folder.",
            ["mailbox", "folder"],
            registry=self.registry,
        )
        # Polls a transient database error failed: the database's, not the IMAP errors.
        self.poll_database_errors = Counter(
            "mailbot_poll_database_errors",
            "Polls of a folder that a transient database error failed.",
            ["mailbox", "folder"],
            registry=self.registry,
        )
        self.registry.register(Shared(config, store, pollers))

    def observe(self, record: PollRecord) -> None:
        for decision, count in record.decisions.items():
            self.processed.labels(record.mailbox, decision).inc(count)
        if record.error is None:
            self.poll_seconds.labels(record.mailbox, record.folder).observe(record.seconds)
        elif record.database:
            self.poll_database_errors.labels(record.mailbox, record.folder).inc()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no access log
        return None


class Endpoint:
    """``/metrics``, ``/healthz``, ``/readyz`` on ``host:port``, on a thread of its own."""

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        self.scrape = make_wsgi_app(metrics.registry)
        self.alive = alive
        self.ready = ready
        try:
            self.server = make_server(host, port, self.app, _Server, _Quiet)
        except OSError as exc:
            # A second worker on the host with the same rules.yaml, another program on the
            # port: the operator's to fix, said plainly (exit 2), not a bug's traceback.
            raise MailbotError(
                f"cannot serve the metrics on {host}:{port} (status.metrics_host,"
                f" status.metrics_port): {exc.strerror or type(exc).__name__}. Another"
                " program, or another mailbot worker on this host, uses it: give each"
                " worker its own port."
            ) from None
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    def app(self, environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self.scrape(environ, start)  # type: ignore[no-any-return]
        if path in ("/healthz", "/readyz"):
            good = self.alive() if path == "/healthz" else self.alive() and self.ready()
            start("200 OK" if good else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if good else b"not ready\n"]
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    def start(self) -> None:
        self.thread.start()
        log.info("metrics served", extra={"port": self.server.server_port})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
