"""Starting the console (issue 12, point 1), as real processes over real HTTP:
`mailbot demo --web` serves the demo data to the demo accounts, with no mail server; and
`mailbot run` serves the console beside the worker when rules.yaml's web.enabled is true."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
from rulesfile import dump_rules, load_rules
from servers import DovecotServer, MailUser, SmtpServer
from test_e2e import citizen_mail, write_config
from test_indicators import load_scenario
from webtools import (
    HOST,
    PAGE_TIMEOUT,
    PASSWORD,
    ROOT,
    accounts_yaml,
    http_client,
    http_get,
    local_login,
)

from mailbot.store import Store
from mailbot.web.demo import DEMO_PASSWORD
from mailbot.web.server import bind

ENV = os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def mailbot(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailbot.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def stop(process: subprocess.Popen[str], signum: int) -> tuple[int, str, str]:
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


def wait_until_up(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_get(f"{url}/healthz", timeout=2).text == "ok":
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.1)


def test_demo_web_serves_the_demo_data_to_the_demo_accounts(tmp_path: Path) -> None:
    process = mailbot(
        "--config", str(ROOT / "rules.yaml"), "demo", "--out", str(tmp_path / "d"), "--web",
        "--port", "0",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not any("web console on the demo data" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines) + process.communicate()[1][-2000:]
            lines.append(line)
        url = re.search(r"(http://127\.0\.0\.1:\d+)/", lines[-1])
        assert url, lines[-1]
        for _ in range(5):  # the password and the four accounts
            lines.append(process.stdout.readline())
        text = "".join(lines)
        assert f"password for each: {DEMO_PASSWORD}" in text
        assert all(name in text for name in ("cdurand", "lmoreau", "ngarnier", "tbernard"))
        with http_client(base_url=url.group(1), timeout=PAGE_TIMEOUT) as client:
            login = client.get("/connexion")
            assert login.status_code == 200 and "Connexion à la console mailbot" in login.text
            assert local_login(client, "lmoreau", DEMO_PASSWORD).status_code == 303
            home = client.get("/")
            assert home.status_code == 200 and "Léa Moreau" in home.text
            page = client.get("/indicateurs?service=general&periode=2026-11")
            assert page.status_code == 200
            received = re.search(r"(\d+) reçus?, (\d+) répondus?", page.text)
            assert received and int(received.group(1)) > 0  # the demo's mail, from its database
        with http_client(base_url=url.group(1), timeout=PAGE_TIMEOUT) as stranger:
            assert local_login(stranger, "lmoreau", "pas-le-bon").status_code == 401
    finally:
        code, _, err = stop(process, signal.SIGINT)
    assert code == 0, err[-2000:]
    assert (tmp_path / "d" / "demo.db").is_file()


def test_run_serves_the_console_when_web_is_enabled(
    tmp_path: Path, dovecot: DovecotServer, imap_user: MailUser, smtp_server: SmtpServer
) -> None:
    sock = bind(HOST, 0)
    port = sock.getsockname()[1]
    sock.close()
    (tmp_path / "accounts.yaml").write_text(accounts_yaml(("cdurand",)), encoding="utf-8")
    web = {
        "enabled": True,
        "host": HOST,
        "port": port,
        "local_accounts": {"enabled": True, "file": str(tmp_path / "accounts.yaml")},
    }
    config = write_config(tmp_path, imap_user, dovecot.new_user("etr"), smtp_server, web=web)
    assert load_rules(config)["web"]["enabled"] is True
    imap_user.append(citizen_mail(1))
    worker = mailbot("--config", str(config), "run", "--acknowledge-existing")
    url = f"http://{HOST}:{port}"
    try:
        wait_until_up(url, worker, timeout=120)  # a worker's start: 30 s of wall at a load of 8
        smtp_server.wait_for(1, timeout=120)  # the worker works beside the console
        with http_client(base_url=url, timeout=PAGE_TIMEOUT) as client:
            assert client.get("/connexion").status_code == 200
            assert local_login(client, "cdurand", PASSWORD).status_code == 303
            assert "Camille Durand" in client.get("/").text
    finally:
        code, _, err = stop(worker, signal.SIGTERM)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    try:
        http_get(f"{url}/healthz", timeout=2)
        raise AssertionError("the console still answers after the worker stopped")
    except httpx.HTTPError:
        pass


def test_web_serves_every_page_on_the_configured_database(tmp_path: Path) -> None:
    """`mailbot web`: the console alone, on rules.yaml's database (the indicators' scenario)."""

    sock = bind(HOST, 0)
    port = sock.getsockname()[1]
    sock.close()
    (tmp_path / "accounts.yaml").write_text(accounts_yaml(("lmoreau",)), encoding="utf-8")
    data = load_rules()
    data["database"] = f"sqlite:///{tmp_path / 'web.db'}"
    data["templates"] = str(ROOT / "templates")
    data["agents"] = str(ROOT / "agents.yaml")
    data["web"] = {"local_accounts": {"enabled": True, "file": str(tmp_path / "accounts.yaml")}}
    config = tmp_path / "rules.yaml"
    config.write_text(dump_rules(data, sort_keys=False), "utf-8")
    store = Store(data["database"])
    load_scenario(store)
    store.close()
    web = mailbot("--config", str(config), "web", "--port", str(port))
    url = f"http://{HOST}:{port}"
    try:
        wait_until_up(url, web)
        with http_client(base_url=url, timeout=PAGE_TIMEOUT) as client:
            assert local_login(client, "lmoreau", PASSWORD).status_code == 303
            page = client.get("/indicateurs?service=general&periode=2026-W47")
            assert page.status_code == 200 and "Indicateurs Qual-e-pref" in page.text
            found = re.search(r"(\d+) reçus?, (\d+) répondus?", page.text)
            assert found and int(found.group(1)) > 0
    finally:
        code, _, err = stop(web, signal.SIGINT)
    assert code == 0, err[-2000:]
