"""A service named in a French sentence: « relève du Cabinet du préfet », « de la Direction
des migrations », « de l'Unité … ». The preposition « de » contracts with the article the
name takes (le → du, la → de la, l' → de l', les → des), and the article depends on the
gender and number of the name's head noun, which its spelling cannot tell (« le Pôle »,
« la Cellule »; « l'Hôtel » but « le Haut-commissariat »). So the article comes from
rules.yaml when a service gives one (``services.<id>.article``), else from the head nouns
French administrations name their services with (this table), else from an initial vowel
(« l' » whatever the gender). A name none of these tells is put in a sentence that needs
no article at all: « du service « SGCD » ». Pure: no I/O."""

from __future__ import annotations

from typing import Final, Literal

Article = Literal["le", "la", "l'", "les"]
ARTICLES: Final[tuple[str, ...]] = ("le", "la", "l'", "les")

_OF: Final[dict[str, str]] = {"le": "du ", "la": "de la ", "l'": "de l'", "les": "des "}

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
