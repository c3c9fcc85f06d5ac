"""Examples of the restart intensity: OTP's rule on a few hand-picked timelines."""

from __future__ import annotations

import math

import pytest

from policies.restart import Decision, RestartBudget, RestartIntensity

RESTART, ESCALATE = Decision.RESTART, Decision.ESCALATE


def decisions(intensity: RestartIntensity, crash_times: list[float]) -> list[Decision]:
    budget = RestartBudget(intensity)
    return [budget.record_crash(now) for now in crash_times]


def test_defaults_are_three_restarts_in_five_seconds() -> None:
    assert RestartIntensity() == RestartIntensity(max_restarts=3, period=5.0)


def test_the_crash_after_n_within_the_period_escalates() -> None:
    assert decisions(RestartIntensity(3, 5.0), [0, 1, 2, 3]) == [RESTART] * 3 + [ESCALATE]


def test_crashes_spread_wider_than_the_period_never_escalate() -> None:
    assert decisions(RestartIntensity(1, 5.0), [0, 5.5, 11, 16.5, 22]) == [RESTART] * 5


def test_window_includes_its_start() -> None:
    # OTP counts a restart exactly `period` seconds old as inside the window.
    assert decisions(RestartIntensity(1, 5.0), [0, 5.0]) == [RESTART, ESCALATE]
    assert decisions(RestartIntensity(1, 5.0), [0, 5.25]) == [RESTART, RESTART]


def test_old_crashes_leave_the_window() -> None:
    # 0 and 4 are within 5s of each other but 0 has left the window by 6.
    assert decisions(RestartIntensity(2, 5.0), [0, 4, 6, 7]) == [RESTART] * 3 + [ESCALATE]


def test_zero_restarts_escalates_the_first_crash() -> None:
    assert decisions(RestartIntensity(0, 5.0), [0]) == [ESCALATE]


def test_escalation_is_final() -> None:
    budget = RestartBudget(RestartIntensity(0, 1.0))
    assert budget.record_crash(0) is ESCALATE
    assert budget.record_crash(100) is ESCALATE
    assert budget.escalated


@pytest.mark.parametrize(
    ("max_restarts", "period"),
    [(-1, 5.0), (3, 0.0), (3, -1.0), (3, math.inf), (3, math.nan), (1.5, 5.0), (3, "5")],
)
def test_intensity_is_validated(max_restarts: object, period: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        RestartIntensity(max_restarts, period)  # type: ignore[arg-type]
