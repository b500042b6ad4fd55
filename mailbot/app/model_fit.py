"""Fitting the routing model: one multinomial logistic regression per head (service,
category, re-orientation target) and the binary complaint head, on the TF-IDF matrix of the
samples, calibrated and exported to the numpy-only model file; or a kept model's category
and complaint heads refitted over its vocabulary (round 12). scikit-learn is imported only
when fitting: here, and in ``stacking`` for the combiner."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mailbot.app.training_samples import Sample, training_hash
from mailbot.config import REORIENT_SERVICE
from mailbot.core.classifier import (
    COMPLAINT_NO,
    COMPLAINT_YES,
    Classifier,
    CorrectedMail,
    Head,
    corrected_mail,
    raw_counts,
    smooth_idf,
    tfidf,
)
from mailbot.errors import ConfigError

DEFAULT_C = 200.0  # chosen by 5-fold on the training data (scripts/tune_routing.py)
MIN_DF = 2  # a feature seen in one training mail only (a name, a phone number) is dropped
# A feature the agents' corrected mails bring that no labelled mail has is kept only when
# this many citizens (distinct senders) wrote it: two mails of one citizen (a mail and its
# relance, quoting it) pass MIN_DF, and their name, birth date or phone number would
# otherwise be in the model file for ever (as hashed ids, which a guessed name is tested
# against). The labelled corpora's features are kept as before: a model trained without
# corrections (the shipped one) has the same vocabulary.
MIN_CORRECTION_SENDERS = 3
# "balanced": each class weighs as much in the loss as the others, whatever its count — the
# rare services and categories (cabinet, thanks, complaints) are exactly the costly errors.
CLASS_WEIGHT: str | None = "balanced"
# The service head's own weighting, chosen apart by scripts/tune_routing.py (none scored better
# than balanced in 5-fold, with the guide's ambiguous cases decided as written).
SERVICE_WEIGHT: str | None = None
# Temperature scaling (Platt's scaling in its one-number form for a softmax) of the category
# head: its logits are divided by it, so that a probability of 0.8 is right about 80 % of the
# time and "confidence" means something. Estimated by scripts/tune_routing.py on the folds'
# held-out answers (the value minimising their log-loss, chosen on four folds and measured on
# the fifth): 0.63-0.69 on the 1517 training mails (below 1: balanced-weight, C = 200 heads
# are under-confident). The service head's own estimate (0.68-0.75) is not applied: sharper,
# it moved a mail the rules do not recognise out of its mailbox against the guide's cases
# (tests/test_routing.py: "Bonjour, j'ai une question." stays at the foreigners' service).
TEMPERATURE = 0.7
CALIBRATED = ("category",)  # the complaint head is calibrated as it is (T ≈ 0.9-1)


# -- fitting -----------------------------------------------------------------------------
def _vocabulary(
    counts: Sequence[Counter[int]], min_df: int, senders: Sequence[str | None] = ()
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The features of at least ``min_df`` mails and their IDF. ``senders``: per mail, None
    for a labelled one, else the citizen who wrote it (a corrected mail): a feature no
    labelled mail has is kept only when ``MIN_CORRECTION_SENDERS`` citizens wrote it."""
    df: Counter[int] = Counter()
    for doc in counts:
        df.update(doc.keys())
    kept = sorted(f for f, n in df.items() if n >= min_df)
    if any(sender is not None for sender in senders):
        theirs = _citizens_only(counts, senders)  # the others are labelled mails' features
        kept = [f for f in kept if theirs.get(f, MIN_CORRECTION_SENDERS) >= MIN_CORRECTION_SENDERS]
    features = np.array(kept, dtype=np.int64)
    idf = smooth_idf(np.array([df[f] for f in kept], dtype=np.float64), len(counts))
    return features, idf


def _citizens_only(counts: Sequence[Counter[int]], senders: Sequence[str | None]) -> dict[int, int]:
    """The features of corrected mails that no labelled mail has, each with the number of
    distinct citizens who wrote it."""
    labelled: set[int] = set()
    for doc, sender in zip(counts, senders, strict=True):
        if sender is None:
            labelled.update(doc.keys())
    writers: dict[int, set[str]] = {}
    for doc, sender in zip(counts, senders, strict=True):
        if sender is not None:
            for feature in doc.keys() - labelled:
                writers.setdefault(feature, set()).add(sender)
    return {feature: len(who) for feature, who in writers.items()}


