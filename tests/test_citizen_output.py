"""What citizens receive, read as they would: the demo's outgoing mails and every template in
every language. Text parts: lines of at most 78 characters, and every link, address and phone
number of the HTML part whole in the text part. ARs: the deadline date, in each language."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys
from datetime import date, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date as babel_date
from babel.dates import get_month_names

from mailbot.core.plaintext import columns
from mailbot.core.workdays import WorkingCalendar
from mailbot.mail.forward import cover_note
from mailbot.render.templates import Renderer

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
FRENCH_MONTHS = {name: number for number, name in get_month_names("wide", locale="fr").items()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[EmailMessage]:
    out = tmp_path_factory.mktemp("demo")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(ROOT / "rules.yaml"),
            "demo",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    mails = []
    for path in sorted((out / "outgoing").glob("*.eml")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        mails.append(parsed)
    return mails


def body(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body((kind,))
    assert part is not None, f"no text/{kind} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


def to_citizens(mails: list[EmailMessage]) -> list[EmailMessage]:
    return [m for m in mails if m["Auto-Submitted"] == "auto-replied"]


class Links(HTMLParser):
    """Link targets of an HTML part, and the label of each tel: link."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []
        self._href: str | None = None
        self._label: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._label = dict(attrs).get("href") or "", []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._label.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.found.append((self._href, "".join(self._label).strip()))
            self._href = None


def unbreakable_items(html: str) -> list[str]:
    """What a reader of the text part must find whole: URLs, addresses, phone numbers."""
    parser = Links()
    parser.feed(html)
    items = []
    for href, label in parser.found:
        if href.startswith(("http://", "https://")):
            items.append(href)
        elif href.startswith("mailto:"):
            items.append(href.removeprefix("mailto:"))
        elif href.startswith("tel:"):
            items.append(label)
    return items


def text_problems(text: str, html: str) -> list[str]:
    problems = [
        f"{columns(line)} columns: {line!r}" for line in text.splitlines() if columns(line) > 78
    ]
    for item in unbreakable_items(html):
        # Whole: present, and not followed by more of itself on the next line.
        if not re.search(re.escape(item) + r"(?![\w/%.-]*[\w/])", text):
            problems.append(f"not whole in the text part: {item}")
    return problems


# --------------------------------------------------------------------------- text layout


def test_demo_text_parts_are_78_columns_and_keep_links_whole(demo: list[EmailMessage]) -> None:
    citizens = to_citizens(demo)
    assert len(citizens) == 12
    for msg in citizens:
        problems = text_problems(body(msg, "plain"), body(msg, "html"))
        assert not problems, (msg["Subject"], problems)


def test_demo_forward_notes_are_78_columns(demo: list[EmailMessage]) -> None:
    forwards = [m for m in demo if m["Auto-Submitted"] == "auto-generated"]
    assert forwards
    for msg in forwards:
        note = body(msg, "plain")
        assert max(len(line) for line in note.splitlines()) <= 78, note


@pytest.mark.parametrize("language", ["fr", "en", "ar", "es", "pt", "ro", "ru", "tr", "uk", "zh"])
def test_every_template_in_every_language_keeps_links_whole(language: str) -> None:
    renderer = Renderer(ROOT / "templates")
    checked = 0
    for name in renderer.names():
        meta = renderer.meta(name)
        for optional in (True, False):
            mail = renderer.render(
                name, meta.examples(include_optional=optional), language=language
            )
            problems = text_problems(mail.text, mail.html)
            assert not problems, (name, language, optional, problems)
            checked += len(unbreakable_items(mail.html))
    assert checked > 100


def test_cover_note_with_long_values_stays_within_78_columns() -> None:
    note = cover_note(
        reference="SM-2026-000123",
        received_at="dimanche 22 novembre 2026 à 21 h 40",
        service_name="Bureau des titres — cartes grises (certificats d'immatriculation)",
        citizen="jean-christophe.de-la-fontaine-martel@exemple-fournisseur.example.org",
        mailbox_address="pref-contact@seine-maritime.gouv.fr",
        category="etat-avancement",
        tracking_address="pref-suivi-des-delais-de-reponse@seine-maritime.gouv.fr",
        deadline="vendredi 27 novembre 2026",
    )
    lines = note.splitlines()
    assert max(len(line) for line in lines) <= 78
    for whole in (
        "jean-christophe.de-la-fontaine-martel@exemple-fournisseur.example.org",
        "pref-suivi-des-delais-de-reponse@seine-maritime.gouv.fr",
        "dimanche 22 novembre 2026 à 21 h 40",
        "vendredi 27 novembre 2026",
    ):
        assert whole in note, whole
    assert "au plus tard le vendredi 27 novembre 2026" in " ".join(lines)


