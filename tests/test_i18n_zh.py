"""Chinese (zh.yaml) laid out in its script: text lines measured in display columns and
broken between ideographs by the rules of Chinese typesetting, lang="zh-Hans" and a font
for it in the HTML part, headers never cut inside a character. The mail end to end, and
the detection of Chinese mail, are in tests/test_multilingual.py and tests/test_language.py.
"""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
import re
import sys
import textwrap
import unicodedata
from datetime import date
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import pytest
from babel.dates import format_date as babel_date

from mailbot.core.parity import differences
from mailbot.core.plaintext import WIDTH, columns, has_wide, wrap, wrap_long_lines
from mailbot.mail.compose import build_email
from mailbot.mail.forward import cover_note
from mailbot.render.checks import check_template
from mailbot.render.templates import Renderer
from mailbot.render.translations import load_translations

ROOT = Path(__file__).resolve().parent.parent
I18N = ROOT / "templates" / "i18n"
# The ANEF paragraph of zh.yaml: ideographs, French names in parentheses, a URL at the end.
ANEF = load_translations(I18N)["zh"].texts["etrangers.anef"]
CLOSING = "，。、：；！？）」』】》"
OPENING = "（「『【《"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(ROOT / "templates")


def unwrapped(lines: list[str]) -> str:
    """The lines joined back: with nothing between two ideographs, a space elsewhere."""
    out = lines[0].strip()
    for line in lines[1:]:
        line = line.strip()
        out += ("" if has_wide(out[-1] + line[0]) else " ") + line
    return out


def squeezed(text: str) -> str:
    """``text`` without the spaces next to a wide character: "在 ANEF 网站" is "在ANEF网站"
    (a line may break at such a space, which then is gone)."""
    return re.sub(
        r"\s+", lambda gap: "" if has_wide(text[gap.start() - 1 : gap.end() + 1]) else " ", text
    )


# --------------------------------------------------------------------------- the text part


def test_columns_count_an_ideograph_as_two() -> None:
    assert columns("居留证") == 6
    assert columns("titre de séjour") == len("titre de séjour")
    assert columns("ANEF 网站：") == 5 + 4 + 2
    assert columns("") == 0


def test_every_wide_character_is_looked_up() -> None:
    """``columns`` looks up the width of the characters its prefilter finds only: it must
    find every assigned wide or fullwidth character of this Python's Unicode database."""
    missed = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.east_asian_width(chr(code)) in ("W", "F")
        and unicodedata.category(chr(code)) != "Cn"
        and not has_wide(chr(code))
    ]
    assert missed == []
    assert not has_wide("Nous l’avons reçu — « merci »… \u2068قريباً\u2069 Здравствуйте")
    assert has_wide("한") and has_wide("⌚") and has_wide("ｶ") is False  # halfwidth katakana


def test_a_chinese_paragraph_is_wrapped_within_the_width_in_columns() -> None:
    """textwrap broke only at spaces and counted one column an ideograph: the paragraph
    came out in lines of up to ~100 columns (a line of 40 ideographs read as 40)."""
    lines = wrap(ANEF)
    assert len(lines) >= 4
    assert all(columns(line) <= WIDTH for line in lines), [columns(line) for line in lines]
    # Filled: every line but the last is close to the width (no line of two ideographs).
    assert all(columns(line) >= WIDTH - 10 for line in lines[:-2])
    assert squeezed(unwrapped(lines)) == squeezed(ANEF)
    assert lines[-1].endswith("https://administration-etrangers-en-france.interieur.gouv.fr")


@pytest.mark.parametrize("width", range(20, 80, 3))
def test_no_line_starts_with_closing_or_ends_with_opening_punctuation(width: int) -> None:
    text = (
        ANEF + "。" + "如需补充内容，请直接回复本邮件（不要修改主题）：主题中含有您的受理编号！" * 3
    )
    lines = wrap(text, width)
    assert squeezed(unwrapped(lines)) == squeezed(text)
    for line in lines:
        assert line[0] not in CLOSING, (width, line)
        assert line[-1] not in OPENING, (width, line)
        assert columns(line) <= width or line.startswith("https://"), (width, line)


