"""PIPELINING (RFC 2920) where the server offers it (Postfix does): the body and "." of a
mail leave with the MAIL, RCPT and DATA of the next one, and their replies come back
together, one round trip per mail instead of four (``Pipelined``, a protocol of ours on
aiosmtplib's connection for the batch: aiosmtplib's keeps one reply outstanding and drops
the others). Each mail keeps its own result; the rules of ``mailbot.mail.smtp`` hold
unchanged. ``Job`` is a mail of the batch, shared with ``mailbot.mail.smtp_session``."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from mailbot.errors import DeliveryError
from mailbot.mail.envelope import AfterSend, BeforeSend, Envelope
from mailbot.mail.smtp_commands import (
    CHUNK,
    Stopped,
    classify,
    flushed,
    interrupted,
    is_drop,
    mail_options,
    network_error,
    quoted,
    sent_bytes,
    wire_body,
)

if TYPE_CHECKING:
    from mailbot.mail.smtp_session import Session


@dataclass
class Job:
    """A mail of the batch; ``approved`` once ``before`` let it go (a mail sent again on a
    new connection is not asked twice)."""

    envelope: Envelope
    approved: bool = False
    resent: bool = False


class _Replies(asyncio.Protocol):
    """The connection's protocol while commands are pipelined (RFC 2920): every reply the
    server sends kept, in order (aiosmtplib's protocol keeps one and drops the rest)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.replies: deque[aiosmtplib.SMTPResponse] = deque()
        self.lost: aiosmtplib.SMTPException | None = None
        self.lines: list[bytes] = []
        # Replies the commands written so far still owe (``owe``), those buffered included:
        # a waiter is woken once all of them are in, not at each (a mail's four replies
        # may come in four segments: one turn of the event loop instead of four, issue 14).
        self.owed = 0
        # A wait timed out with some of the replies owed in hand: the server had its time
        # for the rest, and the next wait for one fails at once (one timeout, not two).
        self._late = False
        self._waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) != -1:
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            self.lines.append(line)
            if line[3:4] != b"-":
                self._reply()
        if len(self.buffer) > 8192:
            self._lose(aiosmtplib.SMTPResponseException(-1, "reply line too long"))
        if len(self.replies) >= self.owed:
            self._wake()

    def _reply(self) -> None:
        lines, self.lines = self.lines, []
        try:
            code = int(lines[-1][:3])
        except ValueError:
            self._lose(aiosmtplib.SMTPResponseException(-1, f"malformed reply {lines[-1]!r}"))
            return
        text = "\n".join(line[4:].strip(b" \t\r\n").decode("utf-8", "replace") for line in lines)
        self.replies.append(aiosmtplib.SMTPResponse(code, text))

    def _lose(self, error: aiosmtplib.SMTPException) -> None:
        if self.lost is None:
            self.lost = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def eof_received(self) -> bool:
        self._lose(aiosmtplib.SMTPServerDisconnected("unexpected EOF"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(aiosmtplib.SMTPServerDisconnected(f"connection lost ({exc})"))

    def pause_writing(self) -> None:
        """Flow control is read from the transport's buffer size (``flushed``)."""

    def resume_writing(self) -> None:
        """See ``pause_writing``."""

    def owe(self, replies: int) -> None:
        """Commands written that owe this many replies."""
        self.owed += replies

    async def reply(self, timeout: float) -> aiosmtplib.SMTPResponse:
        """The next reply in order; SMTPServerDisconnected or a timeout if none comes.

        It waits for every reply owed (``owed``), the others of a pipelined group then
        need no wait; when the connection is lost or ``timeout`` passes first, a reply
        that came meanwhile is still returned, and the next call that finds none raises
        at once: the server had ``timeout`` for it too."""
        if not self.replies:  # else it came with the one before: no wait, no timer
            await self._awaited(timeout)
        if not self.replies:
            assert self.lost is not None
            raise self.lost
        return self.next()

    def next(self) -> aiosmtplib.SMTPResponse:
        """The next reply, in hand."""
        self.owed = max(0, self.owed - 1)
        return self.replies.popleft()

    async def _awaited(self, timeout: float) -> None:
        if self._late:
            raise aiosmtplib.SMTPReadTimeoutError("no reply from the server")
        loop = asyncio.get_running_loop()
        try:
            # Not ``wait_for``: it returns normally when the cancel of a shutdown meets a
            # waiter just woken, and the shutdown would then wait for the next timeout.
            async with asyncio.timeout(timeout):
                while len(self.replies) < max(1, self.owed) and self.lost is None:
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
        except TimeoutError:
            if not self.replies:
                raise aiosmtplib.SMTPReadTimeoutError("no reply from the server") from None
            self._late = True


class _Flushing:
    """What ``flushed`` needs of a protocol: its transport."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


class Pipelined:
    """One connection's share of a batch, pipelined (RFC 2920, when the server offers it).

    Each mail costs one round trip: its body and "." leave together with the MAIL, RCPT and
    DATA of the next mail, and the "." reply comes back with theirs. Each mail still gets
    its own result: a refused RCPT fails that mail only (the server refuses its DATA too,
    RSET clears the envelope); the "." of a mail leaves only after ``before`` let it go. A
    drop after a "." leaves that mail uncertain; the mail whose commands were in flight had
    sent no ".": it is sent once more on a new connection, as in ``Session.deliver``.
    """

    def __init__(
        self,
        session: Session,
        client: aiosmtplib.SMTP,
        fresh: bool,
        before: BeforeSend,
        after: AfterSend,
    ) -> None:
        self.session = session
        self.client = client
        self.fresh = fresh  # the connection was opened for the first of these mails
        self.before = before
        self.after = after
        self.timeout = session.config.timeout_seconds
        self.replies = _Replies()
        self.open: Job | None = None  # its "." left, its reply not read yet
        self.current: Job | None = None  # let go by ``before``, its "." not sent yet
        self.sent = 0  # mails whose commands went out on this connection

    async def run(self, jobs: deque[Job]) -> aiosmtplib.SMTP | None:
        """Send ``jobs`` from the left until none is left, the connection fails (then the
        connection is closed and None returned) or a shutdown (the batch ends)."""
        protocol = self.client.protocol
        transport = cast(asyncio.Transport | None, protocol and protocol.transport)
        if protocol is None or transport is None:
            return None
        transport.set_protocol(self.replies)
        try:
            while jobs and not self.session.stop.is_set():
                job = jobs.popleft()
                if not await self._one(job, jobs, transport):
                    return None
            if self.open is not None:
                return None if not await self._closing(transport) else self.client
        except Stopped:
            self._stopped()
            self.client.close()
            raise
        finally:
            if not transport.is_closing():
                transport.set_protocol(protocol)
        return self.client

    async def _one(self, job: Job, jobs: deque[Job], transport: asyncio.Transport) -> bool:
        """One mail; False once the connection is gone."""
        envelope = job.envelope
        try:
            if not (job.approved or self.before(envelope)):
                return True
        except BaseException:  # the claim failed: the mail before is told first
            with contextlib.suppress(Exception):
                await self._closing(transport)
            raise
        job.approved = True
        raw = sent_bytes(self.client, envelope, self.session.config.eight_bit)
        try:
            commands = self._commands(envelope, raw)
        except DeliveryError as refused:
            self.after(envelope, refused)
            return True
        self.current = job  # told nothing yet: a shutdown now interrupts it
        self.sent += 1
        try:
            self._write(transport, commands, replies=3)
        except aiosmtplib.SMTPException as exc:
            return self._dropped(job, jobs, exc, "MAIL FROM")
        if not await self._closing(transport):
            return self._dropped(job, jobs, self.replies.lost, "MAIL FROM")
        return await self._data(job, jobs, transport, raw)

    def _commands(self, envelope: Envelope, raw: bytes) -> bytes:
        """MAIL, RCPT and DATA for ``envelope``; DeliveryError if it cannot be sent here
        (SMTPUTF8 not offered: permanent; a line end in an address: as aiosmtplib refuses
        it, a ValueError, retried)."""
        options = mail_options(self.client, envelope, raw)
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        try:
            words = [b"FROM:" + quoted(envelope.envelope_from, encoding)]
            words += [option.encode("ascii") for option in options]
            rcpt = b"TO:" + quoted(envelope.recipient, encoding)
            if any(b"\r" in word or b"\n" in word for word in (*words, rcpt)):
                raise ValueError("Command arg contains a prohibited control character")
        except ValueError as error:  # an address aiosmtplib refuses to write
            raise network_error(error, "at MAIL FROM") from None
        return b"MAIL " + b" ".join(words) + b"\r\nRCPT " + rcpt + b"\r\nDATA\r\n"

    async def _next_reply(self) -> aiosmtplib.SMTPResponse:
        """The next reply: one in hand at once (it came with the one before), else read
        from the network, a step a shutdown cuts."""
        if self.replies.replies:
            return self.replies.next()
        return await self.session.step(self.replies.reply(self.timeout))

    def _write(self, transport: asyncio.Transport, data: bytes, replies: int = 0) -> None:
        if transport.is_closing() or self.replies.lost is not None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        self.replies.owe(replies)
        transport.write(data)

    async def _closing(self, transport: asyncio.Transport) -> bool:
        """The reply to the open mail's "." read and told to ``after``; False if the
        connection failed (the open mail then told it is uncertain)."""
        job, self.open = self.open, None
        if job is None:
            return True
        try:
            response = await self._next_reply()
        except Stopped:
            self.open = job
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.client.close()
            self.after(job.envelope, _uncertain(exc))
            return False
        if 200 <= response.code < 300:
            self.after(job.envelope, None)
        else:
            error = aiosmtplib.SMTPDataError(response.code, response.message)
            self.after(job.envelope, classify(error, "at the end of DATA"))
        if response.code == 421:  # the server is closing the connection
            self.client.close()
            return False
        return True

    async def _data(
        self, job: Job, jobs: deque[Job], transport: asyncio.Transport, raw: bytes
    ) -> bool:
        """The MAIL, RCPT and DATA replies; then the body and its "." (left open)."""
        failure: aiosmtplib.SMTPResponseException | None = None
        stages = ("MAIL FROM", "RCPT TO", "DATA")
        for stage, accepted in zip(stages, ((250,), (250, 251), (354,)), strict=True):
            try:
                response = await self._next_reply()
            except (aiosmtplib.SMTPException, OSError) as exc:
                return self._dropped(job, jobs, exc, stage)
            if response.code == 421:
                closing = aiosmtplib.SMTPResponseException(response.code, response.message)
                return self._dropped(job, jobs, closing, stage)
            if failure is None and response.code not in accepted:
                failure = _refusal(stage, response)
                failed_at = stage
        if failure is not None:
            self.current = None
            self.after(job.envelope, classify(failure, f"at {failed_at}"))
            return await self._reset(transport, data_open=response.code == 354)
        try:
            await self._body(transport, raw)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return self._dropped(job, jobs, exc, "the message body")
        self.open, self.current = job, None
        return True

    async def _body(self, transport: asyncio.Transport, raw: bytes) -> None:
        """The body, then the "." once the body has left (a server that stops reading: the
        "." never leaves, the mail is retried, not uncertain).

        A body of one chunk (an AR, a forward of a short mail) goes with its "." in one
        write: one system call and one turn of the GIL fewer per mail (issue 14). Handed to
        the kernel whole, it left as the "." written after it would have; otherwise the
        "." is at the end of what waits in the transport's buffer, and should that wait
        fail (a server that stops reading, a shutdown) the transport is aborted, its buffer
        dropped (a close would send it on its way): the "." never leaves, as before."""
        body = wire_body(raw)
        flushing = cast(SMTPProtocol, _Flushing(transport))
        if len(body) <= CHUNK and not transport.get_write_buffer_size():
            self._write(transport, body + b".\r\n", replies=1)
            if transport.get_write_buffer_size():
                try:
                    await self.session.step(flushed(flushing, 0, self.timeout))
                except BaseException:
                    transport.abort()
                    raise
            return
        for start in range(0, len(body), CHUNK):
            self._write(transport, body[start : start + CHUNK])
            await self.session.step(flushed(flushing, CHUNK, self.timeout))
        if transport.get_write_buffer_size():
            await self.session.step(flushed(flushing, 0, self.timeout))
        self._write(transport, b".\r\n", replies=1)

    async def _reset(self, transport: asyncio.Transport, data_open: bool) -> bool:
        """RSET after a refused MAIL, RCPT or DATA; a server that opened DATA anyway is
        left (no "." ever ends an empty mail): the connection is closed."""
        if data_open:
            self.client.close()
            return False
        try:
            self._write(transport, b"RSET\r\n", replies=1)
            response = await self._next_reply()
        except (aiosmtplib.SMTPException, OSError):
            self.client.close()
            return False
        if response.code != 250:
            self.client.close()
            return False
        return True

    def _dropped(
        self,
        job: Job,
        jobs: deque[Job],
        exc: BaseException | None,
        stage: str,
    ) -> bool:
        """The connection failed before ``job``'s "." left: sent once more on a new
        connection (the server cannot have accepted it), unless it was the first on a new
        one or was sent again already."""
        self.client.close()
        self.current = None  # told now, or sent again (``smtp_session._left_behind``: a shutdown)
        if self.open is not None:
            self.after(self.open.envelope, _uncertain(exc))
            self.open = None
        error = exc or aiosmtplib.SMTPServerDisconnected("connection lost")
        if (self.fresh and self.sent == 1) or job.resent or not is_drop(error):
            self.after(job.envelope, classify(error, f"at {stage}"))
        else:
            job.resent = True
            jobs.appendleft(job)
        return False

    def _stopped(self) -> None:
        """A shutdown: the open mail's "." left without its reply (uncertain); the mail
        under way had sent no "." (interrupted, as if never tried)."""
        if self.current is not None:
            self.after(self.current.envelope, interrupted())
        self.current = None
        if self.open is not None:
            self.after(
                self.open.envelope,
                DeliveryError(
                    "shutdown after the end of DATA, before the server's reply: "
                    "it may have accepted the mail",
                    permanent=False,
                    uncertain=True,
                ),
            )
            self.open = None


def _refusal(stage: str, response: aiosmtplib.SMTPResponse) -> aiosmtplib.SMTPResponseException:
    if stage == "MAIL FROM":
        return aiosmtplib.SMTPSenderRefused(response.code, response.message, "")
    if stage == "RCPT TO":
        return aiosmtplib.SMTPRecipientRefused(response.code, response.message, "")
    return aiosmtplib.SMTPDataError(response.code, response.message)


def _uncertain(exc: BaseException | None) -> DeliveryError:
    what = f"{type(exc).__name__}: {exc}" if exc is not None else "connection lost"
    return DeliveryError(
        f"no reply after the end of DATA ({what}): the server may have accepted the mail",
        permanent=False,
        uncertain=True,
    )
