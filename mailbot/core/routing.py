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
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mailbot.config import REORIENT_SERVICE, Condition, RoutingConfig, RoutingRule


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

    @property
    def actions(self) -> list[str]:
        done = [f"route:{self.service}", f"category:{self.category}"]
        if self.priority != "normal":
            done.append(f"priority:{self.priority}")
        if self.reorient:
            done.append(f"reorient:{self.reorient}")
        if not self.transfer_allowed:
            done.append("no-transfer")
        return done


Test = Callable[[RoutingInput], tuple[str, ...] | None]  # the distinct matches, or None
MAX_EVIDENCE = 3  # a rule's score counts once per distinct matched phrase, up to this


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
    return lambda msg: normalize(msg.subject) + " \n " + normalize(msg.body)


def _compile_condition(cond: Condition) -> Test:
    if cond.keywords is not None:
        pattern, text = _keywords_regex(cond.keywords), _texts(cond.in_)

        def keywords(msg: RoutingInput) -> tuple[str, ...] | None:
            found = tuple(dict.fromkeys(pattern.findall(text(msg))))
            return found or None

        return keywords
    if cond.regex is not None:
        regex, where = re.compile(cond.regex, re.IGNORECASE), cond.in_

        def matches(msg: RoutingInput) -> tuple[str, ...] | None:
            text = {"subject": msg.subject, "body": msg.body}.get(where)
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


def compile_routing(
    config: RoutingConfig, own_service: Mapping[str, str], general_service: str
) -> CompiledRouting:
    rules = tuple(CompiledRule(rule, _compile_condition(rule.when)) for rule in config.rules)
    return CompiledRouting(config, rules, dict(own_service), general_service)


def _best(scores: Mapping[str, int], order: Mapping[str, int]) -> str | None:
    if not scores:
        return None
    return max(scores, key=lambda key: (scores[key], -order[key]))


def decide(msg: RoutingInput, routing: CompiledRouting) -> RoutingDecision:
    """Score every rule; the best service and the best category win independently."""
    hits: list[RuleHit] = []
    services: dict[str, int] = {}
    categories: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    priority, no_transfer = "normal", False
    reorient: dict[str, int] = {}
    for index, compiled in enumerate(routing.rules):
        rule = compiled.rule
        found = compiled.test(msg)
        hits.append(RuleHit(rule.id, found is not None, ", ".join(dict.fromkeys(found or ()))))
        if found is None:
            continue
        weight = rule.score * min(len(found), MAX_EVIDENCE)
        target = REORIENT_SERVICE if rule.reorient else rule.service
        if rule.reorient:
            # Several other administrations mentioned do not add up against a service.
            reorient[rule.reorient] = reorient.get(rule.reorient, 0) + weight
            services[REORIENT_SERVICE] = max(reorient.values())
            first_seen.setdefault(REORIENT_SERVICE, index)
        elif target:
            services[target] = services.get(target, 0) + weight
            first_seen.setdefault(target, index)
        if rule.category:
            categories[rule.category] = categories.get(rule.category, 0) + weight
            first_seen.setdefault(rule.category, index)
        if rule.priority == "urgent":
            priority = "urgent"
        no_transfer = no_transfer or rule.no_transfer
        if rule.stop:
            break
    default = routing.config.defaults.get(msg.mailbox)
    service = _best(services, first_seen) or (
        default.service if default else routing.general_service
    )
    category = _best(categories, first_seen) or (default.category if default else "autre")
    target = max(reorient, key=lambda k: reorient[k]) if service == REORIENT_SERVICE else None
    own = routing.own_service.get(msg.mailbox)
    return RoutingDecision(
        service=service,
        category=category,
        priority=priority,
        reorient=target,
        transfer_allowed=not no_transfer and service not in {own, REORIENT_SERVICE},
        rule_hits=tuple(hits),
        scores=dict(sorted(services.items(), key=lambda kv: -kv[1])),
        defaulted=not services,
    )


FORM_FIELD = re.compile(r"^\s*([A-Za-zÀ-ÿ' ]{2,30}?)\s*:\s*(.+?)\s*$", re.MULTILINE)


def form_fields(body: str) -> dict[str, str]:
    """The "Champ : valeur" lines of a contact-form mail, by normalized field name."""
    fields: dict[str, str] = {}
    for name, value in FORM_FIELD.findall(body):
        fields.setdefault(normalize(name), value)
    return fields
