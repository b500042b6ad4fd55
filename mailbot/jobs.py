"""Scheduled jobs besides polling: the daily deadline alerts to services."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

from mailbot.alerts import digests
from mailbot.config import Config
from mailbot.outbox import Outbox
from mailbot.render import Renderer, build_email
from mailbot.store import Store
from mailbot.workdays import WorkingCalendar

log = logging.getLogger(__name__)
ALERTS_TEMPLATE = "alertes-delais"
LOOKBACK_DAYS = 120


def send_alerts(
    config: Config, store: Store, renderer: Renderer, outbox: Outbox, today: date
) -> dict[str, int]:
    """Queue and deliver one digest per service that has something to act on.

    Returns the number of entries per service digest sent. Nothing is sent on a day off.
    """
    calendar = WorkingCalendar(timezone=config.timezone)
    if not calendar.is_working_day(today):
        return {}
    zone = calendar.zone
    since = datetime.combine(today - timedelta(days=LOOKBACK_DAYS), time.min, zone)
    until = datetime.combine(today + timedelta(days=1), time.min, zone)
    own = {name: box.service for name, box in config.mailboxes.items()}
    found = digests(store.indicator_rows(since, until), today, calendar, own)
    sender = next(iter(config.mailboxes.values())).address
    sent: dict[str, int] = {}
    for name, digest in found.items():
        service = config.services.get(name)
        if service is None or not service.addresses:
            log.warning("no address for the alerts of a service", extra={"service": name})
            continue
        mail = renderer.render(
            ALERTS_TEMPLATE,
            {
                "service": {"name": service.name},
                "day": datetime.combine(today, time(8, 30), zone),
                "overdue": digest.overdue,
                "soon": digest.soon,
                "relanced": digest.relanced,
            },
        )
        with store.transaction() as tx:
            for address in service.addresses:
                built = build_email(
                    mail,
                    from_address=sender,
                    from_name="mailbot — Préfecture de la Seine-Maritime",
                    to=address,
                    message_id_domain=config.sender.message_id_domain,
                    loop_header_value=config.sender.loop_header_value,
                )
                tx.enqueue(
                    None, "digest", address, sender, str(built["Message-ID"]), built.as_bytes()
                )
        sent[name] = len(digest.overdue) + len(digest.soon) + len(digest.relanced)
    outbox.deliver_due()
    return sent
