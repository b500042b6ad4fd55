"""Command line: the face of mailbot. Wiring only; the logic lives in the modules it calls."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from importlib.resources import files
from pathlib import Path

from sqlalchemy.engine import make_url
from tqdm import tqdm

from mailbot import demo
from mailbot.catalogue import agent_variables, check_all, languages, listing
from mailbot.config import Config, load_agents, load_config
from mailbot.errors import ConfigError, MailbotError
from mailbot.explain import compiled_routing, explain, format_text, guess_mailbox
from mailbot.imap import ImapMailbox
from mailbot.indicators import arrays_from_store, compute_arrays
from mailbot.jobs import send_alerts, send_weekly_report
from mailbot.logs import safe_error, setup_logging
from mailbot.maildir import MaildirSource, mail_files
from mailbot.outbox import Outbox
from mailbot.pipeline import IncomingMail, Outcome, Pipeline
from mailbot.poller import Processor, Source
from mailbot.quarantine import parse_ref, retry, unhandled_row
from mailbot.render import Renderer, build_email
from mailbot.report import ReportBuilder, month_period, parse_week, week_period
from mailbot.routing_commands import add_routing_commands  # issue 13
from mailbot.sent import SentPipeline, signature_check
from mailbot.smtp import FileTransport, SmtpTransport, Transport
from mailbot.store import Store, utcnow
from mailbot.web.commands import add_web_commands
from mailbot.workdays import WorkingCalendar
from mailbot.worker import Worker

EXIT_FIRST_POLL_REFUSED = 3
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a writer killed by SIGPIPE
log = logging.getLogger(__name__)
DEMO_MAILDIR = Path(str(files("mailbot") / "demo_data" / "maildir"))


@dataclass
class App:
    config: Config
    store: Store
    renderer: Renderer
    pipeline: Pipeline
    outbox: Outbox


def build_app(
    config_path: Path,
    transport: Transport | None = None,
    database: str | None = None,
    acknowledge_existing: bool = False,
) -> App:
    config = load_config(config_path)  # every relative path already resolved beside it
    store = Store(database or config.database)
    renderer = Renderer(config.templates, timezone=config.timezone)
    renderer.check_config(config)
    allowed = config.service_addresses | set(config.reports.weekly.to)
    outbox = Outbox(store, transport or SmtpTransport(config.smtp), config.outbox, allowed)
    pipeline = Pipeline(config, store, renderer, acknowledge_existing=acknowledge_existing)
    return App(config, store, renderer, pipeline, outbox)


def sent_sources(config: Config) -> dict[str, tuple[str, Source]]:
    """Each mailbox's Sent folder, and the tracking mailbox's inbox, on their own connections."""
    limit = config.polling.max_message_bytes
    found: dict[str, tuple[str, Source]] = {}
    for name, box in config.mailboxes.items():
        if box.imap.sent_folder:
            source = ImapMailbox(box.imap, name=f"{name}-sent", max_message_bytes=limit)
            found[name] = (box.imap.sent_folder, source)
    if config.tracking is not None:
        imap = config.tracking.imap
        found["tracking"] = (
            imap.folder,
            ImapMailbox(imap, name="tracking", max_message_bytes=limit),
        )
    return found


def make_worker(app: App) -> Worker:
    sent = SentPipeline(app.config, app.store, signature_check)

    def alerts() -> object:
        today = datetime.now(WorkingCalendar(timezone=app.config.timezone).zone).date()
        return send_alerts(app.config, app.store, app.renderer, app.outbox, today)

    def weekly_report() -> object:
        now = datetime.now(WorkingCalendar(timezone=app.config.timezone).zone)
        return send_weekly_report(app.config, app.store, app.renderer, app.outbox, now)

    return Worker(
        app.config,
        app.pipeline,
        app.outbox,
        imap_sources(app.config),
        sent_sources(app.config),
        sent,
        alerts,
        weekly_report,
    )


def cmd_backfill(args: argparse.Namespace) -> int:
    """Record a mailbox's history (INBOX and Sent) for the indicators, sending nothing.

    Only folders the database does not follow yet: in a followed folder, what lies past the
    last UID read is new mail that the next poll must acknowledge. Afterwards each folder
    is marked read up to its newest UID, older-than-``--since`` mail included, so that
    the next poll answers only mail that arrives from now on.
    """
    app = build_app(args.config)
    history = Pipeline(app.config, app.store, app.renderer, send=False)
    replies = SentPipeline(app.config, app.store, signature_check)
    feeds: list[tuple[str, str, Processor]] = []
    for name, box in app.config.mailboxes.items():
        feeds.append((name, box.imap.folder, history))
        if box.imap.sent_folder:
            feeds.append((name, box.imap.sent_folder, replies))
    for name, folder, processor in feeds:
        with app.store.transaction() as tx:
            followed = tx.folder_state(name, folder) is not None
            if followed and not tx.backfill_pending(name, folder):
                print(f"{name}/{folder}: already followed, skipped (its new mail is for `poll`)")
                continue
            tx.set_backfill_pending(name, folder, True)  # polls refuse it until the end
        _backfill_folder(app, args, name, folder, processor)
    return 0


def _backfill_folder(
    app: App, args: argparse.Namespace, name: str, folder: str, processor: Processor
) -> None:
    limit = app.config.polling.max_message_bytes
    source = ImapMailbox(app.config.mailboxes[name].imap, name=name, max_message_bytes=limit)
    source.connect()
    try:
        uidvalidity = source.select(folder)
        last = processor.start_folder(name, folder, uidvalidity)  # resumes an interrupted one
        newest = max(source.uids_after(0), default=0)
        uids = [uid for uid in source.uids_since(args.since) if last < uid <= newest]
        with tqdm(total=len(uids), desc=f"{name}/{folder}", unit="mail", disable=args.quiet) as bar:
            for fetched in source.fetch(uids, app.config.polling.batch_size):
                mail = IncomingMail(fetched.uid, fetched.internaldate, fetched.raw, fetched.size)
                processor.process(name, folder, uidvalidity, mail)
                bar.update()
        with app.store.transaction() as tx:
            tx.save_folder_state(name, folder, uidvalidity, max(newest, last))
            tx.set_backfill_pending(name, folder, False)
    finally:
        source.close()


def cmd_unanswered(args: argparse.Namespace) -> int:
    """Every unanswered citizen's message with its age in working days, oldest first."""
    config = load_config(args.config)
    calendar = WorkingCalendar(timezone=config.timezone)
    today = args.as_of or datetime.now(calendar.zone).date()
    since = datetime.combine(today - timedelta(days=365), time.min, calendar.zone)
    until = datetime.combine(today + timedelta(days=1), time.min, calendar.zone)
    rows = Store(config.database).indicator_rows(since, until, args.mailbox, args.service)
    waiting = [
        (calendar.delay_between(calendar.local_date(r["received_at"]), today), r)
        for r in rows
        if r["replied_at"] is None
    ]
    print(f"{'AGE':>4}  {'REFERENCE':<15} {'MAILBOX':<10} {'SERVICE':<16} RELANCES  SUBJECT")
    for age, row in sorted(waiting, key=lambda item: -item[0]):
        subject = (row["subject"] or "")[:60]
        print(
            f"{age:>4}  {row['reference'] or '#' + str(row['id']):<15} {row['mailbox']:<10} "
            f"{row['service'] or '-':<16} {int(row['relances'] or 0):>8}  {subject}"
        )
    print(f"\n{len(waiting)} unanswered (age in working days; late when above 5)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    app = build_app(args.config)
    builder = ReportBuilder(app.config, app.store, app.renderer)
    today = args.as_of or datetime.now(builder.calendar.zone).date()
    if args.kind == "weekly":
        period = parse_week(args.week) if args.week else week_period(today - timedelta(days=7))
    else:
        period = (
            month_period(date.fromisoformat(args.month + "-01"))
            if args.month
            else month_period(today.replace(day=1) - timedelta(days=1))
        )
    report = builder.build(period, min(today, period.end + timedelta(days=7)))
    print(report.subject)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"rapport-{period.label}"
        stem.with_suffix(".eml").write_bytes(report.mail.as_bytes())
        stem.with_suffix(".html").write_text(report.html, encoding="utf-8")
        stem.with_suffix(".png").write_bytes(report.png)
        stem.with_suffix(".csv").write_bytes(report.csv)
        print(f"written: {stem}.eml, .html, .png, .csv")
    if args.send:
        recipients = args.to or list(app.config.reports.weekly.to)
        if not recipients:
            raise ConfigError(str(args.config), "reports.weekly.to", "no recipient configured")
        for recipient in recipients:
            if recipient.lower() not in app.outbox.allowed:
                raise ConfigError(
                    str(args.config),
                    "reports.weekly.to",
                    f"{recipient} is not a configured address",
                )
        with app.store.transaction() as tx:
            for recipient in recipients:
                mail = report.mail
                del mail.message["To"]
                mail.message["To"] = recipient
                tx.enqueue(
                    None,
                    "report",
                    recipient,
                    app.config.sender.envelope_from or "",
                    str(mail["Message-ID"]),
                    mail.as_bytes(),
                )
        sent = app.outbox.deliver_due()
        print(f"sent: {sent.sent}, failed: {sent.failed}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    app = build_app(args.config)
    today = args.date or datetime.now(WorkingCalendar(timezone=app.config.timezone).zone).date()
    sent = send_alerts(app.config, app.store, app.renderer, app.outbox, today)
    for service, count in sent.items():
        print(f"{service}: digest of {count} message(s) sent")
    if not sent:
        print("nothing to send (no late, soon-due or relanced message, or a day off)")
    return 0


def imap_sources(config: Config) -> Mapping[str, Source]:
    limit = config.polling.max_message_bytes
    return {
        name: ImapMailbox(box.imap, name=name, max_message_bytes=limit)
        for name, box in config.mailboxes.items()
    }


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    Renderer(config.templates, timezone=config.timezone).check_config(config)
    print(f"{args.config}: OK ({len(config.mailboxes)} mailboxes, {len(config.services)} services)")
    print(f"database:  {make_url(config.database).render_as_string(hide_password=True)}")
    print(f"templates: {config.templates}")
    print(f"agents:    {config.agents}")
    for warning in return_path_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


MISSING_RETURN_PATH_SHARE = 0.5
MISSING_RETURN_PATH_SAMPLE = 10


def return_path_warnings(config: Config) -> list[str]:
    """Mailboxes whose recent mail mostly came without a Return-Path header: under the
    default policy none of it is acknowledged, and only the records would show it."""
    if config.policy.missing_return_path != "skip":
        return []
    url = make_url(config.database)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return []  # nothing recorded yet (and check must not create a database)
    store = Store(config.database)
    found = []
    try:
        for name in config.mailboxes:
            missing, looked = store.missing_return_path_share(name)
            if (
                looked >= MISSING_RETURN_PATH_SAMPLE
                and missing > looked * MISSING_RETURN_PATH_SHARE
            ):
                found.append(
                    f"mailbox {name}: {missing} of its last {looked} mails had no Return-Path"
                    " header and got no AR; if the server delivers without it, set"
                    " policy.missing_return_path: use_from"
                )
    finally:
        store.close()
    return found


def cmd_poll(args: argparse.Namespace) -> int:
    app = build_app(args.config, acknowledge_existing=args.acknowledge_existing)
    worker = make_worker(app)
    outcomes = worker.poll_once()
    if not args.quiet:
        print_outcomes(outcomes)
    return _refused(worker) or (1 if worker.failures else 0)


def cmd_run(args: argparse.Namespace) -> int:
    app = build_app(args.config, acknowledge_existing=args.acknowledge_existing)
    worker = make_worker(app)
    worker.run()
    return _refused(worker)


def _refused(worker: Worker) -> int:
    """First polls refused because mail was already there: say so plainly, exit 3."""
    for error in worker.refused.values():
        print(f"error: {error}", file=sys.stderr)
    return EXIT_FIRST_POLL_REFUSED if worker.refused else 0


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.verbose:  # the table below is the demo's output
        logging.getLogger("mailbot").setLevel(logging.WARNING)
    out: Path = args.out
    outgoing = out / "outgoing"
    database = f"sqlite:///{(out / 'demo.db').resolve()}"
    for stale in [out / "demo.db", out / "demo.db-wal", out / "demo.db-shm"]:
        stale.unlink(missing_ok=True)
    for old in outgoing.glob("*.eml") if outgoing.exists() else []:
        old.unlink()
    stores: list[Store] = []  # the namer reads the outbox rows of the app built below
    transport = FileTransport(outgoing, lambda envelope: demo.outgoing_name(stores[0], envelope))
    # The bundled mail is there from the start: the demo acknowledges it on purpose.
    app = build_app(args.config, transport, database=database, acknowledge_existing=True)
    stores.append(app.store)
    sources: dict[str, Source] = {
        name: MaildirSource(args.maildir / name)
        for name in app.config.mailboxes
        if (args.maildir / name).is_dir()
    }
    outcomes = Worker(app.config, app.pipeline, app.outbox, sources).poll_once()
    print_outcomes(outcomes)
    print(demo.LEGEND)
    acknowledged = sum(o.decision == "acknowledge" for o in outcomes)
    transferred = sum(o.route.startswith("→") for o in outcomes)
    print(
        f"\n{acknowledged} replies to citizens (ARs; transfers and re-orientations say so)"
        f" and {transferred} forwards to services, written to {outgoing}/ as .eml files"
        " named <reference>-ar, -reorientation or -forward-<service>"
    )
    print(f"database: {out / 'demo.db'}")
    config = demo.write_config(args.config, out, database)
    print(f"explore it: mailbot --config {config} indicators|unanswered|report weekly …")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    routing = compiled_routing(config)
    target: Path = args.message
    files = mail_files(target)
    if not files:
        raise ConfigError(
            str(target), "", "no mail here (.eml files, Maildir files, or a Maildir with cur/)"
        )
    failed = 0
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
        if args.mailbox and args.mailbox not in config.mailboxes:
            raise ConfigError(str(args.config), "mailboxes", f"no mailbox named {args.mailbox!r}")
        try:  # one unreadable mail is a line of output, not a traceback
            mailbox = args.mailbox or guess_mailbox(config, raw)
            explanation = explain(config, routing, mailbox, raw)
        except Exception as exc:
            print(f"error: {path}: cannot explain this mail ({safe_error(exc)})", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"file": str(path), **explanation.as_dict()}, ensure_ascii=False))
        else:
            print(format_text(str(path), explanation))
    return 1 if failed else 0


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    rows = Store(config.database).unhandled_rows(args.mailbox)
    print(f"{'ID':>7}  {'MAILBOX':<10} {'RECEIVED':<16} {'WHY':<15} {'REASON':<28} SUBJECT")
    for row in rows:
        reasons = ",".join(json.loads(row.reasons or "[]"))
        subject = row.subject if len(row.subject) <= 50 else row.subject[:49] + "…"
        print(
            f"{'#' + str(row.id):>7}  {row.mailbox:<10} {row.received_at:%Y-%m-%d %H:%M} "
            f"{row.attention:<15} {reasons[:28]:<28} {subject}"
        )
    print(
        f"\n{len(rows)} mail(s) without an AR, awaiting a person (mailbot quarantine show|retry ID)"
    )
    return 0


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = Store(config.database)
    row = unhandled_row(store, parse_ref(args.id))
    for name in ("id", "mailbox", "folder", "uidvalidity", "uid", "received_at", "message_id"):
        print(f"{name + ':':<13} {getattr(row, name)}")
    print(f"{'subject:':<13} {row.subject}")
    print(f"{'decision:':<13} {row.decision} ({', '.join(json.loads(row.reasons or '[]'))})")
    print(f"{'defects:':<13} {', '.join(json.loads(row.defects or '[]')) or '-'}")
    for event in store.events(row.id):
        print(f"\n{event.at:%Y-%m-%d %H:%M:%S} {event.kind}")
        if event.detail:
            print("  " + event.detail.replace("\n", "\n  "))
    return 0


