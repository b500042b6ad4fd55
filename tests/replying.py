"""Test setups for agents' replies, now that the use case (``app.reply.allowed``) refuses
what the console never offered: a reply on the mail of a service the agent does not handle,
or with a template whose scope keeps it from the message's service. Tests written before
that replied as any agent, with any template, on a mail of the general mailbox: these put
the agents and the mail where such a reply is allowed, their assertions unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rulesfile import dump_rules, load_rules

from mailbot.app.context import App
from mailbot.app.requests import AgentLookup
from mailbot.cli import main
from mailbot.mail.display import Attachment
from mailbot.mail.imap import FetchedMail


def agents_everywhere(config: Path, role: str | None = None) -> None:
    """The configuration's agents handle every service (agents.yaml's ``services``), with
    ``role`` if given: ``"head"`` for tests that transfer, correct or give a message to a
    colleague as any agent, written before the use cases asked a head of the message's
    service for that (REASSIGN)."""
    data = load_rules(config)
    agents_file = Path(data["agents"])
    agents = yaml.safe_load(agents_file.read_text(encoding="utf-8"))
    for agent in agents["agents"].values():
        agent["services"] = list(data["services"])
        if role is not None:
            agent["role"] = role
    copy = config.parent / "agents-everywhere.yaml"
    copy.write_text(yaml.safe_dump(agents, allow_unicode=True), encoding="utf-8")
    data["agents"] = str(copy)
    config.write_text(dump_rules(data), encoding="utf-8")


def everywhere(app: App) -> AgentLookup:
    """``app.agent``, each agent handling every service."""
    services = list(app.config.services)

    def lookup(agent_id: str) -> object:
        agent = app.agent(agent_id)
        return None if agent is None else agent.model_copy(update={"services": services})

    return lookup  # type: ignore[return-value]


def routed(config: Path, reference: str, service: str) -> None:
    """The message re-routed to ``service`` (``mailbot correct``: nothing is sent)."""
    args = ["--config", str(config), "correct", reference, "--service", service]
    assert main([*args, "--category", "information"]) == 0


class Originals:
    """The citizen's mail, as the server would give it again."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def fetch(self, row: Any) -> FetchedMail:
        return FetchedMail(row.uid, row.received_at, self.raw, len(self.raw))

    def attachment(self, row: Any, index: int) -> tuple[Attachment, bytes]:
        raise NotImplementedError  # a transfer attaches the whole mail
