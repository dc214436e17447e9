"""Measurements the health rules judge by, computed from one snapshot: no state, no clock, no I/O.

Each function answers one question about series and progress already in a
:class:`~trainmon_tui.state.store.StoreSnapshot` (how long a GPU has been idle, its duty cycle, how fast a
rank goes, whether a metric still improves, which processes belong to which run). The stateful part - when a
condition started, raising once, resolving - lives in :mod:`trainmon_tui.analysis.health`.

Times are store-clock seconds (``snapshot.now``). Unknown stays None: a GPU without samples has no duty
cycle rather than a duty cycle of 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from trainmon_tui.analysis.eta import current_segment, quantile
from trainmon_tui.analysis.health_settings import HealthSettings, PlateauMode, PlateauSpec
from trainmon_tui.model import ProcInfo
from trainmon_tui.state.series import Point, SeriesView
from trainmon_tui.state.store import GpuSnapshot, HostSnapshot, MetricSnapshot, RankSnapshot, RunSnapshot

SM_FIELD = "sm_pct"
MEMORY_FIELD = "fb_used_mib"
#: Print intervals shorter than this are a backlog arriving in chunks, not the pace of training
#: (see rank_rate).
BACKLOG_GAP_S = 0.05
# Relative rounding of a single-precision float (2**-23): the series keep GPU readings as such.
_SINGLE_PRECISION_STEP = 2.0**-23
# MAD -> standard deviation for normally distributed noise.
_MAD_TO_SIGMA = 1.4826


# ------------------------------------------------------------------------------------------------ numbers


def median(values: Sequence[float]) -> float:
    return quantile(sorted(values), 0.5)


def robust_sigma(values: Sequence[float]) -> float:
    """Standard deviation estimated from the median absolute deviation: one outlier does not inflate it."""
    if len(values) < 2:
        return 0.0
    centre = median(values)
    return _MAD_TO_SIGMA * median([abs(value - centre) for value in values])


def format_value(value: float) -> str:
    """A metric value with 4 significant digits (``nan`` and ``inf`` as such)."""
    return f"{value:.4g}"


# ------------------------------------------------------------------------------------------------- GPUs


def _recent_points(history: SeriesView, name: str, since: float, until: float) -> tuple[Point, ...]:
    if name not in history.fields:
        return ()
    # Twice the raw ring: raw samples whenever the window is still raw, else the finest buckets that cover it.
    return history.points(name, since, until, max_points=1200).points


def duty_cycle(
    history: SeriesView, now: float, window_s: float = 600.0, busy_pct: float = 50.0
) -> float | None:
    """Share (0..1) of the samples of the last ``window_s`` seconds at ``busy_pct`` % SM or more.

    A one-off reading says little (a 0 % snapshot during a data pause, a 100 % one during a burst); this is
    what a person needs instead. Where the window is only held as buckets, a bucket counts as busy when its
    mean is. None when the window holds no sample.
    """
    busy = 0
    total = 0
    for point in _recent_points(history, SM_FIELD, now - window_s, now):
        if point.samples == 0 or point.mean is None:
            continue
        total += point.samples
        if point.mean >= busy_pct:
            busy += point.samples
    return None if total == 0 else busy / total


def idle_since(history: SeriesView, now: float, idle_pct: float, lookback_s: float) -> float | None:
    """When the GPU's current stretch at or below ``idle_pct`` % SM began (None: it is busy now, or there is
    no sample). A stretch older than ``lookback_s`` is dated to the start of the lookback."""
    points = [
        point
        for point in _recent_points(history, SM_FIELD, now - lookback_s, now)
        if point.samples and point.high is not None
    ]
    if not points or points[-1].high is None or points[-1].high > idle_pct:
        return None
    start = points[0].t
    for earlier, later in pairwise(points):
        # A bucket's high is its busiest sample: any activity above the line ends the stretch there.
        if earlier.high is not None and earlier.high > idle_pct:
            start = later.t
    return max(start, now - lookback_s)


def busy_at_newest_reading(gpu: GpuSnapshot, now: float, idle_pct: float, lookback_s: float) -> bool:
    """Whether the GPU's newest reading, taken within the lookback, is above ``idle_pct`` % SM: then
    :func:`idle_since` is None whatever the window holds (its last point is that reading, or a bucket whose
    high is at least it), and it need not read the window.

    The dashboard asks this of every GPU every few seconds and almost all of them are busy: this reads one
    number instead of ~600 points, and leaves the series' queued rows queued. The series keeps single
    precision: a reading counts as above the line only when its rounding cannot put it at or below.
    """
    sm = gpu.latest.sm_pct
    if sm is None or not now - lookback_s <= gpu.last_t <= now:
        return False
    return sm - idle_pct > abs(sm) * _SINGLE_PRECISION_STEP


def memory_mean(history: SeriesView, now: float, window_s: float) -> float | None:
    """Mean GPU memory in use (MiB) over the last ``window_s`` seconds; None without samples."""
    if MEMORY_FIELD not in history.fields:
        return None
    return history.stats(MEMORY_FIELD, now - window_s, now).mean


# ------------------------------------------------------------------------------------------- progress


def progress_intervals(rank: RankSnapshot) -> list[float]:
    """Seconds between consecutive progress prints of a rank (a burst counts as one print)."""
    segment = current_segment(rank.observations)
    return [t1 - t0 for (t0, _), (t1, _) in pairwise(segment) if t1 > t0]


def stall_limit(rank: RankSnapshot, settings: HealthSettings) -> tuple[float, float | None]:
    """(seconds without progress that make a stall, the median print interval it came from or None)."""
    intervals = progress_intervals(rank)
    typical = median(intervals) if intervals else None
    limit = settings.stall_min_s
    if typical is not None:
        limit = max(limit, settings.stall_factor * typical)
    return limit, typical


def rank_rate(rank: RankSnapshot, min_intervals: int = 5, window: int = 50) -> float | None:
    """Progress units per second of a rank: the median over its last ``window`` print intervals, once it has
    ``min_intervals`` of them.

    Intervals shorter than :data:`BACKLOG_GAP_S` are left out. Lines timed by their arrival come in bursts
    when a backlog is read (``tail -n`` at the start, a reconnect): a few hundred old steps arriving in
    network chunks a millisecond apart would otherwise read as thousands of steps per second, and ranks
    whose backlog came in more chunks would look like stragglers until the backlog left the window.
    """
    segment = current_segment(rank.observations)
    durations = [
        (t1 - t0) / (p1 - p0)
        for (t0, p0), (t1, p1) in pairwise(segment[-(window + 1) :])
        if t1 - t0 >= BACKLOG_GAP_S
    ]
    if len(durations) < min_intervals:
        return None
    typical = median(durations)
    return None if typical <= 0 else 1.0 / typical


def finished(rank: RankSnapshot) -> bool:
    """Whether the rank reached the end of the run (its log said so by reaching the total)."""
    done = rank.fraction_done()
    return done is not None and done >= 1.0


# -------------------------------------------------------------------------------------------- metrics


def speaking_metric(run: RunSnapshot, name: str) -> MetricSnapshot | None:
    """The series of ``name`` that speaks for the run: unranked lines first, then the lowest rank."""
    owners = [rank for rank, metric_name in run.metrics if metric_name == name]
    if not owners:
        return None
    owner = min(owners, key=lambda rank: -1 if rank is None else rank)
    return run.metrics[(owner, name)]


@dataclass(frozen=True, slots=True)
class PlateauVerdict:
    """A metric that has not improved over the last part of its history, with the numbers that show it."""

    best_before: float
    best_before_t: float
    best_recent: float
    window_s: float
    noise: float
    points: int


def plateau_verdict(points: Sequence[Point], spec: PlateauSpec, min_points: int = 8) -> PlateauVerdict | None:
    """Whether the best value of the last window beats the best one before it by more than ``min_delta``
    and more than twice the metric's noise (the robust spread of its step-to-step changes). None: it does,
    or there is too little history to say."""
    values = [
        (point.t, point.low if spec.mode is PlateauMode.MIN else point.high)
        for point in points
        if point.samples
    ]
    known = [(t, v) for t, v in values if v is not None and math.isfinite(v)]
    if len(known) < min_points:
        return None
    first_t, last_t = known[0][0], known[-1][0]
    window = spec.window_s if spec.window_s is not None else (last_t - first_t) / 4.0
    cut = last_t - window
    before = [(t, v) for t, v in known if t < cut]
    recent = [v for t, v in known if t >= cut]
    if len(before) < 2 or len(recent) < 2:
        return None
    sign = 1.0 if spec.mode is PlateauMode.MAX else -1.0
    best_before_t, best_before = max(before, key=lambda item: (sign * item[1], -item[0]))
    best_recent = max(recent, key=lambda value: sign * value)
    noise = robust_sigma([b - a for (_, a), (_, b) in pairwise(known)]) / math.sqrt(2.0)
    improvement = sign * (best_recent - best_before)
    if improvement > max(spec.min_delta, 2.0 * noise):
        return None
    return PlateauVerdict(best_before, best_before_t, best_recent, window, noise, len(known))


def values_since(history: SeriesView, name: str, since: float | None, until: float) -> list[float]:
    """Finite values of ``name`` in the window (bucket means where the window is no longer raw)."""
    if name not in history.fields:
        return []
    found = history.points(name, since, until, max_points=1200).points
    return [p.mean for p in found if p.samples and p.mean is not None and math.isfinite(p.mean)]


# ---------------------------------------------------------------------------------- runs and processes


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What the rules know of a configured run: its hosts, how to tell its processes, its settings."""

    name: str
    hosts: tuple[str, ...]
    process: re.Pattern[str] | None
    settings: HealthSettings


