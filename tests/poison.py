"""Hostile mail for the tests and the bench: crafted poison, and seeded mutations of the
test corpus (tests/data/routing and the demo mailbox).

Everything here is deterministic: the same seed gives the same mails, so a failure found
by the fuzz test can be reproduced by hand (``mutated_corpus(seed)[n]``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERAL = "pref-contact@seine-maritime.gouv.fr"
BAD_CHARSETS = (
    "undefined",
    "punycode",
    "idna",
    "unicode_escape",
    "utf-7",
    "x-unknown",
    "ut\xe9f-8",  # a charset name with an 8-bit byte (as bytes, Latin-1)
    "ascii\u20ac",
    "",
    "rot13",
)


def citizen(n: int, subject: str = "Demande de renseignements", **headers: str) -> bytes:
    """An ordinary citizen's mail from ``usager<n>@example.fr``; extra headers by keyword
    (``Message_ID="<x>"``), a value of None drops a default header."""
    sender = f"usager{n}@example.fr"
    fields = {
        "Return-Path": f"<{sender}>",
        "From": f"Usager {n} <{sender}>",
        "To": GENERAL,
        "Subject": subject,
        "Date": "Thu, 26 Nov 2026 10:00:00 +0100",
        "Message-ID": f"<poison-{n}@example.fr>",
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Transfer-Encoding": "8bit",
    }
    for key, value in headers.items():
        fields[key.replace("_", "-")] = value
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    body = "Bonjour,\r\nQuels sont les horaires d'ouverture ?\r\nCordialement\r\n"
    return (head + "\r\n" + body).encode("utf-8", "surrogateescape")


def nested(depth: int, n: int = 0) -> bytes:
    """A citizen's mail whose text sits under ``depth`` levels of multipart."""
    head = citizen(n, "Imbrication", Content_Type='multipart/mixed; boundary="b0"').split(
        b"\r\n\r\n", 1
    )[0]
    opening = b"".join(
        f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n'.encode()
        for i in range(depth)
    )
    inner = f"--b{depth}\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n--b{depth}--\r\n".encode()
    closing = b"".join(f"--b{i}--\r\n".encode() for i in reversed(range(depth)))
    return head + b"\r\n\r\n" + opening + inner + closing


def long_message_id(n: int, length: int = 1200) -> bytes:
    return citizen(n, "Identifiant long", Message_ID="<" + "x" * (length - 14) + "@example.fr>")


def huge_subject(n: int, megabytes: float) -> bytes:
    """A subject of ``megabytes`` MB made of duplicated Subject lines (folded as they came)."""
    line = "Subject: " + "carte grise " * 80 + "\r\n"
    count = int(megabytes * 1_000_000 / len(line)) + 1
    mail = citizen(n, "x").replace(b"Subject: x\r\n", (line * count).encode())
    return mail


