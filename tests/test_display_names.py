"""Display names in From and To longer than one RFC 2047 encoded-word.

RFC 2047 §2: an encoded-word is at most 75 characters; §5: a longer text is several
encoded-words separated by folding whitespace, each decodable alone (never a character cut
in two); §6.2: the whitespace between two adjacent encoded-words is not part of the text.
A long service name in Arabic, Chinese or Ukrainian (``sender.from_name``), or a citizen's
long name we reply to, used to go out as one encoded-word of up to 400 characters.

Each header is read back by the standard library twice: ``email.header.decode_header``
(compat32), which applies §6.2, must give the name exactly; ``email.policy.default``'s
parser must find one address, the same addr-spec, no defect and no other header. That
parser keeps the whitespace between adjacent encoded-words in a display name (CPython
gh-128110, Python 3.11 here), so the words are cut after a space of the name where one
allows: it then shows one more space there, and splits a name written without spaces
(Chinese) only where a word had to be cut.
"""

from __future__ import annotations

import base64
import quopri
import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32, default
from email.utils import formataddr
from pathlib import Path

import pytest

from mailbot.config import load_config
from mailbot.core.message import single_line
from mailbot.core.plaintext import one_line
from mailbot.errors import MessageError
from mailbot.mail import compose, outgoing_mail
from mailbot.mail.header_encoding import WIRE, Mailbox, header_line
from mailbot.render.rendering import RenderedMail

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 9, 10, 30, tzinfo=UTC)
RENDERED = RenderedMail(subject="Accusé de réception", text="Bonjour\n", html="<p>Bonjour</p>\n")
ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")

# A prefecture's service named in each language of templates/i18n (not reviewed by a
# native speaker: they are test data), long enough to need several encoded-words.
SERVICE_NAMES = {
    "en": "Prefecture of Seine-Maritime – Department for Foreign Nationals, residence permits",
    "ar": "محافظة السين البحرية – إدارة شؤون الأجانب وبطاقات الإقامة والتجنس",
    "es": "Prefectura de Sena Marítimo – Servicio de extranjería, permisos de residencia",
    "pt": "Prefeitura do Sena Marítimo – Serviço de estrangeiros, autorizações de residência",
    "ro": "Prefectura Sena Maritimă – Serviciul pentru străini, permise de ședere",
    "ru": "Префектура Приморской Сены – Отдел по делам иностранцев и видам на жительство",
    "tr": "Seine-Maritime Valiliği – Yabancılar Şubesi, oturma izinleri ve vatandaşlık",
    "uk": "Префектура Приморської Сени – Відділ у справах іноземців і посвідок на проживання",
    "zh": "滨海塞纳省政府外国人事务处居留证与入籍服务科（鲁昂）",
}
CITIZENS = [
    "Олександра Костянтинівна Шевченко-Коваленко",
    "عبد الرحمن بن محمد بن إبراهيم آل عبد اللطيف الهاشمي القرشي",
    "欧阳明月司马长风诸葛亮慕容雪上官婉儿",
    "María de los Ángeles Fernández-Villaverde y Sánchez de la Peña",
    "Zoë 👩🏽‍💻 Ğülşen Çağlayan-Öztürk – mühendis",
    "بَيْتُ الْحِكْمَةِ الْمُسْتَنْصِرِيَّةُ فِي بَغْدَادَ الْقَدِيمَةِ لِلتُّرَاثِ",
]
HOSTILE = ('Dupont, "Jean"\r\nBcc: victime@example.org, é,<x@y> ' * 10)[:300]
HOSTILE_ONE_LINE = ('Dupont, "Jean" Bcc: victime@example.org, é,<x@y> =?utf-8?q?x?= ' * 10)[:300]
HOSTILE_ASCII = ('Dupont, "Jean" \\ (x) <y@z>; ' * 12)[:300]


def _config_names() -> list[str]:
    config = load_config(ROOT / "rules.yaml")
    return [config.sender.from_name, *(service.name for service in config.services.values())]


NAMES = [
    *SERVICE_NAMES.values(),
    *_config_names(),
    *CITIZENS,
    HOSTILE,
    HOSTILE_ONE_LINE,
    HOSTILE_ASCII,
    "Préfecture",
    "é" * 100,
]
ONE_LINE = [name for name in NAMES if "\n" not in name]  # a citizen's name as we read it


