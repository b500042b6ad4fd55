"""`mailbot check --connect`: every connection the worker will open, tried once, so that a
wrong password, a firewall or a certificate is found while installing rather than when the
worker runs (IT's finding): the database (its schema version against this mailbot's), each
IMAP account (LOGIN, EXAMINE of the folders it will read) and SMTP (up to AUTH, then QUIT).

Nothing is written anywhere: no migration, no flag changed, no mail sent. The connections
are tried side by side, each bounded by its own timeout, so that a few unreachable servers
cost one timeout, not one each. A reason never holds a password: the servers' words are
redacted (``mailbot.redact``), and a password's source is named, not read out.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from mailbot.config import Config, ImapConfig, ServerConfig
from mailbot.errors import MailbotError
from mailbot.mail import reach
from mailbot.store.engines import shown_url
from mailbot.store.reach import DatabaseState, database_state

DEFAULT_TIMEOUT = 10.0  # seconds: `check --connect` is run by a person waiting for it


@dataclass(frozen=True)
class Tried:
    """One connection tried: ``what`` ("database", "imap general", "smtp"), ``where`` (the
    server or the database's URL, no password), and what was done or why it failed."""

    what: str
    where: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ImapAccount:
    """One IMAP account and the folders the worker reads there (an inbox and its Sent
    folder share one login)."""

    what: str
    config: ImapConfig
    folders: tuple[str, ...]


def imap_accounts(config: Config) -> list[ImapAccount]:
    """Every IMAP account a worker logs in to: each mailbox (its inbox, its Sent folder),
    the tracking mailbox, and the probe's (``supervision.watched_folders`` and the probe)."""
    found = []
    for name, box in config.mailboxes.items():
        folders = (box.imap.folder, *((box.imap.sent_folder,) if box.imap.sent_folder else ()))
        found.append(ImapAccount(f"imap {name}", box.imap, folders))
    if config.tracking is not None:
        imap = config.tracking.imap
        found.append(ImapAccount("imap tracking", imap, (imap.folder,)))
    if config.probe is not None:
        imap = config.probe.imap
        found.append(ImapAccount("imap probe", imap, (imap.folder,)))
    return found


def check_connections(config: Config, timeout: float = DEFAULT_TIMEOUT) -> list[Tried]:
    """Each connection tried, in the configuration's order: the database, the IMAP
    accounts, SMTP. ``timeout`` bounds each network wait (a server's own
    ``timeout_seconds`` when shorter)."""
    tries: list[Callable[[], Tried]] = [
        partial(_database, config, timeout),
        *(partial(_imap, account, timeout) for account in imap_accounts(config)),
        partial(_smtp, config, timeout),
    ]
    with ThreadPoolExecutor(max_workers=len(tries), thread_name_prefix="check") as pool:
        return list(pool.map(lambda attempt: attempt(), tries))


def _bounded(server: ServerConfig, timeout: float) -> float:
    return min(server.timeout_seconds, timeout)


def _server(server: ServerConfig) -> str:
    return f"{server.host}:{server.port} ({server.security})"


def _imap(account: ImapAccount, timeout: float) -> Tried:
    where = _server(account.config)
    wait = _bounded(account.config, timeout)
    try:
        done = reach.imap(account.config, account.folders, wait)
    except MailbotError as exc:
        return Tried(account.what, where, False, str(exc))
    return Tried(account.what, where, True, done)


def _smtp(config: Config, timeout: float) -> Tried:
    where = _server(config.smtp)
    try:
        done = reach.smtp(config.smtp, _bounded(config.smtp, timeout))
    except MailbotError as exc:
        return Tried("smtp", where, False, str(exc))
    return Tried("smtp", where, True, done)


def _database(config: Config, timeout: float) -> Tried:
    try:
        state = database_state(config.database, timeout)
    except MailbotError as exc:
        return Tried("database", shown_url(config.database), False, str(exc))
    ok, detail = database_verdict(state)
    return Tried("database", state.where, ok, detail)


def database_verdict(state: DatabaseState) -> tuple[bool, str]:
    """Whether a worker can use the database as it is, and in words. An older schema is
    fine: the worker's start upgrades it (`mailbot migrate` does it beforehand)."""
    head = state.head
    if state.missing:
        return True, f"not created yet: the worker's first start creates it at schema {head}"
    if state.newer is not None:
        return False, state.newer
    if state.version is None and not state.empty:
        return False, (
            "it holds tables but no schema version: the worker will refuse it"
            " (`mailbot migrate` says why and what to do)"
        )
    if state.read_only is not None:
        return False, f"read-only: {state.read_only}; no mail could be recorded"
    if state.version is None:
        return True, f"empty: the worker's first start creates the schema {head}"
    if state.version != head:
        return True, (
            f"schema {state.version}, this mailbot's is {head}: the worker's start"
            " upgrades it (or `mailbot migrate` beforehand)"
        )
    return True, f"schema {head}, this mailbot's"
