"""The indicators page over real HTTP, on the hand-computed scenario of test_indicators: its
figures, CSV and chart data equal `mailbot indicators` and the weekly report for the same
data, per service; the chart has a text alternative and a data table."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rulesfile import dump_rules, load_rules
from test_indicators import load_scenario
from webtools import ROOT, local_login, running_console

from mailbot.app.context import App, build_app
from mailbot.cli import main
from mailbot.config import load_config
from mailbot.store import Store

WEEK = "2026-W47"  # 16-22 Nov 2026, the scenario's week
START, END, AS_OF = "2026-11-16", "2026-11-22", "2026-11-25"


class Tables(HTMLParser):
    """Every table's rows, as lists of cell texts; tables by id when they have one (the
    DSFR wrapper's id, on the div around the table)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._id = ""
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "div" and "fr-table" in (values.get("class") or "").split():
            self._id = values.get("id") or ""
        elif tag == "table":
            self.tables.append((self._id, []))
            self._id = ""
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1][1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return {key or f"table-{n}": rows for n, (key, rows) in enumerate(parser.tables)}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rules.yaml on a SQLite database holding the scenario."""
    work = tmp_path_factory.mktemp("indicators")
    data = load_rules()
    data["database"] = f"sqlite:///{work / 'scenario.db'}"
    data["templates"] = str(ROOT / "templates")
    data["agents"] = str(ROOT / "agents.yaml")
    path = work / "rules.yaml"
    path.write_text(dump_rules(data, sort_keys=False), encoding="utf-8")
    store = Store(data["database"])
    load_scenario(store)
    store.close()
    return path


def scenario_app(config: Path) -> App:
    """The console's App on the scenario, its clock on 25 Nov 2026 (the report's as-of)."""
    app = build_app(config)
    app.clock = lambda: datetime(2026, 11, 25, 11, tzinfo=UTC)
    return app


@contextlib.contextmanager
def console_on(scenario: Path, tmp_path: Path) -> Iterator[object]:
    app = scenario_app(scenario)
    tmp_path.mkdir(parents=True, exist_ok=True)
    with running_console(tmp_path, config=app.config, site=True, mailbot_app=app) as console:
        yield console


def cli(config: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", str(config), *args]) == 0
    return out.getvalue()


def cli_figures(config: Path, service: str | None) -> dict[str, object]:
    where = ["--service", service] if service else []
    text = cli(
        config,
        "indicators",
        "--from",
        START,
        "--to",
        END,
        "--as-of",
        AS_OF,
        "--format",
        "json",
        *where,
    )
    figures: dict[str, object] = json.loads(text)
    figures.pop("targets")
    return figures


def csv_figures(body: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(header lines, figures) of the page's CSV export."""
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["indicateur", "valeur", "objectif", "atteint"]
    header = {r[0]: r[1] for r in rows[1:6]}
    return header, {r[0]: r[1] for r in rows[6:]}


