"""A small world for the desk's pages: two Dovecot mailboxes holding citizens' mails, read
by the real pipeline (``mailbot poll --once``) into SQLite, the aiosmtpd server as SMTP,
and the App the console's pages use (``backend``).

The pipeline reads the world once (``read_world``, once per test module); each test gets
a copy of it (``copied_world``): the SQLite file and the two mailboxes copied file by file,
UIDs and UIDVALIDITY included, so that the copy is what the pipeline left, to the byte.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from rulesfile import dump_rules, load_rules
from servers import DovecotServer, MailUser, Received, SmtpServer
from webtools import RunningConsole, running_console

from mailbot.app import quarantine
from mailbot.app.context import App, app_from_config
from mailbot.cli import main
from mailbot.config import Config, config_from_mapping, load_config
from mailbot.core.statuses import OutboxStatus

ROOT = Path(__file__).resolve().parents[2]
GENERAL = "pref-contact@seine-maritime.gouv.fr"
ETRANGERS = "pref-etrangers@seine-maritime.gouv.fr"
T = TypeVar("T")
HOSTILE_HOST = "tracker.invalid"
HOSTILE_HTML = (
    "<html><body><p>Bonjour, je joins mon dossier.</p>"
    "<script>window.mbPwned = 1; document.title = 'pwned';</script>"
    f'<img src="http://{HOSTILE_HOST}/pixel.gif" alt="suivi">'
    '<img src=x onerror="window.mbPwned = 2">'
    '<a id="piege" href="javascript:window.mbPwned=3">cliquez ici</a>'
    "<p>Cordialement, Jean Petit</p></body></html>"
)


def citizen_mail(
    n: int,
    *,
    to: str = ETRANGERS,
    subject: str = "Renouvellement de mon titre de séjour",
    name: str = "Marie Dupont",
    html: str | None = None,
    attachment: bool = False,
    text: str = "Bonjour,\r\nMon titre de séjour expire bientôt. Que dois-je faire ?\r\nMerci.\r\n",
) -> bytes:
    sender = f"usager{n}@example.fr"
    head = [
        f"Return-Path: <{sender}>",
        f"From: {name} <{sender}>",
        f"To: {to}",
        f"Subject: {subject}",
        "Date: Thu, 26 Nov 2026 10:00:00 +0100",
        f"Message-ID: <citizen-{n}@example.fr>",
        "MIME-Version: 1.0",
    ]
    if html is None and not attachment:
        head += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        return ("\r\n".join(head) + "\r\n\r\n" + text).encode()
    head.append('Content-Type: multipart/mixed; boundary="mix"')
    parts = ["--mix", "Content-Type: text/plain; charset=utf-8", "", text]
    if html is not None:
        parts += ["--mix", "Content-Type: text/html; charset=utf-8", "", html]
    if attachment:
        parts += [
            "--mix",
            "Content-Type: application/pdf",
            'Content-Disposition: attachment; filename="passeport.pdf"',
            "Content-Transfer-Encoding: base64",
            "",
            "JVBERi0xLjQK",
        ]
    parts.append("--mix--")
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(parts) + "\r\n").encode()


def in_thread(work: Callable[[], T]) -> T:
    """Run ``work`` in a thread of its own: the CLI and the outbox run asyncio loops, which
    cannot start in a thread where Playwright's loop runs."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result()


def move_mail(user: MailUser, message_id: str, folder: str | None) -> None:
    """What an agent does in their mail client: file the mail away, or delete it."""
    client = user.connect()
    try:
        if folder is not None:
            client.create_folder(folder)
        client.select_folder("INBOX")
        uids = client.search(["HEADER", "Message-ID", message_id])
        if folder is None:
            client.delete_messages(uids)
            client.expunge()
        else:
            client.move(uids, folder)
    finally:
        client.logout()


def write_config(tmp: Path, general: MailUser, etrangers: MailUser, smtp: SmtpServer) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(dump_rules(desk_rules(tmp, general, etrangers, smtp)), encoding="utf-8")
    return path


