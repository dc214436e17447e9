"""Tiered series: buckets land where they should, dips/NaN/gaps survive downsampling, memory is bounded."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.state.series import DEFAULT_LAYOUT, Point, SeriesLayout, Tier, TieredSeries

# Small rings so a few hundred simulated seconds exercise every roll-over.
SMALL = SeriesLayout(raw_capacity=20, tiers=(Tier(10.0, 6), Tier(60.0, 4)))
WIDE_FIRST_TIER = SeriesLayout(raw_capacity=20, tiers=(Tier(10.0, 30), Tier(60.0, 10)))


def _gpu_like(layout: SeriesLayout) -> TieredSeries:
    """200 s at 1 Hz: sm 100 % but for one 0 % reading at t=37; mem unknown (None) for t in [50, 70)."""
    series = TieredSeries(("sm", "mem"), layout=layout)
    for t in range(200):
        sm = 0.0 if t == 37 else 100.0
        mem = None if 50 <= t < 70 else float(t % 10)
        series.append(float(t), (sm, mem))
    return series


def test_whole_run_stats_count_every_sample_after_rollover() -> None:
    series = _gpu_like(SMALL)
    sm = series.stats("sm")
    assert (sm.count, sm.low, sm.high, sm.last) == (200, 0.0, 100.0, 100.0)
    assert sm.mean == pytest.approx(99.5)
    mem = series.stats("mem")
    assert (mem.count, mem.low, mem.high, mem.last) == (180, 0.0, 9.0, 9.0)
    assert mem.mean == pytest.approx(4.5)


def test_values_land_in_the_right_coarse_buckets_and_the_dip_survives() -> None:
    series = _gpu_like(SMALL)
    # Raw keeps only t >= 180 and the 10 s tier only 130..189, so "all" comes from the 60 s tier, two
    # of its buckets per point.
    result = series.points("sm", max_points=4)
    assert result.resolution_s == 120.0
    first, second = result.points
    assert (first.t, first.low, first.high, first.samples) == (0.0, 0.0, 100.0, 120)
    assert first.mean == pytest.approx(119 * 100 / 120)
    assert second == Point(120.0, 100.0, 100.0, 100.0, 100.0, 80)


def test_ten_second_buckets_keep_min_and_show_gaps_as_none() -> None:
    series = _gpu_like(WIDE_FIRST_TIER)
    sm = series.points("sm", max_points=21)
    assert sm.resolution_s == 10.0
    assert [p.t for p in sm.points] == [10.0 * i for i in range(20)]
    dip = sm.points[3]
    assert (dip.low, dip.high, dip.samples) == (0.0, 100.0, 10)
    assert dip.mean == pytest.approx(90.0)
    mem = series.points("mem", max_points=21).points
    # The source printed '-' for 20 s: two gaps, not two zeros.
    assert mem[5] == Point(50.0, None, None, None, None, 0)
    assert mem[6] == Point(60.0, None, None, None, None, 0)
    assert (mem[4].low, mem[4].high, mem[4].samples) == (0.0, 9.0, 10)
    assert mem[4].mean == pytest.approx(4.5)


def test_raw_points_within_the_raw_window_are_exact() -> None:
    series = _gpu_like(SMALL)
    result = series.points("mem", since=185.0)
    assert result.resolution_s == 0.0
    assert [p.t for p in result.points] == [float(t) for t in range(185, 200)]
    assert [p.last for p in result.points] == [float(t % 10) for t in range(185, 200)]
    assert all(p.samples == 1 for p in result.points)
    stats = series.stats("sm", since=185.0, until=189.0)
    assert (stats.count, stats.mean, stats.resolution_s) == (5, 100.0, 0.0)


def _loss_series() -> TieredSeries:
    """A loss that turns NaN once at t=55 and for good from t=190."""
    series = TieredSeries(("loss",), typecode="d", layout=WIDE_FIRST_TIER)
    for t in range(200):
        loss = math.nan if t == 55 or t >= 190 else 2.0 - t * 0.001
        series.append(float(t), (loss,))
    return series


def test_nan_is_a_value_at_every_resolution() -> None:
    series = _loss_series()
    whole = series.stats("loss")
    assert whole.count == 200
    assert whole.mean is not None and math.isnan(whole.mean)
    assert whole.last is not None and math.isnan(whole.last)
    assert whole.low == pytest.approx(2.0 - 0.189)
    assert whole.high == 2.0
    buckets = series.points("loss", max_points=21).points
    one_nan = buckets[5]
    assert one_nan.samples == 10
    assert one_nan.mean is not None and math.isnan(one_nan.mean)
    assert one_nan.low == pytest.approx(2.0 - 0.059)
    assert one_nan.high == pytest.approx(2.0 - 0.050)
    assert one_nan.last == pytest.approx(2.0 - 0.059)
    diverged = buckets[19]
    assert diverged.samples == 10
    assert all(v is not None and math.isnan(v) for v in (diverged.low, diverged.mean, diverged.high))
    raw = series.points("loss", since=188.0).points
    assert raw[0].last == pytest.approx(2.0 - 0.188)
    assert raw[2].last is not None and math.isnan(raw[2].last)
    assert raw[2].samples == 1


def test_last_value_and_its_time_skip_gaps() -> None:
    series = TieredSeries(("sm", "mem_temp"))
    assert series.last("sm") is None
    series.append(10.0, (50.0, 70.0))
    series.append(11.0, (60.0, None))
    series.append(12.0, (65.0, None))
    assert series.last("sm") == (12.0, 65.0)
    # A stale field reports when it was last seen, so the UI can call it stale instead of showing 70 as now.
    assert series.last("mem_temp") == (10.0, 70.0)
    series.append(13.0, (None, 71.0))
    assert series.last("sm") == (12.0, 65.0)
    assert series.last("mem_temp") == (13.0, 71.0)


def test_time_going_backwards_is_clamped_to_the_newest_sample() -> None:
    series = TieredSeries(("x",))
    series.append(100.0, (1.0,))
    series.append(90.0, (2.0,))
    assert series.newest_t == 100.0
    assert [p.t for p in series.points("x").points] == [100.0, 100.0]
    assert series.last("x") == (100.0, 2.0)


def test_buffers_stop_growing_after_days_and_the_whole_run_stays_readable() -> None:
    layout = SeriesLayout(raw_capacity=50, tiers=(Tier(10.0, 30), Tier(60.0, 20), Tier(300.0, 12)))
    series = TieredSeries(("a", "b"), layout=layout)
    # 8 B time + 2 x 4 B + 1 B mask per raw row; 8 B key + 2 x (4 B count + 4 x 4 B) per bucket.
    bound = 50 * (8 + 8 + 1) + (30 + 20 + 12) * (8 + 2 * 20)
    day = 86400
    hourly: list[tuple[int, ...]] = []
    for t in range(0, 3 * day, 5):
        series.append(float(t), (float(t % 600), 1.0))
        if (t + 5) % 3600 == 0:
            hourly.append(series.buffer_lengths())
            assert series.nbytes() <= bound
    # Raw and the first two tiers are full rings from the first day on; the last one merges neighbours
    # when full, so it never holds more than its 12 buckets.
    after_first_day = hourly[24:]
    assert all(lengths[:15] == after_first_day[0][:15] for lengths in after_first_day)
    assert all(max(lengths[15:]) <= 2 * 12 for lengths in hourly)
    assert max(max(lengths[15:]) for lengths in hourly) == 2 * 12
    # The last tier doubled its width instead of dropping anything.
    assert series.tier_widths()[:2] == (10.0, 60.0)
    assert series.tier_widths()[2] >= 300.0 * 2**5
    whole = series.stats("a")
    assert (whole.count, whole.low, whole.high) == (3 * day // 5, 0.0, 595.0)
    points = series.points("a", max_points=10).points
    assert len(points) <= 10
    assert sum(p.samples for p in points) == 3 * day // 5


def test_default_layout_holds_fixed_capacities() -> None:
    series = TieredSeries(tuple(f"f{i}" for i in range(8)))
    row = tuple(float(i) for i in range(8))
    for t in range(0, 2 * 86400, 5):
        series.append(float(t), row)
    raw = DEFAULT_LAYOUT.raw_capacity
    buckets = [tier.capacity for tier in DEFAULT_LAYOUT.tiers]
    assert series.buffer_lengths()[:3] == (raw, raw * 8, raw)
    first, second, last = series.buffer_lengths()[3::6]
    assert (first, second) == (buckets[0], buckets[1])
    assert buckets[2] // 2 <= last <= buckets[2]
    # 8 B time + 8 x float32 + 1 B mask per raw row; 8 B key + 8 x (4 B count + 4 x float32) per bucket.
    assert series.nbytes() <= raw * (8 + 8 * 4 + 1) + sum(buckets) * (8 + 8 * 20)
    assert series.tier_widths() == (10.0, 60.0, 600.0)


def test_default_layout_picks_a_resolution_per_window() -> None:
    series = TieredSeries(("loss",), typecode="d")
    now = 7200.0
    for t in range(7201):
        series.append(float(t), (float(t),))
    # Raw keeps the newest 600 samples: t = 6601 .. 7200.
    last_10_min = series.points("loss", since=now - 599, until=now, max_points=600)
    assert last_10_min.resolution_s == 0.0
    assert [p.last for p in last_10_min.points] == [float(t) for t in range(6601, 7201)]
    squeezed = series.points("loss", since=now - 599, until=now, max_points=300)
    assert squeezed.resolution_s == pytest.approx(599 / 299)
    assert len(squeezed.points) <= 300
    assert sum(p.samples for p in squeezed.points) == 600
    # One second more than raw holds: the 10 s tier answers, its first bucket reaching back to 6600.
    beyond_raw = series.points("loss", since=now - 600, until=now, max_points=600)
    assert beyond_raw.resolution_s == 10.0
    assert beyond_raw.points[0] == Point(6600.0, 6600.0, 6604.5, 6609.0, 6609.0, 10)
    last_hour = series.points("loss", since=now - 3600, until=now, max_points=300)
    assert last_hour.resolution_s == 20.0
    assert len(last_hour.points) <= 300
    everything = series.points("loss", max_points=300)
    assert everything.resolution_s == 60.0
    assert len(everything.points) == 121
    assert everything.points[0].low == 0.0
    assert everything.points[-1].high == now


def test_a_window_after_the_data_ends_shows_trailing_gaps() -> None:
    series = TieredSeries(("sm",), layout=WIDE_FIRST_TIER)
    for t in range(100):
        series.append(float(t), (50.0,))
    # The host went quiet at t=99; the UI asks for up to t=149.
    points = series.points("sm", since=50.0, until=149.0, max_points=11).points
    assert [p.samples for p in points] == [10] * 5 + [0] * 5


def test_view_is_shared_and_read_only() -> None:
    series = TieredSeries(("x",))
    series.append(1.0, (2.0,))
    view = series.view()
    assert view is series.view()
    assert not hasattr(view, "append")
    assert view.last("x") == (1.0, 2.0)
    assert view.stats("x").count == 1


def test_invalid_input_is_refused() -> None:
    series = TieredSeries(("a", "b"))
    with pytest.raises(ValueError):
        series.append(1.0, (1.0,))
    with pytest.raises(ValueError):
        series.append(math.nan, (1.0, 2.0))
    with pytest.raises(KeyError):
        series.stats("c")
    with pytest.raises(ValueError):
        SeriesLayout(tiers=(Tier(10.0, 10), Tier(25.0, 10)))
    with pytest.raises(ValueError):
        series.points("a", max_points=0)


_VALUE = st.one_of(st.none(), st.just(math.nan), st.floats(-1e6, 1e6, allow_nan=False))
_STEP = st.sampled_from([0.0, 0.3, 1.0, 2.5, 7.0, 45.0, 400.0])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(_STEP, _VALUE, _VALUE), min_size=1, max_size=150),
    st.integers(1, 40),
    st.integers(0, 149),
)
def test_summaries_agree_with_brute_force(
    rows: list[tuple[float, float | None, float | None]], n: int, since_index: int
) -> None:
    layout = SeriesLayout(raw_capacity=8, tiers=(Tier(1.0, 5), Tier(4.0, 4), Tier(16.0, 3)))
    series = TieredSeries(("a", "b"), typecode="d", layout=layout)
    t = 1000.0
    kept: list[tuple[float, float | None]] = []
    for dt, a, b in rows:
        t += dt
        series.append(t, (a, b))
        kept.append((t, a))
    present = [v for _, v in kept if v is not None]
    finite = [v for v in present if not math.isnan(v)]
    stats = series.stats("a")
    assert stats.count == len(present)
    if present:
        assert stats.last is not None
        assert math.isnan(stats.last) if math.isnan(present[-1]) else stats.last == present[-1]
        assert stats.mean is not None
        if len(finite) < len(present):
            assert math.isnan(stats.mean)
        else:
            assert stats.mean == pytest.approx(sum(finite) / len(finite), rel=1e-9, abs=1e-6)
    if finite:
        assert (stats.low, stats.high) == (min(finite), max(finite))
    points = series.points("a", max_points=n).points
    assert len(points) <= n
    assert sum(p.samples for p in points) == len(present)
    lows = [p.low for p in points if p.low is not None and not math.isnan(p.low)]
    if finite:
        assert min(lows) == min(finite)
    # A window inside what raw still holds is answered exactly (resolution 0).
    since = kept[min(since_index, len(kept) - 1)][0]
    window = series.stats("a", since=since)
    in_window = [v for time, v in kept if time >= since and v is not None]
    if window.resolution_s == 0.0:
        assert window.count == len(in_window)
    else:
        assert window.count >= len(in_window)


_MAYBE = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(-2.0, 3.0), _MAYBE, _MAYBE, _MAYBE, _MAYBE), min_size=1, max_size=80))
def test_last_value_of_each_field_agrees_with_brute_force(
    rows: list[tuple[float, float | None, float | None, float | None, float | None]],
) -> None:
    # Four fields with every presence pattern (16 masks, more than a series keeps before folding them), time
    # steps that go back (clamped) or stand still, and a read after every append (queued rows written).
    fields = ("a", "b", "c", "d")
    series = TieredSeries(fields, typecode="d", layout=SMALL)
    t = 500.0
    newest_t = -math.inf
    expected: dict[str, tuple[float, float] | None] = dict.fromkeys(fields)
    for count, (dt, *values) in enumerate(rows, start=1):
        t += dt
        newest_t = max(newest_t, t)
        series.append(t, tuple(values))
        for name, value in zip(fields, values, strict=True):
            if value is not None:
                expected[name] = (newest_t, value)
        assert {name: series.last(name) for name in fields} == expected
        assert series.samples_total == count
        assert series.newest_t == newest_t


def test_every_reader_sees_rows_still_queued() -> None:
    series = TieredSeries(("x",), typecode="d")
    for step in range(3):  # fewer than a queue's worth
        series.append(100.0 + step, (float(step),))
    assert series.first_t == 100.0
    assert series.stats("x").count == 3
    assert [point.mean for point in series.points("x").points] == [0.0, 1.0, 2.0]
    fresh = TieredSeries(("x",), typecode="d")
    fresh.append(7.0, (1.5,))
    assert fresh.last("x") == (7.0, 1.5)
    assert fresh.nbytes() > 0 and fresh.buffer_lengths()[0] == 1


def test_a_queued_row_keeps_the_values_it_was_given() -> None:
    series = TieredSeries(("x", "y"), typecode="d")
    values = [1.0, 2.0]
    series.append(1.0, values)
    values[0] = 99.0  # the caller reuses its list
    assert series.last("x") == (1.0, 1.0)
