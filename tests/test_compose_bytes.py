"""The mails written directly as bytes (mailbot.mail.compose) are byte for byte what the
standard library's generator wrote before (tests/compose_reference.py, a frozen copy of the
builder they replace): every AR template in every language, staying, transferred (AR and
forward) or re-oriented; replies with attachments, alerts, reports, probes; and the header
folding and address parsing they rest on, against the standard library's own.

The reference wrote every text part in base64; ours go 8-bit where their lines allow
(mailbot.mail.transfer_encoding). The byte-for-byte comparisons write them in base64 as the
reference did (``texts_in_base64``), so that they compare every header and the structure;
``test_an_ar_in_8_bit_reads_as_the_reference`` compares the 8-bit texts themselves.

What is random in a mail (Message-ID, MIME boundary, forward boundary) and the date are
fixed the same way for both builders; everything else comes from the code under test.
"""

from __future__ import annotations

import itertools
import random
import string
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.header import Header
from pathlib import Path
from typing import Any

import compose_reference as reference
import pytest
from servers import read_mail

from mailbot.app.acknowledge import Planner, Received
from mailbot.config import Config
from mailbot.core.message import parse_message
from mailbot.core.routing import RoutingDecision
from mailbot.mail import (
    compose,
    forward_mail,
    header_encoding,
    outgoing_mail,
)
from mailbot.render.rendering import RenderedMail
from mailbot.render.templates import Renderer

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ["fr", "en", "ar", "es", "pt", "ro", "ru", "tr", "uk", None, "zh"]
NOW = datetime(2026, 3, 9, 10, 30, tzinfo=UTC)
SUBJECTS = [
    "Demande de carte grise suite à un achat",
    "Question",
    "",
    "Échange de permis de conduire étranger — rendez-vous impossible à obtenir depuis "
    "trois semaines, que faire ? « urgent »",
    "تجديد بطاقة الإقامة",
    "Продление вида на жительство",
    "an ASCII subject long enough to need folding somewhere " * 3,
]


