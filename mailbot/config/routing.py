"""``routing:``: the categories, the rules and their conditions, the re-orientation
targets, the learned model beside the rules, and the implicit decisions the ARs announce."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailbot.config.base import Model, beside
from mailbot.core.keywords import normalize


class FormField(Model):
    """A field of the website contact form ("Objet : ..."), matched by keywords."""

    name: str
    keywords: list[str] = Field(min_length=1)


class Condition(Model):
    """One test on a message; exactly one kind per condition, combined with all/any/not."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    keywords: list[str] | None = None
    regex: str | None = None
    in_: Literal["subject", "body", "both", "quoted"] = Field(default="both", alias="in")
    sender: list[str] | None = None
    mailbox: list[str] | None = None
    language: list[str] | None = None
    has_attachment: bool | None = None
    form_field: FormField | None = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Condition:
        kinds = [
            name
            for name in CONDITION_KINDS
            if getattr(self, "not_" if name == "not" else name) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                f"a condition needs exactly one of {', '.join(CONDITION_KINDS)}"
                f" (got {', '.join(kinds) or 'none'})"
            )
        silent = [k for k in self.keywords or () if not normalize(k)]
        if silent:  # normalised to nothing: a rule that could never fire, said nowhere
            raise ValueError(f"keyword {silent[0]!r} has no letter or digit: it can never match")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        return self


CONDITION_KINDS = (
    "keywords",
    "regex",
    "sender",
    "mailbox",
    "language",
    "has_attachment",
    "form_field",
    "all",
    "any",
    "not",
)


class RoutingRule(Model):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    description: str | None = None
    when: Condition
    service: str | None = None
    category: str | None = None
    score: int = Field(default=10, ge=-1000, le=1000)  # negative: evidence against
    priority: Literal["normal", "urgent"] | None = None
    reorient: str | None = None
    no_transfer: bool = False
    stop: bool = False
    strong: bool = False  # decides its service/category alone (the first strong match)

    @model_validator(mode="after")
    def _does_something(self) -> RoutingRule:
        if not (self.service or self.category or self.priority or self.reorient):
            raise ValueError("a rule needs at least one of service, category, priority, reorient")
        return self


class ReorientTarget(Model):
    """Another administration: where to turn instead (not a service that receives mail)."""

    name: str
    website: str
    details: str


class MailboxDefault(Model):
    service: str
    category: str


SHIPPED_MODELS = Path(__file__).parent.parent / "models"


def _model_file(value: Path, info: ValidationInfo) -> Path:
    """A routing model named in rules.yaml: beside rules.yaml when it is there, else the
    one shipped in the package (mailbot/models/), so a copied rules.yaml still finds it."""
    local = beside(value, info)
    if local.is_file() or value.is_absolute() or not (SHIPPED_MODELS / value.name).is_file():
        return local
    return SHIPPED_MODELS / value.name


class RoutingModelConfig(Model):
    """The learned classifier beside the rules, and how its probabilities combine with them
    (README, "Routing"; mailbot/combine.py)."""

    file: Path
    rule_weight: float = Field(default=0.5, ge=0, le=1)
    rule_damping: float = Field(default=10, ge=0)
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    complaint_min_confidence: float = Field(default=0.5, ge=0, le=1)
    # The model's binary complaint head must say "complaint" with at least this probability
    # for the complaint category to be given (a model without that head: no such gate).
    complaint_model_min: float = Field(default=0.5, ge=0, le=1)
    # At this probability or above, the complaint head gives the complaint category even
    # against the rules' points (no strong rule, a service that may have it); None: never.
    complaint_model_sure: float | None = Field(default=None, ge=0, le=1)
    default_share: float = Field(default=1.0, ge=0, le=1)  # no rule: the mailbox's service's share
    min_confidence_by_service: dict[str, float] = Field(default_factory=dict)  # combine.hold_bar

    @field_validator("file")
    @classmethod
    def _file_beside_config(cls, value: Path, info: ValidationInfo) -> Path:
        return _model_file(value, info)


ImplicitOutcome = Literal["acceptation", "rejet"]
MAX_IMPLICIT_MONTHS = 24  # beyond two years, a slip of the keyboard more likely than a delay
_MONTHS = re.compile(r"^\s*(\d+)\s*mois\s*$", re.IGNORECASE)


def _months(value: Any) -> Any:
    """A delay in months: ``2`` or ``"2 mois"``; anything else is refused with its value
    (a week, a day or "deux mois" would be a guess)."""
    found = _MONTHS.match(value) if isinstance(value, str) else None
    months = int(found.group(1)) if found else value
    if isinstance(months, bool) or not isinstance(months, int):
        raise ValueError(f"expected a number of months, such as 2 or '2 mois' (got {value!r})")
    if not 1 <= months <= MAX_IMPLICIT_MONTHS:
        raise ValueError(f"expected 1 to {MAX_IMPLICIT_MONTHS} months (got {value!r})")
    return months


class ImplicitDecision(Model):
    """What the silence of the administration means for a request (CRPA L112-11,
    R112-11-1): accepted or rejected once ``delay`` months have passed since its receipt.
    Declared by the prefecture per service and category (``routing.implicit_decisions``);
    the AR then says so (templates/_partials/implicit_decision.*)."""

    decision: ImplicitOutcome
    delay: Annotated[int, BeforeValidator(_months)]  # months


class RoutingParallelConfig(Model):
    """Where the routing decisions are made (issue 14; app/routing_pool): by one helper
    process while the intake records the mails, on the machine's second core. ``processes:
    0`` decides every mail in-process. The worker (`run`, `poll`) starts it first and it
    decides every mail; elsewhere it is started for batches of at least ``min_batch``
    mails, and smaller ones never wait on its start."""

    processes: int = Field(default=1, ge=0, le=1)  # one helper outpaces the intake
    min_batch: int = Field(default=32, ge=1)


class RoutingConfig(Model):
    categories: list[str] = Field(min_length=1)
    # category → how agents read it in the console (« État d'avancement »); else the key.
    category_names: dict[str, str] = Field(default_factory=dict)
    complaint_category: str = "reclamation"
    defaults: dict[str, MailboxDefault]
    reorientation: dict[str, ReorientTarget] = Field(default_factory=dict)
    rules: list[RoutingRule] = Field(default_factory=list)
    model: RoutingModelConfig | None = None
    # service → the categories it may have (guide § 3); a service not listed allows all.
    combinations: dict[str, list[str]] = Field(default_factory=dict)
    parallel: RoutingParallelConfig = Field(default_factory=RoutingParallelConfig)
    # service → category → the implicit decision a request of that kind gives rise to
    # (CRPA L112-11: the AR says it); none declared: the ARs say nothing about silence.
    implicit_decisions: dict[str, dict[str, ImplicitDecision]] = Field(default_factory=dict)

    def implicit_decision(self, service: str, category: str) -> ImplicitDecision | None:
        """The declaration for a mail recorded under this service and category."""
        return self.implicit_decisions.get(service, {}).get(category)

    @model_validator(mode="after")
    def _rule_ids_are_unique(self) -> RoutingConfig:
        """An id names its rule in `explain`, the rule hits stored and the corrections: two
        rules with one id would be told apart nowhere."""
        first: dict[str, int] = {}
        for n, rule in enumerate(self.rules):
            if rule.id in first:
                raise ValueError(
                    f"routing.rules[{n}].id: duplicate id {rule.id!r}"
                    f" (first at routing.rules[{first[rule.id]}])"
                )
            first[rule.id] = n
        return self