@dataclass(frozen=True, slots=True)
class RunProcess:
    """A process of a run on a host, with its rank (None: not a rank) and the GPUs it holds memory on."""

    run: str
    host: str
    process: ProcInfo
    rank: int | None
    gpus: tuple[int, ...]


def run_of_process(
    host: str, process: ProcInfo, rank: int | None, specs: Iterable[RunSpec], remembered: Mapping[int, str]
) -> str | None:
    """The run a process belongs to: remembered from earlier (a zombie has lost its command line), else the
    only run on the host when the process has a rank, else the run whose ``process`` pattern matches."""
    return _run_of_process(process, rank, [spec for spec in specs if host in spec.hosts], remembered)


def _run_of_process(
    process: ProcInfo, rank: int | None, on_host: Sequence[RunSpec], remembered: Mapping[int, str]
) -> str | None:
    """:func:`run_of_process` with the runs on the process's host already picked out."""
    known = remembered.get(process.pid)
    if known is not None:
        return known
    if rank is not None and len(on_host) == 1:
        return on_host[0].name
    for spec in on_host:
        if spec.process is not None and spec.process.search(process.command):
            return spec.name
    return None


def run_processes(
    host: HostSnapshot, specs: Sequence[RunSpec], remembered: Mapping[int, str]
) -> list[RunProcess]:
    """Every listed process of the host that belongs to a configured run."""
    found: list[RunProcess] = []
    # Once per host, not per process: a run of 64 hosts lists 64 names to look through.
    on_host = [spec for spec in specs if host.name in spec.hosts]
    for process in host.processes:
        rank = host.rank_of_pid.get(process.pid)
        run = _run_of_process(process, rank, on_host, remembered)
        if run is not None:
            found.append(RunProcess(run, host.name, process, rank, host.gpu_of_pid.get(process.pid, ())))
    return found
