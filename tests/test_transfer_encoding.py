"""How our mails' texts travel (mailbot.mail.transfer_encoding): 8-bit where their lines
allow, base64 where they do not, HTML line ends joined only where a space means the same,
and re-encoded for a relay without 8BITMIME — that last against a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from servers import SmtpServer, read_mail

from mailbot.mail.compose import build_email
from mailbot.mail.outgoing_mail import OutgoingMail
from mailbot.mail.smtp import Envelope, SmtpTransport
from mailbot.mail.transfer_encoding import seven_bit, text_body
from mailbot.render.rendering import RenderedMail

BOUNDARY = b"===============0123456789012345678=="
HTML = (
    '<!DOCTYPE html>\n<html lang="fr">\n<head>\n<style>\n  .a { color: red; }\n</style>\n'
    '</head>\n<body>\n<p class="lead">Nous avons bien reçu votre message.</p>\n'
    + "<p>Votre référence&nbsp;: <strong>SM-2026-000123</strong></p>\n" * 40
    + "<p>Préfecture de la Seine-Maritime</p>\n</body>\n</html>\n"
)


def joined_html(html: str) -> str:
    """The HTML part's text as it goes, with LF line ends."""
    encoding, body = text_body(html, BOUNDARY, html=True)
    assert encoding in (b"7bit", b"8bit")
    return body.decode().replace("\r\n", "\n")


def octets(text: str) -> list[int]:
    return [len(line.encode()) for line in text.split("\n")]


def test_html_lines_are_joined_by_spaces_within_998_octets() -> None:
    joined = joined_html(HTML)
    assert joined.replace("\n", " ") == HTML.replace("\n", " ")
    assert joined.endswith("</html>\n") and not joined.endswith("\n\n")
    assert max(octets(joined)) <= 998
    assert len(joined.split("\n")) - 1 == 3  # 2,766 octets in 52 lines: three of them
    assert min(octets(joined)[:2]) > 900  # each line filled before the next begins


def test_a_line_of_multibyte_text_is_cut_by_octets_not_characters() -> None:
    html = "\n".join(["<p>" + "é" * 100 + "</p>"] * 30) + "\n"  # 207 octets, 107 characters
    joined = joined_html(html)
    assert max(octets(joined)) <= 998
    assert len(joined.split("\n")) - 1 == 8  # four pieces a line: five would be 1,039


@pytest.mark.parametrize(
    "html",
    [
        "<p>a</p>\n<pre>line one\nline two</pre>\n",
        "<p>a</p>\n<TEXTAREA>one\ntwo</TEXTAREA>\n",
        '<p>a</p>\n<div style="white-space: pre-wrap">one\ntwo</div>\n',
        '<p>a</p>\n<div style="white-space:pre-line">one\ntwo</div>\n',
        '<p>a</p>\n<a title="first line\nsecond line" href="x">y</a>\n',
        "<p>a</p>\n<img alt='one\ntwo'>\n",
        "<p>a</p>\n<script>var a = 1 // note\nvar b = 2</script>\n",
    ],
)
def test_html_whose_line_ends_may_mean_more_than_a_space_keeps_them(html: str) -> None:
    assert joined_html(html) == html


def test_ascii_text_goes_7bit_and_utf8_text_8bit_with_crlf_line_ends() -> None:
    assert text_body("Bonjour\nMerci.\n", BOUNDARY) == (b"7bit", b"Bonjour\r\nMerci.\r\n")
    encoding, body = text_body("Réponse à Zoé\n", BOUNDARY)
    assert (encoding, body) == (b"8bit", "Réponse à Zoé\r\n".encode())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("é" * 499 + "\n", "a line of 998 octets fits"),
        ("x" * 998, "998 ASCII octets, no final line end"),
    ],
)
def test_a_line_of_998_octets_still_goes_as_it_is(text: str, why: str) -> None:
    encoding, body = text_body(text, BOUNDARY)
    assert encoding in (b"7bit", b"8bit"), why
    assert body == text.replace("\n", "\r\n").encode(), why


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("x" * 999 + "\n", "a line over 998 octets (RFC 5322 §2.1.1)"),
        ("é" * 500 + "\n", "1,000 octets in 500 characters"),
        ("a\0b\n", "NUL is not allowed in 8bit data (RFC 2045 §2.8)"),
        ("a\rb\n", "a carriage return of the text's own"),
        ("a\n--" + BOUNDARY.decode() + "--\nb\n", "a line that would close the multipart"),
    ],
)
def test_text_whose_lines_cannot_travel_as_they_are_goes_in_base64(text: str, why: str) -> None:
    encoding, body = text_body(text, BOUNDARY)
    assert encoding == b"base64", why
    assert max(len(line) for line in body.split(b"\r\n")) <= 76, why
    part = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    assert read_mail(part + body).get_content() == text, why