def test_latin_words_numbers_links_and_values_stay_whole() -> None:
    """A Latin word or a number against an ideograph stays with it ("ANEF网站", "5个"); a
    URL, an address, a phone number, a reference and a substituted value are never cut."""
    values = ("2026年12月3日星期四", "Préfecture de la Seine-Maritime — accueil général")
    text = (
        "我们会在5个工作日内答复您。答复截止日期：2026年12月3日星期四。请联系"
        "pref-etrangers@seine-maritime.gouv.fr 或拨打 02 32 76 50 00，受理编号 SM-2026-000123，"
        "负责部门：Préfecture de la Seine-Maritime — accueil général。请登录ANEF网站。"
    )
    for width in range(24, 79):
        lines = wrap(text, width, keep=values)
        joined = "\n".join(lines)
        for whole in (
            *(value for value in values if columns(value) <= width),
            "pref-etrangers@seine-maritime.gouv.fr",
            "02 32 76 50 00",
            "SM-2026-000123",
        ):
            assert whole in joined, (width, whole, lines)
        assert "5个" in joined and "ANEF网" in joined, (width, lines)
        # Wider only where nothing may break: the address, a value and its closing "。".
        over = [line for line in lines if columns(line) > width]
        assert all("@" in line or line == values[1] + "。" for line in over), (width, lines)
        assert "系\npref-etrangers@" in joined or width > 50, (width, lines)


def test_indents_and_a_piece_wider_than_the_line() -> None:
    url = "https://administration-etrangers-en-france.interieur.gouv.fr"
    lines = wrap("网站：" + url + " 请在网站上提交申请。", 40, indent="- ", subsequent_indent="  ")
    assert lines == ["- 网站：", "  " + url, "  请在网站上提交申请。"]


def test_long_chinese_lines_are_rewrapped_and_checked_in_columns(renderer: Renderer) -> None:
    """A line of 50 ideographs is 50 characters but 100 columns: ``wrap_long_lines`` (every
    text part, an agent's edited reply) left it whole, and ``templates check`` passed a
    line that cannot be broken (fullwidth exclamation marks: none may start a line)."""
    line = "您好，" + "我的居留证下个月到期，请问怎么办？" * 3
    assert len(line) <= WIDTH < columns(line)
    rewrapped = wrap_long_lines(f"Bonjour,\n{line}\n- {line}").split("\n")
    assert all(columns(item) <= WIDTH for item in rewrapped), rewrapped
    assert len(rewrapped) == 5 and rewrapped[0] == "Bonjour,"
    assert rewrapped[3].startswith("- ") and rewrapped[4].startswith("  ")
    assert squeezed(unwrapped(rewrapped[1:3])) == line
    examples = renderer.meta("reponse-libre").examples()
    problems = check_template(renderer, "reponse-libre", {**examples, "texte": "！" * 45})
    assert [p for p in problems if p.endswith(" is 90 columns wide (at most 78)")], problems


def test_a_transfer_note_with_a_chinese_reason_stays_within_the_width() -> None:
    """The service's note: a short line went out as it was when it had at most 78
    characters; 30 ideographs are 60 more columns than that."""
    note = cover_note(
        reference="SM-2026-000123",
        received_at="jeudi 26 novembre 2026 à 14 h 05",
        service_name="Direction des migrations et de l'intégration",
        citizen="wang.wei@example.org",
        mailbox_address="pref-contact@seine-maritime.gouv.fr",
        category="titre-sejour",
        tracking_address=None,
        transferred_by="Jeanne Martin",
        reason="l'usager écrit : 我的居留证下个月到期，请问怎么续签？",
    )
    assert max(columns(line) for line in note.splitlines()) <= WIDTH, note
    assert "我的居留证下个月到期" in note.replace("\n", "")


def test_text_without_wide_characters_is_wrapped_as_textwrap_does() -> None:
    """Every other language keeps its layout: without a wide character, ``wrap`` is
    textwrap's (at spaces, one column a character), here on French, Arabic and Russian."""
    for text in (
        "Nous avons bien reçu votre message. Nous vous répondrons dans un délai de 5 jours "
        "ouvrés, au plus tard le jeudi 3 décembre 2026 — « sans faute ».",
        "لقد استلمنا رسالتك. سنرد عليك خلال 5 أيام عمل، من الاثنين إلى الجمعة، باستثناء العطل.",
        "Мы получили ваше сообщение. Мы ответим в течение 5 рабочих дней, с понедельника по "
        "пятницу, кроме праздничных дней.",
    ):
        for width in (30, 50, 78):
            expected = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)
            assert wrap(text, width) == expected


# --------------------------------------------------------------------------- the AR


