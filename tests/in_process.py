"""A `mailbot` command run in the test's process: ``cli.main`` with the command's
arguments, its exit status, output and errors returned as a finished process's.

A command in a process of its own costs ~1 to 2.5 s of CPU before its first line (the
interpreter, SQLAlchemy, pydantic, scikit-learn imported again; lingua's models loaded
again for a mail not clearly French). Tests about what a command does, not about the
process (pipes, signals, start-up, memory: those keep theirs), run it here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
from pathlib import Path


def run_main(config: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """``mailbot --config CONFIG ARGS``; argparse's refusals (SystemExit) give their status.
    The logging ``main`` sets up for the command is put back as it was, so that no later
    test of the worker writes to this call's captured streams."""
    from mailbot.cli import main

    argv = ["--config", str(config), *args]
    root, ours = logging.getLogger(), logging.getLogger("mailbot")
    handlers, level = root.handlers[:], ours.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit:  # argparse: status 2, the usage on stderr
                code = exit.code if isinstance(exit.code, int) else 1
    finally:
        root.handlers[:] = handlers
        ours.setLevel(level)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
