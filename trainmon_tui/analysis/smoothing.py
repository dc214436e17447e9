"""Chart helpers for noisy series: TensorBoard's debiased EMA, and min/max-preserving downsampling.

TensorBoard's scalar smoothing (``classicSmoothing`` in ``tensorboard/webapp/widgets/line_chart_v2/
data_transformer.ts``, earlier ``resmoothDataset`` in ``vz_line_chart2/line-chart.ts``) behaves like this, and
:func:`ema_smooth` does the same:

* The weight is clamped to ``[0, 1]``; a non-finite weight counts as 0 (no smoothing).
* A series whose values all equal the first one is returned unchanged, so no floating-point noise appears on
  a flat line.
* The running average starts at 0 and is updated only by finite values: ``last = last * w + (1 - w) * v``.
  Each finite value increments a counter ``n``, and the output is ``last / (1 - w ** n)``: the debias factor
  counts finite points only, so the first finite value comes out unchanged whatever came before it.
* NaN and +/-inf values are passed through as they are and leave the average untouched: a NaN loss shows as
  NaN at its own step without poisoning the curve after it.
* With weight 1 the debias factor is taken as 1, so every finite point smooths to 0 (TensorBoard's own test
  pins this).

One addition: ``None`` (a gap in our series) passes through like NaN, as None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def ema_smooth(values: Sequence[float | None], weight: float) -> list[float | None]:
    """TensorBoard's debiased exponential moving average of ``values`` (see the module docstring)."""
    if not math.isfinite(weight):
        weight = 0.0
    weight = min(max(weight, 0.0), 1.0)
    if not values:
        return []
    first = values[0]
    if all(v == first for v in values):
        return list(values)
    smoothed: list[float | None] = []
    last = 0.0
    finite_seen = 0
    for value in values:
        if value is None or not math.isfinite(value):
            smoothed.append(value)
            continue
        last = last * weight + (1.0 - weight) * value
        finite_seen += 1
        debias = 1.0 if weight == 1.0 else 1.0 - weight**finite_seen
        smoothed.append(last / debias)
    return smoothed


def _max_rank(value: float) -> tuple[bool, float]:
    """Order for picking a run's high point: NaN outranks everything (+inf too), so a NaN is never hidden."""
    return (True, 0.0) if math.isnan(value) else (False, value)


def downsample_minmax(
    points: Sequence[tuple[float, float | None]], max_points: int
) -> list[tuple[float, float | None]]:
    """At most ``max_points`` of ``points`` (x, y) for a chart, keeping each stretch's lowest and highest.

    The points are cut into ``max_points // 2`` runs of (nearly) equal length; each run contributes its lowest
    and its highest point, in x order (one point when they coincide), so a 0 % dip or a spike survives. A NaN
    counts as the highest point of its run; a run with nothing but None (gaps) contributes one None point so
    the chart still breaks its line there. Fewer points than ``max_points`` come back unchanged.
    """
    if max_points < 2:
        raise ValueError("max_points must be >= 2")
    n = len(points)
    if n <= max_points:
        return list(points)
    runs = max_points // 2
    out: list[tuple[float, float | None]] = []
    for run in range(runs):
        start = run * n // runs
        stop = (run + 1) * n // runs
        low_at: int | None = None
        high_at: int | None = None
        for index in range(start, stop):
            y = points[index][1]
            if y is None:
                continue
            if high_at is None:
                high_at = index
            else:
                high_y = points[high_at][1]
                assert high_y is not None
                if _max_rank(y) > _max_rank(high_y):
                    high_at = index
            if not math.isnan(y):
                low_y = None if low_at is None else points[low_at][1]
                if low_y is None or y < low_y:
                    low_at = index
        if high_at is None:
            out.append(points[start])
            continue
        chosen = sorted({high_at} if low_at is None else {low_at, high_at})
        out.extend(points[index] for index in chosen)
    return out
