"""Scheduled jobs besides polling: the daily deadline alerts to services."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import Any

from mailbot.app.delivery import Outbox
from mailbot.config import Config
from mailbot.core.digests import digests
from mailbot.core.schedule import parse_weekly
from mailbot.core.statuses import OutboxKind
from mailbot.core.workdays import WorkingCalendar
from mailbot.render.templates import Renderer, build_email
from mailbot.store import Store

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
                "unacknowledged": digest.unacknowledged,
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
                    None,
                    OutboxKind.DIGEST,
                    address,
                    sender,
                    str(built["Message-ID"]),
                    built.as_bytes(),
                )
        sent[name] = len(digest.overdue) + len(digest.soon) + len(digest.relanced)
    outbox.deliver_due()
    return sent


def report_due(now: datetime, cron: str, zone: Any) -> bool:
    """Whether this week's report time (``"mon 08:00"``, or the first time a crontab names
    in the week) has passed: the week before is then due."""
    local = now.astimezone(zone)
    scheduled = parse_weekly(cron).first_in_week(local.date(), zone)
    return scheduled is not None and local >= scheduled


def send_weekly_report(
    config: Config, store: Store, renderer: Renderer, outbox: Outbox, now: datetime
) -> str | None:
    """Send the last complete week's report once, ever: the claim and the queued mails commit
    together, so a restart neither skips nor repeats a week. Returns the week sent, if any."""
    from mailbot.app.report import ReportBuilder, week_period

    calendar = WorkingCalendar(timezone=config.timezone)
    if not report_due(now, config.reports.weekly.cron, calendar.zone):
        return None
    today = now.astimezone(calendar.zone).date()
    period = week_period(today - timedelta(days=7))
    recipients = list(config.reports.weekly.to)
    if not recipients:
        return None
    report = ReportBuilder(config, store, renderer).build(period, today)
    with store.transaction() as tx:
        if not tx.claim_once(f"report-weekly-{period.label}"):
            return None
        for recipient in recipients:
            del report.mail.message["To"]
            report.mail.message["To"] = recipient
            tx.enqueue(
                None,
                OutboxKind.REPORT,
                recipient,
                config.sender.envelope_from,
                str(report.mail["Message-ID"]),
                report.mail.as_bytes(),
            )
    outbox.deliver_due()
    log.info("weekly report sent", extra={"week": period.label})
    return period.label
