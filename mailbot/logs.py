"""Structured, quiet logging: one logfmt line per event, library chatter at WARNING.

Only what is passed in ``extra`` is printed beside the message, so nothing (bodies,
passwords) reaches the log unless a caller names it on purpose.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

from mailbot.redact import RedactingHandler

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _quote(value: object) -> str:
    text = str(value).replace("\n", " ").replace("\r", " ")
    if not text or any(c in text for c in ' ="'):
        return '"' + text.replace('"', '\\"') + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = [f"ts={stamp}", f"level={record.levelname.lower()}", f"msg={_quote(record.msg)}"]
        fields += [
            f"{key}={_quote(value)}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        ]
        if record.exc_info and record.exc_info[0] is not None:
            fields.append(f"error={_quote(record.exc_info[0].__name__)}")
        return " ".join(fields)


def setup_logging(level: int = logging.INFO) -> None:
    handler = RedactingHandler(sys.stderr)  # no password, even echoed by a server
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("mailbot").setLevel(level)
