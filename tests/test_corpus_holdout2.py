"""The second held-out routing set (``tests/data/corpus/holdout-2``) is frozen and never trained on.

Written on 2026-12-04 by four new hands from docs/routing-guide.md and WRITING.md alone (no
rules, code, plan scenarios or corpus mails), to the original plan's label mix, and read again
blind by four other readers; frozen (hashed) before mailbot ever scored it. See PLAN.md,
"The second held-out set".
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from mailbot.routing_commands import DEFAULT_LABELLED

CORPUS = Path(__file__).parent / "data" / "corpus"
HOLDOUT = CORPUS / "holdout-2"


def test_second_held_out_set_is_unchanged() -> None:
    digest = hashlib.sha256()
    for path in sorted(HOLDOUT.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    assert digest.hexdigest() == (CORPUS / "HOLDOUT2.sha256").read_text().strip()


def test_second_held_out_set_is_never_training_data() -> None:
    assert not [name for name in DEFAULT_LABELLED if "holdout" in name or name.endswith("/test")]


def test_second_held_out_set_follows_the_plans_label_mix() -> None:
    """Same services, categories and hard share as the first plan, so that its figures
    compare with the first test half's."""

    def mix(path: Path) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        with path.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                key = (row["service"], row["category"])
                counts[key] = counts.get(key, 0) + 1
        return counts

    assert mix(HOLDOUT / "labels.csv") == mix(CORPUS / "plan.csv")
    with (HOLDOUT / "labels.csv").open(encoding="utf-8") as handle:
        labels = list(csv.DictReader(handle))
    assert {row["file"] for row in labels} == {p.name for p in HOLDOUT.glob("*.eml")}
    assert len(labels) == 420
