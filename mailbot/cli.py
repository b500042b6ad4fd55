"""Command line: one face of mailbot. Each command turns its arguments into a call to a use
case of ``mailbot.app`` and its result into lines of output; nothing else happens here."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.core.answers import AnsweredHow
from mailbot.errors import (
    ConfigError,
    MailbotError,
    MailGoneError,
    MessageError,
    RequestError,
    TemplateError,
    TransientStoreError,
)
from mailbot.logs import safe_error, setup_logging
from mailbot.ops_commands import add_ops_commands
from mailbot.routing_commands import add_routing_commands
from mailbot.web.commands import add_web_commands, console_beside, serve_demo

if TYPE_CHECKING:
    from mailbot.app.connections import Tried
    from mailbot.app.context import App
    from mailbot.app.reply import Preview
    from mailbot.config import Config
    from mailbot.core.incoming import Outcome
    from mailbot.core.periods import Period
    from mailbot.mail.poller import Source
    from mailbot.render.templates import Renderer
    from mailbot.store import Store
    from mailbot.worker import Worker

EXIT_FIRST_POLL_REFUSED = 3
EXIT_CONFIG = 78  # EX_CONFIG (sysexits.h; systemd's "CONFIG"): `run`'s configuration is wrong
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a writer killed by SIGPIPE
log = logging.getLogger(__name__)
DEMO_MAILDIR = Path(__file__).parent / "demo_data" / "maildir"


def _today(config: Config) -> date:
    from mailbot.core.workdays import WorkingCalendar

    return datetime.now(WorkingCalendar(timezone=config.timezone).zone).date()


# --------------------------------------------------------------------------- mailboxes


def cmd_check(args: argparse.Namespace) -> int:
    from mailbot.app import maintenance
    from mailbot.app.model_retention import model_retention_warnings
    from mailbot.config import load_config

    config = load_config(args.config)
    renderer = maintenance.check(config)
    print(f"{args.config}: OK ({len(config.mailboxes)} mailboxes, {len(config.services)} services)")
    print(f"database:  {maintenance.database_shown(config)}")
    print(f"templates: {config.templates}")
    print(f"agents:    {config.agents}")
    for line in maintenance.implicit_decisions(config):
        print(f"implicit decisions: {line}")
    tried = _check_connections(config, args.timeout) if args.connect else []
    for warning in maintenance.permission_warnings(config, args.config):
        print(f"warning: {warning}", file=sys.stderr)
    if all(one.ok for one in tried if one.what == "database"):  # else: read nothing there
        for warning in maintenance.return_path_warnings(config):
            print(f"warning: {warning}", file=sys.stderr)
    for warning in [*config.outbox.warnings(), *config.web.warnings()]:
        print(f"warning: {warning}", file=sys.stderr)
    for warning in maintenance.service_article_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    for warning in maintenance.translation_warnings(config, renderer):
        print(f"warning: {warning}", file=sys.stderr)
    for warning in model_retention_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0 if all(one.ok for one in tried) else 1


def _check_connections(config: Config, timeout: float | None) -> list[Tried]:
    """`check --connect`: one line per connection the worker will open, each tried; exit 1
    when one fails, as `poll` does for a mailbox it could not reach."""
    from mailbot.app.connections import DEFAULT_TIMEOUT, check_connections

    tried = check_connections(config, DEFAULT_TIMEOUT if timeout is None else timeout)
    width = max(len(one.what) for one in tried)
    for one in tried:
        state = "ok" if one.ok else "FAILED"
        print(f"{one.what.ljust(width)}  {state:6}  {one.where}: {one.detail}")
    return tried


def cmd_poll(args: argparse.Namespace) -> int:
    app, worker = _worker(args)
    _started(collect=False)
    try:
        outcomes = worker.poll_once(keep=not args.quiet)
    finally:
        app.close()
    if not args.quiet:
        print_outcomes(outcomes)
    return _refused(worker) or (1 if worker.failures else 0)


def cmd_run(args: argparse.Namespace) -> int:
    """The service. A configuration that does not load exits EXIT_CONFIG, not 2: systemd
    restarts exit 2 (a database not up yet at boot passes) but not 78
    (``RestartPreventExitStatus=``, deploy/mailbot.service), so that a typo in rules.yaml
    leaves the unit failed, the journal naming the key, instead of a restart every 5 s.
    A template that does not compile is the prefecture's configuration too."""
    early_stop = _take_stop_signals()  # before loading: systemd may stop a worker starting
    try:
        app, worker = _worker(args)
    except (ConfigError, TemplateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _stop_on_signals(worker.stop)  # until `run` takes them: a signal now is not lost either
    if early_stop:
        worker.stop.set()  # asked to stop while loading: recover, then stop cleanly
    _started(collect=True)
    with console_beside(app, args.config):  # when web.enabled
        worker.run()
    return _refused(worker)


def _worker(args: argparse.Namespace) -> tuple[App, Worker]:
    """The application and its worker, the mailboxes' connections opened meanwhile: the
    IMAP handshakes and logins (network and authentication waits) overlap the loading of
    the store, the templates and the routing model (issue 14, point 9)."""
    from mailbot.config import load_config
    from mailbot.mail.imap import inboxes, sent_folders

    config = load_config(args.config)
    sources, sent = inboxes(config), sent_folders(config)
    opened = [*sources.values(), *(source for _folder, source in sent.values())]
    for source in opened:
        source.connect_early()
    try:
        from mailbot.app.context import app_from_config
        from mailbot.worker import make_worker

        app = app_from_config(config, acknowledge_existing=args.acknowledge_existing)
        return app, make_worker(app, sources, sent)
    except BaseException:
        for source in opened:
            source.close()
        raise


def _take_stop_signals() -> list[int]:
    """Take SIGTERM/SIGINT while the application loads (a second or so), so that a stop
    asked during start-up ends in a clean exit rather than a death by signal; the worker
    installs its own handlers when it runs. Returns the list the signals are noted in."""
    noted: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: noted.append(number))
    return noted


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set the worker's ``stop`` from now until ``Worker.run`` installs its
    own handlers. A signal noted by ``_take_stop_signals``' handler after the worker was
    built (while the collector ran, the console started) was read by nobody: the worker then
    ran on, deaf to the one SIGTERM it was sent (test_cluster's restarted worker, stopped as
    it finished starting, waited out the test's 60 s and was killed)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _number, _frame: stop.set())


# Commands whose start-up runs with the cyclic garbage collector off (see ``console``).
QUICK_START = ("poll", "run")


def _started(collect: bool) -> None:
    """Start-up is over: the garbage collector, off while the modules and the application
    were loaded, is on again for the work. What start-up built lives as long as the process:
    it is frozen out of the collector's reach, so that later collections do not walk it
    again and again. ``collect``: first free what start-up left unreachable (a worker that
    runs for months); a one-pass command skips it."""
    if gc.isenabled():
        return  # main() called in-process (tests): the collector was never turned off
    if collect:
        gc.collect()
    gc.freeze()
    gc.enable()


def _refused(worker: Worker) -> int:
    """First polls refused because mail was already there: say so plainly, exit 3."""
    for error in worker.refused.values():
        print(f"error: {error}", file=sys.stderr)
    return EXIT_FIRST_POLL_REFUSED if worker.refused else 0


class _Bars:
    """The backfill's progress, one bar per folder (none with -q)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def skipped(self, mailbox: str, folder: str) -> None:
        print(f"{mailbox}/{folder}: already followed, skipped (its new mail is for `poll`)")

    @contextlib.contextmanager
    def folder(self, mailbox: str, folder: str, total: int) -> Iterator[Callable[[], None]]:
        from tqdm import tqdm

        with tqdm(total=total, desc=f"{mailbox}/{folder}", unit="mail", disable=self.quiet) as bar:

            def advance() -> None:
                bar.update()

            yield advance


def cmd_backfill(args: argparse.Namespace) -> int:
    """Record a mailbox's history (INBOX and Sent) for the indicators, sending nothing."""
    from mailbot.app.backfill import backfill
    from mailbot.app.context import build_app

    app = build_app(args.config)
    backfill(app.config, app.store, app.renderer, args.since, _Bars(args.quiet))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mailbot import demo
    from mailbot.app.context import build_app
    from mailbot.core.statuses import Decision
    from mailbot.mail.maildir import MaildirSource
    from mailbot.mail.smtp import FileTransport
    from mailbot.worker import Worker

    if not args.verbose:  # the table below is the demo's output
        logging.getLogger("mailbot").setLevel(logging.WARNING)
    args.config = demo.source_config(args.config)
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
    acknowledged = sum(o.decision == Decision.ACKNOWLEDGE for o in outcomes)
    transferred = sum(o.route.startswith("→") for o in outcomes)
    print(
        f"\n{acknowledged} replies to citizens (ARs; transfers and re-orientations say so)"
        f" and {transferred} forwards to services, written to {outgoing}/ as .eml files"
        " named <reference>-ar, -reorientation or -forward-<service>"
    )
    print(f"database: {out / 'demo.db'}")
    config = demo.write_config(args.config, out, database)
    print(f"explore it: mailbot --config {config} indicators|unanswered|report weekly …")
    if args.web:
        maildirs = {name: args.maildir / name for name in sources}
        return serve_demo(app, config, args.port, maildirs)
    return 0


def _mail_path(text: str) -> Path:
    """``explain``'s argument: an empty one is no path (``Path("")`` is the current folder,
    whose files explain would read as mails)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a mail file, a folder of them or a Maildir")
    return Path(text)


def cmd_explain(args: argparse.Namespace) -> int:
    from mailbot import langcache
    from mailbot.app.explain import compiled_routing, explain, format_text, guess_mailbox
    from mailbot.config import load_config
    from mailbot.mail.maildir import mail_files

    config = load_config(args.config)
    target: Path = args.message
    if langcache.labelled_corpus(target):  # explained again and again; never a citizen's
        langcache.remember_on_disk()
    routing = compiled_routing(config)
    found = mail_files(target)
    if not found:
        raise ConfigError(
            str(target), "", "no mail here (.eml files, Maildir files, or a Maildir with cur/)"
        )
    failed = 0
    for path in found:
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


# --------------------------------------------------------------------------- quarantine


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from mailbot.app import quarantine
    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(args.config)
    store = Store(config.database)
    rows = quarantine.waiting(store, args.mailbox)
    passed = quarantine.passed_over(store, args.mailbox)
    print(f"{'ID':>7}  {'MAILBOX':<10} {'RECEIVED':<16} {'WHY':<15} {'REASON':<28} SUBJECT")
    for row in rows:
        reasons = ",".join(json.loads(row.reasons or "[]"))
        subject = row.subject if len(row.subject) <= 50 else row.subject[:49] + "…"
        print(
            f"{'#' + str(row.id):>7}  {row.mailbox:<10} {row.received_at:%Y-%m-%d %H:%M} "
            f"{row.attention:<15} {reasons[:28]:<28} {subject}"
        )
    if passed:
        print(
            "\nPassed over: the database refused even their quarantine row; no row, no AR,"
            " still on the server"
        )
        print(
            f"{'ID':>7}  {'MAILBOX':<10} {'PASSED OVER':<16} {'UIDVALIDITY':>11} {'UID':>7}  "
            "FOLDER: REASON"
        )
        for mail in passed:
            print(
                f"{mail.id:>7}  {mail.mailbox or '?':<10} {mail.at:%Y-%m-%d %H:%M} "
                f"{mail.uidvalidity:>11} {mail.uid:>7}  {mail.folder or '?'}: {mail.why[:60]}"
            )
    summary = f"\n{len(rows)} mail(s) without an AR, awaiting a person"
    if passed:
        summary += f", and {len(passed)} passed over"
    print(summary + " (mailbot quarantine show|retry ID)")
    return 0


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    from mailbot.app import quarantine
    from mailbot.config import load_config
    from mailbot.store import Store

    config = load_config(args.config)
    store = Store(config.database)
    event_id = quarantine.passed_over_ref(args.id)
    if event_id is not None:
        case = quarantine.passed_over_case(store, event_id)
        passed, dismissed = case.passed, case.dismissed
        state = "no row, no AR, still on the server"
        if dismissed is not None:
            state = "dismissed: handled outside mailbot; " + state
        print(f"{'id:':<13} {passed.id} (passed over: {state})")
        for name in ("mailbox", "folder", "uidvalidity", "uid"):
            print(f"{name + ':':<13} {getattr(passed, name) or '?'}")
        print(f"{'passed over:':<13} {passed.at:%Y-%m-%d %H:%M:%S}")
        if dismissed is not None:
            print(f"{'dismissed:':<13} {dismissed.at:%Y-%m-%d %H:%M:%S} by {dismissed.agent}")
            print(f"{'why:':<13} {dismissed.reason}")
        print("\n  " + case.detail.replace("\n", "\n  "))
        return 0
    row, events = quarantine.details(store, quarantine.parse_ref(args.id))
    for name in ("id", "mailbox", "folder", "uidvalidity", "uid", "received_at", "message_id"):
        print(f"{name + ':':<13} {getattr(row, name)}")
    print(f"{'subject:':<13} {row.subject}")
    print(f"{'decision:':<13} {row.decision} ({', '.join(json.loads(row.reasons or '[]'))})")
    print(f"{'defects:':<13} {', '.join(json.loads(row.defects or '[]')) or '-'}")
    for event in events:
        print(f"\n{event.at:%Y-%m-%d %H:%M:%S} {event.kind}")
        if event.detail:
            print("  " + event.detail.replace("\n", "\n  "))
    return 0


def cmd_quarantine_retry(args: argparse.Namespace) -> int:
    from mailbot.app import quarantine
    from mailbot.app.context import build_app
    from mailbot.core.statuses import Decision
    from mailbot.mail.originals import ImapOriginals

    app = build_app(args.config)
    # A row's id (#42), or the event of a mail passed over (P7): oldest first.
    refs: list[tuple[str, int]]
    if args.all:
        refs = [("#", row.id) for row in quarantine.waiting(app.store)][::-1]
        refs += [("P", mail.event_id) for mail in quarantine.passed_over(app.store)][::-1]
    else:
        refs = [_retry_ref(text) for text in args.ids]
    if not refs:
        print("nothing to retry")
        return 0
    failed: Counter[str] = Counter()
    outcomes = []
    originals = ImapOriginals(app.config)
    for kind, number in refs:
        try:
            if kind == "P":
                outcome = quarantine.retry_passed_over(app.store, app.pipeline, originals, number)
            else:
                outcome = quarantine.retry(app.store, app.pipeline, originals, number)
            outcomes.append(outcome)
        except MailbotError as exc:
            print(f"error: {kind}{number}: {exc}", file=sys.stderr)
            failed[_retry_failure(exc)] += 1
        app.outbox.deliver_due()
    if outcomes:  # none (every id unknown): the errors say it, no table header over nothing
        print_outcomes(outcomes)
        print()
    still = sum(o.decision == Decision.QUARANTINE for o in outcomes)
    summary = f"{len(outcomes)} retried, {still} still quarantined, {failed['missing']} not found"
    if failed["database"]:
        summary += (
            f", {failed['database']} not retried (the database could not record it now:"
            " retry later)"
        )
    if failed["no retry"]:
        summary += f", {failed['no retry']} failed (see the errors above)"
    print(summary)
    return 1 if failed or still else 0


def cmd_quarantine_dismiss(args: argparse.Namespace) -> int:
    """Close a mail passed over that a person handled outside mailbot (`--reason`): it
    leaves the lists, the status, the metrics, the alert and the report; the mail on the
    server is left alone. A refusal (a row records it, already dismissed) is an error."""
    from mailbot.app import quarantine
    from mailbot.config import load_config
    from mailbot.store import Store

    event_id = quarantine.passed_over_ref(args.id)
    if event_id is None:
        raise MessageError(
            f"not a mail passed over: {args.id!r} (expected P7, as quarantine list prints"
            " it; a quarantined row is processed again by quarantine retry)"
        )
    config = load_config(args.config)
    store = Store(config.database)
    try:
        agent = args.agent or _default_agent()
        dismissed = quarantine.dismiss_passed_over(store, event_id, agent, args.reason)
    finally:
        store.close()
    print(
        f"mail P{event_id} dismissed by {dismissed.agent} (handled outside mailbot:"
        f" {dismissed.reason}); it is left as it is on the server"
    )
    return 0


def _default_agent() -> str:
    """Who dismisses a mail from the command line when --agent is not given: the login
    of the person running it (the console's admin is named by their session)."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli"


def _retry_ref(text: str) -> tuple[str, int]:
    """``P7`` (a mail passed over, by its event) or ``42``/``#42`` (a row)."""
    from mailbot.app import quarantine

    event_id = quarantine.passed_over_ref(text)
    return ("P", event_id) if event_id is not None else ("#", quarantine.parse_ref(text))


def _retry_failure(exc: MailbotError) -> str:
    """What kept a retry from happening, for its summary: the mail not found (no such
    quarantined row, or gone from the server), the database (a transient error: the mail
    stays quarantined as it was), or anything else (the server unreachable…)."""
    if isinstance(exc, TransientStoreError):
        return "database"
    if isinstance(exc, (MessageError, MailGoneError)):
        return "missing"
    return "no retry"


# --------------------------------------------------------------------------- templates


def _renderer(args: argparse.Namespace, full_check: bool = False) -> tuple[Config, Renderer]:
    from mailbot.config import load_config
    from mailbot.render.templates import Renderer

    config = load_config(args.config)
    return config, Renderer(config.templates, timezone=config.timezone, full_check=full_check)


def _variables(pairs: Sequence[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--var", pair, "expected key=value")
        found[key.strip()] = value
    return found


def cmd_templates_list(args: argparse.Namespace) -> int:
    from mailbot.app import template_catalogue

    _config, renderer = _renderer(args)
    rows = template_catalogue.listing(renderer, args.service, args.lang)
    translations = template_catalogue.languages(renderer)
    others = "+".join(t["language"] for t in translations)
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
    for t in translations:
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
    from mailbot.app import template_catalogue

    config, renderer = _renderer(args)
    agent = None
    if args.agent:
        from mailbot.config import load_agents

        agent = (args.agent, load_agents(config.agents, config).get(args.agent))
    mail = template_catalogue.preview(config, renderer, args.name, _variables(args.var), agent)
    print(f"Objet : {mail.subject}\n\n{mail.text}")
    if args.html:
        args.html.write_text(mail.html, encoding="utf-8")
        print(f"\nHTML preview written to {args.html}")
    return 0


def cmd_templates_check(args: argparse.Namespace) -> int:
    from mailbot.app import maintenance, template_catalogue

    config, renderer = _renderer(args, full_check=True)
    found = template_catalogue.check_all(renderer)
    for name, problems in found.items():
        print(f"{'FAIL' if problems else 'ok  '} {name}")
        for problem in problems:
            print(f"     - {problem}")
    failed = sum(1 for problems in found.values() if problems)
    print(f"\n{len(found) - failed} templates ok, {failed} with problems")
    for warning in maintenance.translation_warnings(config, renderer):  # not a failure
        print(f"warning: {warning}", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------- agents' requests


def _print_preview(preview: Preview) -> None:
    print(f"To: {', '.join(preview.recipients)}\nSubject: {preview.subject}")
    if preview.attachments:
        print(f"Attachments: {', '.join(preview.attachments)}")
    if preview.edited:
        print("(the template's text, as edited)")
    print()
    print(preview.text)


def _all_delivered(app: App) -> int:
    """Deliver what is due and say how it went: 1 unless every mail left, so that a
    digest or a report the relay deferred (the worker retries it) is not taken for sent."""
    report = app.outbox.deliver_due()
    print(f"sent: {report.sent}, deferred: {report.retried}, failed: {report.failed}")
    return 1 if report.retried or report.failed else 0


def _delivered(app: App) -> int:
    report = app.outbox.deliver_due()
    print(f"sent: {report.sent}, deferred: {report.retried}, failed: {report.failed}")
    return 0 if report.sent else 1


def cmd_reply(args: argparse.Namespace) -> int:
    """A standard reply, or a free one (--text/--text-file), in the thread of a tracked
    message: previewed, or sent with --send."""
    from mailbot.app.context import build_app
    from mailbot.app.reply import Draft, Replies

    app = build_app(args.config)
    replies = Replies(app.config, app.store, app.renderer, app.agent)
    if args.template:  # --text-file with it: the agent's edit of the rendered text
        edit = _free_text(args) if args.text_file is not None else None
        draft = Draft.standard(args.template, _variables(args.var), edit)
    elif args.text is not None or args.text_file is not None:
        draft = Draft.free(_free_text(args))
    else:
        raise RequestError("reply", args.reference, "give --template, --text or --text-file")
    if not args.send:
        _print_preview(replies.preview(args.agent, args.reference, draft))
        print("(preview only: add --send to send it)")
        return 0
    replies.send(args.agent, args.reference, draft)
    return _delivered(app)


def _free_text(args: argparse.Namespace) -> str:
    if args.text_file is None:
        return str(args.text or "")
    if str(args.text_file) == "-":
        return sys.stdin.read()
    try:
        return Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(args.text_file), "", f"cannot read the reply's text: {exc}") from None


def cmd_transfer(args: argparse.Namespace) -> int:
    """Transfer a tracked message to another service: previewed, or done with --send."""
    from mailbot.app.context import build_app
    from mailbot.app.transfer import Transfers
    from mailbot.mail.originals import ImapOriginals

    app = build_app(args.config)
    originals = ImapOriginals(app.config)
    transfers = Transfers(app.config, app.store, app.renderer, app.agent, originals, app.clock)
    if not args.send:
        preview = transfers.preview(args.agent, args.reference, args.service, args.reason)
        _print_preview(preview.notice)
        print(
            f"(preview only: add --send to send it; the forward goes to "
            f"{', '.join(preview.forward_to)})"
        )
        return 0
    transfers.transfer(args.agent, args.reference, args.service, args.reason)
    return _delivered(app)


def cmd_answered(args: argparse.Namespace) -> int:
    """Record that a citizen was answered by phone, at the counter or by letter."""
    from mailbot.app.answered import mark_answered
    from mailbot.app.context import build_app

    app = build_app(args.config)
    done = mark_answered(
        app.config,
        app.store,
        app.agent,
        args.agent,
        args.reference,
        AnsweredHow(args.how),
        args.reason,
        at=args.at,
    )
    counted = "counts as its reply" if done.first else "an earlier reply still counts"
    print(f"{done.reference}: answered by {args.how}, recorded ({counted})")
    return 0


def cmd_reopen(args: argparse.Namespace) -> int:
    """Undo a closing without a reply made by mistake: the console's « Rouvrir »."""
    from mailbot.app.context import build_app
    from mailbot.app.no_reply import reopen

    app = build_app(args.config)
    done = reopen(app.config, app.store, app.agent, args.agent, args.reference, args.reason)
    was = f" (it was closed as {done.closed.value})" if done.closed is not None else ""
    print(f"{done.reference}: reopened{was}, back in the queue with its deadline from receipt")
    return 0


# --------------------------------------------------------------------------- figures


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


def _positive_seconds(text: str) -> float:
    """``--timeout``: a number of seconds above 0 (at most an hour: a typo, not a wait)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds, 0 to 3600")
    return seconds


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


# --------------------------------------------------------------------------- arguments


ACK_EXISTING_HELP = (
    "on the first poll of a folder the database does not know, acknowledge the mail already "
    "there (default: refuse and stop; see `backfill`)"
)


@contextlib.contextmanager
def _each_message_translated_once() -> Iterator[None]:
    """argparse asks gettext for the same few strings ("options", "show this help message
    and exit"...) for each of the ~35 sub-parsers, and gettext, finding no catalogue, looks
    for its files on disk again at each call (~400 stat calls: ~9 ms of every command,
    issue 14 point 9). While the parser is built, each string is looked up once; the
    translations are gettext's own, as before."""
    translate = getattr(argparse, "_", None)  # argparse's `from gettext import gettext as _`
    if not callable(translate):
        yield
        return
    argparse._ = functools.lru_cache(maxsize=None)(translate)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        argparse._ = translate  # type: ignore[attr-defined]


@_each_message_translated_once()
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
    check = commands.add_parser("check", help="validate the configuration and templates")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also try the database, each IMAP account and SMTP (nothing written or sent);"
        " exit 1 if one fails",
    )
    check.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="with --connect: the longest wait of each connection (default 10,"
        " or the server's timeout_seconds when shorter)",
    )
    check.set_defaults(func=cmd_check)
    poll = commands.add_parser("poll", help="process new mail in every mailbox")
    poll.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    poll.add_argument("--acknowledge-existing", action="store_true", help=ACK_EXISTING_HELP)
    poll.set_defaults(func=cmd_poll)
    run = commands.add_parser("run", help="run forever (stops on SIGTERM/SIGINT)")
    run.add_argument("--acknowledge-existing", action="store_true", help=ACK_EXISTING_HELP)
    run.set_defaults(func=cmd_run)
    demo_cmd = commands.add_parser("demo", help="run the pipeline on the bundled sample mailbox")
    demo_cmd.add_argument(
        "--out",
        type=Path,
        default=Path("demo-out"),
        help="the output folder: the mails sent (.eml), the database, the configuration's copy",
    )
    demo_cmd.add_argument("--maildir", type=Path, default=DEMO_MAILDIR, help=argparse.SUPPRESS)
    demo_cmd.add_argument(
        "--web", action="store_true", help="then serve the web console on the demo data"
    )
    demo_cmd.add_argument(
        "--port", type=int, default=8080, help="the console's port with --web (0: any free one)"
    )
    demo_cmd.set_defaults(func=cmd_demo)
    explain_cmd = commands.add_parser(
        "explain", help="show the AR decision and routing of mail files, sending nothing"
    )
    explain_cmd.add_argument(
        "message",
        type=_mail_path,
        help="a mail file (.eml or Maildir), a folder of them, or a Maildir",
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
    reply = commands.add_parser(
        "reply", help="a standard (--template) or free (--text) reply to a tracked message"
    )
    reply.add_argument("reference", help="tracking reference, e.g. SM-2026-000123")
    what = reply.add_mutually_exclusive_group()
    what.add_argument("--template", help="a standard reply (mailbot templates list)")
    what.add_argument("--text", help="a free reply: the agent's own text")
    reply.add_argument(
        "--text-file",
        type=Path,
        help="a free reply's text from a file (- : stdin); with --template, the agent's edit "
        "of the standard reply's text (sent instead of it, signature checked, recorded edited)",
    )
    reply.add_argument("--agent", required=True, help="agent id from agents.yaml (signature)")
    reply.add_argument("--var", action="append", default=[], metavar="KEY=VALUE")
    reply.add_argument("--send", action="store_true", help="send it (default: preview)")
    reply.set_defaults(func=cmd_reply)
    transfer = commands.add_parser(
        "transfer", help="transfer a tracked message to another service (notice + forward)"
    )
    transfer.add_argument("reference", help="tracking reference, e.g. SM-2026-000123")
    transfer.add_argument("--service", required=True, help="the service it goes to")
    transfer.add_argument(
        "--agent", required=True, help="agent id from agents.yaml: a head of the message's service"
    )
    transfer.add_argument("--reason", required=True, help="why (shown to the service)")
    transfer.add_argument("--send", action="store_true", help="do it (default: preview)")
    transfer.set_defaults(func=cmd_transfer)
    answered = commands.add_parser(
        "answered", help="record a reply given by phone, at the counter or by letter"
    )
    answered.add_argument("reference", help="tracking reference (or #id of unacknowledged mail)")
    answered.add_argument("--agent", required=True, help="agent id from agents.yaml")
    answered.add_argument("--how", required=True, choices=[h.value for h in AnsweredHow])
    answered.add_argument("--reason", required=True, help="what was settled, in a few words")
    answered.add_argument(
        "--at", type=datetime.fromisoformat, help="when, with its zone (default: now)"
    )
    answered.set_defaults(func=cmd_answered)
    reopen = commands.add_parser(
        "reopen", help="reopen a message closed without a reply by mistake (« Rouvrir »)"
    )
    reopen.add_argument("reference", help="tracking reference, e.g. SM-2026-000123")
    reopen.add_argument("--agent", required=True, help="agent id from agents.yaml")
    reopen.add_argument("--reason", default="", help="why (optional, kept with the event)")
    reopen.set_defaults(func=cmd_reopen)
    backfill_cmd = commands.add_parser(
        "backfill", help="import history for the indicators, no mail sent"
    )
    backfill_cmd.add_argument("--since", type=date.fromisoformat, required=True)
    backfill_cmd.set_defaults(func=cmd_backfill)
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
    quarantine_cmd = commands.add_parser(
        "quarantine",
        help="mail left without an AR by an error (or no Return-Path): list, show, retry, dismiss",
    )
    q_sub = quarantine_cmd.add_subparsers(dest="quarantine_command", required=True)
    q_list = q_sub.add_parser(
        "list", help="quarantined mail, newest first, with its id; then the mail passed over"
    )
    q_list.add_argument("--mailbox")
    q_list.set_defaults(func=cmd_quarantine_list)
    q_show = q_sub.add_parser("show", help="one quarantined mail: record, events, traceback")
    q_show.add_argument("id", help="its id, as quarantine list prints it (42, #42, or P7)")
    q_show.set_defaults(func=cmd_quarantine_show)
    q_retry = q_sub.add_parser("retry", help="fetch it again from IMAP and process it again")
    q_retry.add_argument("ids", nargs="*", metavar="ID")
    q_retry.add_argument(
        "--all", action="store_true", help="every quarantined mail, and every mail passed over"
    )
    q_retry.set_defaults(func=cmd_quarantine_retry)
    q_dismiss = q_sub.add_parser(
        "dismiss",
        help="close a mail passed over handled outside mailbot (it stays on the server)",
    )
    q_dismiss.add_argument("id", help="the mail passed over, as quarantine list prints it (P7)")
    q_dismiss.add_argument(
        "--reason", required=True, help="how it was handled outside mailbot (kept, shown)"
    )
    q_dismiss.add_argument("--agent", help="who handled it (default: your login name)")
    q_dismiss.set_defaults(func=cmd_quarantine_dismiss)
    purge = commands.add_parser("purge", help="delete data older than the retention period")
    purge.add_argument("--days", type=_retention_days, help="override retention.days (1 to 36500)")
    purge.set_defaults(func=cmd_purge)
    add_web_commands(commands)
    add_routing_commands(commands)  # issue 13: correct, routing train|evaluate
    add_ops_commands(commands)  # issue 16: status, probe, backup, migrate
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command not in QUICK_START:
        gc.enable()  # the collector is off only while `poll` and `run` start (see console)
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


def console() -> int:
    """The ``mailbot`` command: ``main`` with the process's arguments, a quick start and
    a quick exit.

    What the interpreter's own exit does that matters is done here: the remaining threads
    are waited for, the exit handlers run (logging flushed, the SMTP connection's QUIT),
    the output flushed. Then the process ends without tearing down every module object
    one by one, which costs more than a quarter of a second once SQLAlchemy, pydantic and
    numpy are loaded (issue 14, point 9). The commands close their store themselves;
    a committed transaction is on disk already.
    """
    # The cyclic garbage collector walked every object start-up makes, again and again
    # (~300 collections, ~0.15 s of `poll --once`, issue 14 point 9); start-up makes
    # little garbage. Off until the command has loaded what it needs (``_started``).
    gc.disable()
    # pydantic looks for plugins among the entry points of every installed distribution
    # the first time it builds a validator (~10-15 ms of a start); mailbot uses none. An
    # operator who installs one may still turn plugins on by setting the variable.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # numpy's OpenBLAS starts a thread per core when numpy is first imported, and they spin
    # while waiting for work (~70 ms of CPU of a start, issue 14 point 9). mailbot's products
    # are small (a mail's TF-IDF rows against the routing model's heads, the stacked
    # regressions' few inputs): threads buy nothing there, and the logits are the same to the
    # bit (bench/README.md, seventh session). Read once, at numpy's import, which no module
    # of the command line does (tests/test_cli_startup.py): set here, before any command
    # runs. An operator's own setting wins (training on a large machine, say).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    code = main()
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return code  # a thread the interpreter must join: let it exit the slow way
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _reader_gone()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(console())
