"""The learned half of routing: a linear text classifier run with numpy alone.

Features are hashed (CRC-32, a C function of the standard library) word unigrams and
bigrams and the character 2–5-grams of each word, weighted TF-IDF (sublinear term
frequency) and L2-normalised — the same recipe as scikit-learn's TfidfVectorizer with
``analyzer="char_wb"``, computed by this module both when training (``mailbot.app.training``
gives scikit-learn the matrix built here) and in production, so the two can never drift
apart. Hashing means the model file holds numbers only, never a word of a citizen's mail.

The model is a ``.npz`` file read with ``allow_pickle=False``: the hashed ids of the
features seen in training, their IDF, and for each head (service, category, re-orientation
target, and the binary complaint head) the coefficients, intercepts and class names of a
logistic regression, plus a
JSON header (format version, hash of the training data, date, counts). Loading it takes a
few milliseconds; classifying a mail, a fraction of a millisecond.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mailbot.core.keywords import words
from mailbot.core.routing_text import RoutingText
from mailbot.errors import ConfigError

FORMAT = "mailbot-routing-model/1"
HASH_BITS = 24
TEXT_LIMIT = 6000  # characters of own text the model reads (the request is near the top)
QUOTED_LIMIT = 1500
_MASK = (1 << HASH_BITS) - 1
# reorient: the target, when re-oriented; complaint: a binary head, complaint or not
HEADS = ("service", "category", "reorient", "complaint")
COMPLAINT_YES, COMPLAINT_NO = "complaint", "not-complaint"  # the complaint head's classes


def _h(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8", "surrogatepass")) & _MASK


@lru_cache(maxsize=50_000)
def _word_features(word: str) -> tuple[int, ...]:
    """A word's own feature and its character 2–5-grams (with word boundaries), hashed."""
    padded = f" {word} "
    grams = [padded[i : i + n] for n in (2, 3, 4, 5) for i in range(len(padded) - n + 1)]
    return (_h("w:" + word), *(_h("c:" + gram) for gram in grams))


def model_text(subject: str, text: RoutingText) -> tuple[list[str], list[str]]:
    """The words the model reads: subject and own text; the quoted part apart.

    The words of "subject, newline, own text" folded together are the subject's words then
    the own text's (folding is character by character, a newline is no word), so each part
    is read through ``keywords.words``, whose cache the rules filled for this mail."""
    own = [*words(subject), *words(text.own[:TEXT_LIMIT])]
    return own, list(words(text.quoted[:QUOTED_LIMIT]))


def raw_counts(own: list[str], quoted: list[str]) -> Counter[int]:
    """Hashed feature counts: words, bigrams and char n-grams of the own text; words of
    the quoted part as features of their own (a relance names its service there)."""
    # One C-level count over each word's features repeated as often as the word: the same
    # counts, in the same order, as adding them one by one.
    counts = Counter(
        itertools.chain.from_iterable(_word_features(w) * n for w, n in Counter(own).items())
    )
    counts.update(_h(f"b:{a} {b}") for a, b in itertools.pairwise(own))
    counts.update(_h("q:" + word) for word in quoted)
    return counts


@dataclass(frozen=True)
class Prediction:
    """A head's probabilities, best first."""

    classes: tuple[str, ...]
    probabilities: tuple[float, ...]

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        return list(zip(self.classes[:n], self.probabilities[:n], strict=True))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.classes, self.probabilities, strict=True))

    def probability(self, label: str) -> float:
        return self.as_dict().get(label, 0.0)


@dataclass(frozen=True)
class Head:
    classes: tuple[str, ...]
    coef: npt.NDArray[np.float32]  # (features, classes)
    intercept: npt.NDArray[np.float32]

    def prediction(self, logits: npt.NDArray[np.float32]) -> Prediction:
        """The softmax of this head's logits, best class first."""
        logits = logits - logits.max()
        exp = np.exp(logits)
        probs = exp / exp.sum()
        order = np.argsort(-probs, kind="stable")
        return Prediction(
            tuple(self.classes[i] for i in order), tuple(round(float(probs[i]), 4) for i in order)
        )


# Words (word pairs, quoted words) whose rows are kept, as many as the n-gram hashes
# ``_word_features`` keeps; when full, a cache starts again (bounded memory in a worker).
CACHE_LIMIT = 50_000


