"""The routing model's features and inference as they were before the vectorised path
(issue 14, point 5), kept verbatim as the reference tests/test_routing_speed.py compares
the new code with, on every labelled mail.

Not used by mailbot. Copied from mailbot/core/classifier.py and mailbot/core/keywords.py
at commit 11f3929 (``fold``, ``_h``, ``_word_features``, ``model_text``, ``raw_counts``,
``tfidf`` and the heads' ``predict``), working on a loaded ``Classifier``'s arrays.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from mailbot.core.classifier import Classifier, Head, Prediction
from mailbot.core.routing_text import RoutingText

HASH_BITS = 24
TEXT_LIMIT = 6000
QUOTED_LIMIT = 1500
_WORD = re.compile(r"\w+")
_MASK = (1 << HASH_BITS) - 1


class _Marks(dict[int, int | None]):
    def __missing__(self, code: int) -> int | None:
        kept = None if unicodedata.combining(chr(code)) else code
        self[code] = kept
        return kept


_MARKS = _Marks()


def fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKD", text.casefold()).translate(_MARKS)


def _h(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8", "surrogatepass")) & _MASK


@lru_cache(maxsize=50_000)
def _word_features(word: str) -> tuple[int, ...]:
    padded = f" {word} "
    grams = [padded[i : i + n] for n in (2, 3, 4, 5) for i in range(len(padded) - n + 1)]
    return (_h("w:" + word), *(_h("c:" + gram) for gram in grams))


def model_text(subject: str, text: RoutingText) -> tuple[list[str], list[str]]:
    own = _WORD.findall(fold(f"{subject}\n{text.own[:TEXT_LIMIT]}"))
    quoted = _WORD.findall(fold(text.quoted[:QUOTED_LIMIT]))
    return own, quoted


def raw_counts(own: list[str], quoted: list[str]) -> Counter[int]:
    counts = Counter(
        itertools.chain.from_iterable(_word_features(w) * n for w, n in Counter(own).items())
    )
    counts.update(_h(f"b:{a} {b}") for a, b in itertools.pairwise(own))
    counts.update(_h("q:" + word) for word in quoted)
    return counts


def tfidf(
    counts: Mapping[int, int], features: npt.NDArray[np.int64], idf: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    if not counts or not len(features):
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
    ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    tf = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    rows = np.searchsorted(features, ids)
    rows[rows >= len(features)] = 0
    known = features[rows] == ids
    rows, tf = rows[known], tf[known]
    values = (1.0 + np.log(tf)) * idf[rows]
    norm = float(np.sqrt((values * values).sum())) or 1.0
    return rows, (values / norm).astype(np.float32)


def logits(head: Head, rows: npt.NDArray[np.intp], values: npt.NDArray[np.float32]) -> list[float]:
    """A head's logits, before the softmax (``predict`` below continues from here)."""
    return [float(x) for x in head.intercept + values @ head.coef[rows]]


def predict(head: Head, rows: npt.NDArray[np.intp], values: npt.NDArray[np.float32]) -> Prediction:
    return softmax(head, head.intercept + values @ head.coef[rows])


def softmax(head: Head, logits: npt.NDArray[np.float32]) -> Prediction:
    """``predict`` from the logits on (the same code, split for the test to reuse)."""
    logits = logits - logits.max()
    exp = np.exp(logits)
    probs = exp / exp.sum()
    order = np.argsort(-probs, kind="stable")
    return Prediction(
        tuple(head.classes[i] for i in order), tuple(round(float(probs[i]), 4) for i in order)
    )


def vector(
    model: Classifier, subject: str, text: RoutingText
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    return tfidf(raw_counts(*model_text(subject, text)), model.features, model.idf)


def classify(model: Classifier, subject: str, text: RoutingText) -> dict[str, Prediction]:
    rows, values = vector(model, subject, text)
    return {name: predict(head, rows, values) for name, head in model.heads.items()}
