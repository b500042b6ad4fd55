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

import threading

from mailbot.app.acknowledge import Planner
from mailbot.app.routing_pool import RoutingPool, routing_spec
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
    spec = routing_spec(config)
    if spec is None or routing is None:
        return None
    return RoutingPool(spec, routing, spec.routing.parallel.min_batch)


class IntakeSetup:
    """What every part of the pipeline reads, set by ``__init__``; ``close`` stops the
    routing helper.

    ``routing_pool``: a helper started with the worker (``start_routing_helper``), which
    decides every mail; the routing is then compiled here (the model loaded) only if a mail
    must be decided in-process (``routing``, on first use). Without one, the routing is
    compiled now and the pipeline builds its own pool, for large batches."""

    def __init__(
        self,
        config: Config,
        store: Store,
        renderer: Renderer,
        clock: Clock = utcnow,
        send: bool = True,
        acknowledge_existing: bool = False,
        routing_pool: RoutingPool | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        # send=False is the backfill of history: decide and route, record, never send.
        self.send = send
        # A first poll acknowledges the mail already there only when asked (demo, --flag).
        self.acknowledge_existing = acknowledge_existing
        self._routing_lock = threading.Lock()
        self._routing: CompiledRouting | None = None
        self._routing_compiled = routing_pool is None
        if routing_pool is None:
            self._routing = compiled_routing(config)
            # A large batch's routing decided by a helper process (issue 14; app/routing_pool).
            routing_pool = _routing_pool(config, self._routing)
        self.routing_pool = routing_pool
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

    @property
    def routing(self) -> CompiledRouting | None:
        """The rules and model compiled in this process (None: no routing configured); with
        a helper started with the worker, on the first mail it does not decide (once)."""
        if not self._routing_compiled:
            with self._routing_lock:
                if not self._routing_compiled:
                    self._routing = compiled_routing(self.config)
                    pool = self.routing_pool
                    if pool is not None and pool.made_for is None:
                        pool.made_for = self._routing  # the same rules, from the same config
                    self._routing_compiled = True
        return self._routing

    def _compiled_routing(self) -> CompiledRouting:
        """``routing``, for a mail decided here while routing is configured."""
        routing = self.routing
        assert routing is not None
        return routing

    def _helper_decides(self) -> bool:
        """Whether the helper's decisions are this pipeline's: it stands for the routing
        compiled here, or for the configuration's while nothing was compiled here."""
        pool = self.routing_pool
        if pool is None:
            return False
        if pool.made_for is None:
            return not self._routing_compiled
        return pool.made_for is self._routing

    def close(self) -> None:
        """The routing helper stopped, if one was started (the worker's stop)."""
        if self.routing_pool is not None:
            self.routing_pool.close()
