"""Templates, the renderer and the outgoing message: content, safety, headers."""

from __future__ import annotations

import email
import re
import shutil
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from pathlib import Path

import pytest

from mailbot.config import load_config
from mailbot.core.dates import date_fr
from mailbot.errors import MessageError, TemplateError
from mailbot.mail.compose import build_email
from mailbot.render.rendering import SUBJECT_MAX_CHARS, RenderedMail
from mailbot.render.templates import Renderer
from mailbot.render.variables import answer_deadline, message_variables

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
PARIS = timezone(timedelta(hours=1))
RECEIVED = datetime(2026, 11, 26, 14, 5, tzinfo=PARIS)

SERVICE = {
    "name": "Préfecture de la Seine-Maritime — accueil général",
    "postal_address": "7 place de la Madeleine, 76036 Rouen Cedex",
    "phone": "02 32 76 50 00",
    "hours": "du lundi au vendredi, de 9 h à 12 h et de 13 h 30 à 16 h",
    "website": "https://www.seine-maritime.gouv.fr",
    "email": "pref-contact@seine-maritime.gouv.fr",
}
PREFECTURE = {
    "name": "Préfecture de la Seine-Maritime",
    "postal_address": "7 place de la Madeleine, 76036 Rouen Cedex",
    "phone": "02 32 76 50 00",
    "website": "https://www.seine-maritime.gouv.fr",
}
INJECTIONS = [
    "Carte grise\r\nBcc: victim@example.org",
    "Permis\nTo: other@example.org\n\nbody",
    "{{ 7*7 }}",
    "{% for x in range(3) %}boucle{% endfor %}",
    "<script>alert(1)</script>",
    "Jean\r\nBcc: x@example.org",
    "ligne\u2028séparée\x85fin",
]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def ar_vars(subject: str = "Demande de carte grise", **extra: object) -> dict[str, object]:
    return {
        "reference": "SM-2026-000123",
        "received_at": RECEIVED,
        "deadline": answer_deadline(RECEIVED),
        "original_subject": subject,
        "service": SERVICE,
        "prefecture": PREFECTURE,
        **extra,
    }


def build(rendered: RenderedMail, **kwargs: object) -> EmailMessage:
    options: dict[str, object] = {
        "from_address": "pref-contact@seine-maritime.gouv.fr",
        "from_name": "Préfecture de la Seine-Maritime",
        "to": "citoyen@example.org",
        "message_id_domain": "mailbot.seine-maritime.gouv.fr",
    }
    options.update(kwargs)
    return build_email(rendered, **options)  # type: ignore[arg-type]


def reparse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(msg: Message) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_type() in {"text/plain", "text/html"}:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found[part.get_content_type()] = payload.decode(part.get_content_charset() or "ascii")
    return found


def copy_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(TEMPLATES, target)
    return target


def write_template(
    root: Path,
    name: str = "demo",
    *,
    subject: str = "Bonjour {{ name }}",
    text: str = "Bonjour {{ name }}\n",
    html: str = "<p>Bonjour {{ name }}</p>\n",
) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "meta.yaml").write_text(
        f"name: {name}\n"
        "title: Démo\n"
        "description: Modèle de test.\n"
        "scope: {mailboxes: [], services: []}\n"
        "language: fr\n"
        f"subject: '{subject}'\n"
        "variables:\n"
        "  required:\n"
        "    name: {description: Nom, example: Jeanne Martin}\n",
        encoding="utf-8",
    )
    (directory / "body.txt.j2").write_text(text, encoding="utf-8")
    (directory / "body.html.j2").write_text(html, encoding="utf-8")
    return directory


# --------------------------------------------------------------------------- shipped templates


def test_shipped_templates_are_found(renderer: Renderer) -> None:
    assert {"ar-etrangers", "ar-general", "reorientation"} <= set(renderer.names())
    meta = renderer.meta("ar-general")
    assert meta.language == "fr"
    assert meta.scope.mailboxes == ("general",)
    assert set(meta.required) == {
        "reference",
        "received_at",
        "deadline",
        "original_subject",
        "service",
        "prefecture",
    }
    assert meta.required["received_at"].type == "datetime"
    assert meta.required["deadline"].type == "date"


