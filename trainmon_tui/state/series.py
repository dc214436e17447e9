"""Bounded, multi-resolution history of values sampled together (the fields of a GPU, a metric of a rank).

Layout (see :class:`SeriesLayout`): a raw ring keeps every sample of the recent past at full resolution;
behind it come tiers of fixed-width buckets (by default 10 s for 1 h, 60 s for 6 h, 300 s for 24 h). The last
tier never drops data: when it is full its bucket width doubles and neighbouring buckets merge, so "the whole
run" is always readable at a bounded cost. Every buffer is an ``array`` ring with a fixed capacity, so memory
stops growing once the rings are full, however long the run.

Why these defaults and not "raw for an hour": a bucket costs 4 bytes of count plus 16 bytes of
min/mean/max/last per field, five times a raw sample. With 512 GPUs x 8 fields, an hour of raw 1 Hz samples
plus 6 h of 10 s buckets would need ~250 MB; the default layout needs ~100 MB and still gives the UI at least
300 points for "last 10 min" (raw), "last 1 h" (10 s), "last 6 h" (60 s) and "all" (>= 144 buckets).

Semantics, per field and bucket:

* ``count`` counts samples where the field had a value; ``None`` (unknown) is a gap, never 0.
* ``low``/``high`` ignore NaN, so a 0 % dip survives any amount of downsampling; they are NaN only when
  every value in the bucket was NaN.
* ``mean`` follows IEEE arithmetic: one NaN in a bucket makes its mean NaN, so a NaN loss stays visible at
  every resolution.
* ``last`` is the newest value, NaN included.

Samples must arrive in time order (one asyncio thread feeds the store). A sample older than the newest one is
stored at the newest time: its value matters more than its exact position.

Cost: an append queues the row; every :data:`QUEUED_ROWS` rows, and before any read, the queue is written
as raw rows in one go. A store feeds hundreds of series a row each per second, and writing a row as it
comes touches a series' rings when they have gone cold, which costs several times the work itself
(benchmarks/bench_collect.py); written in runs, the rings are warm for all but the first. Aggregation into
the first tier runs once per bucket, over the raw rows, with C-level ``sum``/``min``/``max`` on array
slices; each tier feeds the next when one of its buckets closes. Reads pick the coarsest tier that still
resolves the requested window and point count, so a read touches at most a few hundred buckets.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, filterfalse
from typing import Any, NamedTuple, cast

_NAN = math.nan
isnan = math.isnan
isfinite = math.isfinite
# Bucket counts are stored as unsigned 32-bit integers.
_MAX_COUNT = 0xFFFFFFFF
MAX_FIELDS = 32
# Distinct presence masks whose newest row a series keeps before folding them into per-field values.
_MAX_NEWEST_ROWS = 8
#: Rows a series holds back before writing them all (reads write them first, so none is ever missing).
QUEUED_ROWS = 8

# Per-field statistics of a set of samples: (count, low, mean, high, last). count == 0 means "no value".
_Stat = tuple[int, float, float, float, float]
_EMPTY: _Stat = (0, _NAN, _NAN, _NAN, _NAN)


@dataclass(frozen=True, slots=True)
class Tier:
    """Buckets of ``width_s`` seconds, ``capacity`` of them."""

    width_s: float
    capacity: int


@dataclass(frozen=True, slots=True)
class SeriesLayout:
    """How much history a series keeps, and at which resolutions.

    Each tier's width must be a whole multiple (>= 2) of the previous one's, so buckets nest exactly.
    """

    raw_capacity: int = 600
    tiers: tuple[Tier, ...] = (Tier(10.0, 360), Tier(60.0, 360), Tier(300.0, 288))

    def __post_init__(self) -> None:
        if self.raw_capacity < 2:
            raise ValueError("raw_capacity must be >= 2")
        if not self.tiers:
            raise ValueError("a layout needs at least one tier")
        previous: float | None = None
        for tier in self.tiers:
            if not (tier.width_s > 0 and math.isfinite(tier.width_s)):
                raise ValueError(f"tier width must be a positive number, got {tier.width_s!r}")
            if tier.capacity < 2:
                raise ValueError("tier capacity must be >= 2")
            if previous is not None:
                ratio = tier.width_s / previous
                if round(ratio) < 2 or abs(ratio - round(ratio)) > 1e-9:
                    raise ValueError(f"tier width {tier.width_s} is not a whole multiple of {previous}")
            previous = tier.width_s


DEFAULT_LAYOUT = SeriesLayout()


class Point(NamedTuple):
    """One point of a chart: a raw sample (``samples`` 1) or a bucket of ``samples`` values.

    ``samples`` 0 with None values is a gap: no value was reported there.
    """

    t: float
    low: float | None
    mean: float | None
    high: float | None
    last: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class SeriesPoints:
    """Points of one field over a window. ``resolution_s`` is 0.0 for raw samples, else the bucket width."""

    field: str
    resolution_s: float
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics of one field over a window; values are None when the window holds no value.

    ``resolution_s`` says how exactly the window edges were honoured (0.0: exactly, else whole buckets of that
    width that overlap the window were counted).
    """

    count: int
    low: float | None
    mean: float | None
    high: float | None
    last: float | None
    resolution_s: float


