"""The learned half of routing: a linear text classifier run with numpy alone.

Features are hashed (CRC-32, a C function of the standard library) word unigrams and
bigrams and the character 2–5-grams of each word, weighted TF-IDF (sublinear term
frequency) and L2-normalised — the same recipe as scikit-learn's TfidfVectorizer with
``analyzer="char_wb"``, computed by this module both when training (``mailbot.app.model_fit``
gives scikit-learn the matrix built here) and in production, so the two can never drift
apart. Hashing means the model file holds numbers only, never a word of a citizen's mail.

The model is a ``.npz`` file read with ``allow_pickle=False``: the hashed ids of the
features seen in training, their IDF, and for each head (service, category, re-orientation
target, and the binary complaint head) the coefficients, intercepts and class names of a
logistic regression, plus a
JSON header (format version, hash of the training data, date, counts, and the receipt dates
of the agents' corrected mails it learned from: ``corrected_mail``). Loading it takes a
few milliseconds; classifying a mail, a fraction of a millisecond.
"""

from __future__ import annotations

import itertools
import json
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
        """The softmax of this head's logits, best class first: numpy's float32 ``max``,
        ``exp``, ``sum`` and division, as ``tests/classifier_reference.py`` has them, the
        ufuncs called directly and the few classes ordered in Python (stable, as
        ``argsort(-probs, kind="stable")``): the same numbers in a third of the time."""
        exp = np.exp(logits - np.maximum.reduce(logits))
        probs = (exp / np.add.reduce(exp)).tolist()
        order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
        classes = self.classes
        return Prediction(
            tuple([classes[i] for i in order]), tuple([round(probs[i], 4) for i in order])
        )


# Words whose rows are kept; when full, they start again (bounded memory in a worker).
# About 350 bytes a word, by estimate. bench/run.py --parts rss (20,000 vs 1,000 mails of
# numbered files, when word pairs were kept too): 50,000 -> 1.16x (+17.9 MB), 10,000 ->
# 1.13x (+14.9 MB), one run each; a reset costs one hashing of the words seen again.
CACHE_LIMIT = 10_000
_CRC_PAIR, _CRC_QUOTED = zlib.crc32(b"b:"), zlib.crc32(b"q:")
_UNSEEN = np.iinfo(np.int32).max  # _Rows._first between mails: no position yet
_SHIFT_MAX = 64  # the longest shift (in bytes) the tables hold; longer ones are chained
_LANES = np.array([0, 256, 512, 768])  # where each byte of the register's tables start


@lru_cache(maxsize=1)
def _shift_tables() -> npt.NDArray[np.uint32]:
    """CRC-32 is linear: ``crc32(a + b) == shift(crc32(a), len(b)) ^ crc32(b)``, where
    ``shift`` runs the register over ``len(b)`` zero bytes. For each length up to
    ``_SHIFT_MAX``, the shift of each byte value in each of the register's four bytes:
    the shift of a word is then four look-ups, for every bigram of a mail at once."""
    byte = np.arange(256, dtype=np.uint32)
    table = byte.copy()
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    lanes = [byte << np.uint32(8 * k) for k in range(4)]  # the register, byte by byte
    tables = [np.concatenate(lanes)]
    for _ in range(_SHIFT_MAX):
        last = tables[-1]
        tables.append(table[last & 0xFF] ^ (last >> np.uint32(8)))  # one zero byte more
    return np.concatenate(tables).astype(np.uint32)


def _shift(
    crc: npt.NDArray[np.uint32], size: npt.NDArray[np.int64], tables: npt.NDArray[np.uint32]
) -> npt.NDArray[np.uint32]:
    """Each ``crc`` as if ``size`` zero bytes had followed: ``_shift_tables``'s map."""
    while (size > _SHIFT_MAX).any():  # a word of more than 64 bytes: rare
        longer = size > _SHIFT_MAX
        crc, size = crc.copy(), size.copy()
        crc[longer] = _shift(crc[longer], np.full(longer.sum(), _SHIFT_MAX), tables)
        size[longer] -= _SHIFT_MAX
    base = size * 1024
    return (
        tables[base + (crc & 0xFF)]
        ^ tables[base + 256 + ((crc >> np.uint32(8)) & 0xFF)]
        ^ tables[base + 512 + ((crc >> np.uint32(16)) & 0xFF)]
        ^ tables[base + 768 + (crc >> np.uint32(24))]
    )


