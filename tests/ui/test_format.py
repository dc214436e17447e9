"""Formatting helpers: unknown is "-" (never 0), NaN stays visible, bars and sparklines, clock times."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from trainmon_tui.ui.format import (
    WallClock,
    bar,
    fmt_duration,
    fmt_memory,
    fmt_metric,
    fmt_pct,
    fmt_rate,
    level_char,
    sparkline,
)

NOON = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC).timestamp()


def test_unknown_is_a_dash_and_nan_stays_nan() -> None:
    assert fmt_pct(None) == "-" and fmt_pct(0.0) == "0%" and fmt_pct(97.4) == "97%"
    assert fmt_metric(None) == "-" and fmt_metric(math.nan) == "nan" and fmt_metric(0.000312) == "0.000312"
    assert fmt_memory(None, None) == "-"
    assert fmt_memory(None, 81_559.0) == "-/79.6G"
    assert fmt_memory(61_000.0, 143_771.0) == "59.6/140G"


def test_bars_fill_in_eighths_and_unknown_is_dotted() -> None:
    assert bar(0.0, 4) == "    "
    assert bar(1.0, 4) == "████"
    assert bar(0.53, 4) == "██▏ "  # 0.53 * 32 = 16.96 -> 17 eighths: two full cells and one eighth
    assert bar(None, 4) == "····"
    assert bar(2.0, 3) == "███"


def test_sparkline_scales_right_aligns_and_keeps_gaps() -> None:
    assert sparkline([0.0, 50.0, 100.0], 5) == "  ▁▅█"
    assert sparkline([100.0, None, 0.0], 3) == "█ ▁"
    assert sparkline([float(v) for v in range(10)], 3, low=0, high=9) == "▆▇█"
    assert level_char(None) == "?" and level_char(0.0) == "▁" and level_char(100.0) == "█"


def test_durations_and_rates() -> None:
    assert [fmt_duration(s) for s in (None, 45, 245, 11_220, 187_200)] == [
        "-",
        "45s",
        "4m05s",
        "3h07m",
        "2d04h",
    ]
    assert fmt_rate(2.314) == "2.31 step/s"
    assert fmt_rate(0.25, "batch") == "4.0 s/batch"
    assert fmt_rate(None) == "-" and fmt_rate(0.0) == "-"


def test_wall_clock_maps_store_times_and_names_other_days() -> None:
    clock = WallClock(now=lambda: NOON, tz=UTC)
    # Store time 900 seen in a snapshot taken at 1000 happened 100 s before now.
    assert clock.wall_time(1000.0, 900.0) == NOON - 100.0
    assert clock.fmt_clock(NOON + 37 * 60) == "12:37"
    assert clock.fmt_clock(NOON - 90, seconds=True) == "11:58:30"
    assert clock.fmt_clock(NOON + 13 * 3600) == "Sat 01:00"
    assert clock.fmt_clock(NOON + 30 * 86_400) == "2025-04-13 12:00"
    assert clock.fmt_clock(None) == "-"
