"""The routing corpus's test half is frozen: nobody tunes on it, nobody edits it.

Its files and labels were hashed once when the corpus was split (seeded, stratified by service
and complaint); any change to a file, a label or the list of files fails this test. Figures
reported for routing are measured on this half only (the dev half is for writing rules and
training); see tests/data/corpus/PLAN.md.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "corpus"


def test_frozen_test_half_is_unchanged() -> None:
    digest = hashlib.sha256()
    for path in sorted((CORPUS / "test").iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    assert digest.hexdigest() == (CORPUS / "TEST_SPLIT.sha256").read_text().strip()


def test_halves_are_disjoint_and_cover_the_plan() -> None:
    with (CORPUS / "plan.csv").open(encoding="utf-8") as handle:
        planned = {row["id"] for row in csv.DictReader(handle)}
    halves = {}
    for side in ("dev", "test"):
        with (CORPUS / side / "labels.csv").open(encoding="utf-8") as handle:
            labels = list(csv.DictReader(handle))
        files = {p.name for p in (CORPUS / side).glob("*.eml")}
        assert {row["file"] for row in labels} == files
        halves[side] = {name[:3] for name in files}
    assert not halves["dev"] & halves["test"]
    assert halves["dev"] | halves["test"] == planned
    assert len(halves["test"]) >= 200
