"""The vectorised routing model decides as today's did (issue 14, point 5).

``classifier_reference.py`` is the model's feature function and inference as they were
(tests/test_routing_matcher.py compares the rules with theirs). The labelled mails of the
project (the corpus's dev, test and train folders and the regression set, read by code
only), one in two, and one in eight run on to 3 KB, go through both: the TF-IDF vector and each
head's logits must be the same to the bit (the sums are taken in the same order: else a
probability shown to 4 decimals could differ by one step near a rounding boundary), and
so the whole decision: service, category, actions and hold, probabilities, rule hits.
"""

from __future__ import annotations

from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import classifier_reference as old_model

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


@lru_cache(maxsize=1)
def mails() -> list[RoutingInput]:
    """One labelled mail in two, then one in eight run on with the next bodies to 3 KB (the
    whole set doubles the time for no other kind of mail)."""
    every = [s.facts for f in FOLDERS for s in load_labelled(CONFIG, ROOT / "tests/data" / f)]
    bodies = [m.body for m in every]
    facts = every[::2]
    long = []
    for i, mail in list(enumerate(every))[::8]:
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
        self.meta = model.meta  # its header (round 6: the stacked service regression)
        self.vector: Any = None  # the last mail's, for the test to compare

    def classify(self, subject: str, text: RoutingText) -> dict[str, Prediction]:
        self.vector = rows, values = old_model.vector(self.model, subject, text)
        return {name: old_model.predict(h, rows, values) for name, h in self.model.heads.items()}


def test_half_the_labelled_mails_are_read() -> None:
    assert len(mails()) >= 790


def test_the_training_features_are_today_s() -> None:
    """Training's feature function (``raw_counts`` of ``model_text``) is unchanged: the
    same counts in the same order, so a model trained with it reads as before."""
    regression = load_labelled(CONFIG, ROOT / "tests/data/routing")  # a small set of its own
    for mail in [s.facts for s in regression]:
        text = RoutingText(mail.body, mail.quoted)
        words = model_text(mail.subject, text)
        assert words == old_model.model_text(mail.subject, text)
        assert list(raw_counts(*words).items()) == list(old_model.raw_counts(*words).items())


def as_plain(decision: Any) -> dict[str, Any]:
    plain = {f.name: getattr(decision, f.name) for f in fields(decision)}
    plain["rule_hits"] = [(h.rule, h.matched, h.detail) for h in decision.rule_hits]
    plain["actions"] = decision.actions
    return plain


def test_same_vectors_and_logits_to_the_bit_and_same_decisions() -> None:
    """On every mail: the TF-IDF vector and each head's logits equal today's to the bit;
    the decision (service, category, actions hence the hold flag, re-orientation, the
    model's shown probabilities and confidence, every rule's hit) the same."""
    loaded = model()
    compiled = compiled_routing(CONFIG)
    assert compiled is not None and CONFIG.routing is not None
    parts = (CONFIG.routing, compiled.own_service, compiled.general_service)
    reference = OldModel(loaded)
    old = routing.compile_routing(*parts, reference)  # type: ignore[arg-type]
    new = routing.compile_routing(*parts, loaded)
    for mail in mails():
        before, after = routing.decide(mail, old), routing.decide(mail, new)
        assert as_plain(after) == as_plain(before)
        assert after.model and after.confidence  # the model took part
        rows, values = reference.vector  # today's, for this mail
        new_rows, new_values = loaded.vector(
            *model_text(mail.subject, RoutingText(mail.body, mail.quoted))
        )
        assert new_rows.tolist() == rows.tolist()
        assert new_values.tobytes() == values.tobytes()
        logits = loaded.heads_logits(new_rows, new_values)
        for name, head in loaded.heads.items():
            assert logits[name].tolist() == old_model.logits(head, rows, values), name
