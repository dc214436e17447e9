"""Durations read in their two largest units, spaced for reports and compact for the dashboard."""

from __future__ import annotations

import pytest

from trainmon_tui.analysis.durations import format_duration


@pytest.mark.parametrize(
    ("seconds", "spaced", "compact"),
    [
        (-3.0, "0 s", "0s"),
        (0.4, "0 s", "0s"),
        (59.4, "59 s", "59s"),
        (59.6, "1m 00s", "1m00s"),
        (245.0, "4m 05s", "4m05s"),
        (3599.0, "59m 59s", "59m59s"),
        (3600.0, "1h 00m", "1h00m"),
        (11_220.0, "3h 07m", "3h07m"),
        (86_399.0, "23h 59m", "23h59m"),
        (187_200.0, "2d 04h", "2d04h"),
        (40 * 86_400.0, "40d 00h", "40d00h"),
    ],
)
def test_two_largest_units(seconds: float, spaced: str, compact: str) -> None:
    assert format_duration(seconds) == spaced
    assert format_duration(seconds, compact=True) == compact
