"""The worker's scheduled jobs besides polling: each calls its use case, then delivers what
it queued. What is due, and when, is the worker's schedule (``mailbot.worker``)."""

from __future__ import annotations

import logging
from datetime import date, datetime

from mailbot.app import alerts, maintenance, report
from mailbot.app.delivery import Outbox
from mailbot.app.model_retention import model_retention_warnings
from mailbot.config import Config
from mailbot.render.templates import Renderer
from mailbot.store import Store

log = logging.getLogger(__name__)


def send_alerts(
    config: Config, store: Store, renderer: Renderer, outbox: Outbox, today: date
) -> dict[str, int]:
    """Today's deadline digests, queued and delivered, once a day across workers;
    entries per service digest sent."""
    sent = alerts.send_alerts(config, store, renderer, today, once=True).sent
    outbox.deliver_due()
    return sent


def send_weekly_report(
    config: Config, store: Store, renderer: Renderer, outbox: Outbox, now: datetime
) -> str | None:
    """Last week's report, once ever (see ``report.send_weekly_report``), then delivered."""
    week = report.send_weekly_report(config, store, renderer, now)
    if week is not None:
        outbox.deliver_due()
        log.info("weekly report sent", extra={"week": week})
    return week


def purge_retention(config: Config, store: Store) -> int:
    """Everything received more than ``retention.days`` ago deleted (and the console's
    ended sessions past their expiry); the number of messages deleted. A routing model
    that learned from corrected mail now past the retention is said each day (the purge
    deletes the mail, not what the model learned of it) until it is trained again."""
    deleted = maintenance.purge(config, store)
    log.info("retention purge", extra={"deleted": deleted, "days": config.retention.days})
    for warning in model_retention_warnings(config):
        log.warning(warning)
    return deleted
