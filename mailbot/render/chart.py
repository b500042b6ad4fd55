"""The report's chart: the rate of replies within 5 working days and the mean delay, week
by week, against their targets (matplotlib, drawn off-screen into a PNG).

matplotlib is imported when a chart is drawn, never before: it is a third of a second of
start-up that ``mailbot indicators`` and the worker's other jobs do not need. The figure is
built with matplotlib's object API and its Agg canvas, not pyplot: no global figure
registry nor backend switch, so the console's threads can draw charts at the same time."""

from __future__ import annotations

import io
from collections.abc import Sequence


def weekly_chart(labels: Sequence[str], rates: Sequence[float], means: Sequence[float]) -> bytes:
    """PNG bytes; ``rates`` in percent and ``means`` in working days, NaN for no data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 5.0), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(labels, rates, marker="o", color="#000091", label="Réponses ≤ 5 j. ouvrés")
    top.axhline(75, color="#c9191e", linestyle="--", linewidth=1, label="Objectif 75 %")
    top.set_ylim(0, 100)
    top.set_ylabel("%")
    top.set_title("Réponses dans les 5 jours ouvrés (par semaine)", fontsize=10, y=1.0)
    top.legend(loc="lower left", fontsize=8, frameon=False)
    bottom.bar(labels, means, color="#6a6af4", label="Délai moyen")
    bottom.axhline(5, color="#c9191e", linestyle="--", linewidth=1, label="Objectif 5 jours")
    bottom.set_ylabel("jours ouvrés")
    bottom.set_title("Délai moyen de réponse (par semaine)", fontsize=10, y=1.0)
    bottom.legend(loc="upper left", fontsize=8, frameon=False)
    # Every week on the axis, those without data too (autoscaling would drop them).
    bottom.set_xticks(range(len(labels)), list(labels))
    bottom.set_xlim(-0.5, len(labels) - 0.5)
    for axis in (top, bottom):
        axis.spines[["top", "right"]].set_visible(False)
        axis.grid(axis="y", color="#dddddd", linewidth=0.6)
    # Titles at a fixed height (y=1.0, where matplotlib would put them anyway: no tick label
    # above the axes) so that drawing does not measure every tick label to place them, and
    # fixed margins (tight_layout would draw the figure twice to measure it).
    fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.07, hspace=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