class _Frozen(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _Frozen:
        return cls.fromtimestamp(NOW.timestamp(), tz)


_ids: Iterator[int] = itertools.count()


def _message_id(domain: str) -> str:
    return f"<{next(_ids)}.fixed@{domain}>"


@pytest.fixture(autouse=True)
def fixed_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Message-IDs, forward boundaries and dates the same for both builders."""
    # The new builder makes Message-IDs where a mail and a forward are built, and reads the
    # clock there and in the Composer; the reference is one module.
    for module in (outgoing_mail, forward_mail, reference):
        monkeypatch.setattr(module, "new_message_id", _message_id)
    for module in (outgoing_mail, compose, reference):
        monkeypatch.setattr(module, "datetime", _Frozen)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=0xC0FFEE))


@pytest.fixture
def texts_in_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text parts written as the reference writes them: base64, their line ends kept."""

    def base64_text(subtype: str, text: str, boundary: bytes | None) -> tuple[bytes, bytes]:
        payload = reference._text_part(text, subtype).get_payload()
        return b"base64", payload.encode("ascii").replace(b"\n", b"\r\n")

    monkeypatch.setattr(outgoing_mail, "_encoded", base64_text)


def both(build: Any, seed: int = 7) -> tuple[list[bytes], list[bytes]]:
    """``build(module)`` with each builder, from the same random state and Message-ID
    counter: (new, reference)."""
    global _ids
    results = []
    for module in (compose, reference):
        random.seed(seed)
        _ids = itertools.count()
        results.append(build(module))
    return results[0], results[1]


@pytest.fixture(scope="module")
def renderer(config: Config) -> Renderer:
    return Renderer(config.templates)


def citizen_mail(subject: str, to: str) -> bytes:
    return (
        "From: Camille Durand <camille.durand@example.org>\r\n"
        f"To: {to}\r\nSubject: {subject}\r\n"
        "Message-ID: <question-1@example.org>\r\n"
        "References: <earlier-0@example.org>\r\n"
        "Date: Mon, 09 Mar 2026 09:00:00 +0100\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Bonjour,\r\nJe voudrais savoir où en est mon dossier.\r\nMerci.\r\n"
    ).encode()


def decision(service: str, reorient: str | None = None, transfer: bool = False) -> RoutingDecision:
    return RoutingDecision(
        service=service,
        category="information",
        priority="normal",
        reorient=reorient,
        transfer_allowed=transfer,
        rule_hits=(),
        scores={},
        defaulted=False,
    )


CASES = {
    "stays": lambda mailbox: decision(mailbox),
    "transferred": lambda mailbox: decision("cartes-grises", transfer=True),
    "reoriented": lambda mailbox: decision(mailbox, reorient="mairie"),
}


def ars(
    config: Config, renderer: Renderer, mailbox: str, language: str | None
) -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    """The AR of ``mailbox``, its transfer notice and forwards, its re-orientation: for each
    case, the mails each builder plans (new, reference)."""
    box = config.mailboxes[mailbox]
    for index, (case, routing) in enumerate(CASES.items()):
        subject = SUBJECTS[(LANGUAGES.index(language) + index) % len(SUBJECTS)]
        raw = citizen_mail(subject, box.address)
        mail = Received(
            mailbox=mailbox,
            raw=raw,
            parsed=parse_message(raw),
            received_at=NOW,
            reference="SM-2026-000123",
            recipient="camille.durand@example.org",
            language=language,
        )

        def plan(module: Any, mail: Received = mail, routing: Any = routing) -> list[bytes]:
            planner = Planner(config, renderer, module.Composer.from_config(config))
            return [queued.raw for queued in planner.plan(mail, routing(mailbox)).mails]

        new, old = both(plan)
        yield case, new, old


@pytest.mark.usefixtures("texts_in_base64")
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("mailbox", ["general", "etrangers"])
def test_every_ar_template_and_language(
    config: Config, renderer: Renderer, mailbox: str, language: str | None
) -> None:
    """The AR of each mailbox, the transfer notice and its forwards, the re-orientation."""
    for case, new, old in ars(config, renderer, mailbox, language):
        expected = {"stays": 1, "transferred": 2, "reoriented": 1}[case]
        assert len(old) == expected, case
        assert new == old, case


def texts(raw: bytes) -> list[tuple[str, str, str]]:
    """Each text part of a mail: its type, transfer encoding and text (LF line ends)."""
    return [
        (part.get_content_type(), part["Content-Transfer-Encoding"], part.get_content())
        for part in read_mail(raw).walk()
        if part.get_content_maintype() == "text"
    ]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("mailbox", ["general", "etrangers"])
def test_an_ar_in_8_bit_reads_as_the_reference(
    config: Config, renderer: Renderer, mailbox: str, language: str | None
) -> None:
    """Every AR, notice and re-orientation: the same headers, byte for byte, up to its
    texts; the texts 8-bit, the plain one the reference's, the HTML the reference's with its
    line ends joined by spaces into lines of at most 998 octets; a fifth fewer bytes or more."""
    for case, new, old in ars(config, renderer, mailbox, language):
        ar, reference_ar = new[0], old[0]
        head = ar.index(b"\r\n\r\n")
        assert ar[:head] == reference_ar[:head], case
        assert max(map(len, ar.split(b"\r\n"))) <= 998, case
        ours, theirs = texts(ar), texts(reference_ar)
        assert [kind for kind, _, _ in ours] == ["text/plain", "text/html"], case
        assert [encoding for _, encoding, _ in ours] == ["8bit", "8bit"], case
        assert ours[0][2] == theirs[0][2], case
        html, reference_html = ours[1][2], theirs[1][2]
        assert html.endswith("\n") and reference_html.endswith("\n"), case
        assert html[:-1].replace("\n", " ") == reference_html[:-1].replace("\n", " "), case
        assert html.count("\n") < reference_html.count("\n") / 5, case
        assert len(ar) < 0.8 * len(reference_ar), case
        assert new[1:] == old[1:], case  # a forward: as before


@pytest.mark.parametrize(
    ("language", "said"),
    [
        ("en", b"fr, en"),
        ("ar", b"fr, ar"),
        ("fr", b"fr"),
        (None, b"fr, en"),
        ("zh", b"fr, zh-Hans"),
    ],
)
def test_a_bilingual_ar_says_both_its_languages(
    config: Config, renderer: Renderer, language: str | None, said: bytes
) -> None:
    """An AR in French and the citizen's language (its HTML's ``lang`` attributes say both)
    has both in Content-Language, a list (RFC 3282 § 2), French first as in the mail; an
    undetected language gets French and English, and says so."""
    raw = citizen_mail("Question", config.mailboxes["etrangers"].address)
    mail = Received(
        mailbox="etrangers",
        raw=raw,
        parsed=parse_message(raw),
        received_at=NOW,
        reference="SM-2026-000123",
        recipient="camille.durand@example.org",
        language=language,
    )
    planner = Planner(config, renderer, compose.Composer.from_config(config))
    (ar,) = planner.plan(mail, decision("etrangers")).mails
    (found,) = [line for line in ar.raw.split(b"\r\n") if line.startswith(b"Content-Language:")]
    assert found == b"Content-Language: " + said


@pytest.mark.usefixtures("texts_in_base64")
@pytest.mark.parametrize(
    "name",
    [
        "reponse-cartes-grises",
        "reponse-cni-passeport",
        "reponse-dossier-etranger",  # declares an attachment: multipart/mixed
        "reponse-permis",
        "reponse-rendez-vous-dmi",
        "demande-precisions",
        "notification-transfert",
    ],
)
def test_standard_replies(config: Config, renderer: Renderer, name: str) -> None:
    meta = renderer.meta(name)
    rendered = renderer.render(name, meta.examples(include_optional=True))

    def reply(module: Any) -> list[bytes]:
        composer = module.Composer.from_config(config)
        mail = composer.to_citizen(
            rendered,
            mailbox_address="pref-contact@seine-maritime.gouv.fr",
            to="Jean Dùpont <jean@example.org>",
            in_reply_to="<question-1@example.org>",
            references=["<earlier-0@example.org>"],
            automatic=False,
            attachments=meta.attachments,
        )
        return [mail.as_bytes(), str(mail["Message-ID"]).encode()]

    new, old = both(reply)
    assert new == old


@pytest.mark.usefixtures("texts_in_base64")
def test_alert_report_and_probe(config: Config, renderer: Renderer) -> None:
    """Internal mails, a report with its chart and table (readdressed), a probe's mark."""
    alert = renderer.render("alertes-delais", renderer.meta("alertes-delais").examples())
    report = renderer.render("rapport-delais", renderer.meta("rapport-delais").examples())

    def internal(module: Any) -> list[bytes]:
        # Each mail written as soon as built, as the outbox does (boundaries are drawn in
        # the same order then).
        composer = module.Composer.from_config(config)
        written = [composer.internal(alert, to="chef@seine-maritime.gouv.fr").as_bytes()]
        weekly = composer.report(report, b"\x89PNG fake", b"a;b\r\n1;2\r\n", "d.csv")
        weekly.readdress("direction@seine-maritime.gouv.fr")
        written.append(weekly.as_bytes())
        probe = composer.probe(
            alert, from_address="sonde@probe.example.org", to="x@y.fr", secret="s"
        )
        written.append(probe.as_bytes())
        return written

    new, old = both(internal)
    assert new == old


@pytest.mark.usefixtures("texts_in_base64")
@pytest.mark.parametrize(
    "to",
    [
        "usager@example.org",
        "Jean Dùpont <jean@example.org>",
        '"Dupont, Jean" <jean.dupont@example.org>',
        "jérôme@exemple.fr",  # SMTPUTF8: raw UTF-8 in the header
        '"jean dupont"@example.org',
    ],
)
@pytest.mark.parametrize(
    "texts",
    [("Bonjour\n", "<p>Bonjour</p>\n"), ("", "<p>vide</p>"), ("x" * 5000, "é" * 3000)],
)
def test_build_email_options(to: str, texts: tuple[str, str]) -> None:
    """Recipients of every form, extra headers, threads, and empty or long parts."""
    rendered = RenderedMail(subject="Réponse à « votre » question", text=texts[0], html=texts[1])

    def build(module: Any) -> list[bytes]:
        mail = module.build_email(
            rendered,
            from_address="pref-contact@seine-maritime.gouv.fr",
            from_name='Préfecture "76"',
            to=to,
            message_id_domain="mailbot.seine-maritime.gouv.fr",
            in_reply_to="<a@example.org>",
            references=[f"<ref{n}@example.org>" for n in range(30)] + ["<" + "l" * 120 + "@x>"],
            loop_header_value="mailbot",
            extra_headers={"X-Mailbot-Reference": "SM-2026-000001", "X-Note": "déjà vu " * 20},
            date=NOW,
        )
        return [mail.as_bytes(), *(str(mail[h]).encode() for h in ("To", "Subject", "From"))]

    new, old = both(build)
    assert new == old


ORIGINALS = [
    b"From: a@example.org\nSubject: bare LF\n\nline\n",
    b"From: a@example.org\r\nSubject: no final line end\r\n\r\nlast",
    "From: a@example.org\r\nSubject: 8 bits\r\n\r\nété\r\n".encode(),
    b"From: a@example.org\r\nSubject: long line\r\n\r\n" + b"x" * 2000 + b"\r\n",
    b"From: a@example.org\rSubject: bare CR\r\rbody\r",
]


@pytest.mark.parametrize("original", ORIGINALS)
@pytest.mark.parametrize("subject", SUBJECTS)
def test_forwards(original: bytes, subject: str) -> None:
    def forward(module: Any) -> list[bytes]:
        message_id, raw = module.build_forward(
            original,
            reference="SM-2026-000123",
            subject=subject,
            note="Bonjour,\nVoici le message d'un usager.\n",
            from_address="pref-contact@seine-maritime.gouv.fr",
            from_name="Préfecture de la Seine-Maritime",
            to="cartes-grises@seine-maritime.gouv.fr",
            reply_to="usager@example.org",
            message_id_domain="mailbot.seine-maritime.gouv.fr",
            loop_header_value="mailbot",
            date=NOW,
        )
        return [message_id.encode(), raw]

    new, old = both(forward)
    assert new == old


def outcome(function: Any, *args: object) -> object:
    """What ``function(*args)`` returns, or the type and text of what it raises."""
    try:
        return function(*args)
    except Exception as exc:  # the same refusal, whatever it is
        return type(exc), str(exc)


def test_header_lines_match_the_standard_library() -> None:
    """``_header_line`` and the Q-encoded subject against compat32's own folding, on
    random values: spaces at the ends, runs of spaces, tabs, controls, long words, UTF-8."""
    rng = random.Random(14)
    ascii_words = string.ascii_letters + "      -_=?;,.\"'()<>@:"
    alphabets = [ascii_words, ascii_words + "\t", ascii_words + "éàü€😀ى\x0b\x1c"]
    hits = 0
    for _ in range(2000):
        alphabet = rng.choice(alphabets)
        size = rng.randrange(0, 100)
        if alphabet is ascii_words and rng.random() < 0.3:  # about the 998-octet limit
            size = rng.randrange(980, 1000)
        value = "".join(rng.choice(alphabet) for _ in range(size))
        if rng.random() < 0.2 and 0 < len(value) < 100 and value.splitlines() == [value]:
            # an already folded value, as _encoded gives it
            value = header_encoding._qp_header(value, "Subject", 76)
        name = rng.choice(["Subject", "X-Mailbot-Reference", "X-A"])
        expected = outcome(header_encoding.WIRE.fold_binary, name, value)
        found = outcome(header_encoding.header_line, name, value)
        assert found == expected, value
        hits += found == f"{name}: {value}\r\n".encode()
        if value and len(value) < 200:  # Header's own cutting is quadratic: short ones
            words = Header(value, header_encoding._UTF8_QP, header_name=name, maxlinelen=76)
            encoded = header_encoding._qp_header(value, name, 76)
            assert encoded == words.encode(linesep="\r\n"), value
    assert hits > 600  # many values took the direct path
    folded = header_encoding._qp_header("é" * 200, "Subject", 76)
    wire = header_encoding.WIRE
    assert header_encoding.header_line("Subject", folded) == wire.fold_binary("Subject", folded)


def test_plain_addresses_read_as_the_parser_reads_them() -> None:
    """The bare-address shortcut gives what the strict parse gives, or refuses the same."""
    rng = random.Random(5)
    alphabets = ["ab.@-_+!#{}~'=?", "ab.@-_+!#{}~'\"é ()<>,;:[]\\"]
    plain = 0
    for _ in range(2000):
        alphabet = rng.choice(alphabets)
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 16)))
        expected = outcome(header_encoding._parsed_address, value, "to")
        assert outcome(header_encoding.one_address, value, "to") == expected, value
        plain += bool(header_encoding._PLAIN_ADDRESS.fullmatch(value))
    assert plain > 100  # the shortcut was taken often


def test_encoded_words_are_cut_where_header_cuts_them() -> None:
    """The Q words cut in the encoded text (never inside "=XX" nor inside a character)
    against ``Header.encode`` on values dense in multi-octet characters, at many widths."""
    rng = random.Random(2920)
    alphabet = "ab =?_éàü€😀ىЖ\u00a0"
    for _ in range(1500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
        width = rng.randrange(24, 80)
        header = Header(value, header_encoding._UTF8_QP, header_name="Subject", maxlinelen=width)
        expected = outcome(header.encode, ";, \t", None, "\r\n")
        encode = header_encoding._qp_header
        assert outcome(encode, value, "Subject", width) == expected, (value, width)
