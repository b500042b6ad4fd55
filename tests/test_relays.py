"""The contact-form relay is recognised by what a forger cannot write, never by From alone.

Unit tests per method (envelope sender, secret token, Received from a configured host, a
real DKIM signature made with dkimpy and a test key), then end to end against Dovecot and
aiosmtpd: a forged relay mail never gets an AR at the victim's address, the real one does.
"""

from __future__ import annotations

import base64
import email
import email.policy
import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from rulesfile import dump_rules, load_rules
from servers import MailUser, SmtpServer
from test_e2e import GENERAL, db_rows, etrangers_user, poll, write_config

from mailbot.app.outgoing import Transfer, forwards
from mailbot.config import ContactFormRelay, config_from_mapping
from mailbot.core.facts import policy_context
from mailbot.core.message import parse_message
from mailbot.core.policy import ArDecision, decide_ar
from mailbot.errors import ConfigError
from mailbot.mail.compose import Composer
from mailbot.mail.relay_auth import RelayVerifier

__all__ = ["etrangers_user"]
ROOT = Path(__file__).resolve().parent.parent
RELAY = "no-reply@seine-maritime.gouv.fr"
FORM = "formulaire@seine-maritime.gouv.fr"  # a relay address that is not a no-reply one
DOMAIN = "seine-maritime.gouv.fr"
VICTIM = "victime@tiers.example"
CITIZEN = "lucie.bernard@example.fr"
ATTACKER = "pirate@evil.example"
TOKEN = "s3cret-jeton-du-site-4f9a"
OUR_MX = "from mx1.seine-maritime.gouv.fr ([10.0.0.5]) by imap.seine-maritime.gouv.fr with LMTP id x; Thu, 26 Nov 2026 10:00:02 +0100"


def form_mail(
    *,
    sender: str = RELAY,
    return_path: str | None = None,
    reply_to: str = CITIZEN,
    extra: tuple[str, ...] = (),
    top: tuple[str, ...] = (),
    subject: str = "[Formulaire de contact] Passeport",
) -> bytes:
    """A contact-form mail; ``top`` are headers our delivery chain prepends (Received...),
    ``extra`` headers the sender wrote."""
    head = [
        *top,
        f"Return-Path: <{return_path if return_path is not None else sender}>",
        f"From: Site internet - Préfecture <{sender}>",
        f"Reply-To: Lucie Bernard <{reply_to}>",
        f"To: {GENERAL}",
        f"Subject: {subject}",
        "Date: Thu, 26 Nov 2026 10:00:00 +0100",
        f"Message-ID: <form-{abs(hash((sender, return_path, reply_to, extra, top, subject)))}@{DOMAIN}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        *extra,
    ]
    body = "Nom : Bernard\r\nObjet : Passeport\r\nMessage : quand puis-je venir ?\r\n"
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def decide(raw: bytes, *relays: ContactFormRelay, lookup: Any = None) -> ArDecision:
    data = load_rules()
    config = config_from_mapping(data, "rules.yaml")
    config = config.model_copy(
        update={"policy": config.policy.model_copy(update={"contact_form_relays": relays})}
    )
    verifier = RelayVerifier(relays) if lookup is None else RelayVerifier(relays, lookup)
    parsed = verifier.verify(raw, parse_message(raw))
    return decide_ar(parsed, policy_context(config, "general"))


# -- envelope -----------------------------------------------------------------------------


def test_envelope_real_relay_is_answered_at_reply_to() -> None:
    decision = decide(form_mail(), ContactFormRelay(address=RELAY))
    assert (decision.send, decision.recipient) == (True, CITIZEN)


def test_envelope_forged_from_is_not_the_relay() -> None:
    relay = ContactFormRelay(address=RELAY)
    forged = decide(form_mail(return_path=ATTACKER, reply_to=VICTIM), relay)
    assert forged.send is False and forged.recipient == ATTACKER  # never the victim
    assert "system-sender" in forged.reasons  # a no-reply From, not a relay: no AR at all
    assert f"contact-form relay {RELAY}: envelope FAILED" in forged.notes
    # A relay address that does not look like no-reply: answered at the return path.
    other = ContactFormRelay(address=FORM)
    decision = decide(form_mail(sender=FORM, return_path=ATTACKER, reply_to=VICTIM), other)
    assert (decision.send, decision.recipient) == (True, ATTACKER)


