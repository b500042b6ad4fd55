"""The collaborators every face needs, built once from rules.yaml: the configuration, the
store, the renderer, the intake pipeline, the outbox, the agents and the clock. The CLI,
the worker and the web console open one ``App`` and hand its parts to the use cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailbot.app.delivery import Outbox
from mailbot.app.intake import Pipeline
from mailbot.app.routing_pool import RoutingPool
from mailbot.config import Agent, Config, load_agents, load_config
from mailbot.core.clock import Clock, utcnow
from mailbot.mail.smtp import SmtpTransport, Transport
from mailbot.render.templates import Renderer
from mailbot.store import Store


@dataclass
class App:
    config: Config
    store: Store
    renderer: Renderer
    pipeline: Pipeline
    outbox: Outbox
    clock: Clock = utcnow

    def agent(self, agent_id: str) -> Agent | None:
        """An agent of agents.yaml, read afresh (the console re-reads it when it changes)."""
        return load_agents(self.config.agents, self.config).get(agent_id)

    def close(self) -> None:
        """The end of a command: QUIT the SMTP connection kept between batches, close the
        database's connections (SQLite checkpoints its WAL on the last one), stop the
        routing helper if a large batch started one."""
        self.pipeline.close()
        self.outbox.transport.close()
        self.store.close()


def build_app(
    config_path: Path,
    transport: Transport | None = None,
    database: str | None = None,
    acknowledge_existing: bool = False,
) -> App:
    """Everything from rules.yaml: the store opened (and migrated), the templates loaded
    and checked against the configuration, SMTP as the transport unless one is given."""
    config = load_config(config_path)  # every relative path already resolved beside it
    return app_from_config(config, transport, database, acknowledge_existing)


def app_from_config(
    config: Config,
    transport: Transport | None = None,
    database: str | None = None,
    acknowledge_existing: bool = False,
    routing_pool: RoutingPool | None = None,
) -> App:
    """``build_app`` for a configuration already loaded (the web console holds one).
    ``routing_pool``: the routing helper the worker started first
    (``app/routing_pool.start_routing_helper``), which then decides every mail; without
    it, the pipeline compiles the routing and starts a helper for large batches."""
    store = Store(database or config.database)
    renderer = Renderer(config.templates, timezone=config.timezone)
    renderer.check_config(config)
    outbox = Outbox(
        store,
        transport or SmtpTransport(config.smtp),
        config.outbox,
        config.configured_recipients,
        max_bytes=config.polling.max_message_bytes,
    )
    pipeline = Pipeline(
        config,
        store,
        renderer,
        acknowledge_existing=acknowledge_existing,
        routing_pool=routing_pool,
    )
    return App(config, store, renderer, pipeline, outbox)
