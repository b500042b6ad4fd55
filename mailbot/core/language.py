"""Which language a citizen wrote in: lingua, restricted to the languages we expect.

lingua is chosen over py3langid for accuracy on short texts (a subject line, three
sentences): restricted to a dozen languages it tells Spanish from Italian and Portuguese
on a line, where py3langid hesitates. It reads the first ``SAMPLE`` characters: a few
sentences decide, and its cost grows with the text.

Most mail is French, and says so in its first words: a text in Latin script whose words
are many French function words ("je", "vous", "pour"...) and hardly any of another
language's is French without asking lingua (issue 14, point 4: lingua was a tenth of the
time per mail). tests/test_language.py checks that lingua agrees wherever this fast path
answers, on every mail the project holds.

The models load lazily, once per process; ``warm_up`` loads them all before a worker's
first poll (a first short text would otherwise load them while a citizen waits).

Loading them costs ~4.5 s of CPU, reading a text 0.4 ms: the commands that read the same
files again and again (``explain``, ``routing train`` and ``evaluate``) may give lingua a
memory of what it said (``remember_with``; ``mailbot.langcache`` keeps one on disk), and
then load no model when every text was read before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import islice
from typing import Any, Protocol

# Persian ("fa") is here though mailbot has no Persian translation: in Arabic script, it
# would otherwise be named Arabic, and a Persian speaker's AR translated into a language
# they do not read (it falls back to English, as for any language without a translation).
LANGUAGES = ("fr", "en", "ar", "fa", "es", "uk", "ru", "pt", "ro", "it", "de", "tr", "zh")
# Those written right to left: the console shows a citizen's text in them with dir="rtl".
RIGHT_TO_LEFT = frozenset({"ar", "fa"})
MIN_CONFIDENCE = 0.5
MIN_LETTERS = 3
SAMPLE = 400  # characters lingua reads

# Words of French and of no other expected language (or rare in them), and words of the
# other Latin-script languages that French does not use. Not "il" (Italian's article) nor
# "y" (Spanish "and"): French says "il y a", "s'il vous plaît", and one of them in a French
# mail sent one French mail in seven to lingua (issue 14: about 1 ms each there).
_FRENCH = frozenset(
    [
        "je",
        "vous",
        "nous",
        "est",
        "les",
        "une",
        "pour",
        "dans",
        "avec",
        "bonjour",
        "merci",
        "suis",
        "votre",
        "vos",
        "cette",
        "sont",
        "madame",
        "monsieur",
        "cordialement",
        "été",
        "être",
        "avoir",
        "aux",
        "mon",
        "mes",
        "ces",
        "sur",
        "pas",
        "qui",
        "ne",
        "leur",
        "depuis",
        "demande",
        "j",
        "ai",
    ]
)
_OTHER = frozenset(
    [
        "the",
        "and",
        "to",
        "of",
        "is",
        "are",
        "you",
        "your",
        "my",
        "this",
        "that",
        "with",
        "hello",
        "dear",
        "thank",
        "thanks",
        "please",
        "have",
        "el",
        "los",
        "las",
        "una",
        "por",
        "para",
        "con",
        "usted",
        "gracias",
        "hola",
        "estoy",
        "tengo",
        "mi",
        "gli",
        "della",
        "sono",
        "grazie",
        "buongiorno",
        "ho",
        "os",
        "uma",
        "não",
        "obrigado",
        "você",
        "olá",
        "tenho",
        "meu",
        "minha",
        "und",
        "der",
        "die",
        "das",
        "ist",
        "ich",
        "nicht",
        "mit",
        "guten",
        "tag",
        "danke",
        "bitte",
        "habe",
        "și",
        "este",
        "pentru",
        "cu",
        "mulțumesc",
        "bună",
        "am",
        "ve",
        "bir",
        "bu",
        "için",
        "teşekkür",
        "merhaba",
    ]
)
_WORD = re.compile(r"[^\W\d_]+")
_NOT_LATIN = re.compile("[^a-z\u00c0-\u024f]")  # in a lower-case word: another script
_FAST_WORDS = 4  # at least this many French words...
_FAST_SHARE = 0.1  # ...a tenth of all words or more...
_FAST_OTHER = 0.1  # ...and another language's words at most a tenth as many
# Four Chinese ideographs in a row (CJK Unified Ideographs, extension A, compatibility,
# extensions B-F): more than a name (王伟, 王小明) or a thank-you (谢谢), a Chinese phrase.
# Kana tell a Japanese text using ideographs apart.
_HAN_PHRASE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]{4}")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff]")


@lru_cache(maxsize=1)
def _detector() -> Any:
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, code.upper()) for code in LANGUAGES]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()


def clearly_french(sample: str) -> bool:
    """French by its function words alone, in Latin script only (the fast path)."""
    words = _WORD.findall(sample.lower())
    # One regex over the words, and C-level counting (no Python step per character or
    # word: the per-character test was most of the language's cost, issue 14).
    if _NOT_LATIN.search("".join(words)):
        return False  # another script: lingua decides
    french = sum(map(_FRENCH.__contains__, words))
    other = sum(map(_OTHER.__contains__, words))
    enough = french >= _FAST_WORDS and french >= _FAST_SHARE * len(words)
    return enough and other <= _FAST_OTHER * french


def writes_chinese(sample: str) -> bool:
    """A Chinese phrase in the text, whatever else is around it: its writer reads Chinese.

    lingua weighs a mixed text by its words, and a Chinese sentence has no spaces: "Bonjour
    madame, je voudrais renouveler mon titre de séjour étudiant. 我的法语不太好，对不起。"
    was French to it, and the student who wrote that their French is poor got no Chinese.
    The AR says everything in French first anyway: the Chinese part costs a French reader
    nothing. Kana make it Japanese, which is left to lingua (no Japanese translation).
    """
    return _HAN_PHRASE.search(sample) is not None and not _KANA.search(sample)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code, or None when the text is too short or the guess too uncertain."""
    sample = text[:SAMPLE]
    # Up to the third letter only: counting every letter of the sample took 8 µs a mail.
    if len(list(islice(filter(str.isalpha, sample), MIN_LETTERS))) < MIN_LETTERS:
        return None
    if clearly_french(sample):
        return "fr"
    if writes_chinese(sample):
        return "zh"
    return lingua_language(sample)


