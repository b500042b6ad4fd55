"""The CLI's output in pipes and `mailbot explain` on Maildir folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from in_process import run_main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "mailbot" / "demo_data" / "maildir" / "general"
RULES = str(ROOT / "rules.yaml")
HEAD_REPETITIONS = 8
SIGPIPE_EXIT = 141


def mailbot(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailbot.cli", "--config", RULES, *args]


def run_into_closed_pipe(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout a pipe whose reader is already gone: every write hits EPIPE.

    The worst case of `| head -1`, made certain rather than left to the race between
    the reader exiting and our last write.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ("templates", "list"),
        ("explain", str(DEMO / "cur")),
        ("explain", str(DEMO)),
    ],
)
def test_a_closed_pipe_ends_quietly(args: tuple[str, ...]) -> None:
    result = run_into_closed_pipe(mailbot(*args))
    assert result.returncode == SIGPIPE_EXIT
    assert result.stderr.decode() == ""  # no traceback, no "Exception ignored"


@pytest.mark.parametrize(
    ("args", "lines"),
    [(("templates", "list"), 1), (("explain", str(DEMO)), 5)],
)
def test_piped_into_head_never_shows_a_traceback(args: tuple[str, ...], lines: int) -> None:
    """`mailbot explain DIR | head -5` and `mailbot templates list | head -1`, as a user
    types them, repeated: the traceback used to appear about one time in three."""
    script = " ".join(f"'{part}'" for part in mailbot(*args))
    for _ in range(HEAD_REPETITIONS):
        result = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {script} | head -{lines}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert len(result.stdout.splitlines()) == lines
        assert result.stderr == "", result.stderr
        assert result.returncode in (0, SIGPIPE_EXIT)


def run_explain(target: Path) -> list[dict[str, object]]:
    """``mailbot explain TARGET --json``'s results, run in this process: what it reads is
    under test here, not the process (~1 s of CPU each to start; the pipes above keep
    theirs)."""
    result = run_main(RULES, "explain", str(target), "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_explain_reads_a_maildir_its_cur_folder_and_suffixless_files(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    shutil.copytree(DEMO, maildir)
    (maildir / "tmp" / "1795199999.M9P9.demo").write_bytes(b"partial delivery")
    expected = sorted(
        p.name for sub in ("cur", "new") for p in (DEMO / sub).iterdir() if p.name[0] != "."
    )
    assert len(expected) >= 5

    whole = run_explain(maildir)
    assert sorted(Path(str(o["file"])).name for o in whole) == expected  # tmp/ left alone
    cur = run_explain(maildir / "cur")
    in_cur = sorted(p for p in (maildir / "cur").iterdir() if p.name[0] != ".")
    assert [Path(str(o["file"])).name for o in cur] == [p.name for p in in_cur]
    one = in_cur[0]
    assert [Path(str(o["file"])).name for o in run_explain(one)] == [one.name]

    plain = tmp_path / "export"
    plain.mkdir()
    (plain / "message").write_bytes(one.read_bytes())
    (plain / "other.eml").write_bytes(one.read_bytes())
    (plain / "notes.txt").write_text("not a mail", encoding="utf-8")
    assert [Path(str(o["file"])).name for o in run_explain(plain)] == ["message", "other.eml"]


def test_explain_on_a_folder_without_mail_says_what_it_looks_for(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    result = run_main(RULES, "explain", str(tmp_path))
    assert result.returncode == 2
    assert "no mail here" in result.stderr and "Maildir" in result.stderr


def test_explain_of_an_empty_path_is_refused_not_read_as_the_current_folder() -> None:
    """`explain ""` (an unset shell variable) read the current folder — a checkout's
    Containerfile explained as a mail. It is a usage error naming what to give."""
    result = run_main(RULES, "explain", "")
    assert result.returncode == 2
    assert "empty: name a mail file, a folder of them or a Maildir" in result.stderr
    assert result.stdout == ""


def test_a_retry_of_an_unknown_mail_prints_no_empty_table(tmp_path: Path) -> None:
    """`quarantine retry 42` with no row #42 (a typo): the error and the summary, not the
    processed mails' table header over nothing, which reads as if something ran."""
    from test_status import offline_config

    retried = run_main(offline_config(tmp_path), "quarantine", "retry", "42")
    assert retried.returncode == 1
    assert retried.stderr.splitlines() == ["error: #42: no recorded mail #42"]
    assert retried.stdout.splitlines() == ["0 retried, 0 still quarantined, 1 not found"]