def desk_rules(
    tmp: Path, general: MailUser, etrangers: MailUser, smtp: SmtpServer
) -> dict[str, Any]:
    """The shipped rules with these servers and a database in ``tmp``."""
    data: dict[str, Any] = load_rules()
    for name, user in (("general", general), ("etrangers", etrangers)):
        imap = user.imap_config().model_dump(mode="json", exclude_none=True)
        data["mailboxes"][name]["imap"] = imap
    data["smtp"] = smtp.smtp_config().model_dump(mode="json", exclude_none=True)
    data["database"] = f"sqlite:///{tmp / 'mailbot.db'}"
    data["templates"] = str(ROOT / "templates")
    data["agents"] = str(ROOT / "agents.yaml")
    data["reports"] = {"weekly": {"to": []}}
    return data


@dataclass
class Desk:
    path: Path
    config: Config
    app: App
    general: MailUser
    etrangers: MailUser
    smtp: SmtpServer

    def row(self, message_id: str) -> Any:
        return self.app.store.message(message_id=message_id)

    def poll(self) -> None:
        assert in_thread(lambda: main(["--config", str(self.path), "-q", "poll", "--once"])) == 0
        in_thread(self.app.outbox.deliver_due)

    def delivered(self, timeout: float = 60) -> list[Received]:
        """Everything the SMTP server received, once the outbox has nothing left on its way.

        The console sends after its answer (a background task): the server holds a mail
        before its 250 reaches the sender, and a second mail may still be queued behind
        the first. So no count is taken from the server's side alone, nor after a fixed
        wait; it is taken once no outbox row is pending or sending (each attempt over:
        what it sent is received, and nothing more can leave)."""
        on_its_way = (OutboxStatus.PENDING, OutboxStatus.SENDING)
        deadline = time.monotonic() + timeout
        while any(row.status in on_its_way for row in self.app.store.outbox_items()):
            assert time.monotonic() < deadline, f"the outbox still sends after {timeout} s"
            time.sleep(0.05)
        return self.smtp.messages


def pass_over(desk: Desk, numbers: tuple[int, ...]) -> list[int]:
    """Citizens' mails to etrangers passed over by the real pipeline: the database refuses
    every new row there, even a quarantine row (a trigger, as a constraint would), at
    every poll until each was passed over at its third; then it takes rows again. Their
    events' ids, in the order of the mails."""
    file = str(desk.config.database).removeprefix("sqlite:///")
    with closing(sqlite3.connect(file)) as db:
        ((last,),) = db.execute(
            "SELECT last_uid FROM folders WHERE mailbox = 'etrangers' AND folder = 'INBOX'"
        ).fetchall()
    for n in numbers:
        desk.etrangers.append(citizen_mail(n, subject=f"Demande {n}"))
    known = len(quarantine.passed_over(desk.app.store))
    with closing(sqlite3.connect(file)) as db, db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.mailbox = 'etrangers'"
            f" AND NEW.uid > {int(last)} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    command = ["--config", str(desk.path), "-q", "poll", "--once"]
    codes = [in_thread(lambda: main(command)) for _ in range(3 * len(numbers))]
    with closing(sqlite3.connect(file)) as db, db:
        db.execute("DROP TRIGGER refuse")
    assert codes[-1] == 0 and codes.count(1) == 2 * len(numbers), codes
    passed = quarantine.passed_over(desk.app.store)
    assert len(passed) == known + len(numbers)
    return [p.event_id for p in passed[::-1][known:]]


def three_weeks_back_on_monday(now: datetime) -> datetime:
    """10:00 in Paris on the Monday of the week three weeks before ``now``: overdue on every
    day the tests run. ``now - 21 days`` was not: a mail received on a Friday (or after
    23:00 UTC on a Thursday, Friday in Paris) has only 5 working days by the end of its
    report window (its week's Sunday + 7), so the week's figures said « 0 en retard » on
    the days the suite ran Friday to Sunday. A Monday keeps at least 6 working days after
    it, whatever holidays fall in the two weeks."""
    paris = ZoneInfo("Europe/Paris")
    day = (now - timedelta(days=21)).astimezone(paris).date()
    monday = day - timedelta(days=day.weekday())
    return datetime(monday.year, monday.month, monday.day, 10, tzinfo=paris).astimezone(UTC)


