"""Forwards keep every line within 998 octets and the original byte for byte (once decoded).

RFC 2046 allows message/rfc822 only in 7bit, 8bit or binary: an original with longer lines
goes as message/global in base64 (RFC 6532 §3.7), still the same bytes once decoded.

A huge mail read only in part (``polling.max_message_bytes``) is never attached as if it
were whole: the service gets its header section (text/rfc822-headers) and a note that
says so, with the real size and where the whole mail is.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from servers import MailUser, SmtpServer
from test_e2e import ROOT, citizen_mail, db_rows, etrangers_user, poll, setup, write_config

from mailbot.app.acknowledge import Planner, Received
from mailbot.config import Config, load_config
from mailbot.core.message import parse_message
from mailbot.core.routing import RoutingDecision
from mailbot.core.statuses import OutboxKind
from mailbot.mail.compose import Composer, build_forward
from mailbot.mail.forward import size_fr
from mailbot.render.templates import Renderer

__all__ = ["etrangers_user", "setup"]  # fixtures shared with test_e2e

SERVICE = "pref-cartes-grises@seine-maritime.gouv.fr"
GENERAL = "pref-contact@seine-maritime.gouv.fr"  # rules.yaml's general mailbox
CONSOLE = "https://mailbot.seine-maritime.gouv.fr"
HUGE = 31_457_280  # the reviewer's 31 MB mail, as RFC822.SIZE gave it
LONG_SUBJECT = "Demande concernant ma carte grise " + "et encore des détails " * 90  # 2,000+


def forward(
    original: bytes,
    subject: str = "Carte grise",
    reply_to: str = "a@example.fr",
    whole: bool = True,
) -> bytes:
    _mid, raw = build_forward(
        original,
        reference="SM-2026-000123",
        subject=subject,
        note="Bonjour,\nLe message ci-joint vous est transmis.\n",
        from_address="pref-contact@seine-maritime.gouv.fr",
        from_name="Préfecture de la Seine-Maritime",
        to=SERVICE,
        reply_to=reply_to,
        message_id_domain="mailbot.seine-maritime.gouv.fr",
        loop_header_value="mailbot@seine-maritime.gouv.fr",
        date=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
        whole=whole,
    )
    return raw


def longest_line(raw: bytes) -> int:
    return max(len(line) for line in raw.split(b"\r\n"))


def attached_part(raw: bytes) -> tuple[bytes, bytes]:
    """The attached part's header lines and body, cut out of the forward by hand."""
    boundary = re.search(rb'boundary="([^"]+)"', raw)
    assert boundary is not None
    parts = raw.split(b"\r\n--" + boundary.group(1))
    part = next(p for p in parts if b"Content-Disposition: attachment" in p)
    head, body = part.split(b"\r\n\r\n", 1)
    return head, body


def attachment(raw: bytes) -> tuple[str, bytes]:
    """The attached part's type and its decoded bytes, cut out of the forward by hand."""
    head, body = attached_part(raw)
    content_type = re.search(rb"Content-Type: ([^\s;]+)", head)
    assert content_type is not None
    if b"Content-Transfer-Encoding: base64" in head:
        body = base64.b64decode(body)
    return content_type.group(1).decode(), body


def mail_with(body: bytes, subject: bytes = b"Carte grise") -> bytes:
    return (
        b"From: Marie Dupont <marie.dupont@example.fr>\r\nTo: pref-contact@example.fr\r\n"
        b"Subject: " + subject + b"\r\nMessage-ID: <m-1@example.fr>\r\n\r\n" + body
    )


@pytest.mark.parametrize(
    "subject",
    [LONG_SUBJECT, "x" * 3000, "é" * 2000, "ascii " * 400],
    ids=["long-french", "unbreakable", "long-utf8", "long-ascii"],
)
def test_the_subject_is_folded_and_reads_back_whole(subject: str) -> None:
    raw = forward(mail_with(b"Bonjour\r\n"), subject=subject)
    assert longest_line(raw) <= 998
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(parsed["Subject"]) == f"[SM-2026-000123] Transmis : {subject.strip()}"


