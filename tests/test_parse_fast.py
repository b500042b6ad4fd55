"""The parser's shortcuts give what the email package gives (issue 14: CPU per mail).

Header values without an encoded word skip ``decode_header``/``make_header``; addresses of
the common forms are read by a regex instead of ``email.utils``' character-by-character
parser; a part's charset and whether it has a file name skip the parameters' parser when
its Content-Type is simple. All are checked here against the standard library, on crafted
values and on every header or part of the test mails (the frozen test half of the corpus
aside).
"""

from __future__ import annotations

import email
import functools
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from pathlib import Path

import pytest

from mailbot.core.message import (
    _FEEDBACK_FIELD,
    _Body,
    _content_charset,
    _named,
    _note_feedback,
    clean_text,
    decode_header_value,
    parse_address,
    parse_addresses,
    single_line,
)

DATA = Path(__file__).resolve().parent / "data"
ADDRESS_HEADERS = ("from", "to", "cc", "reply-to", "return-path", "sender")

CRAFTED_ADDRESSES = [
    "Camille Durand <usager1@example.fr>",
    "Camille  Durand <a@b.fr>",
    " Camille Durand  <a@b.fr> ",
    "x<a@b.c>",
    "<a@b.fr>",
    "a@b.fr",
    "A.B <a@b.fr>",
    '"Durand, Camille" <a@b.fr>',
    "Usager 12 <usager12@example.fr>",
    "x <a..b@c.fr>",
    "x <a@b..c>",
    "x <a@-b.c>",
    "x <a.@b.c>",
    "x <.a@b.c>",
    "x <A+tag@B-C.example.FR>",
    "a@b.fr, c@d.fr",
    "a@b.fr (Camille)",
    "Camille <a@b.fr> (commentaire)",
    "Élodie <e@b.fr>",
    "\u00a0a@b.fr",
    "a@b.fr\u00a0",
    "\ta@b.fr",
    "<>",
    "",
    "undisclosed-recipients:;",
    "a @ b.fr",
    "a@[192.0.2.1]",
    "=?utf-8?q?=C3=89lodie?= <e@b.fr>",
    "x <a@b.fr",
    "x a@b.fr>",
    "<a@b.fr> x",
]
CRAFTED_HEADERS = [
    "Demande de carte grise",
    "  espaces  en  trop  ",
    "tab\tinside",
    "folded\r\n continuation",
    "accentué, déjà",
    "8-bit \udce9 byte",
    "",
    "=?",
    "a =? b",
    "=?utf-8?q?caf=C3=A9?=",
    "=?utf-8?b?w6k=?= suite",
]


def _stdlib_header(value: str) -> str:
    """What ``decode_header_value`` gave before its shortcut, for a value without "=?"."""
    try:
        return clean_text(str(make_header(decode_header(value))))
    except Exception:
        return clean_text(value)


@functools.cache
def _test_mails() -> tuple[list[tuple[str, str]], list[email.message.Message]]:
    """Every header field of the test mails, raw (RFC 2047 words still encoded), and
    every MIME part of them (read by the worker that runs these tests, not at collection)."""
    found: list[tuple[str, str]] = []
    parts: list[email.message.Message] = []
    for path in sorted(DATA.rglob("*.eml")):
        if "test" in path.relative_to(DATA).parts[:2]:
            continue  # the corpus's frozen test half is read by no test but its own
        msg = email.message_from_bytes(path.read_bytes(), policy=compat32)
        found += [(name.lower(), str(value)) for name, value in msg.raw_items()]
        parts += msg.walk()
    return found, parts


@pytest.mark.parametrize("value", CRAFTED_HEADERS)
def test_header_value_as_the_email_package_decodes_it(value: str) -> None:
    if "=?" not in value:
        assert decode_header_value(value) == _stdlib_header(value)
    else:
        assert decode_header_value(value)  # decoded by the email package itself


