"""A ``Pipeline``'s set-up and stop: what it is made of, built once from the configuration
(the routing and its helper process, the planner, the contact-form relay's verifier, the
probe, the transient errors counted in memory).

``IntakeSetup`` is also the base of the pipeline's parts (``app/folders``, ``app/copies``,
``app/policy_lookups``, ``app/deciding``, ``app/mail_failures``, ``app/retries``): each is a
mixin of the methods on one concept over it, so that each type-checks alone and
``Pipeline`` (``app/intake``) puts them together around a batch's transaction. A part reads
only the attributes ``__init__`` sets here; a part that calls another's methods derives from
it: ``Deciding`` from ``Copies`` and ``PolicyLookups``, ``Retries`` from ``Deciding`` and
``MailFailures``, ``Pipeline`` from ``FolderStart`` and ``Retries`` (so from every part).

The private methods the parts call on one another through ``self`` are their contract, kept
as they are named: ``Copies._duplicate`` and ``PolicyLookups._policy`` (for
``Deciding._record``); ``Deciding._record``, one mail recorded (for ``Retries`` and
``Pipeline``); ``MailFailures._quarantine``, ``_transient``, ``_counted``,
``_forget_attempts``, ``_keep_attempts`` and ``_unrecordable``, a mail's failure and its
attempts counted (for ``Retries`` and ``Pipeline``); ``Retries._again`` and ``_alone``, a
quarantined row recorded again (for ``Pipeline.process``). ``bench/phases.py`` names a
method by the class defining it, as py-spy does: a method moved to another part moves its
marker too."""

from __future__ import annotations

from mailbot.app.acknowledge import Planner
from mailbot.app.routing_pool import RoutingPool, RoutingSpec
from mailbot.config import Config
from mailbot.core.clock import Clock, utcnow
from mailbot.core.facts import compiled_routing
from mailbot.core.routing import CompiledRouting
from mailbot.mail.compose import Composer
from mailbot.mail.relay_auth import RelayVerifier
from mailbot.render.templates import Renderer
from mailbot.render.variables import working_calendar
from mailbot.store import Store


def _routing_pool(config: Config, routing: CompiledRouting | None) -> RoutingPool | None:
    """The helper of ``routing.parallel`` (none with ``processes: 0`` or no routing); its
    process starts with the first large batch."""
    if config.routing is None or routing is None or config.routing.parallel.processes < 1:
        return None
    own = {name: box.service for name, box in config.mailboxes.items()}
    spec = RoutingSpec(config.routing, own, config.organisation.general_service)
    return RoutingPool(spec, routing, config.routing.parallel.min_batch)


class IntakeSetup:
    """What every part of the pipeline reads, set by ``__init__``; ``close`` stops the
    routing helper."""

    def __init__(
        self,
        config: Config,
        store: Store,
        renderer: Renderer,
        clock: Clock = utcnow,
        send: bool = True,
        acknowledge_existing: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        # send=False is the backfill of history: decide and route, record, never send.
        self.send = send
        # A first poll acknowledges the mail already there only when asked (demo, --flag).
        self.acknowledge_existing = acknowledge_existing
        self.routing = compiled_routing(config)
        # A large batch's routing decided by a helper process (issue 14; app/routing_pool).
        self.routing_pool = _routing_pool(config, self.routing)
        self.calendar = working_calendar(config.timezone)  # holidays from the render cache
        self.planner = Planner(config, renderer, Composer.from_config(config))
        # Token and DKIM proofs of the contact-form relay (secrets, DNS): before deciding.
        self.relay_verifier = RelayVerifier(config.policy.contact_form_relays)
        # The probe's test mails (issue 16): acknowledged, never routed nor counted.
        self.probe = (config.probe.address, config.probe.secret()) if config.probe else None
        # How many times in a row each mail (mailbox, folder, UIDVALIDITY, UID) met a
        # transient database error (``MailFailures._transient``). The folder's row keeps it
        # for every process (a cron of ``poll --once``); this memory when the database would
        # not write even that. A mail recorded, or quarantined for it, leaves it; one that
        # failed and was then deleted from the server stays (a few bytes).
        self.transient_failures: dict[tuple[str, str, int, int], int] = {}

    def close(self) -> None:
        """The routing helper stopped, if one was started (the worker's stop)."""
        if self.routing_pool is not None:
            self.routing_pool.close()