@pytest.mark.parametrize("name", ["ar-general", "ar-etrangers"])
@pytest.mark.parametrize("include_optional", [True, False])
def test_every_template_renders_with_its_examples(
    renderer: Renderer, name: str, include_optional: bool
) -> None:
    meta = renderer.meta(name)
    mail = renderer.render(name, meta.examples(include_optional=include_optional))
    assert mail.subject and mail.text.strip() and mail.html.strip()
    for output in (mail.subject, mail.text, mail.html):
        assert "None" not in output
        assert "{{" not in output and "{%" not in output


@pytest.mark.parametrize("name", ["ar-general", "ar-etrangers"])
def test_ar_contains_what_crpa_requires(renderer: Renderer, name: str) -> None:
    mail = renderer.render(name, ar_vars())
    assert mail.subject == "Accusé de réception [SM-2026-000123] : Demande de carte grise"
    assert "jeudi 26 novembre 2026 à 14 h 05" in mail.text
    assert "jeudi 26 novembre 2026" in mail.html and "14 h 05" in mail.html
    for body in (mail.text, mail.html):
        assert "SM-2026-000123" in body
        assert "02 32 76 50 00" in body
        assert "7 place de la Madeleine, 76036 Rouen Cedex" in body
        assert "pref-contact@seine-maritime.gouv.fr" in body
        assert "5 jours ouvrés" in body
        assert "automatiquement" in body
        assert "point d'accueil numérique" in body
        assert "France Services" in body
        assert "service-public.fr" in body
    assert "Préfecture de la Seine-Maritime — accueil général" in mail.text
    assert "du lundi au vendredi, de 9 h à 12 h" in mail.text
    assert "sans changer l'objet" in mail.text


def test_ar_general_links(renderer: Renderer) -> None:
    mail = renderer.render("ar-general", ar_vars())
    for body in (mail.text, mail.html):
        assert "https://immatriculation.ants.gouv.fr" in body
        assert "https://permisdeconduire.ants.gouv.fr" in body
        assert "https://ants.gouv.fr" in body


def test_ar_etrangers_links(renderer: Renderer) -> None:
    mail = renderer.render("ar-etrangers", ar_vars())
    for body in (mail.text, mail.html):
        assert "https://administration-etrangers-en-france.interieur.gouv.fr" in body
        assert "rendez-vous ou sur convocation" in body
        assert "60" in body and "120" in body
    assert "entre le 120e et le 60e jour" in mail.text


def test_empty_original_subject(renderer: Renderer) -> None:
    for subject in ("", "   ", "\r\n"):
        mail = renderer.render("ar-general", ar_vars(subject))
        assert mail.subject == "Accusé de réception [SM-2026-000123] : votre message"
        assert "Objet :" not in mail.text


def test_optional_variable_is_shown_only_when_given(renderer: Renderer) -> None:
    notice = {"decision": "rejet", "months": 2, "rejected": True, "accepted": False}
    assert "Sans réponse" not in renderer.render("ar-general", ar_vars()).text
    mail = renderer.render("ar-general", ar_vars(implicit_decision=notice))
    assert "délai de 2 mois" in mail.text and "délai de 2&nbsp;mois" in mail.html
    # None counts as absent for an optional variable.
    assert "Sans réponse" not in renderer.render("ar-general", ar_vars(implicit_decision=None)).text


def test_service_without_hours(renderer: Renderer) -> None:
    service = {key: value for key, value in SERVICE.items() if key != "hours"}
    mail = renderer.render("ar-general", ar_vars(service=service))
    assert "Horaires" not in mail.text
    mail = renderer.render("ar-general", ar_vars(service={**SERVICE, "hours": None}))
    assert "Horaires" not in mail.text and "None" not in mail.text


def test_text_part_whitespace(renderer: Renderer) -> None:
    text = renderer.render("ar-general", ar_vars()).text
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "\n\n\n" not in text
    assert "\r" not in text
    assert "\n-- \n" in text  # signature delimiter survives trailing-space clean-up
    assert all(line == "-- " or line == line.rstrip() for line in text.splitlines())


def test_config_and_ar_variables(renderer: Renderer) -> None:
    config = load_config(ROOT / "rules.yaml")
    renderer.check_config(config)
    for mailbox in config.mailboxes:
        variables = message_variables(
            config,
            mailbox,
            reference="SM-2026-000042",
            received_at=RECEIVED,
            original_subject="Question",
        )
        mail = renderer.render(config.mailboxes[mailbox].ar_template, variables)
        service = config.services[config.mailboxes[mailbox].service]
        assert service.name in mail.text
        assert str(service.email) in mail.text