def test_envelope_sender_can_differ_from_the_from_address() -> None:
    relay = ContactFormRelay(address=RELAY, envelope_sender=f"bounces@{DOMAIN}")
    real = decide(form_mail(return_path=f"bounces@{DOMAIN}"), relay)
    assert real.recipient == CITIZEN
    forged = decide(form_mail(return_path=RELAY, reply_to=VICTIM), relay)
    assert forged.send is False and forged.recipient != VICTIM


def test_plain_address_list_still_means_envelope_check() -> None:
    data = load_rules()
    data["policy"]["contact_form_relays"] = [RELAY]
    (relay,) = config_from_mapping(data, "rules.yaml").policy.contact_form_relays
    assert relay == ContactFormRelay(address=RELAY, require=("envelope",))


# -- token --------------------------------------------------------------------------------


@pytest.fixture
def token_relay(monkeypatch: pytest.MonkeyPatch) -> ContactFormRelay:
    monkeypatch.setenv("MAILBOT_TEST_FORM_TOKEN", TOKEN)
    return ContactFormRelay(address=FORM, require=("token",), token_env="MAILBOT_TEST_FORM_TOKEN")


def test_token_real_relay_carries_the_secret(token_relay: ContactFormRelay) -> None:
    real = decide(form_mail(sender=FORM, extra=(f"X-Form-Token: {TOKEN}",)), token_relay)
    assert (real.send, real.recipient) == (True, CITIZEN)


@pytest.mark.parametrize("token", [None, "", "guess", TOKEN[:-1], TOKEN + "x"])
def test_token_forged_relay_is_refused(token_relay: ContactFormRelay, token: str | None) -> None:
    extra = () if token is None else (f"X-Form-Token: {token}",)
    # The forger even set the envelope sender to the relay's: the AR would go to the relay.
    forged = decide(form_mail(sender=FORM, reply_to=VICTIM, extra=extra), token_relay)
    assert forged.send is False and forged.reasons == ("unverified-relay",)
    assert forged.recipient == FORM  # not the victim; and nothing is sent


def test_a_forward_does_not_hand_the_token_on(token_relay: ContactFormRelay) -> None:
    """The original goes to the service unaltered but for the relay's secret: whoever held
    a forward could otherwise write "relay" mails whose AR goes to anyone's Reply-To."""
    config = config_from_mapping(load_rules(), "rules.yaml", ROOT)
    policy = config.policy.model_copy(update={"contact_form_relays": (token_relay,)})
    config = config.model_copy(update={"policy": policy})
    folded = (f"x-form-token:\r\n {TOKEN}", f"X-Form-Token: {TOKEN}")
    original = form_mail(sender=FORM, extra=(*folded, "X-Form-Tokens: kept"))
    transfer = Transfer(
        mailbox="general",
        reference="SM-2026-000123",
        subject="Passeport",
        received_at=datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
        citizen=CITIZEN,
        service=next(iter(config.services)),
        category="autre",
    )
    (first, *_) = forwards(config, Composer.from_config(config), transfer, original)
    assert TOKEN.encode() not in first.raw
    attached = email.message_from_bytes(first.raw, policy=email.policy.default)
    (part,) = attached.iter_attachments()
    inner = part.get_content()
    assert inner["X-Form-Tokens"] == "kept" and inner["Reply-To"] == f"Lucie Bernard <{CITIZEN}>"
    assert inner.get_content() == form_mail(sender=FORM).split(b"\r\n\r\n", 1)[1].decode()


