"""A service named in a French sentence: « relève du Cabinet du préfet », « de la Direction
des migrations », « de l'Unité … ». The preposition « de » contracts with the article the
name takes (le → du, la → de la, l' → de l', les → des), and the article depends on the
gender and number of the name's head noun, which its spelling cannot tell (« le Pôle »,
« la Cellule »; « l'Hôtel » but « le Haut-commissariat »). So the article comes from
rules.yaml when a service gives one (``services.<id>.article``), else from the head nouns
French administrations name their services with (this table), else from an initial vowel
(« l' » whatever the gender). A name none of these tells is put in a sentence that needs
no article at all: « du service « SGCD » ».

A re-orientation target's name (rules.yaml, ``routing.reorientation``) holds its own article,
or none: « les services des impôts », « l'Assurance maladie », « votre mairie », « France
Travail ». After « de » or « à » (``of_named``, ``to_named``: the templates' ``de`` and ``a``
filters) its « le » and « les » contract (« des services », « aux services »), and nothing is
added where the name has no article. Pure: no I/O."""

from __future__ import annotations

from typing import Final, Literal

Article = Literal["le", "la", "l'", "les"]
ARTICLES: Final[tuple[str, ...]] = ("le", "la", "l'", "les")

_OF: Final[dict[str, str]] = {"le": "du ", "la": "de la ", "l'": "de l'", "les": "des "}
_TO: Final[dict[str, str]] = {"le": "au ", "la": "à la ", "l'": "à l'", "les": "aux "}
# The preposition before a name without article; « de » elides before a vowel
# (« d'Action Logement »); « à » never does.
_BARE: Final[dict[str, tuple[str, str]]] = {"de": ("de ", "d'"), "à": ("à ", "à ")}

# Head nouns of service names, lower case, with the article they take. Words beginning
# with a vowel need none here (« l' »); an « h » does (muet or aspiré: « l'Hôtel »,
# « le Haut-commissariat »).
_HEADS: Final[dict[str, Article]] = {
    **dict.fromkeys(
        (
            "bureau",
            "cabinet",
            "centre",
            "comité",
            "commissariat",
            "conseil",
            "département",
            "greffe",
            "guichet",
            "pôle",
            "point",
            "secrétariat",
            "service",
            "standard",
            "haut-commissariat",
        ),
        "le",
    ),
    **dict.fromkeys(
        (
            "brigade",
            "cellule",
            "coordination",
            "délégation",
            "direction",
            "division",
            "maison",
            "mission",
            "permanence",
            "plate-forme",
            "plateforme",
            "préfecture",
            "section",
            "sous-direction",
            "sous-préfecture",
        ),
        "la",
    ),
    **dict.fromkeys(("hôtel",), "l'"),
    **dict.fromkeys(("bureaux", "services"), "les"),
}
_VOWELS: Final = frozenset("aàâäeéèêëiîïoôöuùûüyÿæœ")
_LEADING: Final[dict[str, Article]] = {"le": "le", "la": "la", "les": "les"}


def article_of(name: str) -> Article | None:
    """The article ``name`` takes in a sentence, when its head noun tells (None: it does
    not; rules.yaml's ``article`` must say it)."""
    words = name.split()
    if not words:
        return None
    first = words[0].lower().replace("\u2019", "'")
    if first.startswith("l'") or first in _LEADING:  # the name holds its article
        return "l'" if first.startswith("l'") else _LEADING[first]
    head = first.strip(',.;:()«»"')
    if head in _HEADS:
        return _HEADS[head]
    if head[:1] in _VOWELS:
        return "l'"
    return None


def of_service(name: str, article: str | None = None) -> str:
    """``name`` after « relève », « la demande » …: « du Cabinet du préfet », « de la
    Direction … », « de l'Unité … », « des Services … » — ``article`` (rules.yaml's) first,
    else what the name tells; « du service « name » » when nothing does. A name that holds
    its article (« La Mission … ») has it contracted, not repeated."""
    name = name.strip()
    words = name.split(maxsplit=1)
    first = words[0].lower().replace("\u2019", "'") if words else ""
    if first in _LEADING and len(words) == 2:  # « Le Bureau » → « du Bureau »
        return _OF[_LEADING[first]] + words[1]
    if first.startswith("l'") and len(first) > 2:  # « L'Unité » → « de l'Unité »
        return _OF["l'"] + name[2:]
    chosen = article if article in _OF else article_of(name)
    if chosen is None:
        return f"du service « {name} »"
    return _OF[chosen] + name


def of_named(name: str, article: str | None = None) -> str:
    """« de » and ``name``, as French writes it: « des services des impôts », « du tribunal
    judiciaire », « de la justice », « de l'Assurance maladie », « de votre mairie », « de
    France Travail ». The article is the name's own (a re-orientation target's), else
    ``article`` (le, la, l' or les) when given, else there is none."""
    return _contracted("de", name, article)


def to_named(name: str, article: str | None = None) -> str:
    """« à » and ``name``, as French writes it: « aux services des impôts », « au tribunal
    judiciaire », « à la justice », « à l'Assurance maladie », « à votre mairie », « à
    France Travail » (``of_named``'s rules)."""
    return _contracted("à", name, article)


def _contracted(preposition: str, name: str, article: str | None) -> str:
    """The preposition contracted with the article ``name`` starts with (its case:
    ``_cased``), or with ``article``, or before the bare name (« de » elided before a
    vowel)."""
    table = _OF if preposition == "de" else _TO
    name = name.strip()
    words = name.split(maxsplit=1)
    first = words[0].replace("\u2019", "'") if words else ""
    if first.lower() in _LEADING and len(words) == 2:  # « les services » → « des services »
        return _cased(table[_LEADING[first.lower()]], name, first) + words[1]
    if first[:2].lower() == "l'" and len(first) > 2:  # « l'Assurance » → « de l'Assurance »
        return _cased(table["l'"][:-1], name, first) + name[1:]  # its apostrophe: ' or ’
    if article in table:
        return table[article] + name
    before, elided = _BARE[preposition]
    return (elided if name[:1].lower() in _VOWELS else before) + name


def _cased(words: str, name: str, first: str) -> str:
    """``words`` in capitals when the name's article is (« LES SERVICES » → « DES
    SERVICES », « L'URSSAF ET LA CARSAT » → « DE L'URSSAF … »), else in lower case, as in
    the middle of a sentence (« Le Tribunal » → « du Tribunal »). « L'URSSAF » alone is
    a name in capitals after an elided article, not a name in capitals: « de l'URSSAF »."""
    if first.lower() in _LEADING:
        return words.upper() if first.isupper() else words
    return words.upper() if name.isupper() and " " in name else words
