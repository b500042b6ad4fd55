"""Parsing hostile mail: never an exception, every ceiling recorded as a defect, sizes bounded.

Speed is measured in bench/poison.py; these tests assert what makes it fast: how much of a
mail is kept and read (the subject, the headers, the parts, the text routing reads).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from poison import attachment, citizen, huge_subject, nested, poison_mails

from mailbot.config import load_config
from mailbot.core.facts import routing_input
from mailbot.core.message import (
    BODY_TEXT_LIMIT,
    MAX_HEADER_CHARS,
    MAX_HEADER_FIELDS,
    SUBJECT_LIMIT,
    decode_header_value,
    parse_message,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("name", "raw"), list(poison_mails().items()))
def test_poison_mail_parses(name: str, raw: bytes) -> None:
    parsed = parse_message(raw)
    assert len(parsed.subject) <= SUBJECT_LIMIT
    parsed.subject.encode("utf-8")  # no lone surrogate left for a database or a terminal
    parsed.body_text.encode("utf-8")
    for values in parsed.headers.values():
        for value in values:
            value.encode("utf-8")


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("=?undefined?q?x?=", "x"),  # 'undefined' is a Python codec that always raises
        ("=?punycode?q?_?=", " "),  # "_" is a space in the Q encoding
        ("=?idna?q?abc?=", "abc"),
        ("=?rot13?q?nop?=", "nop"),  # not a text encoding: read as UTF-8
        ("=?unicode_escape?q?=5Cud800?=", "\\ud800"),  # never turned into a lone surrogate
        ("=?utf-7?q?+2AA-?=", "\ufffd" * 3),  # a surrogate from a real charset: replaced
        ("=?iso-8859-1?q?caf=E9?= =?utf-8?q?_cr=C3=A8me?=", "café crème"),
        ("Re: =?utf-8?b?w6l0w6k=?= ok", "Re: été ok"),
    ],
)
def test_any_charset_in_an_encoded_word(word: str, expected: str) -> None:
    assert decode_header_value(word) == expected


def test_charset_name_with_an_8bit_byte() -> None:
    """email.errors.CharsetError from the email package, formerly."""
    parsed = parse_message(citizen(1, "=?ut\udce9f-8?q?caf=C3=A9?="))
    assert parsed.subject == "café"


def test_part_charsets_and_filenames_no_codec_reads() -> None:
    for raw in (
        citizen(1, "x", Content_Type="text/plain; charset=ascii€"),
        citizen(1, "x", Content_Type="text/plain; charset=punycode"),
        citizen(1, "x", Content_Type="text/plain; charset=undefined"),
    ):
        assert "horaires" in parse_message(raw).body_text
    named = citizen(
        1,
        "x",
        Content_Type="application/pdf",
        Content_Disposition="attachment; filename*=undefined''a",
    )
    assert parse_message(named).has_attachments


def test_mime_depth_is_bounded_and_recorded() -> None:
    deep = parse_message(nested(2000))  # 2,000 containers: not even handed to the parser
    assert "MimePartsLimit" in deep.defects
    assert len(deep.parts) == 1
    wrapped = b"From: a@example.fr\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 3000
    deepest = parse_message(wrapped + b"Subject: x\r\n\r\ntexte\r\n")
    assert "MimeDepthLimit" in deepest.defects  # the recursive parser gave up (RecursionError)
    assert len(deepest.parts) == 1
    medium = parse_message(nested(200))
    assert "MimeDepthLimit" in medium.defects
    assert len(medium.parts) == 21  # the root and 20 levels, not 200
    shallow = parse_message(nested(5))
    assert "MimeDepthLimit" not in shallow.defects
    assert shallow.body_text.strip() == "Bonjour"


def test_part_count_is_bounded_and_recorded() -> None:
    head = citizen(1, "x", Content_Type='multipart/mixed; boundary="p"').split(b"\r\n\r\n")[0]
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nmorceau\r\n" for _ in range(5000))
    parsed = parse_message(head + b"\r\n\r\n" + parts + b"--p--\r\n")
    assert "MimePartsLimit" in parsed.defects
    assert len(parsed.parts) == 200


def test_header_count_and_length_are_bounded_and_recorded() -> None:
    many = citizen(1, "x").replace(b"Subject: x\r\n", b"X-Tag: t\r\n" * 5000 + b"Subject: x\r\n")
    parsed = parse_message(many)
    assert "HeaderFieldsLimit" in parsed.defects
    assert sum(len(v) for v in parsed.headers.values()) == MAX_HEADER_FIELDS
    long_value = citizen(1, "x", X_Long="y" * 100_000)
    parsed = parse_message(long_value)
    assert "HeaderLengthLimit:x-long" in parsed.defects
    assert len(parsed.header("x-long")[0]) == MAX_HEADER_CHARS


def test_a_10_mb_subject_is_cut_before_any_work() -> None:
    """Issue 10.7: a mail of duplicated Subject lines (10 MB) used to cost minutes and
    gigabytes; the parser now reads a bounded header block, and what routing reads is
    bounded too. Memory is measured (a size); its time is in bench/poison.py."""
    raw = huge_subject(1, 10)
    assert len(raw) > 10_000_000
    config = load_config(ROOT / "rules.yaml")
    tracemalloc.start()
    try:
        parsed = parse_message(raw)
        facts = routing_input(config, "general", parsed)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(parsed.subject) == SUBJECT_LIMIT
    assert "HeaderBlockLimit" in parsed.defects and "SubjectLengthLimit" in parsed.defects
    assert len(facts.subject) <= SUBJECT_LIMIT and len(facts.body) <= BODY_TEXT_LIMIT
    assert peak < 20_000_000  # a few MB of bookkeeping; the 10 MB mail itself is not copied


def test_a_30_mb_attachment_keeps_the_body_text_bounded() -> None:
    parsed = parse_message(attachment(1, 30))
    assert parsed.has_attachments and parsed.body_text.strip() == "Ci-joint."
    assert parsed.size > 30_000_000


def test_fingerprint_tells_copies_from_different_mails() -> None:
    one = citizen(1, "Carte grise")
    copy = b"Received: from mx2.example.fr\r\nDelivered-To: alias@x\r\n" + one
    other = one.replace(b"horaires", b"tarifs")  # same Message-ID, different mail
    assert parse_message(one).fingerprint == parse_message(copy).fingerprint
    assert parse_message(one).fingerprint != parse_message(other).fingerprint
    assert parse_message(one).message_id == parse_message(other).message_id
    assert parse_message(b"").fingerprint != parse_message(bytes(range(256))).fingerprint


def test_message_ids_are_printable_ascii() -> None:
    parsed = parse_message(citizen(1, Message_ID="<a\x18b@example.fr>", In_Reply_To="<é@x.fr>"))
    assert parsed.message_id is None and parsed.in_reply_to == ()


def _forwarded_as_attachment(own: bytes) -> bytes:
    """A citizen's mail (``own``: its first part) with an earlier mail attached as .eml."""
    return (
        b"From: Jeanne <citoyen@example.fr>\r\nSubject: Mon dossier\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n" + own + b"\r\n--zz\r\n"
        b"Content-Type: message/rfc822\r\n\r\n"
        b"From: someone@example.com\r\nSubject: Previous\r\nContent-Type: text/plain\r\n\r\n"
        b"Dear customer, your parcel is on its way.\r\n--zz--\r\n"
    )


