"""The live state of hosts, GPUs, processes and runs: changed by explicit methods, read as frozen snapshots.

Mutations (``set_host_status``, ``apply_gpu``, ``apply_processes``, ``apply_compute_apps``, ``apply_record``,
``apply_event``, ``append_log_lines``) come from one asyncio thread, so there are no locks; each is O(1)
amortised and bumps :attr:`Store.version`. Times are passed in ("now", monotonic seconds); nothing here reads
a clock.

:meth:`Store.snapshot` returns a :class:`StoreSnapshot` made of frozen dataclasses, tuples and read-only
mappings. It is cheap because it copies no history: it carries the latest values, progress, events and
statuses, plus :class:`~trainmon_tui.state.series.SeriesView` handles from which a reader pulls points or
window statistics of the series it actually shows, and :class:`~trainmon_tui.state.logbook.LogFileView`
handles on the newest raw lines of each log file. Each host, GPU, rank, metric and log file keeps the
snapshot piece built for it and rebuilds it only after it changed, so a snapshot costs in proportion to what
changed.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from trainmon_tui.analysis.eta import (
    DEFAULT_WINDOW,
    UNKNOWN_ETA,
    Eta,
    completed_batches,
    estimate_eta,
    infer_first_epoch,
)
from trainmon_tui.model import ComputeApp, GpuSample, LogEvent, LogRecord, ProcInfo
from trainmon_tui.state.logbook import DEFAULT_FILES_PER_RUN, DEFAULT_LINES_PER_FILE, LogBook, LogFileView
from trainmon_tui.state.series import DEFAULT_LAYOUT, SeriesLayout, SeriesView, TieredSeries, WindowStats

# GpuSample fields kept as history. Capacities (fb_total_mib, power_limit_w) do not move during a run: they
# are read from the latest sample instead of spending a ninth of the GPU history memory on a constant.
GPU_FIELDS: tuple[str, ...] = (
    "sm_pct",
    "mem_util_pct",
    "fb_used_mib",
    "power_w",
    "gpu_temp_c",
    "mem_temp_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
)

_NUMERIC_GPU_FIELDS = frozenset(
    name
    for name in GpuSample.__dataclass_fields__
    if name not in ("gpu", "uuid", "name", "printed_time", "extra")
)

DEFAULT_EVENTS_PER_RUN = 500

_EMPTY_PIDS: Mapping[int, tuple[int, ...]] = MappingProxyType({})
_EMPTY_RANKS: Mapping[int, int] = MappingProxyType({})
_NO_LOGS: Mapping[str, tuple[LogFileView, ...]] = MappingProxyType({})


class HostState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class HostStatus:
    """Where the connection to a host stands, since when, and why (for down/error)."""

    state: HostState
    since: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class GpuStatus:
    """Why a host's GPUs cannot be read (nvidia-smi or NVML failed) and since when; None while they can."""

    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class HostProblem:
    """Something on a host that does not work while the connection does ("ps failed: ...", a collector that
    crashed and is being restarted) and since when; gone from the snapshot once it works again."""

    message: str
    since: float


_NO_HOST_PROBLEMS: Mapping[str, HostProblem] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LogStatus:
    """Why some of a run's logs on one host cannot be read ("no such file: ...") and since when."""

    message: str
    since: float


_NO_LOG_STATUS: Mapping[str, LogStatus] = MappingProxyType({})


class ProgressUnit(StrEnum):
    """What a rank's progress observations count, best first: the store keeps the best one a log offers."""

    STEP = "step"
    BATCH = "batch"
    EPOCH = "epoch"


_UNIT_RANK = {ProgressUnit.STEP: 3, ProgressUnit.BATCH: 2, ProgressUnit.EPOCH: 1}


# Snapshot pieces built by the hundreds per snapshot (one per GPU, metric, rank) are NamedTuples: immutable
# like a frozen dataclass and 2.5x cheaper to create, which is what keeps snapshot() within its budget.


