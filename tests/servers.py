"""Real mail servers for the tests: a private Dovecot (IMAP) and an aiosmtpd (SMTP).

Why real servers rather than mocks: what mailbot must get right with IMAP is exactly what
mocks get wrong — that ``BODY.PEEK[]`` leaves ``\\Seen`` alone, the ``UID n:*`` quirk, what
happens to UIDs when UIDVALIDITY changes, IDLE, a connection dropped by the server. Dovecot
answers the way production servers do.

The Dovecot instance is private: its own configuration, base_dir (sockets, pid file), state,
log and maildirs, all under one temporary directory, listening on a free loopback port.
It never touches /etc/dovecot or a system-wide Dovecot, and stopping it leaves no process
behind. Each user has its own passwd-file, read by Dovecot at login, so each test can
have a fresh user (hence a fresh, empty mailbox) without restarting the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import grp
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from imapclient import IMAPClient

from mailbot.config import ImapConfig, SmtpConfig

HOST = "127.0.0.1"
_DELIVERIES = itertools.count()  # unique, increasing Maildir file names
SETUP_HINT = "run scripts/setup-tests to install the test dependencies (Dovecot, aiosmtpd...)"


class ServerUnavailableError(RuntimeError):
    """A test server cannot be started: the tests must fail, loudly, never be skipped."""


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate and key issued by a private test CA, and that CA's certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def issue_tls(directory: Path, *hosts: str, ca: trustme.CA | None = None) -> TlsFiles:
    """A certificate for ``hosts`` (names or IP addresses) from ``ca`` (a new CA by default)."""
    ca = ca or trustme.CA()
    directory.mkdir(parents=True, exist_ok=True)
    server = ca.issue_cert(*hosts)
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca_file))
    server.cert_chain_pems[0].write_to_path(str(files.cert_file))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(files.cert_file), append=True)
    server.private_key_pem.write_to_path(str(files.key_file))
    for path in (files.ca_file, files.cert_file, files.key_file):
        path.chmod(0o644)  # Dovecot reads them after dropping privileges
    return files


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_dovecot() -> str:
    """Path of the dovecot binary, or a ServerUnavailableError telling how to install it."""
    for candidate in (shutil.which("dovecot"), "/usr/sbin/dovecot"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerUnavailableError(f"the dovecot binary was not found: {SETUP_HINT}")


def _doveadm_for(dovecot: str) -> str:
    found = shutil.which("doveadm") or str(Path(dovecot).with_name("doveadm"))
    for candidate in (found, "/usr/bin/doveadm"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServerUnavailableError(f"the doveadm binary was not found: {SETUP_HINT}")


@dataclass(frozen=True)
class StoredMessage:
    """A message as Dovecot holds it, read without altering it (for assertions and resets)."""

    uid: int
    flags: frozenset[str]
    internaldate: datetime
    raw: bytes


@dataclass(frozen=True)
class MailUser:
    """A Dovecot user with its own empty mailbox; shortcuts to the server's helpers."""

    server: DovecotServer
    name: str
    password: str

    def imap_config(self, folder: str = "INBOX", *, sent_folder: str | None = None) -> ImapConfig:
        return self.server.imap_config(self.name, folder, sent_folder=sent_folder)

    def append(
        self,
        raw: bytes,
        folder: str = "INBOX",
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> int:
        return self.server.append(self.name, folder, raw, flags=flags, internaldate=internaldate)

    def deliver(self, raws: Sequence[bytes]) -> None:
        self.server.deliver(self.name, raws)

    def flags(self, folder: str = "INBOX") -> dict[int, frozenset[str]]:
        return self.server.flags(self.name, folder)

    def uids(self, folder: str = "INBOX") -> list[int]:
        return self.server.uids(self.name, folder)

    def messages(self, folder: str = "INBOX") -> list[StoredMessage]:
        return self.server.messages(self.name, folder)

    def message_count(self, folder: str = "INBOX") -> int:
        return self.server.message_count(self.name, folder)

    def uid_validity(self, folder: str = "INBOX") -> int:
        return self.server.uid_validity(self.name, folder)

    def create_folder(self, folder: str) -> None:
        self.server.create_folder(self.name, folder)

    def reset_uidvalidity(self, folder: str = "INBOX") -> int:
        return self.server.reset_uidvalidity(self.name, folder)

    def drop_connections(self) -> None:
        self.server.drop_connections(self.name)

    @contextlib.contextmanager
    def unreadable(self, marker: bytes) -> Iterator[Path]:
        """The INBOX mail containing ``marker`` made unreadable for Dovecot (owner root,
        mode 000: a disk error, a bad restore), readable again on exit. Dovecot then fails
        every FETCH of its body: "FETCH failed: Internal error occurred", and a BYE."""
        maildir = self.server.home(self.name) / "Maildir"
        (path,) = [
            p for p in (*maildir.glob("new/*"), *maildir.glob("cur/*")) if marker in p.read_bytes()
        ]
        before = path.stat()
        os.chown(path, 0, 0)
        path.chmod(0)
        try:
            yield path
        finally:
            if not path.exists():  # moved from new/ to cur/ meanwhile (flags in its name)
                (path,) = maildir.glob(f"*/{path.name.split(':')[0]}*")
            os.chown(path, before.st_uid, before.st_gid)
            path.chmod(before.st_mode & 0o7777)

    def connect(self) -> IMAPClient:
        return self.server.connect(self.name)


def _faked_clock_settings() -> str:
    """Under libfaketime (the suite run at another date: ``FAKETIME`` and ``LD_PRELOAD`` in
    the environment), Dovecot's imap processes on the same clock as the tests: Dovecot
    clears its children's environment, so they stamped INTERNALDATE with the real date
    while the tests and mailbot lived at the faked one. Nothing without a faked clock."""
    if not faked_clock():
        return ""
    names = [n for n in sorted(os.environ) if n == "LD_PRELOAD" or n.startswith("FAKETIME")]
    # Dovecot's own default list, then the faked clock's (not its shared memory: the mail
    # processes run as other users; a relative FAKETIME needs none). A file's time is read
    # as written: an INTERNALDATE is a file's mtime, set from the faked clock already.
    kept = ["TZ", "CORE_OUTOFMEM", "CORE_ERROR", "LISTEN_PID", "LISTEN_FDS", "NO_FAKE_STAT=1"]
    return "import_environment = " + " ".join(
        [*kept, *(n for n in names if n != "FAKETIME_SHARED")]
    )


def faked_clock() -> bool:
    """Whether the tests run under libfaketime (``FAKETIME`` in the environment)."""
    return "FAKETIME" in os.environ


class DovecotServer:
    """A private Dovecot IMAP server on a free loopback port, in plaintext (``ssl = no``).

    With ``tls`` (a certificate from a private CA, see ``issue_tls``) it has ``ssl = required``
    instead: STARTTLS on ``port``, implicit TLS on ``tls_port``, no login in plaintext.

    Use as a context manager, or call ``start()`` / ``stop()``. Must run as root: Dovecot
    switches to the ``mail`` uid for mailboxes and to ``dovenull`` for the login processes.
    """

    def __init__(
        self, root: Path | None = None, *, port: int | None = None, tls: TlsFiles | None = None
    ) -> None:
        self.tls = tls
        self.tls_port = free_port() if tls is not None else 0
        self.dovecot_path = find_dovecot()
        self.doveadm_path = _doveadm_for(self.dovecot_path)
        if os.geteuid() != 0:
            raise ServerUnavailableError(
                "the test Dovecot must be started as root (it switches to the 'mail' user)"
            )
        try:
            self.mail_uid = pwd.getpwnam("mail").pw_uid
            self.mail_gid = grp.getgrnam("mail").gr_gid
            for account in ("dovenull", "dovecot"):
                pwd.getpwnam(account)
        except KeyError as exc:
            raise ServerUnavailableError(f"missing system account {exc}: {SETUP_HINT}") from None
        # Short path on purpose: Dovecot's unix sockets live under base_dir (108-byte limit).
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-")) if root is None else root
        self.host = HOST
        self.port = port or free_port()
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.passwd_dir = self.root / "passwd.d"
        self.mail_root = self.root / "mail"
        self.secrets_dir = self.root / "secrets"
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._users: dict[str, str] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._prepare()

    # -- lifecycle ------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Dovecot's mail processes (uid mail) must reach their home under the root.
        self.root.chmod(0o755)
        for directory in ("run", "state"):
            (self.root / directory).mkdir(exist_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        os.chown(self.mail_root, self.mail_uid, self.mail_gid)
        self.mail_root.chmod(0o755)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        self.passwd_dir.mkdir(exist_ok=True)
        self.passwd_dir.chmod(0o755)
        self._probe_user = "probe"
        self.add_user(self._probe_user, secrets.token_hex(8))
        self.config_path.write_text(self._config_text(), encoding="utf-8")

    def _config_text(self) -> str:
        return f"""# Private Dovecot for mailbot's tests (generated by tests/servers.py).
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log_path}
instance_name = mailbot-test-{self.port}
protocols = imap
listen = {self.host}
{self._ssl_settings()}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_plugins =
mail_location = maildir:~/Maildir
mail_fsync = never
# IDLE: notice changes made by other connections within a second even without inotify.
mailbox_idle_check_interval = 1 secs
{_faked_clock_settings()}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_dir}/%u
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={self.mail_root}/%u
}}
# Failed logins (tests of wrong passwords) must not slow down the next tests' logins.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.tls_port}
  }}
}}
"""

    def _ssl_settings(self) -> str:
        if self.tls is None:
            return "ssl = no"
        return f"ssl = required\nssl_cert = <{self.tls.cert_file}\nssl_key = <{self.tls.key_file}"

    def start(self, timeout: float = 15.0) -> None:
        """Start Dovecot in the foreground (as a child process) and wait until LOGIN works."""
        if self._process is not None:
            return
        started = time.monotonic()
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [self.dovecot_path, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = started + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise ServerUnavailableError(
                    f"dovecot exited with status {code} at startup:\n{self.log_tail()}"
                )
            try:
                with self.connect(self._probe_user, timeout=2.0):
                    pass
            except Exception as exc:  # not listening yet, or still starting its services
                last_error = exc
                time.sleep(0.05)
            else:
                self.startup_seconds = time.monotonic() - started
                return
        self.stop()
        raise ServerUnavailableError(
            f"dovecot did not accept a LOGIN on {self.host}:{self.port} within {timeout} s "
            f"(last error: {last_error!r}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop Dovecot and all its children (imap, auth, login... processes)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # the master stops its services (about a second)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        # An imap process whose client is still connected outlives the master: end it,
        # and anything else left in the instance's process group (zombies waiting for
        # init to reap them do not count: they are already dead).
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if not _live_group_members(process.pid):
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            deadline = time.monotonic() + grace
            while _live_group_members(process.pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    def restart(self) -> None:
        """Stop and start again on the same port, keeping users and mail.

        Every client connection is cut, as after a real server restart.
        """
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop, and remove the temporary directory if this object created it."""
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no dovecot log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- users ----------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Create (or change the password of) a user; no restart needed."""
        if not re.fullmatch(r"[A-Za-z0-9._@+-]+", name) or ":" in password or "\n" in password:
            raise ValueError(f"unusable test user name or password for {name!r}")
        with self._lock:
            self._users[name] = password
            # One passwd-file per user: Dovecot stats a passwd-file at most once a second,
            # so a user added to a shared file could stay unknown for up to a second.
            temporary = self.passwd_dir / f".{name}.tmp"
            temporary.write_text(f"{name}:{{PLAIN}}{password}::::::\n", encoding="utf-8")
            temporary.chmod(0o644)
            os.replace(temporary, self.passwd_dir / name)
            secret = self.secrets_dir / name
            secret.write_text(password, encoding="utf-8")
            secret.chmod(0o600)

    def new_user(self, prefix: str = "user") -> MailUser:
        """A user with a unique name and random password, hence a fresh empty mailbox."""
        name = f"{prefix}{next(self._counter)}"
        password = "pw-" + secrets.token_hex(8)
        self.add_user(name, password)
        return MailUser(self, name, password)

    def copy_user(self, source: str, prefix: str = "user") -> MailUser:
        """A new user whose mailbox is a file copy of ``source``'s, as a restore of a backup
        would leave it: the same mails, flags, INTERNALDATEs, UIDs and UIDVALIDITY, so that
        a database that read ``source`` reads the copy as the same mailbox. Cheaper than
        filling and reading a mailbox again for every test; ``source`` must have no session
        open (``drop_connections``), or the copy could catch Dovecot's files mid-update."""
        user = self.new_user(prefix)
        target = self.home(user.name)
        shutil.copytree(self.home(source), target)  # copy2: mtimes (INTERNALDATEs) kept
        for directory, _, files in os.walk(target):
            os.chown(directory, self.mail_uid, self.mail_gid)
            for name in files:
                os.chown(os.path.join(directory, name), self.mail_uid, self.mail_gid)
        return user

    def password(self, user: str) -> str:
        return self._users[user]

    def home(self, user: str) -> Path:
        return self.mail_root / user

    def imap_config(
        self, user: str, folder: str = "INBOX", *, sent_folder: str | None = None
    ) -> ImapConfig:
        """An ImapConfig for mailbot pointing at this server, password read from a file.

        With TLS: implicit TLS on ``tls_port``, trusting the test CA.
        """
        secured: dict[str, Any] = {"port": self.port, "security": "none"}
        if self.tls is not None:
            secured = {"port": self.tls_port, "security": "tls", "ca_file": self.tls.ca_file}
        return ImapConfig(
            host=self.host,
            **secured,
            username=user,
            password_file=self.secrets_dir / user,
            timeout_seconds=10,
            folder=folder,
            sent_folder=sent_folder,
        )

    # -- direct IMAP access (the test's side, not mailbot's) ------------------------------

    def connect(self, user: str, *, timeout: float = 10.0) -> IMAPClient:
        """A logged-in IMAPClient for ``user``; the caller closes it (use ``with``)."""
        if self.tls is None:
            client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        else:
            context = ssl.create_default_context(cafile=str(self.tls.ca_file))
            client = IMAPClient(
                self.host, port=self.tls_port, ssl=True, ssl_context=context, timeout=timeout
            )
        client.normalise_times = False
        try:
            client.login(user, self._users[user])
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    @contextlib.contextmanager
    def _session(self, user: str) -> Iterator[IMAPClient]:
        client = self.connect(user)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def create_folder(self, user: str, folder: str) -> None:
        with self._session(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> int:
        """APPEND a message (creating the folder if needed); returns its UID. Under a faked
        clock the INTERNALDATE is always given: Dovecot's own is the kernel's file time,
        the real clock's."""
        if internaldate is None and faked_clock():
            internaldate = datetime.now(UTC)
        with self._session(user) as client:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=tuple(flags), msg_time=internaldate)
        text = response.decode() if isinstance(response, bytes) else str(response)
        match = re.search(r"APPENDUID \d+ (\d+)", text)
        if not match:
            raise AssertionError(f"no APPENDUID in the APPEND response {text!r}")
        return int(match.group(1))

    def deliver(self, user: str, raws: Sequence[bytes]) -> None:
        """Deliver many mails at once into the user's INBOX, as an MTA's maildir delivery
        would: files in Maildir/new/, in the given order (names sort as they are given).

        Much faster than APPEND for thousands of mails, and takes any bytes (NUL, lone CR,
        tens of megabytes) exactly as given. Dovecot assigns UIDs at its next sync.
        """
        maildir = self.home(user) / "Maildir"
        for directory in (
            self.home(user),
            maildir,
            maildir / "cur",
            maildir / "new",
            maildir / "tmp",
        ):
            directory.mkdir(exist_ok=True)
            os.chown(directory, self.mail_uid, self.mail_gid)
        now = time.time()
        stamp = int(now)
        for raw in raws:
            name = f"{stamp}.M{next(_DELIVERIES):09d}P{os.getpid()}.mailbot-test"
            temporary = maildir / "tmp" / name
            temporary.write_bytes(raw)
            # The file's time is its INTERNALDATE: the clock's, faked or not (the kernel's
            # is the real one's).
            os.utime(temporary, (now, now))
            os.chown(temporary, self.mail_uid, self.mail_gid)
            os.replace(temporary, maildir / "new" / name)

    def messages(self, user: str, folder: str = "INBOX") -> list[StoredMessage]:
        """Every message of the folder in UID order, read with EXAMINE + BODY.PEEK[]."""
        with self._session(user) as client:
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search(["ALL"]))
            if not uids:
                return []
            data = client.fetch(uids, [b"FLAGS", b"INTERNALDATE", b"BODY.PEEK[]"])
        return [
            StoredMessage(
                uid=uid,
                flags=_clean_flags(data[uid][b"FLAGS"]),
                internaldate=data[uid][b"INTERNALDATE"],
                raw=data[uid][b"BODY[]"],
            )
            for uid in uids
            if uid in data
        ]

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, frozenset[str]]:
        """UID -> flags (``\\Recent`` left out: it is per-session, not stored)."""
        with self._session(user) as client:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            if not uids:
                return {}
            data = client.fetch(uids, [b"FLAGS"])
        return {uid: _clean_flags(data[uid][b"FLAGS"]) for uid in sorted(data)}

    def uids(self, user: str, folder: str = "INBOX") -> list[int]:
        with self._session(user) as client:
            client.select_folder(folder, readonly=True)
            return sorted(int(uid) for uid in client.search(["ALL"]))

    def _status(self, user: str, folder: str, item: bytes) -> int:
        with self._session(user) as client:
            status = client.folder_status(folder, [item])
        return int(status[item])

    def message_count(self, user: str, folder: str = "INBOX") -> int:
        return self._status(user, folder, b"MESSAGES")

    def uid_validity(self, user: str, folder: str = "INBOX") -> int:
        return self._status(user, folder, b"UIDVALIDITY")

    # -- disruptions ----------------------------------------------------------------------

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.doveadm_path, "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def connection_count(self, user: str) -> int:
        """Open IMAP sessions of ``user`` as Dovecot's anvil counts them."""
        result = self.doveadm("who", "-1", user, check=False)
        return sum(1 for line in result.stdout.splitlines()[1:] if line.split()[:1] == [user])

    def drop_connections(self, user: str | None = None, timeout: float = 10.0) -> None:
        """Cut the IMAP sessions of ``user`` (default: every user), as a server would.

        Returns once Dovecot no longer counts any session for them, so the client's next
        command is sure to hit a closed connection.
        """
        users = [user] if user is not None else [u for u in self._users if u != "probe"]
        for name in users:
            self.doveadm("kick", name, check=False)
        deadline = time.monotonic() + timeout
        for name in users:
            while self.connection_count(name):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the sessions of {name} survived a doveadm kick")
                time.sleep(0.05)

    def _folder_dir(self, user: str, folder: str) -> Path:
        maildir = self.home(user) / "Maildir"
        if folder.upper() == "INBOX":
            return maildir
        return maildir / ("." + folder.replace("/", "."))

    def reset_uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        """Make the server forget the folder's UIDs, as after a migration or a restore.

        The messages stay the same (same bytes, flags and INTERNALDATE) but the folder gets
        a new UIDVALIDITY and new UIDs from 1: a client must treat its saved UIDs as
        meaningless. The user's sessions are cut (Dovecot would do so itself). Returns
        the new UIDVALIDITY.
        """
        before = self.messages(user, folder)
        old_validity = self.uid_validity(user, folder)
        self.drop_connections(user)
        directory = self._folder_dir(user, folder)
        for sub in ("cur", "new", "tmp"):
            for path in (directory / sub).glob("*"):
                path.unlink()
        # Index, cache and UID list: the UIDs are gone with them. The dovecot-uidvalidity
        # file of the root is kept, so Dovecot hands out a value it never used before.
        for path in directory.iterdir():
            if path.name.startswith(("dovecot-uidlist", "dovecot.index", "dovecot.list.index")):
                path.unlink()
        for message in before:
            flags = [flag for flag in message.flags if flag != "\\Recent"]
            self.append(user, folder, message.raw, flags=flags, internaldate=message.internaldate)
        if not before:
            self.create_folder(user, folder)  # folder with no message: just let it rebuild
        new_validity = self.uid_validity(user, folder)
        if new_validity == old_validity:
            raise AssertionError(f"UIDVALIDITY of {user}/{folder} did not change")
        return new_validity


def _live_group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def _clean_flags(flags: Sequence[Any]) -> frozenset[str]:
    decoded = (flag.decode() if isinstance(flag, bytes) else str(flag) for flag in flags)
    return frozenset(flag for flag in decoded if flag != "\\Recent")


# -- SMTP -----------------------------------------------------------------------------------


def read_mail(raw: bytes, policy: email.policy.Policy = email.policy.default) -> Any:
    """A mail as its reader sees it: with the line ends a mailbox stores (LF). The email
    package keeps SMTP's CRLF in the text of an 8-bit part; a mail client does not."""
    return email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy)


class Received(NamedTuple):
    """One message accepted by the test SMTP server. ``mail_from`` is "" for ``MAIL FROM:<>``."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    mail_options: tuple[str, ...] = ()  # e.g. SMTPUTF8, BODY=8BITMIME
    peer: tuple[str, int] | None = None  # the client's address and port: one per connection


Stage = Literal["rcpt", "data"]


class _Handler:
    """aiosmtpd handler: applies the scripted failures, records what it accepts."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """aiosmtpd's EHLO, plus PIPELINING when the server offers it (aiosmtpd reads the
        commands in order, so pipelined input works; it does not say so itself), without
        8BITMIME when it does not (it still takes 8-bit bytes: the client must not send
        them)."""
        session.host_name = hostname
        if not self.owner.eight_bit_mime:
            responses = [line for line in responses if line[4:] != "8BITMIME"]
        if self.owner.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.owner.refused:
            return "550 5.1.1 No such user"
        failure = self.owner._take_failure("rcpt")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.owner.data_delay:
            await asyncio.sleep(self.owner.data_delay)  # a real server's latency
        failure = self.owner._take_failure("data")
        if failure is not None:
            return failure
        raw = envelope.original_content
        if raw is None:
            content = envelope.content
            raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else b""
        mail_from = envelope.mail_from or ""
        if mail_from == "<>":
            mail_from = ""
        options = tuple(envelope.mail_options)
        received = Received(mail_from, tuple(envelope.rcpt_tos), raw, options, session.peer)
        self.owner._record(received)
        if self.owner._drop_now():
            server.transport.close()  # taken, and the reply never comes
            return "421 4.3.0 (never read: the connection is closed)"
        return "250 2.0.0 OK: queued"

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        self.owner._note("NOOP", session.peer)
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.owner._note("QUIT", session.peer)
        return "221 Bye"


class SmtpServer:
    """An aiosmtpd SMTP server on a free loopback port, recording every accepted message.

    With ``tls``: STARTTLS required before MAIL (or, ``implicit_tls``, TLS from the start).
    It offers PIPELINING (RFC 2920) unless ``pipelining=False``, SMTPUTF8 unless
    ``smtputf8=False``, 8BITMIME (RFC 6152) unless ``eight_bit_mime=False``.

    With ``users`` (login → password): AUTH (PLAIN, LOGIN) required before MAIL, as a
    submission server does; refused in plaintext unless there is no ``tls`` (a loopback
    server: aiosmtpd's ``auth_require_tls`` is kept where TLS is offered). ``smtp_config``
    then logs in as the first user, the password in a file of the server's own; every
    AUTH attempt is noted (``logins``).

    Failures can be scripted: ``fail_next(2)`` makes the next two DATA commands answer
    ``451 4.3.0 Try again later``; ``reject_next(1)`` a permanent ``550``; ``stage="rcpt"``
    applies them to RCPT commands instead (one per recipient).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        tls: TlsFiles | None = None,
        implicit_tls: bool = False,
        pipelining: bool = True,
        smtputf8: bool = True,
        eight_bit_mime: bool = True,
        users: dict[str, str] | None = None,
    ) -> None:
        self.host = HOST
        self.users = dict(users or {})
        self._logins: list[tuple[str, bool]] = []  # (login, accepted) of each AUTH
        self._secrets: Path | None = None  # the password files smtp_config hands out
        self.pipelining = pipelining  # advertised in EHLO (RFC 2920), as Postfix does
        self.smtputf8 = smtputf8
        self.eight_bit_mime = eight_bit_mime
        self.refused: set[str] = set()  # recipients refused at RCPT (550), whatever the script
        self._drops: list[int] = []  # drop the connection after taking the n-th mail
        self.port = port or free_port()
        self.tls = tls
        self.implicit_tls = implicit_tls
        self._received: list[Received] = []
        self._commands: list[tuple[str, tuple[str, int]]] = []  # NOOP and QUIT, with the peer
        self._failures: dict[Stage, list[str]] = {"rcpt": [], "data": []}
        self._condition = threading.Condition()
        self._controller: Controller | None = None
        self.data_delay = 0.0  # seconds before answering DATA

    def start(self) -> None:
        if self._controller is not None:
            return
        tls: dict[str, Any] = {}
        if self.tls is not None and self.implicit_tls:
            tls = {"ssl_context": self.tls.server_context()}
        elif self.tls is not None:
            tls = {"tls_context": self.tls.server_context(), "require_starttls": True}
        if self.users:
            tls |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": self.tls is not None,
            }
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            loop=asyncio.new_event_loop(),
            enable_SMTPUTF8=self.smtputf8,
            **tls,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        secrets_dir, self._secrets = self._secrets, None
        if secrets_dir is not None:
            shutil.rmtree(secrets_dir, ignore_errors=True)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        """aiosmtpd's authenticator: the login and password of ``users``, noted either way."""
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        accepted = login in self.users and data.password == self.users[login].encode()
        with self._condition:
            self._logins.append((login, accepted))
        return AuthResult(success=accepted, handled=False)

    @property
    def logins(self) -> list[tuple[str, bool]]:
        """Each AUTH attempt: the login given and whether it was accepted."""
        with self._condition:
            return list(self._logins)

    def password_file(self, password: str) -> Path:
        """A file holding ``password``, as mailbot's ``password_file`` reads it."""
        if self._secrets is None:
            self._secrets = Path(tempfile.mkdtemp(prefix="mailbot-smtp-"))
        path = self._secrets / f"password-{secrets.token_hex(4)}"
        path.write_text(password + "\n", encoding="utf-8")
        return path

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def smtp_config(self) -> SmtpConfig:
        """mailbot's settings for this server: TLS as it offers it, and with ``users`` a
        login as the first of them."""
        login: dict[str, Any] = {}
        if self.users:
            username, password = next(iter(self.users.items()))
            login = {"username": username, "password_file": self.password_file(password)}
        if self.tls is None:
            return SmtpConfig(
                host=self.host, port=self.port, security="none", timeout_seconds=10, **login
            )
        return SmtpConfig(
            host=self.host,
            port=self.port,
            security="tls" if self.implicit_tls else "starttls",
            ca_file=self.tls.ca_file,
            timeout_seconds=10,
            **login,
        )

    # -- scripted failures ----------------------------------------------------------------

    def fail_next(self, n: int = 1, code: int = 451, *, stage: Stage = "data") -> None:
        """The next ``n`` commands of ``stage`` get a temporary failure."""
        self._script(n, f"{code} 4.3.0 Try again later", stage)

    def reject_next(self, n: int = 1, code: int = 550, *, stage: Stage = "data") -> None:
        """The next ``n`` commands of ``stage`` get a permanent refusal."""
        self._script(n, f"{code} 5.7.1 Message rejected", stage)

    def drop_after(self, count: int) -> None:
        """Once ``count`` mails (in all) were taken, the next one taken is followed by a
        hang-up instead of its reply (the client cannot know it was taken)."""
        with self._condition:
            self._drops.append(count)

    def _drop_now(self) -> bool:
        with self._condition:
            if self._drops and len(self._received) > self._drops[0]:
                self._drops.pop(0)
                return True
            return False

    def _script(self, n: int, reply: str, stage: Stage) -> None:
        with self._condition:
            self._failures[stage].extend([reply] * n)

    def _take_failure(self, stage: Stage) -> str | None:
        with self._condition:
            queue = self._failures[stage]
            return queue.pop(0) if queue else None

    # -- what was received ----------------------------------------------------------------

    def _record(self, message: Received) -> None:
        with self._condition:
            self._received.append(message)
            self._condition.notify_all()

    def _note(self, command: str, peer: tuple[str, int]) -> None:
        with self._condition:
            self._commands.append((command, peer))
            self._condition.notify_all()

    def commands(self, command: str) -> list[tuple[str, int]]:
        """The peers (connections) that sent ``command`` (NOOP or QUIT), in order."""
        with self._condition:
            return [peer for name, peer in self._commands if name == command]

    def wait_for_command(self, command: str, count: int, timeout: float = 5.0) -> None:
        with self._condition:
            if not self._condition.wait_for(
                lambda: len([1 for name, _ in self._commands if name == command]) >= count,
                timeout,
            ):
                raise AssertionError(f"expected {count} {command} within {timeout} s")

    @property
    def messages(self) -> list[Received]:
        with self._condition:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``count`` messages were accepted; returns them all."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._received) >= count, timeout):
                raise AssertionError(
                    f"expected {count} message(s) within {timeout} s, got {len(self._received)}"
                )
            return list(self._received)

    def clear(self) -> None:
        """Forget received messages and pending scripted failures."""
        with self._condition:
            self._received.clear()
            self._commands.clear()
            self._logins.clear()
            for queue in self._failures.values():
                queue.clear()
