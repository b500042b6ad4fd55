"""What the demo leaves behind: outgoing mails named for people, and a config to explore them.

``mailbot demo`` writes every outgoing mail as an .eml file named by tracking reference and
kind (``SM-2026-000001-ar.eml``, ``SM-2026-000001-forward-permis.eml``), and a copy of the
configuration, ``demo-out/rules.yaml``, whose database is the demo's and whose paths are
absolute, so that ``mailbot --config demo-out/rules.yaml indicators …`` reads the demo's data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mailbot import yamlfile
from mailbot.core.statuses import OutboxKind
from mailbot.mail.smtp import Envelope
from mailbot.store import Store

LEGEND = (
    "ROUTE: → transferred to that service (the citizen gets one AR that says so, the service "
    "a forward); ↪ re-oriented to another administration (one reply saying where to turn); "
    "a plain name: handled by the mailbox's own service."
)
PATH_KEYS = {"password_file", "ca_file"}
DEFAULT_CONFIG = Path("rules.yaml")
PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "rules.yaml"


def source_config(asked: Path) -> Path:
    """The rules.yaml the demo runs with: the one asked for; or, when none was named and
    there is none here, the project's beside the installed package (the README's install
    is editable): the demo needs no configuration of its own, from any folder."""
    if asked != DEFAULT_CONFIG or asked.exists() or not PROJECT_CONFIG.is_file():
        return asked
    return PROJECT_CONFIG


def outgoing_name(store: Store, envelope: Envelope) -> str:
    """``<reference>-ar``, ``<reference>-reorientation`` or ``<reference>-forward-<service>``;
    from the console (``demo --web``), an agent's ``<reference>-reply`` and a transfer's
    ``<reference>-notice`` (named « -ar-2 » once, like a second AR)."""
    item = next((row for row in store.outbox_items() if str(row.id) == envelope.name), None)
    message = store.message(id=item.message_pk) if item and item.message_pk else None
    if item is None or message is None or not message.reference:
        return envelope.name
    if item.kind == OutboxKind.FORWARD:
        return f"{message.reference}-forward-{message.service}"
    if item.kind in (OutboxKind.REPLY, OutboxKind.NOTICE):
        return f"{message.reference}-{item.kind}"
    return f"{message.reference}-{'reorientation' if message.reorient else OutboxKind.AR.value}"


def _absolute(node: Any, base: Path) -> Any:
    if isinstance(node, dict):
        return {
            key: str((base / value).resolve())
            if key in PATH_KEYS and isinstance(value, str) and not Path(value).is_absolute()
            else _absolute(value, base)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_absolute(value, base) for value in node]
    return node


def write_config(source: Path, out: Path, database: str) -> Path:
    """``out/rules.yaml``: ``source`` with the demo's database and absolute paths."""
    data = yamlfile.safe_load(source.read_text(encoding="utf-8"))
    base = source.resolve().parent
    data = _absolute(data, base)
    data["database"] = database
    for key, default in (("templates", "templates"), ("agents", "agents.yaml")):
        value = Path(data.get(key) or default)
        data[key] = str(value if value.is_absolute() else (base / value).resolve())
    target = out / "rules.yaml"
    header = (
        f"# Written by `mailbot demo` from {source.resolve()}: the demo's database and\n"
        "# absolute paths. Try: mailbot --config " + str(target) + " indicators --from … --to …\n"
    )
    target.write_text(
        header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return target
