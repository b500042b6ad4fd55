"""Looking after the installation: the configuration and templates checked together, the
files holding secrets or rights that others may read or change, the mailboxes whose mail
comes without Return-Path, and the retention of citizens' data (and of the console's ended
sessions and page views)."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from mailbot.app import presence, sessions
from mailbot.config import Config, load_agents
from mailbot.core.articles import article_of, of_service, to_named
from mailbot.core.clock import Clock, utcnow
from mailbot.render.templates import Renderer
from mailbot.render.translations import TargetGap, target_gaps, target_warnings
from mailbot.store import Store
from mailbot.store.engines import shown_url

MISSING_RETURN_PATH_SHARE = 0.5
MISSING_RETURN_PATH_SAMPLE = 10


def check(config: Config) -> Renderer:
    """Every template loaded and test-rendered, each mailbox's AR template fits it, and
    agents.yaml loads (the console refuses every login on one that does not)."""
    renderer = Renderer(config.templates, timezone=config.timezone, full_check=True)
    renderer.check_config(config)
    load_agents(config.agents, config)
    return renderer


def translation_warnings(config: Config, renderer: Renderer) -> list[str]:
    """The re-orientation targets a language of the templates does not name (its readers
    get the French name alone), and names for ids rules.yaml does not have: warnings, as
    a target is routed before it is translated (render/translations.target_warnings)."""
    targets = config.routing.reorientation if config.routing else {}
    return target_warnings(renderer.translations, targets)


def translation_gaps(config: Config, renderer: Renderer) -> list[TargetGap]:
    """The same as ``translation_warnings``, as data: the console says them in French."""
    targets = config.routing.reorientation if config.routing else {}
    return target_gaps(renderer.translations, targets)


def implicit_decisions(config: Config) -> list[str]:
    """What the ARs say of silence (CRPA L112-11), one line per declaration of
    ``routing.implicit_decisions``: the prefecture's call, shown so that it is made on
    purpose."""
    declared = config.routing.implicit_decisions if config.routing else {}
    lines = [
        f"{service} / {category}: {decision.decision} after {decision.delay} month(s)"
        " from receipt, said in the AR"
        for service, categories in declared.items()
        for category, decision in categories.items()
    ]
    return lines or ["none declared (routing.implicit_decisions): no AR speaks of silence"]


def database_shown(config: Config) -> str:
    """The database URL as it may be printed: the password hidden."""
    return shown_url(config.database)


def secret_files(config: Config) -> list[tuple[str, Path]]:
    """Every file the configuration names that holds a secret, by its key: passwords,
    the console's session secret and ProConnect's client secret, the contact form's token,
    the probe's secret, and the local accounts' password hashes."""
    found: list[tuple[str, Path | None]] = [
        (f"mailboxes.{name}.imap.password_file", box.imap.password_file)
        for name, box in config.mailboxes.items()
    ]
    found.append(("smtp.password_file", config.smtp.password_file))
    for index, relay in enumerate(config.policy.contact_form_relays):
        found.append((f"policy.contact_form_relays[{index}].token_file", relay.token_file))
    if config.probe is not None:
        found.append(("probe.imap.password_file", config.probe.imap.password_file))
        found.append(("probe.secret_file", config.probe.secret_file))
    web = config.web
    found.append(("web.session_secret_file", web.session_secret_file))
    if web.oidc is not None:
        found.append(("web.oidc.client_secret_file", web.oidc.client_secret_file))
    if web.local_accounts.enabled:
        found.append(("web.local_accounts.file", web.local_accounts.file))
    return [(key, path) for key, path in found if path is not None]


def permission_warnings(config: Config, config_path: Path) -> list[str]:
    """Files others may misuse, for ``mailbot check``: a secret readable (or writable) by
    another user than mailbot's, and rules.yaml or agents.yaml writable by one (who could
    aim the mail elsewhere, or make themselves the console's administrator). Only what the
    file system says: a missing file is another check's error."""
    found = []
    for key, path in secret_files(config):
        mode = _mode(path)
        if mode is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
            found.append(
                f"{key}: {path} holds a secret and other users may read or change it"
                f" (mode {mode:o}): chmod 600 it, owned by mailbot's user"
            )
    for key, path in (("--config", config_path), ("agents", config.agents)):
        mode = _mode(path)
        if mode is not None and mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(f"{key}: other users may change {path} (mode {mode:o}): chmod go-w it")
    return found


def service_article_warnings(config: Config) -> list[str]:
    """Services whose name does not tell the article it takes in a sentence, and which
    rules.yaml gives none: the note to the service then reads « relève du service
    « SGCD » » rather than « relève du SGCD », the transfer notice « transmis à SGCD »
    (core/articles)."""
    return [
        f"services.{key}: the article of « {service.name} » cannot be told from the name;"
        f" the note of its forwards says « relève {of_service(service.name)} », the"
        f" transfer notice « transmis {to_named(service.name)} »; set article: le, la, l'"
        " or les"
        for key, service in config.services.items()
        if service.article is None and article_of(service.name) is None
    ]


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def return_path_warnings(config: Config) -> list[str]:
    """Mailboxes whose recent mail mostly came without a Return-Path header: under the
    default policy none of it is acknowledged, and only the records would show it."""
    if config.policy.answers_from:
        return []
    url = make_url(config.database)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return []  # nothing recorded yet (and check must not create a database)
    # Read as it is: `check` migrates nothing (a database at another schema is the worker's
    # or `mailbot migrate`'s to upgrade, and `check --connect` says which it is).
    store = Store(config.database, migrate=False)
    found = []
    try:
        if store.readable_version() != Store.head_version():
            return []
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
    return store.purge(
        now - timedelta(days=config.retention.days if days is None else days), now=now
    )
