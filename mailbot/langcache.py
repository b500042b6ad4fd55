"""What lingua said of a text, kept on disk for the commands that read the same mails
again and again.

``mailbot explain`` on a folder, ``routing train`` and ``routing evaluate`` read the labelled
corpus at every run: lingua then loads its models (~4.5 s of CPU) to say again what it said
last time (0.4 ms a text). Its answers are kept in the cache directory
(``mailbot.cachedir``, sub-directory ``languages``), in one SQLite file, under a hash of
the text, lingua's version and the languages and threshold asked: another version or
setting is another key, so an answer is never stale. Only those offline commands use it,
and only for the labelled corpora (``labelled_corpus``), never the worker nor a citizen's
mail (one explained from the inbox, the corrections ``routing train`` fetches again): the
hash of its text would outlive the retention purge. A file that cannot be opened, read or
written only means asking lingua.
"""

from __future__ import annotations

import hashlib
import sqlite3
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mailbot.cachedir import private_subdirectory
from mailbot.core import language

SUBDIRECTORY = "languages"
FILE = "said.sqlite3"
# Bump when what is kept changes: the file's answers of another format are deleted (2: a
# citizen's mail is no longer remembered; format 1's file may hold hashes of some).
FORMAT = 2


@lru_cache(maxsize=1)
def _namespace() -> bytes:
    try:
        lingua = version("lingua-language-detector")
    except PackageNotFoundError:
        lingua = "?"
    asked = ",".join(language.LANGUAGES)
    return f"{FORMAT}\0{lingua}\0{asked}\0{language.MIN_CONFIDENCE}\0".encode()


class DiskMemory:
    """lingua's answers in a SQLite file shared by the processes (WAL: readers never
    wait for a writer). Not synced to disk: a lost answer is only asked again."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._broken = False

    def recall(self, sample: str) -> str | None:
        row = self._run("SELECT language FROM said WHERE key = ?", (self._key(sample),))
        return None if row is None else str(row[0])

    def keep(self, sample: str, said: str) -> None:
        self._run("INSERT OR IGNORE INTO said VALUES (?, ?)", (self._key(sample), said))

    @staticmethod
    def _key(sample: str) -> bytes:
        text = sample.encode("utf-8", "surrogatepass")
        return hashlib.sha256(_namespace() + text).digest()[:16]

    def _run(self, sql: str, values: tuple[bytes, ...] | tuple[bytes, str]) -> tuple[str] | None:
        if self._broken:
            return None
        try:
            db = self._db or self._open()
            with db:
                found: tuple[str] | None = db.execute(sql, values).fetchone()
            return found
        except sqlite3.Error:
            self._broken = True  # asked of lingua from now on
            return None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=2)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA secure_delete=ON")
        with db:
            if db.execute("PRAGMA user_version").fetchone()[0] != FORMAT:
                # Another format's answers are never recalled (their keys differ): deleted,
                # not left in the file (format 1 remembered the mails ``explain`` read).
                db.execute("DROP TABLE IF EXISTS said")
                db.execute(f"PRAGMA user_version = {FORMAT}")
            db.execute(
                "CREATE TABLE IF NOT EXISTS said (key BLOB PRIMARY KEY, language TEXT NOT NULL)"
                " WITHOUT ROWID"
            )
        self._db = db
        return db


LABELS = "labels.csv"  # what makes a folder a labelled corpus (``routing train --labelled``)


def labelled_corpus(path: Path) -> bool:
    """Whether ``path`` is a labelled corpus or one of its mails (a folder with its
    ``labels.csv``): mails written for training and tests, read again at every run, that
    may be remembered. Any other mail or Maildir is likely a citizen's, from the inbox: not
    remembered."""
    folder = path if path.is_dir() else path.parent
    return (folder / LABELS).is_file()


def remember_on_disk(directory: Path | None = None) -> None:
    """Give lingua the disk's memory, when the cache directory is safe to use."""
    folder = directory if directory is not None else private_subdirectory(SUBDIRECTORY)
    if folder is not None:
        language.remember_with(DiskMemory(folder / FILE))
