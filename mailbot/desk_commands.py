"""The agent's requests from the command line: ``reply``, ``transfer``, ``answered`` and
``reopen`` on a tracked message, as the console's desk makes them (the same use cases).

Only argparse and light imports at the top (`mailbot --help` stays instant): each command
imports the application when it runs."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.core.answers import AnsweredHow
from mailbot.errors import ConfigError, RequestError
from mailbot.template_commands import variables

if TYPE_CHECKING:
    from mailbot.app.context import App
    from mailbot.app.reply import Preview


def add_desk_commands(commands: Any) -> None:
    """Register ``reply``, ``transfer``, ``answered`` and ``reopen`` on the top-level
    subparsers of mailbot's CLI."""
    _add_reply(commands)
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


def _add_reply(commands: Any) -> None:
    """``reply``: its options apart, so that each registering function stays short."""
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


def _print_preview(preview: Preview) -> None:
    print(f"To: {', '.join(preview.recipients)}\nSubject: {preview.subject}")
    if preview.attachments:
        print(f"Attachments: {', '.join(preview.attachments)}")
    if preview.edited:
        print("(the template's text, as edited)")
    print()
    print(preview.text)


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
        draft = Draft.standard(args.template, variables(args.var), edit)
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