# --------------------------------------------------------------------------- date_fr


def test_date_fr() -> None:
    assert date_fr(RECEIVED) == "jeudi 26 novembre 2026 à 14 h 05"
    assert date_fr(datetime(2026, 11, 26, 13, 5, tzinfo=UTC)) == "jeudi 26 novembre 2026 à 14 h 05"
    # Summer time, first of the month, whole hour.
    assert date_fr(datetime(2026, 8, 1, 7, 0, tzinfo=UTC)) == "samedi 1er août 2026 à 9 h"
    assert date_fr(RECEIVED, style="date") == "jeudi 26 novembre 2026"
    assert date_fr(RECEIVED, style="time") == "14 h 05"
    assert date_fr(RECEIVED, style="numeric") == "26/11/2026 à 14 h 05"
    new_year = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert date_fr(new_year) == "vendredi 1er janvier 2027 à 0 h 30"
    with pytest.raises(ValueError, match="naive"):
        date_fr(datetime(2026, 11, 26, 14, 5))


def test_renderer_timezone(tmp_path: Path) -> None:
    write_template(
        tmp_path, text="{{ name }}{% if when is defined %} {{ when|date_fr }}{% endif %}\n"
    )
    meta = tmp_path / "demo" / "meta.yaml"
    meta.write_text(
        meta.read_text(encoding="utf-8")
        + "  optional:\n"
        + "    when: {type: datetime, description: Quand, example: '2026-11-26T14:05:00+01:00'}\n",
        encoding="utf-8",
    )
    renderer = Renderer(tmp_path, timezone="America/Cayenne")
    mail = renderer.render("demo", {"name": "x", "when": RECEIVED})
    assert mail.text == "x jeudi 26 novembre 2026 à 10 h 05\n"
    with pytest.raises(TemplateError, match="time zone"):
        Renderer(tmp_path, timezone="Europe/Nowhere")


def test_naive_datetime_is_refused(renderer: Renderer) -> None:
    with pytest.raises(TemplateError, match="received_at"):
        renderer.render("ar-general", ar_vars(received_at=datetime(2026, 11, 26, 14, 5)))


# --------------------------------------------------------------------------- missing variables


def test_missing_required_variable_is_named(renderer: Renderer) -> None:
    variables = ar_vars()
    del variables["reference"]
    with pytest.raises(TemplateError, match="reference"):
        renderer.render("ar-general", variables)
    with pytest.raises(TemplateError, match="received_at"):
        renderer.render("ar-etrangers", ar_vars(received_at=None))


def test_missing_mapping_field_is_named(renderer: Renderer) -> None:
    service = {key: value for key, value in SERVICE.items() if key != "phone"}
    with pytest.raises(TemplateError, match=r"service\.phone"):
        renderer.render("ar-general", ar_vars(service=service))
    with pytest.raises(TemplateError, match=r"service\.email"):
        renderer.render("ar-general", ar_vars(service={**SERVICE, "email": ""}))


def test_wrong_type_is_named(renderer: Renderer) -> None:
    with pytest.raises(TemplateError, match="original_subject"):
        renderer.render("ar-general", ar_vars(subject=42))  # type: ignore[arg-type]


def test_unknown_template(renderer: Renderer) -> None:
    with pytest.raises(TemplateError, match="ar-general"):
        renderer.render("nope", ar_vars())


def test_strict_undefined_names_the_variable_and_file(tmp_path: Path) -> None:
    # A partial using a variable the template does not declare: caught at load time.
    (tmp_path / "_partials").mkdir()
    (tmp_path / "_partials" / "sig.txt.j2").write_text(
        "Signé : {{ signataire }}\n", encoding="utf-8"
    )
    write_template(tmp_path, text='{{ name }}\n{% include "_partials/sig.txt.j2" %}')
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path)
    assert "signataire" in str(caught.value)
    assert "sig.txt.j2" in str(caught.value)


def test_undefined_attribute_is_an_error_not_a_blank(tmp_path: Path) -> None:
    write_template(tmp_path, text="{{ name.nope }}\n")
    with pytest.raises(TemplateError, match="nope"):
        Renderer(tmp_path)


# --------------------------------------------------------------------------- injection


