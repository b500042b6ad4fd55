"""lingua's answers kept on disk for the offline commands (mailbot/langcache.py)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from servers import MailUser, SmtpServer
from test_e2e import etrangers_user

from mailbot import langcache
from mailbot.core import language

ROOT = Path(__file__).resolve().parent.parent
__all__ = ["etrangers_user"]
ENGLISH = "Hello, I would like to know how to renew my residence permit before it expires."


def test_an_answer_is_kept_and_recalled_by_another_process_s_memory(tmp_path: Path) -> None:
    langcache.remember_on_disk(tmp_path)
    assert language.lingua_language(ENGLISH) == "en"  # asked of lingua, then kept
    assert langcache.DiskMemory(tmp_path / langcache.FILE).recall(ENGLISH) == "en"


def test_a_kept_answer_is_what_lingua_language_gives(tmp_path: Path) -> None:
    """Recalled, not asked again: an answer planted in the file is the one given."""
    memory = langcache.DiskMemory(tmp_path / langcache.FILE)
    memory.keep(ENGLISH, "de")
    memory.keep("Guten Tag", "")  # lingua had no answer
    language.remember_with(memory)
    assert language.lingua_language(ENGLISH) == "de"
    assert language.lingua_language("Guten Tag") is None


def test_the_key_holds_lingua_s_version_and_settings(tmp_path: Path) -> None:
    key = langcache.DiskMemory._key(ENGLISH)
    langcache._namespace.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(language, "MIN_CONFIDENCE", 0.9)
            assert langcache.DiskMemory._key(ENGLISH) != key
    finally:
        langcache._namespace.cache_clear()
    assert langcache.DiskMemory._key(ENGLISH) == key


def test_an_unusable_file_only_means_asking_lingua(tmp_path: Path) -> None:
    (tmp_path / langcache.FILE).write_bytes(b"not a database" * 100)
    langcache.remember_on_disk(tmp_path)
    assert language.lingua_language(ENGLISH) == "en"
    assert language.lingua_language(ENGLISH) == "en"


def test_warming_up_asks_lingua_even_with_a_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm-up is there to load the models: a memory that knows its texts is not
    consulted."""
    memory = langcache.DiskMemory(tmp_path / langcache.FILE)
    for text in language._WARM_UP_TEXTS:
        memory.keep(text, "")
    language.remember_with(memory)
    asked: list[str] = []
    monkeypatch.setattr(language, "_lingua_answer", lambda text: asked.append(text))
    language.warm_up()
    assert asked == list(language._WARM_UP_TEXTS)


def _english_mail(path: Path) -> Path:
    path.write_bytes(
        b"From: a@example.org\r\nTo: pref@seine-maritime.gouv.fr\r\nSubject: Residence permit"
        b"\r\n\r\n" + ENGLISH.encode() + b"\r\n"
    )
    return path


@pytest.mark.parametrize("target", ["corpus", "corpus/english.eml"])
def test_explain_keeps_what_lingua_said_of_a_labelled_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """The command gives lingua the disk's memory for a labelled folder (a ``labels.csv``
    beside its mails, the corpus explained again and again while rules are tuned): an
    English mail explained there (the folder, or the mail alone) leaves its language in the
    cache directory's file."""
    from mailbot.cli import main

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(cache))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _english_mail(corpus / "english.eml")
    (corpus / "labels.csv").write_text(
        "file,mailbox,service,category\nenglish.eml,etrangers,etrangers,information\n",
        encoding="utf-8",
    )
    assert main(["--config", str(ROOT / "rules.yaml"), "explain", str(tmp_path / target)]) == 0
    with closing(sqlite3.connect(cache / langcache.SUBDIRECTORY / langcache.FILE)) as kept:
        assert kept.execute("SELECT language FROM said").fetchall() == [("en",)]


@pytest.mark.parametrize("target", ["mail", "maildir"])
def test_explaining_a_citizen_s_mail_leaves_no_hash_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """`mailbot explain FILE.eml` is how an operator asks why a mail from the inbox went
    where it went: a citizen's mail. Its text's hash was kept in the cache directory for
    ever, beyond the retention purge (README, "Data kept (privacy)"); a mail or a Maildir
    that is not a labelled corpus is explained without the disk's memory."""
    from mailbot.cli import main

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("MAILBOT_CACHE_DIR", str(cache))
    mail = _english_mail(tmp_path / "english.eml")
    if target == "maildir":
        for sub in ("cur", "new", "tmp"):
            (tmp_path / "inbox" / sub).mkdir(parents=True)
        mail = mail.rename(tmp_path / "inbox" / "cur" / "1.eml").parent.parent
    assert main(["--config", str(ROOT / "rules.yaml"), "explain", str(mail)]) == 0
    kept = cache / langcache.SUBDIRECTORY / langcache.FILE
    rows = _rows(kept.parent) if kept.exists() else 0
    assert rows == 0


def test_corrected_mails_read_again_for_training_leave_no_hash(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """`routing train` keeps lingua's memory for its corpus, but the agents' corrections
    are citizens' mails fetched again from IMAP: a hash of their text kept in the cache
    directory would outlive the retention purge. One English mail, recorded, corrected,
    read again by the training: lingua is asked (no French), and nothing is kept."""
    from test_e2e import citizen_mail, db_rows, poll, write_config

    from mailbot.cli import main
    from mailbot.config import load_config
    from mailbot.routing_commands import corrections_samples

    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    imap_user.append(citizen_mail(1, subject="Residence permit", body=ENGLISH + "\n"))
    assert poll(config, acknowledge_existing=True) == 0
    ((reference,),) = db_rows(config, "SELECT reference FROM messages")
    correct = ["correct", reference, "--service", "etrangers", "--category", "information"]
    assert main(["--config", str(config), *correct]) == 0
    (tmp_path / "cache").mkdir(mode=0o700)
    langcache.remember_on_disk(tmp_path / "cache")
    language.lingua_language("Guten Tag, ich habe eine Frage zu meinem Aufenthaltstitel.")
    assert _rows(tmp_path / "cache") == 1  # the memory works: the training's own corpus
    samples, missing = corrections_samples(load_config(config))
    assert (len(samples), missing) == (1, 0)
    assert samples[0].facts.language == "en"  # lingua did read it
    assert _rows(tmp_path / "cache") == 1  # and nothing of the citizen's mail


def _rows(folder: Path) -> int:
    with closing(sqlite3.connect(folder / langcache.FILE)) as conn:
        return int(conn.execute("SELECT count(*) FROM said").fetchone()[0])


def test_answers_of_an_older_format_are_deleted_from_the_file(tmp_path: Path) -> None:
    """Format 1 remembered the mails `explain` read, citizens' mail included: the file an
    older mailbot left is emptied of them at its first use, not merely never read again."""
    path = tmp_path / langcache.FILE
    with closing(sqlite3.connect(path)) as old:
        old.execute("CREATE TABLE said (key BLOB PRIMARY KEY, language TEXT NOT NULL)")
        old.execute("INSERT INTO said VALUES (?, 'fr')", (b"hash-of-a-citizen-s-mail",))
        old.commit()
    memory = langcache.DiskMemory(path)
    assert memory.recall(ENGLISH) is None
    memory.keep(ENGLISH, "en")
    assert _rows(tmp_path) == 1
    assert memory.recall(ENGLISH) == "en"
    assert langcache.DiskMemory(path).recall(ENGLISH) == "en"  # the new format stays
