"""Bilingual ARs end to end (Dovecot + aiosmtpd), and the translation data files."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from babel.dates import format_date as babel_date
from babel.dates import get_month_names
from test_e2e import GENERAL, citizen_mail, db_rows, etrangers_user, poll, setup

from mailbot.core.plaintext import WIDTH, columns
from mailbot.errors import TemplateError
from mailbot.render.templates import Renderer
from mailbot.render.translations import load_translations, pick

__all__ = ["etrangers_user", "setup"]
ROOT = Path(__file__).resolve().parent.parent
I18N = ROOT / "templates" / "i18n"


def ar_for(setup: Any, subject: str, body: str, to: str = GENERAL) -> email.message.EmailMessage:
    config, general, etrangers, smtp = setup
    box = etrangers if "etrangers" in to else general
    box.append(citizen_mail(1, subject=subject, body=body, to=to, sender="usager@example.org"))
    assert poll(config, acknowledge_existing=True) == 0
    (ar,) = [r for r in smtp.wait_for(1) if r.rcpt_tos == ("usager@example.org",)]
    msg = email.message_from_bytes(ar.raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def parts(msg: email.message.EmailMessage) -> tuple[str, str]:
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_english_message_gets_french_then_english(setup: Any) -> None:
    msg = ar_for(
        setup,
        "Question about opening hours",
        "Hello, could you tell me the opening hours of the prefecture on Fridays? Thank you.",
    )
    text, html = parts(msg)
    assert text.index("Nous l'avons reçu") < text.index("IN ENGLISH")
    assert "We will answer within 5 working days" in text
    assert 'dir="ltr" lang="en"' in html
    assert db_rows(setup[0], "SELECT language FROM messages") == [("en",)]


def test_arabic_message_gets_french_then_arabic_rtl(setup: Any) -> None:
    msg = ar_for(
        setup,
        "تجديد بطاقة الإقامة",
        "السلام عليكم، أريد أن أعرف كيف أجدد بطاقة الإقامة الخاصة بي قبل انتهاء صلاحيتها. شكرا",
        to="pref-etrangers@seine-maritime.gouv.fr",
    )
    text, html = parts(msg)
    arabic = load_translations(I18N)["ar"]
    assert text.index("Nous l'avons reçu") < text.index(arabic.heading.upper())
    assert 'dir="rtl" lang="ar"' in html
    assert "text-align:right" in html
    assert "https://administration-etrangers-en-france.interieur.gouv.fr" in text


def test_chinese_message_gets_french_then_chinese_laid_out_in_its_script(setup: Any) -> None:
    """A Chinese student's mail (French subject, Chinese body) through Dovecot and SMTP:
    the AR's text part is within the width in display columns (an ideograph takes two),
    and its Chinese part gives the reference and the deadline the French part gives."""
    msg = ar_for(
        setup,
        "Renouvellement titre de séjour",
        "您好，我是鲁昂大学的中国留学生。我的居留证（titre de séjour）下个月到期，"
        "但是在ANEF网站上无法提交续签申请。请问我该怎么办？谢谢！\n王伟",
        to="pref-etrangers@seine-maritime.gouv.fr",
    )
    text, html = parts(msg)
    assert [line for line in text.splitlines() if columns(line) > WIDTH] == []
    lines = text.splitlines()
    french, chinese = lines[: lines.index("中文")], lines[lines.index("中文") + 1 :]
    reference = str(msg["Subject"]).split("[", 1)[1].split("]", 1)[0]
    found = re.search(r"au plus tard le \w+ (\d+)(?:er)? (\w+) (\d{4})", " ".join(french))
    assert found, "no deadline in the French part"
    months = {name: n for n, name in get_month_names("wide", locale="fr").items()}
    deadline = date(int(found[3]), months[found[2]], int(found[1]))
    said = "".join(line.strip() for line in chinese)  # lines break between ideographs
    assert f"您的受理编号：{reference}。" in said
    assert f"答复截止日期：{babel_date(deadline, 'full', locale='zh')}。" in said
    assert "居留证（titre de séjour）" in said
    assert 'dir="ltr" lang="zh-Hans"' in html and reference in html
    assert msg["Content-Language"] == "fr, zh-Hans"
    assert db_rows(setup[0], "SELECT language FROM messages") == [("zh",)]


def test_french_message_gets_french_only(setup: Any) -> None:
    msg = ar_for(
        setup, "Horaires", "Bonjour, quels sont vos horaires le vendredi ? Merci beaucoup."
    )
    text, html = parts(msg)
    assert "IN ENGLISH" not in text and 'dir="ltr"' not in html and 'dir="rtl"' not in html


def test_undetectable_language_gets_french_and_english(setup: Any) -> None:
    msg = ar_for(setup, "???", "06 00 00 00 01 ?")
    text, _html = parts(msg)
    assert "IN ENGLISH" in text


def test_every_translation_file_is_complete() -> None:
    translations = load_translations(I18N)
    assert {"en", "ar", "es", "uk", "zh"} <= set(translations)
    for translation in translations.values():
        assert set(translation.texts) == set(translations["en"].texts)
        # Honest about review: a reviewed file names its reviewer.
        assert isinstance(translation.reviewed, bool)
        assert bool(translation.reviewer) == translation.reviewed
    assert translations["ar"].direction == "rtl"
    assert pick(translations, "fr") is None
    assert pick(translations, "xx") is translations["en"]
    assert pick(translations, None) is translations["en"]
    assert pick(translations, "uk") is translations["uk"]
    assert pick(translations, "zh") is translations["zh"]


def test_broken_translation_is_refused_with_location(tmp_path: Path) -> None:
    data = yaml.safe_load((I18N / "en.yaml").read_text(encoding="utf-8"))
    data["ar"]["deadline"] = "Answer {% if x %}soon{% endif %}"
    (tmp_path / "en.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(TemplateError, match=r"en.yaml: ar.deadline: only placeholders"):
        load_translations(tmp_path)
    data["ar"]["deadline"] = "Answer by {{ deadline }}"
    del data["ar"]["help"]
    (tmp_path / "en.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    (tmp_path / "es.yaml").write_text((I18N / "es.yaml").read_text(encoding="utf-8"))
    with pytest.raises(TemplateError, match=r"es.yaml: ar.help: not in en.yaml"):
        load_translations(tmp_path)
    data["reviewed"] = True
    (tmp_path / "en.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(TemplateError, match=r"en.yaml: reviewer: name who reviewed"):
        load_translations(tmp_path)


def test_a_translation_named_with_a_region_is_refused_at_load(tmp_path: Path) -> None:
    """pt_BR.yaml would write "Content-Language: fr, pt_BR" and lang="pt_BR" (not BCP 47)
    and is never picked (the detection names "pt"): refused, naming the file and the form
    expected."""
    shutil.copy(I18N / "en.yaml", tmp_path / "en.yaml")
    data = yaml.safe_load((I18N / "pt.yaml").read_text(encoding="utf-8"))
    for name in ("pt_BR", "PT"):
        data["language"] = name
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        with pytest.raises(TemplateError, match=rf"{name}\.yaml: .*two-letter ISO 639-1 code"):
            load_translations(tmp_path)
        (tmp_path / f"{name}.yaml").unlink()
    assert set(load_translations(tmp_path)) == {"en"}


def test_a_translation_never_used_or_written_the_wrong_way_is_refused_at_load(
    tmp_path: Path,
) -> None:
    """ja.yaml would load and never be picked (the detection does not name Japanese); an
    Arabic file marked left to right would lay the AR out backwards: both refused."""
    shutil.copy(I18N / "en.yaml", tmp_path / "en.yaml")
    data = yaml.safe_load((I18N / "pt.yaml").read_text(encoding="utf-8"))
    data["language"] = "ja"
    (tmp_path / "ja.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(TemplateError, match=r"ja\.yaml: language: 'ja' is not among the languages"):
        load_translations(tmp_path)
    (tmp_path / "ja.yaml").unlink()
    arabic = yaml.safe_load((I18N / "ar.yaml").read_text(encoding="utf-8"))
    arabic["direction"] = "ltr"
    (tmp_path / "ar.yaml").write_text(yaml.safe_dump(arabic), encoding="utf-8")
    with pytest.raises(TemplateError, match=r"ar\.yaml: direction: 'ar' is written rtl"):
        load_translations(tmp_path)


def test_placeholder_the_template_lacks_is_refused_at_load(tmp_path: Path) -> None:
    """reorientation has no deadline: a translation promising one is refused, naming both."""
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", root)
    path = root / "i18n" / "es.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('  more: "', '  more: "{{ deadline }} ', 1), encoding="utf-8")
    with pytest.raises(
        TemplateError, match=r"es.yaml: reorientation.more: .*no required variable 'deadline'"
    ):
        Renderer(root)


def test_translated_paragraphs_are_declared_in_meta(tmp_path: Path) -> None:
    """Adding a paragraph is data: a new text in every file and a line in meta.yaml."""
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", root)
    for path in (root / "i18n").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace("\nar:\n", f'\nar:\n  parking: "P-{path.stem} {{{{ reference }}}}"\n', 1),
            encoding="utf-8",
        )
    meta = root / "ar-general" / "meta.yaml"
    meta.write_text(
        meta.read_text(encoding="utf-8").replace(
            "  - ar.help\n", "  - ar.help\n  - ar.parking\n", 1
        ),
        encoding="utf-8",
    )
    renderer = Renderer(root)
    examples = renderer.meta("ar-general").examples()
    mail = renderer.render("ar-general", examples, language="tr")
    assert "P-tr SM-2026-000123" in mail.text and "P-tr" in mail.html
    assert "P-tr" not in renderer.render("ar-etrangers", examples, language="tr").text