@pytest.mark.parametrize(
    ("body", "content_type", "encoding"),
    [
        (b"Bonjour\r\nUne ligne.\r\n", "message/rfc822", None),
        ("Bonjour, réponse à côté\r\n".encode(), "message/rfc822", b"8bit"),
        (b"x" * 998 + b"\r\n", "message/rfc822", None),  # exactly the limit: still legal
        (b"x" * 999 + b"\r\n", "message/global", b"base64"),
        (("é" * 1500).encode() + b"\r\nfin\r\n", "message/global", b"base64"),
        (b"<html>" + b"a" * 5000 + b"</html>", "message/global", b"base64"),  # no final CRLF
    ],
    ids=["7bit", "8bit", "998", "999", "utf8-long-line", "long-no-final-crlf"],
)
def test_the_original_is_attached_legally_and_unaltered(
    body: bytes, content_type: str, encoding: bytes | None
) -> None:
    original = mail_with(body)
    raw = forward(original)
    assert longest_line(raw) <= 998
    found_type, decoded = attachment(raw)
    assert found_type == content_type
    assert decoded == original
    part_head = raw[raw.index(b"Content-Disposition: attachment") :].split(b"\r\n\r\n")[0]
    if encoding is None:
        assert b"Content-Transfer-Encoding" not in part_head
    else:
        assert b"Content-Transfer-Encoding: " + encoding in part_head
    assert b'filename="SM-2026-000123.eml"' in part_head


def huge_mail_start(head: bytes = b"") -> bytes:
    """What IMAP hands over of a 31 MB mail (``_fetch_whole_or_start``): its header, then
    the first bytes of its body, cut in the middle of a base64 PDF, no closing boundary."""
    return (
        b"From: Marie Dupont <marie.dupont@example.fr>\r\nTo: pref-contact@example.fr\r\n"
        b"Subject: Carte grise\r\nDate: Mon, 09 Mar 2026 09:00:00 +0100\r\n"
        b"Message-ID: <huge-1@example.fr>\r\n" + head + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nVoici mon dossier.\r\n"
        b"--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n" * 200
        + b"JVBERi0xLjQKJcfsj6IKNSAw"
    )


@pytest.mark.parametrize(
    ("head", "charset", "encoding"),
    [
        (b"", None, None),
        ("X-Nom: Hélène\r\n".encode(), "utf-8", b"8bit"),  # raw UTF-8 (RFC 6532)
        ("X-Nom: Hélène\r\n".encode("latin-1"), None, b"8bit"),  # no charset is a wrong one
        (b"X-Long: " + b"x" * 1200 + b"\r\n", None, b"base64"),  # beyond 998: base64
    ],
    ids=["ascii", "utf8", "latin1", "long-line"],
)
def test_a_mail_read_in_part_is_forwarded_with_its_header_alone(
    head: bytes, charset: str | None, encoding: bytes | None
) -> None:
    """Never the cut bytes as if they were the mail: its header section alone, as
    text/rfc822-headers, in a forward that is whole and legal itself."""
    start = huge_mail_start(head)
    raw = forward(start, whole=False)
    assert longest_line(raw) <= 998
    found_type, decoded = attachment(raw)
    assert found_type == "text/rfc822-headers"
    assert decoded == start.split(b"\r\n\r\n", 1)[0] + b"\r\n"  # each field, with its CRLF
    assert b"JVBERi0" not in raw and b"message/rfc822" not in raw and b"message/global" not in raw
    part_head, _body = attached_part(raw)
    assert b'filename="SM-2026-000123-en-tete.txt"' in part_head
    if encoding is None:
        assert b"Content-Transfer-Encoding" not in part_head
    else:
        assert b"Content-Transfer-Encoding: " + encoding in part_head
    assert (b"charset=" + charset.encode() in part_head) if charset else b"charset" not in part_head
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert not parsed.defects  # the forward's own closing boundary is there
    note, headers = parsed.iter_parts()
    assert note.get_content_type() == "text/plain"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert headers.get_payload(decode=True) == decoded


def test_a_mail_with_no_body_read_in_part_is_its_header() -> None:
    """Bare LFs made CRLF; a header with no body (a huge header, cut) is attached whole."""
    raw = forward(b"From: a@example.fr\nSubject: x\n", whole=False)
    assert attachment(raw) == ("text/rfc822-headers", b"From: a@example.fr\r\nSubject: x\r\n")


TO_CARTES_GRISES = RoutingDecision(
    service="cartes-grises",
    category="information",
    priority="normal",
    reorient=None,
    transfer_allowed=True,
    rule_hits=(),
    scores={},
    defaulted=False,
)