def attachment(n: int, megabytes: int) -> bytes:
    head = citizen(n, "Pièce jointe volumineuse", Content_Type='multipart/mixed; boundary="p"')
    head = head.split(b"\r\n\r\n", 1)[0]
    data = (b"JVBERi0xLjQKJcfsj6IK" * 3 + b"\r\n") * (megabytes * 1_000_000 // 62)
    return (
        head + b"\r\n\r\n--p\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCi-joint.\r\n"
        b'--p\r\nContent-Type: application/pdf; name="scan.pdf"\r\n'
        b'Content-Disposition: attachment; filename="scan.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + data + b"--p--\r\n"
    )


def poison_mails() -> dict[str, bytes]:
    """One mail per way a mail stopped a mailbox or cost minutes (issues 9 and 10)."""
    return {
        "undefined-charset-subject": citizen(1, "=?undefined?q?x?="),
        "punycode-subject": citizen(2, "=?punycode?q?_?="),
        "8bit-charset-name": citizen(3, "=?ut\udce9f-8?q?x?="),
        "unicode-escape-surrogate": citizen(4, "=?unicode_escape?q?=5Cud800?= bonjour"),
        "content-charset-euro": citizen(5, "Charset", Content_Type="text/plain; charset=ascii€"),
        "rfc2231-filename-undefined": citizen(
            6,
            "Nom de fichier",
            Content_Type="application/pdf",
            Content_Disposition="attachment; filename*=undefined''x.pdf",
        ),
        "mime-depth-2000": nested(2000, 7),
        "mime-depth-200": nested(200, 8),
        "message-id-1200": long_message_id(9),
        "nul-in-headers": citizen(10, "Objet\x00nul", X_Note="a\x00b"),
        "lone-cr": citizen(11, "Retour\rchariot").replace(b"Bonjour,\r\n", b"Bonjour,\r"),
        "return-path-too-long": citizen(12, Return_Path="<" + "r" * 400 + "@example.fr>"),
        "duplicated-headers-3mb": huge_subject(13, 3),
        "no-body-separator": citizen(14).replace(b"\r\n\r\n", b"\r\n"),
        "bad-base64": citizen(15, Content_Transfer_Encoding="base64"),
        "unknown-transfer-encoding": citizen(16, Content_Transfer_Encoding="x-uuencode-ish"),
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
    }


# -- seeded mutations of the corpus ------------------------------------------------------


def corpus() -> list[bytes]:
    routing = sorted((ROOT / "tests" / "data" / "routing").glob("*.eml"))
    demo = sorted((ROOT / "mailbot" / "demo_data" / "maildir").glob("*/cur/*"))
    return [path.read_bytes() for path in [*routing, *demo]]


def _flip(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 30)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _truncate(raw: bytes, rng: random.Random) -> bytes:
    return raw[: rng.randrange(len(raw) + 1)]


def _nul(raw: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(raw) + 1)
    return raw[:at] + b"\x00" * rng.randint(1, 5) + raw[at:]


def _lone_cr(raw: bytes, rng: random.Random) -> bytes:
    return raw.replace(b"\r\n", b"\r") if rng.random() < 0.5 else raw.replace(b"\n", b"\r")


def _bad_charset(raw: bytes, rng: random.Random) -> bytes:
    name = rng.choice(BAD_CHARSETS).encode("latin-1", "replace")
    out = raw.replace(b"charset=utf-8", b"charset=" + name)
    out = out.replace(b"charset=UTF-8", b"charset=" + name)
    return out.replace(b"Subject: ", b"Subject: =?" + name + b"?q?=E9t=E9?= ", 1)


def _nest(raw: bytes, rng: random.Random) -> bytes:
    depth = 200 if rng.random() < 0.2 else rng.randint(2, 60)
    head, _, body = raw.partition(b"\r\n\r\n")
    wrapper = b"".join(
        f'--n{i}\r\nContent-Type: multipart/mixed; boundary="n{i + 1}"\r\n\r\n'.encode()
        for i in range(depth)
    )
    tail = b"".join(f"\r\n--n{i}--".encode() for i in reversed(range(depth)))
    return (
        head.replace(b"Content-Type:", b"X-Old-Content-Type:")
        + b'\r\nContent-Type: multipart/mixed; boundary="n0"\r\n\r\n'
        + wrapper
        + f"--n{depth}\r\n".encode()
        + b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + body
        + f"\r\n--n{depth}--".encode()
        + tail
    )


def _duplicate_headers(raw: bytes, rng: random.Random) -> bytes:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    line = rng.choice(lines) if lines else b"Subject: x"
    return b"\r\n".join([*lines, *[line] * rng.randint(100, 3000)]) + sep + body


def _long_id(raw: bytes, rng: random.Random) -> bytes:
    long = b"<" + b"i" * rng.randint(300, 3000) + b"@example.fr>"
    return raw.replace(b"Message-ID:", b"Message-ID: " + long + b"\r\nX-Old-Message-ID:", 1)


def _eight_bit_headers(raw: bytes, rng: random.Random) -> bytes:
    junk = bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 40)))
    return raw.replace(b"Subject: ", b"Subject: " + junk, 1).replace(b"From: ", b"From: " + junk, 1)


def _drop_separator(raw: bytes, rng: random.Random) -> bytes:
    return raw.replace(b"\r\n\r\n", b"\r\n", 1).replace(b"\n\n", b"\n", 1)


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    _flip,
    _truncate,
    _nul,
    _lone_cr,
    _bad_charset,
    _nest,
    _duplicate_headers,
    _long_id,
    _eight_bit_headers,
    _drop_separator,
)


def mutated_corpus(count: int, seed: int = 20261126) -> list[bytes]:
    """``count`` mails, each a corpus mail with one to three seeded mutations applied."""
    rng = random.Random(seed)
    base = corpus()
    mails = []
    for _ in range(count):
        raw = rng.choice(base)
        for mutation in rng.sample(MUTATIONS, rng.randint(1, 3)):
            raw = mutation(raw, rng)
        mails.append(raw)
    return mails
