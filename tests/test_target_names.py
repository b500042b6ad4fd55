"""Re-orientation targets named in the citizen's language: "your town hall (votre mairie)".

The translated paragraph of a re-orientation used to hold the French noun phrase alone
("Please contact this organisation: votre mairie"). Each templates/i18n file now names the
targets of rules.yaml by their id (``targets:``); the French name stays in rules.yaml and
follows in brackets, as the citizen will see it on the sign and the website. A language
that does not name a target keeps the French name alone, as before, and the checks warn.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from email.message import Message
from email.policy import compat32
from pathlib import Path

import pytest
from rulesfile import dump_rules, load_rules
from servers import read_mail

from mailbot.app.acknowledge import Planner, Received
from mailbot.cli import main
from mailbot.config import Config, load_config
from mailbot.core.articles import to_named
from mailbot.core.message import parse_message
from mailbot.core.plaintext import LRI, PDI, RLI, RLM
from mailbot.core.routing import RoutingDecision
from mailbot.errors import TemplateError
from mailbot.mail.compose import Composer
from mailbot.render.checks import check_template
from mailbot.render.templates import Renderer
from mailbot.render.translations import load_translations

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 9, 10, 30, tzinfo=UTC)
ISOLATES = re.compile(f"[{LRI}{RLI}{PDI}{RLM}\u2068]")


def _target(config: Config, target: str, with_id: bool = True) -> dict[str, object]:
    assert config.routing is not None
    found: dict[str, object] = dict(config.routing.reorientation[target].model_dump())
    return {**found, "id": target} if with_id else found


def _flat(text: str) -> str:
    """Text as read: isolates and marks gone, lines joined, runs of spaces one."""
    return " ".join(ISOLATES.sub("", text).split())


def _reoriented(config: Config, renderer: Renderer, target: str, language: str) -> Message:
    """The re-orientation mail the planner queues for a mail routed to ``target``."""
    raw = (
        b"From: usager@example.org\r\nTo: pref-contact@seine-maritime.gouv.fr\r\n"
        b"Subject: Question\r\nMessage-ID: <q-1@example.org>\r\n\r\nBonjour\r\n"
    )
    mail = Received(
        mailbox="general",
        raw=raw,
        parsed=parse_message(raw),
        received_at=NOW,
        reference="SM-2026-000123",
        recipient="usager@example.org",
        language=language,
    )
    routing = RoutingDecision(
        service="general",
        category="information",
        priority="normal",
        reorient=target,
        transfer_allowed=False,
        rule_hits=(),
        scores={},
        defaulted=False,
    )
    planner = Planner(config, renderer, Composer.from_config(config))
    (reply,) = planner.plan(mail, routing).mails
    return read_mail(reply.raw, compat32)


def _parts(message: Message) -> tuple[str, str]:
    """The text and HTML parts, decoded."""
    decoded = []
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            decoded.append(payload.decode("utf-8"))
    text, html = decoded
    return text, html


@pytest.mark.parametrize("language", ["en", "ar", "es", "pt", "ro", "ru", "tr", "uk", "zh"])
def test_every_shipped_target_is_named_in_every_language(
    config: Config, renderer: Renderer, language: str
) -> None:
    """The queued mail's translated paragraph names the target in the language, then in
    French; text and HTML say the same, lines within 78 columns, HTML balanced
    (``templates check``'s own checks, on every target rather than the example)."""
    assert config.routing is not None
    translation = renderer.translations[language]
    for target, declared in config.routing.reorientation.items():
        local = translation.targets[target]
        opening, closing = ("（", "）") if language == "zh" else (" (", ")")
        named = f"{local}{opening}{declared.name}{closing}"
        text, html = _parts(_reoriented(config, renderer, target, language))
        french, translated = text.split(translation.heading.upper(), 1)
        if language == "zh":  # a line breaks between ideographs without a space, or at one
            joined = re.sub(r"(?<=[^\x00-\x7f])\n(?=[^\x00-\x7f])", "", translated)
            assert named in joined.replace("\n", " ")
        else:
            assert _flat(named) in _flat(translated)
        assert local not in french  # the French part is left as it was
        assert f"Adressez-vous {to_named(declared.name)}." in _flat(french)
        assert html.count(local) == 1
        examples = {**renderer.meta("reorientation").examples(), "target": _target(config, target)}
        assert check_template(renderer, "reorientation", examples, language) == []


def test_arabic_keeps_the_french_name_apart(config: Config, renderer: Renderer) -> None:
    """Right to left: the Arabic name isolated as any value (RLI…PDI), the French name
    whole in a left-to-right isolate (LRI…PDI, its own brackets inside), the brackets
    between them for the sentence to place; every line of the translation starts with a
    RIGHT-TO-LEFT MARK and opens no isolate it does not close. In HTML, the French name
    in a ``dir="ltr"`` element within the value's ``dir="rtl"`` one, as the partials set
    the translations' French words apart."""
    text, html = _parts(_reoriented(config, renderer, "caf", "ar"))
    local = "صندوق الإعانات العائلية"
    french = "la Caisse d'allocations familiales (CAF)"
    assert f"{RLI}{local}{PDI} ({LRI}{french}{PDI})" in text
    translated = text.split("بالعربية", 1)[1]
    for line in filter(None, translated.split("\n")[1:]):
        if line.startswith("-- "):
            break
        assert line.startswith(RLM), line
        assert line.count(PDI) == line.count(LRI) + line.count(RLI) + line.count("\u2068"), line
    assert f'<span dir="rtl">{local} (<span dir="ltr">{french}</span>)</span>' in html

    # A long pair breaks between its two names, never inside an isolate.
    text, _ = _parts(_reoriented(config, renderer, "urssaf-retraite", "ar"))
    local = "هيئة تحصيل الاشتراكات الاجتماعية أو صندوق التقاعد الخاص بك"
    assert f"{RLM}{RLI}{local}{PDI}\n{RLM}({LRI}l'URSSAF ou votre caisse de retraite{PDI})" in text


def test_english_and_chinese_read_naturally(config: Config, renderer: Renderer) -> None:
    text, html = _parts(_reoriented(config, renderer, "mairie", "en"))
    assert "Please contact this organisation: your town hall (votre mairie)." in _flat(text)
    assert 'dir="ltr" style="white-space:nowrap">your town hall (votre mairie)</span>' in html
    text, html = _parts(_reoriented(config, renderer, "mairie", "zh"))
    assert "请联系以下机构：您所在市镇的市政厅（votre mairie）。" in text.replace("\n", "")
    assert "您所在市镇的市政厅（votre mairie）</span>" in html


def copy_catalogue(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", root)
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_target_a_language_does_not_name_keeps_todays_text(
    tmp_path: Path, config: Config
) -> None:
    """No name for ``caf`` in en.yaml: the English mail is the one a target without an
    id gives, byte for byte (the French name alone, as before); other targets are named."""
    root = copy_catalogue(tmp_path)
    _edit(root / "i18n" / "en.yaml", '  caf: "the Family Allowance Fund"\n', "")
    renderer = Renderer(root, cache=False)
    examples = renderer.meta("reorientation").examples()
    for language in ("en", "fr", None):
        with_id = {**examples, "target": _target(config, "caf")}
        without = {**examples, "target": _target(config, "caf", with_id=False)}
        assert renderer.render("reorientation", with_id, language=language) == renderer.render(
            "reorientation", without, language=language
        )
        assert renderer.render_once("reorientation", with_id, language=language) == renderer.render(
            "reorientation", without, language=language
        )
    english = renderer.render(
        "reorientation", {**examples, "target": _target(config, "caf")}, language="en"
    )
    assert "organisation: la Caisse d'allocations familiales (CAF). Website" in _flat(english.text)
    named = renderer.render(
        "reorientation", {**examples, "target": _target(config, "cpam")}, language="en"
    )
    assert "the public health insurance (l'Assurance maladie (CPAM))" in _flat(named.text)


def test_french_mail_is_unchanged_by_the_id(config: Config, renderer: Renderer) -> None:
    """The French mail (no translation) says the same with or without the id."""
    examples = renderer.meta("reorientation").examples()
    assert config.routing is not None
    for target in config.routing.reorientation:
        with_id = {**examples, "target": _target(config, target)}
        without = {**examples, "target": _target(config, target, with_id=False)}
        assert renderer.render("reorientation", with_id, language="fr") == renderer.render(
            "reorientation", without, language="fr"
        )


def test_missing_and_unknown_names_are_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check`` and ``templates check`` name the language file and the targets, and
    still pass (exit 0): a new target is routed before it is translated."""
    from mailbot.render.translations import target_warnings

    root = copy_catalogue(tmp_path)
    uk = root / "i18n" / "uk.yaml"
    _edit(uk, '  justice: "суди"\n', "")
    _edit(root / "i18n" / "tr.yaml", "targets:\n", 'targets:\n  jstice: "mahkemeler"\n')
    data = load_rules()
    data.update(templates=str(root), agents=str(ROOT / "agents.yaml"))
    config_path = tmp_path / "rules.yaml"
    config_path.write_text(dump_rules(data), encoding="utf-8")
    config = load_config(config_path)
    assert config.routing is not None

    renderer = Renderer(root, cache=False)
    warnings = target_warnings(renderer.translations, config.routing.reorientation)
    assert warnings == [
        f"{root / 'i18n' / 'tr.yaml'}: targets: jstice: not a re-orientation target of"
        " rules.yaml (routing.reorientation): never shown",
        f"{uk}: targets: no name in this language for justice (the French name alone is shown)",
    ]
    for command in (["templates", "check"], ["check"]):
        capsys.readouterr()
        assert main(["--config", str(config_path), *command]) == 0
        err = capsys.readouterr().err
        for warning in warnings:
            assert f"warning: {warning}" in err


def test_shipped_files_name_every_target(config: Config, renderer: Renderer) -> None:
    from mailbot.render.translations import target_warnings

    assert config.routing is not None
    assert target_warnings(renderer.translations, config.routing.reorientation) == []
    for translation in renderer.translations.values():
        assert translation.reviewed is False  # written without a native speaker's review


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('  Mairie: "x"\n', "a target id of rules.yaml"),
        ('  mairie2: "{{ target.name }}"\n', r"a name, on one line, without \{\{"),
        ('  mairie3: "{% if x %}"\n', "only placeholders"),
        ('  mairie4: ""\n', "text is missing"),
    ],
)
def test_a_malformed_name_is_refused(tmp_path: Path, entry: str, message: str) -> None:
    root = copy_catalogue(tmp_path)
    _edit(root / "i18n" / "ro.yaml", "targets:\n", "targets:\n" + entry)
    with pytest.raises(TemplateError, match=message):
        load_translations(root / "i18n")
