"""The vectorised routing model decides as today's did (issue 14, point 5).

``classifier_reference.py`` is the model's feature function and inference as they were;
``routing_reference.py`` the rules as they were. Every labelled mail of the project (the
corpus's dev, test and train folders and the regression set, read by code only), and each
of them run on to 3 KB, goes through both: the TF-IDF vector, each head's probabilities
(to 1e-6) and the decision (service, category, actions, hold, re-orientation, every
rule's hit) must agree. The shown probabilities are rounded to 4 decimals; the new sums
are taken in another order, so a probability within ~1e-7 of a rounding boundary may show
one step (1e-4) apart, as it already does between two CPUs running today's code.
"""

from __future__ import annotations

from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import classifier_reference as old_model
import numpy as np
import routing_reference
from mailbot.app.training import load_labelled
from mailbot.config import load_config
from mailbot.core import routing
from mailbot.core.classifier import Classifier, Prediction, model_text, raw_counts
from mailbot.core.facts import compiled_routing
from mailbot.core.routing import RoutingInput
from mailbot.core.routing_text import RoutingText

ROOT = Path(__file__).resolve().parent.parent
CONFIG = load_config(ROOT / "rules.yaml")
FOLDERS = ["corpus/dev", "corpus/test", "corpus/train", "routing"]
ROUNDING = 1e-4 + 1e-9  # one step of the 4-decimal rounding of shown probabilities


@lru_cache(maxsize=1)
def mails() -> list[RoutingInput]:
    """Every labelled mail, then each one run on with the next ones' bodies to 3 KB."""
    facts = [s.facts for f in FOLDERS for s in load_labelled(CONFIG, ROOT / "tests/data" / f)]
    bodies = [m.body for m in facts]
    long = []
    for i, mail in enumerate(facts):
        body, j = mail.body, i
        while len(body) < 3000:
            j += 1
            body += "\n\n" + bodies[j % len(bodies)]
        long.append(replace(mail, body=body[:3000]))
    return facts + long


@lru_cache(maxsize=1)
def model() -> Classifier:
    compiled = compiled_routing(CONFIG)
    assert compiled is not None and compiled.model is not None
    return compiled.model


class OldModel:
    """The shipped model's numbers through today's feature function and inference."""

    def __init__(self, model: Classifier) -> None:
        self.model = model

    def classify(self, subject: str, text: RoutingText) -> dict[str, Prediction]:
        return old_model.classify(self.model, subject, text)


def softmax(logits: Any) -> Any:
    exp = np.exp(np.asarray(logits, dtype=np.float64) - np.max(logits))
    return exp / exp.sum()


def test_every_labelled_mail_is_read() -> None:
    assert len(mails()) >= 2200


def test_the_training_features_are_today_s() -> None:
    """Training's feature function (``raw_counts`` of ``model_text``) is unchanged: the
    same counts in the same order, so a model trained with it reads as before."""
    for mail in mails()[::5]:
        text = RoutingText(mail.body, mail.quoted)
        words = model_text(mail.subject, text)
        assert words == old_model.model_text(mail.subject, text)
        assert list(raw_counts(*words).items()) == list(old_model.raw_counts(*words).items())


def test_vectors_and_probabilities_equal_today_s() -> None:
    loaded = model()
    for mail in mails():
        text = RoutingText(mail.body, mail.quoted)
        rows, values = old_model.vector(loaded, mail.subject, text)
        new_rows, new_values = loaded.vector(*model_text(mail.subject, text))
        assert sorted(rows.tolist()) == new_rows.tolist()
        assert np.allclose(values[np.argsort(rows)], new_values, rtol=0, atol=1e-6)
        new = loaded.logits(mail.subject, text)
        for name, head in loaded.heads.items():
            before = softmax(old_model.logits(head, rows, values))
            assert np.allclose(softmax(new[name]), before, rtol=0, atol=1e-6), name


def as_plain(decision: Any) -> dict[str, Any]:
    plain = {f.name: getattr(decision, f.name) for f in fields(decision)}
    plain["rule_hits"] = [(h.rule, h.matched, h.detail) for h in decision.rule_hits]
    plain["actions"] = decision.actions
    return plain


def probabilities_apart(before: dict[str, Any], after: dict[str, Any]) -> float:
    """The largest gap between the shown probabilities of two decisions (0 if none)."""
    gaps = [0.0]
    for name, top in before.pop("model").items():
        shown = dict(after["model"][name])
        gaps += [abs(p - shown.get(label, -1.0)) for label, p in top]
    after.pop("model")
    old, new = before.pop("confidence"), after.pop("confidence")
    assert old.keys() == new.keys()
    return max(gaps + [abs(old[k] - new[k]) for k in old])


def test_decisions_identical_to_today_s() -> None:
    """Service, category, actions (hence the hold flag), re-orientation, every rule's hit
    and scores the same on every mail; the shown probabilities at most one rounding step
    apart, and on nearly all mails the same."""
    loaded = model()
    assert CONFIG.routing is not None
    compiled = compiled_routing(CONFIG)
    assert compiled is not None
    parts = (CONFIG.routing, compiled.own_service, compiled.general_service)
    old = routing_reference.compile_routing(*parts, OldModel(loaded))  # type: ignore[arg-type]
    new = routing.compile_routing(*parts, loaded)
    apart = 0
    for mail in mails():
        before, after = as_plain(routing_reference.decide(mail, old)), as_plain(routing.decide(mail, new))
        gap = probabilities_apart(before, after)
        assert before == after
        assert gap <= ROUNDING
        apart += gap > 0
    assert apart <= len(mails()) // 50
