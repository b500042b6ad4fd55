"""The routing figures' complaint counts and their 95 % intervals (routing evaluate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.app import training
from mailbot.app.routing_figures import complaint_counts, figures, format_figures, wilson_interval
from mailbot.app.routing_scores import Scored
from mailbot.config import load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("hits", "trials"), [(23, 26), (23, 25), (23, 23), (0, 7), (1, 1), (133, 136), (500, 1000)]
)
def test_the_wilson_interval_is_scipys(hits: int, trials: int) -> None:
    from scipy.stats import binomtest  # 1.7 s of import: in the worker that runs this only

    expected = binomtest(hits, trials).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(hits, trials)
    assert low == pytest.approx(expected.low, abs=1e-9)
    assert high == pytest.approx(expected.high, abs=1e-9)


def test_no_trials_says_nothing_is_known() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def scored(categories: list[tuple[str, str]]) -> Scored:
    n = len(categories)
    return Scored(
        services=[("general", "general")] * n,
        categories=categories,
        moved=[False] * n,
        to_check=[False] * n,
        mailboxes=["general"] * n,
        sources=["test"] * n,
        landed=[("general", "general")] * n,
        targets=[("", "")] * n,
    )


def test_complaint_counts_are_the_precision_and_recall_fractions() -> None:
    pairs = [("reclamation", "reclamation")] * 23 + [("autre", "reclamation")] * 3
    pairs += [("reclamation", "information")] * 2 + [("information", "information")] * 10
    counts = complaint_counts(scored(pairs))
    assert (counts["right"], counts["decided"], counts["expected"]) == (23, 26, 25)
    assert counts["precision_interval"][0] < 23 / 26 < counts["precision_interval"][1]
    assert counts["recall_interval"][0] < 23 / 25 < counts["recall_interval"][1]
    shown = figures(scored(pairs))
    assert shown["complaint_precision"] == round(23 / 26, 4)
    assert shown["complaint_counts"] == counts


def test_the_report_prints_the_counts_and_intervals() -> None:
    pairs = [("reclamation", "reclamation")] * 23 + [("autre", "reclamation")] * 3
    text = format_figures(scored(pairs))
    assert "complaints: 23 right of 26 decided (precision 95 % interval 71.0%-96.0%)" in text
    assert "of 23 expected (recall 95 % interval 85.7%-100.0%)" in text


def write_labelled(folder: Path, rows: list[tuple[str, str, str]]) -> None:
    """A tiny labelled folder as ``routing evaluate --test`` reads it: (body, service,
    re-orientation target) per mail, all written to the general mailbox."""
    lines = ["file,mailbox,service,category,reorient"]
    for n, (body, service, target) in enumerate(rows):
        name = f"{n:03d}.eml"
        mail = f"From: usager@example.fr\nTo: contact@example.gouv.fr\nSubject: Demande\n\n{body}\n"
        (folder / name).write_text(mail, encoding="utf-8")
        lines.append(f"{name},general,{service},information,{target}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_mail_reoriented_to_the_wrong_administration_is_a_wrong_transfer(
    tmp_path: Path,
) -> None:
    """The rules send an "acte de naissance" to the mairie. Labelled for the CAF, it went to
    the wrong administration: moved automatically to the wrong place, a wrong transfer, though
    its service (autres-administrations) is the one expected."""
    config = load_config(ROOT / "rules.yaml")
    body = "Bonjour, je voudrais une copie de mon acte de naissance. Merci."
    write_labelled(
        tmp_path,
        [(body, "autres-administrations", "caf"), (body, "autres-administrations", "mairie")],
    )
    rules = training.with_model(training.base_routing(config), None, None)
    scored = training.score(training.load_labelled(config, tmp_path), rules)
    assert scored.moved == [True, True]
    assert scored.accuracy("service") == 1.0  # the service is right for both
    assert scored.wrong_transfers == 1
    assert figures(scored)["wrong_transfers"] == 1
    assert "wrong transfers 1 (50.0%)" in format_figures(scored)


def test_a_reorientation_whose_target_is_not_labelled_is_not_counted_wrong(
    tmp_path: Path,
) -> None:
    """The regression set (tests/data/routing) labels its re-oriented mails without a target
    (no reorient column): the administration chosen cannot be judged there, and the right
    service is not a wrong transfer."""
    config = load_config(ROOT / "rules.yaml")
    body = "Bonjour, je voudrais une copie de mon acte de naissance. Merci."
    write_labelled(tmp_path, [(body, "autres-administrations", "")])
    rules = training.with_model(training.base_routing(config), None, None)
    scored = training.score(training.load_labelled(config, tmp_path), rules)
    assert scored.moved == [True]
    assert scored.wrong_transfers == 0
