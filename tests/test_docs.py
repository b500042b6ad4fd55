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
MODULE_REF = re.compile(r"(?:mailbot/)?((?:app|core|mail|store|render|web)(?:/\w+)*)((?:\.\w+)*)")


def module_reference(code: str) -> tuple[Path, list[str]] | None:
    """`app/intake.Pipeline.process_batch` as mailbot/app/intake and its attributes, or
    None when ``code`` names no module of mailbot (a call's arguments left out)."""
    found = MODULE_REF.fullmatch(re.sub(r"\(.*\)$", "", code).rstrip("/"))
    if found is None or "/" not in code:  # `web.enabled` is a key, `app.py` a name
        return None
    return ROOT / "mailbot" / found.group(1), [a for a in found.group(2).split(".") if a]


def module_reference_problem(path: Path, attributes: list[str]) -> str | None:
    """What is wrong with a module reference: no such module, package or attribute."""
    if attributes == ["py"]:
        return None if path.with_suffix(".py").is_file() else "no such file"
    if not path.with_suffix(".py").is_file():
        return None if path.is_dir() and not attributes else "no such module"
    target: object = importlib.import_module(
        "mailbot." + path.relative_to(ROOT / "mailbot").as_posix().replace("/", ".")
    )
    for attribute in attributes:
        if not hasattr(target, attribute):
            return f"no {attribute} in it"
        target = getattr(target, attribute)
    return None


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
