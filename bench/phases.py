"""Where the CPU of a `poll --once` goes, by phase, from a py-spy profile (issue 14).

    python bench/phases.py FILE.raw [--cpu-ms 10.2]

FILE.raw is what ``py-spy record -g -t --format raw`` wrote for a `poll --once` child
(``bench/run.py --profile DIR`` records one per scenario and tree). Only samples holding the
GIL count (``-g``), and only those of the poll itself (under ``Worker.poll_once``) or of a
thread it started: start-up, imports and the models' loading are not the loop's cost. Each
sample goes to the innermost phase marker among its frames; ``--cpu-ms`` (the CPU per mail
measured in the same run) turns shares into milliseconds per mail.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# (a substring of a py-spy frame, its phase): the innermost frame that matches wins. py-spy
# names a method by its qualified name: the class that defines it (a mixin), not self's.
MARKERS = [
    ("Thread._bootstrap ", "delivery (SMTP, outbox bookkeeping)"),  # a thread
    ("MailboxPoller._poll_once", "poller glue"),
    ("FolderStart.start_folder", "folder start, UID SEARCH"),
    ("ImapMailbox.uids_after", "folder start, UID SEARCH"),
    ("ImapMailbox.fetch", "IMAP fetch"),
    ("incoming (mailbot/mail/poller", "IMAP fetch"),
    ("Worker.deliver ", "delivery (SMTP, outbox bookkeeping)"),
    ("Outbox.deliver_due", "delivery (SMTP, outbox bookkeeping)"),
    ("Engines.batch", "batch BEGIN/COMMIT"),
    ("FolderRows.save_folder_state", "folder's UID mark"),
    ("Transaction.savepoint", "SAVEPOINT/RELEASE"),
    ("_record_one", "per-mail glue"),
    ("parse_message", "parse"),
    ("RelayVerifier.verify", "relay check"),
    ("MessageLookups.find_duplicate", "SQL: duplicate"),
    ("PolicyLookups._context", "policy context (SQL: recent ARs, thread, relance)"),
    ("decide_ar", "policy"),
    ("is_probe", "policy"),
    ("CounterRows.next_reference", "SQL: reference"),
    ("Pipeline._known", "SQL: a part's lookups, read once"),
    ("Batched.flush", "SQL: a part's events, outbox, references"),
    ("routing_input", "routing facts"),
    ("detect_language", "language"),
    ("decide (mailbot/core/routing", "routing rules and combination"),
    ("Classifier.", "routing model"),
    ("Planner._variables", "AR variables"),
    ("SkeletonRequests.render_once", "AR rendering"),
    ("Composer.", "AR bytes"),
    ("Queued.of", "AR bytes"),
    ("forwards (", "forward"),
    ("new_message", "row"),
    ("routing_columns", "row"),  # _routing_columns before its rename too
    ("sender_name", "row"),
    ("_save ", "SQL: message INSERT"),  # save_row's name before its rename
    ("save_row ", "SQL: message INSERT"),
    ("EventRows.add_events", "SQL: events"),
    ("_queue ", "SQL: outbox INSERT"),
    ("_log ", "logging"),  # log_outcome's name before its rename
    ("log_outcome ", "logging"),
    ("_summary ", "logging"),
    ("logging/", "logging"),
]


def phase(frames: list[str]) -> str:
    found = "other"
    for frame in frames:
        for marker, name in MARKERS:
            if marker in frame:
                found = name
                break
    return found


def phases(path: Path) -> Counter[str]:
    """Samples per phase, the poll's own (and its threads') only."""
    counts: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, number = line.rpartition(" ")
        if "poll_once" in stack or "Thread._bootstrap" in stack:
            counts[phase(stack.split(";"))] += int(number)
    return counts


def table(counts: Counter[str], cpu_ms: float | None) -> str:
    total = sum(counts.values()) or 1
    lines = ["| phase | % of CPU | ms/mail |", "|---|---|---|"]
    for name, count in counts.most_common():
        share = count / total
        ms = f"{share * cpu_ms:.2f}" if cpu_ms is not None else "-"
        lines.append(f"| {name} | {100 * share:.1f} | {ms} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--cpu-ms", type=float, help="CPU per mail measured in the same run")
    args = parser.parse_args()
    print(table(phases(args.file), args.cpu_ms))


if __name__ == "__main__":
    main()