def _merge(older: _Stat, newer: _Stat) -> _Stat:
    n_old = older[0]
    n_new = newer[0]
    if n_new == 0:
        return older
    if n_old == 0:
        return newer
    total = n_old + n_new
    old_low = older[1]
    new_low = newer[1]
    # A NaN low means "no non-NaN value"; a comparison with NaN is False, which keeps the other side.
    low = new_low if (isnan(old_low) or new_low < old_low) else old_low
    old_high = older[3]
    new_high = newer[3]
    high = new_high if (isnan(old_high) or new_high > old_high) else old_high
    mean = (older[2] * n_old + newer[2] * n_new) / total
    return (total, low, mean, high, newer[4])


def _stat_of_values(values: Sequence[float]) -> _Stat:
    """Statistics of present values (NaN allowed)."""
    n = len(values)
    if n == 0:
        return _EMPTY
    total = sum(values)
    if not isnan(total):  # no NaN among them (nor +inf meeting -inf): C-level min/max are exact
        return (n, min(values), total / n, max(values), values[-1])
    low = _NAN
    high = _NAN
    for v in values:
        if not isnan(v):
            if isnan(low) or v < low:
                low = v
            if isnan(high) or v > high:
                high = v
    return (n, low, total / n, high, values[-1])


def _point_of(t: float, stat: _Stat) -> Point:
    if stat[0] == 0:
        return Point(t, None, None, None, None, 0)
    return Point(t, stat[1], stat[2], stat[3], stat[4], stat[0])


def _fill(cells: dict[int, _Stat], cell_first: int, cell_last: int, width: float) -> tuple[Point, ...]:
    """One point per cell from ``cell_first`` to ``cell_last``; cells without data become gaps."""
    gap = (0, _NAN, _NAN, _NAN, _NAN)
    return tuple([_point_of(cell * width, cells.get(cell, gap)) for cell in range(cell_first, cell_last + 1)])


def _stats_of(stat: _Stat, resolution_s: float) -> WindowStats:
    if stat[0] == 0:
        return WindowStats(0, None, None, None, None, resolution_s)
    return WindowStats(stat[0], stat[1], stat[2], stat[3], stat[4], resolution_s)


def _segments(ring_start: int, first: int, end: int, capacity: int) -> list[tuple[int, int]]:
    """Physical slot ranges holding logical items ``first .. end-1`` of a ring whose oldest item is at
    ``ring_start`` (at most two ranges: before and after the wrap)."""
    if end <= first:
        return []
    start = (ring_start + first) % capacity
    stop = start + (end - first)
    if stop <= capacity:
        return [(start, stop)]
    return [(start, capacity), (0, stop - capacity)]


