"""Every keyword list of the routing rules in one matcher, so a mail's text is read once.

A keyword phrase matches whole words in order, each word also with a plural ending
(s, x, es): "carte grise" ~ "Cartes grises !". Texts are normalised first (lower case, no
accents, punctuation as spaces), which makes a normalised text a sequence of words and a
match a run of them. So instead of one regex per list run over the whole text (the cost grew
with rules × body length: issue 14), every list's phrases go into one index keyed by the
forms of their first word, and a text is scanned once, word by word, for all lists.

Each list's result is the one a regex alternation of its phrases, longest pattern first,
gives with ``findall``: at each word, the first phrase of that order that matches; then on
after the match (tests/test_routing_matcher.py checks this against that regex code on every
labelled mail).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress

ENDINGS = ("s", "x", "es")  # a word of a phrase also matches with one of these added
_NOT_WORD = re.compile(r"[^\w]+")
_WORD = re.compile(r"\w+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


class _Marks(dict[int, int | None]):
    """str.translate table: combining marks (accents once decomposed) deleted, the rest
    kept; filled on demand, as a mail's characters come."""

    def __missing__(self, code: int) -> int | None:
        kept = None if unicodedata.combining(chr(code)) else code
        self[code] = kept
        return kept


_MARKS = _Marks()


def fold(text: str) -> str:
    """Lower case without accents: casefold, NFKD, combining marks dropped."""
    if text.isascii():  # casefold is lower and NFKD changes nothing on ASCII
        return text.lower()
    # Only the non-ASCII runs go through the table (ASCII holds no combining mark): a
    # French text is mostly ASCII, and the per-character table look-up was most of it.
    return _NON_ASCII.sub(_strip_marks, unicodedata.normalize("NFKD", text.casefold()))


def _strip_marks(run: re.Match[str]) -> str:
    return run.group().translate(_MARKS)


class _WordChars(dict[int, int | None]):
    """str.translate table of ``words``: a combining mark deleted (as ``fold`` does), a
    word character (``\\w``) kept, anything else a space; filled on demand."""

    def __missing__(self, code: int) -> int | None:
        char = chr(code)
        kept = None if unicodedata.combining(char) else (code if _WORD.match(char) else 32)
        self[code] = kept
        return kept


_WORD_CHARS = _WordChars()
# What a French (or Spanish, Portuguese, Romanian...) text holds besides ASCII once
# decomposed: accents' combining marks, quotes, dashes, symbols. ``str.replace`` deletes
# or blanks each at C speed, so that most texts are ASCII before the table: its look-up
# per character, on a text that is not ASCII, cost as much as the regex it replaced.
_COMMON = tuple(
    (char, "" if _WORD_CHARS[ord(char)] is None else " ")
    for char in "\u0301\u0300\u0302\u0327\u0308\u0303\u0306\u030a\u030c\u0326\u0328"
    "\u2019\u2018\u00ab\u00bb\u201c\u201d\u00b0\u2013\u2014\u2022\u20ac\u00a7"
)


@lru_cache(maxsize=64)
def words(text: str) -> tuple[str, ...]:
    """The words of a folded text, ``normalize(text).split()`` in one pass. Cached: the
    rules and the model read the same subject, body and quoted part of a mail, and fold
    them once between them (the model once folded each text again: issue 14, point 5).

    A run of word characters is a word: every other character becomes a space, in one
    ``str.translate`` (on ASCII, a C loop), then ``split`` (a word character is never
    white space). The regex ``\\w+`` over the folded text was most of the routing rules'
    cost on a 3 KB mail (issue 14); tests/test_keywords_words.py checks they agree."""
    if text.isascii():
        return tuple(text.lower().translate(_WORD_CHARS).split())
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    for char, replacement in _COMMON:  # what the table gives them, sooner
        decomposed = decomposed.replace(char, replacement)
    return tuple(decomposed.translate(_WORD_CHARS).split())


@lru_cache(maxsize=64)
def normalize(text: str) -> str:
    """Lower case, no accents, punctuation as spaces: "Carte GRISE !" → "carte grise"."""
    return _NOT_WORD.sub(" ", fold(text)).strip()


def phrase_pattern(phrase: str) -> str:
    """The regex of a phrase: words in order, each tolerating a plural ending. Its length
    orders a list's phrases (the longest first), as the rules always have."""
    words = normalize(phrase).split()
    return r"\s+".join(re.escape(word) + r"(?:s|x|es)?" for word in words)


def forms(word: str) -> frozenset[str]:
    return frozenset((word, *(word + ending for ending in ENDINGS)))


def _pattern_length(words: tuple[str, ...]) -> int:
    """``len(phrase_pattern(" ".join(words)))`` without building it: a normalised word is a
    run of \\w, which ``re.escape`` leaves alone, then "(?:s|x|es)?" (11) per word and
    "\\s+" (3) between words. Building ~1,300 patterns was a tenth of the routing rules'
    compilation at start-up (issue 14, point 9)."""
    return sum(map(len, words)) + 11 * len(words) + 3 * (len(words) - 1)


@dataclass(frozen=True)
class _Phrase:
    list_id: int
    rank: int  # its place in its list's order: at one word, the lowest rank wins
    rest: tuple[frozenset[str], ...]  # the accepted forms of each following word


