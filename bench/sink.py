"""The benchmarks' SMTP sink: aiosmtpd in a process of its own, counting what it accepts.

In the bench's process, the sink's event loop would take the GIL from whichever side is
being measured (the raw pipe or mailbot); in its own process it costs them nothing but the
loopback round trips, as a real relay would.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import os
import socket
import time
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from mailbot.config import SmtpConfig

HOST = "127.0.0.1"


class _Counting:
    """aiosmtpd handler: accepts every mail, counts them (and those to a citizen)."""

    def __init__(self, total: Synchronized[int], citizens: Synchronized[int]) -> None:
        self.total = total
        self.citizens = citizens

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """PIPELINING offered (RFC 2920), as Postfix does: aiosmtpd reads commands in order,
        so pipelined input works, but it does not say so itself."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.total.get_lock():
            self.total.value += 1
        if any(rcpt.endswith("@example.fr") for rcpt in envelope.rcpt_tos):
            with self.citizens.get_lock():
                self.citizens.value += 1
        return "250 2.0.0 OK: queued"


def _serve(
    port: int,
    total: Synchronized[int],
    citizens: Synchronized[int],
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(
        _Counting(total, citizens), hostname=HOST, port=port, loop=asyncio.new_event_loop()
    )
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class SinkProcess:
    """What the bench needs of an SMTP server (``smtp_config``, ``wait_for``, ``clear``),
    served by a child process (spawned: no copy of the bench's threads)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.host = HOST
        self.port = _free_port()
        self._total = context.Value("i", 0)
        self._citizens = context.Value("i", 0)
        self._ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve,
            args=(self.port, self._total, self._citizens, self._ready, self._stop),
            daemon=True,
        )

    def __enter__(self) -> SinkProcess:
        self._process.start()
        if not self._ready.wait(30):
            raise RuntimeError("the SMTP sink did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._process.join(10)

    def smtp_config(self) -> SmtpConfig:
        return SmtpConfig(host=self.host, port=self.port, security="none", timeout_seconds=30)

    def cpu(self) -> float:
        """Seconds of CPU the sink's process has spent (all its threads): on a machine of
        few cores, what it takes is taken from the side being measured."""
        with open(f"/proc/{self._process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def count(self) -> int:
        return int(self._total.value)

    @property
    def to_citizens(self) -> int:
        return int(self._citizens.value)

    def wait_for(self, count: int, timeout: float = 60.0, citizens: bool = False) -> int:
        """Wait until ``count`` mails arrived (``citizens``: mails to a citizen, i.e. ARs and
        replies, not the forwards to services). With routing on, a transferred mail makes two
        mails: counting all of them would stop the wait at the first mail's forward."""
        deadline = time.monotonic() + timeout

        def seen() -> int:
            return self.to_citizens if citizens else self.count

        while seen() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} mails within {timeout} s, got {seen()}")
            time.sleep(0.005)
        return seen()

    def clear(self) -> None:
        with self._total.get_lock():
            self._total.value = 0
        with self._citizens.get_lock():
            self._citizens.value = 0