def test_the_boundary_is_only_checked_where_we_chose_it() -> None:
    """None: the standard library draws the boundary, unlike any line of the text."""
    assert text_body("-- \nSignature\n", None)[0] == b"7bit"


def ar(to: str = "usager@example.org") -> OutgoingMail:
    return build_email(
        RenderedMail(subject="Accusé de réception", text="Référence : SM-2026-000123\n", html=HTML),
        from_address="pref-etrangers@seine-maritime.gouv.fr",
        from_name="Préfecture de la Seine-Maritime",
        to=to,
        message_id_domain="mailbot.seine-maritime.gouv.fr",
        date=datetime(2026, 3, 9, 10, 30, tzinfo=UTC),
    )


@pytest.mark.parametrize("to", ["usager@example.org", "jérôme@exemple.fr"])
def test_seven_bit_re_encodes_the_texts_and_keeps_everything_else(to: str) -> None:
    """The header section byte for byte, a raw UTF-8 address (SMTPUTF8) included."""
    raw = ar(to).as_bytes()
    downgraded = seven_bit(raw)
    head = raw.index(b"\r\n\r\n")
    assert not raw[head:].isascii() and downgraded[head:].isascii()
    assert downgraded[:head] == raw[:head]
    before, after = read_mail(raw), read_mail(downgraded)
    assert after.get_body(("plain",))["Content-Transfer-Encoding"] == "base64"
    for kind in ("plain", "html"):  # base64 of the canonical form: CRLF line ends (RFC 2049)
        text = after.get_body((kind,)).get_content()
        assert text.replace("\r\n", "\n") == before.get_body((kind,)).get_content()


def test_seven_bit_leaves_an_attached_mail_as_it_is() -> None:
    """A forward's message/rfc822 cannot be base64 (RFC 2046 §5.2.1): it goes as before."""
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\nMIME-Version: 1.0\r\n\r\n--b\r\n'
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Subject: x\r\n\r\n" + "été\r\n".encode() + b"--b--\r\n"
    )
    assert seven_bit(raw) == raw


def sent(server: SmtpServer, envelope: Envelope, eight_bit: bool = True) -> bytes:
    """What ``server`` received of ``envelope`` sent by mailbot's SMTP client."""
    transport = SmtpTransport(server.smtp_config().model_copy(update={"eight_bit": eight_bit}))
    try:
        transport.send_batch([envelope], lambda _: True, lambda _, error: None)
    finally:
        transport.close()
    (received,) = server.wait_for(1)
    assert ("BODY=8BITMIME" in received.mail_options) == (not received.raw.isascii())
    return received.raw


@pytest.mark.servers
@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    ("offered", "eight_bit"), [(False, True), (True, False)], ids=["not-offered", "turned-off"]
)
def test_without_8bitmime_or_with_eight_bit_off_the_ar_goes_in_base64(
    pipelining: bool, offered: bool, eight_bit: bool
) -> None:
    """A relay without 8BITMIME (RFC 6152 §3), or ``smtp.eight_bit: false`` (a relay that
    signs with DKIM before hosts that may convert): the texts arrive in base64, the same
    once read."""
    mail = ar()
    envelope = Envelope("pref@seine-maritime.gouv.fr", "usager@example.org", mail.as_bytes())
    with SmtpServer(eight_bit_mime=offered, pipelining=pipelining) as server:
        raw = sent(server, envelope, eight_bit)
    assert raw.isascii()
    got = read_mail(raw)
    assert got.get_body(("html",))["Content-Transfer-Encoding"] == "base64"
    html = got.get_body(("html",)).get_content().replace("\r\n", "\n")
    assert html == mail.parsed().get_body(("html",)).get_content()


@pytest.mark.servers
@pytest.mark.parametrize("pipelining", [True, False])
def test_a_relay_with_8bitmime_gets_the_ar_as_written(pipelining: bool) -> None:
    mail = ar()
    envelope = Envelope("pref@seine-maritime.gouv.fr", "usager@example.org", mail.as_bytes())
    with SmtpServer(pipelining=pipelining) as server:
        assert sent(server, envelope) == envelope.raw
