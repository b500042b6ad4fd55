"""Is a reply to a citizen signed as the law and the quality audit require?

CRPA article L111-2: a letter from the administration shows the first name, last name and
function ("qualité") of the agent who handles the request, and the administrative address.
The audit grid adds the service, the prefecture, and a way to get in touch (phone, e-mail or
link). :func:`check_signature` looks for those six elements in the signature of a reply that
an agent or a service sent (found in a Sent folder or a tracking mailbox).

Only the reply's own signature counts. The quoted original is removed first (``>`` lines,
everything after "Le ... a écrit :", "-----Message d'origine-----", or an Outlook header block
"De : ... Envoyé : ..."): the citizen's own signature, or the full block of our
acknowledgement that the agent quotes, must not make an incomplete reply look complete.

Pure functions, standard library only: the caller reads the mail (``parse_message`` for the
text, the ``text/html`` part for the markup) and records the result.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from types import MappingProxyType
from typing import Literal, get_args

from mailbot.core.message import html_to_text

# What a signature shows, in order: the configuration's `signature.required` names these.
SignatureElement = Literal["name", "function", "service", "prefecture", "postal_address", "contact"]
ELEMENTS: tuple[SignatureElement, ...] = get_args(SignatureElement)
# Without a "-- " separator or a closing formula, the signature is looked for in the last
# lines of the reply; after a closing formula, in the lines that follow it.
BLOCK_LINES = 15
AFTER_CLOSING_LINES = 25


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on one reply.

    ``missing`` lists the required elements that were not found, in the order of
    ``ELEMENTS``; ``found`` maps every element that was found (required or not) to the
    signature line (or part of a line) that satisfied it, for explanations.
    """

    complete: bool
    missing: tuple[str, ...]
    found: Mapping[str, str] = field(hash=False)


# --------------------------------------------------------------------------- text helpers


def _lazy(pattern: str, flags: int = 0) -> Callable[[], re.Pattern[str]]:
    """A regular expression compiled on its first use, then kept. This module's ~30
    expressions took ~20 ms to compile at import, and every start imports it (the
    configuration names the signature's elements) while only the Sent pipeline runs them
    (issue 14, point 9)."""
    return cache(partial(re.compile, pattern, flags))


def _fold(text: str) -> str:
    """Without accents (é -> e, Œ kept), typographic apostrophes made plain; case kept."""
    decomposed = unicodedata.normalize("NFKD", text.replace("’", "'").replace("\xa0", " "))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _low(text: str) -> str:
    return _fold(text).lower()


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


# --------------------------------------------------------------------------- quoted original

# "Le lun. 23 nov. 2026 à 09:14, Jean Dupont <jean@example.fr> a écrit :" (Gmail, Apple Mail,
# Thunderbird; may wrap before "écrit"), and its English form. Also found in the middle of a
# line, where a crude HTML-to-text conversion put it.
_ATTRIBUTION = _lazy(
    r"(?:(?<=\s)|^)(?:Le|On)\s+(?:lun|mar|mer|jeu|ven|sam|dim|mon|tue|wed|thu|fri|sat|sun|\d)"
    r"[^\n]{0,250}?\s(?:a\s+[ée]crit|wrote)\s*:",
    re.IGNORECASE | re.MULTILINE,
)
# "Jean Dupont a écrit :" alone on its line.
_ATTRIBUTION_LINE = _lazy(
    r"^[^\S\n]*[^\s>][^\n]{0,250}?\s(?:a\s+[ée]crit|wrote)\s*:[^\S\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_ORIGINAL_MESSAGE = _lazy(
    r"^[^\S\n]*-{2,}[^\S\n]*(?:original message|message d'origine|message original|"
    r"courriel original|forwarded message|message transf[ée]r[ée]|message transmis)"
    r"[^\S\n]*-{2,}|^[^\S\n]*D[ée]but du message r[ée]exp[ée]di[ée]\s*:",
    re.IGNORECASE | re.MULTILINE,
)
# Outlook: "De : X" then, within a few lines, "Envoyé : ..." (or "Date :", "Sent:").
_HEADER_BLOCK = _lazy(
    r"^[^\S\n]*\*?(?:De|DE|From|FROM)\*?[^\S\n]*:[^\n]*\n(?:[^\n]*\n){0,3}?"
    r"[^\S\n]*\*?(?:Envoy[ée](?: le)?|ENVOY[ÉE]|Sent|SENT|Date|DATE)\*?[^\S\n]*:",
    re.MULTILINE,
)
# The same header block flattened on one line.
_HEADER_INLINE = _lazy(
    r"(?:(?<=\s)|^)(?:De|From)\s*:\s*[^\n]{1,250}?\s(?:Envoy[ée]|Sent)\s*:",
    re.MULTILINE,
)