# --------------------------------------------------------------------------- the deadline


def received_on(msg: EmailMessage) -> datetime:
    """The date of receipt the AR states in French (what the citizen reads)."""
    found = re.search(
        r"reçu(?: votre message)? le \w+ (\d+)(?:er)? (\w+) (\d{4}) à (\d+) h(?: (\d\d))?",
        body(msg, "plain"),
    )
    assert found, "no date of receipt in the French text"
    day, month, year, hour, minute = found.groups()
    return datetime(
        int(year), FRENCH_MONTHS[month], int(day), int(hour), int(minute or 0), tzinfo=PARIS
    )


def test_every_ar_states_its_deadline_in_french_and_in_the_translation(
    demo: list[EmailMessage],
) -> None:
    calendar = WorkingCalendar()
    ars = [m for m in to_citizens(demo) if "Accusé de réception" in str(m["Subject"])]
    assert len(ars) == 11
    languages = set()
    for msg in ars:
        deadline = calendar.deadline(received_on(msg))
        assert (
            calendar.delay(received_on(msg), datetime.combine(deadline, datetime.min.time(), PARIS))
            == 5
        )
        french = f"au plus tard le {babel_date(deadline, 'EEEE d MMMM y', locale='fr')}"
        if deadline.day == 1:
            french = french.replace(" 1 ", " 1er ")
        text, html = body(msg, "plain"), body(msg, "html")
        assert french in " ".join(text.split()), msg["Subject"]
        assert french in html.replace("\xa0", " "), msg["Subject"]
        language = re.search(r'class="translation"[^>]* lang="(\w+)"', html)
        if language:
            languages.add(language.group(1))
            translated = babel_date(deadline, "full", locale=language.group(1))
            assert translated in text and translated in html, (language.group(1), translated)
    assert {"en", "ar"} <= languages


def test_deadline_counts_holidays() -> None:
    """Received on the eve of Christmas: the 25th and the weekend do not count."""
    renderer = Renderer(ROOT / "templates")
    examples = renderer.meta("ar-general").examples()
    received = datetime(2026, 12, 23, 10, 0, tzinfo=PARIS)
    from mailbot.render.variables import answer_deadline

    assert answer_deadline(received) == date(2026, 12, 31)
    examples |= {"received_at": received, "deadline": answer_deadline(received)}
    mail = renderer.render("ar-general", examples, language="es")
    assert "au plus tard le jeudi 31 décembre 2026" in " ".join(mail.text.split())
    assert "jueves, 31 de diciembre de 2026" in mail.text


def test_transfer_notice_states_the_deadline() -> None:
    renderer = Renderer(ROOT / "templates")
    examples = renderer.meta("notification-transfert").examples()
    mail = renderer.render("notification-transfert", examples, language="uk")
    assert "au plus tard le jeudi 3 décembre 2026" in " ".join(mail.text.split())
    ukrainian = babel_date(date(2026, 12, 3), "full", locale="uk")  # четвер, 3 грудня 2026 р.
    assert ukrainian in mail.text and ukrainian in mail.html


@pytest.mark.parametrize("language", ["fr", "uk", "ar", "zh"])
def test_transfer_notice_of_an_overdue_message_gives_no_date_gone_by(language: str) -> None:
    """Transferred after its deadline (``deadline_passed``, set by app/transfer), the notice
    says the 5 working days have passed and the service answers as soon as possible, in
    French and in the translated part: never "au plus tard le <a day gone by>" (B6)."""
    renderer = Renderer(ROOT / "templates")
    examples = renderer.meta("notification-transfert").examples()
    mail = renderer.render(
        "notification-transfert", {**examples, "deadline_passed": True}, language=language
    )
    text = " ".join(mail.text.replace("\u200f", "").split())  # RLM: each Arabic line's start
    html = " ".join(mail.html.split())
    assert "Le délai de réponse de 5 jours ouvrés" in text
    assert "est dépassé : ce service vous répondra dans les meilleurs délais" in text
    assert "<strong>est dépassé</strong>&nbsp;: ce service vous répondra" in html
    for part in (text, html):
        assert "au plus tard" not in part
        for locale in {"fr", language}:
            assert babel_date(date(2026, 12, 3), "full", locale=locale) not in part
    if language != "fr":
        texts = renderer.translations[language].texts
        assert texts["ar.deadline_passed"] in text
        assert texts["ar.deadline"].split("{{")[0].strip() not in text


# "Automatic" in each language the notice may be translated to (its stem, lower case).
AUTOMATIC = ("automat", "automát", "otomatik", "автомат", "تلقائي")


