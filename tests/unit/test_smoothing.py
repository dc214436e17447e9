"""TensorBoard's EMA, checked against hand-computed values, and min/max-preserving downsampling."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.analysis.smoothing import downsample_minmax, ema_smooth


def test_ema_matches_hand_computed_debiased_values() -> None:
    # w = 0.6: last_1 = 0.4; last_2 = 0.4*0.6 + 0.4*0.5 = 0.44; last_3 = 0.44*0.6 + 0 = 0.264
    smoothed = ema_smooth([1.0, 0.5, 0.0], 0.6)
    assert smoothed == pytest.approx([0.4 / 0.4, 0.44 / (1 - 0.36), 0.264 / (1 - 0.216)])
    assert smoothed[1] == pytest.approx(0.6875)
    assert smoothed[2] == pytest.approx(0.336734693877551)


def test_rising_series() -> None:
    assert ema_smooth([0.0, 0.5, 1.0], 0.6) == pytest.approx([0.0, 0.3125, (0.4 + 0.12) / 0.784])


def test_non_finite_points_pass_through_and_do_not_count_in_the_debias() -> None:
    smoothed = ema_smooth([-math.inf, 1.0, math.nan, math.inf, 0.5], 0.6)
    assert smoothed[0] == -math.inf
    assert smoothed[1] == 1.0
    assert smoothed[2] is not None and math.isnan(smoothed[2])
    assert smoothed[3] == math.inf
    # Same as the second point of [1, 0.5]: the three non-finite values were skipped, not counted.
    assert smoothed[4] == pytest.approx(0.6875)


def test_gaps_pass_through_as_none() -> None:
    assert ema_smooth([None, 2.0, None, 4.0], 0.5) == pytest.approx([None, 2.0, None, (0.5 + 2.0) / 0.75])


def test_weight_zero_is_identity_and_weight_one_is_zero() -> None:
    assert ema_smooth([1.0, 0.5, 0.0], 0.0) == [1.0, 0.5, 0.0]
    assert ema_smooth([1.0, 0.5, 0.0], 1.0) == [0.0, 0.0, 0.0]


def test_weight_is_clamped_like_tensorboard() -> None:
    for bad in (math.nan, -1.0, -math.inf, math.inf):
        assert ema_smooth([1.0, 0.5], bad) == [1.0, 0.5]
    assert ema_smooth([1.0, 0.5], 2.0) == [0.0, 0.0]


def test_constant_series_is_returned_without_float_noise() -> None:
    assert ema_smooth([0.3, 0.3, 0.3], 0.1) == [0.3, 0.3, 0.3]
    assert ema_smooth([], 0.9) == []


def test_downsample_keeps_the_dip_and_the_spike() -> None:
    points: list[tuple[float, float | None]] = [(float(i), 100.0) for i in range(1000)]
    points[123] = (123.0, 0.0)
    points[777] = (777.0, 250.0)
    out = downsample_minmax(points, 20)
    assert len(out) <= 20
    assert (123.0, 0.0) in out
    assert (777.0, 250.0) in out
    assert [x for x, _ in out] == sorted(x for x, _ in out)


def test_downsample_runs_contribute_low_then_high_in_x_order() -> None:
    points: list[tuple[float, float | None]] = [(0.0, 5.0), (1.0, 9.0), (2.0, 1.0), (3.0, 4.0), (4.0, 4.0)]
    # Two runs of [0, 1] and [2, 3, 4].
    assert downsample_minmax(points, 4) == [(0.0, 5.0), (1.0, 9.0), (2.0, 1.0), (3.0, 4.0)]


def test_downsample_shows_nan_and_gaps() -> None:
    points: list[tuple[float, float | None]] = [(float(i), 1.0) for i in range(12)]
    points[4] = (4.0, math.nan)
    points[8:12] = [(8.0, None), (9.0, None), (10.0, None), (11.0, None)]
    # Three runs of four: flat, NaN-then-flat, all gaps.
    out = downsample_minmax(points, 6)
    assert [x for x, _ in out] == [0.0, 4.0, 5.0, 8.0]
    assert out[0] == (0.0, 1.0)
    assert out[1][1] is not None and math.isnan(out[1][1])
    assert out[2] == (5.0, 1.0)
    assert out[3] == (8.0, None)


def test_short_series_unchanged() -> None:
    points: list[tuple[float, float | None]] = [(0.0, 1.0), (1.0, None)]
    assert downsample_minmax(points, 10) == points
    with pytest.raises(ValueError):
        downsample_minmax(points, 1)


@given(
    st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), max_size=200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(2, 50),
)
def test_never_raises_and_respects_sizes(values: list[float | None], weight: float, n: int) -> None:
    smoothed = ema_smooth(values, weight)
    assert len(smoothed) == len(values)
    points = [(float(i), v) for i, v in enumerate(values)]
    out = downsample_minmax(points, n)
    assert len(out) <= n
    xs = [x for x, _ in out]
    assert xs == sorted(set(xs))
    assert all(points[int(p[0])] is p for p in out)
