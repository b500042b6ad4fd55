"""Who is logged in: agents.yaml is the directory, re-read when it changes.

The session holds only the agent's id and how they logged in; every request looks the agent
up again, so an agent removed from agents.yaml (or whose role changed) is out at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from mailbot.config import Agent, Config, load_agents
from mailbot.errors import ConfigError
from mailbot.web.authz import Action, Role, allowed, services_for

log = logging.getLogger(__name__)

ROLE_LABELS = {
    Role.AGENT: "Agent",
    Role.HEAD: "Chef de service",
    Role.QUALITY: "Mission qualité",
    Role.ADMIN: "Administrateur",
}


@dataclass(frozen=True)
class Principal:
    """The agent behind a request, as the pages and the policy see them."""

    agent_id: str
    first_name: str
    last_name: str
    email: str | None
    role: Role
    services: tuple[str, ...]
    method: str  # "oidc" or "local"

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip() or self.agent_id

    @property
    def role_label(self) -> str:
        return ROLE_LABELS[self.role]

    def can(self, action: Action, service: str | None = None) -> bool:
        return allowed(self.role, self.services, action, service)

    def services_for(self, action: Action, known: list[str]) -> tuple[str, ...]:
        return services_for(self.role, self.services, action, known)


class AgentDirectory:
    """agents.yaml, reloaded when its modification time changes. A file that no longer
    loads raises ConfigError: the console fails closed rather than serve a stale list."""

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.config = config
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._agents: dict[str, Agent] = {}

    def agents(self) -> dict[str, Agent]:
        try:
            stat = self.path.stat()
        except OSError as exc:  # removed or renamed: as a file that does not load
            raise ConfigError(str(self.path), "", f"cannot read file: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._agents = load_agents(self.path, self.config)
                self._stamp = stamp
                log.info("agents loaded", extra={"count": len(self._agents)})
            return self._agents

    def get(self, agent_id: str) -> Agent | None:
        return self.agents().get(agent_id)

    def find(self, login: str) -> str | None:
        """The agent id for a login typed in the form: an agent id or an e-mail address."""
        login = login.strip().lower()
        agents = self.agents()
        if login in agents:
            return login
        return self.by_email(login)

    def by_email(self, email: str) -> str | None:
        email = email.strip().lower()
        for agent_id, agent in self.agents().items():
            if agent.email is not None and agent.email == email:
                return agent_id
        return None

    def principal(self, agent_id: str, method: str) -> Principal | None:
        agent = self.get(agent_id)
        if agent is None:
            return None
        return Principal(
            agent_id=agent_id,
            first_name=agent.first_name or "",
            last_name=agent.last_name or "",
            email=agent.email,
            role=Role(agent.role),
            services=agent.console_services,
            method=method,
        )
