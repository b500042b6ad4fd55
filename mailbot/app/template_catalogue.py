"""The template catalogue as agents and editors browse it: list (by service, with the
translations and their review), preview one with an agent's signature, check them all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailbot.app import maintenance
from mailbot.config import Agent, Config
from mailbot.errors import ConfigError
from mailbot.render.catalogue import TemplateMeta
from mailbot.render.checks import check_all
from mailbot.render.rendering import RenderedMail
from mailbot.render.templates import Renderer
from mailbot.render.translations import TargetGap
from mailbot.render.variables import agent_variables

__all__ = ["check_all", "languages", "listing", "matches", "preview"]


def matches(meta: TemplateMeta, service: str | None, language: str | None) -> bool:
    if language and meta.language != language:
        return False
    return not service or not meta.scope.services or service in meta.scope.services


def listing(
    renderer: Renderer, service: str | None = None, language: str | None = None
) -> list[dict[str, Any]]:
    rows = []
    for name in renderer.names():
        meta = renderer.meta(name)
        if matches(meta, service, language):
            scope = (
                "; ".join(
                    part
                    for part in (
                        "boîtes " + ", ".join(meta.scope.mailboxes) if meta.scope.mailboxes else "",
                        "services " + ", ".join(meta.scope.services) if meta.scope.services else "",
                    )
                    if part
                )
                or "tous"
            )
            rows.append(
                {
                    "name": name,
                    "title": meta.title,
                    "scope": scope,
                    "language": meta.language,
                    "translated": bool(meta.translated),
                    "variables": [*meta.required, *(f"[{v}]" for v in meta.optional)],
                }
            )
    return rows


def languages(renderer: Renderer) -> list[dict[str, Any]]:
    """The translations, and whether a native speaker has reviewed each one."""
    return [
        {
            "language": t.language,
            "name": t.name,
            "direction": t.direction,
            "reviewed": t.reviewed,
            "reviewer": t.reviewer,
        }
        for t in renderer.translations.values()
    ]


def preview(
    config: Config,
    renderer: Renderer,
    name: str,
    variables: Mapping[str, object],
    agent: tuple[str, Agent | None] | None = None,
) -> RenderedMail:
    """A template rendered with its meta.yaml examples, overridden by ``variables``, and
    signed by ``agent`` (its id and profile; None when agents.yaml has no such agent)."""
    values: dict[str, object] = dict(renderer.meta(name).examples())
    values.update(variables)
    if agent is not None:
        agent_id, profile = agent
        if profile is None:
            raise ConfigError(str(config.agents), f"agents.{agent_id}", "no such agent")
        values["agent"] = agent_variables(profile, config)
    return renderer.render(name, values)


@dataclass(frozen=True)
class DirectoryCheck:
    """Each template's problems (name -> problems; none: correct), and the translation
    files' gaps in the re-orientation targets' names (warnings, not failures)."""

    problems: dict[str, list[str]]
    gaps: list[TargetGap]


def check_directory(config: Config) -> DirectoryCheck:
    """``mailbot templates check`` on the template directory as it is on disk now (a fresh
    renderer: an edit made since the start is seen), its warnings included."""
    renderer = Renderer(config.templates, timezone=config.timezone, full_check=True)
    return DirectoryCheck(check_all(renderer), maintenance.translation_gaps(config, renderer))
