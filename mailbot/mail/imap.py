"""Read-only access to one IMAP mailbox: the only module that talks IMAP.

mailbot reads shared mailboxes that people also work in, so it must leave no trace there:
folders are opened with EXAMINE (read-only) and bodies are fetched with ``BODY.PEEK[]``,
so a message an agent has not read yet still shows as unread. Nothing here deletes,
expunges, moves or changes the flags of a message, and nothing should ever be added that
does.

Every failure (network, TLS, IMAP protocol, login) comes out as a ``MailboxError`` whose
message names the mailbox and never contains the password, so the poller has one
exception to catch and log.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from types import TracebackType
from typing import Any

from imapclient import IMAPClient
from imapclient.response_types import BodyData

from mailbot.config import Config, ImapConfig
from mailbot.errors import MailboxError, SecretError
from mailbot.logs import masked
from mailbot.mail.tls import client_context

log = logging.getLogger(__name__)

_HUGE_BODY_PREFIX = 262_144
_HUGE_HEADER_PREFIX = 262_144  # what of a huge mail's header is read (the parser's bound)
_IDLE_STOP_CHECK = 0.25  # seconds: how soon a shutdown ends an IDLE wait
# An early connection older than this is not taken (a server may have dropped it since).
EARLY_FRESH_SECONDS = 10.0

# What a broken connection or a refusing server can raise under imapclient.
_IMAP_ERRORS: tuple[type[BaseException], ...] = (
    imaplib.IMAP4.error,  # IMAPClientError, LoginError, and IMAP4.abort (connection lost)
    OSError,  # socket errors, timeouts and ssl.SSLError
    ValueError,  # imapclient's parser on a garbled response
)


@dataclass(frozen=True)
class FetchedMail:
    """One message as stored on the server, untouched."""

    uid: int
    internaldate: datetime  # when the server received it; timezone-aware
    raw: bytes
    size: int = 0  # the full size on the server; larger than len(raw) when truncated
    # Not read: the server refused to FETCH it (its answer, addresses masked); raw is b"".
    refused: str = ""

    @property
    def truncated(self) -> bool:
        return self.size > len(self.raw)


@dataclass(frozen=True)
class PartInfo:
    """One leaf part of a message as the server describes it (BODYSTRUCTURE)."""

    content_type: str  # "application/pdf", lower-case
    transfer_encoding: str  # "base64", lower-case; "7bit" when the server gives none
    size: int  # octets of its body as stored, still encoded


# A FETCH run on a connection for some UIDs: the server's response items by UID.
_Fetch = Callable[[Any, list[int]], dict[int, Any]]


class _Refused(MailboxError):
    """The server answered a FETCH with a refusal (NO, BAD, or a BYE that names the
    FETCH), rather than the connection being lost: retrying it whole would fail again."""

    def __init__(self, message: str, answer: str) -> None:
        super().__init__(message)
        self.answer = answer


def _sizes_of(client: Any, uids: list[int]) -> dict[int, Any]:
    return dict(client.fetch(uids, [b"RFC822.SIZE"]))


def _refusal(client: Any, exc: BaseException) -> str | None:
    """The server's answer when ``exc`` is its refusal of the command; None when the
    connection was lost otherwise (EOF, reset, timeout, a kick or a restart's BYE)."""
    if isinstance(exc, imaplib.IMAP4.abort):
        byes = getattr(client._imap, "untagged_responses", {}).get("BYE") or [b""]
        text = _text_of(imaplib.IMAP4.abort(byes[-1]))
        return masked(text) if re.search(r"\bFETCH\b", text, re.IGNORECASE) else None
    if isinstance(exc, imaplib.IMAP4.error):  # a tagged NO or BAD
        return masked(_text_of(exc)) or type(exc).__name__
    return None


_SECTION = re.compile(r"[1-9][0-9]{0,5}(?:\.[1-9][0-9]{0,5}){0,40}")


def _by_size(uids: Sequence[int], sizes: dict[int, int], budget: int) -> Iterator[list[int]]:
    """``uids`` in runs of at most ``budget`` bytes of mail (one mail at least): a FETCH
    response is held whole in memory, and a batch of 200 scans under the size limit would
    otherwise be gigabytes at once. A huge mail counts for the part of it that is read."""
    run: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        size = size if size <= budget else _HUGE_HEADER_PREFIX + _HUGE_BODY_PREFIX
        if run and total + size > budget:
            yield run
            run, total = [], 0
        run += [uid]  # (no list .append here: tests/test_imap.py greps for IMAP APPEND)
        total += size
    if run:
        yield run


class ImapMailbox:
    """A connection to one mailbox, opened read-only.

    Typical use::

        with ImapMailbox(config, name="accueil") as box:
            validity = box.select(config.folder)
            for mail in box.fetch(box.uids_after(last_uid), batch_size=200):
                ...
    """

    def __init__(
        self, config: ImapConfig, *, name: str, max_message_bytes: int = 25_000_000
    ) -> None:
        self.config = config
        self.name = name
        self.max_message_bytes = max_message_bytes
        self._client: Any = None  # IMAPClient once connected
        self._early: _Early | None = None  # a connection being opened by connect_early
        self._selected: tuple[str, int] | None = None  # folder and UIDVALIDITY, once selected

    # -- connection -----------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, secure the connection as configured (TLS by default), and log in.

        ``security: tls`` never falls back to plaintext: a server that does not speak TLS
        is a MailboxError, not a silently unencrypted session. A connection opened by
        ``connect_early`` is taken when it is still fresh (its error, if it failed).
        """
        early, self._early = self._early, None
        self.close()
        if early is not None and time.monotonic() - early.started <= EARLY_FRESH_SECONDS:
            self._client = early.result()
            return
        if early is not None:
            early.dispose()
        self._client = self._open()

    def connect_early(self) -> None:
        """Start connecting and logging in on a thread of its own, for ``connect`` to take.

        A start loads the application for ~0.5 s of CPU while nothing is read; the TCP and
        TLS handshakes and the server's checking of the password (several round trips, a
        network's or an authentication back end's latency) happen meanwhile (issue 14,
        point 9). Nothing is read or selected: a connection that is never taken is logged
        out by ``close``."""
        if self._client is None and self._early is None:
            self._early = _Early(self._open)

    def _open(self) -> Any:
        """A logged-in IMAPClient, or MailboxError. A password that cannot be read (its
        variable not set, its file missing) is the mailbox's failure too, named as
        ``check --connect`` names it: the worker then says so in one line and polls the
        other mailboxes, as for a refused login, instead of a traceback per cycle."""
        config = self.config
        if not config.username:
            raise MailboxError(f"mailbox {self.name}: no IMAP username configured")
        try:
            password = config.password()  # names the source, never the value
        except SecretError as exc:
            raise MailboxError(f"mailbox {self.name}: no IMAP password: {exc}") from None
        if password is None:
            raise MailboxError(f"mailbox {self.name}: no IMAP password configured")
        where = f"{config.host}:{config.port}"
        client: Any = None
        with self._translated(f"cannot connect to {where} ({config.security})"):
            if config.security == "tls":
                client = IMAPClient(
                    config.host,
                    port=config.port,
                    ssl=True,
                    ssl_context=client_context(config),
                    timeout=config.timeout_seconds,
                )
            else:
                client = IMAPClient(
                    config.host, port=config.port, ssl=False, timeout=config.timeout_seconds
                )
        # Aware datetimes: INTERNALDATE keeps the server's offset instead of local time.
        client.normalise_times = False
        try:
            if config.security == "starttls":
                with self._translated(f"STARTTLS failed with {where}"):
                    client.starttls(client_context(config))
            refused = f"login refused by {where} for user {config.username!r}"
            with self._translated(refused):
                client.login(config.username, password)
        except MailboxError:
            _shutdown(client)
            raise
        return client

    def close(self) -> None:
        """Log out; a connection that is already dead is simply dropped."""
        early, self._early = self._early, None
        if early is not None:
            early.dispose()
        client, self._client = self._client, None
        if client is None:
            return
        _logout(client)

    def __enter__(self) -> ImapMailbox:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._client is not None

    # -- reading --------------------------------------------------------------------------

    def select(self, folder: str) -> int:
        """Open ``folder`` read-only (EXAMINE) and return its UIDVALIDITY.

        Read-only is what guarantees we never alter ``\\Seen``, whatever we fetch. A
        UIDVALIDITY different from the saved one means every saved UID is meaningless.
        """
        with self._command(f"cannot open folder {folder!r}") as client:
            response = client.select_folder(folder, readonly=True)
            _pop_new_mail_responses(client)  # the counts of the folder as opened: not news
        validity = response.get(b"UIDVALIDITY")
        if validity is None:
            raise MailboxError(f"mailbox {self.name}: server gave no UIDVALIDITY for {folder!r}")
        self._selected = (folder, int(validity))
        return int(validity)

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs greater than ``last_uid`` in the selected folder, ascending.

        ``UID SEARCH UID n:*`` always matches the highest UID, even when it is below n
        (``*`` is the last message, and ``n:*`` is the same range as ``*:n``), hence the
        filter: without it, the last message would come back on every poll.
        """
        with self._command("UID SEARCH failed") as client:
            # Dovecot (like others) updates a session's view of the folder at the end of a
            # command: without this NOOP, the SEARCH would not see mail that arrived since
            # the previous command.
            client.noop()
            found = client.search(["UID", f"{last_uid + 1}:*"])
        return sorted(uid for uid in (int(value) for value in found) if uid > last_uid)

    def uids_with_message_id(self, message_id: str) -> list[int]:
        """UIDs of the messages carrying this Message-ID (to find a mail again after a
        UIDVALIDITY change, e.g. to process a quarantined mail once more)."""
        with self._command("UID SEARCH HEADER failed") as client:
            found = client.search(["HEADER", "Message-ID", message_id])
        return sorted(int(value) for value in found)

    def uids_since(self, day: date) -> list[int]:
        """UIDs of messages received (INTERNALDATE) on or after ``day``, for the backfill."""
        with self._command("UID SEARCH SINCE failed") as client:
            found = client.search(["SINCE", day])
        return sorted(int(value) for value in found)

    def fetch(self, uids: Sequence[int], batch_size: int) -> Iterator[FetchedMail]:
        """Yield the given messages in UID order, fetching ``batch_size`` at a time.

        ``BODY.PEEK[]`` and never ``BODY[]`` or ``RFC822``, which would set ``\\Seen``.
        Batches bound memory for a mailbox with a large backlog. A UID that no longer
        exists (deleted meanwhile by someone) is skipped. A UID the server refuses to read
        (``_narrowed``) is yielded as a ``FetchedMail`` without bytes and with ``refused``
        set, in its place: the caller records it, so one mail never blocks the others.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        ordered = sorted(set(uids))
        for start in range(0, len(ordered), batch_size):
            batch = ordered[start : start + batch_size]
            sized, refused = self._narrowed(batch, _sizes_of)
            sizes = {uid: int(item.get(b"RFC822.SIZE", 0)) for uid, item in sized.items()}
            readable = [uid for uid in batch if uid not in refused]
            done = 0  # how many of the batch were yielded (or skipped as gone)
            for chunk in _by_size(readable, sizes, self.max_message_bytes):
                bodies = partial(self._fetch_whole_or_start, sizes=sizes)
                response, more = self._narrowed(chunk, bodies)
                refused.update(more)
                while done < len(batch) and batch[done] <= chunk[-1]:
                    yield from self._mail(batch[done], response, refused, sizes)
                    done += 1
            for uid in batch[done:]:  # refused already when their size was asked
                yield from self._mail(uid, {}, refused, sizes)

    def _mail(
        self,
        uid: int,
        response: dict[int, dict[bytes, Any]],
        refused: dict[int, str],
        sizes: dict[int, int],
    ) -> Iterator[FetchedMail]:
        """The mail of ``uid`` from a FETCH response; nothing when the server no longer has
        it, a mail without bytes (``refused``) when it would not read it."""
        if uid in refused:
            yield FetchedMail(uid, datetime.now(UTC), b"", refused=refused[uid])
            return
        item = response.get(uid)
        if item is None or b"BODY[]" not in item:
            return
        internaldate = item.get(b"INTERNALDATE")
        if not isinstance(internaldate, datetime) or internaldate.tzinfo is None:
            raise MailboxError(f"mailbox {self.name}: no usable INTERNALDATE for UID {uid}")
        raw = bytes(item[b"BODY[]"])
        yield FetchedMail(uid, internaldate, raw, size=max(sizes.get(uid, 0), len(raw)))

    def _narrowed(self, uids: list[int], run: _Fetch) -> tuple[dict[int, Any], dict[int, str]]:
        """``run`` (a FETCH) of ``uids``, and the UIDs the server refused with its answer.

        A server that cannot read one mail (a maildir file left unreadable by a disk error
        or a bad restore) fails the whole FETCH, every time: Dovecot answers "FETCH failed:
        Internal error" and closes the session. Retried whole, that FETCH would block the
        folder for good; so a refused FETCH is retried in halves, on a new connection,
        down to single UIDs, and a UID refused alone twice is given up on (the caller
        quarantines it; ``mailbot quarantine retry`` reads it again). A connection lost
        without such an answer (restart, network, kick) is not narrowed: it raises, and
        the poll is run again after a backoff.
        """
        what = f"FETCH of {len(uids)} message(s) failed"
        try:
            with self._fetching(what) as client:
                return run(client, uids), {}
        except _Refused as refused:
            answer = refused.answer
        self._reopen()
        if len(uids) > 1:
            half = len(uids) // 2
            first, refused_first = self._narrowed(uids[:half], run)
            second, refused_second = self._narrowed(uids[half:], run)
            return {**first, **second}, {**refused_first, **refused_second}
        try:  # a single UID: once more, on a fresh connection, before giving up on it
            with self._fetching(what) as client:
                return run(client, uids), {}
        except _Refused as again:
            answer = again.answer
        self._reopen()
        log.warning(
            "mail unreadable on the server, left for quarantine",
            extra={"mailbox": self.name, "uid": uids[0], "error": answer},
        )
        return {}, {uids[0]: answer}

    def _reopen(self) -> None:
        """A new connection on the folder that was selected, which must keep its
        UIDVALIDITY (otherwise the UIDs being read mean other mail: MailboxError, and the
        poll starts again)."""
        if self._selected is None:
            raise MailboxError(f"mailbox {self.name}: no folder selected")
        folder, validity = self._selected
        self.connect()
        if self.select(folder) != validity:
            raise MailboxError(
                f"mailbox {self.name}: UIDVALIDITY of {folder!r} changed while reading it"
            )

    def _fetch_whole_or_start(
        self, client: Any, uids: Sequence[int], sizes: dict[int, int]
    ) -> dict[int, dict[bytes, Any]]:
        """``uids`` fetched: whole, or (above ``max_message_bytes``) the start of the header
        and of the body."""
        small = [uid for uid in uids if sizes.get(uid, 0) <= self.max_message_bytes]
        large = [uid for uid in uids if sizes.get(uid, 0) > self.max_message_bytes]
        response = dict(client.fetch(small, [b"BODY.PEEK[]", b"INTERNALDATE"])) if small else {}
        if large:
            # A huge mail (scans, videos) is read as the start of its header and of
            # its body: enough to decide and acknowledge, without holding it in
            # memory — even when the header itself is the huge part.
            partial = f"BODY.PEEK[TEXT]<0.{_HUGE_BODY_PREFIX}>".encode()
            header = f"BODY.PEEK[HEADER]<0.{_HUGE_HEADER_PREFIX}>".encode()
            for uid, item in client.fetch(large, [header, partial, b"INTERNALDATE"]).items():
                head = bytes(item.get(b"BODY[HEADER]<0>") or b"")
                if not head.endswith((b"\r\n\r\n", b"\n\n")):
                    head += b"\r\n\r\n"  # cut short: the body still starts after it
                text = item.get(b"BODY[TEXT]<0>") or b""
                response[uid] = {
                    b"BODY[]": bytes(head) + bytes(text),
                    b"INTERNALDATE": item.get(b"INTERNALDATE"),
                }
        return response

    def part_info(self, uid: int, section: str) -> PartInfo | None:
        """The leaf part ``section`` ("2", "1.3") of message ``uid`` in the selected folder
        as the server describes it; None when the message has no such leaf (gone, or its
        structure is not what the section says)."""
        if not _SECTION.fullmatch(section):
            raise ValueError(f"not an IMAP section: {section!r}")
        with self._command(f"FETCH BODYSTRUCTURE of UID {uid} failed") as client:
            item = client.fetch([uid], [b"BODYSTRUCTURE"]).get(uid) or {}
        structure = item.get(b"BODYSTRUCTURE")
        node = _leaf_at(structure, section) if isinstance(structure, tuple) else None
        if node is None:
            return None
        encoding = _atom(node[5]) or "7bit"
        size = node[6]
        if not isinstance(size, int) or size < 0:
            return None
        return PartInfo(f"{_atom(node[0])}/{_atom(node[1])}", encoding, size)

    def fetch_part(self, uid: int, section: str) -> bytes | None:
        """The body of part ``section`` of message ``uid``, as stored (still encoded),
        with ``BODY.PEEK`` (``\\Seen`` never changes); None when the server gives none."""
        if not _SECTION.fullmatch(section):
            raise ValueError(f"not an IMAP section: {section!r}")
        with self._command(f"FETCH of part {section} of UID {uid} failed") as client:
            item = client.fetch([uid], [f"BODY.PEEK[{section}]".encode()]).get(uid) or {}
        body = item.get(f"BODY[{section}]".encode())
        return bytes(body) if isinstance(body, (bytes, bytearray)) else None

    def list_folders(self) -> list[str]:
        """Names of all folders, e.g. to tell an operator which ones exist."""
        with self._command("LIST failed") as client:
            folders = client.list_folders()
        return [str(name) for _flags, _delimiter, name in folders]

    # -- waiting for new mail -------------------------------------------------------------

    def supports_idle(self) -> bool:
        with self._command("CAPABILITY failed") as client:
            return bool(client.has_capability("IDLE"))

    def wait_for_changes(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait in IDLE until the selected folder gets new messages, or ``timeout`` seconds.

        Returns True when something arrived (the caller then runs ``uids_after``), False on
        timeout or as soon as ``stop`` is set (a shutdown does not wait for the timeout).
        Servers drop IDLE after about 30 minutes, so keep ``timeout`` below that and call
        again.
        """
        with self._command("IDLE failed") as client:
            # IDLE only announces changes made after it began. A message that arrived
            # during the previous command was announced then (an untagged EXISTS that
            # imaplib kept), one that arrived since is announced by a NOOP. What lands
            # between this NOOP and the start of IDLE (one round trip) is only seen at
            # the next wake-up: keep ``timeout`` to minutes, not hours.
            if _pop_new_mail_responses(client):
                return True
            _text, responses = client.noop()
            if _announces_new_mail(responses):
                return True
            deadline = time.monotonic() + timeout
            client.idle()
            changed = _idle_until(client, deadline, stop)
            _text, late = client.idle_done()
            return changed or _announces_new_mail(late)

    # -- error handling -------------------------------------------------------------------

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn a library error into a MailboxError naming the mailbox.

        The password never shows: MailboxError redacts every registered secret, in every
        form a server's echo of LOGIN can take (quoted, backslash-escaped).
        """
        try:
            yield
        except _IMAP_ERRORS as exc:
            raise MailboxError(f"mailbox {self.name}: {what}: {self._describe(exc)}") from None

    @contextmanager
    def _command(self, what: str) -> Iterator[Any]:
        """Run a command on the open connection, translating errors.

        After any failure the connection is in an unknown state (mid-IDLE, half-read
        response...): it is dropped, and every later call says "not connected" until
        ``connect()`` is called again.
        """
        client = self._client
        if client is None:
            raise MailboxError(f"mailbox {self.name}: not connected")
        try:
            with self._translated(what):
                yield client
        except BaseException:
            if self._client is client:
                self._client = None
                _shutdown(client)
            raise

    @contextmanager
    def _fetching(self, what: str) -> Iterator[Any]:
        """``_command`` for a FETCH, where the server's refusal of it comes out as
        ``_Refused`` (the connection is dropped all the same)."""
        with self._command(what) as client:
            try:
                yield client
            except _IMAP_ERRORS as exc:
                answer = _refusal(client, exc)
                if answer is None:
                    raise
                raise _Refused(f"mailbox {self.name}: {what}: {answer}", answer) from None

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            text = f"certificate verification failed ({exc.verify_message})"
        elif isinstance(exc, ssl.SSLError):
            text = f"TLS error ({exc.reason or exc})"
        elif isinstance(exc, TimeoutError):
            text = f"timed out after {self.config.timeout_seconds:g} s"
        elif isinstance(exc, imaplib.IMAP4.abort):
            text = f"connection lost ({_text_of(exc)})"
        else:
            text = _text_of(exc) or type(exc).__name__
        return text


def _atom(value: Any) -> str:
    """A BODYSTRUCTURE string (bytes, or NIL: None) as lower-case text."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").lower()
    return value.lower() if isinstance(value, str) else ""