@pytest.mark.parametrize(
    "own",
    [
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Bonjour, voici le courriel re\xc3\xa7u.</p>",
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, voici le courriel re\xc3\xa7u.",
    ],
    ids=["html", "plain"],
)
def test_an_attached_mail_is_an_attachment_and_not_the_citizens_text(own: bytes) -> None:
    """A forwarded .eml (message/rfc822) is an attachment: routing's ``has_attachment``
    sees it, and the citizen's own words, not the attached mail's, are the text that
    routing and language detection read."""
    parsed = parse_message(_forwarded_as_attachment(own))
    assert parsed.has_attachments
    assert parsed.body_text == "Bonjour, voici le courriel reçu."
    assert "parcel" not in parsed.body_html


def test_a_bare_attached_mail_still_gives_its_text() -> None:
    """With no text of its own, the attached mail's text is all there is to route on."""
    parsed = parse_message(_forwarded_as_attachment(b"Content-Type: text/plain\r\n\r\n"))
    assert parsed.has_attachments and "parcel" in parsed.body_text


def test_a_field_name_with_space_before_its_colon_does_not_end_the_header_block() -> None:
    """RFC 5322's obsolete syntax ("X-Mailer : …", old clients): the email package took the
    line for the end of the headers, so To and Subject became body and the mail was skipped
    as not addressed to us. The body's own " :" lines are left alone."""
    raw = (
        b"Return-Path: <jean@example.fr>\r\nFrom: Jean <jean@example.fr>\r\n"
        b"X-Mailer : OddClient 1.0\r\nTo: pref-contact@seine-maritime.gouv.fr\r\n"
        b"Subject : Carte grise\r\nMessage-ID: <odd@example.fr>\r\n\r\n"
        b"Bonjour,\r\nObjet : ma carte grise\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.to == ("pref-contact@seine-maritime.gouv.fr",)
    assert parsed.subject == "Carte grise" and parsed.message_id == "<odd@example.fr>"
    assert "ObsoleteFieldName" in parsed.defects
    assert parsed.body_text == "Bonjour,\r\nObjet : ma carte grise\r\n"
    assert "ObsoleteFieldName" not in parse_message(raw.replace(b" :", b":", 2)).defects


@pytest.mark.parametrize("piece", ["<script ", "<style ", "<a", "<p x='"])
def test_an_html_only_mail_of_unclosed_tags_is_read_in_linear_time(piece: str) -> None:
    """Anyone can send a mail whose only part is HTML of tags that never close; its text
    (for the language and the routing) is read at intake. The tag pattern scanned from each
    "<" to the end of the part (BODY_TEXT_LIMIT, 100,000 characters): 6 s of the poll's CPU
    per such mail, holding the GIL, whatever the sender's rate limit."""
    import time

    markup = piece * (BODY_TEXT_LIMIT // len(piece))
    raw = (
        b"Return-Path: <usager@example.fr>\r\nFrom: usager@example.fr\r\n"
        b"To: pref-contact@seine-maritime.gouv.fr\r\nSubject: x\r\nMessage-ID: <x@example.fr>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Bonjour</p>"
    ) + markup.encode()
    started = time.process_time()
    parsed = parse_message(raw)
    assert time.process_time() - started < 2.0
    assert parsed.body_text.startswith("Bonjour")


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("<p>Bonjour</p><script>var a = '<b>';</script><p>Merci</p>", "Bonjour Merci"),
        (
            "<STYLE type='text/css'>p { color: red }</Style >Madame,<br>Ma demande",
            "Madame, Ma demande",
        ),
        ("<p title='a > b'>Titre</p>", "b'>Titre"),  # a tag ends at its first ">", as before
        ("3 < 5 et 7 > 2", "3 2"),  # crude, as before: what looks like a tag goes
        ("<script>jamais fermé <p>texte</p>", "jamais fermé texte"),
    ],
)
def test_html_text_drops_tags_scripts_and_styles(markup: str, text: str) -> None:
    """What the linear reading keeps of the crude one it replaced: each tag, and each
    script or style element whole, is a space."""
    from mailbot.core.message import html_to_text

    assert html_to_text(markup) == text
