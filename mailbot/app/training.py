"""Training and evaluating the routing model (``mailbot routing train|evaluate``).

scikit-learn is needed by training only (the ``train`` extra), imported when a model is
fitted (``model_fit``, and ``stacking`` for the combiner): one multinomial logistic
regression per head on the TF-IDF matrix that ``mailbot.core.classifier`` computes, the
fitted numbers exported to the numpy-only model file production reads.

Evaluation always measures what ``mailbot explain`` would say — rules and model combined
by ``mailbot.core.routing.decide`` — never the model alone; ``train`` refuses a model that does
worse than the rules alone in k-fold cross-validation.

The parts are in ``mailbot.app``: ``training_samples`` (``Sample``, ``load_labelled``, the
data's hash and order), ``model_fit`` (``fit``, ``refit_heads``, the model's header),
``routing_scores`` (``Scored``, ``score``, ``with_model``, ``worse_than_rules``), ``kfold``
(the folds, ``out_of_fold``, ``cross_validate``) and ``stacking`` (the learned combiner).
This module is their face, with the routing that ``train`` and ``evaluate`` start from.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mailbot.app.kfold import (
    FOLDS_BY,
    cross_scores,
    cross_validate,
    folds,
    grouped_folds,
    groups_of,
    held_answers,
    out_of_fold,
)
from mailbot.app.model_fit import (
    CALIBRATED,
    CLASS_WEIGHT,
    DEFAULT_C,
    KEPT_HEADS,
    KEPT_META,
    MIN_CORRECTION_SENDERS,
    MIN_DF,
    SERVICE_WEIGHT,
    TEMPERATURE,
    calibrated,
    corrected_mail_header,
    fit,
    model_file_name,
    refit_heads,
    sample_weights,
    service_header,
)
from mailbot.app.routing_scores import SCORED_FIELDS, Scored, score, with_model, worse_than_rules
from mailbot.app.stacking import (
    STACK_C,
    STACK_INPUTS,
    STACKED,
    Answers,
    answered,
    evidence,
    fit_stacks,
    stack_columns,
    stacked,
)
from mailbot.app.training_samples import Sample, canonical, load_labelled, training_hash
from mailbot.config import Config, RoutingModelConfig
from mailbot.core.facts import compiled_routing
from mailbot.core.routing import CompiledRouting
from mailbot.errors import ConfigError

__all__ = [
    "CALIBRATED",
    "CLASS_WEIGHT",
    "DEFAULT_C",
    "FOLDS_BY",
    "KEPT_HEADS",
    "KEPT_META",
    "MIN_CORRECTION_SENDERS",
    "MIN_DF",
    "SCORED_FIELDS",
    "SERVICE_WEIGHT",
    "STACKED",
    "STACK_C",
    "STACK_INPUTS",
    "TEMPERATURE",
    "Answers",
    "Sample",
    "Scored",
    "answered",
    "base_routing",
    "calibrated",
    "canonical",
    "corrected_mail_header",
    "cross_scores",
    "cross_validate",
    "evidence",
    "fit",
    "fit_stacks",
    "folds",
    "grouped_folds",
    "groups_of",
    "held_answers",
    "load_labelled",
    "model_file_name",
    "out_of_fold",
    "refit_heads",
    "sample_weights",
    "score",
    "service_header",
    "settings_for",
    "stack_columns",
    "stacked",
    "training_hash",
    "with_model",
    "worse_than_rules",
]


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
