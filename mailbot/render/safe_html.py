"""A citizen's HTML made safe to show in the console, with nh3 (the Rust sanitiser
ammonia): no script, no event handler, no style, no form, no frame, no link but http(s)
and mailto, no relative URL, and no remote image — an image is shown only when the mail
carries it (``cid:`` parts, turned into ``data:`` URIs) or as a ``data:`` URI itself.

A remote image would tell the sender when, and from where, the agent read the mail (a
tracking pixel): its ``src`` is removed and the count is shown instead. The console's CSP
(``img-src 'self' data:``) forbids remote images anyway: two locks on one door.

What a mail client does not show is not shown either: the ``<title>`` of a mail's page
and an element its style hides (``display: none``: a reply's preheader, the line a mail
list shows after the subject). Its style removed, such an element's text showed at the
top of the mail — and of the preview of a reply, which says « ce qui sera envoyé ».

A link shows where it really goes: its words can say « reconnectez-vous sur ProConnect »
and lead to a look-alike site. After each link whose text is not its own address, the
host it goes to (in its ASCII ``xn--`` form when not pure ASCII, so a look-alike letter
shows as such) or the address of a ``mailto:`` is written, in a
``<span class="mb-link-dest">`` only this module writes (the citizen's classes are
removed by the first cleaning, that class is allowed by the second only).
"""

from __future__ import annotations

import html as entities
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import nh3

_TAGS = nh3.ALLOWED_TAGS - {"area", "map"}
_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"hidden"},
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
}
_SCHEMES = {"http", "https", "mailto", "data", "cid"}
_LINKS = ("http://", "https://", "mailto:")
_IMAGE_DATA = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")
MAX_DATA_URI = 3_000_000
# Removed with their content: what runs or styles, and the title no client shows.
_DROPPED = {"script", "style", "title"}
# A start tag ends before the next "<": a tag's scan stops there, so a part of tags that
# never close ("<a<a<a…", 200,000 characters) is read once, not from each "<" to its end
# (quadratic: 23 s of CPU, holding the GIL, at each view of the mail). A tag holding a "<"
# in an attribute's value is left as it is (nh3 cleans it all the same).
_START_TAG = re.compile(r"<[a-zA-Z][a-zA-Z0-9]*\b[^<>]*>")
_HIDING_STYLE = re.compile(r"""\bstyle\s*=\s*(["'])(?:(?!\1).)*?\bdisplay\s*:\s*none\b""", re.I)


@dataclass(frozen=True)
class CleanHtml:
    html: str
    blocked_images: int  # remote images removed


def clean(markup: str, images: Mapping[str, str] | None = None) -> CleanHtml:
    """``markup`` with only inert HTML left; ``images`` maps Content-IDs to data: URIs."""
    inline = images or {}
    blocked = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "img" and attribute == "src":
            if value.lower().startswith("cid:"):
                value = inline.get(value[4:].strip("<>"), "")
            if len(value) <= MAX_DATA_URI and _IMAGE_DATA.match(value):
                return value
            blocked += 1
            return None
        if attribute == "href":
            return value if value.lower().startswith(_LINKS) else None
        return value

    html = _nh3(_START_TAG.sub(_hide, markup), keep)
    # An image left without its source is dropped, one without a text alternative gets an
    # empty one (decorative for screen readers), a link's destination is written after
    # it; cleaned again, so these edits stay safe.
    edited = _with_destinations(_IMAGE.sub(_fix_image, html))
    return CleanHtml(_nh3(edited, classes={"span": {_NOTE_CLASS}}), blocked)


_IMAGE = re.compile(r"<img\b[^>]*>")
_NOTE_CLASS = "mb-link-dest"
# nh3's output writes each attribute as name="value", with " and < and > escaped: a tag is
# read to its ">" without backtracking, and a link's text ends at the first "</a>" (links
# do not nest). Each scan moves forward only: linear in the part.
_LINK_START = re.compile(r'<a((?: [a-z-]+="[^"]*")*)>')
_HREF = re.compile(r' href="([^"]*)"')
_TAG = re.compile(r'<[^<>"]*(?:"[^"]*"[^<>"]*)*>')


def _with_destinations(html: str) -> str:
    """``html`` (nh3's output) with each link's destination written after it, when its
    text does not already show it."""
    out: list[str] = []
    done = 0
    for start in _LINK_START.finditer(html):
        if start.start() < done:
            continue  # an "<a" inside a link already read (none in nh3's output)
        end = html.find("</a>", start.end())
        if end < 0:
            break
        end += len("</a>")
        href = _HREF.search(start.group(1))
        text = entities.unescape(_TAG.sub("", html[start.end() : end - 4]))
        note = _destination(entities.unescape(href.group(1)), text) if href else None
        out.append(html[done:end])
        if note:
            out.append(f' <span class="{_NOTE_CLASS}">[{entities.escape(note)}]</span>')
        done = end
    out.append(html[done:])
    return "".join(out)


def _destination(href: str, text: str) -> str | None:
    """What the agent should read of ``href``: its host (its address for ``mailto:``),
    or None when the link's visible ``text`` already is that or the address itself."""
    shown = text.strip().lower()
    if href.lower().startswith("mailto:"):
        address = unquote(href[len("mailto:") :].split("?", 1)[0]).strip()
        local, at, domain = address.rpartition("@")
        address = f"{local}{at}{_ascii_host(domain)}" if at else address
        return None if shown in {address.lower(), href.lower()} else address
    try:
        parts = urlsplit(href.strip())
        host = _ascii_host((parts.hostname or "").rstrip("."))
    except ValueError:
        return None
    bare = href.strip().lower().split("://", 1)[-1].rstrip("/")
    # Its own address is enough only when it reads as the DNS does: plain ASCII, no
    # « www.ants.gouv.fr@ » user name in front of the real host.
    plain = bare.isascii() and "@" not in parts.netloc
    if plain and shown.split("://", 1)[-1].rstrip("/") in {bare, host.lower()}:
        return None
    return host or None


def _ascii_host(host: str) -> str:
    """``host`` as the DNS sees it: a label that is not pure ASCII in its ``xn--`` form
    (IDNA), so « prеfecture » with a Cyrillic е does not read as « prefecture »."""
    labels = []
    for label in host.split("."):
        if label.isascii():
            labels.append(label)
            continue
        try:
            labels.append(label.encode("idna").decode("ascii"))
        except UnicodeError:
            labels.append("xn--" + label.encode("punycode").decode("ascii"))
    return ".".join(labels)


def _hide(found: re.Match[str]) -> str:
    """A start tag whose style hides its element, given the ``hidden`` attribute that
    survives the cleaning (the style does not; nor would the CSP apply it)."""
    tag = found.group(0)
    return tag[:-1] + " hidden>" if _HIDING_STYLE.search(tag) else tag


def _fix_image(found: re.Match[str]) -> str:
    tag = found.group(0)
    if " src=" not in tag:
        return ""
    return tag if " alt=" in tag else tag[:-1].rstrip("/ ") + ' alt="">'


def _nh3(
    markup: str,
    keep: Callable[[str, str, str], str | None] | None = None,
    classes: dict[str, set[str]] | None = None,
) -> str:
    return nh3.clean(
        markup,
        tags=_TAGS,
        clean_content_tags=_DROPPED,
        attributes=_ATTRIBUTES,
        attribute_filter=keep,
        url_schemes=_SCHEMES,
        url_relative="deny",
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        allowed_classes=classes,
    )