def test_the_header_of_a_mail_read_in_part_does_not_hand_the_token_on(
    token_relay: ContactFormRelay,
) -> None:
    """A huge mail from the form is forwarded with its header alone: the header without
    the relay's secret, as the whole mail would be."""
    config = config_from_mapping(load_rules(), "rules.yaml", ROOT)
    policy = config.policy.model_copy(update={"contact_form_relays": (token_relay,)})
    config = config.model_copy(update={"policy": policy})
    start = form_mail(sender=FORM, extra=(f"X-Form-Token: {TOKEN}", "X-Form-Tokens: kept"))
    transfer = Transfer(
        mailbox="general",
        reference="SM-2026-000123",
        subject="Passeport",
        received_at=datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
        citizen=CITIZEN,
        service=next(iter(config.services)),
        category="autre",
    )
    composer = Composer.from_config(config)
    (first, *_) = forwards(config, composer, transfer, start, size=30_000_000)
    assert TOKEN.encode() not in first.raw
    attached = email.message_from_bytes(first.raw, policy=email.policy.default)
    (part,) = attached.iter_attachments()
    assert part.get_content_type() == "text/rfc822-headers"
    header = part.get_payload(decode=True)
    assert b"X-Form-Tokens: kept\r\n" in header and b"Reply-To:" in header


def test_token_from_a_file_beside_rules_yaml(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "form-token").write_text(TOKEN + "\n", encoding="utf-8")
    data = load_rules()
    data["policy"]["contact_form_relays"] = [
        {"address": FORM, "require": "token", "token_file": "secrets/form-token"}
    ]
    (relay,) = config_from_mapping(data, "r.yaml", base=tmp_path).policy.contact_form_relays
    assert relay.token_file == tmp_path / "secrets" / "form-token"
    assert TOKEN not in repr(relay)
    real = decide(form_mail(sender=FORM, extra=(f"X-Form-Token: {TOKEN}",)), relay)
    assert real.recipient == CITIZEN


def test_unreadable_token_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILBOT_TEST_FORM_TOKEN", raising=False)
    relay = ContactFormRelay(address=FORM, require="token", token_env="MAILBOT_TEST_FORM_TOKEN")  # type: ignore[arg-type]
    decision = decide(form_mail(sender=FORM, extra=(f"X-Form-Token: {TOKEN}",)), relay)
    assert decision.send is False and decision.recipient == FORM


@pytest.mark.parametrize("stored", ["", "\n", "   \n"])
@pytest.mark.parametrize("sent", ["", " "])
def test_an_empty_token_file_recognises_no_mail(tmp_path: Path, stored: str, sent: str) -> None:
    """A token file deployed empty (a secret not filled in yet) is no secret: a forger's
    empty header must not match it, or any mail naming the relay in From would aim its AR
    at the address in Reply-To."""
    (tmp_path / "form-token").write_text(stored, encoding="utf-8")
    relay = ContactFormRelay(address=FORM, require=("token",), token_file=tmp_path / "form-token")
    forged = decide(form_mail(sender=FORM, reply_to=VICTIM, extra=(f"X-Form-Token:{sent}",)), relay)
    assert forged.recipient != VICTIM and forged.recipient == FORM


# -- received -----------------------------------------------------------------------------

WEB = "from web1.seine-maritime.gouv.fr (web1.seine-maritime.gouv.fr [10.1.2.3]) by mx1.seine-maritime.gouv.fr (Postfix) with ESMTPS id A1; Thu, 26 Nov 2026 10:00:01 +0100"


@pytest.mark.parametrize("entry", ["10.1.2.3", "10.1.2.0/24", "web1.seine-maritime.gouv.fr"])
def test_received_from_the_web_server_within_our_hops(entry: str) -> None:
    relay = ContactFormRelay(address=RELAY, require=("received",), received_from=(entry,))
    real = decide(form_mail(top=(f"Received: {OUR_MX}", f"Received: {WEB}")), relay)
    assert (real.send, real.recipient) == (True, CITIZEN)


@pytest.mark.parametrize(
    "received",
    [
        # Written by the sender, below the two headers our servers add: not ours to trust.
        (
            f"Received: {OUR_MX}",
            "Received: from mx.evil.example ([6.6.6.6]) by mx1.seine-maritime.gouv.fr; x",
            f"Received: {WEB}",
        ),
        # The HELO name is whatever the client says; the address is what the server saw.
        (
            f"Received: {OUR_MX}",
            "Received: from web1.seine-maritime.gouv.fr (unknown [6.6.6.6]) by mx1.seine-maritime.gouv.fr; x",
        ),
        (f"Received: {OUR_MX}",),
    ],
)
def test_received_forgeries_are_refused(received: tuple[str, ...]) -> None:
    relay = ContactFormRelay(
        address=RELAY,
        require=("received",),
        received_from=("10.1.2.3", "web1.seine-maritime.gouv.fr"),
    )
    forged = decide(form_mail(top=received, reply_to=VICTIM), relay)
    assert forged.send is False and forged.recipient != VICTIM


