"""The vectorised routing model decides as today's did (issue 14, point 5).

``classifier_reference.py`` is the model's feature function and inference as they were
(tests/test_routing_matcher.py compares the rules with theirs). Every labelled mail of the
corpus's dev and train folders and of the regression set (read by code only), and one in
eight run on to 3 KB, go through both: the TF-IDF vector and each head's logits must be
the same to the bit (the sums are taken in the same order: else a probability shown to 4
decimals could differ by one step near a rounding boundary), and so the whole decision:
service, category, actions and hold, probabilities, rule hits.
"""

from __future__ import annotations

from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import classifier_reference as old_model
import numpy as np

from mailbot.app.training_samples import load_labelled
from mailbot.config import load_config
from mailbot.core import classifier, routing
from mailbot.core.classifier import Classifier, Prediction, model_text, raw_counts
from mailbot.core.facts import compiled_routing
from mailbot.core.routing import RoutingInput
from mailbot.core.routing_text import RoutingText

ROOT = Path(__file__).resolve().parent.parent
CONFIG = load_config(ROOT / "rules.yaml")
FOLDERS = ["corpus/dev", "corpus/train", "corpus/train-2a", "corpus/train-2b", "corpus/train-2c"]
FOLDERS += ["routing"]


@lru_cache(maxsize=1)
def mails() -> list[RoutingInput]:
    """Every labelled mail, then one in eight run on with the next bodies to 3 KB."""
    every = [s.facts for f in FOLDERS for s in load_labelled(CONFIG, ROOT / "tests/data" / f)]
    bodies = [m.body for m in every]
    long = []
    for i, mail in list(enumerate(every))[::8]:
        body, j = mail.body, i
        while len(body) < 3000:
            j += 1
            body += "\n\n" + bodies[j % len(bodies)]
        long.append(replace(mail, body=body[:3000]))
    return every + long


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


def test_every_labelled_mail_is_read() -> None:
    assert len(mails()) >= 1500 + 1500 // 8


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
    """On every mail: the TF-IDF vector and each head's logits equal today's to the bit,
    and each head's classes and probabilities the same; on one mail in four, short or
    3 KB (the rules run twice for a decision, and are the same code), the decision
    (service, category, actions hence the hold flag, re-orientation, the model's shown
    probabilities and confidence, every rule's hit) the same."""
    loaded = model()
    compiled = compiled_routing(CONFIG)
    assert compiled is not None and CONFIG.routing is not None
    parts = (CONFIG.routing, compiled.own_service, compiled.general_service)
    reference = OldModel(loaded)
    old = routing.compile_routing(*parts, reference)  # type: ignore[arg-type]
    new = routing.compile_routing(*parts, loaded)
    for i, mail in enumerate(mails()):
        text = RoutingText(mail.body, mail.quoted)
        if i % 4 == 0:
            before, after = routing.decide(mail, old), routing.decide(mail, new)
            assert as_plain(after) == as_plain(before)
            assert after.model and after.confidence  # the model took part
            rows, values = reference.vector  # today's, for this mail
        else:
            rows, values = old_model.vector(loaded, mail.subject, text)
        new_rows, new_values = loaded.vector(*model_text(mail.subject, text))
        assert new_rows.tolist() == rows.tolist()
        assert new_values.tobytes() == values.tobytes()
        logits = loaded.heads_logits(new_rows, new_values)
        for name, head in loaded.heads.items():
            old_logits = old_model.logits(head, rows, values)
            assert logits[name].tolist() == old_logits, name
            said = old_model.softmax(head, np.array(old_logits, dtype=np.float32))
            assert head.prediction(logits[name]) == said, name