def cmd_quarantine_retry(args: argparse.Namespace) -> int:
    app = build_app(args.config)
    if args.all:
        ids = [row.id for row in app.store.unhandled_rows()][::-1]
    else:
        ids = [parse_ref(text) for text in args.ids]
    if not ids:
        print("nothing to retry")
        return 0
    failed = 0
    outcomes = []
    for message_pk in ids:
        try:
            outcomes.append(retry(app.config, app.store, app.pipeline, app.outbox, message_pk))
        except MailbotError as exc:
            print(f"error: #{message_pk}: {exc}", file=sys.stderr)
            failed += 1
    print_outcomes(outcomes)
    still = sum(o.decision == "quarantine" for o in outcomes)
    print(f"\n{len(outcomes)} retried, {still} still quarantined, {failed} not found")
    return 1 if failed or still else 0


def _renderer(args: argparse.Namespace) -> tuple[Config, Renderer]:
    config = load_config(args.config)
    return config, Renderer(config.templates, timezone=config.timezone)


def _variables(pairs: Sequence[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--var", pair, "expected key=value")
        found[key.strip()] = value
    return found


def cmd_templates_list(args: argparse.Namespace) -> int:
    _config, renderer = _renderer(args)
    rows = listing(renderer, args.service, args.lang)
    others = "+".join(t["language"] for t in languages(renderer))
    table = [("NAME", "TITLE", "SCOPE", "LANGUAGES", "VARIABLES ([optional])")]
    table += [
        (
            r["name"],
            r["title"],
            r["scope"],
            f"fr+{others}" if r["translated"] and others else "fr",
            ", ".join(r["variables"]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[4]]))
    print("\nTranslations (templates/i18n/):")
    for t in languages(renderer):
        review = (
            f"reviewed by {t['reviewer']}" if t["reviewed"] else "NOT reviewed by a native speaker"
        )
        print(f"  {t['language']}  {t['name']} ({t['direction']}): {review}")
    return 0


def cmd_templates_show(args: argparse.Namespace) -> int:
    _config, renderer = _renderer(args)
    meta = renderer.meta(args.name)
    print(f"{meta.name} — {meta.title} ({meta.language})\n\n{meta.description}\n")
    print(f"Objet : {meta.subject}\n")
    for kind, variables in (("required", meta.required), ("optional", meta.optional)):
        for var, spec in variables.items():
            print(f"  {var} ({kind}, {spec.type}): {spec.description}")
            print(f"      e.g. {spec.example!r}")
    return 0


def cmd_templates_render(args: argparse.Namespace) -> int:
    config, renderer = _renderer(args)
    meta = renderer.meta(args.name)
    variables: dict[str, object] = dict(meta.examples())
    variables.update(_variables(args.var))
    if args.agent:
        agents = load_agents(config.agents, config)
        if args.agent not in agents:
            raise ConfigError(str(config.agents), f"agents.{args.agent}", "no such agent")
        variables["agent"] = agent_variables(agents[args.agent], config)
    mail = renderer.render(args.name, variables)
    print(f"Objet : {mail.subject}\n\n{mail.text}")
    if args.html:
        args.html.write_text(mail.html, encoding="utf-8")
        print(f"\nHTML preview written to {args.html}")
    return 0


def cmd_templates_check(args: argparse.Namespace) -> int:
    _config, renderer = _renderer(args)
    report = check_all(renderer)
    for name, problems in report.items():
        print(f"{'FAIL' if problems else 'ok  '} {name}")
        for problem in problems:
            print(f"     - {problem}")
    failed = sum(1 for problems in report.values() if problems)
    print(f"\n{len(report) - failed} templates ok, {failed} with problems")
    return 1 if failed else 0


def cmd_reply(args: argparse.Namespace) -> int:
    """A standard reply in the thread of a tracked message, previewed or sent."""
    app = build_app(args.config)
    config = app.config
    row = app.store.message(reference=args.reference)
    if row is None or not row.sender:
        raise ConfigError("reference", args.reference, "no tracked message with a sender")
    agents = load_agents(config.agents, config)
    if args.agent not in agents:
        raise ConfigError(str(config.agents), f"agents.{args.agent}", "no such agent")
    variables: dict[str, object] = {
        "reference": row.reference,
        "received_at": row.received_at,
        "original_subject": row.subject,
        "agent": agent_variables(agents[args.agent], config),
        "prefecture": config.prefecture.model_dump(),
    }
    meta = app.renderer.meta(args.template)
    if row.sender_name and "usager_nom" in {*meta.required, *meta.optional}:
        variables["usager_nom"] = row.sender_name
    variables.update(_variables(args.var))
    box = config.mailboxes[row.mailbox]
    mail = build_email(
        app.renderer.render(args.template, variables),
        from_address=box.address,
        from_name=config.sender.from_name,
        to=row.sender,
        message_id_domain=config.sender.message_id_domain,
        in_reply_to=row.message_id,
        references=[row.message_id] if row.message_id else [],
        auto_submitted=False,
    )
    print(f"To: {row.sender}\nSubject: {mail.parsed()['Subject']}\n")
    print(mail.parsed().get_body(("plain",)).get_content())  # type: ignore[union-attr]
    if not args.send:
        print("(preview only: add --send to send it)")
        return 0
    detail = json.dumps({"agent": args.agent, "template": args.template}, ensure_ascii=False)
    with app.store.transaction() as tx:
        tx.enqueue(
            row.id, "reply", row.sender, box.address, str(mail["Message-ID"]), mail.as_bytes()
        )
        tx.add_event(row.id, "reply_queued", detail)
    report = app.outbox.deliver_due()
    print(f"sent: {report.sent}, deferred: {report.retried}, failed: {report.failed}")
    return 0 if report.sent else 1


def cmd_indicators(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    calendar = WorkingCalendar(timezone=config.timezone)
    zone = calendar.zone
    since = datetime.combine(args.date_from, time.min, zone)
    until = datetime.combine(args.date_to + timedelta(days=1), time.min, zone)
    complaint = config.routing.complaint_category if config.routing else "reclamation"
    store = Store(config.database)
    columns = store.indicator_arrays(since, until, complaint, args.mailbox, args.service)
    today = min(args.date_to, datetime.now(zone).date()) if args.as_of is None else args.as_of
    result = compute_arrays(arrays_from_store(columns, calendar), today, calendar)
    figures = result.figures()
    if args.format == "json":
        print(
            json.dumps(
                {f.name: f.value for f in figures}
                | {
                    "targets": {
                        f.name: {"target": f.target, "met": f.met} for f in figures if f.target
                    }
                },
                indent=2,
            )
        )
    elif args.format == "csv":
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


def cmd_purge(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    days = args.days or config.retention.days
    deleted = Store(config.database).purge(utcnow() - timedelta(days=days))
    print(f"purged {deleted} messages received more than {days} days ago")
    return 0


def print_outcomes(outcomes: Sequence[Outcome]) -> None:
    rows = [("UID", "MAILBOX", "DECISION", "REFERENCE", "ROUTE", "REASON", "SUBJECT")]
    for o in outcomes:
        subject = o.subject if len(o.subject) <= 40 else o.subject[:39] + "…"
        reasons = ",".join(o.reasons)
        route = o.route or "-"
        rows.append(
            (str(o.uid), o.mailbox, o.decision, o.reference or "-", route, reasons, subject)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


ACK_EXISTING_HELP = (
    "on the first poll of a folder the database does not know, acknowledge the mail already "
    "there (default: refuse and stop; see `backfill`)"
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mailbot",
        description="Acknowledgements, routing, standard replies and response-time indicators "
        "for the shared mailboxes of the Préfecture de la Seine-Maritime.",
    )
    top.add_argument("--config", type=Path, default=Path("rules.yaml"), help="rules.yaml path")
    top.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    top.add_argument("-q", "--quiet", action="store_true", help="warnings only, no table")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate the configuration and templates").set_defaults(
        func=cmd_check
    )
    poll = commands.add_parser("poll", help="process new mail in every mailbox")
    poll.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    poll.add_argument("--acknowledge-existing", action="store_true", help=ACK_EXISTING_HELP)
    poll.set_defaults(func=cmd_poll)
    run = commands.add_parser("run", help="run forever (stops on SIGTERM/SIGINT)")
    run.add_argument("--acknowledge-existing", action="store_true", help=ACK_EXISTING_HELP)
    run.set_defaults(func=cmd_run)
    demo = commands.add_parser("demo", help="run the pipeline on the bundled sample mailbox")
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="where ARs are written")
    demo.add_argument("--maildir", type=Path, default=DEMO_MAILDIR, help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)
    explain_cmd = commands.add_parser(
        "explain", help="show the AR decision and routing of mail files, sending nothing"
    )
    explain_cmd.add_argument(
        "message", type=Path, help="a mail file (.eml or Maildir), a folder of them, or a Maildir"
    )
    explain_cmd.add_argument("--mailbox", help="the mailbox it arrived in (default: from To/Cc)")
    explain_cmd.add_argument("--json", action="store_true", help="one JSON object per file")
    explain_cmd.set_defaults(func=cmd_explain)
    templates = commands.add_parser(
        "templates", help="the standard replies: list, show, render, check"
    )
    sub = templates.add_subparsers(dest="templates_command", required=True)
    t_list = sub.add_parser("list", help="table of templates")
    t_list.add_argument("--service")
    t_list.add_argument("--lang")
    t_list.set_defaults(func=cmd_templates_list)
    t_show = sub.add_parser("show", help="metadata and variables with examples")
    t_show.add_argument("name")
    t_show.set_defaults(func=cmd_templates_show)
    t_render = sub.add_parser("render", help="preview a template (examples filled in)")
    t_render.add_argument("name")
    t_render.add_argument("--var", action="append", default=[], metavar="KEY=VALUE")
    t_render.add_argument("--agent", help="agent id from agents.yaml (signature)")
    t_render.add_argument("--html", type=Path, metavar="FILE", help="also write the HTML here")
    t_render.set_defaults(func=cmd_templates_render)
    sub.add_parser("check", help="render every template; fail on any problem").set_defaults(
        func=cmd_templates_check
    )
    reply = commands.add_parser("reply", help="a standard reply to a tracked message")
    reply.add_argument("reference", help="tracking reference, e.g. SM-2026-000123")
    reply.add_argument("--template", required=True)
    reply.add_argument("--agent", required=True, help="agent id from agents.yaml (signature)")
    reply.add_argument("--var", action="append", default=[], metavar="KEY=VALUE")
    reply.add_argument("--send", action="store_true", help="send it (default: preview)")
    reply.set_defaults(func=cmd_reply)
    backfill = commands.add_parser(
        "backfill", help="import history for the indicators, no mail sent"
    )
    backfill.add_argument("--since", type=date.fromisoformat, required=True)
    backfill.set_defaults(func=cmd_backfill)
    unanswered = commands.add_parser("unanswered", help="messages with no reply and their age")
    unanswered.add_argument("--mailbox")
    unanswered.add_argument("--service")
    unanswered.add_argument("--as-of", type=date.fromisoformat)
    unanswered.set_defaults(func=cmd_unanswered)
    report = commands.add_parser("report", help="the weekly or monthly delay report")
    report.add_argument("kind", choices=["weekly", "monthly"])
    report.add_argument("--week", help="ISO week, e.g. 2026-W47 (default: last complete week)")
    report.add_argument("--month", help="e.g. 2026-11 (default: last complete month)")
    report.add_argument("--out", type=Path, help="write the .eml, HTML, PNG and CSV here")
    report.add_argument("--send", action="store_true")
    report.add_argument("--to", action="append", help="recipient (default: reports.weekly.to)")
    report.add_argument("--as-of", type=date.fromisoformat, help=argparse.SUPPRESS)
    report.set_defaults(func=cmd_report)
    alerts = commands.add_parser("alerts", help="send today's deadline digests to services")
    alerts.add_argument("--date", type=date.fromisoformat, help="as if on this day")
    alerts.set_defaults(func=cmd_alerts)
    indicators = commands.add_parser("indicators", help="Qual-e-pref email indicators")
    indicators.add_argument("--from", dest="date_from", type=date.fromisoformat, required=True)
    indicators.add_argument("--to", dest="date_to", type=date.fromisoformat, required=True)
    indicators.add_argument("--mailbox")
    indicators.add_argument("--service")
    indicators.add_argument("--format", choices=["table", "json", "csv"], default="table")
    indicators.add_argument("--as-of", type=date.fromisoformat, help="pending vs overdue as of")
    indicators.set_defaults(func=cmd_indicators)
    quarantine = commands.add_parser(
        "quarantine",
        help="mail left without an AR by an error (or no Return-Path): list, show, retry",
    )
    q_sub = quarantine.add_subparsers(dest="quarantine_command", required=True)
    q_list = q_sub.add_parser("list", help="quarantined mail, newest first, with its id")
    q_list.add_argument("--mailbox")
    q_list.set_defaults(func=cmd_quarantine_list)
    q_show = q_sub.add_parser("show", help="one quarantined mail: record, events, traceback")
    q_show.add_argument("id", help="its id, as quarantine list prints it (42 or #42)")
    q_show.set_defaults(func=cmd_quarantine_show)
    q_retry = q_sub.add_parser("retry", help="fetch it again from IMAP and process it again")
    q_retry.add_argument("ids", nargs="*", metavar="ID")
    q_retry.add_argument("--all", action="store_true", help="every quarantined mail")
    q_retry.set_defaults(func=cmd_quarantine_retry)
    purge = commands.add_parser("purge", help="delete data older than the retention period")
    purge.add_argument("--days", type=int, help="override retention.days")
    purge.set_defaults(func=cmd_purge)
    add_web_commands(commands)
    add_routing_commands(commands)  # issue 13: correct, routing train|evaluate
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(
        logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    )
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader gone early (`| head`) shows here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except MailbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # a bug: the logged traceback has code locations, never mail content
        log.critical("unexpected error", exc_info=True, extra={"command": args.command})
        return 1


def _reader_gone() -> int:
    """The reader of our output closed the pipe (`mailbot explain x | head -5`): stop
    quietly, as a command killed by SIGPIPE would (Python docs, "Note on SIGPIPE").

    Whatever is still buffered goes to /dev/null, so that the flush at interpreter exit
    does not raise a second BrokenPipeError.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
