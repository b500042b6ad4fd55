"""Which language a citizen wrote in: lingua, restricted to the languages we expect.

lingua is chosen over py3langid for accuracy on short texts (a subject line, three
sentences): restricted to a dozen languages it tells Spanish from Italian and Portuguese
on a line, where py3langid hesitates. The model loads lazily, once per process.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

LANGUAGES = ("fr", "en", "ar", "es", "uk", "ru", "pt", "ro", "it", "de", "tr", "zh")
MIN_CONFIDENCE = 0.5
MIN_LETTERS = 3


@lru_cache(maxsize=1)
def _detector() -> Any:
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, code.upper()) for code in LANGUAGES]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code, or None when the text is too short or the guess too uncertain."""
    sample = text[:2000]
    if sum(c.isalpha() for c in sample) < MIN_LETTERS:
        return None
    values = _detector().compute_language_confidence_values(sample)
    if not values or values[0].value < MIN_CONFIDENCE:
        return None
    return str(values[0].language.iso_code_639_1.name.lower())
