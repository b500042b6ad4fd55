"""The queue, the console's home page: the open messages of the agent's services, the
earliest deadline first, with filters, search and the month's figures. It reads through
``mailbot.app.queue``; an agent with no queue (an administrator) gets the profile page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbot.app import queue
from mailbot.web import routes
from mailbot.web.access import current_agent, require
from mailbot.web.authz import Action
from mailbot.web.backend import agents, backend, today
from mailbot.web.pages import is_htmx, render

SHOW_LABELS = {
    queue.Show.OPEN: "Tous les courriels ouverts",
    queue.Show.OVERDUE: "En retard",
    queue.Show.RELANCED: "Relancés par l'usager",
    queue.Show.MINE: "Qui me sont attribués",
    queue.Show.UNASSIGNED: "Non attribués",
    queue.Show.TO_CHECK: "Orientation à vérifier",
    queue.Show.WRITTEN_AGAIN: "Nouveau message après une réponse",
}
DONE = {
    "transferer": "Le courriel est transféré ; l'usager reçoit l'avis de transmission.",
    "repondu-ailleurs": "La réponse donnée par un autre moyen est enregistrée.",
    "sans-reponse": "Le courriel est clos sans réponse : il sort de la file et des indicateurs.",
    "lu": "Le nouveau message de l'usager est marqué comme lu : le courriel sort de la file,"
    " sa réponse compte toujours.",
}
SENT_REFERENCE = re.compile(r"[A-Z]{1,10}-\d{4}-\d{6}")


def _reference_only(value: str) -> str:
    """The banner after a reply names its reference; a crafted link can put nothing else."""
    return value if SENT_REFERENCE.fullmatch(value) else ""


URGENCY_LABELS = {
    queue.Urgency.ON_TIME: ("Dans les délais", "fr-badge--success"),
    queue.Urgency.DUE_TODAY: ("Échéance aujourd'hui", "fr-badge--warning"),
    queue.Urgency.OVERDUE: ("En retard", "fr-badge--error"),
}
SETTLED_LABELS = {  # the message page's badge for a message out of the queue
    queue.Settled.ANSWERED: ("Répondu", "fr-badge--success"),
    queue.Settled.SENDING: ("Réponse en cours d'envoi", "fr-badge--info"),
    queue.Settled.CLOSED: ("Clos sans réponse", "fr-badge--info"),
}


@dataclass(frozen=True)
class Filters:
    """The queue's filters as the query string gives them (unknown values ignored)."""

    service: str
    category: str
    show: queue.Show
    search: str
    page: int

    @classmethod
    def of(cls, request: Request, services: tuple[str, ...], categories: list[str]) -> Filters:
        params = request.query_params
        service = params.get("service", "")
        category = params.get("categorie", "")
        show = params.get("etat", queue.Show.OPEN.value)
        page = params.get("page", "1")
        return cls(
            service=service if service in services else "",
            category=category if category in categories else "",
            show=queue.Show(show) if show in queue.Show._value2member_map_ else queue.Show.OPEN,
            search=params.get("q", "")[:200],
            page=int(page) if page.isdigit() and len(page) < 7 else 1,
        )

    def link(self, page: int) -> str:
        values = {"service": self.service, "categorie": self.category, "etat": self.show.value}
        values |= {"q": self.search, "page": str(page)}
        return "/?" + urlencode({k: v for k, v in values.items() if v})


@require(Action.VIEW_HOME)
async def queue_page(request: Request) -> Response:
    principal = current_agent(request)
    console = request.app.state.console
    services = principal.services_for(Action.VIEW_QUEUE, list(console.service_names))
    if not services:
        return await routes.home(request)
    app = backend(request)
    routing = app.config.routing
    categories = list(routing.categories) if routing else []
    filters = Filters.of(request, services, categories)
    shown = (filters.service,) if filters.service else services
    query = queue.QueueQuery(
        services=shown,
        show=filters.show,
        category=filters.category or None,
        search=filters.search,
        agent=principal.agent_id,
        page=filters.page,
    )
    day = today(request)
    listed = await run_in_threadpool(queue.listing, app.config, app.store, query, day)
    context = {
        "filters": filters,
        "listing": listed,
        "services": services,
        "categories": categories,
        "show_labels": SHOW_LABELS,
        "urgency": URGENCY_LABELS,
        "assignees": _assignees(request, listed),
        "sent": _reference_only(request.query_params.get("envoye", "")),
        "done": DONE.get(request.query_params.get("fait", ""), ""),
        "profile_services": [console.service_names.get(s, s) for s in principal.services],
    }
    if is_htmx(request):
        return render(request, "_queue_table.html.j2", context)
    figures = await run_in_threadpool(queue.header, app.config, app.store, shown, day)
    return render(request, "queue.html.j2", context | {"figures": figures})


def _assignees(request: Request, listed: queue.QueuePage) -> dict[str, str]:
    """The assignees' names, as colleagues see them."""
    lookup = agents(request)
    names: dict[str, str] = {}
    for row in listed.rows:
        if row.assignee and row.assignee not in names:
            agent = lookup(row.assignee)
            full = f"{agent.first_name or ''} {agent.last_name or ''}".strip() if agent else ""
            names[row.assignee] = full or row.assignee
    return names


ROUTES = [Route("/", queue_page, methods=["GET"], name="queue")]