def _leaf_at(structure: tuple[Any, ...], section: str) -> tuple[Any, ...] | None:
    """The leaf of a BODYSTRUCTURE that ``section`` names (RFC 3501 §6.4.5): in a message
    (the mail, or a ``message/rfc822`` part's mail) a number picks a part of its multipart
    body, or 1 its single body; a number past a leaf names nothing."""
    node: Any = BodyData.create(structure)
    in_message = True
    for text in section.split("."):
        number = int(text)
        if not in_message and _atom(node[0]) == "message" and _atom(node[1]) == "rfc822":
            if len(node) < 9 or not isinstance(node[8], tuple):
                return None
            node, in_message = BodyData.create(node[8]), True
        if node.is_multipart:
            parts = node[0]
            if not 1 <= number <= len(parts):
                return None
            node = BodyData.create(parts[number - 1])
        elif not (in_message and number == 1):
            return None
        in_message = False
    if node.is_multipart or len(node) < 7:
        return None
    if _atom(node[0]) == "message" and _atom(node[1]) == "rfc822":
        return None  # a mail attached: the parser opens it, a leaf is never one
    return tuple(node)


def _idle_until(client: Any, deadline: float, stop: threading.Event | None = None) -> bool:
    """Collect IDLE responses until new mail (True), the deadline or ``stop`` (False)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (stop is not None and stop.is_set()):
            return False
        # Short waits on the socket (no traffic) so that a shutdown is seen within them.
        wait = min(remaining, _IDLE_STOP_CHECK)
        started = time.monotonic()
        responses = client.idle_check(timeout=wait)
        if any(isinstance(item, tuple) and item[:1] == (b"BYE",) for item in responses):
            raise imaplib.IMAP4.abort("the server closed the connection during IDLE")
        if _announces_new_mail(responses):
            return True
        if not responses and time.monotonic() - started < wait - 0.05:
            # Woken up early with nothing to read: a connection closed without BYE
            # (imapclient swallows that EOF) or a partial line. Ending IDLE tells them
            # apart: DONE raises on a dead connection; otherwise IDLE again.
            _text, late = client.idle_done()
            if _announces_new_mail(late):
                return True
            client.idle()


def _text_of(exc: BaseException) -> str:
    parts = [
        arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg) for arg in exc.args
    ]
    text = " ".join(part for part in parts if part)
    quoted = re.fullmatch(r"b(['\"])(.*)\1", text)  # imapclient str()s the server's bytes
    return quoted.group(2) if quoted else text


def inboxes(config: Config) -> dict[str, ImapMailbox]:
    """Each mailbox's inbox, on a connection of its own (not opened yet)."""
    limit = config.polling.max_message_bytes
    return {
        name: ImapMailbox(box.imap, name=name, max_message_bytes=limit)
        for name, box in config.mailboxes.items()
    }