# -- DKIM ---------------------------------------------------------------------------------


def make_key() -> tuple[bytes, str]:
    """A test RSA key: the private key (PEM) and its DNS TXT record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


@functools.cache
def prefecture_key() -> tuple[bytes, str]:
    """Made by the first test that signs (RSA, ~0.1 s), not at every worker's collection."""
    return make_key()


@functools.cache
def other_key() -> bytes:
    return make_key()[0]


def signed(
    raw: bytes, *, key: bytes | None = None, domain: str = DOMAIN, selector: str = "form"
) -> bytes:
    """Sign as the website's mail server does; Return-Path is added after, on delivery."""
    head, _, rest = raw.partition(b"\r\n")
    assert head.startswith(b"Return-Path:")
    headers = [b"from", b"reply-to", b"to", b"subject", b"date", b"message-id"]
    private = key if key is not None else prefecture_key()[0]
    signature = dkim.sign(
        rest, selector.encode(), domain.encode(), private, include_headers=headers
    )
    return head + b"\r\n" + signature + rest


def key_file(tmp_path: Path, record: str | None = None) -> dict[str, Path]:
    path = tmp_path / "form._domainkey.txt"
    path.write_text(record if record is not None else prefecture_key()[1], encoding="utf-8")
    return {"form": path}


def test_dkim_real_signature_with_a_configured_key(tmp_path: Path) -> None:
    relay = ContactFormRelay(address=RELAY, require=("dkim",), dkim_keys=key_file(tmp_path))
    real = decide(signed(form_mail()), relay)
    assert (real.send, real.recipient) == (True, CITIZEN)
    assert f"contact-form relay {RELAY}: dkim ok" in real.notes


def test_dkim_key_lookup_is_injectable() -> None:
    asked: list[str] = []

    def lookup(name: str) -> str | None:
        asked.append(name)
        return prefecture_key()[1] if name == f"form._domainkey.{DOMAIN}" else None

    relay = ContactFormRelay(address=RELAY, require=("dkim",))
    real = decide(signed(form_mail()), relay, lookup=lookup)
    assert real.recipient == CITIZEN and asked == [f"form._domainkey.{DOMAIN}"]


@pytest.mark.parametrize(
    "forge",
    [
        lambda raw: raw,  # not signed at all
        lambda raw: signed(raw, key=other_key()),  # a key that is not the prefecture's
        lambda raw: signed(raw, domain="evil.example"),  # valid, but another domain's
        lambda raw: signed(raw).replace(CITIZEN.encode(), VICTIM.encode()),  # tampered
    ],
    ids=["unsigned", "wrong-key", "other-domain", "tampered-reply-to"],
)
def test_dkim_forgeries_are_refused(tmp_path: Path, forge: Callable[[bytes], bytes]) -> None:
    relay = ContactFormRelay(address=RELAY, require=("dkim",), dkim_keys=key_file(tmp_path))

    def lookup(name: str) -> str | None:  # evil.example's key is public, like any domain's
        return prefecture_key()[1] if name.endswith("evil.example") else None

    raw = forge(form_mail(reply_to=CITIZEN))
    forged = decide(raw, relay, lookup=lookup)
    assert forged.send is False and forged.recipient not in {VICTIM, CITIZEN}


def test_all_required_checks_must_pass(tmp_path: Path) -> None:
    relay = ContactFormRelay(
        address=RELAY, require=("envelope", "dkim"), dkim_keys=key_file(tmp_path)
    )
    assert decide(signed(form_mail()), relay).recipient == CITIZEN
    both_but_envelope = decide(signed(form_mail(return_path=ATTACKER)), relay)
    assert both_but_envelope.send is False and both_but_envelope.recipient == ATTACKER


