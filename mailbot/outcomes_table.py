"""The table of mail outcomes that `poll --once`, `demo` and `quarantine retry` print:
one line per mail, its decision, reference, route and reasons. Apart from the commands
so that each command module prints it without importing another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailbot.core.incoming import Outcome


def print_outcomes(outcomes: Sequence[Outcome]) -> None:
    rows = [("UID", "MAILBOX", "DECISION", "REFERENCE", "ROUTE", "REASON", "SUBJECT")]
    for o in outcomes:
        subject = o.subject if len(o.subject) <= 40 else o.subject[:39] + "…"
        reasons = ",".join(o.reasons)
        route = o.route or "-"
        rows.append(
            (str(o.uid), o.mailbox, o.decision, o.reference or "-", route, reasons, subject)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
