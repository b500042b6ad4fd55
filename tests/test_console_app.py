"""The console's application layer, on a real SQLite store and the demo's Maildir: the
queue (order, badges, filters, search), assignment, "no reply needed", presence, the
citizen's mail shown (parts, attachments) and made inert (nh3), a mail found again."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailbot.app import assignment, no_reply, presence, queue
from mailbot.app.report import ReportBuilder
from mailbot.config import Agent, Config, load_agents, load_config
from mailbot.core.message import mime_leaves
from mailbot.core.periods import week_period
from mailbot.core.statuses import Decision, NoReplyReason
from mailbot.errors import MailGoneError, MessageError, RequestError
from mailbot.mail import display
from mailbot.mail.maildir import maildir_files
from mailbot.mail.originals import MaildirOriginals
from mailbot.render import safe_html
from mailbot.render.templates import Renderer
from mailbot.store import NewMessage, Store

ROOT = Path(__file__).resolve().parents[1]
PARIS = ZoneInfo("Europe/Paris")
TODAY = date(2026, 11, 30)  # a Monday; the working days before it are fixed by the calendar


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "rules.yaml")


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    """The store on SQLite and on a real PostgreSQL (the queue's SQL, upserts)."""
    opened = Store(database)
    yield opened
    opened.close()


def agents_of(config: Config) -> dict[str, Agent]:
    return load_agents(ROOT / "agents.yaml", config)


def record(store: Store, n: int, received: datetime, **changes: object) -> int:
    values: dict[str, object] = {
        "mailbox": "general",
        "folder": "INBOX",
        "uidvalidity": 7,
        "uid": n,
        "message_id": f"<m{n}@example.fr>",
        "content_hash": f"h{n}",
        "received_at": received,
        "sender": f"citoyen{n}@example.fr",
        "sender_name": f"Usager {n}",
        "subject": f"Demande numéro {n}",
        "in_reply_to": None,
        "decision": Decision.ACKNOWLEDGE,
        "reasons": ["citizen-mail"],
        "size": 100,
        "defects": [],
        "reference": f"SM-2026-{n:06d}",
        "service": "cartes-grises",
        "category": "immatriculation",
    }
    values.update(changes)
    with store.transaction() as tx:
        return tx.insert_message(NewMessage(**values))  # type: ignore[arg-type]


def local(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=PARIS)


def seeded(store: Store) -> dict[str, int]:
    return {
        "recent": record(store, 1, local(TODAY)),
        "old": record(store, 2, local(TODAY - timedelta(days=14))),
        "today": record(store, 3, local(date(2026, 11, 23))),  # 5th working day: today
        "other": record(store, 4, local(TODAY - timedelta(days=20)), service="permis"),
        "ignored": record(store, 5, local(TODAY), decision=Decision.SKIP, reference=None),
        # mailbot's own probe mail (issue 16): acknowledged, never an agent's to answer
        "probe": record(store, 6, local(TODAY - timedelta(days=20)), probe=1),
    }


def page(config: Config, store: Store, **query: object) -> queue.QueuePage:
    values: dict[str, object] = {"services": ("cartes-grises",)}
    values.update(query)
    return queue.listing(config, store, queue.QueueQuery(**values), TODAY)  # type: ignore[arg-type]


def test_queue_lists_a_services_open_messages_earliest_deadline_first(
    config: Config, store: Store
) -> None:
    ids = seeded(store)
    listed = page(config, store)
    assert [r.id for r in listed.rows] == [ids["old"], ids["today"], ids["recent"]]
    assert listed.total == 3
    old, due, recent = listed.rows
    assert old.urgency is queue.Urgency.OVERDUE and old.days_left < 0
    assert due.urgency is queue.Urgency.DUE_TODAY and due.deadline == TODAY
    assert recent.urgency is queue.Urgency.ON_TIME and recent.days_left == 5
    assert recent.citizen == "Usager 1" and "@" not in recent.citizen
    assert recent.received_at.tzinfo == PARIS


def test_queue_filters_and_search(config: Config, store: Store) -> None:
    ids = seeded(store)
    overdue = page(config, store, show=queue.Show.OVERDUE)
    assert [r.id for r in overdue.rows] == [ids["old"]]
    assert [r.id for r in page(config, store, search="numéro 3").rows] == [ids["today"]]
    assert [r.id for r in page(config, store, search="sm-2026-000002").rows] == [ids["old"]]
    assert page(config, store, category="autre").rows == []
    both = page(config, store, services=("cartes-grises", "permis"))
    assert ids["other"] in [r.id for r in both.rows]


def test_overdue_from_the_day_after_the_deadline_weekends_included(
    config: Config, store: Store
) -> None:
    """Received Friday 20/11 (deadline Friday 27/11): due that Friday, overdue on the
    Saturday and Sunday already (the deadline shown is past), in the badge, the "en
    retard" filter and the header's count alike."""
    friday = date(2026, 11, 20)
    pk = record(store, 1, local(friday))
    services = ("cartes-grises",)

    def seen(today: date) -> tuple[queue.QueueRow, list[int], int]:
        (row,) = queue.listing(config, store, queue.QueueQuery(services), today).rows
        late = queue.QueueQuery(services, show=queue.Show.OVERDUE)
        listed = [r.id for r in queue.listing(config, store, late, today).rows]
        (head,) = queue.header(config, store, services, today)
        return row, listed, head.overdue

    row, listed, overdue = seen(date(2026, 11, 27))
    assert row.deadline == date(2026, 11, 27) and row.urgency is queue.Urgency.DUE_TODAY
    assert listed == [] and overdue == 0
    for day in (28, 29, 30):  # Saturday, Sunday, Monday
        row, listed, overdue = seen(date(2026, 11, day))
        assert row.urgency is queue.Urgency.OVERDUE and row.days_left < 0
        assert listed == [pk] and overdue == 1


def test_assignment_and_the_mine_unassigned_filters(config: Config, store: Store) -> None:
    ids = seeded(store)
    agents = agents_of(config)
    done = assignment.assign(config, store, agents.get, "cdurand", ids["old"], "cdurand", key="k1")
    again = assignment.assign(config, store, agents.get, "cdurand", ids["old"], "cdurand", key="k1")
    assert done.assignee == "cdurand" and not done.repeated and again.repeated
    mine = page(config, store, show=queue.Show.MINE, agent="cdurand")
    assert [r.id for r in mine.rows] == [ids["old"]]
    assert mine.rows[0].assignee == "cdurand"
    free = page(config, store, show=queue.Show.UNASSIGNED)
    assert ids["old"] not in [r.id for r in free.rows] and len(free.rows) == 2
    # Giving it to someone else is a head's (REASSIGN): cdurand as the service's head.
    head = {**agents, "cdurand": agents["cdurand"].model_copy(update={"role": "head"})}
    with pytest.raises(RequestError, match="does not handle"):
        assignment.assign(config, store, head.get, "cdurand", ids["old"], "mlefebvre")
    events = [e for e in store.events() if e.kind == "assigned"]
    assert len(events) == 1 and '"agent": "cdurand"' in events[0].detail


def test_a_console_form_for_a_new_message_that_took_a_purged_ones_id_is_done(
    config: Config, tmp_path: Path
) -> None:
    """SQLite gives a new row the id of the highest ones deleted: once the retention purge
    took every message, the next mail is message 1 again. Its first assignment from the
    console (form key: action, message, state) was found already done under the purged
    message 1's key — nothing assigned, "repeated" — and so was its first reply."""
    from mailbot.app.answer_form import form_key as reply_key
    from mailbot.app.requests import form_key, once, previous
    from mailbot.core.statuses import EventKind

    store = Store(f"sqlite:///{tmp_path / 'purged.db'}")
    try:
        agents = agents_of(config)
        old = record(store, 1, local(TODAY - timedelta(days=800)))
        row = store.message(id=old)
        assert row is not None
        first = assignment.assign(
            config, store, agents.get, "cdurand", old, "cdurand", form_key("attribuer", row, 0)
        )
        assert not first.repeated
        once(store, EventKind.REPLY_QUEUED, reply_key(row, 0), lambda tx: 0, agent="cdurand")
        assert store.purge(datetime.now(UTC) - timedelta(days=730)) == 1
        new = record(store, 2, local(TODAY))
        assert new == old  # the purged message's id, given again
        row = store.message(id=new)
        assert row is not None
        done = assignment.assign(
            config, store, agents.get, "cdurand", new, "cdurand", form_key("attribuer", row, 0)
        )
        assert not done.repeated and done.assignee == "cdurand"
        assert previous(store, EventKind.REPLY_QUEUED, reply_key(row, 0), agent="cdurand") is None
    finally:
        store.close()


def test_no_reply_needed_leaves_queue_and_indicators(config: Config, store: Store) -> None:
    ids = seeded(store)
    agents = agents_of(config)
    before = queue.month_figures(config, store, ("cartes-grises",), TODAY)[0].month
    closed = no_reply.close_without_reply(
        config, store, agents.get, "cdurand", ids["recent"], NoReplyReason.SPAM, "", key="n1"
    )
    assert closed.reason is NoReplyReason.SPAM
    assert ids["recent"] not in [r.id for r in page(config, store).rows]
    after = queue.month_figures(config, store, ("cartes-grises",), TODAY)[0].month
    assert after.received == before.received - 1
    with pytest.raises(RequestError, match="already closed"):
        no_reply.close_without_reply(
            config, store, agents.get, "cdurand", ids["recent"], NoReplyReason.SPAM, ""
        )
    with pytest.raises(RequestError, match="say why"):
        no_reply.close_without_reply(
            config, store, agents.get, "cdurand", ids["old"], NoReplyReason.OTHER, " "
        )
    since = datetime(2026, 11, 1, tzinfo=UTC)
    listed = no_reply.closed_in(store, since, datetime(2026, 12, 1, tzinfo=UTC))
    assert [row.id for row in listed] == [ids["recent"]]


def test_presence_shows_colleagues_for_two_minutes(store: Store) -> None:
    pk = record(store, 1, local(TODAY))
    now = datetime(2026, 11, 30, 9, tzinfo=UTC)
    presence.opened(store, "cdurand", pk, clock=lambda: now)
    presence.opened(store, "aleroux", pk, clock=lambda: now)
    assert [v.agent for v in presence.others(store, "aleroux", pk, clock=lambda: now)] == [
        "cdurand"
    ]
    later = now + timedelta(seconds=presence.VIEWING_SECONDS + 1)
    assert presence.others(store, "aleroux", pk, clock=lambda: later) == []


HOSTILE = (
    "<p onclick='x()'>Bonjour <b>madame</b></p><script>alert(1)</script>"
    '<img src="https://tracker.example/pixel.gif" onerror="alert(2)">'
    '<a href="javascript:alert(3)">lien</a><a href="https://service-public.fr/x">ok</a>'
    '<img src="cid:logo@x"><iframe src="https://evil.example"></iframe>'
    "<style>body{display:none}</style><form action=/x><input name=a></form>"
)


def test_safe_html_leaves_only_inert_markup() -> None:
    logo = "data:image/png;base64,iVBORw0KGgo="
    cleaned = safe_html.clean(HOSTILE, {"logo@x": logo})
    html = cleaned.html.lower()
    for bad in ("<script", "onerror", "onclick", "javascript:", "tracker.example", "<iframe"):
        assert bad not in html
    assert "<style" not in html and "<form" not in html and "<input" not in html
    assert cleaned.blocked_images == 1
    assert f'src="{logo}"'.lower() in html
    assert 'href="https://service-public.fr/x"' in html and "noopener" in html
    assert "<b>madame</b>" in html


def test_safe_html_shows_neither_the_title_nor_what_the_mails_style_hides() -> None:
    """As a mail client shows it: the page's title is dropped, an element its style hides
    (double or single quotes, among other properties) keeps the ``hidden`` attribute."""
    mail = (
        "<html><head><title>Titre de la page</title></head><body>"
        "<div style=\"font-family: 'Arial'; display: none\">Aperçu caché</div>"
        "<p style='display:block'>Bonjour</p></body></html>"
    )
    html = safe_html.clean(mail).html
    assert "Titre de la page" not in html
    assert "<div hidden>Aperçu caché</div>" in html.replace('hidden=""', "hidden")
    assert "<p>Bonjour</p>" in html


@pytest.mark.parametrize("piece", ["<a", "<img", "<p style='display:none' "])
def test_safe_html_cleans_a_mail_of_unclosed_tags_in_linear_time(piece: str) -> None:
    """The message page cleans the citizen's HTML part (up to display.TEXT_LIMIT, 200,000
    characters) on every view, in the console's process: a mail of tags that never close
    ("<a<a<a…") made the start-tag scan go to the end of the part from each "<", 23 s
    of CPU holding the GIL (every agent's page waited) for each opening of that mail."""
    import time

    markup = piece * (display.TEXT_LIMIT // len(piece))
    started = time.process_time()
    safe_html.clean("<p>début</p>" + markup)  # no ">" after: each "<" was scanned to the end
    assert time.process_time() - started < 2.0
    # tags that do close are still read whole: the style that hides one still hides it
    hidden = safe_html.clean("<p>a<span style='display:none'>b</span></p>").html
    assert "<span hidden" in hidden


def _notes(html: str) -> list[str]:
    return re.findall(r'<span class="mb-link-dest">([^<]*)</span>', html)


def test_safe_html_shows_where_a_link_really_goes() -> None:
    """A link's words can name ProConnect and lead elsewhere: the host it really goes to
    is written after it, a look-alike (IDN) host in its ASCII ``xn--`` form."""
    html = safe_html.clean(
        '<p><a href="https://proconnect-reconnexion.example/login?u=1&amp;v=2">Votre '
        "session a expiré : reconnectez-vous sur ProConnect</a> ou "
        '<a href="https://www.prеfecture-paris.fr/rdv">prefecture-paris.fr</a>'
        '<a href="https://www.prеfecture-paris.fr/">https://www.prеfecture-paris.fr/</a>'
        '<a href="https://www.ants.gouv.fr@evil.example/">https://www.ants.gouv.fr@evil.example/</a></p>'
    ).html
    assert (
        "reconnectez-vous sur ProConnect</a> "
        '<span class="mb-link-dest">[proconnect-reconnexion.example]</span>'
    ) in html
    idn = "[www.xn--prfecture-paris-5nm.fr]"  # even when its text is that address
    assert _notes(html) == ["[proconnect-reconnexion.example]", idn, idn, "[evil.example]"]
    assert html.count('rel="noopener noreferrer nofollow"') == 4 and "target=" not in html


@pytest.mark.parametrize(
    "link",
    [
        '<a href="https://www.ants.gouv.fr">https://www.ants.gouv.fr</a>',
        '<a href="https://www.ants.gouv.fr/">https://www.ants.gouv.fr</a>',
        '<a href="https://www.ants.gouv.fr/">www.ants.gouv.fr</a>',
        '<a href="https://www.ants.gouv.fr/x?a=1&amp;b=2"> https://www.ants.gouv.fr/x?a=1&amp;b=2 </a>',
        '<a href="mailto:jean@example.fr">jean@example.fr</a>',
        "<a>sans adresse</a>",
    ],
)
def test_safe_html_adds_no_note_when_the_link_shows_its_own_address(link: str) -> None:
    assert _notes(safe_html.clean(f"<p>{link}</p>").html) == []


def test_safe_html_shows_a_mail_links_address_and_its_note_cannot_be_forged() -> None:
    html = safe_html.clean(
        '<a href="mailto:accueil%40pr%C3%A9fecture.example?subject=RDV">Écrivez-nous</a>'
        '<span class="mb-link-dest">[www.ants.gouv.fr]</span>'
        '<a href="https://x.example/"><img src="data:image/png;base64,iVBORw0KGgo="></a>'
        '<a href="https://y.example/" title="&quot;>&lt;b&gt;">a &lt;b&gt; <i>&amp;</i></a>'
    ).html
    # the citizen's own class is removed: only the console writes a note
    assert _notes(html) == [
        "[accueil@xn--prfecture-c4a.example]",
        "[x.example]",
        "[y.example]",
    ]
    assert "<b>" not in html


MIXED = (
    b"From: =?utf-8?q?Jos=C3=A9?= <jose@example.fr>\r\nTo: pref@example.fr\r\n"
    b"Subject: =?utf-8?q?Dossier_r=C3=A9c=C3=A9piss=C3=A9?=\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b'--b\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
    b"--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour, voici mon dossier.\r\n"
    b"--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Bonjour <script>x</script></p>\r\n"
    b"--a--\r\n"
    b"--b\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''..%2F..%2Fetc%2Fre%C3%A7u.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
)


def test_display_reads_parts_and_attachments() -> None:
    shown = display.show(MIXED)
    assert shown.subject == "Dossier récépissé" and "José" in shown.sender
    assert shown.text.startswith("Bonjour, voici mon dossier.")
    assert "<script>" in shown.html  # raw here: the page shows safe_html.clean(...) only
    (pdf,) = shown.attachments
    assert pdf.content_type == "application/pdf" and "/" not in pdf.filename
    assert pdf.filename.endswith("reçu.pdf")
    meta, data = display.attachment(MIXED, pdf.index)
    assert data == b"%PDF-1.4\n" and meta.size == len(data)
    with pytest.raises(Exception, match="no attachment"):
        display.attachment(MIXED, 1)  # the text part is no attachment


def nested_mail(pdf: bytes) -> bytes:
    """A mail of every kind of IMAP section: alternative text, a forwarded single-part
    mail, a forwarded multipart mail with an image, and a PDF after them."""
    forwarded = (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="i"\r\n\r\n'
        b"--i\r\nContent-Type: text/plain\r\n\r\nci-dessous\r\n"
        b'--i\r\nContent-Type: image/png; name="photo.png"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--i--\r\n"
    )
    return (
        b'From: a@example.fr\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"'
        b'\r\n\r\n--b\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n"
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>Bonjour</p>\r\n--a--\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: tr\r\n\r\ntexte\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: tr2\r\n" + forwarded + b"--b\r\n"
        b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="scan.pdf"'
        b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(pdf) + b"--b--\r\n"
    )


def test_each_leaf_has_its_imap_section_the_same_in_the_start_of_the_mail() -> None:
    """RFC 3501 §6.4.5: a forwarded mail's single body is its part .1, the parts of a
    forwarded multipart mail .1, .2. The start of a mail (a huge one read in part) names
    its attachments by the same position and section as the whole mail."""
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 1000
    raw = nested_mail(pdf)
    leaves = [(ctype, section) for _part, ctype, _attached, section in mime_leaves(raw)]
    assert leaves == [
        ("text/plain", "1.1"),
        ("text/html", "1.2"),
        ("text/plain", "2.1"),
        ("text/plain", "3.1"),
        ("image/png", "3.2"),
        ("application/pdf", "4"),
    ]
    photo, scan = display.show(raw).attachments
    assert (photo.index, scan.index, scan.filename) == (4, 5, "scan.pdf")
    start = raw[: raw.index(b"Content-Type: application/pdf") + 2000]  # the scan is cut
    assert [a.filename for a in display.show(start, truncated=True).attachments] == [
        "photo.png",
        "scan.pdf",
    ]
    ref = display.locate(start, scan.index)
    assert (ref.section, ref.declared_type, ref.attachment.filename) == (
        "4",
        "application/pdf",
        "scan.pdf",
    )
    assert display.locate(start, photo.index).section == "3.2"
    with pytest.raises(MessageError, match="no attachment"):
        display.locate(start, 0)  # a text part is no attachment
    body = raw.split(b"Content-Transfer-Encoding: base64\r\n\r\n")[-1].split(b"--b--")[0]
    assert display.decoded(body, "base64") == pdf == display.attachment(raw, 5)[1]
    assert display.decoded(b"caf=C3=A9 =\r\nnoir", "quoted-printable") == "café noir".encode()
    assert display.decoded(b"tel quel\r\n", "8bit") == b"tel quel\r\n"


def test_a_delivery_status_leaf_has_no_section() -> None:
    """The parser opens a message/delivery-status into blocks, IMAP does not: such a leaf
    cannot be named to the server, and is not (None) rather than wrongly."""
    raw = (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/report; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nechec\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; a@b\r\n--r--\r\n"
    )
    sections = [section for *_leaf, section in mime_leaves(raw)]
    assert sections[0] == "1" and sections[1:] and set(sections[1:]) == {None}


class Row:
    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


def test_maildir_originals_find_a_mail_by_uid_or_message_id_or_say_gone() -> None:
    maildir = ROOT / "mailbot" / "demo_data" / "maildir" / "general"
    first = maildir_files(maildir)[0].read_bytes()
    digest = hashlib.sha256(first).hexdigest()
    originals = MaildirOriginals({"general": maildir})
    base = {"id": 1, "mailbox": "general", "folder": "INBOX", "message_id": None}
    found = originals.fetch(Row(**base, uidvalidity=1, uid=1, content_hash=digest))
    assert found.raw == first
    moved = originals.fetch(Row(**base, uidvalidity=999, uid=5000, content_hash=digest))
    assert moved.raw == first
    with pytest.raises(MailGoneError, match="no longer"):
        originals.fetch(Row(**base, uidvalidity=999, uid=5000, content_hash="0" * 64))


def test_weekly_report_lists_the_messages_closed_without_a_reply(
    config: Config, store: Store
) -> None:
    ids = seeded(store)
    agents = agents_of(config)
    no_reply.close_without_reply(
        config, store, agents.get, "cdurand", ids["today"], NoReplyReason.DUPLICATE, "vu SM-9"
    )
    renderer = Renderer(config.templates, timezone=config.timezone)
    period = week_period(date(2026, 11, 23))  # the week "today" was received in
    report = ReportBuilder(config, store, renderer).build(period, TODAY)
    text = report.mail.parsed().get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "CLOS SANS RÉPONSE (1)" in text
    service = config.services["cartes-grises"].name  # a manager reads names, not keys
    line = f"- [SM-2026-000003] {service}, reçu le 2026-11-23, doublon : vu SM-9"
    assert line in " ".join(text.split())  # the text part wraps the line
    assert "Clos sans réponse (1)" in report.html


def test_an_agents_file_removed_while_the_console_runs_is_a_config_error(
    tmp_path: Path,
) -> None:
    """Removed or renamed under a running console: refused as a file that does not load
    (a ConfigError naming it), not a FileNotFoundError traceback on every page."""
    import shutil

    from mailbot.errors import ConfigError
    from mailbot.web.identity import AgentDirectory

    path = tmp_path / "agents.yaml"
    shutil.copy(ROOT / "agents.yaml", path)
    directory = AgentDirectory(path, load_config(ROOT / "rules.yaml"))
    assert directory.agents()
    path.unlink()
    with pytest.raises(ConfigError) as info:
        directory.agents()
    assert str(info.value) == f"{path}: cannot read file: No such file or directory"
