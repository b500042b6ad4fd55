"""Which service handles a message, in which category: rules as data, decisions explained.

Rules come from rules.yaml (``routing.rules``) and are compiled once into plain objects
with precompiled regexes. ``decide`` is pure. Every rule that matches adds its score to
its service and to its category; the highest total wins, ties going to the earlier rule.
Scoring, rather than first-match, is what lets a specific phrase ("passeport talent",
"attente au guichet") outweigh a generic word ("passeport", "titre") without having to
order hundreds of rules perfectly. With no match, the mailbox's default applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailbot.config import (
    REORIENT_SERVICE,
    Condition,
    ImplicitDecision,
    RoutingConfig,
    RoutingModelConfig,
    RoutingRule,
)
from mailbot.core.keywords import KeywordMatcher, Words, normalize, phrase_pattern
from mailbot.core.routing_text import RoutingText

# The learned half (numpy) only where a model is loaded or combined: the worker's routing
# helper decides from the start, and its parent process need not import it (issue 14
# point 9, app/routing_pool).
if TYPE_CHECKING:
    from mailbot.core.classifier import Classifier


@dataclass(frozen=True)
class RoutingInput:
    """The facts about a message that rules can test. Built by the caller from ParsedMessage."""

    mailbox: str
    subject: str
    body: str
    sender: str
    language: str | None
    has_attachment: bool
    form_fields: Mapping[str, str] = field(default_factory=dict)
    quoted: str = ""  # quoted replies and forwarded text below the citizen's own (``body``)


@dataclass(frozen=True)
class RuleHit:
    rule: str
    matched: bool
    detail: str = ""


@dataclass(frozen=True)
class RoutingDecision:
    service: str
    category: str
    priority: str
    reorient: str | None
    transfer_allowed: bool
    rule_hits: tuple[RuleHit, ...]
    scores: Mapping[str, int]
    defaulted: bool
    # With a model (routing.model): how sure, what it said, and whether to hold the mail.
    to_check: bool = False
    confidence: Mapping[str, float] = field(default_factory=dict)
    model: Mapping[str, list[tuple[str, float]]] = field(default_factory=dict)
    category_scores: Mapping[str, int] = field(default_factory=dict)
    strong: tuple[str, ...] = ()  # the strong rules that decided

    def recorded_service(self, own: str) -> str:
        """The service the message is recorded under: a weak decision ("to check") keeps
        it at its mailbox's own service (``own``), the suggestion kept aside."""
        return own if self.to_check else self.service

    @property
    def actions(self) -> list[str]:
        done = [f"route:{self.service}", f"category:{self.category}"]
        if self.priority != "normal":
            done.append(f"priority:{self.priority}")
        if self.reorient and not self.to_check:
            done.append(f"reorient:{self.reorient}")
        if self.to_check:
            done.append("to-check")
        if not self.transfer_allowed:
            done.append("no-transfer")
        return done


Test = Callable[["Reading"], tuple[str, ...] | None]  # the distinct matches, or None
MAX_EVIDENCE = 3  # a rule's score counts once per distinct matched phrase, up to this
WHERE = ("subject", "body", "quoted", "both")  # the texts a keyword list reads