@pytest.mark.parametrize("hostile", INJECTIONS)
def test_hostile_subject_is_inert(renderer: Renderer, hostile: str) -> None:
    mail = renderer.render("ar-general", ar_vars(hostile))
    assert "\r" not in mail.subject and "\n" not in mail.subject
    assert len(mail.subject.splitlines()) == 1
    assert "49" not in mail.subject and "boucleboucle" not in mail.subject
    assert "<script>" not in mail.html
    assert "boucleboucle" not in mail.text + mail.html
    if "{{" in hostile or "{%" in hostile:
        assert hostile in mail.subject
        assert hostile in mail.text
    if "<script>" in hostile:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
        assert "<script>alert(1)</script>" in mail.text

    msg = reparse(build(mail))
    assert msg.get_all("To") == ["citoyen@example.org"]
    assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
    assert len(msg.get_all("Subject") or []) == 1
    assert str(msg["Subject"]) == mail.subject
    raw = build(mail).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc" not in head and b"\nbody" not in head


def test_hostile_name_in_template_data(tmp_path: Path) -> None:
    write_template(tmp_path)
    renderer = Renderer(tmp_path)
    hostile = "Jean\r\nBcc: x@example.org <script>{{ 7*7 }}"
    mail = renderer.render("demo", {"name": hostile})
    assert mail.subject == "Bonjour Jean Bcc: x@example.org <script>{{ 7*7 }}"
    assert "Bcc: x@example.org <script>{{ 7*7 }}" in mail.text
    assert "&lt;script&gt;{{ 7*7 }}" in mail.html and "<script>" not in mail.html
    msg = reparse(build(mail))
    assert msg.get_all("To") == ["citoyen@example.org"]
    assert msg.get_all("Bcc") is None


@pytest.mark.parametrize(
    "to",
    [
        "citoyen@example.org\r\nBcc: x@example.org",
        "Jean\r\nBcc: x@y <jean@example.org>",
        "a@example.org, b@example.org",
        "pas une adresse",
        "",
        "<>",
        "undisclosed-recipients:;",
    ],
)
def test_bad_recipient_is_refused(renderer: Renderer, to: str) -> None:
    mail = renderer.render("ar-general", ar_vars())
    with pytest.raises(MessageError):
        build(mail, to=to)


def test_recipient_with_display_name(renderer: Renderer) -> None:
    mail = renderer.render("ar-general", ar_vars())
    msg = reparse(build(mail, to='"Dupont, Amélie" <amelie.dupont@example.fr>'))
    assert msg["To"].addresses[0].addr_spec == "amelie.dupont@example.fr"
    assert msg["To"].addresses[0].display_name == "Dupont, Amélie"


def test_bad_extra_headers_are_refused(renderer: Renderer) -> None:
    mail = renderer.render("ar-general", ar_vars())
    for headers in ({"Bcc": "x@example.org"}, {"X-Test": "a\r\nBcc: x@y"}, {"Bad Name": "x"}):
        with pytest.raises(MessageError):
            build(mail, extra_headers=headers)
    msg = build(mail, extra_headers={"X-Mailbot-Reference": "SM-2026-000123"})
    assert msg["X-Mailbot-Reference"] == "SM-2026-000123"
    with pytest.raises(MessageError):
        build(mail, loop_header_value="a\nb")


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    write_template(tmp_path, text="{{ name.__class__.__mro__ }}\n")
    with pytest.raises(TemplateError):
        Renderer(tmp_path)
    shutil.rmtree(tmp_path / "demo")
    write_template(tmp_path, text="{{ name }}{% set _ = [].append(1) %}\n")
    with pytest.raises(TemplateError):
        Renderer(tmp_path)


# --------------------------------------------------------------------------- the message


def test_message_headers_and_parts(renderer: Renderer) -> None:
    mail = renderer.render("ar-general", ar_vars())
    msg = build(
        mail,
        in_reply_to="<abc@example.org>",
        references=["<root@example.org>", "<abc@example.org>", "<mid@example.org>"],
        loop_header_value="mailbot@seine-maritime.gouv.fr",
        date=RECEIVED,
    )
    parsed = reparse(msg)
    assert parsed["From"].addresses[0].display_name == "Préfecture de la Seine-Maritime"
    assert parsed["From"].addresses[0].addr_spec == "pref-contact@seine-maritime.gouv.fr"
    assert parsed["To"] == "citoyen@example.org"
    assert parsed["Date"] == "Thu, 26 Nov 2026 14:05:00 +0100"
    assert parsed["Message-ID"].endswith("@mailbot.seine-maritime.gouv.fr>")
    assert parsed["In-Reply-To"] == "<abc@example.org>"
    assert parsed["References"] == "<root@example.org> <abc@example.org> <mid@example.org>"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed["X-Mailbot-Loop"] == "mailbot@seine-maritime.gouv.fr"
    assert parsed["Content-Language"] == "fr"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "multipart/alternative"
    subtypes = [part.get_content_type() for part in parsed.iter_parts()]
    assert subtypes == ["text/plain", "text/html"]
    for part in parsed.iter_parts():
        assert part.get_content_charset() == "utf-8"
    decoded = parts(parsed)
    assert decoded["text/plain"].replace("\r\n", "\n") == mail.text
    assert "SM-2026-000123" in decoded["text/html"]


