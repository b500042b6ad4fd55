"""Looking after the installation: the configuration and templates checked together, the
mailboxes whose mail comes without Return-Path, and the retention of citizens' data (and
of the console's ended sessions and page views)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from mailbot.app import presence, sessions
from mailbot.config import Config, load_agents
from mailbot.core.clock import Clock, utcnow
from mailbot.render.templates import Renderer
from mailbot.store import Store
from mailbot.store.database import shown_url

MISSING_RETURN_PATH_SHARE = 0.5
MISSING_RETURN_PATH_SAMPLE = 10


def check(config: Config) -> Renderer:
    """Every template loaded and test-rendered, each mailbox's AR template fits it, and
    agents.yaml loads (the console refuses every login on one that does not)."""
    renderer = Renderer(config.templates, timezone=config.timezone, full_check=True)
    renderer.check_config(config)
    load_agents(config.agents, config)
    return renderer


def database_shown(config: Config) -> str:
    """The database URL as it may be printed: the password hidden."""
    return shown_url(config.database)


def return_path_warnings(config: Config) -> list[str]:
    """Mailboxes whose recent mail mostly came without a Return-Path header: under the
    default policy none of it is acknowledged, and only the records would show it."""
    if config.policy.answers_from:
        return []
    url = make_url(config.database)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return []  # nothing recorded yet (and check must not create a database)
    store = Store(config.database)
    found = []
    try:
        for name in config.mailboxes:
            missing, looked = store.missing_return_path_share(name)
            if (
                looked >= MISSING_RETURN_PATH_SAMPLE
                and missing > looked * MISSING_RETURN_PATH_SHARE
            ):
                found.append(
                    f"mailbox {name}: {missing} of its last {looked} mails had no Return-Path"
                    " header and got no AR; if the server delivers without it, set"
                    " policy.missing_return_path: use_from"
                )
    finally:
        store.close()
    return found


def purge(config: Config, store: Store, days: int | None = None, clock: Clock = utcnow) -> int:
    """Delete what is known of messages received more than ``days`` (default:
    retention.days) ago, the bytes of mail that will never leave, and the console's records
    past their use (ended sessions past their expiry, page views older than a day); the
    number of messages deleted. README's "Data kept (privacy)" says what stays, and why."""
    now = clock()
    sessions.forget_expired(store, now)
    presence.forget_old(store, now)
    return store.purge(now - timedelta(days=config.retention.days if days is None else days))
