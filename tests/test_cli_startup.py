"""The command line starts without the heavy libraries (issue 14, point 9).

`mailbot --help` must be instant: importing ``mailbot.cli`` loads argparse and mailbot's light
modules only; each command imports what it needs when it runs. Checked in a fresh
interpreter, on the modules it has loaded (a behaviour, not a timing).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from fresh_imports import modules_after
from rulesfile import dump_rules, load_rules
from servers import MailUser, SmtpServer
from test_e2e import citizen_mail, etrangers_user, write_config

__all__ = ["etrangers_user"]

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("sqlalchemy", "jinja2", "numpy", "pydantic", "alembic", "lingua", "yaml", "tqdm")


def loaded_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter loaded after ``code``."""
    return {name.split(".")[0] for name in modules_after(code)}


def test_importing_the_cli_loads_no_heavy_library() -> None:
    assert loaded_after("import mailbot.cli") & set(HEAVY) == set()


def test_help_loads_no_heavy_library_and_lists_every_command() -> None:
    code = (
        "import contextlib, io\nfrom mailbot.cli import main\nout = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\nprint(out.getvalue(), file=sys.stderr)"
    )
    assert loaded_after(code) & set(HEAVY) == set()
    run = subprocess.run(
        [sys.executable, "-m", "mailbot.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    for command in ("poll", "run", "explain", "indicators", "report", "web", "routing"):
        assert command in run.stdout


def test_a_command_whose_help_lists_its_subcommands_lists_them_all() -> None:
    """`mailbot --help` is what IT reads first: "quarantine … list, show, retry" hid
    `dismiss`, the only way to close a mail passed over."""
    import argparse

    from mailbot.cli import parser

    def subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
        (found,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        return found

    top = subparsers(parser())
    helps = {choice.dest: choice.help or "" for choice in top._choices_actions}
    listed = {  # "…: list, show, retry": the help ends with a list of words
        name: [word.strip() for word in text.rsplit(": ", 1)[-1].split(",")]
        for name, text in helps.items()
        if re.fullmatch(r".*: [a-z-]+(, [a-z-]+)+", text)
    }
    assert set(listed) == {"templates", "quarantine", "routing"}
    for name, names in listed.items():
        assert names == list(subparsers(top.choices[name]).choices), name


def test_a_command_still_loads_what_it_needs() -> None:
    """The probe sees a heavy library once a command has run: the check above is not blind."""
    code = (
        "import contextlib, io\nfrom mailbot.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--config', 'rules.yaml', 'templates', 'list'])"
    )
    assert {"pydantic", "jinja2", "yaml"} <= loaded_after(code)


def test_a_report_written_builds_no_intake(tmp_path: Path) -> None:
    """`report weekly --out` draws its chart and builds no intake pipeline (its routing,
    language models, SMTP client): only `--send` needs the whole application."""

    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'r.db'}"
    data["templates"] = str(ROOT / "templates")
    config = tmp_path / "rules.yaml"
    config.write_text(dump_rules(data), encoding="utf-8")
    args = ["--config", str(config), "-q", "report", "weekly", "--week", "2026-W47"]
    args += ["--as-of", "2026-11-25", "--out", str(tmp_path / "out")]
    code = (
        "import contextlib, io\nfrom mailbot.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main({args!r}) == 0"
    )
    loaded = modules_after(code)
    assert (tmp_path / "out" / "rapport-2026-W47.png").read_bytes()[:4] == b"\x89PNG"
    assert {"matplotlib", "jinja2"} <= {name.split(".")[0] for name in loaded}
    heavy = {"lingua", "aiosmtplib", "mailbot.app.intake", "mailbot.core.routing"}
    assert loaded & heavy == set()


# What `poll --once` must not load for a French mail on a database at the schema's head:
# migrations (Alembic) or the creation of a new database (store.fresh), the scheduler of
# `run`, lingua (the French fast path decides), the console's web stack, the indicators'
# and reports' code, the metrics endpoint; the
# `holidays` package (the AR's deadline reads the holidays the first poll kept in the cache);
# Babel's dates (French dates are written from core.dates' own names); numpy and the
# routing's learned half (the routing helper, forked at start-up, loads the model and decides).
POLL_NEVER = {
    "numpy",
    "mailbot.core.classifier",
    "mailbot.core.combine",
    "alembic",
    "holidays",
    "babel.dates",
    "apscheduler",
    "lingua",
    "matplotlib",
    "flufl",  # non-DSN bounces only (core/bounces)
    "tqdm",
    "starlette",
    "uvicorn",
    "authlib",
    "prometheus_client",
    "mailbot.app.indicators",
    "mailbot.app.report",
    "mailbot.metrics",
    "mailbot.store.fresh",
}


def _poll_code(config: Path, *extra: str) -> str:
    args = ["--config", str(config), "-q", "poll", "--once", *extra]
    return f"from mailbot.cli import main\nassert main({args!r}) == 0"


def test_poll_once_loads_only_what_a_first_mail_needs(
    tmp_path: Path, imap_user: MailUser, etrangers_user: MailUser, smtp_server: SmtpServer
) -> None:
    """Real Dovecot and aiosmtpd, a fresh interpreter per poll: the first poll creates the
    database from the models (``mailbot.store.fresh`` loaded: the probe sees it; no
    Alembic, no migration replayed), the second one finds it at head and answers a French
    mail without loading any of ``POLL_NEVER``."""
    config = write_config(tmp_path, imap_user, etrangers_user, smtp_server)
    imap_user.append(citizen_mail(1))
    created = modules_after(_poll_code(config, "--acknowledge-existing"))
    assert "mailbot.store.fresh" in created
    assert "alembic" not in {name.split(".")[0] for name in created}
    imap_user.append(citizen_mail(2, sender="paul.martin@example.fr"))
    loaded = modules_after(_poll_code(config))
    received = smtp_server.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in received) == [
        "marie.dupont@example.fr",
        "paul.martin@example.fr",
    ]
    found = loaded | {name.split(".")[0] for name in loaded}
    assert found & POLL_NEVER == set()
    assert {"sqlalchemy", "jinja2", "aiosmtplib", "imapclient"} <= found  # it did the work


def test_sqlite_loads_no_postgresql_dialect_and_postgresql_keeps_its_partial_indexes() -> None:
    """The partial indexes' PostgreSQL WHERE is set when a PostgreSQL engine is made, so
    that a start on SQLite does not import SQLAlchemy's PostgreSQL dialect."""
    from sqlalchemy.schema import CreateIndex

    from mailbot.store import Store, metadata

    assert "sqlalchemy.dialects.postgresql" not in modules_after("import mailbot.store")
    engine = Store._create_engine("postgresql+psycopg://mailbot@localhost/mailbot")
    indexes = {index.name: index for table in metadata.tables.values() for index in table.indexes}
    ddl = {
        name: str(CreateIndex(indexes[name]).compile(dialect=engine.dialect))
        for name in ("ix_messages_open",)  # ix_outbox_unpurged went with outbox.raw (0018)
    }
    assert ddl["ix_messages_open"].endswith("WHERE first_reply_at IS NULL")
    engine.dispose()


def test_a_year_s_first_reference_on_sqlite_loads_no_postgresql_dialect(tmp_path: Path) -> None:
    """The first reference of a year makes its counter row (INSERT … ON CONFLICT): on a
    database at head, that is a start's first mail, and it used to import both dialects."""
    from mailbot.store import Store

    url = f"sqlite:///{tmp_path / 'at-head.db'}"
    Store(url).close()  # created at head here: the probe below migrates nothing
    probe = (
        "from mailbot.store import Store\n"
        f"store = Store({url!r})\n"
        "with store.transaction() as tx:\n"
        "    name, value = tx.reserve_numbers('SM', 2031)\n"
        "assert (name, value) == ('reference-SM-2031', 0)\n"
        "store.close()"
    )
    loaded = modules_after(probe)
    assert "sqlalchemy.dialects.sqlite" in loaded  # it did make the row
    assert "sqlalchemy.dialects.postgresql" not in loaded
    assert "alembic" not in {name.split(".")[0] for name in loaded}


def test_the_console_exits_quickly_with_all_its_output_and_its_code(tmp_path: Path) -> None:
    """`console` skips the interpreter's teardown: the output, to a pipe, is still whole,
    the exit code the command's, the error on stderr (``os._exit`` flushes nothing itself)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONUNBUFFERED", None)  # block-buffered output, as in production
    args = [sys.executable, "-m", "mailbot.cli", "--config", "rules.yaml", "templates", "list"]
    listed = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert listed.returncode == 0, listed.stderr
    names = sorted(path.parent.name for path in (ROOT / "templates").glob("*/meta.yaml"))
    assert names and all(f"\n{name} " in listed.stdout for name in names)
    assert listed.stdout.rstrip().splitlines()[-1].startswith("  ")  # the last translation line
    missing = tmp_path / "absent.yaml"
    args = [sys.executable, "-m", "mailbot.cli", "--config", str(missing), "check"]
    failed = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: ") and str(missing) in failed.stderr


def _blas_threads(**env: str) -> tuple[str, int]:
    """``OPENBLAS_NUM_THREADS`` as a command sees it under ``console`` (a fresh interpreter),
    and the threads of numpy's OpenBLAS once the command has imported numpy."""
    code = (
        "import os, sys\nimport mailbot.cli as cli\n"
        "def main():\n"
        "    import numpy, threadpoolctl\n"
        "    pools = threadpoolctl.threadpool_info()\n"
        "    threads = [p['num_threads'] for p in pools if p['internal_api'] == 'openblas']\n"
        "    print(os.environ['OPENBLAS_NUM_THREADS'], threads[0])\n"
        "    return 0\n"
        "cli.main = main\ncli.console()"
    )
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(base, PYTHONPATH=str(ROOT), **env),
    )
    value, threads = run.stdout.split()
    return value, int(threads)


def test_the_console_runs_numpy_on_one_thread_unless_the_operator_says_otherwise() -> None:
    """OpenBLAS starts its threads when numpy is imported: ``console`` asks for one before
    any command imports numpy (issue 14, point 9); an operator's own value wins."""
    assert _blas_threads() == ("1", 1)
    assert _blas_threads(OPENBLAS_NUM_THREADS="2") == ("2", 2)