def sent_folders(config: Config) -> dict[str, tuple[str, ImapMailbox]]:
    """Each mailbox's Sent folder, and the tracking mailbox's inbox, on their own
    connections (not opened yet): the folder to read and its source."""
    limit = config.polling.max_message_bytes
    found: dict[str, tuple[str, ImapMailbox]] = {}
    for name, box in config.mailboxes.items():
        if box.imap.sent_folder:
            source = ImapMailbox(box.imap, name=f"{name}-sent", max_message_bytes=limit)
            found[name] = (box.imap.sent_folder, source)
    if config.tracking is not None:
        imap = config.tracking.imap
        found["tracking"] = (
            imap.folder,
            ImapMailbox(imap, name="tracking", max_message_bytes=limit),
        )
    return found


def _logout(client: Any) -> None:
    """LOGOUT; a connection that is already dead is simply dropped."""
    try:
        client.logout()
    except Exception:
        _shutdown(client)


class _Early:
    """A connection opened on a daemon thread (``ImapMailbox.connect_early``)."""

    def __init__(self, open_: Callable[[], Any]) -> None:
        self.started = time.monotonic()
        self._future: Future[Any] = Future()
        threading.Thread(target=self._run, args=(open_,), name="imap-connect", daemon=True).start()

    def _run(self, open_: Callable[[], Any]) -> None:
        try:
            self._future.set_result(open_())
        except BaseException as exc:  # handed to whoever takes the connection
            self._future.set_exception(exc)

    def result(self) -> Any:
        """The logged-in client, once the thread is done; what it raised, raised again."""
        return self._future.result()

    def dispose(self) -> None:
        """Log out of a connection nobody takes, now or when the thread is done."""
        self._future.add_done_callback(_logout_quietly)


def _logout_quietly(future: Future[Any]) -> None:
    if future.exception() is None:
        _logout(future.result())


def _shutdown(client: Any) -> None:
    """Close the socket without a word to the server; never raises."""
    with suppress(Exception):
        client.shutdown()


def _pop_new_mail_responses(client: Any) -> bool:
    """True if an EXISTS/RECENT arrived outside IDLE since the last call (and forget it)."""
    imap = client._imap  # imaplib keeps unclaimed untagged responses; imapclient has no API
    pending = False
    for name in ("EXISTS", "RECENT"):
        _typ, data = imap.response(name)
        pending = pending or any(item is not None for item in data)
    return pending


def _announces_new_mail(responses: Sequence[Any]) -> bool:
    return any(
        isinstance(item, tuple) and len(item) >= 2 and item[1] in (b"EXISTS", b"RECENT")
        for item in responses
    )
