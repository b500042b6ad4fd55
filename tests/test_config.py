"""Configuration: the shipped rules.yaml is valid, and every mistake is located."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rulesfile import dump_rules, load_rules

from mailbot.config import load_config
from mailbot.errors import ConfigError, SecretError

ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, mutate: object) -> Path:
    data = load_rules()
    assert callable(mutate)
    mutate(data)
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(data), encoding="utf-8")
    return path


def test_shipped_rules_yaml_is_valid() -> None:
    config = load_config(ROOT / "rules.yaml")
    assert set(config.mailboxes) == {"general", "etrangers"}
    assert config.mailboxes["general"].address == "pref-contact@seine-maritime.gouv.fr"
    assert config.mailboxes["etrangers"].address == "pref-etrangers@seine-maritime.gouv.fr"
    assert config.mailboxes["general"].imap.security == "tls"
    assert config.mailboxes["general"].imap.verify_certificate is True
    assert config.smtp.security == "starttls"
    assert config.database == f"sqlite:///{ROOT / 'var' / 'mailbot.db'}"  # beside rules.yaml


@pytest.mark.parametrize(
    ("mutate", "key", "expected"),
    [
        (
            lambda d: d["mailboxes"]["general"]["imap"].update(hots="x"),
            "mailboxes.general.imap.hots",
            "unknown key",
        ),
        (
            lambda d: d["mailboxes"]["general"]["imap"].update(port="nine"),
            "mailboxes.general.imap.port",
            "integer",
        ),
        (
            lambda d: d["smtp"].update(security="ssl"),
            "smtp.security",
            "'tls', 'starttls' or 'none'",
        ),
        (
            lambda d: d["mailboxes"]["etrangers"].pop("address"),
            "mailboxes.etrangers.address",
            "required",
        ),
        (lambda d: d.update(mailboxs={}), "mailboxs", "unknown key"),
        (
            lambda d: d["mailboxes"]["general"].update(service="nowhere"),
            "mailboxes.general.service",
            "unknown service 'nowhere'",
        ),
        (
            lambda d: d["smtp"].update(security="none"),
            "smtp",
            "only allowed for a loopback",
        ),
        # Unverified TLS to another host: the password to whoever sits on the path.
        (
            lambda d: d["smtp"].update(verify_certificate=False),
            "smtp",
            "verify_certificate: false is only allowed for a loopback",
        ),
        (
            lambda d: d["mailboxes"]["general"]["imap"].update(verify_certificate=False),
            "mailboxes.general.imap",
            "verify_certificate: false is only allowed for a loopback",
        ),
        (
            lambda d: d["mailboxes"]["general"].update(address="not-an-address"),
            "mailboxes.general.address",
            "should match pattern",
        ),
        # Past a century the purge's cut-off is no date: every purge failed, check said OK.
        (
            lambda d: d.setdefault("retention", {}).update(days=3_000_000),
            "retention.days",
            "less than or equal to 36500",
        ),
        (
            lambda d: d.setdefault("retention", {}).update(days=True),
            "retention.days",
            "integer",
        ),
    ],
)
def test_errors_name_file_key_and_expectation(
    tmp_path: Path, mutate: object, key: str, expected: str
) -> None:
    path = write_config(tmp_path, mutate)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert expected in message
    assert info.value.key == key


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:/mailbot:Tr0ub4dor-pw@db.pref.local/mailbot",  # one slash
        "postgresql+psycopg ://mailbot:Tr0ub4dor-pw@db.pref.local/mailbot",  # a space
    ],
)
def test_a_database_url_that_does_not_parse_is_not_quoted_with_its_password(
    tmp_path: Path, url: str
) -> None:
    """The error reaches the terminal, the journal and `mailbot check`: the URL's shape
    helps, its password must not be there."""
    path = write_config(tmp_path, lambda d: d.update(database=url))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: database: "), message
    assert "Tr0ub4dor" not in message
    assert "db.pref.local" in message  # the rest still says which URL is at fault


def test_plaintext_allowed_on_loopback(tmp_path: Path) -> None:
    path = write_config(tmp_path, lambda d: d["smtp"].update(security="none", host="127.0.0.1"))
    assert load_config(path).smtp.security == "none"


def test_unverified_tls_allowed_on_loopback(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, lambda d: d["smtp"].update(verify_certificate=False, host="localhost")
    )
    assert load_config(path).smtp.verify_certificate is False


@pytest.mark.parametrize(
    ("host", "public_url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://localhost:8080"),
        ("::", "http://[::1]:8080"),
        ("192.0.2.10", "http://localhost:8080"),
        ("", "http://127.0.0.1:8080"),  # uvicorn's every interface too
    ],
)
def test_plain_http_console_refused_unless_it_listens_on_loopback(
    tmp_path: Path, host: str, public_url: str
) -> None:
    """A loopback public_url made cookies not Secure while the server listened on every
    interface: plain http needs both addresses on loopback."""
    web = {"host": host, "public_url": public_url}
    path = write_config(tmp_path, lambda d: d["web"].update(web))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: web: host {host!r} is not loopback"), message
    assert f"public_url {public_url!r} is plain http" in message
    assert "listen on 127.0.0.1 or use https" in message


@pytest.mark.parametrize(
    ("host", "public_url"),
    [
        ("127.0.0.1", "http://localhost:8080"),
        ("localhost", "http://127.0.0.1:8080"),
        ("::1", "http://[::1]:8080"),
        ("0.0.0.0", "https://mailbot.seine-maritime.gouv.fr"),  # behind the reverse proxy
    ],
)
def test_console_on_loopback_or_behind_https_is_accepted(
    tmp_path: Path, host: str, public_url: str
) -> None:
    web = {"host": host, "public_url": public_url}
    path = write_config(tmp_path, lambda d: d["web"].update(web))
    assert load_config(path).web.host == host


def test_invalid_yaml_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("mailboxes:\n  general: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "line " in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "absent.yaml")


def test_secret_from_env_and_file_never_in_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "smtp.pass"
    secret_file.write_text("s3cret-file\n", encoding="utf-8")

    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["smtp"].pop("password_env")
        d["smtp"]["password_file"] = str(secret_file)

    config = load_config(write_config(tmp_path, mutate))
    assert config.smtp.password() == "s3cret-file"
    assert "s3cret" not in repr(config)
    monkeypatch.setenv("MAILBOT_GENERAL_PASSWORD", "s3cret-env")
    general = load_config(ROOT / "rules.yaml").mailboxes["general"].imap
    assert general.password() == "s3cret-env"
    assert "s3cret" not in repr(general)


def test_missing_secret_names_variable_not_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILBOT_SMTP_PASSWORD", raising=False)
    config = load_config(ROOT / "rules.yaml")
    with pytest.raises(SecretError, match="MAILBOT_SMTP_PASSWORD is not set"):
        config.smtp.password()


def test_both_secret_sources_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, lambda d: d["smtp"].update(password_file="/x"))
    with pytest.raises(ConfigError, match="password_env or password_file, not both"):
        load_config(path)


# --------------------------------------------------------------------------- organisation


def test_organisation_facts_come_from_rules_yaml(tmp_path: Path) -> None:
    config = load_config(ROOT / "rules.yaml")
    assert config.organisation.general_service == "general"
    assert config.internal_sender == (
        "mailbot — Préfecture de la Seine-Maritime",
        "pref-contact@seine-maritime.gouv.fr",
    )
    assert config.complaint_category == "reclamation"

    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["organisation"] = {
            "general_service": "cabinet",
            "internal_sender": {"name": "Suivi des délais", "address": "delais@example.fr"},
        }
        d["routing"]["complaint_category"] = "suggestion"

    changed = load_config(write_config(tmp_path, mutate))
    assert changed.organisation.general_service == "cabinet"
    assert changed.internal_sender == ("Suivi des délais", "delais@example.fr")
    assert changed.complaint_category == "suggestion"


def test_organisation_defaults_keep_older_configurations_loading(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d.pop("organisation")
        d.pop("routing")
        d["mailboxes"] = {"etrangers": d["mailboxes"]["etrangers"]}

    config = load_config(write_config(tmp_path, mutate))
    assert config.organisation.general_service == "general"
    assert config.internal_sender[1] == "pref-etrangers@seine-maritime.gouv.fr"  # 1st mailbox
    assert config.complaint_category == "reclamation"


def test_an_unknown_general_service_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, lambda d: d["organisation"].update(general_service="accueil"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "organisation.general_service"
    assert "unknown service 'accueil'" in str(info.value)


def test_what_no_rule_nor_default_claims_goes_to_the_general_service(tmp_path: Path) -> None:
    from mailbot.core.facts import compiled_routing
    from mailbot.core.routing import RoutingInput, decide

    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["organisation"]["general_service"] = "cabinet"
        d["routing"]["defaults"].pop("etrangers")
        d["routing"].pop("model", None)  # rules alone: with a model, the model claims it

    config = load_config(write_config(tmp_path, mutate))
    routing = compiled_routing(config)
    assert routing is not None
    facts = RoutingInput("etrangers", "Bonjour", "Une question.", "a@example.fr", "fr", False)
    assert decide(facts, routing).service == "cabinet"


def test_outbox_claim_group_reaches_the_outbox_and_is_bounded(tmp_path: Path) -> None:
    from mailbot.app.delivery import Outbox
    from mailbot.mail.smtp import FileTransport

    config = load_config(write_config(tmp_path, lambda d: d["outbox"].update(claim_group=1)))
    outbox = Outbox(None, FileTransport(tmp_path), config.outbox, set())  # type: ignore[arg-type]
    assert outbox.claim_group == 1
    assert load_config(ROOT / "rules.yaml").outbox.claim_group == 8
    with pytest.raises(ConfigError, match=r"outbox\.claim_group"):
        load_config(write_config(tmp_path, lambda d: d["outbox"].update(claim_group=0)))


@pytest.mark.parametrize(
    "data",
    [
        "timezone: Europe/Paris\nprefecture: {name: Préfecture}\n".encode("latin-1"),
        "prefecture: {name: Préfecture}\n".encode("utf-16"),  # saved as "Unicode" by an editor
    ],
)
def test_a_file_not_in_utf8_is_a_config_error_naming_it(tmp_path: Path, data: bytes) -> None:
    """A rules.yaml saved in Latin-1 from a Windows editor ended in a traceback (exit 1)."""
    path = tmp_path / "rules.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line "), info.value
    assert "not valid UTF-8" in str(info.value)


def test_a_database_of_an_unsupported_kind_is_refused_at_its_key(tmp_path: Path) -> None:
    """mysql:// passed validation and `mailbot check` printed OK, then every command that
    opened the database ended in a traceback (the driver missing)."""
    url = "mysql://mailbot:Tr0ub4dor-pw@db.pref.local/mailbot"
    path = write_config(tmp_path, lambda d: d.update(database=url))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: database: "), message
    assert "'sqlite' or 'postgresql'" in message
    assert "Tr0ub4dor" not in message


def test_a_key_written_twice_is_refused_not_silently_overridden(tmp_path: Path) -> None:
    """A key written twice kept the last one silently: a mailbox's `service` added again
    below moved all its mail to another service, and `mailbot check` said OK."""
    text = (ROOT / "rules.yaml").read_text(encoding="utf-8")
    line = "    ar_template: ar-general\n"
    assert text.count(line) == 1
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace(line, line + "    service: etrangers\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line "), message
    assert "duplicate key 'service'" in message


def test_mailbot_check_validates_agents_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """agents.yaml naming an unknown service passed `mailbot check`; the console then
    refused every login (it fails closed on an agents.yaml that does not load)."""
    from mailbot.cli import main

    agents = tmp_path / "agents.yaml"
    agents.write_text("agents:\n  jdupont:\n    service: etrangerz\n", encoding="utf-8")
    shipped = str(ROOT / "templates")
    path = write_config(tmp_path, lambda d: d.update(agents=str(agents), templates=shipped))
    assert main(["--config", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert f"error: {agents}: agents.jdupont.service: unknown service 'etrangerz'" in err


def test_mailbot_check_warns_of_secrets_and_rights_others_may_read_or_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A password file left 0644 by a copy, or an agents.yaml anyone may write (and so make
    themselves the console's administrator): `check` says which, and what to do."""
    from mailbot.cli import main

    smtp, session = tmp_path / "smtp.pass", tmp_path / "session.secret"
    smtp.write_text("s3cret-smtp-password\n", encoding="utf-8")
    session.write_text("s" * 40, encoding="utf-8")
    agents = tmp_path / "agents.yaml"
    agents.write_text((ROOT / "agents.yaml").read_text(encoding="utf-8"), encoding="utf-8")

    def mutate(data: dict) -> None:
        data["smtp"]["password_file"] = str(smtp)
        data["smtp"].pop("password_env", None)
        data["web"]["session_secret_file"] = str(session)
        data.update(agents=str(agents), templates=str(ROOT / "templates"))

    path = write_config(tmp_path, mutate)
    for file, mode in ((smtp, 0o644), (session, 0o640), (agents, 0o666), (path, 0o644)):
        file.chmod(mode)
    assert main(["--config", str(path), "check"]) == 0
    err = capsys.readouterr().err
    assert f"warning: smtp.password_file: {smtp} holds a secret" in err
    assert "(mode 644): chmod 600 it" in err
    assert f"warning: web.session_secret_file: {session} holds a secret" in err
    assert f"warning: agents: other users may change {agents} (mode 666)" in err
    assert str(path) not in err  # rules.yaml may be read by others: it holds no secret
    for file in (smtp, session):
        file.chmod(0o600)
    agents.chmod(0o644)
    assert main(["--config", str(path), "check"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_keyword_without_a_letter_or_digit_is_refused(tmp_path: Path) -> None:
    """Normalised to nothing, it could never match: its rule would never fire, silently."""

    def mutate(data: dict) -> None:
        data["routing"]["rules"][0]["when"] = {"keywords": ["carte grise", "!!!"]}

    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, mutate))
    assert info.value.key == "routing.rules[0].when"
    assert "keyword '!!!' has no letter or digit" in str(info.value)