def test_threading_without_references(renderer: Renderer) -> None:
    mail = renderer.render("ar-general", ar_vars())
    parsed = reparse(build(mail, in_reply_to="<only@example.org>"))
    assert parsed["In-Reply-To"] == "<only@example.org>"
    assert parsed["References"] == "<only@example.org>"
    plain = reparse(build(mail, auto_submitted=False))
    assert plain["In-Reply-To"] is None and plain["References"] is None
    assert plain["Auto-Submitted"] is None
    assert plain["X-Mailbot-Loop"] is None
    with pytest.raises(MessageError):
        build(mail, in_reply_to="not a message id")


def test_message_ids_are_unique(renderer: Renderer) -> None:
    mail = renderer.render("ar-general", ar_vars())
    ids = {build(mail)["Message-ID"] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize(
    "subject",
    [
        "Demande de carte grise — véhicule acheté à Évreux « urgent » ",
        "طلب تجديد بطاقة الإقامة",
        "Œuvre 😀 " * 40,
        "x" * 500,
    ],
)
def test_rfc2047_round_trip(renderer: Renderer, subject: str) -> None:
    mail = renderer.render("ar-etrangers", ar_vars(subject))
    assert len(mail.subject) <= SUBJECT_MAX_CHARS
    raw = build(mail).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    head.decode("ascii")  # every header is 7-bit: encoded words, not raw UTF-8
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
    if not subject.isascii():
        assert b"=?utf-8?" in head.lower()
    parsed = email.message_from_bytes(raw, policy=default_policy)
    assert str(parsed["Subject"]) == mail.subject
    assert mail.subject.startswith("Accusé de réception [SM-2026-000123] : ")


def test_long_subject_is_cut_between_words(renderer: Renderer) -> None:
    mail = renderer.render("ar-general", ar_vars("demande " * 60))
    assert len(mail.subject) <= SUBJECT_MAX_CHARS
    assert mail.subject.endswith("demande…")


# --------------------------------------------------------------------------- broken directories


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    broken = root / "ar-general" / "body.txt.j2"
    broken.write_text("Bonjour {{ reference \n", encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        Renderer(root)
    assert str(broken) in str(caught.value)
    assert "line 1" in str(caught.value)


def test_syntax_error_in_partial_names_the_partial(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    broken = root / "_partials" / "service_contact.html.j2"
    broken.write_text("{% if service.hours %}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"service_contact\.html\.j2"):
        Renderer(root)


def test_syntax_error_in_subject_names_meta(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    meta = root / "ar-etrangers" / "meta.yaml"
    text = meta.read_text(encoding="utf-8")
    meta.write_text(text.replace("{{ reference }}]", "{{ reference ]"), encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        Renderer(root)
    assert str(meta) in str(caught.value) and "subject" in str(caught.value)


@pytest.mark.parametrize("key", ["title", "subject", "scope", "variables", "language"])
def test_missing_meta_key_names_file_and_key(tmp_path: Path, key: str) -> None:
    root = copy_templates(tmp_path)
    meta = root / "ar-general" / "meta.yaml"
    lines = meta.read_text(encoding="utf-8").splitlines()
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith(f"{key}:"):
            skipping = True
            continue
        if skipping and (line.startswith(" ") or not line):
            continue
        skipping = False
        kept.append(line)
    meta.write_text("\n".join(kept) + "\n", encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        Renderer(root)
    assert str(meta) in str(caught.value)
    assert key in str(caught.value)


@pytest.mark.parametrize("part", ["meta.yaml", "body.txt.j2", "body.html.j2"])
def test_missing_part_names_the_file(tmp_path: Path, part: str) -> None:
    root = copy_templates(tmp_path)
    (root / "ar-etrangers" / part).unlink()
    with pytest.raises(TemplateError, match=re.escape(str(root / "ar-etrangers" / part))):
        Renderer(root)


@pytest.mark.parametrize(
    ("meta_edit", "expected"),
    [
        (("name: ar-general", "name: ar-generale"), "directory name"),
        (("language: fr", "languge: fr"), "languge"),
        (("example: SM-2026-000123", "example: [1, 2]"), "reference"),
        (("example: 2026-11-26T14:05:00+01:00", "example: 2026-11-26T14:05:00"), "received_at"),
        (('subject: "', 'subject: "{{ inconnue }} '), "inconnue"),
        (("title: Accusé", "title: [Accusé"), "invalid YAML"),
    ],
)
def test_bad_meta_is_reported(tmp_path: Path, meta_edit: tuple[str, str], expected: str) -> None:
    root = copy_templates(tmp_path)
    meta = root / "ar-general" / "meta.yaml"
    text = meta.read_text(encoding="utf-8")
    assert meta_edit[0] in text
    meta.write_text(text.replace(meta_edit[0], meta_edit[1], 1), encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        Renderer(root)
    assert str(meta) in str(caught.value)
    assert expected in str(caught.value)


def test_undeclared_variable_names_file_and_variable(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    body = root / "ar-general" / "body.html.j2"
    body.write_text(
        body.read_text(encoding="utf-8").replace("Bonjour,", "Bonjour {{ nom_usager }},"),
        encoding="utf-8",
    )
    with pytest.raises(TemplateError) as caught:
        Renderer(root)
    assert str(body) in str(caught.value) and "nom_usager" in str(caught.value)


def test_missing_include_names_the_file(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    body = root / "ar-general" / "body.txt.j2"
    body.write_text(
        body.read_text(encoding="utf-8").replace("digital_help.txt.j2", "aide.txt.j2"),
        encoding="utf-8",
    )
    with pytest.raises(TemplateError) as caught:
        Renderer(root)
    assert str(body) in str(caught.value) and "aide.txt.j2" in str(caught.value)


def test_unexpected_and_misnamed_files(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    stray = root / "ar-general" / "body.text.j2"
    stray.write_text("x", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"body\.text\.j2"):
        Renderer(root)
    stray.unlink()
    (root / "Mauvais Nom").mkdir()
    with pytest.raises(TemplateError, match="Mauvais Nom"):
        Renderer(root)


def test_not_utf8_and_missing_directory(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    body = root / "ar-general" / "body.txt.j2"
    body.write_bytes("Réception".encode("latin-1"))
    with pytest.raises(TemplateError, match="UTF-8"):
        Renderer(root)
    with pytest.raises(TemplateError, match="not found"):
        Renderer(tmp_path / "nowhere")


def test_templates_are_read_once(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    renderer = Renderer(root)
    (root / "ar-general" / "body.txt.j2").write_text("changé {{ reference }}\n", encoding="utf-8")
    shutil.rmtree(root / "_partials")
    mail = renderer.render("ar-general", ar_vars())
    assert "changé" not in mail.text and "France Services" in mail.text


# --------------------------------------------------------------------------- demo Maildir


def test_demo_maildir_is_well_formed() -> None:
    from email.utils import parsedate_to_datetime

    from mailbot.core.message import parse_message

    maildir = ROOT / "mailbot" / "demo_data" / "maildir"
    files: list[Path] = []
    for mailbox in ("general", "etrangers"):
        assert (maildir / mailbox / "new").is_dir() and (maildir / mailbox / "tmp").is_dir()
        files += sorted((maildir / mailbox / "cur").iterdir())
    assert len(files) == 15
    ids: set[str] = set()
    for path in files:
        assert path.name.endswith(".demo:2,")
        raw = path.read_bytes()
        assert raw.startswith(b"Return-Path: <")
        parsed = parse_message(raw)
        assert parsed.defects == (), path.name
        assert parsed.message_id is not None
        ids.add(parsed.message_id)
        sent = parsedate_to_datetime(parsed.header("date")[0])
        assert (sent.year, sent.month) == (2026, 11)
        assert int(path.name.split(".")[0]) == int(sent.timestamp())
        expected = (
            {"pref-etrangers@seine-maritime.gouv.fr"}
            if path.parent.parent.name == "etrangers"
            else {"pref-contact@seine-maritime.gouv.fr", "prefecture@seine-maritime.gouv.fr"}
        )
        assert set(parsed.to) & expected
    assert len(ids) == 15
