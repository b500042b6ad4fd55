"""``keywords.words`` reads a text as the regex it replaced did (issue 14: CPU per mail).

``words`` turns every character that is not a word character into a space with one
``str.translate`` (after ``str.replace`` of the common accents and quotes) and splits; the
words must be those of ``\\w+`` over ``fold(text)``, on any character.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mailbot.core.keywords import fold, words

DATA = Path(__file__).resolve().parent / "data"
_WORD = re.compile(r"\w+")


def _reference(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(fold(text)))


def _read(text: str) -> tuple[str, ...]:
    return words.__wrapped__(text)  # type: ignore[attr-defined,no-any-return]


def test_no_word_character_is_white_space() -> None:
    """What ``split`` relies on: it cuts only where the table put a space."""
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    spaces = re.findall(r"\s", every)  # str.isspace's characters (Py_UNICODE_ISSPACE)
    assert spaces == [c for c in every[:0x3100] if c.isspace()]  # all below U+3100
    assert not [c for c in spaces if _WORD.fullmatch(c)]


def test_every_bmp_character_and_a_sample_beyond_read_as_the_regex_read_them() -> None:
    beyond = range(0x10000, sys.maxunicode + 1, 16)  # all of them: 4 s more
    every = [chr(c) for c in (*range(0xD800), *range(0xE000, 0x10000), *beyond)]
    runs = ["".join(every[n : n + 300]) for n in range(0, len(every), 300)]
    # Each one between two letters (one text: the spaces keep them apart).
    between = " ".join("é" + c + "b" for c in every[0x80:0x3000])
    for text in [*runs, between]:
        assert _read(text) == _reference(text), ascii(text[:40])


def test_french_and_the_test_mails_read_as_before() -> None:
    texts = [
        "Carte GRISE ! « Déjà » l’œuvre, n° 12 – 15 € : Ça coûte ?",
        "ASCII only, with_under_score and 3 numbers 42",
        "",
        "Straße İstanbul ǅemal ﬁn ½ ² ℃",
    ]
    for path in sorted((DATA / "routing").glob("*.eml")):
        texts.append(path.read_bytes().decode("utf-8", "replace"))
    texts += (DATA / "languages.tsv").read_text(encoding="utf-8").splitlines()
    assert [_read(t) for t in texts] == [_reference(t) for t in texts]
