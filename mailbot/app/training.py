"""Training and evaluating the routing model (``mailbot routing train|evaluate``).

scikit-learn is needed here only (the ``train`` extra): it fits one multinomial logistic
regression per head on the TF-IDF matrix that ``mailbot.core.classifier`` computes, and the
fitted numbers are exported to the numpy-only model file production reads.

Evaluation always measures what ``mailbot explain`` would say — rules and model combined
by ``mailbot.routing.decide`` — never the model alone; ``train`` refuses a model that does
worse than the rules alone in k-fold cross-validation.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mailbot.config import REORIENT_SERVICE, Config, RoutingModelConfig
from mailbot.core.classifier import (
    COMPLAINT_NO,
    COMPLAINT_YES,
    Classifier,
    CorrectedMail,
    Head,
    Prediction,
    corrected_mail,
    data_hash,
    model_text,
    raw_counts,
    smooth_idf,
    tfidf,
)
from mailbot.core.facts import compiled_routing, routing_input
from mailbot.core.message import parse_message
from mailbot.core.routing import CompiledRouting, RoutingDecision, RoutingInput, decide
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


@dataclass(frozen=True)
class Sample:
    """One labelled mail, as routing sees it."""

    name: str
    facts: RoutingInput
    service: str
    category: str
    reorient: str = ""
    source: str = "labelled"
    # When a citizen's mail was received (an agent's correction, read again from IMAP; the
    # earlier of its INTERNALDATE and its recording, as the purge goes by): set, the mail is
    # a citizen's, dated in the model's header and held to the vocabulary's rule for
    # corrected mail (``_vocabulary``); None for the labelled corpora's invented mail.
    received: datetime | None = None

    @property
    def words(self) -> tuple[list[str], list[str]]:
        return model_text(self.facts.subject, _text(self.facts))


def _text(facts: RoutingInput) -> Any:
    from mailbot.core.routing_text import RoutingText

    return RoutingText(facts.body, facts.quoted)


def load_labelled(config: Config, folder: Path, source: str = "labelled") -> list[Sample]:
    """The mails of a folder with a labels.csv (file, mailbox, service, category[, reorient])."""
    labels = folder / "labels.csv"
    try:
        with labels.open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(str(labels), "", f"cannot read labels: {exc.strerror}") from None
    samples = []
    for row in rows:
        raw = (folder / row["file"]).read_bytes()
        facts = routing_input(config, row["mailbox"], parse_message(raw))
        samples.append(
            Sample(
                row["file"],
                facts,
                row["service"],
                row["category"],
                row.get("reorient") or "",
                source,
            )
        )
    return samples


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


def training_hash(samples: Iterable[Sample]) -> str:
    """The hash a model is named by: of all it learns from — each mail's text and mailbox
    (an input of the stacked service regression) and its labels, the re-orientation target
    (the reorient head's) included — in no particular order."""
    return data_hash(
        (
            f"{s.facts.mailbox}\0{s.facts.subject}\n{s.facts.body}\n{s.facts.quoted}",
            f"{s.service}\0{s.reorient}",
            s.category,
        )
        for s in samples
    )


def model_file_name(model: Classifier, settings: Mapping[str, Any]) -> str:
    """``routing-<data>-<settings>.npz``: the data hash alone named the file, so training the
    same data with another C, min-df or folds overwrote the model trained before (perhaps
    the one rules.yaml names). ``settings``: all ``routing train`` was given that changes
    the model but not its data (JSON-able), also written in its header (``train_settings``)."""
    text = json.dumps(settings, sort_keys=True)
    return f"routing-{model.version}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.npz"


def canonical(samples: Iterable[Sample]) -> list[Sample]:
    """``samples`` in an order that depends on what they are, not where they were read
    (each one's ``training_hash``, then its folder and name): the same data, the same folds."""
    return sorted(samples, key=lambda s: (training_hash([s]), s.source, s.name))


# -- evaluation --------------------------------------------------------------------------
@dataclass
class Scored:
    """Expected and decided labels of a set of mails, and what was done with them."""

    services: list[tuple[str, str]] = field(default_factory=list)
    categories: list[tuple[str, str]] = field(default_factory=list)
    moved: list[bool] = field(default_factory=list)  # transferred or re-oriented
    to_check: list[bool] = field(default_factory=list)
    mailboxes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # each mail's folder (``by_source``)
    # (expected, the service the mail is recorded at): a held mail stays at its mailbox's own
    # service (app/mail_row), so a right guess held "to check" is not yet a right routing.
    landed: list[tuple[str, str]] = field(default_factory=list)
    # (expected, decided) re-orientation target ("" for none, or not labelled): a mail
    # re-oriented to the CAF instead of the mairie has the right service, the wrong place.
    targets: list[tuple[str, str]] = field(default_factory=list)

    def add(self, sample: Sample, decision: RoutingDecision, own: str | None) -> None:
        self.services.append((sample.service, decision.service))
        held_at = own if decision.to_check and own else decision.service
        self.landed.append((sample.service, held_at))
        self.categories.append((sample.category, decision.category))
        self.moved.append(decision.service != own and not decision.to_check)
        self.to_check.append(decision.to_check)
        self.mailboxes.append(sample.facts.mailbox)
        self.sources.append(Path(sample.source).name)
        self.targets.append((sample.reorient, decision.reorient or ""))

    @property
    def count(self) -> int:
        return len(self.services)

    def accuracy(self, which: str) -> float:
        """``service`` (the service decided, held or not), ``landed`` (where the mail is
        recorded: held mail at its mailbox's service) or ``category``."""
        pairs = {"service": self.services, "landed": self.landed}.get(which, self.categories)
        return sum(e == g for e, g in pairs) / len(pairs) if pairs else 0.0

    @property
    def wrong_transfers(self) -> int:
        """Mails moved automatically (transfer or re-orientation) to the wrong place: the
        wrong service, or the right one (autres-administrations) but the wrong
        administration, when the mail's labels name it (tests/data/routing does not)."""
        return sum(
            moved and (service[0] != service[1] or target[0] not in ("", target[1]))
            for moved, service, target in zip(self.moved, self.services, self.targets, strict=True)
        )

    def part(self, keep: Sequence[bool]) -> Scored:
        """The same figures for the mails ``keep`` marks (in the order they were added)."""
        found = Scored()
        for name in SCORED_FIELDS:
            mine = getattr(self, name)
            getattr(found, name).extend(x for x, kept in zip(mine, keep, strict=True) if kept)
        return found

    def by_source(self) -> dict[str, Scored]:
        """The figures of each source folder apart (a writer's mails under grouped folds)."""
        return {
            name: self.part([s == name for s in self.sources]) for name in sorted(set(self.sources))
        }

    def precision_recall(self, label: str, which: str = "category") -> tuple[float, float]:
        pairs = self.categories if which == "category" else self.services
        tp = sum(e == g == label for e, g in pairs)
        decided = sum(g == label for _, g in pairs)
        expected = sum(e == label for e, _ in pairs)
        return (tp / decided if decided else 1.0, tp / expected if expected else 1.0)


def worse_than_rules(combined: Scored, alone: Scored) -> list[str]:
    """What the model makes worse than the rules alone on the same mails (``routing train``
    refuses it then): the service where each mail is recorded — the rules alone hold nothing,
    so theirs is where their mails land, while a mail the model holds "to check" stays at its
    mailbox's service whatever it guessed — and the category."""
    pairs = (("service", "landed"), ("category", "category"))
    return [name for name, which in pairs if combined.accuracy(which) < alone.accuracy(which)]


SCORED_FIELDS = (
    "services",
    "categories",
    "moved",
    "to_check",
    "mailboxes",
    "sources",
    "landed",
    "targets",
)


def with_model(
    routing: CompiledRouting,
    model: Classifier | Answers | None,
    settings: RoutingModelConfig | None,
) -> CompiledRouting:
    """The same rules with another model (or none: the rules alone)."""
    config = routing.config.model_copy(update={"model": settings if model else None})
    return replace(routing, config=config, model=model)  # type: ignore[arg-type]  # Answers


def score(samples: Iterable[Sample], routing: CompiledRouting) -> Scored:
    scored = Scored()
    for sample in samples:
        decision = decide(sample.facts, routing)
        scored.add(sample, decision, routing.own_service.get(sample.facts.mailbox))
    return scored


def folds(
    count: int, k: int, seed: int = 13, groups: Sequence[str] | None = None
) -> list[list[int]]:
    """The k folds of ``count`` samples (their indices): shuffled at random, or with
    ``groups`` (one name per sample) whole groups held out together (``grouped_folds``)."""
    if groups is not None:
        return grouped_folds(groups, k)
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return [order[i::k] for i in range(k)]


FOLDS_BY = ("random", "source")  # the ways ``routing evaluate|train --folds-by`` cut the folds


def grouped_folds(groups: Sequence[str], k: int) -> list[list[int]]:
    """Folds that never split a group (a writer's folder): a random k-fold puts some of each
    writer's mails in every fold, so the models learn the writer's habits and the k-fold
    overstates what mail from another hand gets. The largest group first goes to the fold with
    the fewest mails so far (the counts balanced); with ``k`` at least the number of groups,
    one group per fold (leave one group out). Deterministic: the same data, the same folds."""
    members: dict[str, list[int]] = {}
    for i, name in enumerate(groups):
        members.setdefault(name, []).append(i)
    order = sorted(members, key=lambda name: (-len(members[name]), name))
    found: list[list[int]] = [[] for _ in range(min(k, len(order)))]
    for name in order:
        smallest = min(range(len(found)), key=lambda f: (len(found[f]), f))
        found[smallest].extend(members[name])
    return found


def groups_of(samples: Sequence[Sample], by: str | None) -> list[str] | None:
    """Each sample's group for ``folds`` (``source``: its folder's last name), or None for a
    random k-fold (``random`` or None)."""
    if by in (None, "random"):
        return None
    if by != "source":
        raise ConfigError("--folds-by", str(by), f"one of {', '.join(FOLDS_BY)}")
    return [Path(s.source).name for s in samples]


def out_of_fold(
    samples: Sequence[Sample],
    k: int = 5,
    extra: Sequence[Sample] = (),
    train: Callable[[Sequence[Sample]], Classifier] = fit,
    cache: Path | None = None,
    fit_key: Mapping[str, Any] | None = None,
    groups: Sequence[str] | None = None,
) -> dict[int, dict[str, Prediction]]:
    """Each sample's answers by the model of its fold, trained on the other folds (plus
    ``extra``, e.g. the agents' corrections, never answered). ``cache``: a folder where each
    fold's answers are kept (``held_answers``), ``fit_key`` naming ``train``'s settings.
    ``groups``: whole groups held out together (``folds``)."""
    said: dict[int, dict[str, Prediction]] = {}
    for held in folds(len(samples), k, groups=groups):
        said.update(held_answers(samples, held, train, extra, cache, fit_key or {}))
    return said


def held_answers(
    samples: Sequence[Sample],
    held: Sequence[int],
    train: Callable[[Sequence[Sample]], Classifier],
    extra: Sequence[Sample] = (),
    cache: Path | None = None,
    fit_key: Mapping[str, Any] | None = None,
) -> dict[int, dict[str, Prediction]]:
    """The answers on ``held`` of a model trained on the other samples and ``extra``. With a
    ``cache`` folder they are read from it when the same training set, held mails and fit
    settings (``fit_key``) were answered before (tuning refits nothing twice), else written."""
    path = None
    if cache is not None:
        digest = hashlib.sha256(repr(sorted((fit_key or {}).items())).encode())
        digest.update(training_hash(samples).encode())
        digest.update(repr(sorted(held)).encode())
        # The answers are kept by index: the same mails in another order hold other mails
        # at these indices, whose answers these are not (each held mail named, in order).
        for i in sorted(held):
            digest.update(training_hash([samples[i]]).encode())
        if extra:  # and the rule their features are kept by (answers cached before it differ)
            digest.update(training_hash(extra).encode())
            digest.update(f"senders {MIN_CORRECTION_SENDERS}".encode())
        path = cache / f"answers-{digest.hexdigest()[:16]}.pkl"
        if path.exists():
            with path.open("rb") as handle:
                found: dict[int, dict[str, Prediction]] = pickle.load(handle)
            return found
    held_set = set(held)
    model = train([s for i, s in enumerate(samples) if i not in held_set] + list(extra))
    found = {i: model.classify(samples[i].facts.subject, _text(samples[i].facts)) for i in held}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            pickle.dump(found, handle)
    return found


def cross_scores(
    samples: Sequence[Sample],
    said: dict[int, dict[str, Prediction]],
    routing: CompiledRouting,
    settings: RoutingModelConfig,
    k: int = 5,
    stack: bool = True,
    groups: Sequence[str] | None = None,
    header: Mapping[str, Any] | None = None,
) -> tuple[Scored, Scored]:
    """(rules and model, rules alone) on every sample from its out-of-fold answers, each
    fold's stacked regressions trained on the other folds' answers (``stack``); ``groups``
    as ``out_of_fold``'s (the same folds). ``header``: every fold's stacked regressions, as
    given (a kept model's, ``service_header``: never refitted)."""
    combined, alone = Scored(), Scored()
    rules = with_model(routing, None, None)
    for held in folds(len(samples), k, groups=groups):
        held_set = set(held)
        others = {i: answer for i, answer in said.items() if i not in held_set}
        if header is not None:
            meta = dict(header)
        else:
            meta = {"stack": fit_stacks(samples, others, routing)} if stack else {}
        fold = with_model(routing, answered(samples, {i: said[i] for i in held}, meta), settings)
        for i in held:
            own = routing.own_service.get(samples[i].facts.mailbox)
            combined.add(samples[i], decide(samples[i].facts, fold), own)
            alone.add(samples[i], decide(samples[i].facts, rules), own)
    return combined, alone


def cross_validate(
    samples: Sequence[Sample],
    routing: CompiledRouting,
    settings: RoutingModelConfig,
    k: int = 5,
    extra: Sequence[Sample] = (),
    train: Callable[[Sequence[Sample]], Classifier] = fit,
    groups: Sequence[str] | None = None,
    cache: Path | None = None,
    fit_key: Mapping[str, Any] | None = None,
) -> tuple[Scored, Scored]:
    """(rules and model, rules alone) by k-fold: ``out_of_fold`` then ``cross_scores``."""
    said = out_of_fold(samples, k, extra, train, cache, fit_key, groups)
    return cross_scores(samples, said, routing, settings, k, groups=groups)


def settings_for(config: Config) -> RoutingModelConfig:
    """The combination settings of rules.yaml, or the defaults when no model is named yet."""
    if config.routing is not None and config.routing.model is not None:
        return config.routing.model
    return RoutingModelConfig(file=Path("unused.npz"))


def base_routing(config: Config) -> CompiledRouting:
    """The compiled rules without loading the configured model (training makes its own)."""
    if config.routing is None:
        raise ConfigError("rules.yaml", "routing", "no routing section to train for")
    bare = config.model_copy(update={"routing": config.routing.model_copy(update={"model": None})})
    routing = compiled_routing(bare)
    assert routing is not None
    return replace(routing, config=config.routing)


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
        text = _text(samples[i].facts)
        replay[samples[i].facts.subject, text.own, text.quoted] = answer
    return Answers(replay, meta)


def evidence(sample: Sample, said: dict[str, Prediction], routing: CompiledRouting) -> Any:
    """What the stacked decisions read of a mail (combine.Evidence), and the rules' tally."""
    from mailbot.core.combine import Evidence
    from mailbot.core.routing import _tally

    tally = _tally(sample.facts, routing)
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