def test_two_rules_with_one_id_are_refused(tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        data["routing"]["rules"].append(dict(data["routing"]["rules"][0]))

    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, mutate))
    last = len(yaml.safe_load((ROOT / "rules.yaml").read_text())["routing"]["rules"])
    assert info.value.key == f"routing.rules[{last}].id"
    assert "(first at routing.rules[0])" in str(info.value)


def test_an_unknown_probed_mailbox_is_located_at_its_key(tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        data["probe"] = {
            "address": "sonde@example.org",
            "imap": data["mailboxes"]["general"]["imap"],
            "secret_env": "X",
            "mailboxes": ["generale"],
        }

    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, mutate))
    assert info.value.key == "probe.mailboxes"
    assert "unknown mailbox 'generale'" in str(info.value)


@pytest.mark.parametrize("name", ["pref/etrangers", "pref etrangers", ""])
def test_a_mailbox_name_that_events_and_metrics_cannot_carry_is_refused(
    tmp_path: Path, name: str
) -> None:
    """A passed-over mail's event says "mailbox/folder …": a "/" in the name would be
    read back as another mailbox (its retry refused, its metric under the wrong label)."""
    path = write_config(
        tmp_path, lambda d: d["mailboxes"].update({name: d["mailboxes"]["general"]})
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "mailboxes"
    assert f"mailbox name {name!r}: letters, digits" in str(info.value)