def _header_lines(raw: bytes, field: str) -> list[str]:
    """The lines of one header field, as written (folded lines included)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    start = next(i for i, line in enumerate(head) if line.startswith(f"{field}: "))
    end = start + 1
    while end < len(head) and head[end].startswith((" ", "\t")):
        end += 1
    return head[start:end]


def _decoded_alone(charset: str, encoding: str, text: str) -> str:
    """One encoded-word decoded on its own, strictly: a character cut in two fails here."""
    if encoding.lower() == "b":
        data = base64.b64decode(text, validate=True)
    else:
        data = quopri.decodestring(text.replace("_", " ").encode("ascii"), header=True)
    return data.decode(charset, errors="strict")


def _check(raw: bytes, field: str, name: str, addr_spec: str) -> list[str]:
    """The header of ``field`` in ``raw`` checked; its encoded-words' texts, decoded."""
    lines = _header_lines(raw, field)
    value = "\r\n".join(lines)[len(field) + 2 :]
    words = ENCODED_WORD.findall(value)
    pieces = []
    for charset, encoding, text in words:
        word = f"=?{charset}?{encoding}?{text}?="
        assert len(word) <= 75, f"{field}: encoded-word of {len(word)} characters: {word}"
        pieces.append(_decoded_alone(charset, encoding, text))  # §5: each decodable alone
    assert all(len(line) <= 998 for line in lines)
    if len(words) > 1:  # folded here: every line within RFC 5322's 78 characters
        assert all(len(line) <= 78 for line in lines), lines
    if not name.isascii():  # §6.2 as compat32's decoder applies it: the name exactly
        assert str(make_header(decode_header(value))) == f"{name} <{addr_spec}>"
    # The modern parser: one mailbox, the same addr-spec, no defect, no header added.
    parsed = message_from_bytes(raw, policy=default)
    header = parsed[field]
    assert [type(defect) for defect in header.defects] == []
    (address,) = header.addresses
    assert address.addr_spec == addr_spec
    shown = address.display_name
    if name.isascii():
        assert shown == name
    elif all(piece.endswith(" ") for piece in pieces[:-1]):  # gh-128110: a space doubled
        assert re.sub(" +", " ", shown) == re.sub(" +", " ", name)
    else:  # cut after a Chinese comma, or inside a word: gh-128110 shows a space there
        assert shown.replace(" ", "") == name.replace(" ", "")
    assert parsed["Bcc"] is None and len(parsed.get_all(field) or []) == 1
    return pieces


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_from_display_name(name: str) -> None:
    """sender.from_name, as every AR, reply and notice carries it."""
    expected = one_line(name)[:100]
    mail = compose.build_email(
        RENDERED,
        from_address="pref-etrangers@seine-maritime.gouv.fr",
        from_name=name,
        to="usager@example.org",
        message_id_domain="mailbot.seine-maritime.gouv.fr",
        date=NOW,
    )
    raw = mail.as_bytes()
    _check(raw, "From", expected, "pref-etrangers@seine-maritime.gouv.fr")
    # The same mail written by the standard library (attachments, reports): the same bytes.
    assert mail.message.as_bytes(policy=WIRE) == raw


def test_a_name_that_decodes_to_a_line_break_is_refused() -> None:
    """A citizen's encoded name holding CR/LF: refused as any broken address (it was a
    ValueError of the standard library's, not one of mailbot's errors), never written."""
    to = formataddr((HOSTILE, "usager@example.org"), charset="utf-8")
    with pytest.raises(MessageError, match="not exactly one valid address"):
        compose.build_email(
            RENDERED,
            from_address="pref-contact@seine-maritime.gouv.fr",
            from_name="Préfecture de la Seine-Maritime",
            to=to,
            message_id_domain="mailbot.seine-maritime.gouv.fr",
        )