class LanguageMemory(Protocol):
    """What lingua said of texts it read before ("" for no answer)."""

    def recall(self, sample: str) -> str | None: ...

    def keep(self, sample: str, language: str) -> None: ...


_memory: list[LanguageMemory] = []  # at most one: the process's


def remember_with(memory: LanguageMemory | None) -> None:
    """Let lingua's answers be recalled from ``memory`` and kept in it (None: forget it)."""
    _memory[:] = [] if memory is None else [memory]


@contextmanager
def unremembered() -> Iterator[None]:
    """lingua asked without the memory for a while: citizens' mails read again from IMAP
    (the agents' corrections, for training) must leave no hash of their text that would
    outlive the retention purge."""
    kept = list(_memory)
    _memory[:] = []
    try:
        yield
    finally:
        _memory[:] = kept


def lingua_language(sample: str) -> str | None:
    """lingua's answer alone, or None below ``MIN_CONFIDENCE``: recalled from the memory
    given to ``remember_with`` when lingua read this text before."""
    if not _memory:
        return _lingua_answer(sample)
    said = _memory[0].recall(sample)
    if said is None:
        said = _lingua_answer(sample) or ""
        _memory[0].keep(sample, said)
    return said or None


def _lingua_answer(sample: str) -> str | None:
    values = _detector().compute_language_confidence_values(sample)
    if not values or values[0].value < MIN_CONFIDENCE:
        return None
    return str(values[0].language.iso_code_639_1.name.lower())


# One short text per script whose languages lingua tells apart with models: Latin (fr, en,
# es, pt, ro, it, de, tr), Cyrillic (ru, uk) and Arabic (ar, fa). Chinese is the only
# language of its script here: lingua names it without a model.
_WARM_UP_TEXTS = ("Bonjour", "Здравствуйте", "مرحبا")


def warm_up(stopping: Callable[[], bool] = lambda: False) -> None:
    """Load every model now: lingua loads a script's models on the first text in it (all
    of them for a text under 120 characters: about a second), which must not happen on a
    worker's first mail, in French or in Russian. ``stopping``: checked between texts, so
    a worker asked to stop while it warms up does not finish loading first."""
    for text in _WARM_UP_TEXTS:
        if stopping():
            return
        _lingua_answer(text)  # never recalled: loading the models is the point