class _Rows:
    """Where a word's features sit in the vocabulary, remembered per word: a mail's
    features then cost a dictionary look-up per word rather than a CRC-32 per n-gram
    and a binary search per feature (issue 14, point 5). Features unknown to the model
    are dropped here, as ``tfidf`` drops them; -1 stands for an unknown bigram or quoted
    word."""

    def __init__(self, features: npt.NDArray[np.int64]) -> None:
        self._row = dict(zip(features.tolist(), range(len(features)), strict=True))
        self._words: dict[str, npt.NDArray[np.int32]] = {}
        self._pairs: dict[tuple[str, str], int] = {}
        self._quoted: dict[str, int] = {}

    def words(self, own: list[str]) -> list[npt.NDArray[np.int32]]:
        """For each word of ``own``, the rows of its own feature and character n-grams."""
        found = [*map(self._words.get, own)]
        for i in [i for i, rows in enumerate(found) if rows is None]:
            rows = self._words.get(own[i])  # a new word seen earlier in this mail
            found[i] = self._word(own[i]) if rows is None else rows
        return found  # type: ignore[return-value]  # no None left

    def _word(self, word: str) -> npt.NDArray[np.int32]:
        if len(self._words) >= CACHE_LIMIT:
            self._words.clear()
        # The hashes themselves are not kept (``__wrapped__``: past _word_features's cache,
        # which training uses): the rows, as 32-bit integers, are all a mail needs.
        found = (self._row.get(f, -1) for f in _word_features.__wrapped__(word))
        rows = self._words[word] = np.array([r for r in found if r >= 0], dtype=np.int32)
        return rows

    def pairs(self, own: list[str]) -> list[int]:
        """The row of each bigram of ``own``, in order (-1: unknown to the model)."""
        return self._each(self._pairs, list(itertools.pairwise(own)), lambda p: f"b:{p[0]} {p[1]}")

    def quoted(self, quoted: list[str]) -> list[int]:
        """The row of each word of the quoted part, in order (-1: unknown to the model)."""
        return self._each(self._quoted, quoted, lambda word: "q:" + word)

    def _each(self, cache: dict[Any, int], keys: list[Any], feature: Any) -> list[int]:
        found = [*map(cache.get, keys)]
        if None in found:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            for i, key in enumerate(keys):
                if found[i] is None:
                    found[i] = cache[key] = self._row.get(_h(feature(key)), -1)
        return found  # type: ignore[return-value]  # no None left