def desk_world(tmp: Path, general: MailUser, etrangers: MailUser, smtp: SmtpServer) -> Desk:
    """Three mails to etrangers (one three weeks old: overdue; one in HTML with hostile
    markup and an attachment), read by the pipeline; their ARs delivered and forgotten."""
    now = datetime.now(UTC)
    etrangers.append(citizen_mail(1), internaldate=three_weeks_back_on_monday(now))
    etrangers.append(citizen_mail(2, name="Ali Ben", subject="Récépissé de demande de titre"))
    etrangers.append(
        citizen_mail(3, name="Jean Petit", html=HOSTILE_HTML, attachment=True),
        internaldate=now - timedelta(hours=2),
    )
    return read_desk(write_config(tmp, general, etrangers, smtp), general, etrangers, smtp, 3)


def read_desk(
    path: Path, general: MailUser, etrangers: MailUser, smtp: SmtpServer, ars: int
) -> Desk:
    """The mail waiting in the folders read by one poll, its ``ars`` ARs delivered and
    forgotten: the console's desk on what the pipeline recorded."""
    command = ["--config", str(path), "-q", "poll", "--once", "--acknowledge-existing"]
    assert in_thread(lambda: main(command)) == 0
    config = load_config(path)
    app = app_from_config(config)
    in_thread(app.outbox.deliver_due)
    smtp.wait_for(ars)
    smtp.clear()
    return Desk(path, config, app, general, etrangers, smtp)


@dataclass(frozen=True)
class ReadWorld:
    """What ``desk_world`` left, to copy for each test: its database and its two users."""

    database: Path
    general: str
    etrangers: str


def read_world(tmp: Path, dovecot: DovecotServer) -> ReadWorld:
    """The desk's world read once by the real pipeline (its ARs to an SMTP server of its
    own), then left alone: no process holds its database or its mailboxes any more."""
    general, etrangers = dovecot.new_user(), dovecot.new_user("etr")
    with SmtpServer() as smtp:
        desk = desk_world(tmp, general, etrangers, smtp)
        desk.app.close()
    for user in (general, etrangers):
        dovecot.drop_connections(user.name)
    return ReadWorld(tmp / "mailbot.db", general.name, etrangers.name)


def copied_world(world: ReadWorld, tmp: Path, dovecot: DovecotServer, smtp: SmtpServer) -> Desk:
    """A test's own copy of the read world: new users with the same mailboxes (same UIDs,
    flags, dates), the same database, a configuration naming them and the test's SMTP."""
    general = dovecot.copy_user(world.general)
    etrangers = dovecot.copy_user(world.etrangers, "etr")
    data = desk_rules(tmp, general, etrangers, smtp)
    path = tmp / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")  # for the commands a test runs
    copy_database(world.database, tmp / "mailbot.db")
    # What load_config(path) gives, without parsing back the text just written from data.
    config = config_from_mapping(data, str(path), base=tmp)
    return Desk(path, config, app_from_config(config), general, etrangers, smtp)


def copy_database(source: Path, target: Path) -> None:
    """SQLite's own copy (the backup API): a consistent file whatever its journal holds."""
    with closing(sqlite3.connect(source)) as read, closing(sqlite3.connect(target)) as write:
        read.backup(write)


@contextmanager
def desk_console(
    desk: Desk, tmp: Path, accounts: tuple[str, ...], **options: Any
) -> Iterator[RunningConsole]:
    """The console on the desk's App and configuration, with these accounts logged by
    password (``options``: running_console's, e.g. ``site=True`` for every page)."""
    web = tmp / "web"
    web.mkdir()
    with running_console(
        web, accounts=accounts, config=desk.config, backend=desk.app, **options
    ) as running:
        yield running
