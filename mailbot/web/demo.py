"""The console on demo data (``mailbot demo --web``): demo accounts, loopback only.

Demo accounts (mailbot/demo_data/accounts.yaml, password ``demonstration`` for each):
cdurand (agent, cartes-grises), lmoreau (head of service, etrangers and general),
ngarnier (quality mission), tbernard (admin). They exist only for the demo.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from mailbot.config import Config, LocalAccountsConfig, WebConfig
from mailbot.web.app import Settings, settings_from_config

DEMO_ACCOUNTS = Path(str(files("mailbot") / "demo_data" / "accounts.yaml"))
DEMO_PASSWORD = "demonstration"
DEMO_LOGINS = {
    "cdurand": "agent, cartes grises",
    "lmoreau": "head of service, étrangers and accueil général (indicators)",
    "ngarnier": "quality mission (every service's indicators)",
    "tbernard": "admin (quarantine, templates check)",
}


def demo_settings(config: Config, config_path: Path, port: int = 8080) -> Settings:
    """rules.yaml with its web section replaced: local demo accounts, no ProConnect,
    plain http on 127.0.0.1 (a random session secret, valid until the demo stops)."""
    web = WebConfig(
        host="127.0.0.1",
        port=port,
        local_accounts=LocalAccountsConfig(enabled=True, file=DEMO_ACCOUNTS),
    )
    return settings_from_config(config.model_copy(update={"web": web}), config_path)
