"""Routing figures as the prefecture reads them: accuracy, confusion tables, per-class
precision and recall, wrong transfers and mails held to check."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from mailbot.app.routing_scores import Scored


def confusion(pairs: Sequence[tuple[str, str]]) -> str:
    """Rows: expected label; columns: decided label (first six letters); "." for zero."""
    labels = sorted({label for pair in pairs for label in pair})
    counts = Counter(pairs)
    width = max((len(label) for label in labels), default=10)
    head = "expected \\ got".ljust(width) + " " + " ".join(label[:6].rjust(6) for label in labels)
    rows = [head]
    for expected in labels:
        cells = " ".join(str(counts[(expected, got)] or ".").rjust(6) for got in labels)
        rows.append(expected.ljust(width) + " " + cells)
    return "\n".join(rows)


def per_class(pairs: Sequence[tuple[str, str]]) -> dict[str, dict[str, float | int]]:
    found: dict[str, dict[str, float | int]] = {}
    for label in sorted({label for pair in pairs for label in pair}):
        tp = sum(e == g == label for e, g in pairs)
        decided = sum(g == label for _, g in pairs)
        expected = sum(e == label for e, _ in pairs)
        found[label] = {
            "precision": round(tp / decided, 4) if decided else 1.0,
            "recall": round(tp / expected, 4) if expected else 1.0,
            "support": expected,
        }
    return found


Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95 % interval


def wilson_interval(hits: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default), as scipy's
    ``binomtest(hits, trials).proportion_ci(method="wilson")`` gives it (tests check they
    agree): on the test half's ~25 complaints a precision is known to about ±10 points, and
    the prefecture should read it so. Without scipy, which only training needs."""
    if trials == 0:
        return 0.0, 1.0
    share = hits / trials
    spread = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    centre = share + z * z / (2 * trials)
    scale = 1 + z * z / trials
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def complaint_counts(scored: Scored, label: str = "reclamation") -> dict[str, Any]:
    """The complaint figures' counts and their 95 % intervals: right, decided, expected."""
    right = sum(e == g == label for e, g in scored.categories)
    decided = sum(g == label for _, g in scored.categories)
    expected = sum(e == label for e, _ in scored.categories)
    return {
        "right": right,
        "decided": decided,
        "expected": expected,
        "precision_interval": [round(x, 4) for x in wilson_interval(right, decided)],
        "recall_interval": [round(x, 4) for x in wilson_interval(right, expected)],
    }


def figures(scored: Scored) -> dict[str, Any]:
    precision, recall = scored.precision_recall("reclamation")
    return {
        "mails": scored.count,
        "service_accuracy": round(scored.accuracy("service"), 4),
        "service_landed_accuracy": round(scored.accuracy("landed"), 4),  # held: own service
        "category_accuracy": round(scored.accuracy("category"), 4),
        "wrong_transfers": scored.wrong_transfers,
        "wrong_transfer_rate": round(scored.wrong_transfers / max(scored.count, 1), 4),
        "to_check": sum(scored.to_check),
        "moved": sum(scored.moved),
        "complaint_precision": round(precision, 4),
        "complaint_recall": round(recall, 4),
        "complaint_counts": complaint_counts(scored),
        "services": per_class(scored.services),
        "categories": per_class(scored.categories),
    }


def _table(classes: dict[str, dict[str, float | int]]) -> str:
    lines = [f"  {'label':<24} {'precision':>9} {'recall':>7} {'n':>4}"]
    for label, row in classes.items():
        lines.append(
            f"  {label:<24} {row['precision']:>9.1%} {row['recall']:>7.1%} {row['support']:>4}"
        )
    return "\n".join(lines)


def _complaint_line(counts: dict[str, Any]) -> str:
    """How much the complaint figures can be trusted: their counts and 95 % intervals."""
    low, high = counts["precision_interval"]
    low_r, high_r = counts["recall_interval"]
    return (
        f"complaints: {counts['right']} right of {counts['decided']} decided"
        f" (precision 95 % interval {low:.1%}-{high:.1%}) and of {counts['expected']} expected"
        f" (recall 95 % interval {low_r:.1%}-{high_r:.1%})"
    )


def format_figures(scored: Scored) -> str:
    f = figures(scored)
    return "\n".join(
        [
            f"service {f['service_accuracy']:.1%} (as recorded, held mail at its mailbox's:"
            f" {f['service_landed_accuracy']:.1%}), category {f['category_accuracy']:.1%}"
            f" on {f['mails']} mails; wrong transfers {f['wrong_transfers']}"
            f" ({f['wrong_transfer_rate']:.1%}), moved {f['moved']}, held to check"
            f" {f['to_check']}; complaint precision {f['complaint_precision']:.1%}, recall"
            f" {f['complaint_recall']:.1%}",
            _complaint_line(f["complaint_counts"]),
            "services:",
            confusion(scored.services),
            _table(f["services"]),
            "categories:",
            confusion(scored.categories),
            _table(f["categories"]),
        ]
    )
