"""The figures from the command line: ``unanswered`` (what waits, and for how long),
``report weekly|monthly``, ``alerts`` (the services' daily digests) and ``indicators``
(Qual-e-pref).

Only argparse and light imports at the top (`mailbot --help` stays instant): each command
imports the store, the renderer or the application when it runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.errors import RequestError

if TYPE_CHECKING:
    from mailbot.app.context import App
    from mailbot.config import Config
    from mailbot.core.periods import Period


def add_figure_commands(commands: Any) -> None:
    """Register ``unanswered``, ``report``, ``alerts`` and ``indicators`` on the top-level
    subparsers of mailbot's CLI."""
    unanswered = commands.add_parser("unanswered", help="messages with no reply and their age")
    unanswered.add_argument("--mailbox")
    unanswered.add_argument("--service")
    unanswered.add_argument("--as-of", type=date.fromisoformat)
    unanswered.set_defaults(func=cmd_unanswered)
    report_cmd = commands.add_parser("report", help="the weekly or monthly delay report")
    report_cmd.add_argument("kind", choices=["weekly", "monthly"])
    report_cmd.add_argument("--week", help="ISO week, e.g. 2026-W47 (default: last complete week)")
    report_cmd.add_argument("--month", help="e.g. 2026-11 (default: last complete month)")
    report_cmd.add_argument("--out", type=Path, help="write the .eml, HTML, PNG and CSV here")
    report_cmd.add_argument("--send", action="store_true")
    report_cmd.add_argument("--to", action="append", help="recipient (default: reports.weekly.to)")
    report_cmd.add_argument("--as-of", type=date.fromisoformat, help=argparse.SUPPRESS)
    report_cmd.set_defaults(func=cmd_report)
    alerts_cmd = commands.add_parser("alerts", help="send today's deadline digests to services")
    alerts_cmd.add_argument("--date", type=date.fromisoformat, help="as if on this day")
    alerts_cmd.set_defaults(func=cmd_alerts)
    indicators_cmd = commands.add_parser("indicators", help="Qual-e-pref email indicators")
    indicators_cmd.add_argument("--from", dest="date_from", type=date.fromisoformat, required=True)
    indicators_cmd.add_argument("--to", dest="date_to", type=date.fromisoformat, required=True)
    indicators_cmd.add_argument("--mailbox")
    indicators_cmd.add_argument("--service")
    indicators_cmd.add_argument("--format", choices=["table", "json", "csv"], default="table")
    indicators_cmd.add_argument(
        "--as-of",
        type=date.fromisoformat,
        help="the figures as they stood that day: replies after it not counted (default: today)",
    )
    indicators_cmd.set_defaults(func=cmd_indicators)


def _today(config: Config) -> date:
    from mailbot.core.workdays import WorkingCalendar

    return datetime.now(WorkingCalendar(timezone=config.timezone).zone).date()


def _all_delivered(app: App) -> int:
    """Deliver what is due and say how it went: 1 unless every mail left, so that a
    digest or a report the relay deferred (the worker retries it) is not taken for sent."""
    report = app.outbox.deliver_due()
    print(f"sent: {report.sent}, deferred: {report.retried}, failed: {report.failed}")
    return 1 if report.retried or report.failed else 0


def _waiting_line(age: int, row: Mapping[str, Any], middle: str = "") -> str:
    """One message of `unanswered`'s listings: age, reference, mailbox, service, subject."""
    reference = row["reference"] or f"#{row['id']}"
    return (
        f"{age:>4}  {reference:<15} {row['mailbox']:<10} {row['service'] or '-':<16} "
        f"{middle}{(row['subject'] or '')[:60]}"
    )


