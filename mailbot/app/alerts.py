"""The daily deadline alerts: one digest per service that has something to act on (late,
soon due and relanced messages, the answered messages the citizen wrote again about,
unread, the mail left without an AR, the mail passed over that still waits for a
person, and the messages whose mail to the citizen bounced since the last digest sent),
queued in one go."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from mailbot.app import quarantine
from mailbot.app.bounces import bounced_between
from mailbot.app.outgoing import Queued, enqueue
from mailbot.config import Config
from mailbot.core.digests import BOUNCE_LOOKBACK_DAYS, Digest, bounce_window, digests
from mailbot.core.schedule import parse_time
from mailbot.core.statuses import OutboxKind
from mailbot.core.workdays import WorkingCalendar
from mailbot.mail.compose import Composer
from mailbot.render.templates import Renderer
from mailbot.render.variables import service_article
from mailbot.store import Store

log = logging.getLogger(__name__)
ALERTS_TEMPLATE = "alertes-delais"
DIGEST_TIME = time(8, 30)  # the hour the digest says it was made (its "day" variable)
# A day's digests claimed (``once``): ``alerts-2026-11-25``, the last one read back as the
# start of the next digest's bounces.
ALERTS_CLAIM = "alerts-"


@dataclass(frozen=True)
class Alerts:
    """The entries of each digest queued, by service; and those of the digests that could
    not be, their service having no address in rules.yaml (said apart: "nothing to send"
    would hide late mail nobody is told about)."""

    sent: dict[str, int] = field(default_factory=dict)
    unaddressed: dict[str, int] = field(default_factory=dict)


def send_alerts(
    config: Config, store: Store, renderer: Renderer, today: date, once: bool = False
) -> Alerts:
    """Queue one digest per service with something to act on; nothing on a day off.

    ``once`` (the worker's schedule): the day's digests are claimed in the transaction
    that queues them, so that several workers, or a worker catching up after a takeover,
    send them once; that claim also says where the next digest's bounces start. A run by
    hand (``mailbot alerts``) claims nothing: the scheduled digest after it still tells
    the bounces it told.
    """
    calendar = WorkingCalendar(timezone=config.timezone)
    if not calendar.is_working_day(today):
        return Alerts()
    until = datetime.combine(today + timedelta(days=1), time.min, calendar.zone)
    own = {name: box.service for name, box in config.mailboxes.items()}
    rows = store.open_rows(until)  # every unanswered one, however old
    # Answered, so in no deadline, but the citizen's new mail waits for an agent: the
    # console's « Nouveau message de l'usager », which a service seeing only its
    # digest would never hear of.
    again = store.written_again_rows(until=until)
    # No row records a mail passed over: without these, nobody's digest would name it.
    passed = quarantine.passed_over(store, until=until)
    bounced = _bounces(config, store, calendar, today)
    general = config.organisation.general_service
    found = digests(rows, today, calendar, own, general, passed, again, bounced)
    composer = Composer.from_config(config)
    done = Alerts()
    mails: list[Queued] = []
    for name, digest in found.items():
        service = config.services.get(name)
        if service is None or not service.addresses:
            log.warning("no address for the alerts of a service", extra={"service": name})
            done.unaddressed[name] = digest.entries
            continue
        mails += _digest_mails(config, renderer, composer, today, digest, service.addresses)
        done.sent[name] = digest.entries
    with store.transaction() as tx:
        if once and not tx.claim_once(f"{ALERTS_CLAIM}{today.isoformat()}"):
            return Alerts()  # another worker sent today's
        enqueue(tx, None, mails)
    return done


def _bounces(
    config: Config, store: Store, calendar: WorkingCalendar, today: date
) -> list[dict[str, Any]]:
    """Our mail to a citizen that bounced since the last digest sent (the newest day claimed
    before today: a day the worker was down sent none), told once: no acknowledgement
    exists to say an agent saw it; the console keeps showing it. Today's own claim, if a
    scheduled run made it, is not the start: a hand run after it tells the same bounces."""
    last = store.last_claim(ALERTS_CLAIM, before=today.isoformat())
    last_sent = None if last is None else date.fromisoformat(last)
    if last_sent is not None and last_sent < today - timedelta(days=BOUNCE_LOOKBACK_DAYS):
        log.warning(
            "no digest sent for over a month: its bounces only from the last month",
            extra={"last_digest": last, "days": BOUNCE_LOOKBACK_DAYS},
        )
    since, before = bounce_window(today, calendar, parse_time(config.alerts.time), last_sent)
    return bounced_between(store, since, before)


def _digest_mails(
    config: Config,
    renderer: Renderer,
    composer: Composer,
    today: date,
    digest: Digest,
    addresses: list[str],
) -> list[Queued]:
    zone = WorkingCalendar(timezone=config.timezone).zone
    rendered = renderer.render(
        ALERTS_TEMPLATE,
        {
            "service": {
                "name": config.services[digest.service].name,
                "article": service_article(config.services[digest.service]),
            },
            "day": datetime.combine(today, DIGEST_TIME, zone),
            "overdue": digest.overdue,
            "soon": digest.soon,
            "relanced": digest.relanced,
            "written_again": digest.written_again,
            "unacknowledged": digest.unacknowledged,
            "passed_over": digest.passed_over,
            "bounced": digest.bounced,
        },
    )
    sender = composer.internal_address
    return [
        Queued.of(OutboxKind.DIGEST, composer.internal(rendered, to=to), to, sender)
        for to in addresses
    ]