class GpuSnapshot(NamedTuple):
    host: str
    gpu: int
    latest: GpuSample
    last_t: float
    history: SeriesView

    def age_s(self, now: float) -> float:
        """Seconds since the latest sample: how stale the numbers shown are."""
        return now - self.last_t


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    name: str
    status: HostStatus
    gpus: tuple[GpuSnapshot, ...]
    processes: tuple[ProcInfo, ...]
    processes_t: float | None
    # pid -> GPU indices it holds memory on (from --query-compute-apps).
    gpu_of_pid: Mapping[int, tuple[int, ...]]
    # pid -> rank, as the caller worked it out (environment, command line).
    rank_of_pid: Mapping[int, int]
    last_data_t: float | None
    # Set while the host's GPUs cannot be read at all (no driver, nvidia-smi missing, no devices ...).
    gpu_status: GpuStatus | None = None
    # What else does not work on the host, by what reports it ("ps", "processes collector" ...).
    problems: Mapping[str, HostProblem] = field(default_factory=lambda: _NO_HOST_PROBLEMS)

    def gpu(self, index: int) -> GpuSnapshot | None:
        for gpu in self.gpus:
            if gpu.gpu == index:
                return gpu
        return None


class RankProgress(NamedTuple):
    """The newest value of each progress counter a rank's log printed (None: never printed)."""

    step: int | None
    total_steps: int | None
    epoch: float | None
    total_epochs: int | None
    batch: int | None
    batches_per_epoch: int | None
    # Arrival time (monotonic) of the rank's newest line, and the log's own timestamp on it if it had one.
    last_line_t: float
    log_time: float | None


class RankSnapshot(NamedTuple):
    """A rank's progress, and the observations its ETA is computed from on demand (:meth:`eta`)."""

    rank: int | None
    host: str
    progress: RankProgress
    unit: ProgressUnit | None
    observations: tuple[tuple[float, float], ...]
    total: float | None

    def eta(self) -> Eta:
        if not self.observations:
            return UNKNOWN_ETA
        return estimate_eta(self.observations, self.total, window=DEFAULT_WINDOW)

    def fraction_done(self) -> float | None:
        if not self.observations or self.total is None or self.total <= 0:
            return None
        return min(max(self.observations[-1][1] / self.total, 0.0), 1.0)


class MetricSnapshot(NamedTuple):
    rank: int | None
    name: str
    # Newest value (NaN included) and its arrival time.
    last: float
    last_t: float
    samples: int
    history: SeriesView

    def stats(self, since: float | None = None, until: float | None = None) -> WindowStats:
        return self.history.stats(self.name, since, until)


@dataclass(frozen=True, slots=True)
class EventEntry:
    t: float
    host: str
    event: LogEvent
    # The log file the event's line is in (``event.line`` counts in it); None when the sender did not say.
    path: str | None = None


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    name: str
    ranks: tuple[RankSnapshot, ...]
    metrics: Mapping[tuple[int | None, str], MetricSnapshot]
    events: tuple[EventEntry, ...]
    last_line_t: float | None
    # ETA of the rank furthest behind: the run ends when it does.
    eta: Eta
    # host -> why some of the run's logs there cannot be read; hosts whose logs are fine are absent.
    log_status: Mapping[str, LogStatus] = field(default_factory=lambda: _NO_LOG_STATUS)

    def metric(self, name: str, rank: int | None = None) -> MetricSnapshot | None:
        return self.metrics.get((rank, name))

    def rank(self, rank: int | None) -> RankSnapshot | None:
        for entry in self.ranks:
            if entry.rank == rank:
                return entry
        return None


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    version: int
    now: float
    hosts: Mapping[str, HostSnapshot]
    runs: Mapping[str, RunSnapshot]
    # run -> a frozen view of the newest lines of each of its log files (see trainmon_tui.state.logbook).
    log_files: Mapping[str, tuple[LogFileView, ...]] = field(default_factory=lambda: _NO_LOGS)

    def logs(self, run: str) -> tuple[LogFileView, ...]:
        """The run's log files as they were when the snapshot was taken (empty when none was read)."""
        return self.log_files.get(run, ())


# ------------------------------------------------------------------------------------------- internals


class _Gpu:
    __slots__ = ("cached", "cached_stamp", "index", "latest", "latest_t", "series", "stamp", "view")

    def __init__(self, index: int, series: TieredSeries, sample: GpuSample, now: float):
        self.index = index
        self.series = series
        self.view = series.view()
        self.latest = sample
        self.latest_t = now
        self.stamp = 0
        self.cached: GpuSnapshot | None = None
        self.cached_stamp = -1