def _keywords_regex(phrases: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted({phrase_pattern(p) for p in phrases if normalize(p)}, key=len)
    return re.compile(r"(?<!\w)(?:" + "|".join(reversed(alternatives)) + r")(?!\w)")


class Reading:
    """One mail as the rules read it: each text normalised once, and every keyword list
    on a text found in one scan (mailbot.core.keywords), when a rule first asks."""

    def __init__(self, msg: RoutingInput, matchers: Mapping[str, KeywordMatcher]) -> None:
        self.msg = msg
        self._matchers = matchers
        self._words: dict[str, Words] = {}
        self._found: dict[str, dict[int, tuple[str, ...]]] = {}

    def words(self, where: str) -> Words:
        if where not in self._words:
            if where == "both":
                self._words[where] = self.words("subject").joined(self.words("body"))
            else:
                self._words[where] = Words.read(getattr(self.msg, where))
        return self._words[where]

    def keywords(self, where: str, list_id: int) -> tuple[str, ...] | None:
        if where not in self._found:
            self._found[where] = self._matchers[where].scan(self.words(where))
        return self._found[where].get(list_id)


def _compile_condition(cond: Condition, matchers: Mapping[str, KeywordMatcher]) -> Test:
    if cond.keywords is not None:
        where = cond.in_
        list_id = matchers[where].add(cond.keywords)
        return lambda reading: reading.keywords(where, list_id)
    if cond.regex is not None:
        regex, where = re.compile(cond.regex, re.IGNORECASE), cond.in_

        def matches(reading: Reading) -> tuple[str, ...] | None:
            msg = reading.msg
            text = {"subject": msg.subject, "body": msg.body, "quoted": msg.quoted}.get(where)
            found = regex.search(text if text is not None else msg.subject + "\n" + msg.body)
            return (found.group(0),) if found else None

        return matches
    if cond.sender is not None:
        return _sender_test(cond.sender)
    if cond.mailbox is not None:
        boxes = set(cond.mailbox)
        return lambda r: (r.msg.mailbox,) if r.msg.mailbox in boxes else None
    if cond.language is not None:
        langs = set(cond.language)
        return lambda r: (r.msg.language,) if r.msg.language in langs else None
    if cond.has_attachment is not None:
        wanted = cond.has_attachment
        return lambda r: ("attachment",) if r.msg.has_attachment == wanted else None
    if cond.form_field is not None:
        return _form_field_test(cond.form_field.name, cond.form_field.keywords)
    return _combination(cond, matchers)


def _sender_test(patterns: Sequence[str]) -> Test:
    exact = {p.lower() for p in patterns if not p.startswith("@")}
    domains = {p.lower().lstrip("@") for p in patterns if p.startswith("@")}

    def sender(reading: Reading) -> tuple[str, ...] | None:
        address = reading.msg.sender.lower()
        domain = address.rsplit("@", 1)[-1]
        hit = address in exact or any(domain == d or domain.endswith("." + d) for d in domains)
        return (address,) if hit else None

    return sender


def _form_field_test(name: str, phrases: Sequence[str]) -> Test:
    key, pattern = normalize(name), _keywords_regex(phrases)

    def form_field(reading: Reading) -> tuple[str, ...] | None:
        value = reading.msg.form_fields.get(key)
        found = pattern.search(normalize(value)) if value else None
        return (f"{name}: {found.group(0)}",) if found else None

    return form_field


def _combination(cond: Condition, matchers: Mapping[str, KeywordMatcher]) -> Test:
    if cond.all is not None:
        parts = [_compile_condition(c, matchers) for c in cond.all]

        def all_of(reading: Reading) -> tuple[str, ...] | None:
            found = [part(reading) for part in parts]
            if not all(found):
                return None
            return (" + ".join(", ".join(f) for f in found if f),)  # one piece of evidence

        return all_of
    if cond.any is not None:
        options = [_compile_condition(c, matchers) for c in cond.any]

        def any_of(reading: Reading) -> tuple[str, ...] | None:
            return next((f for option in options if (f := option(reading))), None)

        return any_of
    assert cond.not_ is not None
    inner = _compile_condition(cond.not_, matchers)
    return lambda reading: None if inner(reading) else ("not",)


@dataclass(frozen=True)
class CompiledRule:
    rule: RoutingRule
    test: Test
    missed: RuleHit  # the hit of a mail it does not match, made once (most rules, most mails)


@dataclass(frozen=True)
class CompiledRouting:
    config: RoutingConfig
    rules: tuple[CompiledRule, ...]
    own_service: Mapping[str, str]  # mailbox -> the service that owns it
    general_service: str  # when no rule matches and the mailbox has no default
    model: Classifier | None = None
    matchers: Mapping[str, KeywordMatcher] = field(default_factory=dict)


def compile_routing(
    config: RoutingConfig,
    own_service: Mapping[str, str],
    general_service: str,
    model: Classifier | None = None,
) -> CompiledRouting:
    matchers = {where: KeywordMatcher() for where in WHERE}
    rules = tuple(
        CompiledRule(rule, _compile_condition(rule.when, matchers), RuleHit(rule.id, False))
        for rule in config.rules
    )
    return CompiledRouting(config, rules, dict(own_service), general_service, model, matchers)


def _best(scores: Mapping[str, int], order: Mapping[str, int]) -> str | None:
    if not scores:
        return None
    return max(scores, key=lambda key: (scores[key], -order[key]))


@dataclass
class _Tally:
    """What the rules said about one mail: points per service, category and target."""

    hits: list[RuleHit] = field(default_factory=list)
    services: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    reorient: dict[str, int] = field(default_factory=dict)
    first_seen: dict[str, int] = field(default_factory=dict)
    strong_service: tuple[str, str | None] | None = None  # (service, target)
    strong_category: str | None = None
    strong: list[str] = field(default_factory=list)
    priority: str = "normal"
    no_transfer: bool = False

    def add(self, index: int, rule: RoutingRule, weight: int) -> None:
        if rule.reorient:
            # Several other administrations mentioned do not add up against a service.
            self.reorient[rule.reorient] = self.reorient.get(rule.reorient, 0) + weight
            self.services[REORIENT_SERVICE] = max(self.reorient.values())
            self.first_seen.setdefault(REORIENT_SERVICE, index)
        elif rule.service:
            self.services[rule.service] = self.services.get(rule.service, 0) + weight
            self.first_seen.setdefault(rule.service, index)
        if rule.category:
            self.categories[rule.category] = self.categories.get(rule.category, 0) + weight
            self.first_seen.setdefault(rule.category, index)
        if rule.strong:
            self._strong(rule)
        if rule.priority == "urgent":
            self.priority = "urgent"
        self.no_transfer = self.no_transfer or rule.no_transfer

    def _strong(self, rule: RoutingRule) -> None:
        decided = False
        if self.strong_service is None and (rule.service or rule.reorient):
            target = REORIENT_SERVICE if rule.reorient else rule.service
            assert target is not None
            self.strong_service, decided = (target, rule.reorient), True
        if self.strong_category is None and rule.category:
            self.strong_category, decided = rule.category, True
        if decided:
            self.strong.append(rule.id)


def rule_tally(msg: RoutingInput, routing: CompiledRouting) -> _Tally:
    tally, reading = _Tally(), Reading(msg, routing.matchers)
    for index, compiled in enumerate(routing.rules):
        found = compiled.test(reading)
        if found is None:
            tally.hits.append(compiled.missed)
            continue
        rule = compiled.rule
        tally.hits.append(RuleHit(rule.id, True, ", ".join(dict.fromkeys(found))))
        tally.add(index, rule, rule.score * min(len(found), MAX_EVIDENCE))
        if rule.stop:
            break
    return tally


def decide(msg: RoutingInput, routing: CompiledRouting) -> RoutingDecision:
    """Score every rule; strong rules decide; else rules (and the model, when configured)
    give the best service and the best category, independently."""
    tally = rule_tally(msg, routing)
    default = routing.config.defaults.get(msg.mailbox)
    own = routing.own_service.get(msg.mailbox)
    settings = routing.config.model
    if settings is not None and routing.model is not None:
        return _with_model(msg, routing, tally, settings, routing.model)
    service = _best(tally.services, tally.first_seen) or (
        default.service if default else routing.general_service
    )
    category = _best(tally.categories, tally.first_seen) or (
        default.category if default else "autre"
    )
    if tally.strong_service is not None:
        service = tally.strong_service[0]
    category = tally.strong_category or category
    category = allowed_category(routing.config, service, category, tally.categories)
    return _decision(tally, service, category, _target(tally, service), own)


def allowed_category(
    config: RoutingConfig, service: str, category: str, scores: Mapping[str, float]
) -> str:
    """``category`` if the guide allows it for ``service`` (routing.combinations), else the
    best-scored allowed one, else information, else autre: a re-oriented mail is never
    counted as a complaint against the prefecture, a reception mail never as a question."""
    allowed = config.combinations.get(service)
    if not allowed or category in allowed:
        return category
    scored = [c for c in allowed if scores.get(c, 0) > 0]
    if scored:
        return max(scored, key=lambda c: scores[c])
    return next((c for c in ("information", "autre") if c in allowed), allowed[0])


def _target(tally: _Tally, service: str) -> str | None:
    if service != REORIENT_SERVICE:
        return None
    if tally.strong_service is not None and tally.strong_service[1]:
        return tally.strong_service[1]
    return max(tally.reorient, key=lambda k: tally.reorient[k]) if tally.reorient else None


def _decision(
    tally: _Tally,
    service: str,
    category: str,
    target: str | None,
    own: str | None,
    **extra: Any,
) -> RoutingDecision:
    to_check = bool(extra.get("to_check"))
    return RoutingDecision(
        service=service,
        category=category,
        priority=tally.priority,
        reorient=target,
        transfer_allowed=not tally.no_transfer
        and not to_check
        and service not in {own, REORIENT_SERVICE},
        rule_hits=tuple(tally.hits),
        scores=dict(sorted(tally.services.items(), key=lambda kv: -kv[1])),
        defaulted=not tally.services,
        category_scores=dict(sorted(tally.categories.items(), key=lambda kv: -kv[1])),
        strong=tuple(tally.strong),
        **extra,
    )


def _with_model(
    msg: RoutingInput,
    routing: CompiledRouting,
    tally: _Tally,
    settings: RoutingModelConfig,
    model: Classifier,
) -> RoutingDecision:
    """The stated combination (mailbot.core.combine) and the confidence that gates moving a mail."""
    from mailbot.core.combine import Evidence, heads, hold_bar

    default = routing.config.defaults.get(msg.mailbox)
    own = routing.own_service.get(msg.mailbox)
    said = model.classify(msg.subject, RoutingText(msg.body, msg.quoted))
    evidence = Evidence(said, tally.services, tally.categories, own or "", msg.language or "")
    defaults = (default.service, default.category) if default else ("", "")
    service, category, gate = heads(evidence, model.meta, settings, routing.config, defaults)
    chosen_service, service_confidence = service.label, service.confidence
    if tally.strong_service is not None:
        chosen_service, service_confidence = tally.strong_service[0], 1.0
    chosen_category, category_confidence = category.label, category.confidence
    if tally.strong_category is not None:
        chosen_category, category_confidence = tally.strong_category, 1.0
    chosen_category = allowed_category(
        routing.config, chosen_service, chosen_category, category.allowed_scores
    )
    target = _target(tally, chosen_service)
    if chosen_service == REORIENT_SERVICE and target is None and "reorient" in said:
        target = said["reorient"].classes[0]
    moves = chosen_service != own
    weak = service_confidence < hold_bar(settings, chosen_service)
    return _decision(
        tally,
        chosen_service,
        chosen_category,
        target,
        own,
        to_check=moves and (weak or (chosen_service == REORIENT_SERVICE and target is None)),
        confidence={
            "service": service_confidence,
            "category": category_confidence,
            **({"complaint": gate} if gate is not None else {}),
        },
        model={name: prediction.top(3) for name, prediction in said.items()},
    )


def implicit_decision(
    config: RoutingConfig, own: str, decision: RoutingDecision
) -> ImplicitDecision | None:
    """The implicit decision (CRPA L112-11) a routed mail's AR announces: the one the
    prefecture declared for the service and category the mail is recorded under
    (``routing.implicit_decisions``). None for a mail re-oriented to another
    administration (its reply is no AR of a request the prefecture decides), and when
    nothing is declared."""
    if decision.reorient and not decision.to_check:
        return None
    return config.implicit_decision(decision.recorded_service(own), decision.category)


FORM_FIELD = re.compile(r"^\s*([A-Za-zÀ-ÿ' ]{2,30}?)\s*:\s*(.+?)\s*$", re.MULTILINE)


def form_fields(body: str) -> dict[str, str]:
    """The "Champ : valeur" lines of a contact-form mail, by normalized field name."""
    fields: dict[str, str] = {}
    for name, value in FORM_FIELD.findall(body):
        fields.setdefault(normalize(name), value)
    return fields
