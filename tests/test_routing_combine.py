"""The stated combination of rules and model (mailbot/core/combine.py, issue 13 round 4):
the model's word when no rule fired, the confidence as the winner's share, per-service bars."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.app import training
from mailbot.config import RoutingModelConfig
from mailbot.core.classifier import Prediction
from mailbot.core.combine import category, combine, hold_bar
from mailbot.core.routing import RoutingDecision, RoutingInput

SAID = Prediction(("cabinet", "general", "etrangers"), (0.7, 0.2, 0.1))


def settings(**values: object) -> RoutingModelConfig:
    base: dict[str, object] = {"rule_weight": 0.7, "rule_damping": 20.0, "default_share": 0.2}
    return RoutingModelConfig(file=Path("unused.npz"), **{**base, **values})  # type: ignore[arg-type]


def test_without_a_rule_a_sure_model_outweighs_the_mailbox_default() -> None:
    """0.7 × 0.2 + 0.3 × 0.2 = 0.20 for general against 0.3 × 0.7 = 0.21 for cabinet."""
    decided = combine({}, SAID, settings(), "general")
    assert decided.label == "cabinet"
    assert decided.scores == {"cabinet": 0.21, "general": 0.2, "etrangers": 0.03}


def test_without_a_rule_a_hesitant_model_leaves_the_mail_at_its_mailbox() -> None:
    hesitant = Prediction(("cabinet", "general", "etrangers"), (0.5, 0.3, 0.2))
    assert combine({}, hesitant, settings(), "general").label == "general"


def test_a_full_default_share_keeps_the_old_rule_the_mailbox_wins() -> None:
    assert combine({}, SAID, settings(default_share=1.0), "general").label == "general"


def test_without_a_rule_the_category_is_the_models_alone() -> None:
    said = Prediction(("autre", "information"), (0.6, 0.4))
    decided = category({}, said, settings(), "information", "reclamation")
    assert decided.label == "autre" and decided.confidence == pytest.approx(0.6)


def test_confidence_is_the_winners_share_of_all_scores() -> None:
    decided = combine({"cabinet": 10, "general": 10}, SAID, settings(), "general")
    total = sum(decided.scores.values())
    assert decided.label == "cabinet"
    assert decided.confidence == pytest.approx(decided.scores["cabinet"] / total, abs=1e-3)


def test_each_service_has_its_own_hold_bar() -> None:
    bars = settings(min_confidence=0.64, min_confidence_by_service={"cabinet": 0.46})
    assert hold_bar(bars, "cabinet") == 0.46
    assert hold_bar(bars, "permis") == 0.64


def decision(service: str, to_check: bool) -> RoutingDecision:
    return RoutingDecision(
        service, "information", "normal", None, not to_check, (), {}, False, to_check
    )


def test_a_held_mail_is_scored_at_its_mailbox_service() -> None:
    """A right guess held "to check" stays at the mailbox's service: not yet routed."""
    facts = RoutingInput("general", "", "", "usager@example.fr", "fr", False)
    sample = training.Sample("a.eml", facts, "cabinet", "information")
    scored = training.Scored()
    scored.add(sample, decision("cabinet", to_check=True), "general")
    scored.add(sample, decision("cabinet", to_check=False), "general")
    assert scored.accuracy("service") == 1.0  # what was decided
    assert scored.accuracy("landed") == 0.5  # where the mails are
    assert scored.wrong_transfers == 0