class _Host:
    __slots__ = (
        "cached",
        "cached_stamp",
        "gpu_of_pid",
        "gpu_order",
        "gpu_status",
        "gpus",
        "last_data_t",
        "name",
        "problems",
        "processes",
        "processes_t",
        "rank_of_pid",
        "stamp",
        "status",
    )

    def __init__(self, name: str, status: HostStatus):
        self.name = name
        self.status = status
        self.gpus: dict[int, _Gpu] = {}
        self.gpu_order: list[int] = []
        self.processes: tuple[ProcInfo, ...] = ()
        self.processes_t: float | None = None
        self.gpu_of_pid: Mapping[int, tuple[int, ...]] = _EMPTY_PIDS
        self.rank_of_pid: Mapping[int, int] = _EMPTY_RANKS
        self.last_data_t: float | None = None
        self.gpu_status: GpuStatus | None = None
        self.problems: Mapping[str, HostProblem] = _NO_HOST_PROBLEMS
        self.stamp = 0
        self.cached: HostSnapshot | None = None
        self.cached_stamp = -1

    def snapshot(self) -> HostSnapshot:
        if self.cached is None or self.cached_stamp != self.stamp:
            name = self.name
            gpus = self.gpus
            pieces: list[GpuSnapshot] = []
            for index in self.gpu_order:
                # Inlined _Gpu.snapshot: this loop runs for every GPU that changed since the last snapshot.
                gpu = gpus[index]
                piece = gpu.cached
                if piece is None or gpu.cached_stamp != gpu.stamp:
                    piece = gpu.cached = GpuSnapshot(name, index, gpu.latest, gpu.latest_t, gpu.view)
                    gpu.cached_stamp = gpu.stamp
                pieces.append(piece)
            self.cached = HostSnapshot(
                name,
                self.status,
                tuple(pieces),
                self.processes,
                self.processes_t,
                self.gpu_of_pid,
                self.rank_of_pid,
                self.last_data_t,
                self.gpu_status,
                self.problems,
            )
            self.cached_stamp = self.stamp
        return self.cached


#: Progress lines that arrive (no log timestamps) within this long of each other count as one observation;
#: metric values that arrive within it are placed together (see _place_burst).
ARRIVAL_MERGE_S = 1.0
#: How far back a burst's log timestamps may place a metric value (a garbled date must not go to 1970).
MAX_BACKFILL_S = 24 * 3600.0


