"""Rules and model together, in one stated rule, and how sure the result is.

For services and categories alike: a strong rule that matched decides alone; otherwise each
label's score is ``w × its rule points / (all positive rule points + d) + (1 − w) × the
model's probability`` (w = ``rule_weight``, d = ``rule_damping``: a single weak rule hit
is not certainty), and the highest score wins. When no rule fired at all, the mailbox's
own service stands for the rules with a share of ``default_share`` (the citizen chose that
mailbox; a full share outweighed any model and kept every mail no rule recognised there),
and the category is the model's alone. The decision's confidence is the winning score's
share of all the labels' scores (how far it stands above the others). A service decision
below its bar (``min_confidence_by_service`` for the service moved to, else
``min_confidence``) that would move the mail (a transfer or a re-orientation) is not
carried out: the mail stays with its mailbox's own service, marked *to check*. The complaint
category, which feeds the Qual-e-pref indicators, is given only when its score is
``complaint_min_confidence`` or above **and** the model says "a complaint against the
prefecture" with a probability of ``complaint_model_min`` or above, else the next category;
and it is given whatever the other scores when the model says so at ``complaint_model_sure``
or above (the rules read words, and a complaint is often written in the words of a
question). That probability is the binary complaint head's times the service head's
probability that the mail belongs to a service that may take a complaint (guide § 3: a
complaint about another administration is re-oriented as ``autre``, a plea to the préfet is
the cabinet's): the look-alikes that cost precision are written in a complaint's words.

Round 6, a learned combiner (stacking): when the model's header holds it, **strong rules
decide; otherwise a logistic regression over the model's log-probabilities, the rules' points
and the mailbox decides the service when it is at least as sure as that service's hold bar,
and the hand-set rule above decides when it is not** (a move it makes below its bar is held
to check, as before). The regression is trained on out-of-fold answers (models that had not
seen the mail) by ``mailbot routing train``; its confidence is its probability of the service
chosen. Regressions for the category and for "a complaint against the prefecture" are read
the same way when a header holds them (``heads``); the shipped model has the service's only
(``app/stacking.STACKED``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from mailbot.config import RoutingConfig, RoutingModelConfig
from mailbot.core.classifier import COMPLAINT_YES, Prediction


@dataclass(frozen=True)
class Combined:
    label: str
    confidence: float
    scores: Mapping[str, float]
    refused: frozenset[str] = frozenset()  # labels below their own bar, never to be chosen

    @property
    def allowed_scores(self) -> dict[str, float]:
        """The scores of the labels that may still be chosen (for routing.allowed_category)."""
        return {k: v for k, v in self.scores.items() if k not in self.refused}


def rule_shares(points: Mapping[str, int], damping: float) -> dict[str, float]:
    """Each label's positive rule points as a share of all of them plus the damping."""
    positive = {label: float(p) for label, p in points.items() if p > 0}
    total = sum(positive.values()) + damping
    return {label: p / total for label, p in positive.items()} if total > 0 else {}


def combine(
    points: Mapping[str, int],
    model: Prediction | None,
    settings: RoutingModelConfig,
    fallback: str,
    refused: frozenset[str] = frozenset(),
    fallback_share: float | None = None,
) -> Combined:
    """The best label by the stated rule; ``refused`` labels (below their own bar) skipped.
    ``fallback_share``: the default's share when no rule fired (None: ``default_share``)."""
    shares = rule_shares(points, settings.rule_damping)
    probabilities = model.as_dict() if model is not None else {}
    weight = settings.rule_weight if model is not None else 1.0
    share = settings.default_share if fallback_share is None else fallback_share
    if not shares and model is None and fallback:
        shares = {fallback: 1.0}  # no rule and no model: the mailbox's default
    elif not shares and share > 0 and fallback:
        shares = {fallback: share}
    elif not shares:
        weight = 0.0  # no rule at all: the model decides alone
    # In a fixed order, not a set's: ``share_of`` sums the scores in this order, and a set of
    # strings iterates in an order that changes with each process's hash seed (the routing
    # helper's decisions must be the worker's to the bit, app/routing_pool).
    labels = sorted(set(shares) | set(probabilities))
    scores = {
        label: weight * shares.get(label, 0.0) + (1 - weight) * probabilities.get(label, 0.0)
        for label in labels
    }
    ranked = sorted(scores, key=lambda label: (-scores[label], label))
    best = next((label for label in ranked if label not in refused), ranked[0])
    rounded = {k: round(scores[k], 4) for k in ranked}
    return Combined(best, round(share_of(scores, best), 4), rounded, refused)


def hold_bar(settings: RoutingModelConfig, service: str) -> float:
    """The confidence below which a move to ``service`` is held "to check": per service,
    since a service's wrong guesses are not as sure as another's (chosen by k-fold)."""
    return settings.min_confidence_by_service.get(service, settings.min_confidence)