def _sender(sample: Sample) -> str | None:
    """Who wrote a corrected mail (its reply address, folded), None for a labelled mail."""
    return None if sample.received is None else sample.facts.sender.strip().lower()


def _matrix(
    counts: Sequence[Counter[int]], features: npt.NDArray[np.int64], idf: npt.NDArray[np.float32]
) -> Any:
    from scipy.sparse import csr_matrix

    indptr, indices, values = [0], [], []
    for doc in counts:
        rows, vals = tfidf(doc, features, idf)
        indices.extend(rows.tolist())
        values.extend(vals.tolist())
        indptr.append(len(indices))
    return csr_matrix((values, indices, indptr), shape=(len(counts), len(features)))


def _head(
    matrix: Any,
    labels: Sequence[str],
    c: float,
    class_weight: str | None = CLASS_WEIGHT,
    sample_weight: npt.NDArray[np.float64] | None = None,
) -> Head | None:
    from sklearn.linear_model import LogisticRegression

    classes = sorted(set(labels))
    if len(classes) < 2:
        return None
    fitted = LogisticRegression(
        C=c, solver="newton-cg", max_iter=500, class_weight=class_weight
    ).fit(matrix, list(labels), sample_weight=sample_weight)
    coef = np.asarray(fitted.coef_, dtype=np.float32)
    intercept = np.asarray(fitted.intercept_, dtype=np.float32)
    if len(fitted.classes_) == 2:  # binary: scikit-learn keeps one row, for classes_[1]
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
    return Head(tuple(str(x) for x in fitted.classes_), coef.T.copy(), intercept)


def fit(
    samples: Sequence[Sample],
    c: float = DEFAULT_C,
    min_df: int = MIN_DF,
    class_weight: str | None = CLASS_WEIGHT,
    complaint: str = "reclamation",
    service_weight: str | None = SERVICE_WEIGHT,
    temperature: float = TEMPERATURE,
    source_weights: Mapping[str, float] | None = None,
    complaint_c: float | None = None,
    complaint_negatives: Mapping[str, float] | None = None,
    only: Sequence[str] | None = None,
    category_weights: Mapping[str, float] | None = None,
) -> Classifier:
    """A model trained on ``samples``: service, category, re-orientation target and
    complaint heads. The complaint head is a binary regression (``complaint`` or not) of
    its own: one question asked of all the data gates the category that feeds the audit.
    The service and category heads are calibrated by ``temperature``. ``source_weights``:
    a weight per source folder (``sample_weights``), else every mail weighs one.
    ``complaint_c``: the complaint head's own C (None: ``c``); ``complaint_negatives``: a
    weight per category for the complaint head's negatives (the look-alikes: relances,
    slot requests); ``only``: these heads alone (tuning one head without refitting all);
    ``category_weights``: a weight per category of the category head's mails, on top of the
    balanced class weights (round 10: a question weighing more against its report's look-alike)."""
    counts = [raw_counts(*s.words) for s in samples]
    features, idf = _vocabulary(counts, min_df, [_sender(s) for s in samples])
    matrix = _matrix(counts, features, idf)
    weights = sample_weights(samples, source_weights) if source_weights else None
    names = [n for n in ("service", "category") if only is None or n in only]
    class_weights = {"service": service_weight, "category": class_weight}
    heads: dict[str, Head] = {
        name: _label_head(matrix, samples, name, c, class_weights[name], weights, category_weights)
        for name in names
    }
    target = _reorient_head(matrix, samples, c, class_weight, weights) if only is None else None
    if target is not None:
        heads["reorient"] = target
    if only is None or "complaint" in only:
        gate = _complaint_head(
            matrix, samples, complaint, complaint_c or c, class_weight, weights, complaint_negatives
        )
        if gate is not None:
            heads["complaint"] = gate
    heads = calibrated(heads, temperature)
    settings = {
        "c": c,
        "min_df": min_df,
        "class_weight": class_weight,
        "service_weight": service_weight,
        "temperature": temperature,
        "features": len(features),
        "source_weights": dict(source_weights or {}),
        "complaint_c": complaint_c,
        "complaint_negatives": dict(complaint_negatives or {}),
        "category_weights": dict(category_weights or {}),
    }
    return Classifier(features, idf, heads, _meta(samples, settings))