class _Rank:
    __slots__ = (
        "batch",
        "batches_per_epoch",
        "cached",
        "cached_stamp",
        "epoch",
        "first_epoch",
        "from_log_clock",
        "host",
        "last_line_t",
        "log_time",
        "lowest_epoch",
        "merging_since",
        "observations",
        "rank",
        "stamp",
        "step",
        "total_epochs",
        "total_steps",
        "unit",
    )

    def __init__(self, rank: int | None, host: str, history: int):
        self.rank = rank
        self.host = host
        self.step: int | None = None
        self.total_steps: int | None = None
        self.epoch: float | None = None
        self.total_epochs: int | None = None
        self.batch: int | None = None
        self.batches_per_epoch: int | None = None
        self.last_line_t = 0.0
        self.log_time: float | None = None
        self.lowest_epoch: float | None = None
        self.first_epoch = 1
        self.unit: ProgressUnit | None = None
        self.from_log_clock = False
        self.observations: deque[tuple[float, float]] = deque(maxlen=history)
        # Arrival time of the first line merged into the newest observation (arrival-time clock only).
        self.merging_since: float | None = None
        self.stamp = 0
        self.cached: RankSnapshot | None = None
        self.cached_stamp = -1

    def total(self) -> float | None:
        if self.unit is ProgressUnit.STEP:
            return None if self.total_steps is None else float(self.total_steps)
        if self.unit is ProgressUnit.BATCH:
            if self.total_epochs is None or self.batches_per_epoch is None:
                return None
            return float(self.total_epochs * self.batches_per_epoch)
        if self.unit is ProgressUnit.EPOCH:
            return None if self.total_epochs is None else float(self.total_epochs)
        return None

    def update(self, record: LogRecord, now: float) -> None:
        # A counter missing from a line keeps its last printed value (the total is often printed once).
        if record.step is not None:
            self.step = record.step
        if record.total_steps is not None:
            self.total_steps = record.total_steps
        if record.epoch is not None:
            self.epoch = record.epoch
        if record.total_epochs is not None:
            self.total_epochs = record.total_epochs
        if record.batch is not None:
            self.batch = record.batch
        if record.batches_per_epoch is not None:
            self.batches_per_epoch = record.batches_per_epoch
        self.last_line_t = now
        if record.timestamp is not None:
            self.log_time = record.timestamp
        epoch = record.epoch
        if epoch is not None and (self.lowest_epoch is None or epoch < self.lowest_epoch or epoch % 1):
            # A fractional epoch (HF ``'epoch': 1.53``) is the share of training done: counted from 0,
            # whatever it was when the log was first read. Whole epochs say their numbering by the lowest
            # one printed.
            self.lowest_epoch = epoch if self.lowest_epoch is None else min(epoch, self.lowest_epoch)
            first_epoch = 0 if epoch % 1 or self.first_epoch == 0 else infer_first_epoch(self.lowest_epoch)
            if first_epoch != self.first_epoch:
                self.first_epoch = first_epoch
                # Earlier batch/epoch observations were counted from the other origin.
                if self.unit is not ProgressUnit.STEP:
                    self.observations.clear()
        self._observe(record, now)

    def _observe(self, record: LogRecord, now: float) -> None:
        unit: ProgressUnit
        if record.step is not None:
            unit, value = ProgressUnit.STEP, float(record.step)
        elif record.batch is not None and self.epoch is not None and self.batches_per_epoch:
            unit = ProgressUnit.BATCH
            value = float(
                completed_batches(
                    int(self.epoch), record.batch, self.batches_per_epoch, first_epoch=self.first_epoch
                )
            )
        elif record.epoch is not None and record.batch is None:
            unit, value = ProgressUnit.EPOCH, record.epoch - self.first_epoch
        else:
            return
        from_log_clock = record.timestamp is not None
        t = record.timestamp if record.timestamp is not None else now
        if self.unit is None or _UNIT_RANK[unit] > _UNIT_RANK[self.unit]:
            self.unit = unit
            self.from_log_clock = from_log_clock
            self.observations.clear()
        elif unit is not self.unit:
            return
        elif from_log_clock != self.from_log_clock:
            # Never mix log timestamps and arrival times in one sequence; log timestamps are the better clock.
            if not from_log_clock:
                return
            self.from_log_clock = True
            self.observations.clear()
        if not from_log_clock:
            # Arrival times say when lines reached us, not when they were printed: a backlog (the tail
            # replayed on connect, a host that sent nothing for a while) arrives within milliseconds and
            # would read as thousands of steps a second. Lines that arrive together are one observation.
            since = self.merging_since
            if since is not None and self.observations and t - since < ARRIVAL_MERGE_S:
                self.observations[-1] = (t, value)
                return
            self.merging_since = t
        self.observations.append((t, value))

    def snapshot(self) -> RankSnapshot:
        if self.cached is None or self.cached_stamp != self.stamp:
            progress = RankProgress(
                self.step,
                self.total_steps,
                self.epoch,
                self.total_epochs,
                self.batch,
                self.batches_per_epoch,
                self.last_line_t,
                self.log_time,
            )
            self.cached = RankSnapshot(
                self.rank, self.host, progress, self.unit, tuple(self.observations), self.total()
            )
            self.cached_stamp = self.stamp
        return self.cached


class _Metric:
    __slots__ = ("cached", "cached_stamp", "last", "last_t", "name", "rank", "series", "stamp", "view")

    def __init__(self, rank: int | None, name: str, series: TieredSeries):
        self.rank = rank
        self.name = name
        self.series = series
        self.view = series.view()
        self.last = math.nan
        self.last_t = 0.0
        self.stamp = 0
        self.cached: MetricSnapshot | None = None
        self.cached_stamp = -1

    def snapshot(self) -> MetricSnapshot:
        if self.cached is None or self.cached_stamp != self.stamp:
            self.cached = MetricSnapshot(
                self.rank, self.name, self.last, self.last_t, self.series.samples_total, self.view
            )
            self.cached_stamp = self.stamp
        return self.cached