def complaint_probability(said: Mapping[str, Prediction], config: RoutingConfig) -> float | None:
    """The model's probability that a mail is a complaint against the prefecture: the
    complaint head's "complaint" times the service head's share for the services whose
    allowed categories (``routing.combinations``) include the complaint category. A mail
    complaining about a mairie or the CAF reads like a complaint; only the service head
    knows it goes elsewhere. None: the model has no complaint head."""
    gate = said.get("complaint")
    if gate is None:
        return None
    service = said["service"]
    elsewhere = sum(
        service.probability(name)
        for name, allowed in config.combinations.items()
        if config.complaint_category not in allowed
    )
    return round(gate.probability(COMPLAINT_YES) * max(0.0, 1.0 - elsewhere), 4)


def share_of(scores: Mapping[str, float], label: str) -> float:
    """``label``'s score as a share of all the positive scores: the decision's confidence."""
    total = sum(v for v in scores.values() if v > 0)
    return scores[label] / total if total > 0 else 0.0


def category(
    points: Mapping[str, int],
    model: Prediction | None,
    settings: RoutingModelConfig,
    fallback: str,
    complaint: str,
    complaint_probability: float | None = None,
) -> Combined:
    """The category, the complaint one only when sure enough (a question counted as a
    complaint distorts the audit more than a complaint left as a question): its combined
    score and, with a complaint head in the model, that head's probability both pass — or
    that head alone is very sure (``complaint_model_sure``)."""
    first = combine(points, model, settings, fallback, fallback_share=0.0)
    sure = settings.complaint_model_sure
    if complaint_probability is not None and sure is not None and complaint_probability >= sure:
        return (
            first
            if first.label == complaint
            else Combined(complaint, complaint_probability, first.scores)
        )
    gated = complaint_probability is not None and (
        complaint_probability < settings.complaint_model_min
    )
    if first.label == complaint and first.scores[complaint] < settings.complaint_min_confidence:
        gated = True
    if gated:
        return combine(points, model, settings, fallback, frozenset({complaint}), 0.0)
    return first


# -- round 6: the learned combiner (stacking) ------------------------------------------------
# The model file's JSON header may hold, under "stack", one small logistic regression per
# decision (service, category, complaint), trained by mailbot.app.stacking on out-of-fold
# answers: its inputs are the model heads' log-probabilities, the rules' points (log1p) and
# the mailbox, named one by one as (kind, label) pairs so that the order is the file's.
FLOOR = 1e-4  # a probability's floor before its log (the heads' answers are rounded to 1e-4)
INPUT_KINDS = (
    "service",
    "category",
    "complaint",
    "service_points",
    "category_points",
    "mailbox",
    "language",
    "foreign_service",
)


@dataclass(frozen=True)
class Stacked:
    """One decision's logistic regression over the heads' answers, the rules and the mailbox."""

    classes: tuple[str, ...]
    inputs: tuple[tuple[str, str], ...]  # (kind, label) per column
    coef: npt.NDArray[np.float64]  # (classes, inputs); binary: one row, for classes[1]
    intercept: npt.NDArray[np.float64]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stacked:
        return cls(
            tuple(data["classes"]),
            tuple((str(kind), str(label)) for kind, label in data["inputs"]),
            np.asarray(data["coef"], dtype=np.float64),
            np.asarray(data["intercept"], dtype=np.float64),
        )

    def probabilities(self, evidence: Evidence) -> dict[str, float]:
        """Each class's probability (softmax; a binary regression's sigmoid)."""
        z = self.coef @ stack_inputs(self.inputs, evidence) + self.intercept
        if len(self.classes) == 2 and len(z) == 1:
            z = np.array([0.0, z[0]])
        z = np.exp(z - z.max())
        probs = z / z.sum()
        return {label: float(p) for label, p in zip(self.classes, probs, strict=True)}


@dataclass(frozen=True)
class Evidence:
    """What a mail's stacked decisions read: the heads' answers, the rules' points per service
    and per category, the service that owns the mailbox it came to, and the mail's language
    (the model learned from far fewer mails in other languages than in French)."""

    said: Mapping[str, Prediction]
    service_points: Mapping[str, int]
    category_points: Mapping[str, int]
    own: str
    language: str = ""

    @property
    def foreign(self) -> bool:
        """Written in a language other than French (an unknown language counts as French:
        most mails too short to tell are)."""
        return self.language not in ("", "fr")

    @cached_property
    def answers(self) -> dict[str, dict[str, float]]:
        """Each head's probabilities by label (read by the three regressions)."""
        return {name: prediction.as_dict() for name, prediction in self.said.items()}


