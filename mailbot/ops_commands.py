"""``mailbot status`` (and the other operators' commands): running mailbot as a service.

`status` follows the Nagios/Centreon plugin convention: one headline (state, the checks
in that state, performance data after ``|``), details below, exit 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN. Whatever keeps it from knowing (a configuration it cannot read, a
database that does not answer or has another schema) is UNKNOWN, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.core.clock import utcnow
from mailbot.errors import MailbotError
from mailbot.logs import safe_error

if TYPE_CHECKING:  # the commands import what they use: `mailbot --help` stays instant
    from mailbot.core.health import Check, Figures
    from mailbot.store import Store

log = logging.getLogger(__name__)


def add_ops_commands(commands: Any) -> None:
    """Register the operators' commands on the top-level subparsers of mailbot's CLI."""
    status = commands.add_parser(
        "status", help="supervision: each mailbox's state, Nagios/Centreon exit codes (0-3)"
    )
    status.set_defaults(func=cmd_status)
    probe = commands.add_parser(
        "probe", help="mystery e-mail: a test mail to each mailbox, its AR checked (exit 0/2)"
    )
    probe.add_argument("--wait", type=float, help="seconds to wait for ARs (probe.wait_seconds)")
    probe.set_defaults(func=cmd_probe)
    backup = commands.add_parser(
        "backup", help="copy the SQLite database while workers run (PostgreSQL: pg_dump)"
    )
    backup.add_argument("destination", type=Path, help="the copy's file (must not exist)")
    backup.set_defaults(func=cmd_backup)
    migrate = commands.add_parser(
        "migrate", help="upgrade the database schema (refused while older workers run)"
    )
    migrate.set_defaults(func=cmd_migrate)
    rebuild = commands.add_parser(
        "rebuild-indicators",
        help="compute the indicators' daily buckets again from the messages (configured zone)",
    )
    rebuild.set_defaults(func=cmd_rebuild_indicators)
    add_outbox_commands(commands)
    restored = commands.add_parser(
        "restored",
        help="after restoring a backup, before starting the workers: the mail that arrived"
        " before the failure is recorded without a second AR",
    )
    restored.add_argument(
        "--acknowledged-until",
        required=True,
        metavar="DATETIME",
        help="when the lost database last worked (its failure): 2026-03-14T08:00, in the"
        " configured timezone; mail that arrived before it gets no AR, later mail does",
    )
    restored.add_argument(
        "--skip-references",
        type=int,
        default=None,
        metavar="N",
        help="numbers every reference counter skips, given by the lost database after the"
        " backup (default 10000: weeks of mail; a gap is harmless, a reference given twice"
        " is not); once per moment",
    )
    restored.set_defaults(func=cmd_restored)


def add_outbox_commands(commands: Any) -> None:
    """``mailbot outbox retry --failed``: after an SMTP outage longer than
    ``outbox.max_queue_hours``, the mail that failed for lack of time queued again."""
    from mailbot.core.statuses import OutboxKind

    outbox = commands.add_parser("outbox", help="the outgoing mail: retry after an SMTP outage")
    sub = outbox.add_subparsers(dest="outbox_command", required=True)
    retry = sub.add_parser(
        "retry",
        help="queue again the mail that failed for lack of time (deferred for longer than"
        " outbox.max_queue_hours), and send it; never a refused or uncertain one",
    )
    retry.add_argument(
        "--failed", action="store_true", required=True, help="the failed mail (required)"
    )
    retry.add_argument(
        "--since",
        help="only mail that failed at or after this moment: 2026-03-14 or 2026-03-14T08:00,"
        " in the configured timezone (default: whenever)",
    )
    retry.add_argument(
        "--kind",
        action="append",
        choices=[kind.value for kind in OutboxKind],
        help="only this kind of mail (repeatable; default: ar, forward, notice, reply)",
    )
    retry.add_argument(
        "--dry-run", action="store_true", help="list what would be queued again, change nothing"
    )
    retry.set_defaults(func=cmd_outbox_retry)


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    """Requeue, then one delivery at once (the worker's delivery thread sends the rest)."""
    from mailbot.app import requeue
    from mailbot.app.context import build_app
    from mailbot.core.statuses import OutboxKind

    app = build_app(args.config)
    since = _moment(args.since, app.config.timezone) if args.since else None
    kinds = [OutboxKind(kind) for kind in args.kind] if args.kind else requeue.CITIZENS_MAIL
    found = requeue.requeue_failed(
        app.store, since=since, kinds=kinds, who=_login(), dry_run=args.dry_run
    )
    verb = "would be queued again" if args.dry_run else "queued again"
    for item in found.items:
        message = f", message #{item.message_pk}" if item.message_pk is not None else ""
        print(f"outbox {item.id} ({item.kind}{message}) {verb}")
    if found.held_back:
        print(
            f"{found.held_back} failed mail(s) left as they are: superseded by a later mail"
            " of their kind, another AR not failed, or the message answered since"
        )
    if not found.items:
        print("nothing to queue again")
        return 0
    if args.dry_run:
        print(f"{len(found.items)} mail(s) {verb} (dry run: nothing changed)")
        return 0
    report = app.outbox.deliver_due()
    print(
        f"{len(found.items)} mail(s) queued again; this delivery: {report.sent} sent,"
        f" {report.retried} deferred, {report.failed + report.refused} failed"
        " (the worker sends what is left)"
    )
    return 0


def cmd_restored(args: argparse.Namespace) -> int:
    """Required moment, no default: "now" would withhold the AR of every mail that arrived
    between the failure and the restore, which the lost database never saw."""
    from zoneinfo import ZoneInfo

    from mailbot.app.restore import SKIP_REFERENCES, restored
    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(args.config)
    until = _moment(args.acknowledged_until, config.timezone, "--acknowledged-until")
    store = Store(config.database)
    try:
        done = restored(
            store,
            until,
            prefix=config.sender.reference_prefix,
            timezone=config.timezone,
            skip_references=SKIP_REFERENCES
            if args.skip_references is None
            else args.skip_references,
            who=_login(),
        )
    finally:
        store.close()
    zone = ZoneInfo(config.timezone)
    bound = f"{until.astimezone(zone):%Y-%m-%d %H:%M:%S} ({config.timezone})"
    print(f"{store.where}: restored; mail that arrived before {bound} gets no AR")
    for folder in done.folders:
        where = f"{folder.mailbox}/{folder.folder}"
        if not folder.applies:
            print(f"{where}: read past {bound} already, nothing withheld")
            continue
        state = "" if folder.changed else " (already marked)"
        print(
            f"{where}{state}: mail after UID {folder.last_uid} that arrived before the bound"
            f" is recorded without AR; {folder.withheld} recorded so far"
        )
    for item in done.uncertain:
        message = f", message #{item.message_pk}" if item.message_pk is not None else ""
        print(f"outbox {item.id} ({item.kind}{message}): queued before the restore, uncertain")
    for item in done.requeued:
        message = f", message #{item.message_pk}" if item.message_pk is not None else ""
        print(
            f"outbox {item.id} ({item.kind}{message}): queued before the restore, internal:"
            " it leaves (it may arrive twice)"
        )
    if not done.folders:
        print("no folder followed yet: nothing to withhold")
    state = "" if done.counters_moved else " (already moved by a run with this moment)"
    for counter in done.counters:
        print(f"references {counter.series}{state}: next {counter.next_reference}")
    print(
        "warning: a mail that arrived before the bound whose AR had not left when the"
        " database failed gets none. The console shows them (« Accusé de réception présumé"
        " envoyé »); run this command again after the first poll for each folder's count,"
        " `mailbot status` gives the total"
    )
    return 0


def _moment(text: str, timezone: str, option: str = "--since") -> datetime:
    """``2026-03-14`` or ``2026-03-14T08:00`` (an offset allowed), in ``timezone`` when
    it has none."""
    from zoneinfo import ZoneInfo

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MailbotError(
            f"{option} {text!r}: expected a date or a date and time (2026-03-14T08:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=ZoneInfo(timezone))


def _login() -> str:
    """Who runs the command, for the events (a container without a login name: "cli")."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def cmd_rebuild_indicators(args: argparse.Namespace) -> int:
    """After a change of ``timezone``: the indicators read every message until this runs."""
    from mailbot.app import indicators

    config, store = _open_store(args.config)
    indicators.rebuild(config, store)
    print(f"indicators' daily buckets computed again in {config.timezone}")
    return 0


def _open_store(config_path: Path) -> tuple[Any, Store]:
    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(config_path)
    store = Store(config.database, migrate=False)
    try:
        version, head = store.readable_version(), Store.head_version()
    except MailbotError:
        store.close()
        raise
    newer = store.newer_schema(version)
    if newer is not None:
        store.close()
        raise MailbotError(newer)
    if version != head:
        store.close()
        raise MailbotError(
            f"the database {store.where} is at schema {version}, this mailbot expects {head}"
            " (run `mailbot migrate`)"
        )
    return config, store


def cmd_status(args: argparse.Namespace) -> int:
    from mailbot.app import supervision
    from mailbot.core.statuses import Health

    try:
        config, store = _open_store(args.config)
        try:
            result = supervision.status(config, store)
        finally:
            store.close()
    except Exception as exc:  # the plugin's state is UNKNOWN, whatever the reason
        detail = str(exc) if isinstance(exc, MailbotError) else safe_error(exc)
        print(f"MAILBOT {Health.UNKNOWN.value} - cannot tell: {detail}")
        return Health.UNKNOWN.exit_code
    print(f"{result.headline} | {perfdata(result.checks)}")
    for line in details(result.figures, utcnow()):
        print(line)
    for check in result.checks:
        if check.state is not Health.OK:
            print(f"{check.state.value}: {check.text}")
    return result.state.exit_code


def perfdata(checks: list[Check]) -> str:
    """``'label'=value[unit];warn;crit`` for each numeric check (Nagios plugins' perfdata):
    Centreon and Grafana draw the thresholds from it. They were left out, the value alone."""
    return " ".join(
        f"'{c.what}'={c.value:g}{c.unit}"
        + (f";{c.limits.warning:g};{c.limits.critical:g}" if c.limits is not None else "")
        for c in checks
        if c.value is not None and "probe" not in c.what
    )


def _when(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({(now - at).total_seconds():.0f} s ago)"


def details(figures: Figures, now: datetime) -> list[str]:
    lines = []
    for folder in figures.folders:
        where = f"{folder.mailbox}/{folder.folder}"
        line = (
            f"{where}: last successful poll {_when(folder.success_at, now)},"
            f" {folder.errors} IMAP errors in a row"
        )
        if folder.last_error:
            line += f" (last: {folder.last_error})"
        lines.append(line)
    oldest = figures.oldest_pending_seconds
    lines.append(
        f"outbox: {figures.outbox_depth} pending"
        + (f" (oldest {oldest:.0f} s)" if oldest is not None else "")
        + f", {figures.deferred} deferred (SMTP), {figures.failed} failed (24 h),"
        f" {figures.uncertain} uncertain (7 days)"
    )
    for passed in figures.passed_over:
        lines.append(f"passed over, its quarantine refused (no AR, still on the server): {passed}")
    if figures.restored:
        lines.append(
            f"restored: {figures.restored} message(s) recorded after a restore without AR"
            " (AR presumed sent by the lost database; `mailbot restored` counts them by folder)"
        )
    for mailbox in figures.quarantined:
        lines.append(
            f"{mailbox}: {figures.quarantined[mailbox]} quarantined,"
            f" {figures.overdue.get(mailbox, 0)} overdue"
        )
    return lines


def cmd_probe(args: argparse.Namespace) -> int:
    """Exit 0 when every AR came on time and complete, 2 (CRITICAL) otherwise."""
    from mailbot.app.context import build_app
    from mailbot.app.probe import Prober
    from mailbot.core.statuses import Health

    app = build_app(args.config)
    if app.config.probe is None:
        raise MailbotError(f"{args.config}: no probe: section (see docs/deploy.md)")
    results = Prober(app.config, app.store, app.outbox.transport, app.outbox).run(args.wait)
    for result in sorted(results, key=lambda r: r.mailbox):
        latency = "" if result.latency is None else f" after {result.latency:.1f} s"
        detail = f": {'; '.join(result.problems)}" if result.problems else ""
        print(f"{result.mailbox}: {result.status}{latency}{detail}")
    failed = any(r.status.failed for r in results)
    return Health.CRITICAL.exit_code if failed else Health.OK.exit_code


def cmd_backup(args: argparse.Namespace) -> int:
    from mailbot.config import load_config
    from mailbot.store import Store
    from mailbot.store.backup import backup

    config = load_config(args.config)
    store = Store(config.database, migrate=False)
    try:
        size = backup(store, args.destination)
    finally:
        store.close()
    print(f"{store.where} copied to {args.destination} ({size} bytes)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the schema to this mailbot's revision, unless an older worker holds a lease."""
    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(args.config)
    store = Store(config.database, migrate=False)
    try:
        before, head = store.schema_version(), Store.head_version()
        if before == head:
            print(f"{store.where}: schema {head}, nothing to do")
            return 0
        store.migrate()
    finally:
        store.close()
    print(f"{store.where}: schema {before or 'none'} -> {head}")
    return 0


def add_purge_command(commands: Any) -> None:
    """Register ``purge`` on the top-level subparsers of mailbot's CLI (called where it
    stands in `mailbot --help`, after ``quarantine``)."""
    purge = commands.add_parser("purge", help="delete data older than the retention period")
    purge.add_argument("--days", type=_retention_days, help="override retention.days (1 to 36500)")
    purge.set_defaults(func=cmd_purge)


def _retention_days(text: str) -> int:
    """``--days`` of a purge: a whole number of days from 1 to 36500. A negative one put
    the cut-off in the future and deleted every message; 0 was silently the configured."""
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= 36500:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of days from 1 to 36500")
    return days


def cmd_purge(args: argparse.Namespace) -> int:
    from mailbot.app import maintenance
    from mailbot.app.model_retention import model_retention_warnings
    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(args.config)
    days = config.retention.days if args.days is None else args.days
    deleted = maintenance.purge(config, Store(config.database), days)
    print(f"purged {deleted} messages received more than {days} days ago")
    for warning in model_retention_warnings(config, days=days):  # what the purge cannot reach
        print(f"warning: {warning}", file=sys.stderr)
    return 0
