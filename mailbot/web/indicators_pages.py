"""The indicators page (heads of service, quality mission): the Qual-e-pref table, every
figure of ``mailbot indicators`` and the 12-week chart for a week or a month, per service,
and their CSV export. The figures come from ``app/dashboard`` (the report's own functions).

``?service=permis`` or ``?service=tous`` (every service: only for an agent allowed on each),
``?periode=2026-W47`` or ``?periode=2026-11``; without them, the agent's first service (every
service for the quality mission) and the last complete week. The service is checked on every
request, for the page, the chart and the export alike.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbot.app import dashboard
from mailbot.app.report import format_value
from mailbot.core.dates import FRENCH_MONTHS
from mailbot.core.periods import Period
from mailbot.errors import RequestError
from mailbot.web.access import GUARD, Endpoint, check, current_agent
from mailbot.web.authz import Action
from mailbot.web.backend import backend, today
from mailbot.web.pages import NavItem, render

ALL = "tous"
MONTHS = list(FRENCH_MONTHS)
NAV = [NavItem("Indicateurs", "/indicateurs", Action.VIEW_INDICATORS)]


@dataclass(frozen=True)
class Scope:
    """What a request asks for, once allowed: a service (None: every one) and a period."""

    service: str | None
    period: Period
    choices: list[tuple[str, str]]  # (value, label) of the services the agent may pick

    def query(self) -> str:
        return urlencode({"service": self.service or ALL, "periode": self.period.label})


def _choices(request: Request) -> list[tuple[str, str]]:
    console = request.app.state.console
    principal = current_agent(request)
    known = list(console.service_names)
    allowed = principal.services_for(Action.VIEW_INDICATORS, known)
    choices = [(s, console.service_names[s]) for s in allowed]
    if known and len(allowed) == len(known):
        choices.insert(0, (ALL, "Tous les services"))
    return choices


def _scope(request: Request) -> Scope:
    """The service and period asked, each service checked (403 and an audit event if not
    allowed: ``tous`` needs every service); a bad period is a 400."""
    choices = _choices(request)
    wanted = request.query_params.get("service") or (choices[0][0] if choices else "")
    known = list(request.app.state.console.service_names)
    if wanted and wanted != ALL and wanted not in known:
        raise HTTPException(404)
    services = known if wanted == ALL else [wanted or None]
    for service in services:
        check(request, Action.VIEW_INDICATORS, service)
    text = request.query_params.get("periode")
    day = today(request)
    try:
        period = dashboard.parse_period(text, day) if text else None
    except RequestError:
        raise HTTPException(400) from None
    period = period or dashboard.default_period(day)
    return Scope(None if wanted == ALL else wanted, period, choices)


def scoped(endpoint: Endpoint) -> Endpoint:
    """Guard an endpoint by the indicators' scope (as ``require`` does, but ``tous`` means
    every service); the endpoint finds the checked scope in ``request.state.scope``."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        request.state.scope = _scope(request)
        return await endpoint(request)

    setattr(guarded, GUARD, Action.VIEW_INDICATORS)
    return guarded


def period_label(period: Period) -> str:
    if period.kind == "semaine":
        week = period.label.split("-W")[1]
        return f"Semaine {int(week)} ({period.start:%d/%m} – {period.end:%d/%m/%Y})"
    return f"{MONTHS[period.start.month - 1].capitalize()} {period.start.year}"


@scoped
async def indicators_page(request: Request) -> Response:
    scope: Scope = request.state.scope
    app = backend(request)
    day = today(request)
    every = [value for value, _ in scope.choices if value != ALL]  # all checked: "tous"
    board = await run_in_threadpool(
        dashboard.build,
        app.config,
        app.store,
        scope.period,
        day,
        scope.service,
        every if scope.service is None else (),
    )
    periods = dashboard.offered_periods(day)
    if scope.period not in periods:
        periods.insert(0, scope.period)
    names = request.app.state.console.service_names
    context = {
        "board": board,
        "scope": scope,
        "service_label": names.get(scope.service or "", "Tous les services"),
        "period_label": period_label(scope.period),
        "weeks_offered": [(p.label, period_label(p)) for p in periods if p.kind == "semaine"],
        "months_offered": [(p.label, period_label(p)) for p in periods if p.kind == "mois"],
        "figures": [(f, *dashboard.shown(f)) for f in board.figures()],
        "rate": lambda value: format_value(value, "rate"),
        "days": lambda value: format_value(value, "days"),
        "query": scope.query(),
    }
    return render(request, "indicators.html.j2", context)


@scoped
async def indicators_csv(request: Request) -> Response:
    scope: Scope = request.state.scope
    app = backend(request)
    board = await run_in_threadpool(
        dashboard.build, app.config, app.store, scope.period, today(request), scope.service
    )
    name = f"indicateurs-{scope.service or ALL}-{scope.period.label}.csv"
    return Response(
        dashboard.figures_csv(board),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@scoped
async def indicators_chart(request: Request) -> Response:
    scope: Scope = request.state.scope
    app = backend(request)
    png = await run_in_threadpool(
        dashboard.chart, app.config, app.store, scope.period, today(request), scope.service
    )
    return Response(png, media_type="image/png")


ROUTES = [
    Route("/indicateurs", indicators_page, methods=["GET"], name="indicators"),
    Route("/indicateurs/export.csv", indicators_csv, methods=["GET"], name="indicators_csv"),
    Route("/indicateurs/graphique.png", indicators_chart, methods=["GET"], name="indicators_chart"),
]
