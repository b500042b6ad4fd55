"""Language detection: today's answers against the previous ones, and the time per mail.

    python bench/language.py

Every mail the project holds (the demo's mailboxes, every .eml under tests/data) and the
48 labelled messages of tests/data/languages.tsv, read as routing reads them (subject and
body): the previous detection (lingua alone on 2,000 characters) against today's (the
French fast path, then lingua on 400 characters), with the agreement, each disagreement,
how often the fast path answered, and the time per text of each once the models are loaded.
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailbot.core import language  # noqa: E402
from mailbot.core.facts import SUBJECT_LIMIT  # noqa: E402
from mailbot.core.message import parse_message  # noqa: E402


def texts() -> list[tuple[str, str]]:
    files = [
        *sorted((ROOT / "mailbot" / "demo_data" / "maildir").glob("*/cur/*")),
        *sorted((ROOT / "tests" / "data").rglob("*.eml")),
    ]
    found = []
    for path in files:
        parsed = parse_message(path.read_bytes())
        text = f"{parsed.subject[:SUBJECT_LIMIT]}\n{parsed.body_text[:2000]}"
        found.append((str(path.relative_to(ROOT)), text))
    with (ROOT / "tests" / "data" / "languages.tsv").open(encoding="utf-8") as handle:
        for n, row in enumerate(csv.DictReader(handle, delimiter="\t")):
            found.append((f"languages.tsv:{n + 2}", row["text"]))
    return found


def previous(text: str) -> str | None:
    """detect_language before issue 14: lingua alone on the first 2,000 characters."""
    sample = text[:2000]
    if sum(c.isalpha() for c in sample) < language.MIN_LETTERS:
        return None
    return language.lingua_language(sample)


def per_text(detect: Callable[[str], str | None], samples: list[str]) -> float:
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for text in samples:
            detect(text)
        runs.append((time.perf_counter() - start) / len(samples))
    return statistics.median(runs) * 1000


def main() -> None:
    found = texts()
    language.warm_up()
    before = [previous(text) for _, text in found]
    after = [language.detect_language(text) for _, text in found]
    fast = sum(language.clearly_french(text[: language.SAMPLE]) for _, text in found)
    same = sum(b == a for b, a in zip(before, after, strict=True))
    print(f"{len(found)} texts: {Counter(before).most_common()}")
    print(f"agreement with the previous detection: {same}/{len(found)} ({same / len(found):.2%})")
    print(f"French fast path answered for {fast} ({fast / len(found):.1%})")
    for (name, _), b, a in zip(found, before, after, strict=True):
        if b != a:
            print(f"  {name}: before {b}, now {a}")
    samples = [text for _, text in found]
    old, new = per_text(previous, samples), per_text(language.detect_language, samples)
    print(f"per text: before {old:.3f} ms, now {new:.3f} ms ({old / new:.1f}x faster)")


if __name__ == "__main__":
    main()