@pytest.mark.parametrize("service", ["tous", "general", "cartes-grises"])
def test_csv_export_equals_the_cli(scenario: Path, tmp_path: Path, service: str) -> None:
    with console_on(scenario, tmp_path) as console, console.client() as client:  # type: ignore[attr-defined]
        assert local_login(client, "ngarnier").status_code == 303
        response = client.get(f"/indicateurs/export.csv?service={service}&periode={WEEK}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert f"indicateurs-{service}-{WEEK}.csv" in response.headers["content-disposition"]
    header, figures = csv_figures(response.content)
    assert header == {
        "periode": WEEK,
        "du": START,
        "au": END,
        "situation_au": AS_OF,
        "service": service,
    }
    expected = cli_figures(scenario, None if service == "tous" else service)
    assert set(figures) == set(expected)
    for name, value in expected.items():
        shown = figures[name]
        if value is None:
            assert shown == "", name
        else:
            # A decimal comma for a French spreadsheet; the value exactly, not approximately.
            assert "." not in shown, name
            assert type(value)(shown.replace(",", ".")) == value, name
    assert "," in figures["rate_within_5"]  # the scenario has decimals to write
    assert int(figures["received"]) > 0  # the scenario, not an empty database


def test_page_shows_the_weekly_reports_qualepref_table(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    cli(scenario, "-q", "report", "weekly", "--week", WEEK, "--as-of", AS_OF, "--out", str(out))
    report_rows = [
        row
        for rows in tables((out / f"rapport-{WEEK}.html").read_text(encoding="utf-8")).values()
        for row in rows
    ]
    with console_on(scenario, tmp_path / "console") as console, console.client() as client:  # type: ignore[attr-defined]
        local_login(client, "ngarnier")
        page = client.get(f"/indicateurs?service=tous&periode={WEEK}")
    assert page.status_code == 200
    shown = tables(page.text)
    qualepref = shown["qualepref"][1:]  # the header row first
    assert len(qualepref) == 4
    for row in qualepref:
        assert row in report_rows, row  # label, target, week, previous, month, mark
    assert qualepref[0][:3] == ["Réponses dans les 5 jours ouvrés", "> 75 %", "66,7 %"]
    assert "2,00 j" in qualepref[1]  # test_report's hand-computed values
    assert "situation au" in page.text and "25/11/2026" in page.text


def test_per_service_figures_equal_the_report_breakdown_and_the_cli(
    scenario: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    cli(scenario, "-q", "report", "weekly", "--week", WEEK, "--as-of", AS_OF, "--out", str(out))
    html = (out / f"rapport-{WEEK}.html").read_text(encoding="utf-8")
    breakdown = {row[0]: row[1:] for rows in tables(html).values() for row in rows if len(row) == 7}
    with console_on(scenario, tmp_path / "console") as console, console.client() as client:  # type: ignore[attr-defined]
        local_login(client, "ngarnier")
        for service in ("general", "cartes-grises"):
            page = client.get(f"/indicateurs?service={service}&periode={WEEK}")
            assert page.status_code == 200
            rows = {r[0]: r[1] for r in tables(page.text)["tous-indicateurs"][1:]}
            # the report names a service as the console does: rules.yaml's name, not its key
            named = f"Service {load_config(scenario).services[service].name}"
            received, answered, within, mean, overdue, relances = breakdown[named]
            assert rows["Messages reçus"] == received
            assert rows["Messages répondus"] == answered
            assert rows["Réponses dans les 5 jours ouvrés"] == within
            assert rows["Délai moyen de réponse"] == mean
            assert rows["Sans réponse, délai dépassé"] == overdue
            assert rows["Relances des usagers"] == relances
            cli_values = cli_figures(scenario, service)
            assert rows["Messages reçus"] == str(cli_values["received"])
            assert rows["Messages transférés à un service"] == str(cli_values["transfers"])


def test_every_service_view_has_the_reports_rows_per_service(
    scenario: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    cli(scenario, "-q", "report", "weekly", "--week", WEEK, "--as-of", AS_OF, "--out", str(out))
    html = (out / f"rapport-{WEEK}.html").read_text(encoding="utf-8")
    report_rows = [
        row[1:]
        for rows in tables(html).values()
        for row in rows
        if len(row) == 7 and row[0].startswith("Service ")
    ]
    with console_on(scenario, tmp_path / "console") as console, console.client() as client:  # type: ignore[attr-defined]
        local_login(client, "ngarnier")
        every = client.get(f"/indicateurs?service=tous&periode={WEEK}")
        one = client.get(f"/indicateurs?service=general&periode={WEEK}")
    rows = tables(every.text)["par-service"][1:]
    assert [row[1:] for row in rows] == report_rows and len(rows) == 2  # general, cartes-grises
    assert rows[0][0].startswith("Préfecture de la Seine-Maritime")  # the service's name
    assert 'href="/indicateurs?service=cartes-grises&amp;periode=2026-W47"' in every.text
    assert "par-service" not in one.text  # one service: no breakdown


def test_chart_has_a_text_alternative_and_its_data_table(scenario: Path, tmp_path: Path) -> None:
    with console_on(scenario, tmp_path) as console, console.client() as client:  # type: ignore[attr-defined]
        local_login(client, "lmoreau")  # head of service: etrangers and general
        page = client.get(f"/indicateurs?periode={WEEK}")
        chart = client.get(f"/indicateurs/graphique.png?service=general&periode={WEEK}")
    assert page.status_code == 200
    # her first service in rules.yaml's order is chosen; "every service" is not offered
    assert '<option value="general" selected>' in page.text
    assert 'value="tous"' not in page.text and 'value="permis"' not in page.text
    assert 'id="graphique"' in page.text and 'alt="Graphique' in page.text
    assert f'src="/indicateurs/graphique.png?service=general&amp;periode={WEEK}"' in page.text
    assert chart.status_code == 200 and chart.content[:8] == b"\x89PNG\r\n\x1a\n"
    weeks = tables(page.text)["donnees-graphique"]
    assert weeks[0] == [
        "Semaine",
        "Du",
        "Au",
        "Messages reçus",
        "Réponses dans les 5 jours ouvrés",
        "Délai moyen",
    ]
    assert [w[0] for w in weeks[1:]] == [f"2026-W{n}" for n in range(36, 48)]
    general = cli_figures(scenario, "general")  # the week of the period, from the CLI
    last = weeks[-1]
    assert last[1:3] == ["16/11/2026", "22/11/2026"]
    assert last[3] == str(general["received"])
    rate = general["rate_within_5"]
    assert isinstance(rate, float)
    assert last[4] == f"{100 * rate:.1f} %".replace(".", ",")


def test_a_period_out_of_range_is_a_400_on_the_page_the_csv_and_the_chart(
    scenario: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """9999-12, 9999-W52 and 0001-W01 were 500s (OverflowError in date arithmetic): a bad
    year is a 400 with the French error page, as 2026-13 is; the first and last years
    allowed (2000, and 2027 on the scenario's 25 Nov 2026) still show their page."""
    bad = ["9999-12", "9999-W52", "0001-W01", "1999-12", "2028-01", "2026-13", "2026-W99"]
    paths = ["/indicateurs", "/indicateurs/export.csv", "/indicateurs/graphique.png"]
    with console_on(scenario, tmp_path) as console, console.client() as client:  # type: ignore[attr-defined]
        local_login(client, "ngarnier")
        with caplog.at_level("WARNING"):
            for path in paths:
                for period in bad:
                    response = client.get(f"{path}?service=general&periode={period}")
                    assert response.status_code == 400, (path, period)
                    assert "Demande incorrecte" in response.text
        for period in ("2000-W01", "2000-01", "2027-W52", "2027-12"):
            page = client.get(f"/indicateurs?service=general&periode={period}")
            assert page.status_code == 200, period
    assert "OverflowError" not in caplog.text