def test_every_header_of_the_test_mails_decodes_as_before() -> None:
    raw_values = [v for _, v in _test_mails()[0] if "=?" not in v]
    assert len(raw_values) > 1000
    assert [decode_header_value(v) for v in raw_values] == [_stdlib_header(v) for v in raw_values]


@pytest.mark.parametrize("value", CRAFTED_ADDRESSES)
def test_address_as_the_email_package_reads_it(value: str) -> None:
    line = single_line(value)
    assert parse_address(line) == parseaddr(line)
    assert parse_addresses([line]) == getaddresses([line])


def test_every_address_of_the_test_mails_reads_as_before() -> None:
    values = [single_line(v) for name, v in _test_mails()[0] if name in ADDRESS_HEADERS]
    assert len(values) > 1000
    assert [parse_address(v) for v in values] == [parseaddr(v) for v in values]
    assert [parse_addresses([v]) for v in values] == [getaddresses([v]) for v in values]


CRAFTED_CONTENT_TYPES = [
    "text/plain; charset=utf-8",
    'text/plain; charset="UTF-8"',
    "text/plain;charset=ISO-8859-1",
    "  text/html ;  charset = windows-1252  ",
    "TEXT/PLAIN; CHARSET=US-ASCII",
    'text/plain; charset="utf-8',
    "text/plain; charset=utf-8; format=flowed",
    "text/plain; format=flowed; charset=utf-8",
    "charset; charset=utf-8",
    "charset=latin1; charset=utf-8",
    "text/plain; charset*=utf-8''x",
    "text/plain; charset=",
    "text/plain; charset=\u00e9t\u00e9",
    "text/plain; name=a.txt",
    "text/plain; NAME*0=a; name*1=b.txt",
    'text/plain; name="=?utf-8?q?caf=C3=A9?=.txt"',
    "text/plain; charset=utf-8\r\n name=x",
    "text/plain",
    "",
]


def _parts_of(raw: bytes) -> list[email.message.Message]:
    return list(email.message_from_bytes(raw, policy=compat32).walk())


def _crafted_parts() -> list[email.message.Message]:
    parts = []
    for value in CRAFTED_CONTENT_TYPES:
        for disposition in ("", "Content-Disposition: inline\r\n"):
            raw = f"Content-Type: {value}\r\n{disposition}\r\nbody\r\n".encode()
            parts += _parts_of(raw)
    return parts


def _stdlib_named(part: email.message.Message) -> bool:
    try:
        return bool(part.get_filename())
    except Exception:
        return True


def _stdlib_charset(part: email.message.Message) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:
        return None
    return charset if isinstance(charset, str) else None


def test_charset_and_file_name_as_the_email_package_reads_them() -> None:
    parts = _crafted_parts() + _test_mails()[1]
    assert len(parts) > 1000
    for part in parts:
        given = part.get("Content-Disposition")
        assert _content_charset(part) == _stdlib_charset(part), part.get("content-type")
        assert _named(part, given) == _stdlib_named(part), part.get("content-type")


FEEDBACK_TEXTS = [
    "Feedback-Type: abuse\nUser-Agent: x",
    "intro\nfeedback-type:\tfraud",
    "intro\nFEEDBACK-TYPE:abuse",
    "intro\nFeedbac\u212a-Type: abuse",  # KELVIN SIGN: IGNORECASE matches it as "k"
    "intro\r\nFeedback-Type: abuse",
    "intro Feedback-Type: abuse",  # not at a line's start
    " Feedback-Type: abuse",
    "Feedback-Type : abuse",
    "\u0130\nFeedback-Type: virus",  # a character whose lower case is two characters
    "no field at all",
    "",
]


@pytest.mark.parametrize("text", FEEDBACK_TEXTS)
def test_the_feedback_shortcut_finds_what_the_regex_finds(text: str) -> None:
    """``_note_feedback`` searches its regex only where a lower-cased copy shows the field
    can be: the same type (or none) as the regex on the whole text."""
    body = _Body()
    _note_feedback(text, body)
    found = _FEEDBACK_FIELD.search(text)
    assert body.feedback_type == (found.group(1).lower() if found else None)