class _TierRing:
    """Closed buckets of one tier, plus the bucket still being filled from the tier below."""

    __slots__ = (
        "acc",
        "acc_key",
        "capacity",
        "coarsens",
        "count",
        "dropped",
        "high",
        "keys",
        "last",
        "low",
        "mean",
        "nfields",
        "ratio",
        "start",
        "typecode",
        "width",
    )

    def __init__(
        self, *, width: float, ratio: int, capacity: int, nfields: int, typecode: str, coarsens: bool
    ):
        self.width = width
        # How many buckets of the tier below make one bucket here (1 for the first tier, fed from raw rows).
        self.ratio = ratio
        self.capacity = capacity
        self.nfields = nfields
        self.typecode = typecode
        self.coarsens = coarsens
        self.keys = array("q")
        self.count = array("I")
        self.low: array[float] = array(typecode)
        self.mean: array[float] = array(typecode)
        self.high: array[float] = array(typecode)
        self.last: array[float] = array(typecode)
        self.start = 0
        self.dropped = False
        self.acc_key: int | None = None
        self.acc: list[_Stat] = []

    def __len__(self) -> int:
        return len(self.keys)

    def slot(self, index: int) -> int:
        return (self.start + index) % self.capacity

    def key_at(self, index: int) -> int:
        return self.keys[(self.start + index) % self.capacity]

    def stat_at(self, index: int, field: int) -> _Stat:
        at = ((self.start + index) % self.capacity) * self.nfields + field
        count = self.count[at]
        if count == 0:
            return _EMPTY
        return (count, self.low[at], self.mean[at], self.high[at], self.last[at])

    def lower_bound(self, key: int) -> int:
        """Index of the first bucket whose key is >= ``key``."""
        lo = 0
        hi = len(self.keys)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.key_at(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def columns(self, first: int, end: int, field: int) -> tuple[array[Any], ...]:
        """Keys and ``field``'s count, low, mean, high, last of buckets ``first .. end-1``, sliced in C."""
        nf = self.nfields
        parts: list[tuple[array[Any], ...]] = []
        for start, stop in _segments(self.start, first, end, self.capacity):
            parts.append(
                (
                    self.keys[start:stop],
                    self.count[start * nf + field : stop * nf : nf],
                    self.low[start * nf + field : stop * nf : nf],
                    self.mean[start * nf + field : stop * nf : nf],
                    self.high[start * nf + field : stop * nf : nf],
                    self.last[start * nf + field : stop * nf : nf],
                )
            )
        if not parts:
            return (self.keys[:0], self.count[:0], self.low[:0], self.mean[:0], self.high[:0], self.last[:0])
        if len(parts) == 1:
            return parts[0]
        return tuple(a + b for a, b in zip(parts[0], parts[1], strict=True))

    def push(self, key: int, stats: Sequence[_Stat]) -> None:
        size = len(self.keys)
        if size and self.key_at(size - 1) == key:
            # Only after the last tier coarsened: the bucket being closed joins the newest kept one.
            newest = size - 1
            self._write(
                self.slot(newest), key, [_merge(self.stat_at(newest, f), s) for f, s in enumerate(stats)]
            )
            return
        if size < self.capacity:
            self._append(key, stats)
            return
        if self.coarsens:
            self._coarsen()
            self.push(key // 2, stats)
            return
        slot = self.start
        self.start = (self.start + 1) % self.capacity
        self.dropped = True
        self._write(slot, key, stats)

    def _append(self, key: int, stats: Sequence[_Stat]) -> None:
        self.keys.append(key)
        for stat in stats:
            self.count.append(min(stat[0], _MAX_COUNT))
            self.low.append(stat[1])
            # An empty bucket's mean is stored as 0 so that count-weighted sums over a column stay finite.
            self.mean.append(stat[2] if stat[0] else 0.0)
            self.high.append(stat[3])
            self.last.append(stat[4])
        if len(self.keys) == self.capacity:
            # Full: from now on slots are overwritten, so drop the spare room appends over-allocated.
            self.keys = array("q", self.keys)
            self.count = array("I", self.count)
            self.low = array(self.typecode, self.low)
            self.mean = array(self.typecode, self.mean)
            self.high = array(self.typecode, self.high)
            self.last = array(self.typecode, self.last)

    def _write(self, slot: int, key: int, stats: Sequence[_Stat]) -> None:
        self.keys[slot] = key
        at = slot * self.nfields
        for stat in stats:
            self.count[at] = min(stat[0], _MAX_COUNT)
            self.low[at] = stat[1]
            self.mean[at] = stat[2] if stat[0] else 0.0
            self.high[at] = stat[3]
            self.last[at] = stat[4]
            at += 1

    def _coarsen(self) -> None:
        """Double the bucket width, merging neighbours; keeps every sample's contribution."""
        merged: list[tuple[int, list[_Stat]]] = []
        for index in range(len(self.keys)):
            key = self.key_at(index) // 2
            stats = [self.stat_at(index, f) for f in range(self.nfields)]
            if merged and merged[-1][0] == key:
                merged[-1] = (key, [_merge(a, b) for a, b in zip(merged[-1][1], stats, strict=True)])
            else:
                merged.append((key, stats))
        typecode = self.typecode
        self.keys = array("q")
        self.count = array("I")
        self.low = array(typecode)
        self.mean = array(typecode)
        self.high = array(typecode)
        self.last = array(typecode)
        self.start = 0
        for key, stats in merged:
            self._append(key, stats)
        self.width *= 2
        self.ratio *= 2
        if self.acc_key is not None:
            self.acc_key //= 2

    def nbytes(self) -> int:
        return sum(
            len(a) * a.itemsize for a in (self.keys, self.count, self.low, self.mean, self.high, self.last)
        )

    def buffer_lengths(self) -> tuple[int, ...]:
        return tuple(len(a) for a in (self.keys, self.count, self.low, self.mean, self.high, self.last))


class TieredSeries:
    """The history of ``fields`` sampled together at shared timestamps.

    ``typecode`` is the ``array`` type of stored values: ``"f"`` (float32) where 7 significant digits are
    plenty (GPU utilisation, memory, power, clocks), ``"d"`` where they are not.
    """

    __slots__ = (
        "_bits",
        "_fields",
        "_first_t",
        "_full_mask",
        "_index",
        "_last",
        "_mask",
        "_newest_rows",
        "_newest_t",
        "_nfields",
        "_nones",
        "_pending",
        "_pending_key",
        "_queue",
        "_raw_capacity",
        "_raw_dropped_t",
        "_raw_start",
        "_raw_t",
        "_raw_v",
        "_rows_total",
        "_tiers",
        "_typecode",
        "_view",
        "_width0",
    )

    def __init__(self, fields: Sequence[str], *, typecode: str = "f", layout: SeriesLayout = DEFAULT_LAYOUT):
        if not fields or len(fields) > MAX_FIELDS:
            raise ValueError(f"a series has 1 to {MAX_FIELDS} fields, got {len(fields)}")
        if len(set(fields)) != len(fields):
            raise ValueError("field names must be unique")
        if typecode not in ("f", "d"):
            raise ValueError("typecode must be 'f' or 'd'")
        nfields = len(fields)
        self._fields = tuple(fields)
        self._index = {name: i for i, name in enumerate(self._fields)}
        self._nfields = nfields
        self._typecode = typecode
        self._full_mask = (1 << nfields) - 1
        mask_code = "B" if nfields <= 8 else "H" if nfields <= 16 else "I"
        self._raw_capacity = layout.raw_capacity
        self._raw_t = array("d")
        self._raw_v: array[float] = array(typecode)
        self._mask = array(mask_code)
        self._raw_start = 0
        # Time of the newest row the raw ring overwrote: raw holds every sample after it.
        self._raw_dropped_t = -math.inf
        self._rows_total = 0
        self._pending = 0
        self._pending_key: int | None = None
        self._first_t: float | None = None
        self._newest_t = -math.inf
        self._width0 = layout.tiers[0].width_s
        tiers: list[_TierRing] = []
        previous: float | None = None
        for i, tier in enumerate(layout.tiers):
            ratio = 1 if previous is None else round(tier.width_s / previous)
            last = i == len(layout.tiers) - 1
            tiers.append(
                _TierRing(
                    width=tier.width_s,
                    ratio=ratio,
                    capacity=tier.capacity,
                    nfields=nfields,
                    typecode=typecode,
                    coarsens=last,
                )
            )
            previous = tier.width_s
        self._tiers = tiers
        # The newest value of each field is not written per field on every append: the newest row of each
        # presence mask is kept as (row number, time, values) - a GPU's mask rarely changes, so that is
        # one dict store - and folded into the per-field (row number, time, value) list when too many
        # masks pile up. last() looks at both.
        self._newest_rows: dict[int, tuple[int, float, tuple[float | None, ...]]] = {}
        self._last: list[tuple[int, float, float] | None] = [None] * nfields
        self._bits = tuple(1 << f for f in range(nfields))
        self._nones = (None,) * nfields
        self._queue: list[tuple[float, tuple[float | None, ...]]] = []
        self._view: SeriesView | None = None

    # ----------------------------------------------------------------------------------------------- writing

    def append(self, t: float, values: Sequence[float | None]) -> None:
        """Add one sample: one value per field, None where the source did not report it."""
        if len(values) != self._nfields:
            raise ValueError(f"expected {self._nfields} values, got {len(values)}")
        if not isfinite(t):
            raise ValueError(f"sample time must be finite, got {t!r}")
        queue = self._queue
        # A tuple cannot change while it waits in the queue.
        queue.append((t, values if type(values) is tuple else tuple(values)))
        if len(queue) >= QUEUED_ROWS:
            self._write_queued()

    def _write_queued(self) -> None:
        """Write the queued rows; every reader calls this first."""
        queue = self._queue
        if queue:
            self._queue = []
            for t, values in queue:
                self._write_row(t, values)

    def _write_row(self, t: float, values: tuple[float | None, ...]) -> None:
        nfields = self._nfields
        t = max(t, self._newest_t)
        key0 = int(t // self._width0)
        if key0 != self._pending_key:
            if self._pending:
                self._flush()
            if self._tiers[0].acc_key is not None:
                self._close(0)
            self._pending_key = key0
        elif self._pending >= self._raw_capacity:
            # The raw ring is about to overwrite a row not yet counted in the first tier.
            self._flush()
        row = self._rows_total
        stored: Sequence[float]
        if None in values:
            # The presence bits (C-level loops) and the row as stored: 0.0 where unknown, as the mask says.
            mask = sum(compress(self._bits, map(operator.is_not, values, self._nones)))
            stored = [0.0 if v is None else v for v in values]
        else:
            mask = self._full_mask
            stored = cast(Sequence[float], values)  # no None in it: checked above
        newest_rows = self._newest_rows
        if mask not in newest_rows and len(newest_rows) >= _MAX_NEWEST_ROWS:
            self._fold_newest_rows()
        newest_rows[mask] = (row, t, values)
        raw_t = self._raw_t
        if len(raw_t) < self._raw_capacity:
            raw_t.append(t)
            self._mask.append(mask)
            self._raw_v.extend(stored)
            if len(raw_t) == self._raw_capacity:
                # Full: from now on rows are overwritten, so drop the spare room appends over-allocated.
                self._raw_t = array("d", raw_t)
                self._mask = array(self._mask.typecode, self._mask)
                self._raw_v = array(self._typecode, self._raw_v)
        else:
            slot = self._raw_start
            self._raw_start = slot + 1 if slot + 1 < self._raw_capacity else 0
            self._raw_dropped_t = raw_t[slot]
            raw_t[slot] = t
            self._mask[slot] = mask
            if nfields == 1:
                self._raw_v[slot] = stored[0]
            else:
                at = slot * nfields
                self._raw_v[at : at + nfields] = array(self._typecode, stored)
        if self._first_t is None:
            self._first_t = t
        self._newest_t = t
        self._pending += 1
        self._rows_total = row + 1

    def _fold_newest_rows(self) -> None:
        """Move the newest row of every presence mask into the per-field newest values."""
        last = self._last
        for row, t, values in sorted(self._newest_rows.values(), key=operator.itemgetter(0)):
            for f, value in enumerate(values):
                if value is not None:
                    last[f] = (row, t, float(value))
        self._newest_rows.clear()

    def _flush(self) -> None:
        """Count the pending raw rows into the first tier's open bucket."""
        stats = self._aggregate_block(len(self._raw_t) - self._pending, self._pending)
        tier = self._tiers[0]
        if tier.acc_key is None:
            tier.acc_key = self._pending_key
            tier.acc = stats
        else:
            tier.acc = [_merge(a, b) for a, b in zip(tier.acc, stats, strict=True)]
        self._pending = 0

    def _aggregate_block(self, first: int, n: int) -> list[_Stat]:
        """Statistics of every field over raw rows ``first .. first+n-1`` (logical, oldest = 0)."""
        nfields = self._nfields
        parts = [
            (self._raw_v[start * nfields : stop * nfields], self._mask[start:stop])
            for start, stop in _segments(self._raw_start, first, first + n, self._raw_capacity)
        ]
        if not parts:
            return [_EMPTY] * nfields
        block, masks = parts[0] if len(parts) == 1 else (parts[0][0] + parts[1][0], parts[0][1] + parts[1][1])
        same = masks[0]
        if masks.count(same) == n:
            # Every row has the same fields (a GPU that never reports memory temperature): whole columns.
            return [_stat_of_values(block[f::nfields]) if same & (1 << f) else _EMPTY for f in range(nfields)]
        out: list[_Stat] = []
        for f in range(nfields):
            bit = 1 << f
            column = block[f::nfields]
            out.append(_stat_of_values([v for v, m in zip(column, masks, strict=True) if m & bit]))
        return out

    def _close(self, level: int) -> None:
        """Close the open bucket of tier ``level``: keep it, and count it into the next tier's open bucket."""
        tier = self._tiers[level]
        key = tier.acc_key
        if key is None:
            return
        stats = tier.acc
        tier.push(key, stats)
        tier.acc_key = None
        tier.acc = []
        if level + 1 == len(self._tiers):
            return
        upper = self._tiers[level + 1]
        if upper.acc_key is not None and upper.acc_key != key // upper.ratio:
            self._close(level + 1)
        upper_key = key // upper.ratio
        if upper.acc_key is None:
            upper.acc_key = upper_key
            upper.acc = list(stats)
        else:
            upper.acc = [_merge(a, b) for a, b in zip(upper.acc, stats, strict=True)]

    # ----------------------------------------------------------------------------------------------- raw rows

    def _row_slot(self, index: int) -> int:
        return (self._raw_start + index) % self._raw_capacity

    def _raw_column(self, first: int, end: int, field: int) -> tuple[array[float], array[int]]:
        """``field``'s stored values and the presence masks of raw rows ``first .. end-1``, sliced in C."""
        nf = self._nfields
        parts = [
            (self._raw_v[start * nf + field : stop * nf : nf], self._mask[start:stop])
            for start, stop in _segments(self._raw_start, first, end, self._raw_capacity)
        ]
        if not parts:
            return (self._raw_v[:0], self._mask[:0])
        if len(parts) == 1:
            return parts[0]
        return (parts[0][0] + parts[1][0], parts[0][1] + parts[1][1])

    def _raw_times(self, first: int, end: int) -> array[float]:
        parts = [self._raw_t[a:b] for a, b in _segments(self._raw_start, first, end, self._raw_capacity)]
        if not parts:
            return self._raw_t[:0]
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def _aggregate_rows(self, first: int, n: int, field: int) -> _Stat:
        """Statistics of ``field`` over raw rows ``first .. first+n-1`` (logical, oldest = 0)."""
        if n <= 0:
            return _EMPTY
        values, masks = self._raw_column(first, first + n, field)
        if masks.count(self._full_mask) != n:
            bit = 1 << field
            return _stat_of_values([v for v, m in zip(values, masks, strict=True) if m & bit])
        return _stat_of_values(values)

    def _raw_lower_bound(self, t: float) -> int:
        """Logical index of the first raw row at or after ``t``."""
        lo = 0
        hi = len(self._raw_t)
        raw_t = self._raw_t
        while lo < hi:
            mid = (lo + hi) // 2
            if raw_t[self._row_slot(mid)] < t:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _raw_upper_bound(self, t: float) -> int:
        lo = 0
        hi = len(self._raw_t)
        raw_t = self._raw_t
        while lo < hi:
            mid = (lo + hi) // 2
            if raw_t[self._row_slot(mid)] <= t:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # ----------------------------------------------------------------------------------------------- tiers

    def _tier_items(self, level: int, field: int, key_from: int, key_to: int) -> list[tuple[int, _Stat]]:
        """Buckets of tier ``level`` with keys in ``[key_from, key_to]``, oldest first, including the data
        still on its way up (open buckets of lower tiers and pending raw rows)."""
        tier = self._tiers[level]
        first = tier.lower_bound(key_from)
        end = tier.lower_bound(key_to + 1)
        items: list[tuple[int, _Stat]] = [
            (key, (count, low, mean, high, last))
            for key, count, low, mean, high, last in zip(*tier.columns(first, end, field), strict=True)
            if count
        ]
        for key, stat in self._in_flight(level, field):
            if key_from <= key <= key_to and stat[0]:
                if items and items[-1][0] == key:
                    items[-1] = (key, _merge(items[-1][1], stat))
                else:
                    items.append((key, stat))
        return items

    def _in_flight(self, level: int, field: int) -> list[tuple[int, _Stat]]:
        """Data not yet in tier ``level``'s closed buckets, as (key in that tier, stats), oldest first."""
        pieces: list[tuple[int, _Stat]] = []
        divisor = 1
        for lower in range(level, -1, -1):
            tier = self._tiers[lower]
            if tier.acc_key is not None:
                pieces.append((tier.acc_key // divisor, tier.acc[field]))
            divisor *= tier.ratio
        if self._pending and self._pending_key is not None:
            first = len(self._raw_t) - self._pending
            pieces.append((self._pending_key // divisor, self._aggregate_rows(first, self._pending, field)))
        merged: list[tuple[int, _Stat]] = []
        for key, stat in pieces:
            if merged and merged[-1][0] == key:
                merged[-1] = (key, _merge(merged[-1][1], stat))
            else:
                merged.append((key, stat))
        return merged

    def _covers(self, source: int, t_start: float) -> bool:
        """Whether ``source`` (0 = raw, 1.. = tiers) still holds every sample at or after ``t_start``."""
        if source == 0:
            return self._rows_total == len(self._raw_t) or t_start > self._raw_dropped_t
        tier = self._tiers[source - 1]
        return not tier.dropped or tier.key_at(0) * tier.width <= t_start

    # ----------------------------------------------------------------------------------------------- reading

    @property
    def fields(self) -> tuple[str, ...]:
        return self._fields

    @property
    def first_t(self) -> float | None:
        """Time of the first sample ever appended."""
        self._write_queued()
        return self._first_t

    @property
    def newest_t(self) -> float | None:
        """Time of the newest sample (any field)."""
        self._write_queued()
        return None if self._first_t is None else self._newest_t

    @property
    def samples_total(self) -> int:
        """How many samples were appended since the series began."""
        # Counted without writing the queue: the store asks every metric for this at every snapshot.
        return self._rows_total + len(self._queue)

    def field_index(self, field: str) -> int:
        try:
            return self._index[field]
        except KeyError:
            raise KeyError(f"unknown field {field!r}; this series has {self._fields}") from None

    def last(self, field: str) -> tuple[float, float] | None:
        """The newest value of ``field`` and its time (NaN included), or None if it never had a value."""
        f = self.field_index(field)
        self._write_queued()
        newest = self._last[f]
        for row, t, values in self._newest_rows.values():
            value = values[f]
            if value is not None and (newest is None or row > newest[0]):
                newest = (row, t, float(value))
        return None if newest is None else (newest[1], newest[2])

    def _window(self, since: float | None, until: float | None) -> tuple[float, float] | None:
        if self._first_t is None:
            return None
        t_start = self._first_t if since is None else max(since, self._first_t)
        t_end = self._newest_t if until is None else until
        if t_end < t_start:
            return None
        return (t_start, t_end)

    def stats(self, field: str, since: float | None = None, until: float | None = None) -> WindowStats:
        """Count, min, mean, max and last value of ``field`` over ``[since, until]`` (None: no bound)."""
        f = self.field_index(field)
        self._write_queued()
        window = self._window(since, until)
        if window is None:
            return WindowStats(0, None, None, None, None, 0.0)
        t_start, t_end = window
        if self._covers(0, t_start):
            first = self._raw_lower_bound(t_start)
            end = self._raw_upper_bound(t_end)
            return _stats_of(self._aggregate_rows(first, end - first, f), 0.0)
        for level, tier in enumerate(self._tiers):
            if self._covers(level + 1, t_start):
                width = tier.width
                return _stats_of(self._tier_stat(level, f, int(t_start // width), int(t_end // width)), width)
        raise AssertionError("the last tier always covers the whole series")

    def _tier_stat(self, level: int, field: int, key_from: int, key_to: int) -> _Stat:
        """Statistics of ``field`` over tier ``level``'s buckets with keys in ``[key_from, key_to]``.

        The closed buckets are summarised with C-level loops over column slices (a report may ask this of
        every GPU), then the data still in flight is merged in.
        """
        tier = self._tiers[level]
        first = tier.lower_bound(key_from)
        end = tier.lower_bound(key_to + 1)
        _, counts, lows, means, highs, lasts = tier.columns(first, end, field)
        total = _EMPTY
        n = sum(counts)
        if n:
            newest = len(counts) - 1
            while not counts[newest]:
                newest -= 1
            low = min(filterfalse(isnan, lows), default=_NAN)
            high = max(filterfalse(isnan, highs), default=_NAN)
            total = (n, low, sum(map(operator.mul, means, counts)) / n, high, lasts[newest])
        for key, stat in self._in_flight(level, field):
            if key_from <= key <= key_to:
                total = _merge(total, stat)
        return total

    def points(
        self, field: str, since: float | None = None, until: float | None = None, max_points: int = 300
    ) -> SeriesPoints:
        """At most ``max_points`` points of ``field`` over ``[since, until]`` for a chart.

        Raw samples when they fit; otherwise buckets aligned to multiples of their width (so a chart does not
        jitter as time moves), every bucket in the window listed, empty ones as gaps (``samples`` 0, None
        values). A window reaching back beyond what a tier keeps is answered by the next, coarser tier.
        """
        if max_points < 1:
            raise ValueError("max_points must be >= 1")
        f = self.field_index(field)
        self._write_queued()
        window = self._window(since, until)
        if window is None:
            return SeriesPoints(field, 0.0, ())
        t_start, t_end = window
        raw_covers = self._covers(0, t_start)
        if raw_covers:
            first = self._raw_lower_bound(t_start)
            end = self._raw_upper_bound(t_end)
            if end - first <= max_points:
                values, masks = self._raw_column(first, end, f)
                bit = 1 << f
                raw_points = [
                    Point(t, v, v, v, v, 1) if m & bit else Point(t, None, None, None, None, 0)
                    for t, v, m in zip(self._raw_times(first, end), values, masks, strict=True)
                ]
                return SeriesPoints(field, 0.0, tuple(raw_points))
        if max_points == 1 or t_end == t_start:
            # One point: the whole window (many samples sharing one time also end up here).
            stats = self.stats(field, t_start, t_end)
            point = Point(t_start, stats.low, stats.mean, stats.high, stats.last, stats.count)
            return SeriesPoints(field, max(t_end - t_start, stats.resolution_s), (point,))
        # Any cell at least this wide yields at most max_points cells over the window.
        needed = (t_end - t_start) / (max_points - 1)
        chosen: int | None = None
        for level, tier in enumerate(self._tiers):
            if not self._covers(level + 1, t_start):
                continue
            if tier.width <= needed:
                chosen = level
            elif chosen is None and not raw_covers:
                chosen = level
                break
            else:
                break
        if chosen is None:
            return self._raw_grid(f, t_start, t_end, needed)
        return self._tier_grid(f, chosen, (t_start, t_end), needed)

    def _raw_grid(self, f: int, t_start: float, t_end: float, width: float) -> SeriesPoints:
        first = self._raw_lower_bound(t_start)
        end = self._raw_upper_bound(t_end)
        values, masks = self._raw_column(first, end, f)
        bit = 1 << f
        groups: dict[int, list[float]] = {}
        for t, v, m in zip(self._raw_times(first, end), values, masks, strict=True):
            group = groups.setdefault(int(t // width), [])
            if m & bit:
                group.append(v)
        cells = {cell: _stat_of_values(group) for cell, group in groups.items()}
        points = _fill(cells, int(t_start // width), int(t_end // width), width)
        return SeriesPoints(self._fields[f], width, points)

    def _tier_grid(self, f: int, level: int, window: tuple[float, float], needed: float) -> SeriesPoints:
        t_start, t_end = window
        tier = self._tiers[level]
        multiple = max(1, math.ceil(needed / tier.width))
        width = tier.width * multiple
        key_from = int(t_start // tier.width)
        key_to = int(t_end // tier.width)
        cells: dict[int, _Stat] = {}
        for key, stat in self._tier_items(level, f, key_from, key_to):
            cell = key // multiple
            earlier = cells.get(cell)
            cells[cell] = stat if earlier is None else _merge(earlier, stat)
        points = _fill(cells, key_from // multiple, key_to // multiple, width)
        return SeriesPoints(self._fields[f], width, points)

    def view(self) -> SeriesView:
        """A read-only handle on this series (one per series, reused by every snapshot)."""
        if self._view is None:
            self._view = SeriesView(self)
        return self._view

    # ----------------------------------------------------------------------------------------------- memory

    def nbytes(self) -> int:
        """Bytes held in this series' buffers (the arrays; not the Python object headers)."""
        self._write_queued()
        raw = sum(len(a) * a.itemsize for a in (self._raw_t, self._raw_v, self._mask))
        return raw + sum(tier.nbytes() for tier in self._tiers)

    def buffer_lengths(self) -> tuple[int, ...]:
        """Lengths of every buffer, raw first; constant once the rings are full."""
        self._write_queued()
        lengths: list[int] = [len(self._raw_t), len(self._raw_v), len(self._mask)]
        for tier in self._tiers:
            lengths.extend(tier.buffer_lengths())
        return tuple(lengths)

    def tier_widths(self) -> tuple[float, ...]:
        """Current bucket width of each tier (the last one doubles as the run outgrows it)."""
        self._write_queued()
        return tuple(tier.width for tier in self._tiers)


class SeriesView:
    """Read-only access to a :class:`TieredSeries`, handed to snapshot readers (UI, report).

    It reads the live rings: pass ``until=snapshot.now`` for a view consistent with a snapshot.
    """

    __slots__ = ("_series",)

    def __init__(self, series: TieredSeries):
        self._series = series

    @property
    def fields(self) -> tuple[str, ...]:
        return self._series.fields

    @property
    def first_t(self) -> float | None:
        return self._series.first_t

    @property
    def newest_t(self) -> float | None:
        return self._series.newest_t

    def last(self, field: str) -> tuple[float, float] | None:
        return self._series.last(field)

    def stats(self, field: str, since: float | None = None, until: float | None = None) -> WindowStats:
        return self._series.stats(field, since, until)

    def points(
        self, field: str, since: float | None = None, until: float | None = None, max_points: int = 300
    ) -> SeriesPoints:
        return self._series.points(field, since, until, max_points)