_ATTRIBUTION_EVIDENCE = _lazy(r"\d{4}|\d{1,2}\s*[:h]\s*\d{2}|@")


def _followed_by_quote(text: str, end: int) -> bool:
    """Is the first non-blank line after the attribution a '>' line (bottom posting)?"""
    for line in _lines(text[end:])[1:]:
        if line.strip():
            return line.lstrip().startswith(">")
    return False


def strip_quoted(text: str) -> str:
    """The reply without the quoted original.

    Everything from the first quote header that is not followed by ``>`` lines is cut
    (top posting: Outlook, Gmail); an attribution line followed by ``>`` lines is only
    removed (bottom or inline posting), and so are all ``>`` lines. An attribution that
    cuts must show a date, a time or an address, as mail programs write it.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cut = len(text)
    for pattern in (_ORIGINAL_MESSAGE, _HEADER_BLOCK, _HEADER_INLINE):
        match = pattern().search(text)
        if match:
            cut = min(cut, match.start())
    removed: list[tuple[int, int]] = []
    attributions = sorted(
        {
            (m.start(), m.end())
            for p in (_ATTRIBUTION(), _ATTRIBUTION_LINE())
            for m in p.finditer(text)
        }
    )
    for start, end in attributions:
        if start >= cut:
            break
        if any(start < e and s < end for s, e in removed):
            continue  # the same attribution, found by both patterns
        if _followed_by_quote(text, end):
            removed.append((start, end))
        elif _ATTRIBUTION_EVIDENCE().search(text, start, end):
            cut = start
            break
        # else: "votre conseiller vous a écrit :" in a sentence of the reply
    kept = text[:cut]
    for start, end in sorted(removed, reverse=True):
        if end <= cut:
            kept = kept[:start] + kept[end:]
    lines = [line for line in _lines(kept) if not line.lstrip().startswith(">")]
    return "\n".join(lines).strip("\n")


# --------------------------------------------------------------------------- signature block

_CLOSING = _lazy(
    r"^(?:merci(?:\s+beaucoup)?[\s,.!]+(?:et\s+)?)?(?:"
    r"(?:(?:tres|bien|tres bien)\s+)?(?:cordialement|cdlt|cdt)"
    r"|bien\s+a\s+vous"
    r"|(?:(?:sinceres|meilleures|mes|nos|avec mes|avec nos|recevez mes|recevez nos)\s+)?"
    r"salutations(?:\s+distinguees|\s+respectueuses)?"
    r"|respectueusement"
    r"|(?:tres\s+)?bonne\s+(?:fin\s+de\s+)?(?:journee|soiree|semaine)"
    r"|(?:best|kind|warm|warmest)\s+regards|regards|(?:yours\s+)?sincerely"
    r")\b[\s,.;!]*",
)
# Letter-style closings that take a sentence: the whole sentence is the formula.
_FORMAL_CLOSING = _lazy(
    r"^(?:veuillez|je vous prie|nous vous prions|recevez|je vous remercie de croire)\b"
    r".*\b(?:agreer|salutations|expression|consideration|sentiments)\b",
)
_SEPARATOR = _lazy(r"^-- ?$")


def _closing_at(lines: list[str]) -> tuple[int, str] | None:
    """Index of the last closing formula and what follows it on its line."""
    for index in range(len(lines) - 1, -1, -1):
        low = _low(lines[index])
        following = _low(lines[index + 1]) if index + 1 < len(lines) else ""
        if _FORMAL_CLOSING().match(low) or _FORMAL_CLOSING().match(f"{low} {following}"):
            end = index  # the sentence may go on over the next lines
            while (
                not lines[end].rstrip().endswith((".", "!"))
                and end + 1 < len(lines)
                and lines[end + 1][:1].islower()
            ):
                end += 1
            return end, ""
        match = _CLOSING().match(low)
        if match:
            rest = lines[index][match.end() :].strip(" ,;.:!")
            return index, rest
    return None


def _block_lines(text: str) -> list[str]:
    lines = [line.strip() for line in _lines(strip_quoted(text))]
    lines = [line for line in lines if line]
    separators = [i for i, line in enumerate(lines) if _SEPARATOR().match(line)]
    closing = _closing_at(lines)
    if closing is not None:
        index, rest = closing
        after = [line for line in lines[index + 1 :] if not _SEPARATOR().match(line)]
        return ([rest] if rest else []) + after[:AFTER_CLOSING_LINES]
    if separators:
        return lines[separators[-1] + 1 :]
    return lines[-BLOCK_LINES:]


def signature_block(text: str) -> str:
    """The part of the reply (quoted original removed) where its signature is.

    After the last closing formula ("Cordialement," "Bien à vous", "Salutations
    distinguées", "Je vous prie d'agréer...", "Best regards"...) when there is one,
    including what follows the formula on its line ("Cordialement, Camille"); otherwise
    after the last "-- " / "--" separator; otherwise the last ``BLOCK_LINES`` non-empty lines.
    """
    return "\n".join(_block_lines(text))


# --------------------------------------------------------------------------- HTML

_HTML_DROP = _lazy(
    r"<!--.*?-->|<(head|style|script|title|xml)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)
_HTML_LINK = _lazy(
    r"""<a\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')[^>]*>(.*?)</a\s*>""",
    re.IGNORECASE | re.DOTALL,
)
_HTML_IMG = _lazy(r"<img\b[^>]*>", re.IGNORECASE)
_HTML_ALT = _lazy(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_HTML_BREAK = _lazy(
    r"<br\b[^>]*>|</?(?:p|div|tr|td|th|li|ul|ol|table|tbody|thead|tfoot|caption|h[1-6]|hr|dd|dt|"
    r"dl|pre|center|section|article|header|footer|address)\b[^>]*>",
    re.IGNORECASE,
)
_HTML_QUOTE = _lazy(r"<(/?)blockquote\b[^>]*>", re.IGNORECASE)
_ANY_TAG = _lazy(r"<[^>]+>")
_QUOTE_OPEN = "\u2063quote-open\u2063"
_QUOTE_CLOSE = "\u2063quote-close\u2063"


def _link_text(match: re.Match[str]) -> str:
    href = (match.group(1) or match.group(2) or "").strip()
    label = match.group(3)
    visible = _ANY_TAG().sub("", label)
    target = href[7:] if href.lower().startswith("mailto:") else href
    if not re.match(r"(?i)https?://|mailto:", href) or not target or not visible.strip():
        return label  # not a web or mail link, or a linked logo
    short = re.sub(r"(?i)^https?://(www\.)?", "", target).rstrip("/")
    if short.lower() in visible.lower():
        return label
    return f"{label} ({target})"  # a link hidden behind words still is a contact link


def _img_text(match: re.Match[str]) -> str:
    alt = _HTML_ALT().search(match.group(0))
    text = (alt.group(1) or alt.group(2) or "") if alt else ""
    return f"\n{text}\n" if text.strip() else " "


def _quote_mark(match: re.Match[str]) -> str:
    return f"\n{_QUOTE_CLOSE if match.group(1) else _QUOTE_OPEN}\n"


def html_text(markup: str) -> str:
    """HTML to text for signatures: one line per paragraph, ``<br>``, table cell or row;
    an image becomes its alt text (a logo may be the only mention of the prefecture), a link
    keeps its address, and ``<blockquote>`` content becomes ``>`` lines (quoted)."""
    markup = _HTML_DROP().sub(" ", markup)
    markup = re.sub(r"\s+", " ", markup)  # source line breaks mean nothing in HTML
    markup = _HTML_LINK().sub(_link_text, markup)
    markup = _HTML_IMG().sub(_img_text, markup)
    markup = _HTML_QUOTE().sub(_quote_mark, markup)
    markup = _HTML_BREAK().sub("\n", markup)
    out: list[str] = []
    depth = 0
    for line in html_to_text(markup).split("\n"):
        line = line.replace("\xa0", " ").strip()
        if line == _QUOTE_OPEN:
            depth += 1
        elif line == _QUOTE_CLOSE:
            depth = max(0, depth - 1)
        elif line:
            out.append(("> " + line) if depth else line)
    return "\n".join(out)


# --------------------------------------------------------------------------- elements


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Words that make a line a sentence of the reply rather than a signature line.
_PROSE_WORDS = _wordset(
    "vous nous je j votre vos notre nos est sont pouvez pourrez devez avez avons etes "
    "merci sera seront peut peuvent veuillez ai pas il elle ils elles cette ces mon ma mes "
    "ont ete etre doit doivent faut sommes suis "
    "you your we our is are please"
)


def _is_prose(line: str) -> bool:
    """A sentence of the reply, not a signature line: pronouns or verbs in four words or
    more ("vous pouvez joindre le bureau au 02 32 76 50 00"), or a full stop after six words.
    Short link labels ("Nous écrire", "Prendre rendez-vous", "Contactez-nous") are not."""
    low = _LINK().sub(" ", _EMAIL().sub(" ", _low(line)))
    low = re.sub(r"\b[a-z]+-(?:vous|nous)\b", " ", low)
    words = re.findall(r"[a-z]+", low)
    if len(words) >= 4 and any(word in _PROSE_WORDS for word in words):
        return True
    sentence = line.rstrip().endswith((".", "!", "?")) and len(words) >= 6 and "|" not in line
    return sentence and not (_PHONE().search(line) or _POSTCODE_CITY().search(_fold(line)))


def _clean(line: str) -> str:
    """A signature line without decorations: bold markers, bullets, a leading '>'."""
    return line.strip().strip("*_~").strip(" \t*_•·>").rstrip(" ,;").strip()


_SEGMENT_SPLIT = _lazy(r"\s+[|•·–—-]\s+|\s*\|\s*|\t+|\s{3,}|\s*[,;]\s*|\s*:\s+")


def _segments(line: str) -> list[str]:
    return [s.strip(" *_") for s in _SEGMENT_SPLIT().split(line) if s.strip(" *_")]


# ---- name

_CIVILITY = _lazy(
    r"^(?:M\.|Mme\.?|Mlle\.?|Mr\.?|Mrs\.?|Ms\.?|Dr\.?|Me|Madame|Monsieur|Mademoiselle|Docteur)\s+"
)
_PARTICLES = _wordset("de du des d' la le van von der den di da dos das del della el al ben")
_FIRST_STOP = _wordset(
    "le la les l' un une des du de pour par et ou a au aux en sur avec sans ce cet cette "
    "votre vos notre nos mon ma mes dear hello hi bonjour bonsoir"
)
# Words that never are a person's name in a signature: administration, greetings, places.
_NOT_NAME = _wordset(
    """
    prefecture prefectures sous-prefecture prefet prefete sous-prefet sous-prefete
    bureau bureaux service services direction directions sous-direction pole mission cellule
    cabinet section departement division unite secretariat accueil guichet plateforme antenne
    equipe agence ministere interieur republique francaise francais liberte egalite fraternite
    seine maritime seine-maritime normandie rouen havre dieppe cedex madeleine
    titres titre sejour etrangers etranger naturalisation permis conduire immatriculation
    carte cartes grises grise passeport passeports identite associations elections
    reglementation circulation securite qualite standard courrier
    place rue avenue boulevard quai tel telephone fax courriel mail email e-mail site internet
    web adresse horaires contact contacts
    chef cheffe adjoint adjointe responsable gestionnaire instructeur instructrice agent agente
    charge chargee secretaire directeur directrice attache attachee assistant assistante
    conseiller conseillere referent referente redacteur redactrice general generale
    bien cordialement salutations distinguees regards best kind sincerely merci bonjour
    bonne journee soiree madame monsieur dear mr mrs hello
    lundi mardi mercredi jeudi vendredi samedi dimanche janvier fevrier mars avril mai juin
    juillet aout septembre octobre novembre decembre envoye iphone android
    """
)


_INITIAL = _lazy(r"[A-Z]\.(?:-[A-Z]\.)?")


def _word_parts(token: str) -> list[str]:
    return [p for p in re.split(r"[-']", token) if p]


def _is_title(token: str) -> bool:
    """Camille, Jean-Pierre, Élodie, O'Neil (two letters at least, no final dot)."""
    parts = _word_parts(token)
    if not parts or sum(len(p) for p in parts) < 2 or not token[0].isupper():
        return False
    return all(p.isalpha() and p[0].isupper() and (p[1:].islower() or not p[1:]) for p in parts)


def _is_caps(token: str) -> bool:
    parts = _word_parts(token)
    return bool(parts) and all(p.isalpha() and p.isupper() for p in parts) and len(token) >= 2


def _is_particle(token: str) -> bool:
    low = _low(token)
    return low in _PARTICLES or bool(re.fullmatch(r"d'\w+", low) and _is_title(token[2:]))


def _is_last_name(tokens: list[str]) -> bool:
    """Durand, DURAND, de La Fontaine, d'Almeida, P. Martin (a middle initial)."""
    if not tokens:
        return False
    last = tokens[-1]
    if not (_is_title(last) or _is_caps(last) or (_is_particle(last) and "'" in last)):
        return False
    return all(
        _is_title(t) or _is_caps(t) or _is_particle(t) or _INITIAL().fullmatch(t) for t in tokens
    )


def _is_name(segment: str) -> bool:
    """A first name and a last name: "Camille Durand", "Camille DURAND", "DURAND Camille",
    "Jean-Pierre Martin", "Marie-Claire de La Fontaine". Not "C. Durand", "Camille D.",
    "Madame Durand", "Le chef de bureau", "Bureau des titres"."""
    text = re.sub(r"\([^)]*\)", " ", segment).strip(" *_,;:-–—")
    if re.search(r"[\d@:/=+#&]", text):
        return False
    text = _CIVILITY().sub("", text).strip()
    tokens = text.split()
    if not 2 <= len(tokens) <= 5 or len(text) > 50:
        return False
    lows = [_low(t) for t in tokens]
    if lows[0] in _FIRST_STOP or lows[0] in _PARTICLES:
        return False
    for low in lows:
        if low in _NOT_NAME or any(part in _NOT_NAME for part in _word_parts(low)):
            return False
    # First name first: "Camille Durand", "Camille DURAND", "Jean P. Martin".
    if _is_title(tokens[0]) and _is_last_name(tokens[1:]):
        return True
    # Last name first, in capitals: "DURAND Camille", "DE SOUZA Ana".
    caps = 0
    while caps < len(tokens) and (_is_caps(tokens[caps]) or _low(tokens[caps]) in _PARTICLES):
        caps += 1
    if (
        0 < caps < len(tokens)
        and _is_caps(tokens[caps - 1])
        and all(_is_title(t) for t in tokens[caps:])
    ):
        return True
    # All in capitals: "CAMILLE DURAND".
    return caps == len(tokens) and _is_caps(tokens[-1]) and _is_caps(tokens[0])


# ---- function

_FUNCTION = _lazy(
    r"\b(?:chef|cheffe|adjoint|adjointe|responsable|gestionnaire|instructeur|instructrice"
    r"|agent|agente|secretaire|directeur|directrice|attache|attachee|assistant|assistante"
    r"|conseiller|conseillere|referent|referente|redacteur|redactrice|coordinateur"
    r"|coordinatrice|coordonnateur|coordonnatrice|technicien|technicienne|controleur"
    r"|controleuse|inspecteur|inspectrice|delegue|deleguee|ingenieur|ingenieure|juriste"
    r"|mediateur|mediatrice|officier|greffier|greffiere|operateur|operatrice"
    r"|teleconseiller|teleconseillere|commissaire|head|officer|manager|deputy)\b"
    r"|(?<!\ben )(?<!\bprise en )\bchargee? (?:de|d'|des|du)\b"
)
# The préfet (sous-préfet) signing in person: the line starts with the title. Not the
# bloc-marque "PRÉFET DE LA SEINE-MARITIME" of a logo, and not "Pour le préfet".
_PREFET_FUNCTION = _lazy(r"^(?:(?:le|la|madame la|monsieur le)\s+)?(?:sous-)?prefete?\b")


def _function(line: str, low: str, segments: list[str]) -> str | None:
    if _FUNCTION().search(low):
        return line
    for segment in segments:
        if _PREFET_FUNCTION().match(_low(segment)) and not segment.isupper():
            return segment
    return None


# ---- service

_STOP_AFTER = (
    r"(?!(?:et|ou|le|la|les|a|au|aux|en|pour|par|est|sur|qui|que|votre|vos|son|sa|ses|de|du|"
    r"des|d)\b)"
)
_SERVICE = _lazy(
    r"\b(bureau|service|direction|sous-direction|pole|mission|cellule|cabinet|section"
    r"|departement|division|unite|secretariat|plateforme|guichet|antenne)\s+"
    r"(?:(?:de\s+la|de\s+l'|des|du|de|d')\s*)?" + _STOP_AFTER + r"([a-z][\w'-]*)"
)
# "Préfecture de la Seine-Maritime — accueil général": a unit named after the prefecture.
_PREFECTURE_UNIT = _lazy(
    r"prefecture\b[^|]*?\s[-–—]\s+(?:accueil|standard|titres|etrangers|sejour|naturalisation"
    r"|permis|immatriculation|reglementation|elections|associations|securite|communication"
    r"|courrier|circulation|cartes)\b"
)


def _service(line: str, low: str, segments: list[str]) -> str | None:
    for match in _SERVICE().finditer(low):
        before = low[: match.start()]
        if match.group(1) == "mission" and re.search(r"\bchargee? de\s*$", before):
            continue  # "chargé de mission" is a function
        if match.group(1) == "departement" and match.group(2).startswith("seine"):
            continue  # "département de la Seine-Maritime" is the territory
        return line
    if _PREFECTURE_UNIT().search(low):
        return line
    return None


# ---- prefecture

_PLACE = (
    r"(?:(?:de\s+la|de\s+l'|de|du|des|d')\s*)?"
    r"(?!(?:votre|vos|son|sa|ses|leur|notre|et|ou|le|la|les|a|au|en|pour|par|qui|est)\b)"
    r"(?:[a-z][a-z'-]+|\d{2,3}\b)"
)
_REGION = r"(?:de\s+la\s+region\s+[a-z-]+\s*[,-]?\s*(?:(?:prefecture|prefete?)\s+)?)?"
_PREFECTURE = _lazy(r"\b(?:sous-)?prefecture\s+" + _REGION + _PLACE)
# The bloc-marque of the State's services: "PRÉFET DE LA SEINE-MARITIME".
_PREFET_BRAND = _lazy(
    r"^(?:le\s+|la\s+)?(?:sous-)?prefete?\s+" + _REGION + r"(?:de\s+la|de\s+l'|de|du|des|d')\s*"
    r"(?!(?:votre|vos|son|sa)\b)[a-z][a-z'-]+"
)


def _prefecture(line: str, low: str, segments: list[str]) -> str | None:
    if _PREFECTURE().search(low):
        return line
    for segment in segments:
        if _PREFET_BRAND().match(_low(segment)):
            return segment
    return None


# ---- postal address

_STREET = _lazy(
    r"\b\d{1,4}\s*(?:bis|ter)?\s*,?\s+(?:rue|place|pl\.|avenue|av\.|boulevard|bd|quai|allee"
    r"|chemin|impasse|route|cours|square|esplanade|rond-point|parvis|passage|promenade"
    r"|residence|voie|sente|rampe|cite|hameau)\b"
    r"|^(?:rue|place|avenue|boulevard|quai|allee|esplanade|parvis|square|impasse)\s+"
    r"(?:de\s+la|de\s+l'|des|du|de|d')?\s*[a-z]"
)
_POSTBOX = _lazy(r"\b(?:cs|bp|tsa)\s*\d{2,6}\b|\bcedex\b|\b76\d{3}\b")
_POSTCODE_CITY = _lazy(r"\b\d{5}\s+[A-Z]")


def _postal_address(line: str, low: str, segments: list[str]) -> str | None:
    if _POSTBOX().search(low) or _POSTCODE_CITY().search(_fold(line)):
        return line
    if _STREET().search(low) or any(_STREET().search(_low(s)) for s in segments):
        return line
    return None


# ---- contact

_PHONE = _lazy(r"(?<![\d])(?:(?:\+|00)\s?33\s?(?:\(0\)\s?)?[1-9]|0[1-9])(?:[\s.-]?\d{2}){4}(?!\d)")
_LINK = _lazy(r"\bhttps?://[^\s()<>\"]+|\bwww\.[a-z0-9-]+(?:\.[a-z0-9-]+)+")
_EMAIL = _lazy(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+")


def _contact(line: str, low: str, segments: list[str]) -> str | None:
    if _PHONE().search(low) or _LINK().search(low) or _EMAIL().search(low):
        return line
    return None


def _name(line: str, low: str, segments: list[str]) -> str | None:
    for segment in segments:
        if _is_name(segment):
            return segment
    return None


_DETECTORS = (
    ("name", _name),
    ("function", _function),
    ("service", _service),
    ("prefecture", _prefecture),
    ("postal_address", _postal_address),
    ("contact", _contact),
)


def _find(lines: Iterable[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in lines:
        line = _clean(raw)
        if not line or _is_prose(line):
            continue
        low = _low(line)
        segments = _segments(line)
        for element, detect in _DETECTORS:
            if element not in found:
                hit = detect(line, low, segments)
                if hit:
                    found[element] = hit
    return found


# --------------------------------------------------------------------------- the check


def _required(required: Sequence[str]) -> frozenset[str]:
    unknown = [e for e in required if e not in ELEMENTS]
    if unknown:
        raise ValueError(f"unknown signature element(s): {', '.join(unknown)}")
    return frozenset(required)


def _verdict(text: str, wanted: frozenset[str]) -> SignatureCheck:
    found = _find(_block_lines(text))
    missing = tuple(e for e in ELEMENTS if e in wanted and e not in found)
    return SignatureCheck(not missing, missing, MappingProxyType(found))


def check_signature(
    text: str, html: str | None = None, required: Sequence[str] = ELEMENTS
) -> SignatureCheck:
    """Check the signature of a reply; only the ``required`` elements can be missing.

    ``text`` is the reply's text (``ParsedMessage.body_text``); ``html`` its ``text/html``
    part if any, used when the text is empty or lacks a complete signature (HTML-only
    mail, a signature inserted only in the HTML part, a logo whose alt text names the
    prefecture). The more complete of the two verdicts is returned.
    """
    wanted = _required(required)
    verdicts: list[SignatureCheck] = []
    if text.strip():
        verdicts.append(_verdict(text, wanted))
    if html and html.strip() and not (verdicts and verdicts[0].complete):
        verdicts.append(_verdict(html_text(html), wanted))
    if not verdicts:
        missing = tuple(e for e in ELEMENTS if e in wanted)
        return SignatureCheck(not missing, missing, MappingProxyType({}))
    return min(verdicts, key=lambda v: len(v.missing))
