"""The routing rules as they were before the one-pass keyword matcher (issue 14, point 5),
kept verbatim as the reference that tests/test_routing_matcher.py compares the new code with.

Not used by mailbot. Only the module docstring differs from mailbot/core/routing.py at
commit 4fdfaf1, and ``_with_model`` follows the combination of today's routing (issue 13
round 3: the complaint head's gate, refused labels kept out of allowed_category; round 5:
the probability of a complaint against the prefecture; round 6: the stacked regressions,
``combine.heads``) so that the matcher is the only difference under test.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mailbot.config import (
    REORIENT_SERVICE,
    Condition,
    RoutingConfig,
    RoutingModelConfig,
    RoutingRule,
)
from mailbot.core.classifier import Classifier
from mailbot.core.combine import Evidence, heads, hold_bar
from mailbot.core.routing_text import RoutingText


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


Test = Callable[[RoutingInput], tuple[str, ...] | None]  # the distinct matches, or None
MAX_EVIDENCE = 3  # a rule's score counts once per distinct matched phrase, up to this


@lru_cache(maxsize=64)  # every rule reads the same few texts of the mail in hand
def normalize(text: str) -> str:
    """Lower case, no accents, punctuation as spaces: "Carte GRISE !" → "carte grise"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w]+", " ", stripped).split())


def _phrase_pattern(phrase: str) -> str:
    """Words in order, each tolerating a plural ending (s, x) — "carte grise" ~ "cartes grises"."""
    words = normalize(phrase).split()
    return r"\s+".join(re.escape(word) + r"(?:s|x|es)?" for word in words)