@pytest.mark.parametrize("language", ["fr", "en", "ar", "es", "pt", "ro", "ru", "tr", "uk"])
def test_transfer_notice_never_says_it_was_sent_automatically(language: str) -> None:
    """An agent transfers a message (console, ``mailbot transfer``): the notice is their
    decision, not an automatic mail. Neither its French nor its translated part may say
    « envoyé automatiquement » (the AR's ``ar.automatic``, which it once carried): each
    says the agent who transferred the request sends it (``transfer.by_agent``), and the
    way to add to the request stays; the agent signs it."""
    renderer = Renderer(ROOT / "templates")
    examples = renderer.meta("notification-transfert").examples()
    mail = renderer.render("notification-transfert", examples, language=language)
    marks = dict.fromkeys(map(ord, "\u200f\u2066\u2067\u2068\u2069"))  # RLM, isolates
    text = " ".join(mail.text.translate(marks).split())
    html = " ".join(mail.html.translate(marks).split())
    for part in (text.lower(), html.lower()):
        assert not [stem for stem in AUTOMATIC if stem in part]
    assert "Ce message vous est envoyé par l'agent qui a transmis votre demande." in text
    assert "répondez à ce courriel sans changer l'objet" in text
    assert "Cordialement, -- Léa Moreau Cheffe de la section accueil" in text
    if language != "fr":
        texts = renderer.translations[language].texts
        assert " ".join(texts["transfer.by_agent"].split()) in text
        assert " ".join(texts["ar.reply_hint"].split()) in text
        assert " ".join(texts["ar.automatic"].split()) not in text


# --------------------------------------------------------------------------- re-orientation


def test_reorientation_subject_is_derived_from_the_citizens_subject() -> None:
    """Like the AR and the transfer notice, the re-orientation's subject carries the
    citizen's own subject (RFC 3834 § 3.1.5): found in the citizen's thread by it. The
    audit's mail « APL et allocations familiales » got « Votre message [SM-2026-000004] :
    à qui vous adresser », the subject lost; an empty subject gets a plain word."""
    renderer = Renderer(ROOT / "templates")
    examples = renderer.meta("reorientation").examples()
    mail = renderer.render(
        "reorientation", {**examples, "original_subject": "APL et allocations familiales"}
    )
    assert mail.subject == "À qui vous adresser [SM-2026-000123] : APL et allocations familiales"
    empty = renderer.render("reorientation", {**examples, "original_subject": ""})
    assert empty.subject == "À qui vous adresser [SM-2026-000123] : votre message"


@pytest.mark.parametrize("language", ["en", "ar", "es", "pt", "ro", "ru", "tr", "uk", "zh"])
def test_reorientation_tells_a_foreign_reader_how_to_contest_it(language: str) -> None:
    """The French part says: if the request is the prefecture's after all, reply without
    changing the subject, a person reads it. The translated part said only where to turn
    (the audit's English and Arabic mails re-oriented to the mairie and the CAF): the one
    way back was in French alone."""
    renderer = Renderer(ROOT / "templates")
    examples = renderer.meta("reorientation").examples()
    mail = renderer.render("reorientation", examples, language=language)
    marks = dict.fromkeys(map(ord, "\u200f\u2066\u2067\u2068\u2069"))  # RLM, isolates
    text = " ".join(mail.text.translate(marks).split())
    contest = renderer.translations[language].texts["reorientation.contest"]
    # Chinese has no spaces: its lines break between two ideographs.
    shown = "".join(text.split()) if language == "zh" else text
    assert " ".join(contest.split()) in shown
    assert contest.split()[0] in mail.html
    assert "répondez à ce courriel sans changer l'objet" in text  # the French, unchanged


def test_text_parts_end_their_lists_before_the_next_paragraph() -> None:
    """In the text part, a paragraph after a list is set apart by a blank line, as the HTML
    part's <p> after its </ul>: glued under the last item, it read as part of it
    (« demande-precisions »: « Nous reprendrons votre demande… » under the postal option;
    « reponse-cartes-grises »: « Quand votre demande est acceptée… » under « en
    instruction »; « reponse-rendez-vous-dmi »: « Venez à l'heure… » under the tax stamp)."""
    renderer = Renderer(ROOT / "templates")
    glued = []
    for name in renderer.names():
        for optional in (True, False):
            mail = renderer.render(name, renderer.meta(name).examples(include_optional=optional))
            lines = mail.text.splitlines()
            for before, line in pairwise(lines):
                in_list = before.startswith(("- ", "  ")) or re.match(r"\d+\. |   ", before)
                item = line.startswith(("- ", " ")) or re.match(r"\d+\. ", line)
                if in_list and line and not item:
                    glued.append((name, before, line))
    assert not glued