def test_long_accented_and_foreign_words_hash_as_their_text() -> None:
    """Bigrams are hashed from their words' CRC-32s (linearity), chained past 64 bytes:
    words of every length up to 150 bytes, accented, Greek, Arabic, CJK and emoji, and
    lone surrogates, give the vector ``tfidf(raw_counts(...))`` gives — a mail with such
    a word (the chained shifts), then one of words up to 64 bytes read by the same table
    (one look-up per register byte), then the first again."""
    loaded = Classifier(model().features, model().idf, model().heads, model().meta)
    vocabulary = ["demande", "titre", "séjour", "préfecture", "ελληνικά", "العربية", "申请"]
    vocabulary += ["🙂", "\udcff", "x" * 63, "é" * 32, "y" * 65, "z" * 150, "a", "de"]
    own = [vocabulary[(i * 7) % len(vocabulary)] + str(i % 3) for i in range(60)]
    own += vocabulary + vocabulary[::-1]
    quoted = vocabulary[::2] + own[:10]
    short = [word for word in own if len(word.encode("utf-8", "surrogatepass")) <= 64]
    for mail in ((own, quoted), (short, quoted), (own, quoted)):
        rows, values = loaded.vector(*mail)
        old_rows, old_values = old_model.tfidf(
            old_model.raw_counts(*mail), loaded.features, loaded.idf
        )
        assert rows.tolist() == old_rows.tolist()
        assert values.tobytes() == old_values.tobytes()


def _made_up_word(i: int, letters: str = "abcdeéfghijklmnopqrstuvwxyz") -> str:
    """A word of its own for each ``i`` (its digits in base 27), 4 to 6 letters."""
    n, chars = i * 7919 + 104729, []
    while n:
        n, digit = divmod(n, len(letters))
        chars.append(letters[digit])
    return "".join(chars)


def test_a_mail_of_more_new_words_than_the_table_holds_reads_them_all() -> None:
    """A mail's new words are added to the word table together (one search of the
    vocabulary for all their n-grams): more of them than the table holds yet (1,024 ids,
    16,384 rows), known and unknown words mixed, a word repeated, long words among them,
    give ``tfidf(raw_counts(...))``'s vector; and so does the next mail, on the grown table."""
    loaded = Classifier(model().features, model().idf, model().heads, model().meta)
    made_up = [_made_up_word(i) * (14 if i % 97 == 0 else 1) for i in range(3000)]
    assert len(set(made_up)) == 3000 and max(map(len, made_up)) > 64
    known = ["demande", "titre", "séjour", "préfecture", "permis", "rendez-vous"] * 40
    own = [word for pair in zip(made_up, known * 13, strict=False) for word in pair]
    quoted = [*made_up[-500:], "permis", "séjour"]
    for mail in ((own, quoted), (own[::-1], made_up[:700])):
        rows, values = loaded.vector(*mail)
        old_rows, old_values = old_model.tfidf(
            old_model.raw_counts(*mail), loaded.features, loaded.idf
        )
        assert rows.tolist() == old_rows.tolist()
        assert values.tobytes() == old_values.tobytes()


def test_a_mail_without_a_known_feature_has_an_empty_vector() -> None:
    """No word, or only quoted words the model never saw: no feature, as before (and a
    made-up word: its character n-grams alone)."""
    loaded = model()
    for own, quoted in (([], []), (["zzqxw"], []), ([], ["zzqxw", "qqzzv"])):
        rows, values = loaded.vector(own, quoted)
        old_rows, old_values = old_model.tfidf(
            old_model.raw_counts(own, quoted), loaded.features, loaded.idf
        )
        assert rows.tolist() == old_rows.tolist() and values.tolist() == old_values.tolist()


def test_the_word_table_starting_again_changes_nothing(monkeypatch: Any) -> None:
    """A worker's word table is bounded: when full it starts again, and the vectors of the
    mails read across that reset are the same."""
    loaded = compiled_routing(CONFIG)
    assert loaded is not None and loaded.model is not None
    some = [model_text(m.subject, RoutingText(m.body, m.quoted)) for m in mails()[:40]]
    before = [loaded.model.vector(*words) for words in some]
    monkeypatch.setattr(classifier, "CACHE_LIMIT", 50)
    for words, (rows, values) in zip(some * 2, before * 2, strict=True):
        new_rows, new_values = loaded.model.vector(*words)
        assert new_rows.tolist() == rows.tolist()
        assert new_values.tobytes() == values.tobytes()