@dataclass(frozen=True)
class Classifier:
    """A trained model in memory: hashed vocabulary, IDF and one linear head per label."""

    features: npt.NDArray[np.int64]  # sorted hashed ids seen in training
    idf: npt.NDArray[np.float32]
    heads: Mapping[str, Head]
    meta: Mapping[str, Any]
    path: Path | None = None
    _rows: _Rows = field(init=False, repr=False, compare=False)
    _coefs: npt.NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _intercepts: npt.NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        heads = list(self.heads.values())
        coefs = np.concatenate([h.coef for h in heads], axis=1) if heads else np.zeros((0, 0))
        intercepts = np.concatenate([h.intercept for h in heads]) if heads else np.zeros(0)
        bounds = tuple(itertools.accumulate((len(h.classes) for h in heads), initial=0))
        for name, value in (
            ("_rows", _Rows(self.features)),
            ("_coefs", np.ascontiguousarray(coefs, dtype=np.float32)),
            ("_intercepts", intercepts.astype(np.float32)),
            ("_bounds", bounds),
        ):
            object.__setattr__(self, name, value)

    @property
    def version(self) -> str:
        return str(self.meta.get("data_hash", "?"))[:12]

    def vector(
        self, own: list[str], quoted: list[str]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """The TF-IDF vector as (row indices into the vocabulary, L2-normalised values):
        ``tfidf(raw_counts(own, quoted), …)`` to the bit, rows in the same order, without
        hashing each n-gram, searching each feature or counting them one by one in Python."""
        # A word's rows once per occurrence: raw_counts's counts, and its order of first
        # appearance (a word's later occurrences come after its first).
        tail = np.array(self._rows.pairs(own) + self._rows.quoted(quoted), dtype=np.int32)
        sequence = np.concatenate([*self._rows.words(own), tail[tail >= 0]])
        if not len(sequence):
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        rows, tf = _first_order_counts(sequence)
        values = (1.0 + np.log(tf.astype(np.float32))) * self.idf[rows]
        norm = float(np.sqrt((values * values).sum())) or 1.0
        return rows, (values / norm).astype(np.float32)

    def logits(self, subject: str, text: RoutingText) -> dict[str, npt.NDArray[np.float32]]:
        """Each head's logits for a mail, before the softmax."""
        return self.heads_logits(*self.vector(*model_text(subject, text)))

    def heads_logits(
        self, rows: npt.NDArray[np.intp], values: npt.NDArray[np.float32]
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Each head's logits for a TF-IDF vector."""
        # All heads' coefficients side by side: one gather of the mail's rows (four cost
        # twice as much on a 3 KB mail); each head's product on its own contiguous copy,
        # as one head alone computes it (tests/classifier_reference.py), so that the sums
        # are the same to the bit.
        gathered = self._coefs[rows]
        bounds = zip(self._bounds, self._bounds[1:], strict=False)
        return {
            name: head.intercept + values @ np.ascontiguousarray(gathered[:, start:end])
            for (name, head), (start, end) in zip(self.heads.items(), bounds, strict=True)
        }

    def classify(self, subject: str, text: RoutingText) -> dict[str, Prediction]:
        said = self.logits(subject, text).items()
        return {name: self.heads[name].prediction(logits) for name, logits in said}


def _first_order_counts(
    sequence: npt.NDArray[np.int32],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """Each distinct value of ``sequence`` in order of first appearance, with its count:
    ``Counter(sequence)``'s items, by one sort of (value, position) pairs."""
    positions = np.arange(len(sequence), dtype=np.int64)
    keys = np.sort((sequence.astype(np.int64) << 32) | positions)
    values = keys >> 32
    starts = np.flatnonzero(np.diff(values, prepend=-1))
    order = np.argsort(keys[starts] & 0xFFFFFFFF)
    counts = np.diff(starts, append=len(keys))
    return values[starts][order].astype(np.intp), counts[order]


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


def data_hash(samples: Iterable[tuple[str, str, str]]) -> str:
    """SHA-256 of the training data (text and labels), in a stable order: a model's id."""
    import hashlib

    digest = hashlib.sha256()
    for text, service, category in sorted(samples):
        digest.update(f"{service}\0{category}\0{text}\0".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def save(
    path: Path,
    features: npt.NDArray[np.int64],
    idf: npt.NDArray[np.float32],
    heads: Mapping[str, Head],
    meta: Mapping[str, Any],
) -> None:
    arrays: dict[str, Any] = {"features": features, "idf": idf.astype(np.float32)}
    for name, head in heads.items():
        arrays[f"{name}_classes"] = np.array(head.classes, dtype=str)
        arrays[f"{name}_coef"] = head.coef.astype(np.float16)
        arrays[f"{name}_intercept"] = head.intercept.astype(np.float32)
    arrays["meta"] = np.array(json.dumps({"format": FORMAT, **meta}, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)


def load(path: Path) -> Classifier:
    """Read a model file; ConfigError naming the file when it is missing or not a model."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise ConfigError(str(path), "format", f"not a {FORMAT} file")
            heads = {
                name: Head(
                    tuple(str(c) for c in data[f"{name}_classes"]),
                    data[f"{name}_coef"].astype(np.float32),
                    data[f"{name}_intercept"].astype(np.float32),
                )
                for name in HEADS
                if f"{name}_classes" in data
            }
            if not {"service", "category"} <= set(heads):
                raise ConfigError(str(path), "", "a routing model needs service and category")
            return Classifier(data["features"].astype(np.int64), data["idf"], heads, meta, path)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the routing model: {exc}") from None
    except (KeyError, ValueError) as exc:
        raise ConfigError(str(path), "", f"not a routing model file: {exc}") from None


def smooth_idf(df: npt.NDArray[np.float64], documents: int) -> npt.NDArray[np.float32]:
    """Smoothed IDF, as scikit-learn's ``smooth_idf=True``: ln((1+n)/(1+df)) + 1."""
    return (np.log((1.0 + documents) / (1.0 + df)) + 1.0).astype(np.float32)