def _keywords_regex(phrases: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted({_phrase_pattern(p) for p in phrases if normalize(p)}, key=len)
    return re.compile(r"(?<!\w)(?:" + "|".join(reversed(alternatives)) + r")(?!\w)")


def _texts(where: str) -> Callable[[RoutingInput], str]:
    if where == "subject":
        return lambda msg: normalize(msg.subject)
    if where == "body":
        return lambda msg: normalize(msg.body)
    if where == "quoted":
        return lambda msg: normalize(msg.quoted)
    return lambda msg: _both(msg.subject, msg.body)


@lru_cache(maxsize=16)
def _stems(normalized: str) -> frozenset[str]:
    """Every word of a text, also without a plural ending: the words a keyword may start
    with (a cheap test that spares most keyword regexes most mails)."""
    words = set(normalized.split())
    for word in list(words):
        for ending in ("es", "s", "x"):
            if word.endswith(ending):
                words.add(word[: -len(ending)])
    return frozenset(words)


@lru_cache(maxsize=16)
def _both(subject: str, body: str) -> str:
    return normalize(subject) + " \n " + normalize(body)


def _compile_condition(cond: Condition) -> Test:
    if cond.keywords is not None:
        pattern, text = _keywords_regex(cond.keywords), _texts(cond.in_)
        firsts = frozenset(normalize(p).split()[0] for p in cond.keywords if normalize(p))

        def keywords(msg: RoutingInput) -> tuple[str, ...] | None:
            normalized = text(msg)
            if firsts.isdisjoint(_stems(normalized)):  # no phrase can start here: skip
                return None
            found = tuple(dict.fromkeys(pattern.findall(normalized)))
            return found or None

        return keywords
    if cond.regex is not None:
        regex, where = re.compile(cond.regex, re.IGNORECASE), cond.in_

        def matches(msg: RoutingInput) -> tuple[str, ...] | None:
            text = {"subject": msg.subject, "body": msg.body, "quoted": msg.quoted}.get(where)
            found = regex.search(text if text is not None else msg.subject + "\n" + msg.body)
            return (found.group(0),) if found else None

        return matches
    if cond.sender is not None:
        return _sender_test(cond.sender)
    if cond.mailbox is not None:
        boxes = set(cond.mailbox)
        return lambda msg: (msg.mailbox,) if msg.mailbox in boxes else None
    if cond.language is not None:
        langs = set(cond.language)
        return lambda msg: (msg.language,) if msg.language in langs else None
    if cond.has_attachment is not None:
        wanted = cond.has_attachment
        return lambda msg: ("attachment",) if msg.has_attachment == wanted else None
    if cond.form_field is not None:
        return _form_field_test(cond.form_field.name, cond.form_field.keywords)
    return _combination(cond)


def _sender_test(patterns: Sequence[str]) -> Test:
    exact = {p.lower() for p in patterns if not p.startswith("@")}
    domains = {p.lower().lstrip("@") for p in patterns if p.startswith("@")}

    def sender(msg: RoutingInput) -> tuple[str, ...] | None:
        address = msg.sender.lower()
        domain = address.rsplit("@", 1)[-1]
        hit = address in exact or any(domain == d or domain.endswith("." + d) for d in domains)
        return (address,) if hit else None

    return sender


def _form_field_test(name: str, phrases: Sequence[str]) -> Test:
    key, pattern = normalize(name), _keywords_regex(phrases)

    def form_field(msg: RoutingInput) -> tuple[str, ...] | None:
        value = msg.form_fields.get(key)
        found = pattern.search(normalize(value)) if value else None
        return (f"{name}: {found.group(0)}",) if found else None

    return form_field


def _combination(cond: Condition) -> Test:
    if cond.all is not None:
        parts = [_compile_condition(c) for c in cond.all]

        def all_of(msg: RoutingInput) -> tuple[str, ...] | None:
            found = [part(msg) for part in parts]
            if not all(found):
                return None
            return (" + ".join(", ".join(f) for f in found if f),)  # one piece of evidence

        return all_of
    if cond.any is not None:
        options = [_compile_condition(c) for c in cond.any]

        def any_of(msg: RoutingInput) -> tuple[str, ...] | None:
            return next((f for option in options if (f := option(msg))), None)

        return any_of
    assert cond.not_ is not None
    inner = _compile_condition(cond.not_)
    return lambda msg: None if inner(msg) else ("not",)


@dataclass(frozen=True)
class CompiledRule:
    rule: RoutingRule
    test: Test


@dataclass(frozen=True)
class CompiledRouting:
    config: RoutingConfig
    rules: tuple[CompiledRule, ...]
    own_service: Mapping[str, str]  # mailbox -> the service that owns it
    general_service: str  # when no rule matches and the mailbox has no default
    model: Classifier | None = None


def compile_routing(
    config: RoutingConfig,
    own_service: Mapping[str, str],
    general_service: str,
    model: Classifier | None = None,
) -> CompiledRouting:
    rules = tuple(CompiledRule(rule, _compile_condition(rule.when)) for rule in config.rules)
    return CompiledRouting(config, rules, dict(own_service), general_service, model)


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


def _tally(msg: RoutingInput, routing: CompiledRouting) -> _Tally:
    tally = _Tally()
    for index, compiled in enumerate(routing.rules):
        rule = compiled.rule
        found = compiled.test(msg)
        detail = ", ".join(dict.fromkeys(found or ()))
        tally.hits.append(RuleHit(rule.id, found is not None, detail))
        if found is None:
            continue
        tally.add(index, rule, rule.score * min(len(found), MAX_EVIDENCE))
        if rule.stop:
            break
    return tally


def decide(msg: RoutingInput, routing: CompiledRouting) -> RoutingDecision:
    """Score every rule; strong rules decide; else rules (and the model, when configured)
    give the best service and the best category, independently."""
    tally = _tally(msg, routing)
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
    default = routing.config.defaults.get(msg.mailbox)
    own = routing.own_service.get(msg.mailbox)
    said = model.classify(msg.subject, RoutingText(msg.body, msg.quoted))
    evidence = Evidence(said, tally.services, tally.categories, own or "")  # as now (round 6)
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


FORM_FIELD = re.compile(r"^\s*([A-Za-zÀ-ÿ' ]{2,30}?)\s*:\s*(.+?)\s*$", re.MULTILINE)


def form_fields(body: str) -> dict[str, str]:
    """The "Champ : valeur" lines of a contact-form mail, by normalized field name."""
    fields: dict[str, str] = {}
    for name, value in FORM_FIELD.findall(body):
        fields.setdefault(normalize(name), value)
    return fields