@pytest.mark.parametrize(
    ("relay", "message"),
    [
        ({"address": FORM, "require": "token"}, "require: token needs token_env or token_file"),
        ({"address": FORM, "require": "received"}, "require: received needs received_from"),
        ({"address": FORM, "require": "magic"}, "'envelope', 'token', 'received' or 'dkim'"),
        ({"address": FORM, "token": TOKEN}, "unknown key"),  # never the secret itself
    ],
)
def test_relay_configuration_errors_are_located(relay: dict[str, Any], message: str) -> None:
    data = load_rules()
    data["policy"]["contact_form_relays"] = [relay]
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, "rules.yaml")
    assert str(info.value).startswith("rules.yaml: policy.contact_form_relays[0]")
    assert message in str(info.value)


# -- end to end ---------------------------------------------------------------------------


def relay_config(tmp_path: Path, user: MailUser, etrangers: MailUser, smtp: SmtpServer) -> Path:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "form.txt").write_text(prefecture_key()[1], encoding="utf-8")
    (tmp_path / "form-token").write_text(TOKEN, encoding="utf-8")
    config = write_config(tmp_path, user, etrangers, smtp)
    data = load_rules(config)
    data["policy"]["rate_limit"] = {"max_per_sender": 10}  # one citizen, four forms
    data["policy"]["contact_form_relays"] = [
        RELAY,  # the plain form: envelope sender
        {"address": FORM, "require": "token", "token_file": "form-token"},
        {"address": f"site@{DOMAIN}", "require": ["received"], "received_from": ["10.1.2.3"]},
        {"address": f"dkim@{DOMAIN}", "require": "dkim", "dkim_keys": {"form": "keys/form.txt"}},
    ]
    config.write_text(dump_rules(data), encoding="utf-8")
    return config


def test_forged_relay_mails_never_reach_the_victim_real_ones_reach_the_citizen(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    config = relay_config(tmp_path, imap_user, etrangers_user, smtp_server)
    site, dkim_relay = f"site@{DOMAIN}", f"dkim@{DOMAIN}"
    web = (f"Received: {OUR_MX}", f"Received: {WEB}")
    citizens = {m: f"{m}.citoyen@example.fr" for m in ("envelope", "token", "received", "dkim")}

    def real(method: str, **kw: Any) -> bytes:
        return form_mail(reply_to=citizens[method], subject=f"Demande par {method}", **kw)

    def fake(method: str, **kw: Any) -> bytes:
        return form_mail(reply_to=VICTIM, subject=f"Attaque par {method}", **kw)

    cases = [  # (real mail from the relay, forgery aiming the AR at the victim)
        (real("envelope"), fake("envelope", return_path=ATTACKER)),
        (
            real("token", sender=FORM, extra=(f"X-Form-Token: {TOKEN}",)),
            fake("token", sender=FORM, extra=("X-Form-Token: guess",)),
        ),
        (real("received", sender=site, top=web), fake("received", sender=site, top=web[:1])),
        (
            signed(real("dkim", sender=dkim_relay)),
            signed(fake("dkim", sender=dkim_relay), key=other_key()),
        ),
    ]
    assert poll(config) == 0  # mailbot running before the form mails arrive
    for genuine, forged in cases:
        imap_user.append(genuine)
        imap_user.append(forged)
    assert poll(config) == 0
    received = smtp_server.messages  # poll --once delivers before it returns
    recipients = [item.rcpt_tos[0] for item in received]
    assert sorted(r for r in recipients if r.endswith("@example.fr")) == sorted(citizens.values())
    assert all(r.endswith(f"@{DOMAIN}") for r in recipients if not r.endswith("@example.fr"))
    assert VICTIM not in recipients
    assert not any(VICTIM.encode() in item.raw for item in received)  # not even in a forward
    rows = db_rows(config, "SELECT subject, decision, reasons, sender FROM messages ORDER BY uid")
    assert [(r[0], r[1]) for r in rows if r[0].startswith("Demande")] == [
        (f"Demande par {m}", "acknowledge") for m in citizens
    ]
    forged_rows = {r[0]: (r[1], r[2], r[3]) for r in rows if r[0].startswith("Attaque")}
    assert forged_rows == {
        "Attaque par envelope": ("skip", '["system-sender"]', ATTACKER),
        "Attaque par token": ("skip", '["unverified-relay"]', FORM),
        "Attaque par received": ("skip", '["unverified-relay"]', site),
        "Attaque par dkim": ("skip", '["unverified-relay"]', dkim_relay),
    }
