"""Cross-validation: the folds (at random, or whole writers' folders held out together),
each mail's answers by the model of its fold (cached for tuning), and the combined
decisions scored against the rules alone."""

from __future__ import annotations

import hashlib
import pickle
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mailbot.app.model_fit import MIN_CORRECTION_SENDERS, fit
from mailbot.app.routing_scores import Scored, with_model
from mailbot.app.stacking import answered, fit_stacks
from mailbot.app.training_samples import Sample, facts_text, training_hash
from mailbot.config import RoutingModelConfig
from mailbot.core.classifier import Classifier, Prediction
from mailbot.core.routing import CompiledRouting, decide
from mailbot.errors import ConfigError


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
    found = {
        i: model.classify(samples[i].facts.subject, facts_text(samples[i].facts)) for i in held
    }
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
