"""The default rules on a labelled set of realistic mails: service ≥ 95 %, category ≥ 90 %.

The figures come from `mailbot explain DIR --json`, exactly as an agent would run it. Below the threshold
the test fails and prints the confusion table, so a rule change that helps one case and
breaks three is caught.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "routing"


def confusion(pairs: list[tuple[str, str]]) -> str:
    labels = sorted({label for pair in pairs for label in pair})
    counts = Counter(pairs)
    width = max(len(label) for label in labels)
    head = "expected \\ got".ljust(width) + " " + " ".join(label[:6].rjust(6) for label in labels)
    rows = [head]
    for expected in labels:
        cells = " ".join(str(counts[(expected, got)] or ".").rjust(6) for got in labels)
        rows.append(expected.ljust(width) + " " + cells)
    return "\n".join(rows)


def test_labelled_set_accuracy() -> None:
    with (DATA / "labels.csv").open(encoding="utf-8") as handle:
        labels = list(csv.DictReader(handle))
    assert len(labels) >= 80
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailbot.cli",
            "--config",
            str(ROOT / "rules.yaml"),
            "explain",
            str(DATA),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    explained = {Path(o["file"]).name: o for o in map(json.loads, run.stdout.splitlines())}
    services: list[tuple[str, str]] = []
    categories: list[tuple[str, str]] = []
    wrong: list[str] = []
    for row in labels:
        decided = explained[row["file"]]
        assert decided["mailbox"] == row["mailbox"]  # explain found the mailbox from To/Cc
        services.append((row["service"], decided["service"]))
        categories.append((row["category"], decided["category"]))
        if (row["service"], row["category"]) != (decided["service"], decided["category"]):
            wrong.append(
                f"{row['file']}: expected {row['service']}/{row['category']}, "
                f"got {decided['service']}/{decided['category']}"
            )
    service_rate = sum(e == g for e, g in services) / len(services)
    category_rate = sum(e == g for e, g in categories) / len(categories)
    report = (
        f"service {service_rate:.1%}, category {category_rate:.1%} on {len(labels)} mails\n"
        f"services:\n{confusion(services)}\ncategories:\n{confusion(categories)}\n"
        + "\n".join(wrong)
    )
    print(report)
    assert service_rate >= 0.95, report
    assert category_rate >= 0.90, report