def _rank_order(rank: int | None) -> int:
    return -1 if rank is None else rank


# One record's metric values waiting for their series: (the metrics, their values, rank, log time, arrival).
_BurstRecord = tuple[tuple["_Metric", ...], tuple[float, ...], int | None, float | None, float]
# A run's cache of metric groups (a rank and the metric names of one line shape) is emptied beyond this size.
_MAX_METRIC_GROUPS = 512


class _Run:
    __slots__ = (
        "burst",
        "burst_since",
        "cached",
        "cached_stamp",
        "events",
        "events_cache",
        "events_stamp",
        "last_line_t",
        "log_status",
        "metric_groups",
        "metrics",
        "name",
        "rank_order",
        "ranks",
        "stamp",
    )

    def __init__(self, name: str, events_capacity: int):
        self.name = name
        self.ranks: dict[int | None, _Rank] = {}
        self.rank_order: list[int | None] = []
        self.metrics: dict[tuple[int | None, str], _Metric] = {}
        # (rank, metric names in a record's order) -> those metrics: a log prints the same few line shapes.
        self.metric_groups: dict[tuple[int | None, tuple[str, ...]], tuple[_Metric, ...]] = {}
        self.events: deque[EventEntry] = deque(maxlen=events_capacity)
        self.events_stamp = 0
        self.events_cache: tuple[tuple[EventEntry, ...], int] = ((), 0)
        self.last_line_t: float | None = None
        self.log_status: Mapping[str, LogStatus] = _NO_LOG_STATUS
        # Metric values that arrived together, not yet in their series, a record at a time.
        self.burst: list[_BurstRecord] = []
        self.burst_since: float | None = None
        self.stamp = 0
        self.cached: RunSnapshot | None = None
        self.cached_stamp = -1

    def snapshot(self) -> RunSnapshot:
        if self.cached is not None and self.cached_stamp == self.stamp:
            return self.cached
        ranks = tuple([self.ranks[r].snapshot() for r in self.rank_order])
        metrics = MappingProxyType({key: metric.snapshot() for key, metric in self.metrics.items()})
        events, events_stamp = self.events_cache
        if events_stamp != self.events_stamp:
            events = tuple(self.events)
            self.events_cache = (events, self.events_stamp)
        previous = self.cached
        if (
            previous is not None
            and len(previous.ranks) == len(ranks)
            and all(old is new for old, new in zip(previous.ranks, ranks, strict=True))
        ):
            eta = previous.eta
        else:
            eta = _run_eta(ranks)
        self.cached = RunSnapshot(self.name, ranks, metrics, events, self.last_line_t, eta, self.log_status)
        self.cached_stamp = self.stamp
        return self.cached


def _run_eta(ranks: Sequence[RankSnapshot]) -> Eta:
    """The ETA of the rank furthest behind (lowest fraction done; ties go to the lowest rank)."""
    behind: RankSnapshot | None = None
    behind_fraction = 2.0
    for rank in ranks:
        fraction = rank.fraction_done()
        if fraction is not None and fraction < behind_fraction:
            behind, behind_fraction = rank, fraction
    if behind is None:
        behind = next((rank for rank in ranks if rank.observations), None)
    return UNKNOWN_ETA if behind is None else behind.eta()


def _place_burst(entry: _Run) -> None:
    """Write a run's burst of metric values into their series, each at its own time.

    Values are kept on the arrival clock. Lines that arrive together - the tail replayed on connect, a host
    that caught up - would all land on one instant and draw a vertical smear; when the lines carry log
    timestamps, the span they were printed over is known, so each value goes where it belongs relative to
    the newest line of its rank, which stays at its arrival time. A series never goes back in time: a value
    that would land before its series' newest sample is written at that sample's time (TieredSeries does it).
    """
    burst, entry.burst, entry.burst_since = entry.burst, [], None
    # Per rank: the newest log time and when it arrived, the anchor of that rank's lines.
    anchors: dict[int | None, tuple[float, float]] = {}
    for _, _, rank, timestamp, arrived in burst:
        if timestamp is not None:
            anchor = anchors.get(rank)
            if anchor is None or timestamp >= anchor[0]:
                anchors[rank] = (timestamp, arrived)
    for metrics, values, rank, timestamp, arrived in burst:
        t = arrived
        if timestamp is not None:
            anchor = anchors[rank]
            t = min(arrived, anchor[1] - min(anchor[0] - timestamp, MAX_BACKFILL_S))
        # No clamp to the series' newest time here: the series does that as it writes, and asking for its
        # newest time would write its queued rows one by one.
        for metric, value in zip(metrics, values, strict=True):
            metric.series.append(t, (value,))


