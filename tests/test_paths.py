"""Relative paths in rules.yaml resolve beside rules.yaml, whatever the working directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rulesfile import dump_rules, load_rules
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail

from mailbot.config import config_from_mapping, load_config

ROOT = Path(__file__).resolve().parent.parent


def rules(**changes: object) -> dict[str, object]:
    data: dict[str, object] = load_rules()
    data.update(changes)
    return data


def test_every_relative_path_resolves_beside_the_config(tmp_path: Path) -> None:
    folder = tmp_path / "etc" / "mailbot"
    folder.mkdir(parents=True)
    data = rules(database="sqlite:///var/mailbot.db", templates="tpl", agents="people.yaml")
    data["smtp"] = {**data["smtp"], "password_file": "secrets/smtp", "ca_file": "ca.pem"}  # type: ignore[dict-item]
    data["smtp"].pop("password_env")  # type: ignore[attr-defined]
    path = folder / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")

    config = load_config(path)
    assert config.database == f"sqlite:///{folder / 'var' / 'mailbot.db'}"
    assert config.templates == folder / "tpl"
    assert config.agents == folder / "people.yaml"
    assert config.smtp.password_file == folder / "secrets" / "smtp"
    assert config.smtp.ca_file == folder / "ca.pem"
    assert config.mailboxes["general"].imap.password_file is None  # env, untouched


def test_absolute_paths_and_other_databases_are_kept(tmp_path: Path) -> None:
    for url in (
        f"sqlite:///{tmp_path / 'abs.db'}",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://mailbot:secret@db.example/mailbot",
    ):
        assert config_from_mapping(rules(database=url), "x.yaml", base=tmp_path).database == url
    relative = config_from_mapping(rules(database="sqlite:///var/x.db"), "x.yaml")
    assert relative.database == "sqlite:///var/x.db"  # no base given: left as written


def test_run_from_another_directory_uses_the_database_beside_rules_yaml(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    """`cd elsewhere && mailbot --config ../conf/rules.yaml ...`: the database, templates,
    agents and password files are the ones next to rules.yaml, not under `elsewhere`."""
    conf = tmp_path / "conf"
    elsewhere = tmp_path / "elsewhere"
    (conf / "secrets").mkdir(parents=True)
    elsewhere.mkdir()
    (conf / "templates").symlink_to(ROOT / "templates")
    shutil.copy(ROOT / "agents.yaml", conf / "agents.yaml")
    etrangers = dovecot.new_user("etr")
    data = rules(database="sqlite:///var/mailbot.db", reports={"weekly": {"to": []}})
    for name, user in (("general", imap_user), ("etrangers", etrangers)):
        imap = user.imap_config().model_dump(mode="json", exclude_none=True)
        shutil.copy(str(imap["password_file"]), conf / "secrets" / name)
        imap["password_file"] = f"secrets/{name}"
        data["mailboxes"][name]["imap"] = imap  # type: ignore[index]
    data["smtp"] = smtp_server.smtp_config().model_dump(mode="json", exclude_none=True)
    (conf / "rules.yaml").write_text(dump_rules(data), encoding="utf-8")

    def mailbot(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mailbot.cli", "--config", "../conf/rules.yaml", *args]
        return subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, check=False)

    check = mailbot("check")
    assert check.returncode == 0, check.stderr
    assert f"database:  sqlite:///{conf / 'var' / 'mailbot.db'}" in check.stdout
    assert mailbot("-q", "poll", "--once").returncode == 0  # empty mailboxes: state recorded
    imap_user.append(citizen_mail(1))
    polled = mailbot("-q", "poll", "--once")
    assert polled.returncode == 0, polled.stderr
    assert smtp_server.wait_for(1)[0].rcpt_tos == ("marie.dupont@example.fr",)
    assert (conf / "var" / "mailbot.db").exists()
    assert not (elsewhere / "var").exists()
    assert mailbot("-q", "poll", "--once").returncode == 0  # same database: nothing again
    assert len(smtp_server.messages) == 1
