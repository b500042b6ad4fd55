"""The code stays ruff- and mypy-clean: CI fails otherwise."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_check_and_format() -> None:
    lint = run(sys.executable, "-m", "ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


# A reference cut off right after its year ("SM-2026-", "[ETR-2027-"): the shape of "whatever
# number mailbot allocated this year", i.e. a test assuming the current year.
REFERENCE_AT_YEAR = re.compile(r"\b[A-Z]{1,6}-20\d\d-(?!\d)")


def year_prefixes(source: str) -> list[tuple[int, str]]:
    """String literals ending a reference at a literal year. Parts of f-strings are left
    out: f"SM-<year>-{n:06d}" builds fixture data with the test's own fixed dates."""
    tree = ast.parse(source)
    in_fstrings = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in in_fstrings
        and REFERENCE_AT_YEAR.search(node.value)
    ]


def test_no_test_assumes_the_current_year() -> None:
    """Tests must not break on 1 January: a reference mailbot allocated is matched with the
    year of the date the test controls (f"SM-{received.year}-") or of the mail's
    INTERNALDATE (test_e2e.received_year), never with this year written down. Full
    references ("SM-2026-000123") stay allowed: they are data the test wrote itself."""
    offenders = [
        f"{path.name}:{line}: {text!r}"
        for path in sorted((ROOT / "tests").glob("*.py"))
        for line, text in year_prefixes(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "a literal year in a reference prefix:\n" + "\n".join(offenders)


def test_the_year_check_catches_what_it_should() -> None:
    year = "2026"  # interpolated, so that this test's own source passes the check above
    assert year_prefixes(f'assert subject.startswith("Accusé de réception [SM-{year}-")')
    assert year_prefixes(f'prefix = "reference=SM-{year}-"')
    assert not year_prefixes(f'assert ref == "SM-{year}-000123"')
    assert not year_prefixes(f'rows = [f"SM-{year}-{{n:06d}}" for n in range(3)]')
    assert not year_prefixes('assert subject.startswith(f"[SM-{received.year}-")')


# --------------------------------------------------------------------------- statuses

MAILBOT = ROOT / "mailbot"
STATUSES = MAILBOT / "core" / "statuses.py"
MIGRATIONS = MAILBOT / "store" / "migrations"
LOG_METHODS = {"debug", "info", "warning", "error", "critical", "exception"}
# Calls whose first argument names something else: a column, a mail header.
NAMING_CALLS = {"Column", "header", "has_header"}
# "none" is ArStatus.NONE, and the English word in many messages ("known: none").
NOT_CHECKED = {"none"}
# Words that are statuses *and* something else here: a policy rule id, a language code, a
# CLI command, an indicator's name. Allowed only in these modules, for that other meaning.
OTHER_MEANINGS = {
    "core/policy.py": {"follow-up", "no-return-path", "reply"},  # rule ids, header keyword
    "core/language.py": {"ar"},  # Arabic
    "core/indicators.py": {"received", "pending", "transferred"},  # figure and column names
    "config/policy.py": {"skip", "received"},  # missing_return_path: skip; a relay check
    "cli.py": {"backfill"},  # a command
    "desk_commands.py": {"reply"},  # a command
    "figure_commands.py": {"report"},  # a command
    "quarantine_commands.py": {"quarantine"},  # a command
    "ops_commands.py": {"restored"},  # a command
    "core/workdays.py": {"forward"},  # numpy's roll="forward"
    "store/triggers.py": {"transferred"},  # a column the indicators' triggers watch
}


def status_values() -> set[str]:
    from enum import StrEnum

    from mailbot.core import statuses

    return {
        member.value
        for value in vars(statuses).values()
        if isinstance(value, type) and issubclass(value, StrEnum) and value is not StrEnum
        for member in value
    } - NOT_CHECKED


def _not_status_positions(tree: ast.AST) -> set[int]:
    """ids of string constants that cannot be statuses: docstrings, other enums' values,
    Literal[...] types, dict keys and subscripts (field names), log messages."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skipped.add(id(body[0].value))
        if isinstance(node, ast.ClassDef) and any(
            isinstance(base, ast.Name) and base.id == "StrEnum" for base in node.bases
        ):
            skipped.update(id(n) for n in ast.walk(node))
        elif isinstance(node, ast.Subscript):
            skipped.update(id(n) for n in ast.walk(node.slice))
        elif isinstance(node, ast.Dict):
            skipped.update(id(key) for key in node.keys if key is not None)
        elif (
            isinstance(node, ast.Call) and node.args and _callee(node) in LOG_METHODS | NAMING_CALLS
        ):
            skipped.add(id(node.args[0]))
    return skipped


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def status_literals(path: Path, values: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _not_status_positions(tree)
    allowed = OTHER_MEANINGS.get(path.relative_to(MAILBOT).as_posix(), set())
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in values - allowed
        and id(node) not in skipped
    ]


def test_no_status_literal_outside_the_enums() -> None:
    """Statuses, decisions, outbox kinds and event kinds are written once, in
    mailbot/core/statuses.py; everywhere else they are the enums' members."""
    values = status_values()
    offenders = [
        line
        for path in sorted(MAILBOT.rglob("*.py"))
        if path != STATUSES and MIGRATIONS not in path.parents
        for line in status_literals(path, values)
    ]
    assert offenders == [], "a status written as a bare string:\n" + "\n".join(offenders)


def test_the_status_check_catches_what_it_should(tmp_path: Path) -> None:
    values = status_values()
    sample = MAILBOT / "app" / "sample.py"  # never written: only its relative name is used
    for code in (
        'if row.decision == "acknowledge": pass',
        'tx.enqueue(None, "reply", to, sender, mid, raw)',
        'x = {"a": "pending"}',
        'kind = "follow_up"',
    ):
        tree_path = tmp_path / "sample.py"
        tree_path.write_text(code, encoding="utf-8")
        assert _literals_of(tree_path, sample, values), code
    for code in ('log.info("sent", extra={"error": 1})', 'row["received"]', '"""pending"""'):
        tree_path = tmp_path / "sample.py"
        tree_path.write_text(code, encoding="utf-8")
        assert not _literals_of(tree_path, sample, values), code


def _literals_of(source: Path, as_path: Path, values: set[str]) -> list[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    skipped = _not_status_positions(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in values
        and id(node) not in skipped
    ]


# --------------------------------------------------------------------------- short functions

MAX_FUNCTION_LINES = 60
# Declarative tables may be long: the argument parser is a list of commands and options.
LONG_BY_DESIGN = {"mailbot/cli.py:parser"}


def function_lengths() -> list[tuple[int, str]]:
    found = []
    for path in sorted(MAILBOT.rglob("*.py")):
        if MIGRATIONS in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                where = f"{path.relative_to(ROOT).as_posix()}:{node.name}"
                found.append((node.end_lineno - node.lineno + 1, where))
    return found


def test_no_function_over_60_lines() -> None:
    """Short functions (the project's standard), the argument parser's table aside."""
    offenders = [
        f"{where} ({lines} lines)"
        for lines, where in function_lengths()
        if lines > MAX_FUNCTION_LINES and where not in LONG_BY_DESIGN
    ]
    assert offenders == [], "functions over 60 lines:\n" + "\n".join(offenders)
    assert {where for _lines, where in function_lengths()} >= LONG_BY_DESIGN  # still there


# --------------------------------------------------------------------------- the import graph

# Libraries that talk to the world: the pure core imports none of them.
IO_LIBRARIES = {
    "imapclient",
    "imaplib",
    "aiosmtplib",
    "aiosmtpd",
    "smtplib",
    "socket",
    "ssl",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "sqlite3",
    "starlette",
    "uvicorn",
    "authlib",
    "httpx",
    "dkim",
    "argon2",
    "subprocess",
}
# mailbot's layers, lowest first: a module imports its own layer and those below. The
# shared modules (configuration, errors, logs, redaction) are the core's layer.
LAYERS = {
    "core": 1,
    "store": 2,
    "render": 2,
    "mail": 2,
    "app": 3,
    "cli": 4,
    "web": 4,
    "worker": 4,
    "jobs": 4,
    "demo": 4,
    "routing_commands": 4,
    "ops_commands": 4,
    "template_commands": 4,
    "desk_commands": 4,
    "figure_commands": 4,
    "quarantine_commands": 4,
    "outcomes_table": 4,
    "metrics": 4,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (no import at run time)."""
    return {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for child in ast.walk(node)
    }


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """What a module imports at run time (at the top or in a function): mailbot modules by
    their full name (``from mailbot.app import report`` → mailbot.app.report), others by
    their top-level package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update(named & modules or {node.module})
    return {name if name.startswith("mailbot") else name.split(".")[0] for name in found}


def import_graph() -> dict[str, set[str]]:
    paths = [p for p in MAILBOT.rglob("*.py") if MIGRATIONS not in p.parents]
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, modules) for path in paths}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 1) if len(parts) > 1 else 1


def test_the_core_is_pure() -> None:
    """mailbot.core imports no I/O module of mailbot's (mail, store, render, app, faces)
    and no library that does I/O."""
    offenders = [
        f"{module} imports {name}"
        for module, imported in sorted(import_graph().items())
        if module.startswith("mailbot.core")
        for name in sorted(imported)
        if (name.startswith("mailbot.") and layer(name) > 1) or name in IO_LIBRARIES
    ]
    assert offenders == [], "\n".join(offenders)


def test_each_layer_imports_only_itself_and_below() -> None:
    """core < store, render, mail < app < faces (cli, worker, jobs, demo, web)."""
    offenders = [
        f"{module} imports {name}"
        for module, imported in sorted(import_graph().items())
        for name in sorted(imported)
        if name.startswith("mailbot.") and layer(name) > layer(module)
    ]
    assert offenders == [], "\n".join(offenders)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between mailbot modules, found by a depth-first search."""
    found: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph.get(module, ())):
            if name not in graph:
                continue
            if state.get(name) == "open":
                found.append([*path[path.index(name) :], name])
            elif name not in state:
                visit(name, [*path, name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_search_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# --------------------------------------------------------------------------- faces

FACES = [
    MAILBOT / "cli.py",
    MAILBOT / "template_commands.py",
    MAILBOT / "desk_commands.py",
    MAILBOT / "figure_commands.py",
    MAILBOT / "quarantine_commands.py",
    MAILBOT / "outcomes_table.py",
    MAILBOT / "routing_commands.py",
    MAILBOT / "ops_commands.py",
    MAILBOT / "metrics.py",
    *sorted((MAILBOT / "web").rglob("*.py")),
]
NOT_IN_FACES = ("sqlalchemy", "tx.enqueue", "build_email", "email.message")


def test_the_faces_hold_no_sql_mime_or_enqueueing() -> None:
    """The CLI and the web console call use cases: no SQL, no mail building, no queueing."""
    offenders = [
        f"{path.relative_to(ROOT)}: {token}"
        for path in FACES
        for token in NOT_IN_FACES
        if token in path.read_text(encoding="utf-8")
    ]
    assert offenders == [], "\n".join(offenders)
