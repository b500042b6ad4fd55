"""``mailbot web`` (serve the console) and ``mailbot web passwd AGENT`` (a local password).

Only argparse here: the web stack is imported when a web command runs, so other commands
start as fast as before.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from mailbot.errors import ConfigError


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

    from mailbot.config import load_config, validation_problem
    from mailbot.web.app import create_app, settings_from_config
    from mailbot.web.server import serve

    config = load_config(args.config)
    changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if changes:
        try:
            web = config.web.model_validate(config.web.model_dump() | changes)
        except ValidationError as exc:
            raise ConfigError("--host/--port", "web", validation_problem(exc)[1]) from None
        config = config.model_copy(update={"web": web})
    settings = settings_from_config(config, args.config)
    print(f"mailbot console: {config.web.base_url}/ (Ctrl-C to stop)", file=sys.stderr)
    serve(create_app(settings), config.web)
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
