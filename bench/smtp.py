"""CPU per mail of mailbot's SMTP client alone, against the bench's sink (issue 14).

    python bench/smtp.py [--mails 2000] [--repeat 3]

``SmtpTransport.send_batch`` (pipelined, two connections from 16 mails, batches of 200 as
the delivery thread sends them) sends ``--mails`` ARs of 13 KB to ``bench/sink.py`` (aiosmtpd
in a process of its own), ``before`` and ``after`` doing nothing: the client's own cost,
without the outbox's bookkeeping. For comparison, in the same run, the floor of a client:
one blocking socket, pipelined the same way (MAIL, RCPT and DATA, then the body and its
"."; one wait a mail), no timeout, no shutdown, no TLS. Prints CPU (``time.process_time``)
and wall time per mail, each repeat.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sink import SinkProcess  # noqa: E402

from mailbot.mail.envelope import Envelope  # noqa: E402
from mailbot.mail.smtp import SmtpTransport  # noqa: E402
from mailbot.mail.smtp_commands import wire_body  # noqa: E402

AR = b"From: pref <pref@seine-maritime.gouv.fr>\r\nTo: u@example.fr\r\nSubject: AR\r\n\r\n"
AR += (b"x" * 76 + b"\r\n") * 170  # ~13 KB, an AR's size
BATCH = 200  # the delivery thread's limit (the worker's FETCH batch)


def transport(sink: SinkProcess, mails: int) -> tuple[float, float]:
    client = SmtpTransport(sink.smtp_config())
    envelopes = [Envelope("", f"u{n}@example.fr", AR, name=str(n)) for n in range(mails)]
    failed: list[object] = []

    def after(_envelope: Envelope, error: object) -> None:
        if error is not None:
            failed.append(error)

    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, mails, BATCH):
        client.send_batch(envelopes[start : start + BATCH], lambda _e: True, after)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    client.close()
    if failed:
        raise SystemExit(f"{len(failed)} mails refused: {failed[0]}")
    return cpu, wall


def blocking(sink: SinkProcess, mails: int) -> tuple[float, float]:
    """The floor: a pipelined client on one blocking socket."""
    with socket.create_connection((sink.host, sink.port)) as sock, sock.makefile("rb") as replies:

        def code() -> int:
            while (line := replies.readline())[3:4] == b"-":
                pass
            return int(line[:3])

        assert code() == 220
        sock.sendall(b"EHLO bench\r\n")
        assert code() == 250
        cpu, wall = time.process_time(), time.perf_counter()
        open_dot = False
        for n in range(mails):
            sock.sendall(b"MAIL FROM:<>\r\nRCPT TO:<u%d@example.fr>\r\nDATA\r\n" % n)
            expected = [250] * open_dot + [250, 250, 354]
            assert [code() for _ in expected] == expected
            sock.sendall(wire_body(AR) + b".\r\n")
            open_dot = True
        assert code() == 250
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sock.sendall(b"QUIT\r\n")
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with SinkProcess() as sink:
        for n in range(args.repeat):
            for name, run in (("SmtpTransport", transport), ("blocking floor", blocking)):
                cpu, wall = run(sink, args.mails)
                print(
                    f"repeat {n + 1}  {name:15s} {args.mails} mails"
                    f"  CPU {cpu * 1000 / args.mails:.3f} ms/mail"
                    f"  wall {wall * 1000 / args.mails:.3f} ms/mail"
                )


if __name__ == "__main__":
    main()
