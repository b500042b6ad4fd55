"""``mailbot quarantine list|show|retry|dismiss``: the mail left without an AR by an error
(or for lack of a Return-Path), and the mail passed over that the database refused even to
quarantine, for a person to look at, process again or close.

Only argparse and light imports at the top (`mailbot --help` stays instant): each command
imports the store or the application when it runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from mailbot.errors import MailbotError, MailGoneError, MessageError, TransientStoreError
from mailbot.outcomes_table import print_outcomes


def add_quarantine_commands(commands: Any) -> None:
    """Register ``quarantine`` and its subcommands on the top-level subparsers of mailbot's
    CLI."""
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
