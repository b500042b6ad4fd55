"""Language detection on short citizens' messages: ≥ 90 % on a labelled set of 8 languages."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from mailbot.core.language import detect_language

DATA = Path(__file__).resolve().parent / "data" / "languages.tsv"


def test_accuracy_on_short_messages() -> None:
    with DATA.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) >= 40 and len({r["lang"] for r in rows}) >= 5
    first = time.perf_counter()
    wrong = [(r["lang"], detect_language(r["text"]), r["text"]) for r in rows]
    first_ms = (time.perf_counter() - first) * 1000  # includes loading each language's model
    start = time.perf_counter()
    for row in rows:
        detect_language(row["text"])
    per_message_ms = (time.perf_counter() - start) / len(rows) * 1000
    wrong = [w for w in wrong if w[0] != w[1]]
    accuracy = 1 - len(wrong) / len(rows)
    print(
        f"language detection: {accuracy:.1%} on {len(rows)} messages, {per_message_ms:.2f} ms"
        f" each once loaded (first pass, loading the models: {first_ms:.0f} ms)"
    )
    assert accuracy >= 0.90, wrong


def test_too_short_or_unclear_is_none() -> None:
    assert detect_language("?? 06 00 00 00 01") is None
    assert detect_language("") is None
