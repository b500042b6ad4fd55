"""``mailbot templates list|show|render|check``: the standard replies, as the agents and
the prefecture's editors see them before any is sent.

Only argparse and light imports at the top (`mailbot --help` stays instant): each command
imports the renderer and the configuration when it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.errors import ConfigError

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.render.templates import Renderer


def add_template_commands(commands: Any) -> None:
    """Register ``templates`` and its subcommands on the top-level subparsers of mailbot's CLI."""
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


def _renderer(args: argparse.Namespace, full_check: bool = False) -> tuple[Config, Renderer]:
    from mailbot.config import load_config
    from mailbot.render.templates import Renderer

    config = load_config(args.config)
    return config, Renderer(config.templates, timezone=config.timezone, full_check=full_check)


def variables(pairs: Sequence[str]) -> dict[str, str]:
    """``--var KEY=VALUE`` pairs, as `templates render` and `reply` take them."""
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
    mail = template_catalogue.preview(config, renderer, args.name, variables(args.var), agent)
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