# -- round 12: a model's service part kept, its category and complaint heads refitted -------
# What a service decision reads (mailbot.core.combine.heads; STACK_INPUTS["service"]): the
# vocabulary and IDF, the service head (and the re-orientation target's), the stacked service
# regression of the header. The category and complaint heads never enter it.
KEPT_HEADS = ("service", "reorient")
KEPT_META = ("stack", "stack_folds", "hold_on")


def service_header(kept: Classifier) -> dict[str, Any]:
    """The part of ``kept``'s header that decides the service (its stacked regression)."""
    return {name: kept.meta[name] for name in KEPT_META if name in kept.meta}


def refit_heads(
    kept: Classifier,
    samples: Sequence[Sample],
    c: float = DEFAULT_C,
    class_weight: str | None = CLASS_WEIGHT,
    complaint: str = "reclamation",
    temperature: float = TEMPERATURE,
    complaint_c: float | None = None,
    complaint_negatives: Mapping[str, float] | None = None,
) -> Classifier:
    """``kept`` with its category and complaint heads refitted on ``samples`` (``fit``'s
    recipe) over ``kept``'s vocabulary and IDF, n-grams it does not know dropped as in
    production. All a service decision reads is ``kept``'s to the bit, so every service
    decision and transfer stays ``kept``'s while the category and the complaint learn from new
    mail (round 12: refitting the whole model on new mail lost service decisions, PLAN.md
    round 11). The header names both data sets; its ``data_hash``, the file's version, hashes
    the two (another model than ``kept``, and than a full fit on ``samples``)."""
    matrix = _matrix([raw_counts(*s.words) for s in samples], kept.features, kept.idf)
    new = {"category": _label_head(matrix, samples, "category", c, class_weight, None, None)}
    gate = _complaint_head(
        matrix, samples, complaint, complaint_c or c, class_weight, None, complaint_negatives
    )
    if gate is not None:
        new["complaint"] = gate
    new = calibrated(new, temperature)
    heads = {n: new.pop(n, h) for n, h in kept.heads.items() if n in KEPT_HEADS or n in new}
    heads.update(new)
    settings = {
        "c": c,
        "class_weight": class_weight,
        "temperature": temperature,
        "features": len(kept.features),
        "complaint_c": complaint_c,
        "complaint_negatives": dict(complaint_negatives or {}),
    }
    meta = _meta(samples, settings)
    meta["corrected_mail"] = corrected_mail_header(samples, corrected_mail(kept.meta))
    source = str(kept.meta.get("data_hash", "?"))
    both = hashlib.sha256(f"{source}\0{meta['data_hash']}".encode()).hexdigest()
    kept_from = {k: v for k, v in kept.meta.items() if k not in ("stack", "format")}
    if kept.path is not None:
        kept_from["file"] = kept.path.name
    return Classifier(
        kept.features,
        kept.idf,
        heads,
        {
            **meta,
            **service_header(kept),
            "data_hash": both,
            "heads_data_hash": meta["data_hash"],
            "refitted": sorted(name for name in heads if name not in KEPT_HEADS),
            "kept_from": kept_from,
        },
    )


def corrected_mail_header(
    samples: Sequence[Sample], kept: CorrectedMail | None = None
) -> dict[str, Any] | None:
    """The header's ``corrected_mail``: how many citizens' mails (agents' corrections) the
    model learned from and the receipt dates of the oldest and newest, so that ``mailbot
    check`` and ``status`` can say when the retention has purged them but the model still
    holds what it learned (``app/model_retention``); None for a model trained on the
    labelled corpora alone. ``kept``: a kept model's (``refit_heads``), whose vocabulary,
    IDF and service head learned from its own corrected mails; not dated, neither is this."""
    dates = [s.received for s in samples if s.received is not None]
    if kept is None and not dates:
        return None
    mails = len(dates) + (kept.mails if kept is not None else 0)
    if kept is not None:
        if kept.oldest is None or kept.newest is None:
            return {"mails": mails, "oldest_received": None, "newest_received": None}
        dates += [kept.oldest, kept.newest]
    return {
        "mails": mails,
        "oldest_received": min(dates).isoformat(),
        "newest_received": max(dates).isoformat(),
    }


