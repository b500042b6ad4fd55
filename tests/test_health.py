"""Pure logic of issue 16: grading figures (core/health), Nagios exit codes, lease sharing
and timing (core/leases), the probe's verdict (core/probe)."""

from __future__ import annotations

import pytest

from mailbot.core.health import Check, Limits, grade, headline, overall
from mailbot.core.leases import Timing, fair_share, folder_lease
from mailbot.core.probe import verdict
from mailbot.core.statuses import Health, ProbeStatus


def test_exit_codes_are_the_plugin_convention() -> None:
    assert [h.exit_code for h in (Health.OK, Health.WARNING, Health.CRITICAL, Health.UNKNOWN)] == [
        0,
        1,
        2,
        3,
    ]


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (0, Health.OK),
        (4.9, Health.OK),
        (5, Health.WARNING),
        (9, Health.WARNING),
        (10, Health.CRITICAL),
    ],
)
def test_a_threshold_reached_is_that_state(value: float, state: Health) -> None:
    assert grade(value, Limits(warning=5, critical=10)) is state


def test_the_worst_state_wins_and_a_known_problem_before_unknown() -> None:
    assert Health.worst() is Health.OK
    assert Health.worst(Health.OK, Health.UNKNOWN) is Health.UNKNOWN
    assert Health.worst(Health.UNKNOWN, Health.WARNING) is Health.WARNING
    assert Health.worst(Health.WARNING, Health.CRITICAL, Health.UNKNOWN) is Health.CRITICAL
    checks = [
        Check("a", 1, Health.WARNING, "a 1 (warning at 1)"),
        Check("b", 9, Health.CRITICAL, "b 9 (critical at 5)"),
        Check("c", 0, Health.OK, "c 0"),
    ]
    assert overall(checks) is Health.CRITICAL
    assert headline(checks) == "MAILBOT CRITICAL - b 9 (critical at 5)"
    assert headline(checks[2:]) == "MAILBOT OK - all checks OK"


def test_leases_are_shared_evenly_and_taken_over_within_30_s_by_default() -> None:
    assert fair_share(5, 1) == 5 and fair_share(5, 2) == 3 and fair_share(4, 2) == 2
    assert fair_share(0, 3) == 0 and fair_share(3, 0) == 3
    default = Timing(15)
    assert default.tick == 3.75 and default.lease + default.tick + 1 < 30
    assert Timing(2).tick == 0.5 and Timing(120).tick == 5.0
    assert folder_lease("general", "INBOX") == "folder:general:INBOX"


def test_a_probe_verdict() -> None:
    assert verdict(None, (), 300) is ProbeStatus.MISSING
    assert verdict(12.0, ("référence de suivi absente",), 300) is ProbeStatus.WRONG
    assert verdict(301.0, (), 300) is ProbeStatus.LATE
    assert verdict(12.0, (), 300) is ProbeStatus.PASSED
    assert ProbeStatus.LATE.failed and not ProbeStatus.AWAITING.failed


def test_a_mail_passed_over_has_its_own_bounds_raising_the_quarantines_hides_none() -> None:
    """A site that tolerates a few quarantined mails (a person will look) still hears of
    one passed over: no row, no AR, out of the indicators until retried."""
    from rulesfile import ROOT, load_rules

    from mailbot.app.supervision import limits
    from mailbot.config import config_from_mapping
    from mailbot.core.health import Figures, evaluate

    data = load_rules()
    data["status"] = {"quarantined": {"warning": 5, "critical": 20}}
    bounds = limits(config_from_mapping(data, "rules.yaml", base=ROOT))
    assert bounds["passed_over"] == Limits(1, 3)  # the defaults
    figures = Figures(
        folders=(),
        outbox_depth=0,
        oldest_pending_seconds=None,
        deferred=0,
        failed=0,
        uncertain=0,
        quarantined={"general": 1},
        overdue={},
        passed_over=("general/INBOX UIDVALIDITY 1 UID 3: refused",),
    )
    states = {c.what: c.state for c in evaluate(figures, bounds)}
    assert states["general quarantined"] is Health.OK
    assert states["mail passed over (7 d)"] is Health.WARNING
    many = Figures(**{**figures.__dict__, "passed_over": ("a", "b", "c")})
    assert {c.what: c.state for c in evaluate(many, bounds)}["mail passed over (7 d)"] is (
        Health.CRITICAL
    )
