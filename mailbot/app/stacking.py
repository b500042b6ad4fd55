"""The learned combiner (round 6): stacked regressions over a model's out-of-fold answers
and the rules' points, written in the model's header; ``Answers``, a model's answers
replayed so that they are scored without refitting it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mailbot.app.model_fit import sample_weights
from mailbot.app.training_samples import Sample, facts_text
from mailbot.core.classifier import COMPLAINT_NO, COMPLAINT_YES, Classifier, Prediction
from mailbot.core.routing import CompiledRouting

# -- round 6: the learned combiner (stacking) ---------------------------------------------
# Each stacked decision's inputs, by kind (mailbot.core.combine.stack_inputs): the heads'
# log-probabilities, the complaint head's log-odds, the rules' points and the mailbox.
STACK_INPUTS: dict[str, tuple[str, ...]] = {
    "service": ("service", "service_points", "mailbox"),
    "category": ("category", "category_points", "service", "complaint", "mailbox"),
    "complaint": ("complaint", "category", "category_points", "service", "mailbox"),
}
STACK_C = 1.0  # the stacked regressions' inverse regularisation (scripts/tune_stacking.py)
# The decisions stacked in the shipped model: the service only. Stacked, the category and the
# complaint bar did no better than the hand-set rule beyond the folds' noise (the complaint
# regression lost recall at the same precision): tests/data/corpus/PLAN.md, round 6.
STACKED = ("service",)


@dataclass(frozen=True)
class Answers:
    """A model's answers recorded per mail (subject, own text, quoted text) and replayed, with
    a header of its own: the stacked regressions are scored on out-of-fold answers without
    refitting the model."""

    said: dict[tuple[str, str, str], dict[str, Prediction]]
    meta: dict[str, Any] = field(default_factory=dict)

    def classify(self, subject: str, text: Any) -> dict[str, Prediction]:
        return self.said[subject, text.own, text.quoted]


def answered(
    samples: Sequence[Sample], said: dict[int, dict[str, Prediction]], meta: dict[str, Any]
) -> Any:
    """An ``Answers`` holding ``said`` (sample index → a model's answers) as a model."""
    replay = {}
    for i, answer in said.items():
        text = facts_text(samples[i].facts)
        replay[samples[i].facts.subject, text.own, text.quoted] = answer
    return Answers(replay, meta)


def evidence(sample: Sample, said: dict[str, Prediction], routing: CompiledRouting) -> Any:
    """What the stacked decisions read of a mail (combine.Evidence), and the rules' tally."""
    from mailbot.core.combine import Evidence
    from mailbot.core.routing import rule_tally

    tally = rule_tally(sample.facts, routing)
    own = routing.own_service.get(sample.facts.mailbox, "")
    return Evidence(said, tally.services, tally.categories, own, sample.facts.language or ""), tally


def stack_columns(
    name: str,
    said: dict[str, Prediction],
    owners: Iterable[str],
    kinds: Mapping[str, Sequence[str]] | None = None,
) -> list[Any]:
    """The (kind, label) inputs of the stacked decision ``name``, in a fixed order."""
    labels = {
        "service": sorted(said["service"].classes),
        "category": sorted(said["category"].classes),
        "complaint": [""],
        "service_points": sorted(said["service"].classes),
        "category_points": sorted(said["category"].classes),
        "mailbox": sorted(set(owners)),
        "language": ["foreign"],
        "foreign_service": sorted(said["service"].classes),
    }
    return [
        (kind, label)
        for kind in (kinds or STACK_INPUTS)[name]
        if kind != "complaint" or "complaint" in said
        for label in labels[kind]
    ]


def fit_stacks(
    samples: Sequence[Sample],
    said: dict[int, dict[str, Prediction]],
    routing: CompiledRouting,
    c: float = STACK_C,
    complaint: str = "reclamation",
    names: Sequence[str] = STACKED,
    kinds: Mapping[str, Sequence[str]] | None = None,
    source_weights: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The stacked regressions (JSON, for the model's header) trained on out-of-fold answers
    ``said`` (sample index → answers): the service one on the mails no strong rule sends, the
    category and complaint ones on those no strong rule categorises. ``kinds``: the inputs
    (default ``STACK_INPUTS``); ``source_weights``: as ``fit``'s."""
    from sklearn.linear_model import LogisticRegression

    from mailbot.core.combine import stack_inputs

    first = next(iter(said.values()))
    found: dict[str, Any] = {}
    for name in names:
        if name == "complaint" and "complaint" not in first:
            continue
        columns = stack_columns(name, first, routing.own_service.values(), kinds)
        rows, labels, kept = [], [], []
        for i, answer in said.items():
            seen, tally = evidence(samples[i], answer, routing)
            if tally.strong_service if name == "service" else tally.strong_category:
                continue
            rows.append(stack_inputs(columns, seen))
            kept.append(samples[i])
            label = samples[i].category if name != "service" else samples[i].service
            if name == "complaint":
                label = COMPLAINT_YES if label == complaint else COMPLAINT_NO
            labels.append(label)
        weights = sample_weights(kept, source_weights) if source_weights else None
        fitted = LogisticRegression(C=c, max_iter=2000).fit(
            np.vstack(rows), labels, sample_weight=weights
        )
        found[name] = {
            "classes": [str(x) for x in fitted.classes_],
            "inputs": [list(column) for column in columns],
            "coef": np.round(fitted.coef_, 6).tolist(),
            "intercept": np.round(fitted.intercept_, 6).tolist(),
        }
    return found


def stacked(model: Classifier, stacks: dict[str, Any]) -> Classifier:
    """``model`` with the stacked regressions in its header (``fit_stacks``)."""
    return replace(model, meta={**model.meta, "stack": stacks})