class _Table:
    """What the model needs of each word seen, by word id: where its character n-grams
    sit in the vocabulary (rows in ``flat``), the row of its quoted feature, and the
    CRC-32 pieces from which a bigram's hash is found without building its text."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.crc = np.zeros(1024, dtype=np.uint32)  # crc32 of the word's UTF-8 bytes
        self.size = np.zeros(1024, dtype=np.int64)  # their number
        self.prefix = np.zeros(1024, dtype="<u4")  # crc32 of "b:word ", bytes low first
        # The offsets in _shift_tables of a shift by the word's size, for each of the
        # register's four bytes (the lanes): size * 1024 + 0, 256, 512, 768.
        self.lanes = np.zeros((1024, 4), dtype=np.int64)
        self.longest = 0  # the most bytes of a word: over _SHIFT_MAX, _shift chains
        self.quoted = np.zeros(1024, dtype=np.int32)  # the row of "q:word", or -1
        self.start = np.zeros(1024, dtype=np.int64)  # its n-grams' rows: flat[start:+count]
        self.count = np.zeros(1024, dtype=np.int64)
        self.flat = np.zeros(16384, dtype=np.int32)
        self.used = 0

    def add(
        self, words: list[str], rows_of: Callable[[npt.NDArray[np.uint32]], npt.NDArray[np.int32]]
    ) -> None:
        """New words' ids, in order: their features hashed once (``_word_features``,
        uncached), then found in the vocabulary all at once (``rows_of``)."""
        first, end = len(self.ids), len(self.ids) + len(words)
        if end > len(self.crc):
            size = max(2 * len(self.crc), end)
            for name in ("crc", "size", "prefix", "quoted", "start", "count"):
                setattr(self, name, np.resize(getattr(self, name), size))
            self.lanes = np.resize(self.lanes, (size, 4))
        data = [word.encode("utf-8", "surrogatepass") for word in words]
        grams = [_word_features.__wrapped__(word) for word in words]
        hashed = np.fromiter(
            itertools.chain(
                itertools.chain.from_iterable(grams),
                (zlib.crc32(d, _CRC_QUOTED) for d in data),
            ),
            dtype=np.uint32,
        )
        found = rows_of(hashed)
        sizes = np.fromiter(map(len, grams), dtype=np.int64, count=len(grams))
        rows, quoted = found[: len(found) - len(words)], found[len(found) - len(words) :]
        known = rows >= 0
        kept = np.bincount(np.repeat(np.arange(len(words)), sizes)[known], minlength=len(words))
        rows = rows[known]
        if self.used + len(rows) > len(self.flat):
            self.flat = np.resize(self.flat, 2 * (self.used + len(rows)))
        self.flat[self.used : self.used + len(rows)] = rows
        self.count[first:end] = kept
        self.start[first:end] = self.used + np.cumsum(kept) - kept
        self.used += len(rows)
        self.quoted[first:end] = quoted
        lengths = [len(d) for d in data]
        self.size[first:end] = lengths
        self.crc[first:end] = [zlib.crc32(d) for d in data]
        self.prefix[first:end] = [zlib.crc32(b" ", zlib.crc32(d, _CRC_PAIR)) for d in data]
        self.lanes[first:end] = _LANES + 1024 * np.minimum(lengths, _SHIFT_MAX)[:, None]
        self.longest = max(self.longest, *lengths)
        self.ids.update(zip(words, range(first, end), strict=True))


class _Rows:
    """Where a mail's features sit in the vocabulary, from each word's id: a dictionary
    look-up per word, then numpy for the whole mail — the n-grams' rows of each distinct
    word, every bigram's CRC-32 from its two words' (no text built, no hash called), the
    quoted words' rows (issue 14, point 5). Features unknown to the model are dropped
    here, as ``tfidf`` drops them. A lock keeps the table (and the scratch array of
    ``_first_order``) whole between threads."""

    def __init__(self, features: npt.NDArray[np.int64]) -> None:
        self._features = features
        # The hashed ids as uint32 (a CRC's type) with a sentinel past the last (no id
        # reaches 2**24): a binary search's answer is always an index, equality the check.
        self._keys = np.append(features, 1 << HASH_BITS).astype(np.uint32)
        self._table = _Table()
        self._lock = threading.Lock()
        self._shifts = _shift_tables()
        self._first = np.full(len(features) + 1, _UNSEEN, dtype=np.int32)

    def counts(
        self, own: list[str], quoted: list[str]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """``raw_counts``'s features the model knows, as (rows, counts) in its order of
        first appearance: the n-grams of each distinct word (counted as often as the word),
        then the bigrams, then the quoted words."""
        with self._lock:
            if len(self._table.ids) >= CACHE_LIMIT:
                self._table = _Table()
            table, distinct = self._table, Counter(own)
            ids = self._ids(table, [*distinct, *own, *quoted])
            words, own_ids = ids[: len(distinct)], ids[len(distinct) : len(distinct) + len(own)]
            sizes = table.count[words]
            ends = np.cumsum(sizes)
            gather = np.arange(ends[-1] if len(ends) else 0) + np.repeat(
                table.start[words] - ends + sizes, sizes
            )
            quoted_rows = table.quoted[ids[len(distinct) + len(own) :]]
            sequence = np.concatenate(
                [table.flat[gather], self._pairs(table, own_ids), quoted_rows]
            )
            weights = np.ones(len(sequence), dtype=np.float64)
            weights[: len(gather)] = np.repeat(np.fromiter(distinct.values(), np.float64), sizes)
            known = sequence >= 0
            return self._first_order(sequence[known], weights[known])

    def _ids(self, table: _Table, words: list[str]) -> npt.NDArray[np.intp]:
        found = [*map(table.ids.get, words)]
        if None in found:  # the new words, each once, in order of first appearance
            new = dict.fromkeys(w for w, i in zip(words, found, strict=True) if i is None)
            table.add([*new], self._rows_of)
            found = [*map(table.ids.__getitem__, words)]
        return np.array(found, dtype=np.intp)

    def _pairs(self, table: _Table, ids: npt.NDArray[np.intp]) -> npt.NDArray[np.int32]:
        """The row of each bigram of the words ``ids`` (-1: unknown to the model), all
        hashed at once from their words' CRC-32s: a vector operation per step, cheaper than
        a dictionary of the pairs seen (a 3 KB mail brings hundreds of new ones)."""
        first, second = ids[:-1], ids[1:]
        sizes = table.size[second] if table.longest > _SHIFT_MAX else None
        if sizes is not None and len(sizes) and sizes.max() > _SHIFT_MAX:  # over 64 bytes
            shifted = _shift(table.prefix[first], sizes, self._shifts)  # chained
        else:  # the four look-ups of each pair at once, its register's bytes as a view
            lanes = table.prefix[first].view(np.uint8).reshape(-1, 4)
            shifted = np.bitwise_xor.reduce(self._shifts[table.lanes[second] + lanes], axis=1)
        return self._rows_of(shifted ^ table.crc[second])

    def _rows_of(self, crcs: npt.NDArray[np.uint32]) -> npt.NDArray[np.int32]:
        """The row of each hashed feature ``crcs & _MASK`` (-1: unknown to the model)."""
        hashed = crcs & np.uint32(_MASK)
        rows = self._keys.searchsorted(hashed)
        return np.where(self._keys[rows] == hashed, rows, -1).astype(np.int32)

    def _first_order(
        self, sequence: npt.NDArray[np.int32], weights: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """Each distinct row of ``sequence`` in order of first appearance with the sum of
        its weights (a Counter's items), without a sort: the scratch array ``_first``
        (one slot per row of the vocabulary, ``_UNSEEN`` between mails) takes the lowest
        position of each row (``np.minimum.at``); a position that is its row's first keeps
        the row and the weights summed over its row (``bincount`` by first position)."""
        positions = np.arange(len(sequence), dtype=np.int32)
        try:
            np.minimum.at(self._first, sequence, positions)
            first = self._first[sequence]
        finally:  # clean for the next mail whatever happens (a stale slot: a wrong order)
            self._first[sequence] = _UNSEEN
        leads = first == positions
        sums = np.bincount(first, weights, minlength=len(sequence))
        return sequence[leads].astype(np.intp), sums[leads]


@dataclass(frozen=True)
class Classifier:
    """A trained model in memory: hashed vocabulary, IDF and one linear head per label."""

    features: npt.NDArray[np.int64]  # sorted hashed ids seen in training
    idf: npt.NDArray[np.float32]
    heads: Mapping[str, Head]
    meta: Mapping[str, Any]
    path: Path | None = None
    _rows: _Rows = field(init=False, repr=False, compare=False)
    _coefs: tuple[npt.NDArray[np.float32], ...] = field(init=False, repr=False, compare=False)
    _intercepts: npt.NDArray[np.float32] = field(init=False, repr=False, compare=False)
    _bounds: tuple[tuple[str, int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        heads = self.heads.values()
        intercepts = np.concatenate([h.intercept for h in heads]) if heads else np.zeros(0)
        bounds = tuple(itertools.accumulate((len(h.classes) for h in heads), initial=0))
        for name, value in (
            ("_rows", _Rows(self.features)),
            ("_coefs", tuple(np.ascontiguousarray(h.coef) for h in heads)),  # no copy
            ("_intercepts", intercepts),
            ("_bounds", tuple(zip(self.heads, bounds, bounds[1:], strict=False))),
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
        rows, tf = self._rows.counts(own, quoted)
        if not len(rows):
            return rows, np.zeros(0, dtype=np.float32)
        values = (1.0 + np.log(tf.astype(np.float32))) * self.idf[rows]
        norm = float(np.sqrt((values * values).sum())) or 1.0
        return rows, (values / norm).astype(np.float32, copy=False)

    def logits(self, subject: str, text: RoutingText) -> dict[str, npt.NDArray[np.float32]]:
        """Each head's logits for a mail, before the softmax."""
        return self.heads_logits(*self.vector(*model_text(subject, text)))

    def heads_logits(
        self, rows: npt.NDArray[np.intp], values: npt.NDArray[np.float32]
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Each head's logits for a TF-IDF vector."""
        # Each head's rows gathered from its own coefficients (``take``, no bounds check:
        # the rows come from the vocabulary), contiguous as ``coef[rows]`` is, so that its
        # product is the one tests/classifier_reference.py computes, to the bit; the
        # intercepts added to all the heads at once. One gather from all heads side by side
        # then a copy of each head's columns cost 1.7x more on 3 KB mails (the narrow strided
        # copies), bench/README.md "Issue 14, sixth session".
        products = [values @ coef.take(rows, axis=0, mode="clip") for coef in self._coefs]
        said = np.concatenate(products) + self._intercepts
        return {name: said[start:end] for name, start, end in self._bounds}

    def classify(self, subject: str, text: RoutingText) -> dict[str, Prediction]:
        said = self.logits(subject, text).items()
        return {name: self.heads[name].prediction(logits) for name, logits in said}


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
    # Uncompressed: ~1.6x the bytes, about half the load time of a first mail's model
    # (58 -> 30 ms measured, bench/README.md "Issue 14 point 9, fourth session").
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def load(path: Path) -> Classifier:
    """Read a model file; ConfigError naming the file when it is missing or not a model.

    Once per process for the same file unchanged (its size and modification time): a
    process may load it more than once (the worker and its console; the tests' many
    applications), and a model is never changed once loaded."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the routing model: {exc}") from None
    return _load(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load(path: Path, _mtime_ns: int, _size: int) -> Classifier:
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
    # A file cut short (a copy interrupted, a full disk) or empty: zipfile's and numpy's own
    # errors, not OSError nor ValueError.
    except (KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(str(path), "", f"not a routing model file: {exc}") from None


def smooth_idf(df: npt.NDArray[np.float64], documents: int) -> npt.NDArray[np.float32]:
    """Smoothed IDF, as scikit-learn's ``smooth_idf=True``: ln((1+n)/(1+df)) + 1."""
    return (np.log((1.0 + documents) / (1.0 + df)) + 1.0).astype(np.float32)


def header(path: Path) -> dict[str, Any]:
    """A model file's JSON header alone, its arrays unread: what ``mailbot check`` and
    ``mailbot status`` say of the model (ConfigError naming the file it cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta: dict[str, Any] = json.loads(str(data["meta"]))
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the routing model: {exc}") from None
    except (KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(str(path), "", f"not a routing model file: {exc}") from None
    return meta


@dataclass(frozen=True)
class CorrectedMail:
    """What a model's header says of the agents' corrected mails (citizens' mail) it learned
    from: how many, and the receipt dates of the oldest and newest — None when the header
    does not date them (a model written before it did). The retention purge deletes the
    mails; a model keeps what it learned of them until it is trained again."""

    mails: int
    oldest: datetime | None
    newest: datetime | None


def corrected_mail(meta: Mapping[str, Any]) -> CorrectedMail | None:
    """The corrected mails a model's header names (None: it learned from none). A header
    without ``corrected_mail`` is an earlier one's: its ``sources`` (and the kept model's,
    ``kept_from``) say whether corrections were read, never when they were received."""
    if "corrected_mail" in meta:
        said = meta["corrected_mail"]
        if not said:
            return None
        try:
            return CorrectedMail(
                int(said.get("mails") or 0),
                _date(said.get("oldest_received")),
                _date(said.get("newest_received")),
            )
        except (AttributeError, TypeError, ValueError) as exc:  # not what train writes
            raise ConfigError(
                "", "corrected_mail", f"a model header it cannot read: {exc}"
            ) from None
    kept = meta.get("kept_from") or {}
    read = sum(int((m.get("sources") or {}).get("corrections", 0)) for m in (meta, kept))
    return CorrectedMail(read, None, None) if read else None


def _date(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) and text else None
