"""A set of mails scored as ``mailbot explain`` would route them (``Scored``: expected and
decided labels, what was moved or held), a routing with another model or none, and the rule
by which ``routing train`` refuses a model that does worse than the rules alone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mailbot.app.stacking import Answers
from mailbot.app.training_samples import Sample
from mailbot.config import RoutingModelConfig
from mailbot.core.classifier import Classifier
from mailbot.core.routing import CompiledRouting, RoutingDecision, decide


# -- evaluation --------------------------------------------------------------------------
@dataclass
class Scored:
    """Expected and decided labels of a set of mails, and what was done with them."""

    services: list[tuple[str, str]] = field(default_factory=list)
    categories: list[tuple[str, str]] = field(default_factory=list)
    moved: list[bool] = field(default_factory=list)  # transferred or re-oriented
    to_check: list[bool] = field(default_factory=list)
    mailboxes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # each mail's folder (``by_source``)
    # (expected, the service the mail is recorded at): a held mail stays at its mailbox's own
    # service (app/mail_row), so a right guess held "to check" is not yet a right routing.
    landed: list[tuple[str, str]] = field(default_factory=list)
    # (expected, decided) re-orientation target ("" for none, or not labelled): a mail
    # re-oriented to the CAF instead of the mairie has the right service, the wrong place.
    targets: list[tuple[str, str]] = field(default_factory=list)

    def add(self, sample: Sample, decision: RoutingDecision, own: str | None) -> None:
        self.services.append((sample.service, decision.service))
        held_at = own if decision.to_check and own else decision.service
        self.landed.append((sample.service, held_at))
        self.categories.append((sample.category, decision.category))
        self.moved.append(decision.service != own and not decision.to_check)
        self.to_check.append(decision.to_check)
        self.mailboxes.append(sample.facts.mailbox)
        self.sources.append(Path(sample.source).name)
        self.targets.append((sample.reorient, decision.reorient or ""))

    @property
    def count(self) -> int:
        return len(self.services)

    def accuracy(self, which: str) -> float:
        """``service`` (the service decided, held or not), ``landed`` (where the mail is
        recorded: held mail at its mailbox's service) or ``category``."""
        pairs = {"service": self.services, "landed": self.landed}.get(which, self.categories)
        return sum(e == g for e, g in pairs) / len(pairs) if pairs else 0.0

    @property
    def wrong_transfers(self) -> int:
        """Mails moved automatically (transfer or re-orientation) to the wrong place: the
        wrong service, or the right one (autres-administrations) but the wrong
        administration, when the mail's labels name it (tests/data/routing does not)."""
        return sum(
            moved and (service[0] != service[1] or target[0] not in ("", target[1]))
            for moved, service, target in zip(self.moved, self.services, self.targets, strict=True)
        )

    def part(self, keep: Sequence[bool]) -> Scored:
        """The same figures for the mails ``keep`` marks (in the order they were added)."""
        found = Scored()
        for name in SCORED_FIELDS:
            mine = getattr(self, name)
            getattr(found, name).extend(x for x, kept in zip(mine, keep, strict=True) if kept)
        return found

    def by_source(self) -> dict[str, Scored]:
        """The figures of each source folder apart (a writer's mails under grouped folds)."""
        return {
            name: self.part([s == name for s in self.sources]) for name in sorted(set(self.sources))
        }

    def precision_recall(self, label: str, which: str = "category") -> tuple[float, float]:
        pairs = self.categories if which == "category" else self.services
        tp = sum(e == g == label for e, g in pairs)
        decided = sum(g == label for _, g in pairs)
        expected = sum(e == label for e, _ in pairs)
        return (tp / decided if decided else 1.0, tp / expected if expected else 1.0)


def worse_than_rules(combined: Scored, alone: Scored) -> list[str]:
    """What the model makes worse than the rules alone on the same mails (``routing train``
    refuses it then): the service where each mail is recorded — the rules alone hold nothing,
    so theirs is where their mails land, while a mail the model holds "to check" stays at its
    mailbox's service whatever it guessed — and the category."""
    pairs = (("service", "landed"), ("category", "category"))
    return [name for name, which in pairs if combined.accuracy(which) < alone.accuracy(which)]


SCORED_FIELDS = (
    "services",
    "categories",
    "moved",
    "to_check",
    "mailboxes",
    "sources",
    "landed",
    "targets",
)


def with_model(
    routing: CompiledRouting,
    model: Classifier | Answers | None,
    settings: RoutingModelConfig | None,
) -> CompiledRouting:
    """The same rules with another model (or none: the rules alone)."""
    config = routing.config.model_copy(update={"model": settings if model else None})
    return replace(routing, config=config, model=model)  # type: ignore[arg-type]  # Answers


def score(samples: Iterable[Sample], routing: CompiledRouting) -> Scored:
    scored = Scored()
    for sample in samples:
        decision = decide(sample.facts, routing)
        scored.add(sample, decision, routing.own_service.get(sample.facts.mailbox))
    return scored