def stack_inputs(inputs: Sequence[tuple[str, str]], evidence: Evidence) -> npt.NDArray[np.float64]:
    """The regression's input vector: log-probabilities of the heads' classes (floored), the
    complaint head's log-odds, log(1 + rule points), the mailbox's service as 0/1, a foreign
    language as 0/1 and the service head's log-probabilities again for a foreign mail only
    (0 for French: the regression may trust the head less there). The same function builds
    the training rows (mailbot.app.stacking) and production's."""
    answers = evidence.answers
    values = []
    for kind, label in inputs:
        if kind in ("service", "category"):
            values.append(math.log(max(answers[kind].get(label, 0.0), FLOOR)))
        elif kind == "complaint":
            p = min(max(answers.get(kind, {}).get(COMPLAINT_YES, 0.0), FLOOR), 1 - FLOOR)
            values.append(math.log(p / (1 - p)))
        elif kind == "language":
            values.append(1.0 if evidence.foreign else 0.0)
        elif kind == "foreign_service":
            p = max(answers["service"].get(label, 0.0), FLOOR)
            values.append(math.log(p) if evidence.foreign else 0.0)
        elif kind in ("service_points", "category_points"):
            service = kind == "service_points"
            points = evidence.service_points if service else evidence.category_points
            values.append(math.log1p(max(points.get(label, 0), 0)))
        else:  # mailbox
            values.append(1.0 if evidence.own == label else 0.0)
    return np.array(values, dtype=np.float64)


_STACKS: dict[int, tuple[Mapping[str, Any], dict[str, Stacked]]] = {}


def stacks(meta: Mapping[str, Any]) -> dict[str, Stacked]:
    """The stacked regressions of a model's header (none: the hand-set combination), read
    once per model (the header is kept with them, so its id is not reused)."""
    found = _STACKS.get(id(meta))
    if found is None or found[0] is not meta:
        if len(_STACKS) > 8:
            _STACKS.clear()
        parsed = {name: Stacked.from_json(data) for name, data in meta.get("stack", {}).items()}
        found = _STACKS[id(meta)] = (meta, parsed)
    return found[1]


def stacked(
    regression: Stacked, evidence: Evidence, refused: frozenset[str] = frozenset()
) -> Combined:
    """The regression's most probable label not ``refused``; its probability is the confidence."""
    probs = regression.probabilities(evidence)
    ranked = sorted(probs, key=lambda label: (-probs[label], label))
    best = next((label for label in ranked if label not in refused), ranked[0])
    rounded = {k: round(probs[k], 4) for k in ranked}
    return Combined(best, round(probs[best], 4), rounded, refused)


def over_mailbox(service: Combined, own: str) -> Combined:
    """A move's confidence as its lead over staying: the probability of the service moved to
    less that of the mailbox's own service (holding a mail keeps it there, so a move is worth
    what it gains over that; a mail the mailbox's service surely does not own is moved on a
    smaller probability than one it may well own). A mail kept at its mailbox: unchanged."""
    if service.label == own:
        return service
    lead = service.scores[service.label] - service.scores.get(own, 0.0)
    return Combined(service.label, round(max(lead, 0.0), 4), service.scores, service.refused)


def stacked_category(
    regression: Stacked,
    evidence: Evidence,
    settings: RoutingModelConfig,
    complaint: str,
    complaint_probability: float | None,
) -> Combined:
    """The stacked category under the complaint bars of ``category``: the complaint category
    only when the complaint probability reaches ``complaint_model_min`` and the category
    regression ranks it first with ``complaint_min_confidence``, or the complaint probability
    alone reaches ``complaint_model_sure``."""
    first = stacked(regression, evidence)
    sure = settings.complaint_model_sure
    p = complaint_probability
    if p is not None and sure is not None and p >= sure:
        return first if first.label == complaint else Combined(complaint, p, first.scores)
    gated = p is not None and p < settings.complaint_model_min
    if first.label == complaint and first.confidence < settings.complaint_min_confidence:
        gated = True
    return stacked(regression, evidence, frozenset({complaint})) if gated else first


def heads(
    evidence: Evidence,
    meta: Mapping[str, Any],
    settings: RoutingModelConfig,
    config: RoutingConfig,
    defaults: tuple[str, str],
) -> tuple[Combined, Combined, float | None]:
    """(service, category, complaint probability) for a mail, before strong rules: the
    stacked regressions when the model has them, else the hand-set combination above."""
    found = stacks(meta)
    said, (fallback, default_category) = evidence.said, defaults
    service = stacked(found["service"], evidence) if "service" in found else None
    if service is not None and meta.get("hold_on") == "margin":
        service = over_mailbox(service, evidence.own)
    weak = service is not None and service.confidence < hold_bar(settings, service.label)
    if service is None or (weak and service.label != evidence.own):
        # not sure enough to move the mail by itself: the hand-set rule, held if it moves it
        service = combine(evidence.service_points, said["service"], settings, fallback)
    if "complaint" in found:
        gate: float | None = round(found["complaint"].probabilities(evidence)[COMPLAINT_YES], 4)
    else:
        gate = complaint_probability(said, config)
    if "category" in found:
        category_ = stacked_category(
            found["category"], evidence, settings, config.complaint_category, gate
        )
    else:
        category_ = category(
            evidence.category_points,
            said["category"],
            settings,
            default_category,
            config.complaint_category,
            gate,
        )
    return service, category_, gate
