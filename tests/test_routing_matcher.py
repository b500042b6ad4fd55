"""The one-pass keyword matcher decides exactly as the per-rule regexes did (issue 14, 5).

`routing_reference.py` is the routing module as it was before; both run here on every
labelled mail of the project (the corpus's dev, test and train folders and the regression
set), with the shipped rules and model and with the rules alone, and a deterministic part
of them on variants that move text between subject, body and quoted part (``moved_about``).
Every field of the decision must be the same: service, category, to-check, each rule's hit
and matched text, scores, confidence.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import routing_reference as reference

from mailbot.app.training_samples import Sample, load_labelled
from mailbot.config import load_config
from mailbot.core import keywords, routing
from mailbot.core.classifier import Classifier
from mailbot.core.facts import compiled_routing
from mailbot.core.keywords import KeywordMatcher, Words, fold, normalize, phrase_pattern
from mailbot.core.routing import RoutingInput
from mailbot.core.routing_text import RoutingText

ROOT = Path(__file__).resolve().parent.parent
CONFIG = load_config(ROOT / "rules.yaml")
FOLDERS = ["corpus/dev", "corpus/test", "corpus/train", "routing"]


@lru_cache(maxsize=1)
def samples() -> list[Sample]:
    return [s for f in FOLDERS for s in load_labelled(CONFIG, ROOT / "tests" / "data" / f)]


class Remembering:
    """The model, each answer kept: both routings ask it the same question for a mail
    (the combination is under test here, not the model), and the second gets the first's
    answer instead of the model's second identical computation."""

    def __init__(self, model: Classifier) -> None:
        self._model = model
        self._said: dict[tuple[str, RoutingText], Any] = {}

    def classify(self, subject: str, text: RoutingText) -> Any:
        key = (subject, text)
        if key not in self._said:
            self._said = {key: self._model.classify(subject, text)}  # the last mail's only
        return self._said[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


_tally_of = reference._tally
_tallies: dict[tuple[tuple[Any, ...], int], Any] = {}


def _remembered_tally(msg: RoutingInput, routing: Any) -> Any:
    """The old rules' tally of a mail (every rule's hit, the points), computed once per
    mail and rules: each mail and variant is decided with the model and with the rules
    alone, and the regex rules are most of this module's CPU (4 ms a mail). It is a pure function of the mail and the rules, never changed once
    made (``decide`` only reads it): the same answer as computing it again. Today's
    routing still decides every mail every time."""
    values = (getattr(msg, f.name) for f in fields(msg))  # every field, the form's as pairs
    mail = tuple(tuple(v.items()) if isinstance(v, Mapping) else v for v in values)
    key = (mail, id(routing.config))  # both old routings compile the one CONFIG.routing
    if key not in _tallies:
        _tallies[key] = _tally_of(msg, routing)
    return _tallies[key]


reference._tally = _remembered_tally  # routing_reference is this module's alone


@lru_cache(maxsize=2)
def routings(with_model: bool) -> tuple[Any, Any]:
    new = compiled_routing(CONFIG)
    assert new is not None and CONFIG.routing is not None
    model = Remembering(new.model) if with_model and new.model is not None else None
    new = routing.compile_routing(CONFIG.routing, new.own_service, new.general_service, model)
    old = reference.compile_routing(CONFIG.routing, new.own_service, new.general_service, model)
    return old, new


def as_plain(decision: Any) -> dict[str, Any]:
    plain = {f.name: getattr(decision, f.name) for f in fields(decision)}
    plain["rule_hits"] = [(h.rule, h.matched, h.detail) for h in decision.rule_hits]
    return plain


def variants(facts: RoutingInput) -> list[RoutingInput]:
    """The mail, and its texts moved about: a phrase across the subject/body join, quoted
    rules on a body, a body in capitals, another mailbox."""
    return [
        facts,
        replace(facts, subject=facts.body[:300], body=facts.quoted, quoted=facts.body),
        replace(facts, subject=facts.subject.upper(), body=facts.body.upper() * 3),
        replace(facts, mailbox="etrangers" if facts.mailbox == "general" else "general"),
    ]


def moved_about(every: list[Sample]) -> list[bool]:
    """Which mails are also decided moved about: every third one (426 of the 1,278, of
    every folder, service and category), and every mail with a quoted part (112), the
    ones whose first variant truly moves quoted text into the body and the body into the
    quoted part. All of them were moved about, without the model, when the matcher
    shipped (issue 14, 5) and until the corpus reached 1,278 mails; the regex rules take
    4 ms a mail and variant, so a mail moved about costs four times a plain one."""
    return [index % 3 == 0 or bool(s.facts.quoted.strip()) for index, s in enumerate(every)]


def test_every_labelled_mail_is_read() -> None:
    assert len(samples()) >= 1100
    assert sum(moved_about(samples())) >= 500


def test_decisions_identical_to_the_regex_rules() -> None:
    """Every labelled mail as it is, and the mails ``moved_about`` in each of their
    variants: each decided with the shipped model and with the rules alone, by the old
    rules and by the matcher (one test, so that both ways share the old rules' tally of
    each mail and the corpus is read once)."""
    both = [routings(with_model=True), routings(with_model=False)]
    differing = []
    for sample, moved in zip(samples(), moved_about(samples()), strict=True):
        for facts in variants(sample.facts) if moved else [sample.facts]:
            for old, new in both:
                before = as_plain(reference.decide(facts, old))
                after = as_plain(routing.decide(facts, new))
                if before != after:
                    differing.append((sample.name, before, after))
    assert differing == []


def old_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def test_fold_and_normalize_identical_to_the_character_loop() -> None:
    texts = [s.facts.subject + "\n" + s.facts.body + s.facts.quoted for s in samples()]
    texts.append("".join(chr(c) for c in range(0x20, 0x3000)))  # Latin to CJK punctuation
    texts += ["ÉTÉ ﬁn Straße İstanbul ǅ ㎏ Å", "plain ascii, Mixed CASE_words 42", ""]
    for text in texts:
        assert fold(text) == old_fold(text)
        assert normalize(text) == reference.normalize(text)


def test_a_list_keeps_the_leftmost_then_longest_phrase() -> None:
    matcher = KeywordMatcher()
    first = matcher.add(["carte", "carte grise", "grise"])
    other = matcher.add(["grise", "carte grise de"])
    found = matcher.scan(Words.of("mes cartes grises de la carte grise"))
    assert found[first] == ("cartes grises", "carte grise")
    assert found[other] == ("cartes grises de", "grise")


def test_a_phrase_across_subject_and_body_reads_as_before() -> None:
    words = Words.of("ma carte").joined(Words.of("grise"))
    matcher = KeywordMatcher()
    wanted = matcher.add(["carte grise"])
    assert matcher.scan(words) == {wanted: ("carte \n grise",)}


@pytest.mark.parametrize(
    "phrase", ["carte", "Carte GRISE !", "titre de séjour", "ŒUVRE d'art", "n°_42 x", "ﬁn 3ᵉ"]
)
def test_phrases_are_ranked_by_their_pattern_length_without_building_it(phrase: str) -> None:
    """The matcher orders a list's phrases by the length of their regex, computed from the
    words (start-up, issue 14 point 9): the same as the regex's own length."""
    words = tuple(normalize(phrase).split())
    assert keywords._pattern_length(words) == len(phrase_pattern(phrase))


def test_equal_length_phrases_keep_the_regex_alternation_order() -> None:
    """Phrases of one pattern length: the later one in the list is tried first, as in
    ``reversed(sorted(patterns, key=len))``; a repeated phrase keeps its first place."""
    matcher = KeywordMatcher()
    wanted = matcher.add(["ab", "cd", "ab", "abcd"])
    found = matcher.scan(Words.of("ab cd abcd"))
    assert found[wanted] == ("ab", "cd", "abcd")
    assert [p.rank for p in matcher._index()[0]["cd"]] == [1]
    assert [p.rank for p in matcher._index()[0]["ab"]] == [2]
    assert [p.rank for p in matcher._index()[0]["abcd"]] == [0]
