"""Small real servers that misbehave on cue: SMTP and IMAP responders over real TCP.

aiosmtpd and Dovecot answer correctly; what mailbot must also get right is a server that
hangs, drops the connection or refuses at one precise point of the exchange, or that
echoes what it was sent (passwords included) in its error replies. These responders speak
just enough of each protocol for a real client (aiosmtplib, imapclient) and do exactly
what their script says at each point.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

HOST = "127.0.0.1"
_PATH = re.compile(r"^(?:MAIL FROM|RCPT TO):<(.*)>(.*)$", re.IGNORECASE)

# Where an SMTP exchange can go wrong, in the order a client meets them.
Point = Literal["greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "body", "end"]
POINTS: tuple[Point, ...] = (
    "greeting",
    "ehlo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "body",
    "end",
)
# hang: say nothing, ever; drop: cut the connection (RST); temp/perm: a 4xx/5xx reply.
Action = Literal["hang", "drop", "temp", "perm"]

_REPLIES = {
    "greeting": ("421 4.3.2 Service not available", "554 5.3.2 No service"),
    "ehlo": ("421 4.3.2 Closing", "554 5.5.1 No EHLO"),
    "starttls": ("454 4.7.0 TLS not available", "554 5.7.0 No TLS"),
    "auth": ("454 4.7.0 Temporary authentication failure", "535 5.7.8 Authentication failed"),
    "mail": ("451 4.3.0 Try again later", "550 5.7.1 Sender refused"),
    # As Postfix words them: the recipient quoted (an address that must not reach a log).
    "rcpt": (
        "450 4.2.1 <{address}>: Recipient address rejected: Mailbox busy",
        "550 5.1.1 <{address}>: Recipient address rejected: No such user",
    ),
    "data": ("451 4.3.0 Try again later", "554 5.3.4 Not now"),
    "end": ("451 4.3.0 Queue full", "554 5.7.1 Message rejected"),
}


@dataclass
class Delivery:
    """One message the server accepted (it read the terminating ".")."""

    mail_from: str
    rcpt_to: list[str]
    data: bytes
    mail_options: list[str]


@dataclass
class _Script:
    actions: dict[Point, list[Action]] = field(default_factory=dict)

    def take(self, point: Point) -> Action | None:
        queue = self.actions.get(point)
        return queue.pop(0) if queue else None


class _Closed(Exception):
    """The scripted session ends here (drop, or the client went away)."""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as a crashed or killed server would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _ThreadedServer:
    """An asyncio server on a loopback port, run on its own thread and event loop."""

    def __init__(self) -> None:
        self.host = HOST
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.port = 0

    def _listen(self, handler: Callable[..., Coroutine[Any, Any, None]]) -> None:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._sessions.add(task)
            try:
                await handler(reader, writer)
            except (
                _Closed,
                ConnectionError,
                asyncio.IncompleteReadError,
                asyncio.CancelledError,  # the server is stopping
                ssl.SSLError,
            ):
                pass
            finally:
                self._sessions.discard(task)
                writer.transport.abort()

        async def start() -> asyncio.Server:
            # A small receive buffer: a server that stops reading soon stops the client too.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.bind((self.host, 0))
            return await asyncio.start_server(tracked, sock=sock, limit=1 << 20)

        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._sessions):
                task.cancel()
            await asyncio.sleep(0)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class ScriptedSmtpServer(_ThreadedServer):
    """An SMTP server that fails on cue at any point of the exchange.

    ``fail(point, action)`` applies to the next time ``point`` is reached (once; call it
    again for more). Otherwise it behaves: EHLO lists 8BITMIME, SMTPUTF8 (``smtputf8``),
    STARTTLS (with ``tls``), AUTH ``auth_mechanisms`` (with ``password``) and PIPELINING
    (unless ``pipelining=False``: the client then sends one command at a time); it accepts mail
    and keeps it in ``deliveries`` (also when told to hang or drop after the final ".").
    "body" actions apply once the body has begun: hang (stop reading), drop, temp (a 421
    data timeout, then hang up). With ``echo_auth``, a failed AUTH is answered with a 535 that
    quotes every line of the AUTH exchange and the password it decoded, as some servers'
    debugging replies do.
    """

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        smtputf8: bool = True,
        username: str | None = None,
        password: str | None = None,
        echo_auth: bool = False,
        auth_mechanisms: str = "PLAIN",
        pipelining: bool = True,
    ) -> None:
        super().__init__()
        self.pipelining = pipelining
        self.auth_mechanisms = auth_mechanisms
        self.tls = tls
        self.smtputf8 = smtputf8
        self.username = username
        self.password = password
        self.echo_auth = echo_auth
        self.deliveries: list[Delivery] = []
        self.commands: list[str] = []
        self.connections = 0
        self._script = _Script()
        self._lock = threading.Lock()
        # Set once a scripted "hang" began: the client now waits on a silent server (for
        # "body": once the body began to arrive, so the client is past preparing it).
        self.hanging = threading.Event()

    def start(self) -> ScriptedSmtpServer:
        self._listen(self._session)
        return self

    def __enter__(self) -> ScriptedSmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail(self, point: Point, action: Action, times: int = 1) -> None:
        with self._lock:
            self._script.actions.setdefault(point, []).extend([action] * times)

    def _take(self, point: Point) -> Action | None:
        with self._lock:
            return self._script.take(point)

    # -- the session ------------------------------------------------------------------------

    async def _act(self, point: Point, writer: asyncio.StreamWriter, address: str = "") -> bool:
        """Apply the scripted action for ``point``; True if a reply was sent instead."""
        action = self._take(point)
        if action is None:
            return False
        if action == "hang":
            self.hanging.set()
            await asyncio.Event().wait()  # until the server stops
        if action == "drop":
            _reset(writer)
            raise _Closed
        temporary, permanent = _REPLIES[point]
        reply = (temporary if action == "temp" else permanent).format(address=address)
        await self._reply(writer, reply)
        if reply.startswith("421"):  # "service closing": the server hangs up after it
            writer.close()
            raise _Closed
        return True

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, line: str) -> None:
        writer.write(line.encode("utf-8") + b"\r\n")
        await writer.drain()

    async def _line(self, reader: asyncio.StreamReader) -> str:
        raw = await reader.readline()
        if not raw:
            raise _Closed
        line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
        with self._lock:
            self.commands.append(line)
        return line

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        if await self._act("greeting", writer):
            return
        await self._reply(writer, "220 scripted.example.test ESMTP")
        envelope: dict[str, Any] = {}
        secure = False
        while True:
            line = await self._line(reader)
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                if not await self._act("ehlo", writer):
                    await self._ehlo(writer, secure)
            elif verb == "STARTTLS" and self.tls is not None and not secure:
                if not await self._act("starttls", writer):
                    await self._reply(writer, "220 2.0.0 Ready to start TLS")
                    await writer.start_tls(self.tls)
                    secure = True
            elif verb == "AUTH":
                await self._auth(line, reader, writer)
            elif verb == "MAIL":
                envelope = {}
                if not await self._act("mail", writer):
                    found = _PATH.match(line)
                    address, options = (found[1], found[2].split()) if found else ("?", [])
                    envelope = {"from": address, "to": [], "options": options}
                    await self._reply(writer, "250 2.1.0 OK")
            elif verb == "RCPT" and "from" not in envelope:  # as real servers do (pipelining)
                await self._reply(writer, "503 5.5.1 Error: need MAIL command")
            elif verb == "RCPT":
                found = _PATH.match(line)
                if not await self._act("rcpt", writer, found[1] if found else "?"):
                    envelope.setdefault("to", []).append(found[1] if found else "?")
                    await self._reply(writer, "250 2.1.5 OK")
            elif verb == "DATA" and not envelope.get("to"):
                await self._reply(writer, "503 5.5.1 Error: need RCPT command")
            elif verb == "DATA":
                if not await self._act("data", writer):
                    await self._data(reader, writer, envelope)
                    envelope = {}
            elif verb == "RSET":
                envelope = {}
                await self._reply(writer, "250 2.0.0 OK")
            elif verb == "QUIT":
                await self._reply(writer, "221 2.0.0 Bye")
                return
            else:
                await self._reply(writer, "250 2.0.0 OK" if verb == "NOOP" else "502 5.5.2 What?")

    async def _ehlo(self, writer: asyncio.StreamWriter, secure: bool) -> None:
        lines = ["scripted.example.test", "8BITMIME"]
        if self.pipelining:
            lines.append("PIPELINING")
        if self.smtputf8:
            lines.append("SMTPUTF8")
        if self.tls is not None and not secure:
            lines.append("STARTTLS")
        if self.password is not None:
            lines.append(f"AUTH {self.auth_mechanisms}")
        for line in lines[:-1]:
            writer.write(f"250-{line}\r\n".encode())
        await self._reply(writer, f"250 {lines[-1]}")

    async def _auth(
        self, line: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        exchange = [line]
        parts = line.split()
        mechanism = parts[1].upper() if len(parts) > 1 else ""
        if mechanism == "LOGIN":
            if len(parts) < 3:
                await self._reply(writer, "334 VXNlcm5hbWU6")
                exchange.append(await self._line(reader))
            await self._reply(writer, "334 UGFzc3dvcmQ6")
            exchange.append(await self._line(reader))
            user = base64.b64decode(parts[2] if len(parts) > 2 else exchange[1]).decode()
            password = base64.b64decode(exchange[-1]).decode()
        else:
            if len(parts) < 3:
                await self._reply(writer, "334 ")
                exchange.append(await self._line(reader))
            blob = base64.b64decode(parts[2] if len(parts) > 2 else exchange[-1])
            _authzid, user_bytes, password_bytes = blob.split(b"\0")
            user, password = user_bytes.decode(), password_bytes.decode()
        if await self._act("auth", writer):
            return
        if user == self.username and password == self.password and not self.echo_auth:
            await self._reply(writer, "235 2.7.0 Authentication successful")
        elif self.echo_auth:
            await self._reply(
                writer, f"535 5.7.8 Authentication failed: {' '.join(exchange)} pw={password}"
            )
        else:
            await self._reply(writer, "535 5.7.8 Authentication failed")

    async def _data(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, envelope: dict[str, Any]
    ) -> None:
        await self._reply(writer, "354 End data with <CR><LF>.<CR><LF>")
        body_action = self._take("body")
        if body_action is not None:
            await reader.readexactly(1)  # the body has begun to arrive
            if body_action == "hang":
                writer.transport.pause_reading()  # the server stops reading, for good
                self.hanging.set()
                await asyncio.Event().wait()
            if body_action == "temp":  # a server-side data timeout: 421, then hang up
                await self._reply(writer, "421 4.4.2 Data timeout")
            _reset(writer)
            raise _Closed
        lines = []
        while True:
            raw = await reader.readline()
            if not raw:
                raise _Closed
            if raw == b".\r\n":
                break
            lines.append(raw[1:] if raw.startswith(b".") else raw)
        delivery = Delivery(
            envelope["from"], list(envelope["to"]), b"".join(lines), envelope["options"]
        )
        action = self._take("end")
        if action in ("temp", "perm"):
            await self._reply(writer, _REPLIES["end"][0 if action == "temp" else 1])
            return
        with self._lock:  # taken: whether the client hears so is another matter
            self.deliveries.append(delivery)
        if action == "hang":
            self.hanging.set()
            await asyncio.Event().wait()
        if action == "drop":
            _reset(writer)
            raise _Closed
        await self._reply(writer, "250 2.0.0 OK: queued")


# -- IMAP -----------------------------------------------------------------------------------


class EchoingImapServer(_ThreadedServer):
    """An IMAP responder that refuses every LOGIN and quotes the command in its NO reply.

    Some servers do (debug builds, proxies): the reply then carries the password as the
    client wrote it, an IMAP quoted string with backslash escapes.
    """

    def start(self) -> EchoingImapServer:
        self._listen(self._session)
        return self

    def __enter__(self) -> EchoingImapServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted IMAP ready\r\n")
        await writer.drain()
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            match = re.match(r"(\S+) (\S+)", line)
            if not match:
                continue
            tag, command = match.group(1), match.group(2).upper()
            if command == "CAPABILITY":
                writer.write(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n".encode())
            elif command == "LOGIN":
                echoed = line[len(tag) + 1 :]
                writer.write(f"{tag} NO [AUTHENTICATIONFAILED] {echoed} refused\r\n".encode())
            elif command == "LOGOUT":
                writer.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                await writer.drain()
                return
            else:
                writer.write(f"{tag} BAD unknown\r\n".encode())
            await writer.drain()