@dataclass(frozen=True)
class Words:
    """A normalised text as words; ``cut`` is where a second text joined to it starts
    (" \\n " between subject and body), for the matched text to read as it did."""

    tokens: tuple[str, ...]
    cut: int = 0

    @classmethod
    def of(cls, normalized: str) -> Words:
        return cls(tuple(normalized.split()))

    @classmethod
    def read(cls, text: str) -> Words:
        """The words of a text not yet normalised (the same as ``of(normalize(text))``)."""
        return cls(words(text))

    def joined(self, other: Words) -> Words:
        return Words(self.tokens + other.tokens, len(self.tokens))

    def text(self, start: int, end: int) -> str:
        if start < self.cut < end:
            return self.text(start, self.cut) + " \n " + self.text(self.cut, end)
        return " ".join(self.tokens[start:end])


class KeywordMatcher:
    """Many keyword lists, one scan: ``add`` each list, then ``scan`` a text.

    One-word phrases are indexed by the forms of their word, longer ones by the forms of
    their first two words, so a word of the text costs two dictionary look-ups whatever
    the number of lists, and only phrases whose first two words are there get checked.

    ``add`` only records a list; the index is built at the first scan, once per process
    for the same lists (``_index``): building it for the shipped rules takes ~75 ms, and a
    process may compile the same rules more than once (the worker and its console; the
    tests' many applications). The index is never changed once built."""

    def __init__(self) -> None:
        self._added: list[tuple[str, ...]] = []
        self._built: _Index | None = None

    def add(self, phrases: Iterable[str]) -> int:
        """A list's id, its phrases ranked as the regex alternation ranked them."""
        self._added.append(tuple(phrases))
        self._built = None
        return len(self._added) - 1

    def _index(self) -> _Index:
        built = self._built
        if built is None:  # two threads may both build it: the same value, no harm
            built = self._built = _index(tuple(self._added))
        return built

    def scan(self, words: Words) -> dict[int, tuple[str, ...]]:
        """Each list that matched: its distinct matched texts, in order of appearance."""
        tokens = words.tokens
        single, pairs = self._index()
        found: list[tuple[int, int, int, int]] = []  # (list, start, rank, end) of each match
        # Most words start no phrase: find those that do with C-level iteration alone
        # (``compress`` over a dict's ``__contains__``), no Python step per word or pair.
        for start in compress(range(len(tokens)), map(single.__contains__, tokens)):
            found += [(p.list_id, start, p.rank, start + 1) for p in single[tokens[start]]]
        pairs_at = map(pairs.__contains__, itertools.pairwise(tokens))
        for start in compress(range(len(tokens) - 1), pairs_at):
            for phrase in pairs[tokens[start], tokens[start + 1]]:
                rest = phrase.rest  # most phrases are two words: nothing more to check
                end = start + 2 + len(rest)
                if not rest or (
                    end <= len(tokens)
                    and all(map(frozenset.__contains__, rest, tokens[start + 2 : end]))
                ):
                    found.append((phrase.list_id, start, phrase.rank, end))
        return _leftmost(words, found)


_Index = tuple[dict[str, list[_Phrase]], dict[tuple[str, str], list[_Phrase]]]


@lru_cache(maxsize=8)
def _index(lists: tuple[tuple[str, ...], ...]) -> _Index:
    """The one-word and two-word indexes of these keyword lists, list ids in order."""
    single: dict[str, list[_Phrase]] = {}
    pairs: dict[tuple[str, str], list[_Phrase]] = {}
    for list_id, phrases in enumerate(lists):
        # Distinct phrases by their words, as their patterns were (a pattern is a function
        # of the words), ordered as ``reversed(sorted(patterns, key=len))`` ordered them.
        unique = dict.fromkeys(tuple(_NOT_WORD.sub(" ", fold(p)).split()) for p in phrases)
        ordered = list(reversed(sorted(filter(None, unique), key=_pattern_length)))
        known: dict[str, frozenset[str]] = {}  # a word's forms, built once per list
        for rank, (first, *rest) in enumerate(ordered):
            first_forms = known.get(first) or known.setdefault(first, forms(first))
            if not rest:
                for form in first_forms:
                    single.setdefault(form, []).append(_Phrase(list_id, rank, ()))
                continue
            phrase = _Phrase(list_id, rank, tuple(forms(word) for word in rest[1:]))
            second = known.get(rest[0]) or known.setdefault(rest[0], forms(rest[0]))
            for pair in itertools.product(first_forms, second):
                pairs.setdefault(pair, []).append(phrase)
    return single, pairs


def _leftmost(words: Words, found: list[tuple[int, int, int, int]]) -> dict[int, tuple[str, ...]]:
    """What ``findall`` keeps of each list: at each start the best-ranked match, none
    overlapping; every list's matches in one sort, by list, start and rank."""
    lists: dict[int, tuple[str, ...]] = {}
    texts: dict[str, None] = {}
    current, after = -1, 0
    for list_id, start, _rank, end in sorted(found):
        if list_id != current:
            if texts:
                lists[current] = tuple(texts)
            current, after, texts = list_id, 0, {}
        if start >= after:
            texts.setdefault(words.text(start, end))
            after = end
    if texts:
        lists[current] = tuple(texts)
    return lists
