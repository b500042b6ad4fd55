"""agents.yaml: each agent's profile (signature, role, services), checked against the
configured services; never cached, for it names people."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from mailbot.config.base import Email, Model
from mailbot.config.loading import read_yaml, validation_problem
from mailbot.errors import ConfigError

if TYPE_CHECKING:
    from mailbot.config.root import Config

AgentRole = Literal["agent", "head", "quality", "admin"]


class Agent(Model):
    """An agent's profile. Elements may be missing here: rendering a reply then refuses,
    naming what is missing, so an incomplete signature is never sent."""

    first_name: str | None = None
    last_name: str | None = None
    function: str | None = None
    service: str
    email: Email | None = None
    # The web console: what the agent may do, on which services (default: their service).
    role: AgentRole = "agent"
    services: list[str] | None = None

    @property
    def console_services(self) -> tuple[str, ...]:
        return tuple(self.services) if self.services is not None else (self.service,)


class AgentsFile(Model):
    agents: dict[str, Agent]


def load_agents(path: str | Path, config: Config) -> dict[str, Agent]:
    """Load agents.yaml; each agent's service must be a configured service."""
    path = Path(path)
    # Not cached: the agents' names and addresses would stay in the cache directory after
    # an agent is removed from the file (yamlcache keeps every version it parsed).
    data = read_yaml(path, cached=False)
    try:
        agents = AgentsFile.model_validate(data if data is not None else {}).agents
    except ValidationError as exc:
        raise ConfigError(str(path), *validation_problem(exc)) from None
    known = ", ".join(sorted(config.services))
    owners: dict[str, str] = {}
    for agent_id, agent in agents.items():
        for index, service in [(None, agent.service), *enumerate(agent.services or [])]:
            if service not in config.services:
                key = f"agents.{agent_id}.service" + ("" if index is None else f"s[{index}]")
                raise ConfigError(str(path), key, f"unknown service {service!r} (known: {known})")
        if agent.email is not None:
            if agent.email in owners:
                raise ConfigError(
                    str(path),
                    f"agents.{agent_id}.email",
                    f"{agent.email} is already agent {owners[agent.email]}'s address"
                    " (the console matches agents by e-mail)",
                )
            owners[agent.email] = agent_id
    return agents
