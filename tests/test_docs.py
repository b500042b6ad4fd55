"""What the README tells an operator about the shipped configuration is what ships.

The routing settings quoted in README.md drifted from rules.yaml once (round 9 changed
`default_share` and the complaint bars; the README kept round 5's): an operator tuning
them would have started from the wrong values.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import re
import shlex
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_quotes_the_shipped_combination_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sentence = readme.split("highest wins (shipped, rules.yaml:", 1)[1].split("round 9 below)")[0]
    quoted = {k: float(v) for k, v in re.findall(r"`(\w+): ([0-9.]+)`", sentence)}
    model = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))["routing"]["model"]
    assert quoted, "the README's sentence on the shipped settings was not found"
    assert {k: float(model[k]) for k in quoted} == quoted


def readme_commands() -> list[str]:
    """Every `mailbot …` line of the README's shell blocks (continuations joined, a
    leading `echo … |` dropped)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().split("| ", 1)[-1] if line.startswith("echo ") else line.strip()
            if line.startswith("mailbot "):
                found.append(line)
    return found


def as_arguments(line: str) -> list[str]:
    """The line's arguments with its optional parts taken: brackets dropped, `...`
    (more of the same) left out, the first of `a|b|c` values, `|` between options gone."""
    arguments = []
    for token in shlex.split(line, comments=True)[1:]:
        token = token.strip("[]")
        if token in ("...", "|", ""):
            continue
        arguments.append(token if token.startswith("--") else token.split("|")[0])
    return arguments


def test_every_command_the_readme_shows_is_one_mailbot_takes() -> None:
    """IT copies the README's commands: each must parse as `mailbot` parses it today
    (options renamed, removed or mistyped fail here), and an agent it names must be one
    of the shipped agents.yaml (`--agent jdupont` was refused: no such agent)."""
    from mailbot.cli import parser

    agents = yaml.safe_load((ROOT / "agents.yaml").read_text(encoding="utf-8"))["agents"]
    lines = readme_commands()
    assert len(lines) > 40
    for line in lines:
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parsed = parser().parse_args(as_arguments(line))
        except SystemExit:
            raise AssertionError(f"{line}\n{errors.getvalue()}") from None
        if getattr(parsed, "quarantine_command", None) != "dismiss":  # anyone's login name
            assert getattr(parsed, "agent", None) in (None, *agents), line


# --------------------------------------------------------------------------- checkable facts
# IT follows README.md, ARCHITECTURE.md and docs/deploy.md literally: a configuration key, a
# file, a metric, an option or an error message they give must be the code's.

DOCS = ("README.md", "ARCHITECTURE.md", "docs/deploy.md")


def inline_code(name: str) -> list[tuple[int, str]]:
    """The doc's inline `code` spans (fenced blocks left out), whitespace folded, with the
    line each starts on."""
    text = (ROOT / name).read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", lambda block: "\n" * block.group(0).count("\n"), text, flags=re.S)
    return [
        (text.count("\n", 0, span.start()) + 1, " ".join(span.group(1).split()))
        for span in re.finditer(r"`([^`]+)`", text)
    ]


def docs_inline_code() -> list[tuple[str, str]]:
    """Every inline code span of the three docs, with where it is (``README.md:42``)."""
    return [(f"{name}:{line}", code) for name in DOCS for line, code in inline_code(name)]


def inner_type(annotation: Any) -> Any:
    """What a field holds once Optional, Annotated, list and tuple are taken off."""
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated or origin in (list, tuple):
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in args if a is not type(None))
        else:
            return annotation