@pytest.mark.parametrize("name", ONE_LINE, ids=range(len(ONE_LINE)))
def test_to_display_name(name: str) -> None:
    """A citizen's name we reply to, as their mail's header gave it (encoded-words that
    may decode to CR/LF, quotes and commas)."""
    expected = one_line(name)[:100]
    to = formataddr((name, "usager@example.org"), charset="utf-8")
    mail = compose.build_email(
        RENDERED,
        from_address="pref-contact@seine-maritime.gouv.fr",
        from_name="Préfecture de la Seine-Maritime",
        to=to,
        message_id_domain="mailbot.seine-maritime.gouv.fr",
        date=NOW,
    )
    raw = mail.as_bytes()
    _check(raw, "To", expected, "usager@example.org")
    assert mail.message.as_bytes(policy=WIRE) == raw


@pytest.mark.parametrize("name", ONE_LINE, ids=range(len(ONE_LINE)))
def test_utf8_address_display_name(name: str) -> None:
    """A UTF-8 address (SMTPUTF8) keeps its raw UTF-8; its name is encoded all the same."""
    expected = one_line(name)[:100]
    to = formataddr((name, "x@x"), charset="utf-8")[: -len("x@x>")] + "jérôme@exemple.fr>"
    raw = compose.build_email(
        RENDERED,
        from_address="pref-contact@seine-maritime.gouv.fr",
        from_name="Préfecture de la Seine-Maritime",
        to=to,
        message_id_domain="mailbot.seine-maritime.gouv.fr",
        date=NOW,
    ).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0].replace("jérôme".encode(), b"jerome")
    _check(head + b"\r\n\r\n", "To", expected, "jerome@exemple.fr")
    assert "<jérôme@exemple.fr>".encode() in raw


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_forward_from_display_name(name: str) -> None:
    """A forward to a service is From the mailbox, under the same configured name."""
    _, raw = compose.build_forward(
        b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n",
        reference="SM-2026-000123",
        subject="Question",
        note="Bonjour,\n",
        from_address="pref-contact@seine-maritime.gouv.fr",
        from_name=name,
        to="cartes-grises@seine-maritime.gouv.fr",
        reply_to="usager@example.org",
        message_id_domain="mailbot.seine-maritime.gouv.fr",
        loop_header_value="mailbot",
        date=NOW,
    )
    expected = single_line(name)[:100]
    _check(raw, "From", expected, "pref-contact@seine-maritime.gouv.fr")


def test_a_name_within_one_word_is_written_as_before() -> None:
    """No change where one encoded-word was enough: formataddr's bytes (the ARs' hashes)."""
    for name in (
        "Préfecture de la Seine-Maritime",
        "Jean Dùpont",
        "محافظة السين البحرية",
        "é" * 20,
    ):
        assert Mailbox(name, "a@example.org").header() == formataddr(
            (name, "a@example.org"), charset="utf-8"
        )
        assert outgoing_mail._from_header("a@example.org", name) == formataddr(
            (name, "a@example.org"), charset="utf-8"
        )


def test_folded_names_are_kept_by_the_standard_librarys_writer() -> None:
    """The direct writer's line is what compat32 folds from the same value (the mails
    built through ``message``: attachments, reports, probes)."""
    for name in NAMES:
        value = Mailbox(one_line(name)[:100], "usager@example.org").header()
        assert header_line("To", value) == WIRE.fold_binary("To", value)
        message = Message(policy=compat32)
        message["To"] = value
        assert message.as_bytes(policy=WIRE).startswith(header_line("To", value))


def test_words_are_cut_between_characters_never_inside() -> None:
    """Cut points checked on names dense in 2-, 3- and 4-octet characters and combining
    marks, in both encodings (the shorter one, as formataddr chooses)."""
    encodings = set()
    dense = ("é" * 100, "€" * 100, "😀" * 100, "a" + "😀" * 60, "ée" * 50, "e\u0301" * 50)
    for name in (*dense, "Préfecture de la Seine-Maritime, service des étrangers " * 2):
        value = Mailbox(name[:100], "u@example.org").header()
        for charset, encoding, text in ENCODED_WORD.findall(value):
            encodings.add(encoding)
            assert len(f"=?{charset}?{encoding}?{text}?=") <= 75
            piece = _decoded_alone(charset, encoding, text)
            assert not piece.startswith("\u0301")  # never a mark parted from its base
        assert str(make_header(decode_header(value))) == f"{name[:100]} <u@example.org>"
    assert encodings == {"b", "q"}