def chinese_part(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("中文")
    end = lines.index("-- ")
    return [line for line in lines[start + 1 : end] if line]


@pytest.mark.parametrize("name", ["ar-general", "ar-etrangers", "reorientation"])
def test_every_line_of_a_chinese_ar_is_within_the_width(renderer: Renderer, name: str) -> None:
    for optional in (True, False):
        examples = renderer.meta(name).examples(include_optional=optional)
        mail = renderer.render(name, examples, language="zh")
        wide = [line for line in mail.text.splitlines() if columns(line) > WIDTH]
        assert not wide, wide
        assert not differences(mail.text, mail.html)
        assert chinese_part(mail.text)
        assert check_template(renderer, name, examples, "zh") == []


def test_the_chinese_part_says_the_reference_and_the_deadline(renderer: Renderer) -> None:
    mail = renderer.render("ar-etrangers", renderer.meta("ar-etrangers").examples(), language="zh")
    part = unwrapped(chinese_part(mail.text))
    deadline = babel_date(date(2026, 12, 3), "full", locale="zh")
    assert deadline == "2026年12月3日星期四"
    assert f"答复截止日期：{deadline}。" in part
    assert "您的受理编号：SM-2026-000123。" in part
    assert mail.languages == ("fr", "zh-Hans")


def test_the_html_part_says_simplified_chinese_and_gives_it_a_font(renderer: Renderer) -> None:
    """lang="zh-Hans": the reader's program draws the ideographs the Simplified Chinese way
    (lang="zh" leaves Simplified, Traditional or Japanese forms to its guess); Arial has no
    ideograph: the block and its heading name Chinese fonts after it. No italics."""
    mail = renderer.render("ar-general", renderer.meta("ar-general").examples(), language="zh")
    block = re.search(r'<div class="translation"[^>]*>.*?</div>', mail.html, re.S)
    assert block is not None
    opening, heading = re.findall(r"<(?:div|h2)[^>]*>", block.group(0))[:2]
    assert 'lang="zh-Hans"' in opening and 'dir="ltr"' in opening
    for tag in (opening, heading):
        fonts = re.search(r"font-family:([^;\"]+)", tag)
        assert fonts is not None, tag
        assert "Microsoft YaHei" in fonts.group(1) and "PingFang SC" in fonts.group(1)
        assert fonts.group(1).strip().endswith("sans-serif")
    assert "italic" not in block.group(0) and "<em" not in block.group(0)
    english = renderer.render("ar-general", renderer.meta("ar-general").examples(), language="en")
    assert "Microsoft YaHei" not in english.html  # the other languages keep their fonts


# --------------------------------------------------------------------------- headers


def test_a_chinese_subject_and_name_are_encoded_without_cutting_a_character(
    renderer: Renderer,
) -> None:
    """Each encoded word of the Subject (at most 75 characters, RFC 2047 § 2) and of the
    recipient's name decodes alone to whole UTF-8 characters: an ideograph is 3 octets."""
    subject = "关于居留证续签的问题：我的titre de séjour下个月到期，ANEF网站无法提交申请，请帮忙！"
    name = "王伟（鲁昂大学中国留学生，居留证续签）"
    examples = renderer.meta("ar-etrangers").examples()
    mail = renderer.render("ar-etrangers", {**examples, "original_subject": subject}, language="zh")
    raw = build_email(
        mail,
        from_address="pref-etrangers@seine-maritime.gouv.fr",
        from_name="Préfecture de la Seine-Maritime",
        to=f"{name} <wang.wei@example.org>",
        message_id_domain="mailbot.seine-maritime.gouv.fr",
    ).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    fields = re.split(r"\r\n(?! )", head)
    (subject_field,) = [field for field in fields if field.startswith("Subject:")]
    (to_field,) = [field for field in fields if field.startswith("To:")]
    for field in (subject_field, to_field):
        for kind, word in re.findall(r"=\?utf-8\?([qb])\?([^?]*)\?=", field, re.I):
            if kind.lower() == "q":
                decoded = quopri.decodestring(word.encode(), header=True)
            else:
                decoded = base64.b64decode(word)
            decoded.decode("utf-8")  # whole characters: never cut inside one
    words = re.findall(r"=\?utf-8\?q\?[^?]*\?=", subject_field)
    assert len(words) > 5 and all(len(word) <= 75 for word in words)
    assert all(len(line) <= 78 for line in subject_field.split("\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert str(parsed["Subject"]) == f"Accusé de réception [SM-2026-000123] : {subject}"
    # Too long for one encoded-word (88 characters): two, cut after the comma. §6.2 drops
    # the folding whitespace between them (email.header, mail clients); policy.default
    # keeps a space there in Python 3.11 (CPython gh-128110: tests/test_display_names.py).
    to_words = re.findall(r"=\?utf-8\?[qb]\?[^?]*\?=", to_field, re.I)
    assert len(to_words) == 2 and all(len(word) <= 75 for word in to_words)
    to_value = to_field.removeprefix("To: ")
    assert str(make_header(decode_header(to_value))) == f"{name} <wang.wei@example.org>"
    assert parsed["To"].addresses[0].display_name.replace(" ", "") == name
    assert parsed["Content-Language"] == "fr, zh-Hans"