def planned(config: Config, raw: bytes, size: int) -> tuple[bytes, bytes]:
    """The AR and the forward the planner queues for ``raw`` (of ``size`` on the server),
    routed from the general mailbox to cartes-grises."""
    planner = Planner(config, Renderer(config.templates), Composer.from_config(config))
    mail = Received(
        mailbox="general",
        raw=raw,
        parsed=parse_message(raw),
        received_at=datetime(2026, 3, 9, 10, 30, tzinfo=UTC),
        reference="SM-2026-000123",
        recipient="marie.dupont@example.fr",
        language="fr",
        size=size,
    )
    plan = planner.plan(mail, TO_CARTES_GRISES)
    assert plan.transferred_to == "cartes-grises"
    ar, forwarded = plan.mails
    assert (forwarded.kind, forwarded.recipient) == (OutboxKind.FORWARD, SERVICE)
    return ar.raw, forwarded.raw


def note_of(raw: bytes) -> str:
    """The forward's note, decoded, its lines joined (a phrase may be wrapped anywhere)."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    note = next(parsed.iter_parts())
    assert note.get_content_type() == "text/plain"
    return " ".join(note.get_content().split())


@pytest.fixture(scope="module")
def rules() -> Config:
    return load_config(ROOT / "rules.yaml")


@pytest.mark.parametrize("public_url", [CONSOLE, None], ids=["console", "no-console"])
def test_the_plan_of_a_mail_read_in_part_says_so_and_attaches_its_header(
    rules: Config, public_url: str | None
) -> None:
    """The reviewer's case at the planner: a 31 MB mail about a carte grise, handed over as
    IMAP reads it (header and the start of its body), transferred to cartes-grises. The
    transfer happens; the forward attaches the header alone and its note tells the real
    size, that the mail could not be forwarded whole, and where it is."""
    config = rules.model_copy(
        update={"web": rules.web.model_copy(update={"public_url": public_url})}
    )
    start = huge_mail_start()
    ar, raw = planned(config, start, HUGE)
    assert b"JVBERi0" not in raw and b"message/rfc822" not in raw
    found_type, decoded = attachment(raw)
    assert found_type == "text/rfc822-headers"
    assert decoded == start.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    note = note_of(raw)
    assert note.startswith("Bonjour, Le message de l'usager, reçu le")
    assert "ci-joint" not in note
    assert (
        "Attention : ce message (31,5 Mo) est trop volumineux pour vous être transmis en "
        "entier. Seul son en-tête (expéditeur, date, objet) est joint : son texte et ses "
        "éventuelles pièces jointes ne le sont pas. Le message complet est dans la boîte "
        f"{GENERAL}, sous la référence SM-2026-000123."
    ) in note
    link = f"{CONSOLE}/courriel/SM-2026-000123"
    assert (f"Sa fiche dans la console de mailbot : {link}" in note) == bool(public_url)
    assert public_url or "console" not in note  # no link to nowhere
    assert b"SM-2026-000123" in ar  # the citizen's AR is the transfer notice, as before


def test_the_plan_of_a_mail_read_whole_is_unchanged(rules: Config) -> None:
    """A mail read whole (its size on the server is its length, or unknown: 0) is forwarded
    as it always was, whatever the console's address: the original as message/rfc822 and
    the note that says "ci-joint"."""
    config = rules.model_copy(update={"web": rules.web.model_copy(update={"public_url": CONSOLE})})
    original = mail_with(b"Bonjour,\r\nMa carte grise.\r\n")
    notes = set()
    for size in (0, len(original)):
        _ar, raw = planned(config, original, size)
        assert attachment(raw) == ("message/rfc822", original)
        notes.add(note_of(raw))
    (note,) = notes
    assert "Le message ci-joint" in note
    assert "volumineux" not in note and "console" not in note


def test_a_utf8_citizen_address_in_reply_to_is_raw_utf8() -> None:
    raw = forward(mail_with(b"Bonjour\r\n"), reply_to="fuzz149÷@example.fr")
    assert "\r\nReply-To: fuzz149÷@example.fr\r\n".encode() in raw


def test_forwards_through_the_servers_keep_lines_legal(setup: Any) -> None:
    """A long subject and a 3,000-octet line, routed to another service, end to end."""
    config, general, _etrangers, smtp = setup
    original = citizen_mail(
        1,
        subject="Déclaration de cession de mon véhicule " + "avec beaucoup de détails " * 80,
        body="Bonjour,\nJ'ai vendu ma voiture : voici ma déclaration de cession pour la "
        "carte grise.\n" + "cession " * 400 + "\nMerci\n",
    )
    assert max(len(line) for line in original.split(b"\r\n")) > 998
    general.append(original)
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp.wait_for(2)
    forwarded = next(r for r in received if r.rcpt_tos == (SERVICE,))
    for message in received:
        assert longest_line(message.raw) <= 998
    found_type, decoded = attachment(forwarded.raw)
    assert found_type == "message/global"
    assert decoded == original


def test_a_huge_mail_reaches_the_service_as_its_header_and_an_honest_note(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """The reviewer's reproduction through Dovecot and SMTP: a mail about a carte grise
    with a 3 MB PDF, above ``max_message_bytes``, read in part, acknowledged and
    transferred. What the service receives: a whole, well-formed forward with the mail's
    header as text/rfc822-headers (no cut PDF) and a note giving the real size and where
    the whole mail is, its console link included."""
    config = write_config(
        tmp_path,
        imap_user,
        etrangers_user,
        smtp_server,
        polling={"max_message_bytes": 100_000},
        web={"public_url": CONSOLE},
    )
    pdf = base64.encodebytes(b"%PDF-1.4\n" + bytes(range(256)) * 12_000).replace(b"\n", b"\r\n")
    text = citizen_mail(
        1,
        subject="Déclaration de cession de mon véhicule",
        body="Bonjour,\nJ'ai vendu ma voiture : voici ma déclaration de cession pour la "
        "carte grise, en pièce jointe.\nMerci\n",
    )
    head, body = text.split(b"\r\n\r\n", 1)
    head = head.replace(
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit",
        b'Content-Type: multipart/mixed; boundary="cession"',
    )
    original = (
        head + b"\r\n\r\n--cession\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body + b"--cession\r\n"
        b'Content-Type: application/pdf; name="cession.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + pdf + b"--cession--\r\n"
    )
    assert len(original) > 4_000_000
    imap_user.append(original)
    assert poll(config, acknowledge_existing=True) == 0
    received = smtp_server.wait_for(2)
    ((reference, size, defects, transferred),) = db_rows(
        config, "SELECT reference, size, defects, transferred FROM messages"
    )
    assert "TruncatedHugeMessage" in defects and transferred == 1 and size >= len(original)
    ar = next(r for r in received if r.rcpt_tos == ("marie.dupont@example.fr",))
    assert reference.encode() in ar.raw
    forwarded = next(r for r in received if r.rcpt_tos == (SERVICE,))
    assert len(forwarded.raw) < 20_000  # not the 264 KB of a cut original
    assert b"message/rfc822" not in forwarded.raw and pdf[:200] not in forwarded.raw
    parsed = email.message_from_bytes(forwarded.raw, policy=email.policy.default)
    assert not parsed.defects and not any(part.defects for part in parsed.walk())
    assert forwarded.raw.rstrip().endswith(b"--")  # its closing boundary is there
    note, headers = parsed.iter_parts()
    assert headers.get_content_type() == "text/rfc822-headers"
    assert headers.get_payload(decode=True) == head + b"\r\n"
    said = " ".join(note.get_content().split())
    assert f"ce message ({size_fr(size)}) est trop volumineux" in said
    assert f"Le message complet est dans la boîte {GENERAL}, sous la référence {reference}." in said
    assert f"Sa fiche dans la console de mailbot : {CONSOLE}/courriel/{reference}" in said


def test_the_note_is_the_one_wrapped_paragraph_by_paragraph() -> None:
    """The note's shortcuts (a paragraph that fits kept as it is, the others wrapped once)
    give the note every paragraph wrapped gave (tests/note_reference.py), whatever the
    lengths of the values: short and long names, addresses, dates, an agent and a reason
    with runs of spaces, line breaks and non-breaking spaces."""
    import random

    import note_reference

    from mailbot.mail.forward import cover_note

    rng = random.Random(78)
    words = [
        "a",
        "service",
        "des cartes grises",
        "x" * 40,
        "é",
        "\u00a0",
        "  ",
        "\n",
        "Jean Dupont",
    ]

    def text(most: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randrange(1, most)))

    def address() -> str:
        return f"{'u' * rng.randrange(1, 60)}@{rng.choice(['x.fr', 'seine-maritime.gouv.fr'])}"

    for _ in range(400):
        values: dict[str, Any] = {
            "reference": f"SM-2026-{rng.randrange(10**6):06d}",
            "received_at": f"lundi {rng.randrange(1, 31)} novembre 2026 à {rng.randrange(24)} h 05",
            "service_name": text(8),
            "citizen": address(),
            "mailbox_address": address(),
            "category": text(4),
            "tracking_address": rng.choice([None, address()]),
            "deadline": rng.choice([None, f"mardi {rng.randrange(1, 31)} décembre 2026"]),
        }
        if rng.random() < 0.3:
            values |= {"transferred_by": text(4), "reason": text(30)}
        assert cover_note(**values) == note_reference.cover_note(**values), values