def _meta(samples: Sequence[Sample], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The model's header: its data (hash, count, sources, the corrected mails' dates) and
    the fit's settings (those left at their default of none are not written)."""
    return {
        "data_hash": training_hash(samples),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "samples": len(samples),
        "sources": dict(Counter(s.source for s in samples)),
        "corrected_mail": corrected_mail_header(samples),
        **{
            name: value
            for name, value in settings.items()
            if value or name in ("class_weight", "service_weight")
        },
    }


def _label_head(
    matrix: Any,
    samples: Sequence[Sample],
    name: str,
    c: float,
    class_weight: str | None,
    weights: npt.NDArray[np.float64] | None,
    category_weights: Mapping[str, float] | None,
) -> Head:
    """The service or the category head; the category's mails may weigh more by category."""
    if name == "category" and category_weights:
        by = np.array([category_weights.get(s.category, 1.0) for s in samples])
        weights = by if weights is None else weights * by
    head = _head(matrix, [getattr(s, name) for s in samples], c, class_weight, weights)
    if head is None:
        raise ConfigError("training data", name, "needs at least two different labels")
    return head


def _reorient_head(
    matrix: Any,
    samples: Sequence[Sample],
    c: float,
    class_weight: str | None,
    weights: npt.NDArray[np.float64] | None,
) -> Head | None:
    """Where a re-oriented mail goes (mairie, CAF…), learned from the re-oriented mails."""
    kept = [i for i, s in enumerate(samples) if s.service == REORIENT_SERVICE and s.reorient]
    picked = weights[kept] if weights is not None else None
    return _head(matrix[kept], [samples[i].reorient for i in kept], c, class_weight, picked)


def _complaint_head(
    matrix: Any,
    samples: Sequence[Sample],
    complaint: str,
    c: float,
    class_weight: str | None,
    weights: npt.NDArray[np.float64] | None,
    negatives: Mapping[str, float] | None,
) -> Head | None:
    """The binary complaint head; ``negatives``: a weight per category of the non-complaints
    (the look-alikes written in a complaint's words may count more)."""
    said = [COMPLAINT_YES if s.category == complaint else COMPLAINT_NO for s in samples]
    if negatives:
        extra = np.array([negatives.get(s.category, 1.0) for s in samples], dtype=np.float64)
        weights = extra if weights is None else weights * extra
    return _head(matrix, said, c, class_weight, weights)


def sample_weights(
    samples: Sequence[Sample], by_source: Mapping[str, float]
) -> npt.NDArray[np.float64]:
    """Each mail's weight in the loss: its source folder's (the folder's last name, e.g.
    ``dev`` or ``train-3a``; 1 when not named), so that a set written apart from the guide
    (the regression mails) or one writer's habits can count less than the rest."""
    return np.array([by_source.get(Path(s.source).name, 1.0) for s in samples], dtype=np.float64)


def calibrated(heads: dict[str, Head], temperature: float) -> dict[str, Head]:
    """The heads with the logits of ``CALIBRATED`` ones divided by ``temperature``: the
    softmax of logits / T, exported as coefficients and intercepts / T (still linear)."""
    return {
        name: Head(head.classes, head.coef / temperature, head.intercept / temperature)
        if name in CALIBRATED and temperature != 1.0
        else head
        for name, head in heads.items()
    }


def model_file_name(model: Classifier, settings: Mapping[str, Any]) -> str:
    """``routing-<data>-<settings>.npz``: the data hash alone named the file, so training the
    same data with another C, min-df or folds overwrote the model trained before (perhaps
    the one rules.yaml names). ``settings``: all ``routing train`` was given that changes
    the model but not its data (JSON-able), also written in its header (``train_settings``)."""
    text = json.dumps(settings, sort_keys=True)
    return f"routing-{model.version}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.npz"