def config_key_exists(path: list[str]) -> bool:
    """``path`` (``polling.batch_size``, ``mailboxes.<name>.imap``, ``routing.rules[2]``) is
    a key of rules.yaml's model; a dict's segment is any key (a mailbox's name)."""
    from mailbot.config import Config

    node: Any = Config
    for segment in path:
        node = inner_type(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            fields = {field.alias or name: field for name, field in node.model_fields.items()}
            if re.sub(r"\[\d+\]$", "", segment) not in fields:
                return False
            node = fields[re.sub(r"\[\d+\]$", "", segment)].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return False
    return True


DOTTED = re.compile(r"(?<![\w./@-])([a-z_]+(?:\.(?:<\w+>|[\w-]+(?:\[\d+\])?))+)(?![\w/(])")
FILE_SUFFIXES = {"yaml", "py", "md", "csv", "db", "npz", "txt", "eml", "j2", "css", "json"}


def test_every_configuration_key_the_docs_name_is_one_rules_yaml_takes() -> None:
    """`polling.batch_size`, `status.metrics_port`, `outbox.last_error` (the table's
    column): a dotted name whose first part is a section of rules.yaml, or a table of the
    database, must be a key of the configuration's model or a column of that table."""
    from mailbot.config import Config
    from mailbot.store.schema import metadata

    sections = {field.alias or name for name, field in Config.model_fields.items()}
    named = [
        (where, key)
        for where, code in docs_inline_code()
        for key in DOTTED.findall(code)
        if key.split(".")[0] in sections | set(metadata.tables)
        and key.rsplit(".", 1)[1] not in FILE_SUFFIXES
    ]
    assert len(named) > 60
    unknown = [
        f"{where}: {key}"
        for where, key in named
        if not config_key_exists(key.split(".")) and not is_column(key)
    ]
    assert unknown == [], "\n".join(unknown)


def is_column(key: str) -> bool:
    """`outbox.last_error`: a table of the database and one of its columns."""
    from mailbot.store.schema import metadata

    table, _, column = key.partition(".")
    return table in metadata.tables and column in metadata.tables[table].c


def web_table() -> list[tuple[list[str], list[str]]]:
    """The README's table of the `web:` keys: each row's keys and their stated defaults,
    as written in backquotes (``_file`` after ``oidc.client_secret_env /`` spelt out)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| key | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        keys_cell, default_cell = line.split("|")[1:3]
        keys: list[str] = []
        for key in re.findall(r"`([^`]+)`", keys_cell):
            keys.append(keys[-1].rsplit("_", 1)[0] + key if key.startswith("_") else key)
        rows.append((keys, re.findall(r"`([^`]+)`", default_cell)))
    return rows


def test_the_readme_table_of_web_keys_gives_the_models_keys_and_defaults() -> None:
    """Each key of the console's table is a key of `web:`, and a default given per key
    (`host`, `port`: `127.0.0.1`, `8080`) is the model's (a computed one, such as
    public_url's, has none in the model and is left to the prose)."""
    rows, compared = web_table(), 0
    assert len(rows) > 10
    for keys, defaults in rows:
        assert all(config_key_exists(["web", *key.split(".")]) for key in keys), keys
        if len(defaults) != len(keys):
            continue
        for key, written in zip(keys, defaults, strict=True):
            default = web_field(key).get_default(call_default_factory=True)
            if default is not None:
                compared += 1
                assert as_written(yaml.safe_load(written)) == as_written(default), key
    assert compared >= 10


def web_field(key: str) -> FieldInfo:
    """The model's field of a key of `web:` (`local_accounts.file`)."""
    from mailbot.config import WebConfig

    model: Any = WebConfig
    *sections, name = key.split(".")
    for section in sections:
        model = inner_type(model.model_fields[section].annotation)
    return cast(FieldInfo, model.model_fields[name])


def as_written(value: object) -> str:
    """A default as a table cell shows it: a list's items separated by spaces."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def exposed_metrics() -> dict[str, set[str]]:
    """The metrics mailbot/metrics.py defines, by name, with their label names (a counter
    is exposed with ``_total`` added)."""
    tree = ast.parse((ROOT / "mailbot" / "metrics.py").read_text(encoding="utf-8"))
    found: dict[str, set[str]] = {}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and call.args):
            continue
        name = call.args[0]
        if isinstance(name, ast.Constant) and str(name.value).startswith("mailbot_"):
            labels = [k.value for k in call.keywords if k.arg == "labels"] + call.args[2:3]
            found[name.value] = {
                element.value
                for listed in labels
                if isinstance(listed, ast.List)
                for element in listed.elts
                if isinstance(element, ast.Constant)
            }
    return found


# The console's session cookie (README, "Security"), not a metric.
NOT_METRICS = {"mailbot_session"}


def test_every_metric_the_docs_name_is_one_the_worker_exposes_with_those_labels() -> None:
    """An alert rule written from docs/deploy.md's `mailbot_passed_over{mailbox}` must find
    that metric, with those labels, on /metrics."""
    exposed = exposed_metrics()
    named = [
        (where, match)
        for where, code in docs_inline_code()
        for match in re.finditer(r"(?<![\w-])(mailbot_\w+)(?:\{([\w,]+)\})?", code)
        if match.group(1) not in NOT_METRICS
    ]
    assert len(named) > 15
    wrong = []
    for where, match in named:
        name, labels = match.group(1), match.group(2)
        base = name if name in exposed else name.removesuffix("_total")
        if base not in exposed or (labels is not None and set(labels.split(",")) != exposed[base]):
            wrong.append(f"{where}: {match.group(0)}")
    assert wrong == [], f"exposed: {exposed}"


def test_the_readme_table_of_ar_rules_is_the_policys() -> None:
    """The rule ids of "When is an AR sent?" are those `explain` and the events show,
    every one of them (a rule renamed, added or dropped in core/policy shows here)."""
    from mailbot.core.policy import RULE_IDS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| rule id | what it catches |", 1)[1].split("\n\n", 1)[0]
    listed = [
        rule
        for row in table.splitlines()[2:]
        for rule in re.findall(r"`([^`]+)`", row.split("|")[1])
    ]
    assert sorted(listed) == sorted(RULE_IDS)


REPOSITORY_ROOTS = ("mailbot/", "tests/", "scripts/", "bench/", "deploy/", "docs/", "templates/")
# Made by scripts/setup-tests (npm ci), not in the repository.
INSTALLED = {"tests/web/node_modules"}
MODULE_REF = re.compile(
    r"(?:mailbot/)?((?:app|config|core|mail|store|render|web)(?:/\w+)*)((?:\.\w+)*)"
)


def module_reference(code: str) -> tuple[Path, list[str]] | None:
    """`app/intake.Pipeline.process_batch` as mailbot/app/intake and its attributes, or
    None when ``code`` names no module of mailbot (a call's arguments left out)."""
    found = MODULE_REF.fullmatch(re.sub(r"\(.*\)$", "", code).rstrip("/"))
    if found is None or "/" not in code:  # `web.enabled` is a key, `app.py` a name
        return None
    return ROOT / "mailbot" / found.group(1), [a for a in found.group(2).split(".") if a]


def module_reference_problem(path: Path, attributes: list[str]) -> str | None:
    """What is wrong with a module reference: no such module, package or attribute, or
    an attribute defined elsewhere (`app/intake.Pipeline._decide` once the method moved
    to a mixin in app/deciding: the reader opening intake.py finds no such method)."""
    if attributes == ["py"]:
        return None if path.with_suffix(".py").is_file() else "no such file"
    if not path.with_suffix(".py").is_file():
        return None if path.is_dir() and not attributes else "no such module"
    module = "mailbot." + path.relative_to(ROOT / "mailbot").as_posix().replace("/", ".")
    target: object = importlib.import_module(module)
    home = module
    for attribute in attributes:
        found = attribute_of(target, attribute)
        if found is None:
            return f"no {attribute} in it"
        target, home = found
    return None if home == module else f"defined in {home}"


def attribute_of(owner: object, attribute: str) -> tuple[object, str] | None:
    """``owner``'s ``attribute`` and the module whose source defines it: a method's
    class along the MRO (a mixin's module), a class's or function's own module (not the
    module re-exporting it); a dataclass's or model's field (an annotation) counts."""
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if attribute in vars(klass) or attribute in vars(klass).get("__annotations__", {}):
                return getattr(owner, attribute, None), klass.__module__
    if not hasattr(owner, attribute):
        return None
    value = getattr(owner, attribute)
    if isinstance(value, type | types.FunctionType):
        return value, value.__module__
    return value, getattr(owner, "__module__", getattr(owner, "__name__", ""))


def test_every_file_and_module_the_docs_name_exists() -> None:
    """`deploy/mailbot@.service`, `tests/test_retention.py`, `templates/i18n/<lang>.yaml`
    (a pattern: one at least), `store/console.owner_locked`: each is there."""
    problems, checked = [], 0
    for where, code in docs_inline_code():
        if (
            code.startswith(REPOSITORY_ROOTS)
            and " " not in code
            and code.rstrip("/") not in INSTALLED
        ):
            checked += 1
            if not list(ROOT.glob(re.sub(r"<[^>]*>|…", "*", code.rstrip("/")))):
                problems.append(f"{where}: {code}: no such path")
        elif (reference := module_reference(code)) is not None:
            checked += 1
            if (problem := module_reference_problem(*reference)) is not None:
                problems.append(f"{where}: {code}: {problem}")
    assert checked > 150
    assert problems == [], "\n".join(problems)


def command_of(
    top: argparse.ArgumentParser, words: list[str]
) -> tuple[argparse.ArgumentParser, list[str]] | None:
    """The (sub)command of ``top`` that ``words`` name (`routing train --cache DIR`,
    `mailbot check --connect`) and the words after it; None when they name none."""
    words = words[1:] if words[:1] == ["mailbot"] else words
    words = words[2:] if words[:1] == ["--config"] else words
    current, depth = top, 0
    while words:
        commands = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not commands or words[0] not in commands[0].choices:
            break
        current, words, depth = commands[0].choices[words[0]], words[1:], depth + 1
    return (current, words) if depth else None


def test_every_option_the_docs_give_a_command_is_one_it_takes() -> None:
    """`poll --once`, `check --connect`, `routing train --keep-service-from`: written in
    the prose, each option must be one of that command's (a renamed or dropped option
    shows here, as the README's command blocks do in the test above)."""
    from mailbot.cli import parser

    mailbot = parser()
    top = {option for action in mailbot._actions for option in action.option_strings}
    checked, unknown = 0, []
    for where, code in docs_inline_code():
        found = command_of(mailbot, code.split())
        if found is None:
            continue
        command, rest = found
        takes = top | {option for action in command._actions for option in action.option_strings}
        for word in rest:
            if word.startswith("--"):
                checked += 1
                if word.split("=", 1)[0] not in takes:
                    unknown.append(f"{where}: {code}: {word}")
    assert checked > 25
    assert unknown == [], "\n".join(unknown)


def fenced_commands(name: str) -> list[str]:
    """Every mailbot command line of a doc's fenced blocks, as IT types it: a shell
    prompt's `$ ` and the command's directory (`/opt/mailbot/venv/bin/`) dropped."""
    text = (ROOT / name).read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.match(r"(?:\$ )?(?:/\S*/)?mailbot (.*)", line.strip())
            if command and as_arguments(f"mailbot {command.group(1)}"):
                found.append(f"mailbot {command.group(1)}")
    return found


def test_every_command_the_deployment_guide_shows_is_one_mailbot_takes() -> None:
    """docs/deploy.md's commands (the install's check, `restored`, `outbox retry
    --failed --since … --dry-run`) parse as `mailbot` parses them today."""
    from mailbot.cli import parser

    lines = fenced_commands("docs/deploy.md")
    assert len(lines) >= 6
    for line in lines:
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parser().parse_args(as_arguments(line))
        except SystemExit:
            raise AssertionError(f"{line}\n{errors.getvalue()}") from None


# The mistake behind each configuration error the README quotes, by the key it names.
MISTAKES: dict[str, Callable[[dict[str, Any]], None]] = {
    "mailboxes.general.imap.port": lambda rules: rules["mailboxes"]["general"]["imap"].update(
        port="nine"
    ),
    "routing.rules[2].when": lambda rules: rules["routing"]["rules"][2].update(
        when={"regex": "(unclosed"}
    ),
    "routing.implicit_decisions.etrangers.rendez-vous.delay": lambda rules: rules["routing"].update(
        implicit_decisions={
            "etrangers": {"rendez-vous": {"decision": "rejet", "delay": "deux mois"}}
        }
    ),
    "reports.weekly.cron": lambda rules: rules["reports"]["weekly"].update(cron="lundi 8h"),
}


def test_the_configuration_errors_the_readme_quotes_are_mailbots_words() -> None:
    """`rules.yaml: mailboxes.general.imap.port: …`: IT matches the error it gets with the
    one the README shows; each is made again from its mistake and compared word for word
    (pydantic's wording and the regex module's have changed under them before)."""
    from mailbot.config import config_from_mapping
    from mailbot.errors import ConfigError

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quoted = [code for _line, code in inline_code("README.md") if code.startswith("rules.yaml: ")]
    blocks = "".join(re.findall(r"```[a-z]*\n(.*?)```", readme, re.S))
    quoted += re.findall(r"^(rules\.yaml: .*)$", blocks, re.M)
    by_key = {example.split(": ")[1]: example for example in quoted}
    assert set(by_key) == set(MISTAKES)
    for key, example in by_key.items():
        rules = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
        MISTAKES[key](rules)
        try:
            config_from_mapping(rules, "rules.yaml", ROOT)
        except ConfigError as error:
            assert str(error) == example
        else:
            raise AssertionError(f"{key}: the mistake loads")


# --------------------------------------------------------------------------- ARCHITECTURE.md's map
# The day the largest modules were split into one per concept, each split appended its
# modules to ARCHITECTURE.md's package table (rows of 700-2,900 characters) and methods
# moved into mixins under prose still naming their old homes. The map names every module,
# in its package's section; each name the document gives is where it says.

MAILBOT = ROOT / "mailbot"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"


def mailbot_modules() -> set[str]:
    """Every module of mailbot as the docs name it (`app/deciding`, `cli`); packages'
    `__init__` and the Alembic migrations (a revision is no concept) left out."""
    return {
        path.relative_to(MAILBOT).with_suffix("").as_posix()
        for path in MAILBOT.rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.relative_to(MAILBOT).parts
    }


def package_map() -> list[tuple[str, list[str]]]:
    """The `## The packages` section's subsections: each heading's package (`app/`, or ""
    for the top-level modules: faces, shared helpers) and the inline code under it."""
    text = re.sub(r"```.*?```", "", ARCHITECTURE.read_text(encoding="utf-8"), flags=re.S)
    packages = text.partition("\n## The packages\n")[2].split("\n## ", 1)[0]
    sections = []
    for section in packages.split("\n### ")[1:]:
        heading, _, body = section.partition("\n")
        package = re.search(r"`(\w+)/`", heading)
        spans = [" ".join(code.split()) for code in re.findall(r"`([^`]+)`", body)]
        sections.append((package.group(1) + "/" if package else "", spans))
    return sections


def modules_named() -> set[str]:
    """The modules ARCHITECTURE.md names: by path anywhere (`app/deciding`, `cli.py`,
    `store/console.owner_locked`), or by their bare name in their package's section."""
    named = set()
    for _where, code in inline_code("ARCHITECTURE.md"):
        path = re.sub(r"\(.*\)$", "", code).removeprefix("mailbot/")
        if "/" in path or path.endswith(".py"):  # a bare `demo` is the command
            named.add(path.removesuffix(".py").split(".")[0])
    for package, spans in package_map():
        named |= {package + code for code in spans if re.fullmatch(r"\w+", code)}
    return named


def test_architecture_names_every_module_in_its_package() -> None:
    """A newcomer looks a module up in the map: each module of mailbot is there (a
    split's new module too), under its package's heading or by its path."""
    missing = sorted(mailbot_modules() - modules_named())
    assert missing == [], "modules ARCHITECTURE.md does not name:\n" + "\n".join(missing)
    assert len(package_map()) >= 8


def classes_of_mailbot() -> dict[str, list[str]]:
    """Each class name defined in mailbot and the modules defining it (a name may be
    defined twice: `Where` is one class, `Sent` two)."""
    found: dict[str, list[str]] = {}
    for module in sorted(mailbot_modules()):
        tree = ast.parse((MAILBOT / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append("mailbot." + module.replace("/", "."))
    return found


# `Class.attr` / `module.attr` spans that look like a name of mailbot's and are not, with why.
NOT_MAILBOT_NAMES = {
    "app.outbox.deliver_due()": "a face's `App` (app/context) and its outbox, not web/app",
}
BARE = re.compile(r"([A-Za-z_]\w*)((?:\.\w+)+)(?:\(.*\))?")


def owners_named(first: str, classes: dict[str, list[str]]) -> list[object] | None:
    """What `first` of `first.attr` may be: mailbot's classes of that name, or modules of
    that name (`requests`, `backend`); None when it names no such thing by its form (a
    key of rules.yaml, a table: `polling.batch_size`, `folders.transient_uid`; `app.outbox`,
    a variable)."""
    from mailbot.config import Config
    from mailbot.store.schema import metadata

    if first[0].isupper():
        modules = [importlib.import_module(module) for module in classes.get(first, [])]
        return [getattr(module, first) for module in modules if hasattr(module, first)]
    if first in {field.alias or name for name, field in Config.model_fields.items()}:
        return None
    named = [m for m in sorted(mailbot_modules()) if m.rsplit("/", 1)[-1] == first]
    if first in metadata.tables or not named:
        return None
    return [importlib.import_module("mailbot." + m.replace("/", ".")) for m in named]


def resolved(owner: object, attributes: list[str]) -> tuple[object, str] | None:
    """The object ``attributes`` lead to from ``owner`` and its defining module."""
    found: tuple[object, str] | None = (owner, getattr(owner, "__module__", ""))
    for attribute in attributes:
        found = attribute_of(found[0], attribute) if found is not None else None
    return found


def dotted_problem(code: str) -> str | None:
    """`mailbot.web.demo.demo_settings`: the longest importable module, then attributes."""
    parts = code.split(".")
    for cut in range(len(parts), 0, -1):
        with contextlib.suppress(ModuleNotFoundError):
            module = importlib.import_module(".".join(parts[:cut]))
            return None if resolved(module, parts[cut:]) is not None else "no such attribute"
    return "no such module"


def bare_reference_problem(code: str, classes: dict[str, list[str]]) -> str | None:
    """What is wrong with `Pipeline.start_folder`, `requests.permit`, `mailbot.config`,
    `fresh.py`: no class, module or attribute of that name in mailbot (None: fine, or not
    a name of mailbot's by its form)."""
    found = BARE.fullmatch(code)
    if found is None or code in NOT_MAILBOT_NAMES:
        return None
    first, attributes = found.group(1), found.group(2).split(".")[1:]
    if first == "mailbot":
        return dotted_problem(re.sub(r"\(.*\)$", "", code))
    owners = owners_named(first, classes)
    if owners is None or attributes[-1] in FILE_SUFFIXES:
        return None
    if not owners:
        return "no such class in mailbot"
    if any(resolved(owner, attributes) is not None for owner in owners):
        return None
    return f"no {'.'.join(attributes)} in any {first}"


def test_every_class_and_module_name_the_architecture_gives_exists() -> None:
    """`Pipeline.start_folder`, `Transaction.take_over_mail`, `Store.session()`,
    `requests.permit_again`: each is an attribute of one of mailbot's classes or modules
    of that name (a method a split renamed or dropped shows here; a method's module is
    checked where the document writes it, `app/deciding.Deciding._decide`)."""
    classes = classes_of_mailbot()
    checked, problems = 0, []
    for line, code in inline_code("ARCHITECTURE.md"):
        if BARE.fullmatch(code) and module_reference(code) is None:
            checked += 1
            if (problem := bare_reference_problem(code, classes)) is not None:
                problems.append(f"ARCHITECTURE.md:{line}: {code}: {problem}")
    assert checked > 40
    assert problems == [], "\n".join(problems)


SAID_WHERE = re.compile(r"`([A-Z]\w*(?:\.\w+)+)(?:\(\))?`(?: \(| in | is in )`([a-z]+/\w+)`")


def said_where_problems(text: str, classes: dict[str, list[str]]) -> tuple[int, list[str]]:
    """How many methods ``text`` says the module of, and those it says wrong."""
    said = SAID_WHERE.findall(re.sub(r"\s+", " ", text))
    wrong = []
    for name, module in said:
        first, *attributes = name.split(".")
        homes = {
            found[1]
            for owner in owners_named(first, classes) or []
            if (found := resolved(owner, attributes)) is not None
        }
        if "mailbot." + module.replace("/", ".") not in homes:
            wrong.append(f"{name} ({module}): defined in {sorted(homes) or 'nothing'}")
    return len(said), wrong


def test_a_method_said_to_be_in_a_module_is_defined_there() -> None:
    """`Pipeline.start_folder` (`app/folders`), `Store.batch()` in `store/engines`: the
    module said right after a method is the one defining it (a mixin's), where a reader
    opens it."""
    said, wrong = said_where_problems(
        ARCHITECTURE.read_text(encoding="utf-8"), classes_of_mailbot()
    )
    assert said >= 8
    assert wrong == [], "\n".join(wrong)


def reference_problem(code: str) -> str | None:
    """``code``'s problem as a module reference (the self-test's are all module references)."""
    reference = module_reference(code)
    assert reference is not None
    return module_reference_problem(*reference)


def test_the_reference_checks_catch_what_they_should() -> None:
    """A method moved to a mixin but named in its old module, a module that is no more,
    a method that never was, a mixin's method said to be in its class's module: each is
    reported; the same names written right are not."""
    classes = classes_of_mailbot()
    assert reference_problem("app/intake.Pipeline._decide") == "defined in mailbot.app.deciding"
    assert reference_problem("app/deciding.Deciding._decide") is None
    assert reference_problem("mail/compose.build_email") == "defined in mailbot.mail.outgoing_mail"
    assert reference_problem("app/nowhere") == "no such module"
    assert bare_reference_problem("Pipeline._decide", classes) is None
    assert bare_reference_problem("Pipeline._decides", classes) is not None
    assert bare_reference_problem("Pipelines.process", classes) == "no such class in mailbot"
    assert bare_reference_problem("requests.permit_again", classes) is None
    assert bare_reference_problem("requests.permit_twice", classes) is not None
    assert bare_reference_problem("polling.batch_size", classes) is None
    assert bare_reference_problem("mailbot.config.Config", classes) is None
    assert bare_reference_problem("mailbot.config.Konfig", classes) is not None
    assert said_where_problems("`Pipeline._decide` in `app/deciding`", classes) == (1, [])
    assert said_where_problems("`Store.batch()` (`store/database`)", classes)[1] != []
    assert "app/deciding" in mailbot_modules() and "store/migrations/env" not in mailbot_modules()