def cmd_unanswered(args: argparse.Namespace) -> int:
    """Every unanswered citizen's message with its age in working days, oldest first; then,
    apart (they are answered: not in the count the figures share), those the citizen wrote
    again about after the answer, which wait for an agent to read them."""
    from mailbot.app import indicators
    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(args.config)
    today = args.as_of or _today(config)
    store = Store(config.database)
    waiting = indicators.unanswered(config, store, today, args.mailbox, args.service)
    print(
        f"{'AGE':>4}  {'REFERENCE':<15} {'MAILBOX':<10} {'SERVICE':<16} RELANCES  BOUNCE  SUBJECT"
    )
    for age, row in waiting:
        note = row.get("bounce")
        bounce = f"{note.status or 'yes':<6}" if note else f"{'':<6}"
        print(_waiting_line(age, row, f"{int(row['relances'] or 0):>8}  {bounce}  "))
    print(f"\n{len(waiting)} unanswered (age in working days; late when above 5)")
    bounced = sum(1 for _age, row in waiting if row.get("bounce"))
    if bounced:
        print(
            f"{bounced} whose mail to the citizen was not delivered (BOUNCE: the status the"
            " remote server gave): contact the citizen another way; the console says more"
        )
    again = indicators.written_again(config, store, today, args.mailbox, args.service)
    if again:  # answered, so not in the count above, but the citizen's mail awaits an agent
        print("\nANSWERED, THEN WRITTEN AGAIN (new mail from the citizen, unread)")
        print(f"{'AGE':>4}  {'REFERENCE':<15} {'MAILBOX':<10} {'SERVICE':<16} SUBJECT")
        for age, row in again:
            print(_waiting_line(age, row))
        print(
            f"\n{len(again)} answered then written again (age: working days since the new"
            " mail; reply, or mark it read in the console)"
        )
    return 0


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` readable by its owner only, whatever the umask, even over an older
    file: a report lists citizens' mail by subject (README, "Data kept (privacy)")."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def cmd_report(args: argparse.Namespace) -> int:
    from mailbot.app import report
    from mailbot.store import Store

    # Only --send needs the whole App (its outbox); a report written or shown needs no
    # intake pipeline nor SMTP: their routing, models and imports are a second of start-up.
    app = None
    if args.send:
        from mailbot.app.context import build_app

        app = build_app(args.config)
        config, store, renderer = app.config, app.store, app.renderer
    else:
        from mailbot.config import load_config
        from mailbot.render.templates import Renderer

        config = load_config(args.config)
        store = Store(config.database)  # as build_app does, in its order: the same errors
        renderer = Renderer(config.templates, timezone=config.timezone)
        renderer.check_config(config)
    builder = report.ReportBuilder(config, store, renderer)
    today = args.as_of or datetime.now(builder.calendar.zone).date()
    period = _report_period(args.kind, args.week, args.month, today)
    built = builder.build(period, min(today, period.end + timedelta(days=7)))
    print(built.subject)
    if args.out:
        args.out.mkdir(mode=0o700, parents=True, exist_ok=True)
        stem = args.out / f"rapport-{period.label}"
        _write_private(stem.with_suffix(".eml"), built.mail.as_bytes())
        _write_private(stem.with_suffix(".html"), built.html.encode("utf-8"))
        _write_private(stem.with_suffix(".png"), built.png)
        _write_private(stem.with_suffix(".csv"), built.csv)
        print(f"written: {stem}.eml, .html, .png, .csv")
    if app is not None:
        recipients = report.check_recipients(config, str(args.config), args.to or ())
        report.send_report(config, store, built, recipients)
        return _all_delivered(app)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from mailbot.app import alerts
    from mailbot.app.context import build_app

    app = build_app(args.config)
    done = alerts.send_alerts(app.config, app.store, app.renderer, args.date or _today(app.config))
    for service, count in done.unaddressed.items():
        print(
            f"{service}: digest of {count} message(s) NOT sent: the service has no address"
            f" (services.{service}.addresses in {args.config})"
        )
    if not done.sent:
        if not done.unaddressed:
            print(
                "nothing to send (a day off, or no message late, soon due, relanced, written"
                " about again after its answer, left without an AR, passed over or whose mail"
                " to the citizen bounced since the last digest sent)"
            )
        return 1 if done.unaddressed else 0
    for service, count in done.sent.items():  # queued: whether they left, the next line says
        print(f"{service}: digest of {count} message(s) queued")
    delivered = _all_delivered(app)
    return 1 if done.unaddressed else delivered


def _report_period(kind: str, week: str | None, month: str | None, today: date) -> Period:
    """``--week``/``--month`` read as the console reads a period (RequestError naming the
    option for a bad one: ``2026-W99``, ``9999-W52`` once ended in a traceback), else the
    last complete week or month."""
    from mailbot.app.dashboard import parse_period
    from mailbot.core.periods import default_period

    option, label = ("--week", week) if kind == "weekly" else ("--month", month)
    if not label:
        return default_period(kind, today, None, None)
    try:
        period = parse_period(label, today)
    except RequestError as exc:
        raise RequestError(option, label, str(exc).rsplit(": ", 1)[-1]) from None
    if (period.kind == "semaine") != (kind == "weekly"):
        example = "2026-W47" if kind == "weekly" else "2026-11"
        raise RequestError(option, label, f"expected a {kind[:-2]} like {example}")
    return period


def cmd_indicators(args: argparse.Namespace) -> int:
    from mailbot.app import indicators
    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(args.config)
    today = args.as_of or _today(config)
    result = indicators.figures(
        config,
        Store(config.database),
        args.date_from,
        args.date_to,
        today,
        args.mailbox,
        args.service,
    )
    figures = result.figures()
    if args.format == "json":
        targets = {f.name: {"target": f.target, "met": f.met} for f in figures if f.target}
        print(json.dumps({f.name: f.value for f in figures} | {"targets": targets}, indent=2))
    elif args.format == "csv":
        import csv

        out = csv.writer(sys.stdout)
        out.writerow(["indicator", "value", "target", "met"])
        for f in figures:
            out.writerow([f.name, "" if f.value is None else f.value, f.target or "", _mark(f.met)])
    else:
        for f in figures:
            target = f"  target {f.target}: {_mark(f.met)}" if f.target else ""
            print(f"{f.name:<26} {_format(f.name, f.value):>10}{target}")
    return 0


def _format(name: str, value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        ratio = name.startswith(("rate", "complaint_rate")) or name.endswith(
            ("share", "completeness")
        )
        return f"{value:.2%}" if ratio else f"{value:.2f}"
    return str(value)


def _mark(met: bool | None) -> str:
    return "met" if met else "NOT met" if met is not None else "n/a"
