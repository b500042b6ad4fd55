"""``mailbot web`` (serve the console) and ``mailbot web passwd AGENT`` (a local password).

Only argparse here: the web stack is imported when a web command runs, so other commands
start as fast as before.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.errors import ConfigError

if TYPE_CHECKING:
    from mailbot.app.context import App


def add_web_commands(commands: Any) -> None:
    """Register ``web`` on the top-level subparsers of mailbot's CLI."""
    web = commands.add_parser("web", help="serve the agents' web console")
    web.add_argument("--host", help="listen address (default: web.host)")
    web.add_argument("--port", type=int, help="listen port (default: web.port)")
    web.set_defaults(func=cmd_web)
    sub = web.add_subparsers(dest="web_command")
    passwd = sub.add_parser("passwd", help="set an agent's local password (accounts file)")
    passwd.add_argument("agent", help="agent id from agents.yaml")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    passwd.set_defaults(func=cmd_web_passwd)


def cmd_web(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from mailbot.app.context import app_from_config
    from mailbot.config import load_config, validation_problem
    from mailbot.web.app import settings_from_config
    from mailbot.web.server import serve
    from mailbot.web.site import console_app

    config = load_config(args.config)
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if changes:
        try:
            web = config.web.model_validate(config.web.model_dump() | changes)
        except ValidationError as exc:
            raise ConfigError("--host/--port", "web", validation_problem(exc)[1]) from None
        config = config.model_copy(update={"web": web})
    settings = settings_from_config(config, args.config)
    app = app_from_config(config)  # the store migrated, the templates checked: before serving
    print(f"mailbot console: {config.web.base_url}/ (Ctrl-C to stop)", file=sys.stderr)
    serve(console_app(settings, app), config.web)
    return 0


def cmd_web_passwd(args: argparse.Namespace) -> int:
    from mailbot.config import load_agents, load_config
    from mailbot.web.accounts import AccountsFile, WeakPasswordError

    config = load_config(args.config)
    agents = load_agents(config.agents, config)
    if args.agent not in agents:
        raise ConfigError(str(config.agents), f"agents.{args.agent}", "no such agent")
    path = config.web.local_accounts.file
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass(f"New password for {args.agent}: ")
        if getpass.getpass("Again: ") != password:
            print("error: the two passwords differ", file=sys.stderr)
            return 2
    try:
        AccountsFile(path).set_password(args.agent, password)
    except WeakPasswordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"password of {args.agent} written to {path}")
    if not config.web.local_accounts.enabled:
        print("note: web.local_accounts.enabled is false in the configuration")
    return 0


def serve_demo(app: App, config_path: Path, port: int, maildirs: Mapping[str, Path]) -> int:
    """``mailbot demo --web``: the console on the demo's App (its database; replies written
    as .eml files like the demo's ARs; citizens' mail read again from the demo's Maildirs),
    local demo accounts, on 127.0.0.1 until Ctrl-C."""
    from mailbot.mail.originals import MaildirOriginals
    from mailbot.web.demo import DEMO_ACCOUNTS, DEMO_LOGINS, DEMO_PASSWORD, demo_settings
    from mailbot.web.server import bind, serve
    from mailbot.web.site import console_app

    sock = bind("127.0.0.1", port)
    settings = demo_settings(app.config, config_path, sock.getsockname()[1])
    import dataclasses

    settings = dataclasses.replace(settings, originals=MaildirOriginals(maildirs))
    web_app = console_app(settings, app)
    print(f"\nweb console on the demo data: {settings.web.base_url}/ (Ctrl-C to stop)")
    print(f"demo accounts ({DEMO_ACCOUNTS.name}), password for each: {DEMO_PASSWORD}")
    for login, what in DEMO_LOGINS.items():
        print(f"  {login:<9} {what}")
    sys.stdout.flush()
    serve(web_app, settings.web, sock)
    return 0


@contextlib.contextmanager
def console_beside(app: App, config_path: Path) -> Iterator[None]:
    """``mailbot run``: the console in a thread of the worker's process, on its App, when
    rules.yaml's ``web.enabled`` is true; stopped when the worker stops."""
    if not app.config.web.enabled:
        yield
        return
    from mailbot.web.app import settings_from_config
    from mailbot.web.server import start_in_thread
    from mailbot.web.site import console_app

    settings = settings_from_config(app.config, config_path)
    server = start_in_thread(console_app(settings, app), app.config.web)
    try:
        yield
    finally:
        server.stop()
