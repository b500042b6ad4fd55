"""The stated combination of rules and model (mailbot/core/combine.py, issue 13 round 4):
the model's word when no rule fired, the confidence as the winner's share, per-service bars;
round 5: the complaint probability is that of a complaint against the prefecture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailbot.app import training
from mailbot.config import RoutingConfig, RoutingModelConfig
from mailbot.core.classifier import COMPLAINT_NO, COMPLAINT_YES, Prediction
from mailbot.core.combine import category, combine, complaint_probability, hold_bar
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


def routing_config() -> RoutingConfig:
    return RoutingConfig(
        categories=["information", "reclamation", "autre", "intervention-prefet"],
        defaults={},
        combinations={
            "permis": ["information", "reclamation"],
            "autres-administrations": ["information", "autre"],
            "cabinet": ["intervention-prefet", "autre"],
        },
    )


def test_a_complaint_about_another_administration_is_not_one_against_the_prefecture() -> None:
    """The complaint head reads a complaint's words; the service head says where it goes:
    the share of services that may not take a complaint (re-orientation, cabinet) is out."""
    head = Prediction((COMPLAINT_YES, COMPLAINT_NO), (0.8, 0.2))
    elsewhere = Prediction(("autres-administrations", "permis", "cabinet"), (0.6, 0.3, 0.1))
    said = {"service": elsewhere, "complaint": head}
    assert complaint_probability(said, routing_config()) == pytest.approx(0.8 * 0.3)
    here = Prediction(("permis", "autres-administrations"), (0.9, 0.1))
    assert complaint_probability({"service": here, "complaint": head}, routing_config()) == (
        pytest.approx(0.72)
    )
    assert complaint_probability({"service": here}, routing_config()) is None


# A mail whose category confidence, summed in a set's order, was 0.9992 under one string hash
# seed and 0.9993 under another (bench/README.md, issue 14 eighth session).
SEEDED = (
    Path(__file__).parent / "data" / "corpus" / "train" / "t373-rassemblement-mairie-samedi.eml"
)
DECIDE = """
import sys
from pathlib import Path
from mailbot.config import load_config
from mailbot.core.facts import compiled_routing, routing_input
from mailbot.core.message import parse_message
from mailbot.core.routing import decide
config = load_config(Path(sys.argv[1]))
parsed = parse_message(Path(sys.argv[2]).read_bytes())
print(repr(decide(routing_input(config, "general", parsed), compiled_routing(config))))
"""


def test_a_decision_does_not_depend_on_the_process_hash_seed() -> None:
    """Two processes (a worker and `mailbot explain`, say) decide a mail to the bit alike."""
    rules = Path(__file__).resolve().parent.parent / "rules.yaml"
    said = {
        subprocess.run(
            [sys.executable, "-c", DECIDE, str(rules), str(SEEDED)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(said) == 1, said
