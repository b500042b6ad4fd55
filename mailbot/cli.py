"""Command line: one face of mailbot. Each command turns its arguments into a call to a use
case of ``mailbot.app`` and its result into lines of output; nothing else happens here.

This module holds ``main``, the top-level parser and the mail loop's commands (check, poll,
run, backfill, demo, explain). The other groups live in a module each, which registers its
subparsers here: ``template_commands``, ``desk_commands`` (an agent's requests),
``figure_commands``, ``quarantine_commands``, ``routing_commands``, ``ops_commands`` and
``web.commands``."""

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
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from mailbot.cpu import keep_worker_on_one_cpu
from mailbot.cpu import release as release_cpus
from mailbot.desk_commands import add_desk_commands
from mailbot.errors import ConfigError, MailbotError, TemplateError
from mailbot.figure_commands import add_figure_commands
from mailbot.logs import safe_error, setup_logging
from mailbot.ops_commands import add_ops_commands, add_purge_command
from mailbot.outcomes_table import print_outcomes
from mailbot.quarantine_commands import add_quarantine_commands
from mailbot.routing_commands import add_routing_commands
from mailbot.template_commands import add_template_commands
from mailbot.web.commands import add_web_commands, console_beside, serve_demo

if TYPE_CHECKING:
    from mailbot.app.connections import Tried
    from mailbot.app.context import App
    from mailbot.config import Config
    from mailbot.mail.poller import Source
    from mailbot.store import Store
    from mailbot.worker import Worker

EXIT_FIRST_POLL_REFUSED = 3
EXIT_CONFIG = 78  # EX_CONFIG (sysexits.h; systemd's "CONFIG"): `run`'s configuration is wrong
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a writer killed by SIGPIPE
log = logging.getLogger(__name__)
DEMO_MAILDIR = Path(__file__).parent / "demo_data" / "maildir"


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
        release_cpus()
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
    try:
        with console_beside(app, args.config):  # when web.enabled
            worker.run()
    finally:
        release_cpus()
    return _refused(worker)


def _worker(args: argparse.Namespace) -> tuple[App, Worker]:
    """The application and its worker, the mailboxes' connections opened meanwhile: the
    IMAP handshakes and logins (network and authentication waits) overlap the loading of
    the store and the templates (issue 14, point 9).

    The SMTP process and the routing helper first, before any other thread (the
    connections' are): forked from this one, they import the SMTP client, compile the
    rules and load the model on the other core while this process loads the rest; one
    sends every mail (mail/smtp_process), the other decides every mail (app/routing_pool)."""
    from mailbot.app.routing_pool import start_routing_helper
    from mailbot.config import load_config
    from mailbot.heap import map_large_buffers
    from mailbot.mail.imap import inboxes, sent_folders
    from mailbot.mail.smtp_process import start_smtp_process

    config = load_config(args.config)
    map_large_buffers()  # before the forks: the helpers' heaps too (mailbot/heap.py)
    smtp = start_smtp_process(config)
    helper = start_routing_helper(config)
    # After the forks: the helpers keep every CPU, this process's threads share one.
    keep_worker_on_one_cpu(config.polling.worker_cpu, config.database)
    opened = []
    try:
        sources, sent = inboxes(config), sent_folders(config)
        opened = [*sources.values(), *(source for _folder, source in sent.values())]
        for source in opened:
            source.connect_early()
        from mailbot.app.context import app_from_config
        from mailbot.worker import make_worker

        app = app_from_config(
            config,
            transport=smtp,
            acknowledge_existing=args.acknowledge_existing,
            routing_pool=helper,
        )
        return app, make_worker(app, sources, sent)
    except BaseException:
        for source in opened:
            source.close()
        for process in (helper, smtp):
            if process is not None:
                process.close()
        release_cpus()
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


def _positive_seconds(text: str) -> float:
    """``--timeout``: a number of seconds above 0 (at most an hour: a typo, not a wait)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds, 0 to 3600")
    return seconds


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
    add_template_commands(commands)
    add_desk_commands(commands)  # reply, transfer, answered, reopen
    backfill_cmd = commands.add_parser(
        "backfill", help="import history for the indicators, no mail sent"
    )
    backfill_cmd.add_argument("--since", type=date.fromisoformat, required=True)
    backfill_cmd.set_defaults(func=cmd_backfill)
    add_figure_commands(commands)  # unanswered, report, alerts, indicators
    add_quarantine_commands(commands)
    add_purge_command(commands)
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
