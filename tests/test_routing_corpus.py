"""Regression guards on the two frozen held-out sets of the routing corpus (issue 13).

`mailbot explain DIR --json` on tests/data/corpus/test/ (the plan's test half) and on
tests/data/corpus/holdout-2/ (420 mails by four new hands, frozen before it was first scored),
exactly as an agent would run it, compared with the labels. The floors sit a little under the figures measured when the model
was shipped (README, "Routing"; tests/data/corpus/PLAN.md): they catch a regression, they
are not the targets. The confusion tables are printed (`pytest -s`). Nothing here is used to
tune anything: the test half is for reporting only.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from mailbot.app.routing_figures import confusion, per_class

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
CONFIG = ROOT / "rules.yaml"
OWN = {"general": "general", "etrangers": "etrangers"}  # mailbox → its own service

# Regression guards, not targets (the targets: service 95 %, category 90 %, wrong
# transfers 2 %, complaint precision 95 %, recall 90 %). Measured once at shipping on this half,
# model routing-2359308ca52a (issue 13 round 9: 3677 training mails; stack and bars chosen on
# grouped folds, without the test half): service 96.2 % as decided (91.9 % as recorded),
# category 93.4 %, wrong transfers 3 (1.4 %; 2 before a re-orientation to the wrong
# administration counted as one, 2026-12-03), complaint precision 92.0 % (23 of 25; below
# target), recall 100 %. Round 8 (routing-eef107432cbb, 3317 mails): 95.3 % (90.5 %), 93.8 %,
# 0.9 %, 92.0 %, 100 %; round 7 (2867 mails): 93.8 % (89.6 %), 92.4 %, 1.9 %, 85.2 %, 100 %.
# The floors sit two to three mails under round 9's figures, so that a retrained model may
# move a mail or two but not lose what the rounds gained.
#
# holdout-2, scored once with the same model on 2026-12-04 (17:38 UTC) after it was frozen
# (commit fa360d18): service 97.9 % as decided (95.5 % as recorded), category 96.4 %, wrong
# transfers 5 (1.2 %), complaint precision 100 % (44 of 44), recall 93.6 % (44 of 47). Its
# floors sit likewise two to three mails under.
FLOORS = {
    # set: (service, category, wrong transfers at most, complaint precision, recall)
    "test": (0.95, 0.92, 0.02, 0.88, 0.90),
    "holdout-2": (0.97, 0.95, 0.02, 0.95, 0.90),
}
SETS = pytest.mark.parametrize("name", sorted(FLOORS))


@lru_cache(maxsize=2)
def decided(name: str) -> tuple[list[dict[str, str]], dict[str, dict[str, object]]]:
    with (CORPUS / name / "labels.csv").open(encoding="utf-8") as handle:
        labels = list(csv.DictReader(handle))
    args = (str(CORPUS / name), "--json")
    run = subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--config", str(CONFIG), "explain", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    explained = {Path(o["file"]).name: o for o in map(json.loads, run.stdout.splitlines())}
    return labels, explained


@SETS
def test_held_out_regression_guard(name: str) -> None:
    service_floor, category_floor, wrong_ceiling, _, _ = FLOORS[name]
    labels, explained = decided(name)
    services = [(row["service"], str(explained[row["file"]]["service"])) for row in labels]
    categories = [(row["category"], str(explained[row["file"]]["category"])) for row in labels]
    wrong = 0
    for row in labels:
        got = explained[row["file"]]
        moved = got["service"] != OWN[row["mailbox"]] and not got["to_check"]
        wrong += moved and (
            got["service"] != row["service"] or row["reorient"] not in ("", got["reorient"] or "")
        )
        assert set(got) >= {"ar", "ar_reasons", "service", "category", "actions", "rule_hits"}
        assert got["model"] is not None  # the shipped configuration names a model
    service_rate = sum(e == g for e, g in services) / len(labels)
    category_rate = sum(e == g for e, g in categories) / len(labels)
    print(
        f"\n{name}: service {service_rate:.1%}, category {category_rate:.1%}, wrong transfers"
        f" {wrong} ({wrong / len(labels):.1%}) on {len(labels)} mails"
        f"\nservices:\n{confusion(services)}\ncategories:\n{confusion(categories)}"
    )
    assert service_rate >= service_floor
    assert category_rate >= category_floor
    assert wrong / len(labels) <= wrong_ceiling


@SETS
def test_held_out_complaint_precision(name: str) -> None:
    """A question counted as a complaint distorts the Qual-e-pref audit: precision first."""
    *_, precision_floor, recall_floor = FLOORS[name]
    labels, explained = decided(name)
    pairs = [(row["category"], str(explained[row["file"]]["category"])) for row in labels]
    complaint = per_class(pairs)["reclamation"]
    print(f"\nreclamation: {complaint}")
    assert complaint["precision"] >= precision_floor
    assert complaint["recall"] >= recall_floor


def test_evaluate_no_kfold_scores_only_the_given_folder() -> None:
    """A new writer's folder is scored once by the shipped model, without a k-fold."""
    regression = ROOT / "tests" / "data" / "routing"
    command = [sys.executable, "-m", "mailbot.cli", "--config", str(CONFIG), "routing"]
    run = subprocess.run(
        [*command, "evaluate", "--test", str(regression), "--no-kfold", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout)
    with (regression / "labels.csv").open(encoding="utf-8") as handle:
        mails = sum(1 for _ in csv.DictReader(handle))
    assert "kfold" not in result
    assert result["test"]["mails"] == result["test_rules_alone"]["mails"] == mails
    assert Path(result["model"]).name.startswith("routing-")
    refused = subprocess.run(
        [*command, "evaluate", "--no-kfold", "--no-test"], capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "--no-kfold" in refused.stderr