class Store:
    """Everything trainmon knows about hosts, GPUs, processes and runs, with bounded memory."""

    def __init__(
        self,
        *,
        gpu_fields: Sequence[str] = GPU_FIELDS,
        gpu_layout: SeriesLayout = DEFAULT_LAYOUT,
        metric_layout: SeriesLayout = DEFAULT_LAYOUT,
        events_per_run: int = DEFAULT_EVENTS_PER_RUN,
        progress_history: int = DEFAULT_WINDOW + 1,
        log_lines_per_file: int = DEFAULT_LINES_PER_FILE,
        log_files_per_run: int = DEFAULT_FILES_PER_RUN,
    ):
        if events_per_run < 1 or progress_history < 2:
            raise ValueError("events_per_run must be >= 1 and progress_history >= 2")
        unknown = [name for name in gpu_fields if name not in _NUMERIC_GPU_FIELDS]
        if unknown or not gpu_fields:
            raise ValueError(f"gpu_fields must name numeric GpuSample fields; unknown: {unknown}")
        self._gpu_fields = tuple(gpu_fields)
        self._gpu_values: Callable[[GpuSample], tuple[float | None, ...]] = _attribute_tuple(self._gpu_fields)
        self._gpu_layout = gpu_layout
        self._metric_layout = metric_layout
        self._events_per_run = events_per_run
        self._progress_history = progress_history
        self._hosts: dict[str, _Host] = {}
        self._runs: dict[str, _Run] = {}
        # Runs holding metric values that arrived together, written at the next snapshot or later arrival.
        self._bursting: list[_Run] = []
        self._log_book = LogBook(lines_per_file=log_lines_per_file, files_per_run=log_files_per_run)
        self._version = 0
        self._last_snapshot: StoreSnapshot | None = None

    @property
    def version(self) -> int:
        """Incremented by every change; a reader repaints only when it moved."""
        return self._version

    @property
    def gpu_fields(self) -> tuple[str, ...]:
        return self._gpu_fields

    def _bump(self) -> int:
        self._version += 1
        return self._version

    def _host(self, name: str, now: float) -> _Host:
        host = self._hosts.get(name)
        if host is None:
            # Data arriving from a host that nobody announced means it is up.
            host = _Host(name, HostStatus(HostState.UP, now))
            self._hosts[name] = host
        return host

    def _run(self, name: str) -> _Run:
        run = self._runs.get(name)
        if run is None:
            run = _Run(name, self._events_per_run)
            self._runs[name] = run
        return run

    # ------------------------------------------------------------------------------------------- mutations

    def set_host_status(self, host: str, state: HostState, now: float, reason: str | None = None) -> None:
        """Record a connection state; ``since`` moves only when the state itself changes."""
        entry = self._hosts.get(host)
        if entry is None:
            entry = _Host(host, HostStatus(state, now, reason))
            self._hosts[host] = entry
        else:
            current = entry.status
            if current.state is state and current.reason == reason:
                return
            since = current.since if current.state is state else now
            entry.status = HostStatus(state, since, reason)
        entry.stamp = self._bump()

    def set_gpu_status(self, host: str, reason: str | None, now: float) -> None:
        """Record why the host's GPUs cannot be read (None: they can again); the same reason is not news."""
        entry = self._host(host, now)
        current = entry.gpu_status
        if (current.reason if current is not None else None) == reason:
            return
        entry.gpu_status = None if reason is None else GpuStatus(reason, now)
        entry.stamp = self._bump()

    def set_host_problem(self, host: str, source: str, message: str | None, now: float) -> None:
        """Record what ``source`` on ``host`` cannot do (None: it works again); the same message again is not
        news, a new message keeps the problem's ``since``."""
        entry = self._host(host, now)
        current = entry.problems.get(source)
        if (current.message if current is not None else None) == message:
            return
        problems = dict(entry.problems)
        if message is None:
            del problems[source]
        else:
            problems[source] = HostProblem(message, current.since if current is not None else now)
        entry.problems = MappingProxyType(problems) if problems else _NO_HOST_PROBLEMS
        entry.stamp = self._bump()

    def apply_gpu(self, host: str, sample: GpuSample, now: float) -> None:
        """One reading of one GPU (dmon row, query-gpu row, NVML)."""
        # The hottest path (every GPU, every second): lookups and the version bump are inlined.
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._host(host, now)
        gpu = entry.gpus.get(sample.gpu)
        if gpu is None:
            series = TieredSeries(self._gpu_fields, typecode="f", layout=self._gpu_layout)
            gpu = _Gpu(sample.gpu, series, sample, now)
            entry.gpus[sample.gpu] = gpu
            entry.gpu_order = sorted(entry.gpus)
        else:
            gpu.latest = sample
            gpu.latest_t = now
        gpu.series.append(now, self._gpu_values(sample))
        entry.last_data_t = now
        self._version += 1
        gpu.stamp = entry.stamp = self._version

    def apply_processes(
        self,
        host: str,
        processes: Sequence[ProcInfo],
        now: float,
        *,
        rank_of_pid: Mapping[int, int] | None = None,
    ) -> None:
        """The host's current process list (replaces the previous one) and, if known, each pid's rank."""
        entry = self._host(host, now)
        entry.processes = tuple(processes)
        entry.processes_t = now
        if rank_of_pid is not None:
            entry.rank_of_pid = MappingProxyType(dict(rank_of_pid))
        entry.last_data_t = now
        entry.stamp = self._bump()

    def apply_compute_apps(self, host: str, apps: Sequence[ComputeApp], now: float) -> None:
        """Which process holds memory on which GPU (``--query-compute-apps``), replacing the previous map."""
        entry = self._host(host, now)
        index_of_uuid = {gpu.latest.uuid: index for index, gpu in entry.gpus.items() if gpu.latest.uuid}
        gpus_of_pid: dict[int, list[int]] = {}
        for app in apps:
            index = app.gpu_index if app.gpu_index is not None else index_of_uuid.get(app.gpu_uuid or "")
            if index is None:
                continue
            held = gpus_of_pid.setdefault(app.pid, [])
            if index not in held:
                held.append(index)
        entry.gpu_of_pid = MappingProxyType({pid: tuple(sorted(held)) for pid, held in gpus_of_pid.items()})
        entry.last_data_t = now
        entry.stamp = self._bump()

    def apply_record(self, run: str, host: str, record: LogRecord, now: float) -> None:
        """One log line's progress and metrics. Metric history is kept on arrival time, the clock of the GPU
        charts (values that arrive in one burst are spread over the span their log timestamps cover, and
        reach their series at the next snapshot); progress observations use the log's own timestamps when
        it prints them."""
        entry = self._run(run)
        stamp = self._bump()
        rank = entry.ranks.get(record.rank)
        if rank is None:
            rank = _Rank(record.rank, host, self._progress_history)
            entry.ranks[record.rank] = rank
            entry.rank_order = sorted(entry.ranks, key=_rank_order)
        rank.host = host
        rank.update(record, now)
        rank.stamp = stamp
        if record.metrics:
            since = entry.burst_since
            if since is None:
                entry.burst_since = now
                self._bursting.append(entry)
            elif now - since >= ARRIVAL_MERGE_S:
                _place_burst(entry)
                entry.burst_since = now
                self._bursting.append(entry)
            group_key = (record.rank, tuple(record.metrics))
            metrics = entry.metric_groups.get(group_key)
            if metrics is None:
                metrics = self._metric_group(entry, record.rank, group_key[1])
            values = tuple(record.metrics.values())
            entry.burst.append((metrics, values, record.rank, record.timestamp, now))
            for metric, value in zip(metrics, values, strict=True):
                metric.last = value
                metric.last_t = now
                metric.stamp = stamp
        entry.last_line_t = now
        entry.stamp = stamp

    def _metric_group(self, entry: _Run, rank: int | None, names: tuple[str, ...]) -> tuple[_Metric, ...]:
        """The metrics ``names`` of ``rank`` (created where new), remembered for the next record alike."""
        group: list[_Metric] = []
        for name in names:
            metric = entry.metrics.get((rank, name))
            if metric is None:
                series = TieredSeries((name,), typecode="d", layout=self._metric_layout)
                metric = _Metric(rank, name, series)
                entry.metrics[(rank, name)] = metric
            group.append(metric)
        if len(entry.metric_groups) >= _MAX_METRIC_GROUPS:
            entry.metric_groups.clear()
        entry.metric_groups[(rank, names)] = metrics = tuple(group)
        return metrics

    def apply_event(
        self, run: str, host: str, event: LogEvent, now: float, *, path: str | None = None
    ) -> None:
        """A notable log line (OOM, NCCL timeout, NaN, traceback ...) of the log file ``path``; the oldest
        fall off a bounded list."""
        entry = self._run(run)
        entry.events.append(EventEntry(now, host, event, path))
        entry.events_stamp = entry.stamp = self._bump()

    def append_log_lines(
        self,
        run: str,
        host: str,
        path: str,
        lines: Sequence[str],
        now: float,
        *,
        first_line: int,
        ranks: frozenset[int] = frozenset(),
    ) -> None:
        """Raw lines of a followed log file, numbered from ``first_line`` (1-based, as the file's parser
        counts them); ``ranks``: the ranks its lines have named so far. Kept bounded in the log book."""
        if lines:
            self._log_book.append(run, host, path, lines, now, first_line=first_line, ranks=ranks)
            self._version += 1

    def set_run_status(self, run: str, host: str, message: str | None, now: float) -> None:
        """Record why some of the run's logs on ``host`` cannot be read (None: all can); the same message
        again is not news, so ``since`` stays and the version does not move."""
        entry = self._run(run)
        current = entry.log_status.get(host)
        if (current.message if current is not None else None) == message:
            return
        statuses = {name: status for name, status in entry.log_status.items() if name != host}
        if message is not None:
            statuses[host] = LogStatus(message, now)
        entry.log_status = MappingProxyType(statuses)
        entry.stamp = self._bump()

    # --------------------------------------------------------------------------------------------- reading

    def snapshot(self, now: float) -> StoreSnapshot:
        """A frozen view of everything, as of ``now``; shares unchanged pieces with the previous one."""
        previous = self._last_snapshot
        if previous is not None and previous.version == self._version:
            if previous.now != now:
                previous = StoreSnapshot(
                    self._version, now, previous.hosts, previous.runs, previous.log_files
                )
                self._last_snapshot = previous
            return previous
        self._place_bursts()
        hosts = MappingProxyType({name: host.snapshot() for name, host in self._hosts.items()})
        runs = MappingProxyType({name: run.snapshot() for name, run in self._runs.items()})
        snapshot = StoreSnapshot(self._version, now, hosts, runs, self._log_book.views())
        self._last_snapshot = snapshot
        return snapshot

    def _place_bursts(self) -> None:
        """Write the metric values still held as a burst into their series (every reader comes here)."""
        bursting, self._bursting = self._bursting, []
        for entry in bursting:
            if entry.burst_since is not None:
                _place_burst(entry)

    def history_nbytes(self) -> int:
        """Bytes held in the history buffers of every series (for benchmarks and sizing)."""
        self._place_bursts()
        total = 0
        for host in self._hosts.values():
            total += sum(gpu.series.nbytes() for gpu in host.gpus.values())
        for run in self._runs.values():
            total += sum(metric.series.nbytes() for metric in run.metrics.values())
        return total


def _attribute_tuple(names: tuple[str, ...]) -> Callable[[GpuSample], tuple[float | None, ...]]:
    """A C-speed getter of several GpuSample fields as one tuple (attrgetter returns a bare value for one)."""
    if len(names) == 1:
        single = operator.attrgetter(names[0])

        def one(sample: GpuSample) -> tuple[float | None, ...]:
            return (single(sample),)

        return one
    getter: Callable[[GpuSample], tuple[float | None, ...]] = operator.attrgetter(*names)
    return getter
