"""Health verdicts: turns a stream of state snapshots into alerts, each raised once, kept, then resolved.

:class:`HealthMonitor` is fed :class:`~trainmon_tui.state.store.StoreSnapshot` objects (the dashboard does it
on its repaint timer, ``report`` about once a second) and answers, each time, the active alerts and the ones
resolved recently. An alert is raised when its condition starts; its ``key`` (rule and subject) and
``since`` stay the same for as long as it lasts while its message follows the numbers; it is marked resolved
(``resolved_at``) when the condition clears, and forgotten ``resolved_keep_s`` later. All time is the store
clock (``snapshot.now``): tests drive it with a fake clock.

The rules (thresholds in :mod:`~trainmon_tui.analysis.health_settings`, overridable per run in hosts.yaml;
severities in :data:`~trainmon_tui.analysis.alerts.DEFAULT_SEVERITY`):

* ``stall``: no rank progress for longer than max(5 min, 10 x the rank's median print interval); names the
  rank(s) that stopped first. ``since`` is when progress stopped.
* ``gpu_idle``: a GPU holding a run's process at <= 5 % SM for > 2 min (``since``: when it went idle).
  Shorter dips are not alerts; :func:`~trainmon_tui.analysis.health_rules.duty_cycle` tells the story instead.
* ``process_died``: a rank process seen earlier is gone or defunct while other ranks of its run live on
  (confirmed after :data:`DEATH_CONFIRM_S`, so ranks exiting one after the other at the end are no alert).
* ``straggler``: a rank progressing >= 20 % slower than the run's median rank, for at least
  :data:`STRAGGLER_CONFIRM_S` (``since``: when it was first seen so).
* ``nan``, ``oom``, ``nccl_timeout``, ``nccl_error``, ``traceback``, ``child_failed``, ``killed``, ``xid``:
  log events, on the host and rank that printed them, until that rank makes progress again.
* ``loss_spike``: a loss value well above its smoothed trend (until it is back under the line).
* ``plateau``: the run's chosen metric has not improved over the last part of its history.
* ``throughput_low``: the run's median rate below its ``target_throughput``.
* ``memory_imbalance``: GPU memory of a run's ranks more than 20 % apart (each GPU's mean over the last
  minute, taken again every 10 s).
* ``host_down`` / ``host_stale``: a host that is down, or up but silent (or whose GPUs cannot be read).
* ``pattern``: user rules over log lines (:mod:`~trainmon_tui.analysis.health_patterns`). The monitor reads
  the lines itself from each snapshot's log book (``snapshot.logs(run)``), remembering per file where it
  stopped, so the dashboard and ``report`` need do nothing; :meth:`HealthMonitor.observe_line` is for a
  caller that has lines but no log book. Lines a file already held when the monitor first saw it (the
  ``tail -n`` backlog) count for rules without a limit, but not towards a per-epoch count: which epoch
  they were printed in is not known.

Every text in an alert goes through :func:`~trainmon_tui.sanitize.clean_remote_text`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from trainmon_tui.analysis.alerts import DEFAULT_SEVERITY, SEVERITY_ORDER, Alert, AlertKind, Severity
from trainmon_tui.analysis.durations import format_duration
from trainmon_tui.analysis.health_patterns import PatternWatch
from trainmon_tui.analysis.health_rules import (
    RunProcess,
    RunSpec,
    busy_at_newest_reading,
    duty_cycle,
    finished,
    format_value,
    idle_since,
    median,
    memory_mean,
    plateau_verdict,
    rank_rate,
    robust_sigma,
    run_processes,
    speaking_metric,
    stall_limit,
    values_since,
)
from trainmon_tui.analysis.health_settings import DEFAULT_SETTINGS, HealthSettings, PlateauMode
from trainmon_tui.model import EventKind, ProcInfo
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import (
    EventEntry,
    HostSnapshot,
    HostState,
    MetricSnapshot,
    RankSnapshot,
    RunSnapshot,
    StoreSnapshot,
)

if TYPE_CHECKING:
    from trainmon_tui.config import Config

#: How long a resolved alert is still listed (marked resolved) before it is dropped.
DEFAULT_RESOLVED_KEEP_S = 600.0
#: A rank death counts only if other ranks of the run still live this long after it.
DEATH_CONFIRM_S = 30.0
#: A rank is called a straggler only once it has been that much slower for this long: rates measured over
#: a replayed backlog or a rank's first minute swing widely and settle within seconds.
STRAGGLER_CONFIRM_S = 30.0
# Memory imbalance compares each GPU's mean over the last minute: allocator churn is not imbalance.
_MEMORY_WINDOW_S = 60.0
# ... and takes a GPU's mean again only this often: a one-minute mean moves little in 10 s, and taking it
# makes the series write its queued rows, for every GPU of every run (a sixth of a big fleet's health time).
_MEMORY_MEAN_EVERY_S = 10.0
# Loss spikes: the trend is an EMA of this weight, judged once this many values have been seen, with a
# spread taken from this many recent residuals.
_SPIKE_EMA_WEIGHT = 0.9
_SPIKE_MIN_VALUES = 20
_SPIKE_RESIDUALS = 100
_LOSS = "loss"
# The epoch given to backlog lines (held before the monitor first saw their file): no rank is ever in it, so
# they never add to the count of a rule with a per-epoch limit.
_BACKLOG_EPOCH = -1
# Read marks kept before the ones of files no longer in the log book are dropped.
_MAX_READ_MARKS = 4096

_EVENT_KINDS: dict[EventKind, AlertKind] = {
    EventKind.NAN: AlertKind.NAN,
    EventKind.OOM: AlertKind.OOM,
    EventKind.NCCL_TIMEOUT: AlertKind.NCCL_TIMEOUT,
    EventKind.NCCL_ERROR: AlertKind.NCCL_ERROR,
    EventKind.TRACEBACK: AlertKind.TRACEBACK,
    EventKind.CHILD_FAILED: AlertKind.CHILD_FAILED,
    EventKind.KILLED: AlertKind.KILLED,
    EventKind.XID: AlertKind.XID,
}


@dataclass(frozen=True, slots=True)
class _Finding:
    """A condition that holds now; becomes (or keeps) an Alert with the same key."""

    key: str
    kind: AlertKind
    message: str
    since: float
    run: str | None = None
    host: str | None = None
    gpu: int | None = None
    rank: int | None = None
    evidence: tuple[str, ...] = ()
    log_path: str | None = None
    log_line: int | None = None
    severity: Severity | None = None
    # Already over when found (an event its rank got past before anyone looked): listed as resolved.
    over: bool = False


@dataclass(slots=True)
class _Progress:
    position: tuple[object, ...]
    last_advance_t: float


@dataclass(slots=True)
class _Tracked:
    run: str
    rank: int
    gpus: tuple[int, ...]


@dataclass(slots=True)
class _Death:
    run: str
    host: str
    pid: int
    rank: int
    gpus: tuple[int, ...]
    since: float
    how: str
    confirmed: bool = False


@dataclass(slots=True)
class _EventState:
    kind: AlertKind
    run: str
    host: str
    rank: int | None
    first_t: float
    last_t: float
    count: int
    text: str
    line: int
    path: str | None
    # Raised at least once: an event the rank had already got past when first seen is still raised once,
    # so it is listed as resolved rather than never mentioned.
    raised: bool = False


@dataclass(slots=True)
class _SpikeTracker:
    """Streaming loss trend (EMA) and spread (MAD of residuals); frozen while a spike lasts."""

    processed: int = 0
    last_t: float | None = None
    trend: float | None = None
    seen: int = 0
    residuals: deque[float] = field(default_factory=lambda: deque(maxlen=_SPIKE_RESIDUALS))
    # While spiking: (time, first value, trend then, threshold then, highest value so far).
    spike: tuple[float, float, float, float, float] | None = None


def _rank_label(rank: int | None) -> str:
    return "unranked lines" if rank is None else f"rank {rank}"


def _where(host: str | None, rank: int | None) -> str:
    parts = [] if host is None else [host]
    if rank is not None:
        parts.append(f"rank {rank}")
    return ", ".join(parts)


class HealthMonitor:
    """Turns snapshots into alerts (see the module docstring). Callable: ``monitor(snapshot)``."""

    def __init__(self, config: Config | None = None, *, resolved_keep_s: float = DEFAULT_RESOLVED_KEEP_S):
        runs = () if config is None else config.runs
        self._specs: tuple[RunSpec, ...] = tuple(
            RunSpec(run.name, run.hosts, run.process, run.health) for run in runs
        )
        self._spec_by_name = {spec.name: spec for spec in self._specs}
        self._resolved_keep_s = resolved_keep_s
        self._patterns = PatternWatch({spec.name: spec.settings.patterns for spec in self._specs})
        self._progress: dict[tuple[str, int | None], _Progress] = {}
        self._epochs: dict[tuple[str, int | None], int | None] = {}
        self._pid_run: dict[str, dict[int, str]] = {}
        self._tracked: dict[tuple[str, int], _Tracked] = {}
        self._deaths: dict[str, _Death] = {}
        self._runs_seen_alive: set[str] = set()
        self._live_ranks: dict[str, int] = {}
        self._event_marks: dict[str, EventEntry] = {}
        self._events: dict[str, _EventState] = {}
        self._spikes: dict[str, _SpikeTracker] = {}
        # straggler key -> when the rank was first seen that much slower (reset when it is not).
        self._slow_since: dict[str, float] = {}
        self._active: dict[str, Alert] = {}
        self._resolved: dict[str, Alert] = {}
        # (run, host, path) -> (next line number to read, arrival number of the line before it): where the
        # pattern rules stopped reading each log file; the arrival number tells a file that started over.
        self._read_marks: dict[tuple[str, str, str], tuple[int, int]] = {}
        # (host, GPU index) -> (when its memory mean was taken, the mean): see _MEMORY_MEAN_EVERY_S.
        self._memory_means: dict[tuple[str, int], tuple[float, float | None]] = {}

    # ------------------------------------------------------------------------------------------- inputs

    def settings_for(self, run: str | None) -> HealthSettings:
        spec = None if run is None else self._spec_by_name.get(run)
        return DEFAULT_SETTINGS if spec is None else spec.settings

    def observe_line(
        self,
        run: str,
        host: str,
        text: str,
        *,
        t: float,
        rank: int | None = None,
        path: str | None = None,
        line_no: int | None = None,
        epoch: int | None = None,
    ) -> None:
        """One raw log line, for the run's user pattern rules (``epoch`` None: the epoch the rank was in at
        the last snapshot)."""
        if not self._patterns.has_rules(run):
            return
        if epoch is None:
            epoch = self._epochs.get((run, rank))
        self._patterns.observe(run, host, text, t=t, rank=rank, epoch=epoch, path=path, line_no=line_no)

    def _read_log_book(self, snapshot: StoreSnapshot) -> None:
        """Show the pattern rules every line the snapshot's log book holds that they have not seen yet."""
        for run in snapshot.log_files:
            if not self._patterns.has_rules(run):
                continue
            for view in snapshot.logs(run):
                if not len(view):
                    continue
                key = (run, view.host, view.path)
                mark = self._read_marks.get(key)
                start = view.first_line
                epoch: int | None = _BACKLOG_EPOCH
                if mark is not None:
                    next_line, arrival = mark
                    epoch = self._epochs.get((run, view.rank))
                    if view.holds(next_line - 1) and view.arrival(next_line - 1) == arrival:
                        start = next_line
                    elif next_line - 1 < view.first_line:
                        # Lines were dropped from the front since: go on from the oldest one still held.
                        start = view.first_line
                    # else the file started over (its numbering restarted): read all of it as new.
                for offset, text in enumerate(view.lines(start, view.end_line)):
                    self._patterns.observe(
                        run,
                        view.host,
                        text,
                        t=view.last_t,
                        rank=view.rank,
                        epoch=epoch,
                        path=view.path,
                        line_no=start + offset,
                    )
                self._read_marks[key] = (view.end_line, view.arrival(view.end_line - 1))
        if len(self._read_marks) > _MAX_READ_MARKS:
            # Files the book no longer holds: forget where they stopped (the book keeps a bounded number).
            held = {(run, view.host, view.path) for run in snapshot.log_files for view in snapshot.logs(run)}
            self._read_marks = {key: mark for key, mark in self._read_marks.items() if key in held}

    def __call__(self, snapshot: StoreSnapshot) -> tuple[Alert, ...]:
        return self.update(snapshot)

    def update(self, snapshot: StoreSnapshot) -> tuple[Alert, ...]:
        """Judge ``snapshot``: active alerts (most severe, then oldest first), then recently resolved ones
        (newest first)."""
        now = snapshot.now
        self._track_progress(snapshot)
        self._read_log_book(snapshot)
        findings: list[_Finding] = []
        findings += self._host_rules(snapshot)
        processes = self._process_rules(snapshot, findings)
        findings += self._gpu_idle(snapshot, processes)
        for run in snapshot.runs.values():
            spec = self._spec_by_name.get(run.name) or RunSpec(run.name, (), None, DEFAULT_SETTINGS)
            findings += self._stall(snapshot, run, spec)
            findings += self._stragglers(snapshot, run, spec)
            findings += self._log_events(run)
            findings += self._loss_spike(snapshot, run, spec)
            findings += self._plateau(snapshot, run, spec)
            findings += self._throughput(snapshot, run, spec)
        findings += self._memory_imbalance(snapshot, processes)
        findings += self._pattern_alerts()
        return self._settle(findings, now)

    # ------------------------------------------------------------------------------------------ settling

    def _settle(self, findings: Iterable[_Finding], now: float) -> tuple[Alert, ...]:
        current: dict[str, Alert] = {}
        over: dict[str, Alert] = {}
        for finding in findings:
            if finding.key in current or not self.settings_for(finding.run).enabled(finding.kind):
                continue
            previous = self._active.get(finding.key)
            if finding.over and previous is not None:
                continue  # active until now: resolved below like any other alert that cleared
            severity = finding.severity or DEFAULT_SEVERITY[finding.kind]
            (over if finding.over else current)[finding.key] = Alert(
                key=finding.key,
                severity=severity,
                kind=finding.kind.value,
                message=clean_remote_text(finding.message),
                since=finding.since if previous is None else previous.since,
                host=finding.host,
                gpu=finding.gpu,
                rank=finding.rank,
                run=finding.run,
                evidence=tuple(clean_remote_text(line) for line in finding.evidence),
                log_path=None if finding.log_path is None else clean_remote_text(finding.log_path),
                log_line=finding.log_line,
            )
            if not finding.over:
                self._resolved.pop(finding.key, None)
        for key, alert in self._active.items():
            if key not in current:
                self._resolved[key] = replace(alert, resolved_at=now)
        for key, alert in over.items():
            self._resolved[key] = replace(alert, resolved_at=now)
        self._active = current
        self._resolved = {
            key: alert
            for key, alert in self._resolved.items()
            if alert.resolved_at is not None and now - alert.resolved_at <= self._resolved_keep_s
        }
        active = sorted(current.values(), key=lambda alert: (SEVERITY_ORDER[alert.severity], alert.since))
        resolved = sorted(self._resolved.values(), key=lambda alert: -(alert.resolved_at or 0.0))
        return (*active, *resolved)

    # ------------------------------------------------------------------------------------------ progress

    def _track_progress(self, snapshot: StoreSnapshot) -> None:
        for run in snapshot.runs.values():
            for rank in run.ranks:
                progress = rank.progress
                position = (progress.step, progress.epoch, progress.batch)
                key = (run.name, rank.rank)
                track = self._progress.get(key)
                if track is None:
                    self._progress[key] = _Progress(position, progress.last_line_t)
                elif track.position != position:
                    track.position = position
                    track.last_advance_t = progress.last_line_t
                self._epochs[key] = None if progress.epoch is None else int(progress.epoch)

    def _advanced_after(self, run: str, rank: int | None, t: float, ranks: Sequence[int | None]) -> bool:
        """Whether the rank (or, for unranked text or a rank without progress, any rank) moved after ``t``."""
        track = self._progress.get((run, rank))
        if track is not None:
            return track.last_advance_t > t
        return any(
            (other := self._progress.get((run, each))) is not None and other.last_advance_t > t
            for each in ranks
        )

    # --------------------------------------------------------------------------------------------- hosts

    def _host_settings(self, host: str, kind: AlertKind) -> HealthSettings | None:
        """Settings for a host rule: the strictest of the runs on the host that keep the rule on; None when
        every run there switched it off."""
        on_host = [spec.settings for spec in self._specs if host in spec.hosts]
        if not on_host:
            return DEFAULT_SETTINGS
        enabled = [settings for settings in on_host if settings.enabled(kind)]
        return min(enabled, key=lambda settings: settings.stale_after_s) if enabled else None

    def _host_rules(self, snapshot: StoreSnapshot) -> list[_Finding]:
        now = snapshot.now
        found: list[_Finding] = []
        for host in snapshot.hosts.values():
            status = host.status
            if status.state in (HostState.DOWN, HostState.ERROR):
                if self._host_settings(host.name, AlertKind.HOST_DOWN) is None:
                    continue
                why = f": {status.reason}" if status.reason else ""
                found.append(
                    _Finding(
                        f"host_down:{host.name}",
                        AlertKind.HOST_DOWN,
                        f"host {host.name} is {status.state.value}{why} "
                        f"(for {format_duration(now - status.since)})",
                        status.since,
                        host=host.name,
                        evidence=(
                            f"connection {status.state.value} since {format_duration(now - status.since)}",
                        ),
                    )
                )
                continue
            settings = self._host_settings(host.name, AlertKind.HOST_STALE)
            if settings is None:
                continue
            found += self._host_stale(host, now, settings.stale_after_s)
        return found

    def _host_stale(self, host: HostSnapshot, now: float, stale_after: float) -> list[_Finding]:
        key = f"host_stale:{host.name}"
        status = host.status
        if status.state is HostState.CONNECTING:
            if now - status.since <= stale_after:
                return []
            waited = format_duration(now - status.since)
            return [
                _Finding(
                    key,
                    AlertKind.HOST_STALE,
                    f"host {host.name} still not connected after {waited}",
                    status.since,
                    host=host.name,
                )
            ]
        last = host.last_data_t if host.last_data_t is not None else status.since
        if now - last > stale_after:
            silent = format_duration(now - last)
            return [
                _Finding(
                    key,
                    AlertKind.HOST_STALE,
                    f"host {host.name} is connected but has sent no data for {silent} (limit "
                    f"{format_duration(stale_after)})",
                    last,
                    host=host.name,
                )
            ]
        found: list[_Finding] = []
        if host.gpu_status is not None:
            found.append(
                _Finding(
                    f"{key}:gpus",
                    AlertKind.HOST_STALE,
                    f"host {host.name}: GPUs cannot be read: {host.gpu_status.reason}",
                    host.gpu_status.since,
                    host=host.name,
                    evidence=(host.gpu_status.reason,),
                )
            )
            return found
        for gpu in host.gpus:
            age = gpu.age_s(now)
            if age > stale_after:
                found.append(
                    _Finding(
                        f"{key}:gpu{gpu.gpu}",
                        AlertKind.HOST_STALE,
                        f"host {host.name}: no sample from GPU {gpu.gpu} for {format_duration(age)} while "
                        "the host answers",
                        gpu.last_t,
                        host=host.name,
                        gpu=gpu.gpu,
                    )
                )
        return found

    # ----------------------------------------------------------------------------------------- processes

    def _process_rules(
        self, snapshot: StoreSnapshot, findings: list[_Finding]
    ) -> dict[str, list[RunProcess]]:
        """Attribute processes to runs, follow rank processes across listings, and add process_died
        findings. Returns host -> the run processes listed there now (hosts that are up)."""
        now = snapshot.now
        by_host: dict[str, list[RunProcess]] = {}
        live: dict[tuple[str, int], int] = {}
        listed_hosts: set[str] = set()
        for host in snapshot.hosts.values():
            if host.status.state is not HostState.UP or host.processes_t is None:
                continue
            listed_hosts.add(host.name)
            remembered = self._pid_run.setdefault(host.name, {})
            found = run_processes(host, self._specs, remembered)
            by_host[host.name] = found
            self._pid_run[host.name] = {entry.process.pid: entry.run for entry in found}
            for entry in found:
                if entry.rank is None:
                    continue
                pid = entry.process.pid
                key = (host.name, pid)
                if not entry.process.defunct:
                    live[(entry.run, entry.rank)] = pid
                    self._tracked[key] = _Tracked(entry.run, entry.rank, entry.gpus or self._gpus_of(key))
        # Deaths: tracked rank processes that are gone, or listed as defunct, on hosts listed now.
        listings: dict[str, dict[int, ProcInfo]] = {}
        for (host_name, pid), tracked in list(self._tracked.items()):
            if host_name not in listed_hosts:
                continue
            host = snapshot.hosts[host_name]
            listing = listings.get(host_name)
            if listing is None:
                # Once per host: a host runs several tracked ranks.
                listing = listings[host_name] = {process.pid: process for process in host.processes}
            process = listing.get(pid)
            if process is not None and not process.defunct:
                continue
            del self._tracked[(host_name, pid)]
            how = "is defunct (a zombie)" if process is not None else "is gone"
            death_key = f"process_died:{tracked.run}:{host_name}:{pid}"
            if death_key not in self._deaths:
                since = host.processes_t if host.processes_t is not None else now
                self._deaths[death_key] = _Death(
                    tracked.run, host_name, pid, tracked.rank, tracked.gpus, since, how
                )
        self._live_ranks = {}
        for run, _rank in live:
            self._live_ranks[run] = self._live_ranks.get(run, 0) + 1
        self._runs_seen_alive.update(self._live_ranks)
        for death_key, death in list(self._deaths.items()):
            replaced = (death.run, death.rank) in live
            run_snapshot = snapshot.runs.get(death.run)
            rank_snapshot = None if run_snapshot is None else run_snapshot.rank(death.rank)
            if replaced or (rank_snapshot is not None and finished(rank_snapshot)):
                del self._deaths[death_key]
                continue
            others = self._live_ranks.get(death.run, 0)
            if not death.confirmed:
                if others == 0:
                    # The whole run ended (or died) together: that is no single rank's death.
                    del self._deaths[death_key]
                    continue
                if now - death.since < DEATH_CONFIRM_S:
                    continue
                death.confirmed = True
            gpu = death.gpus[0] if death.gpus else None
            held = f", held GPU {', '.join(str(g) for g in death.gpus)}" if death.gpus else ""
            findings.append(
                _Finding(
                    death_key,
                    AlertKind.PROCESS_DIED,
                    f"run {death.run}: rank {death.rank} (pid {death.pid}) on {death.host} {death.how} "
                    f"while {others} other rank process(es) of the run live on",
                    death.since,
                    run=death.run,
                    host=death.host,
                    gpu=gpu,
                    rank=death.rank,
                    evidence=(f"pid {death.pid}{held}; noticed {format_duration(now - death.since)} ago",),
                )
            )
        return by_host

    def _gpus_of(self, key: tuple[str, int]) -> tuple[int, ...]:
        tracked = self._tracked.get(key)
        return () if tracked is None else tracked.gpus

    def _run_gone(self, run: str) -> bool:
        """Whether the run's rank processes were seen and none lives now."""
        return run in self._runs_seen_alive and self._live_ranks.get(run, 0) == 0

    # ---------------------------------------------------------------------------------------------- GPUs

    def _gpu_idle(self, snapshot: StoreSnapshot, processes: dict[str, list[RunProcess]]) -> list[_Finding]:
        now = snapshot.now
        found: list[_Finding] = []
        for host_name, entries in processes.items():
            host = snapshot.hosts[host_name]
            by_pid = {entry.process.pid: entry for entry in entries}
            listed = {process.pid for process in host.processes}
            runs_here = [spec.name for spec in self._specs if host_name in spec.hosts]
            for gpu in host.gpus:
                holders = sorted(pid for pid, gpus in host.gpu_of_pid.items() if gpu.gpu in gpus)
                owners = [by_pid[pid] for pid in holders if pid in by_pid and not by_pid[pid].process.defunct]
                if owners:
                    run = owners[0].run
                elif runs_here and any(pid not in listed for pid in holders):
                    # A holder ps cannot see (another PID namespace: a container) on a host of a run.
                    run = runs_here[0]
                else:
                    continue
                settings = self.settings_for(run)
                if not settings.enabled(AlertKind.GPU_IDLE) or gpu.age_s(now) > settings.stale_after_s:
                    continue
                lookback = max(4.0 * settings.idle_after_s, settings.duty_window_s)
                if busy_at_newest_reading(gpu, now, settings.idle_sm_pct, lookback):
                    continue
                start = idle_since(gpu.history, now, settings.idle_sm_pct, lookback)
                if start is None or now - start <= settings.idle_after_s:
                    continue
                duty = duty_cycle(gpu.history, now, settings.duty_window_s, settings.busy_sm_pct)
                owner = owners[0] if owners else None
                who = (
                    f"pid {owner.process.pid}, {_rank_label(owner.rank)} of {run}"
                    if owner is not None
                    else f"a process of {run} outside ps's view"
                )
                duty_text = "n/a" if duty is None else f"{100.0 * duty:.0f} %"
                last_sm = "n/a" if gpu.latest.sm_pct is None else format_value(gpu.latest.sm_pct)
                found.append(
                    _Finding(
                        f"gpu_idle:{host_name}:{gpu.gpu}",
                        AlertKind.GPU_IDLE,
                        f"GPU {gpu.gpu} on {host_name} at <= {settings.idle_sm_pct:g} % SM for "
                        f"{format_duration(now - start)} while it holds {who}",
                        start,
                        run=run,
                        host=host_name,
                        gpu=gpu.gpu,
                        rank=None if owner is None else owner.rank,
                        evidence=(
                            f"SM % last {last_sm}",
                            f"time at >= {settings.busy_sm_pct:g} % SM over the last "
                            f"{format_duration(settings.duty_window_s)}: {duty_text}",
                        ),
                    )
                )
        return found

    def _memory_imbalance(
        self, snapshot: StoreSnapshot, processes: dict[str, list[RunProcess]]
    ) -> list[_Finding]:
        now = snapshot.now
        gpus_of_run: dict[str, set[tuple[str, int]]] = {}
        for host_name, entries in processes.items():
            for entry in entries:
                if entry.rank is not None and not entry.process.defunct:
                    gpus_of_run.setdefault(entry.run, set()).update((host_name, gpu) for gpu in entry.gpus)
        found: list[_Finding] = []
        taken = self._memory_means
        # Only the GPUs judged now are kept: a GPU that left a run is forgotten with its mean.
        kept: dict[tuple[str, int], tuple[float, float | None]] = {}
        self._memory_means = kept
        for run, gpus in gpus_of_run.items():
            settings = self.settings_for(run)
            used: list[tuple[float, str, int]] = []
            for host_name, index in sorted(gpus):
                gpu = snapshot.hosts[host_name].gpu(index)
                if gpu is None or gpu.age_s(now) > settings.stale_after_s:
                    continue
                key = (host_name, index)
                taken_at_and_mean = taken.get(key)
                if taken_at_and_mean is None or not 0.0 <= now - taken_at_and_mean[0] < _MEMORY_MEAN_EVERY_S:
                    taken_at_and_mean = (now, memory_mean(gpu.history, now, _MEMORY_WINDOW_S))
                kept[key] = taken_at_and_mean
                mean = taken_at_and_mean[1]
                if mean is not None:
                    used.append((mean, host_name, index))
            if len(used) < 2:
                continue
            low = min(used)
            high = max(used)
            if high[0] <= 0 or (high[0] - low[0]) / high[0] * 100.0 <= settings.memory_imbalance_pct:
                continue
            centre = median([mean for mean, _, _ in used])
            outlier = max(used, key=lambda item: abs(item[0] - centre))
            spread = (high[0] - low[0]) / high[0] * 100.0
            found.append(
                _Finding(
                    f"memory_imbalance:{run}",
                    AlertKind.MEMORY_IMBALANCE,
                    f"run {run}: GPU memory of its ranks {spread:.0f} % apart ({low[0]:.0f} MiB on {low[1]} "
                    f"GPU {low[2]} vs {high[0]:.0f} MiB on {high[1]} GPU {high[2]}; limit "
                    f"{settings.memory_imbalance_pct:g} %)",
                    now,
                    run=run,
                    host=outlier[1],
                    gpu=outlier[2],
                    evidence=tuple(
                        f"{host} GPU {index}: {mean:.0f} MiB (mean of the last minute)"
                        for mean, host, index in used
                    ),
                )
            )
        return found

    # ---------------------------------------------------------------------------------------------- runs

    def _stall(self, snapshot: StoreSnapshot, run: RunSnapshot, spec: RunSpec) -> list[_Finding]:
        settings = spec.settings
        if not settings.enabled(AlertKind.STALL) or self._run_gone(run.name):
            return []
        now = snapshot.now
        stalled: list[tuple[float, int | None, str, float, float | None]] = []
        ranked = any(rank.rank is not None for rank in run.ranks)
        for rank in run.ranks:
            if rank.rank is None and ranked:
                # Unranked lines beside ranked ones (an eval summary every 10 min) set no pace of their own.
                continue
            host = snapshot.hosts.get(rank.host)
            if finished(rank) or (host is not None and host.status.state is not HostState.UP):
                continue
            track = self._progress.get((run.name, rank.rank))
            if track is None:
                continue
            limit, typical = stall_limit(rank, settings)
            if now - track.last_advance_t > limit:
                stalled.append((track.last_advance_t, rank.rank, rank.host, limit, typical))
        if not stalled:
            return []
        stalled.sort(key=lambda item: (item[0], -1 if item[1] is None else item[1]))
        first_t, _, _, limit, typical = stalled[0]
        tolerance = max(1.0, typical or 0.0)
        first = [item for item in stalled if item[0] <= first_t + tolerance]
        first_ranks = ", ".join(_rank_label(item[1]) for item in first)
        hosts = {item[2] for item in first}
        moving = len(run.ranks) - len(stalled)
        basis = (
            f"max({format_duration(settings.stall_min_s)}, {settings.stall_factor:g} x median print interval "
            f"{format_duration(typical)})"
            if typical is not None
            else "no print interval known yet"
        )
        others = f"; {moving} other rank(s) within their limit" if moving else ""
        evidence = []
        for advance_t, rank_id, host_name, rank_limit, _ in stalled:
            progress = run.rank(rank_id)
            assert progress is not None
            step = progress.progress.step
            at = f"step {step}" if step is not None else f"epoch {progress.progress.epoch}"
            evidence.append(
                f"{_rank_label(rank_id)} on {host_name}: {at}, "
                f"last progress {format_duration(now - advance_t)} ago, "
                f"last log line {format_duration(now - progress.progress.last_line_t)} ago "
                f"(limit {format_duration(rank_limit)})"
            )
        return [
            _Finding(
                f"stall:{run.name}",
                AlertKind.STALL,
                f"run {run.name}: no progress for {format_duration(now - first_t)} (limit "
                f"{format_duration(limit)} = {basis}); stopped first: {first_ranks}{others}",
                first_t,
                run=run.name,
                host=next(iter(hosts)) if len(hosts) == 1 else None,
                rank=first[0][1] if len(first) == 1 else None,
                evidence=tuple(evidence),
            )
        ]

    def _stragglers(self, snapshot: StoreSnapshot, run: RunSnapshot, spec: RunSpec) -> list[_Finding]:
        settings = spec.settings
        units = {rank.unit for rank in run.ranks if rank.unit is not None}
        rates: list[tuple[RankSnapshot, float]] = []
        if settings.enabled(AlertKind.STRAGGLER) and len(run.ranks) >= 2 and len(units) == 1:
            rates = [(rank, rate) for rank in run.ranks if (rate := rank_rate(rank)) is not None and rate > 0]
        found: list[_Finding] = []
        still_slow: set[str] = set()
        if len(rates) >= 2:
            found = self._slow_ranks(
                snapshot.now,
                run=run.name,
                rates=rates,
                unit=next(iter(units)).value,
                settings=settings,
                still_slow=still_slow,
            )
        for key in [key for key in self._slow_since if key.startswith(f"straggler:{run.name}:")]:
            if key not in still_slow:
                del self._slow_since[key]
        return found

    def _slow_ranks(
        self,
        now: float,
        *,
        run: str,
        rates: Sequence[tuple[RankSnapshot, float]],
        unit: str,
        settings: HealthSettings,
        still_slow: set[str],
    ) -> list[_Finding]:
        """Stragglers among ``rates`` that have been slow for STRAGGLER_CONFIRM_S; adds every slow one's key
        to ``still_slow``."""
        typical = median([rate for _, rate in rates])
        found: list[_Finding] = []
        for rank, rate in rates:
            slower = (1.0 - rate / typical) * 100.0
            key = f"straggler:{run}:{rank.rank}"
            if slower < settings.straggler_pct:
                continue
            still_slow.add(key)
            first = self._slow_since.setdefault(key, now)
            if now - first < STRAGGLER_CONFIRM_S:
                continue
            found.append(
                _Finding(
                    key,
                    AlertKind.STRAGGLER,
                    f"run {run}: {_rank_label(rank.rank)} on {rank.host} is {slower:.0f} % slower "
                    f"than the median rank ({format_value(rate)} vs {format_value(typical)} {unit}s/s; limit "
                    f"{settings.straggler_pct:g} %)",
                    first,
                    run=run,
                    host=rank.host,
                    rank=rank.rank,
                    evidence=tuple(
                        f"{_rank_label(other.rank)}: {format_value(other_rate)} {unit}s/s"
                        for other, other_rate in rates
                    ),
                )
            )
        return found

    def _log_events(self, run: RunSnapshot) -> list[_Finding]:
        events = run.events
        mark = self._event_marks.get(run.name)
        start = 0
        if mark is not None:
            for index in range(len(events) - 1, -1, -1):
                if events[index] is mark:
                    start = index + 1
                    break
        for entry in events[start:]:
            kind = _EVENT_KINDS.get(entry.event.kind)
            if kind is None:
                continue
            rank = entry.event.rank
            key = f"{kind.value}:{run.name}:{entry.host}:{'-' if rank is None else rank}"
            state = self._events.get(key)
            path = getattr(entry, "path", None)
            if state is None:
                self._events[key] = _EventState(
                    kind,
                    run.name,
                    entry.host,
                    rank,
                    entry.t,
                    entry.t,
                    1,
                    entry.event.text,
                    entry.event.line,
                    path if isinstance(path, str) else None,
                )
            else:
                state.last_t = entry.t
                state.count += 1
                state.text = entry.event.text
                state.line = entry.event.line
                state.path = path if isinstance(path, str) else None
        if events:
            self._event_marks[run.name] = events[-1]
        ranks = [rank.rank for rank in run.ranks]
        found: list[_Finding] = []
        for key, state in list(self._events.items()):
            if state.run != run.name:
                continue
            over = self._advanced_after(run.name, state.rank, state.last_t, ranks)
            if over:
                # The rank went on after it: a caught error, a skipped step, a restart. Not failing now.
                del self._events[key]
                if state.raised:
                    continue
            state.raised = True
            where = _where(state.host, state.rank)
            times = f" ({state.count} times)" if state.count > 1 else ""
            found.append(
                _Finding(
                    key,
                    state.kind,
                    f"run {run.name}: {state.kind.value} on {where}{times}, line {state.line}: {state.text}",
                    state.first_t,
                    run=run.name,
                    host=state.host,
                    rank=state.rank,
                    evidence=(state.text,),
                    log_path=state.path,
                    log_line=state.line,
                    over=over,
                )
            )
        return found

    def _loss_spike(self, snapshot: StoreSnapshot, run: RunSnapshot, spec: RunSpec) -> list[_Finding]:
        settings = spec.settings
        metric = speaking_metric(run, _LOSS)
        if metric is None or not settings.enabled(AlertKind.LOSS_SPIKE):
            return []
        tracker = self._spikes.setdefault(run.name, _SpikeTracker())
        for t, value in _new_values(metric, tracker, snapshot.now):
            _feed_spike(tracker, t, value, settings)
        if tracker.spike is None:
            return []
        spike_t, first_value, trend, threshold, highest = tracker.spike
        return [
            _Finding(
                f"loss_spike:{run.name}",
                AlertKind.LOSS_SPIKE,
                f"run {run.name}: loss {format_value(first_value)} jumped to {first_value / trend:.1f} x its "
                f"smoothed trend {format_value(trend)} (threshold {format_value(threshold)}); highest since "
                f"{format_value(highest)}, latest {format_value(metric.last)}",
                spike_t,
                run=run.name,
                rank=metric.rank,
                evidence=(
                    f"trend {format_value(trend)}, spike threshold {format_value(threshold)} = max("
                    f"{settings.spike_factor:g} x trend, trend + {settings.spike_sigmas:g} robust sigma)",
                ),
            )
        ]

    def _plateau(self, snapshot: StoreSnapshot, run: RunSnapshot, spec: RunSpec) -> list[_Finding]:
        settings = spec.settings
        plateau = settings.plateau
        metric = speaking_metric(run, plateau.metric)
        if metric is None or not settings.enabled(AlertKind.PLATEAU):
            return []
        points = metric.history.points(plateau.metric, None, snapshot.now, max_points=600).points
        verdict = plateau_verdict(points, plateau)
        if verdict is None:
            return []
        better = "higher" if plateau.mode is PlateauMode.MAX else "lower"
        return [
            _Finding(
                f"plateau:{run.name}",
                AlertKind.PLATEAU,
                f"run {run.name}: {plateau.metric} has not improved ({better} is better) for "
                f"{format_duration(snapshot.now - verdict.best_before_t)}: best over the last "
                f"{format_duration(verdict.window_s)} {format_value(verdict.best_recent)} vs "
                f"{format_value(verdict.best_before)} before",
                verdict.best_before_t,
                run=run.name,
                rank=metric.rank,
                evidence=(
                    f"{verdict.points} values; noise (robust sigma of changes) "
                    f"{format_value(verdict.noise)}; "
                    f"an improvement must exceed max({plateau.min_delta:g}, 2 x noise)",
                    f"latest {plateau.metric} {format_value(metric.last)}",
                ),
            )
        ]

    def _throughput(self, snapshot: StoreSnapshot, run: RunSnapshot, spec: RunSpec) -> list[_Finding]:
        settings = spec.settings
        target = settings.target_throughput
        if target is None or not settings.enabled(AlertKind.THROUGHPUT_LOW) or self._run_gone(run.name):
            return []
        now = snapshot.now
        window = settings.throughput_window_s
        if settings.throughput_metric is not None:
            metric = speaking_metric(run, settings.throughput_metric)
            if metric is None or metric.history.first_t is None or metric.history.first_t > now - window:
                return []
            values = values_since(metric.history, settings.throughput_metric, now - window, now)
            if len(values) < 3:
                return []
            measured = median(values)
            over = format_duration(window)
            unit = f"{settings.throughput_metric} (median of {len(values)} values over {over})"
            rank = metric.rank
        else:
            rates = [rate for rank in run.ranks if (rate := rank_rate(rank)) is not None]
            if not rates:
                return []
            measured = min(rates)
            units = {rank.unit.value for rank in run.ranks if rank.unit is not None}
            unit = f"{'/'.join(sorted(units)) or 'step'}s/s (median interval of the slowest rank)"
            rank = None
        if measured >= target:
            return []
        return [
            _Finding(
                f"throughput_low:{run.name}",
                AlertKind.THROUGHPUT_LOW,
                f"run {run.name}: throughput {format_value(measured)} is "
                f"{100.0 * (1 - measured / target):.0f} % below its target {format_value(target)} {unit}",
                now,
                run=run.name,
                rank=rank,
                evidence=(f"measured {format_value(measured)}, target {format_value(target)}",),
            )
        ]

    def _pattern_alerts(self) -> list[_Finding]:
        found: list[_Finding] = []
        ranks_of_run: dict[str, list[int | None]] = {}
        for run, rank in self._progress:
            ranks_of_run.setdefault(run, []).append(rank)
        for hit in self._patterns.hits(dict(self._epochs)):
            if not hit.firing:
                continue
            rule = hit.rule
            if rule.max_per_epoch is None and self._advanced_after(
                hit.run, hit.rank, hit.last_t, ranks_of_run.get(hit.run, [])
            ):
                continue
            where = _where(hit.host, hit.rank)
            if rule.max_per_epoch is None:
                times = f" ({hit.count} times)" if hit.count > 1 else ""
                message = f"run {hit.run}: {rule.name} on {where}{times}: {hit.line}"
            else:
                epoch = "an epoch of unknown number" if hit.epoch is None else f"epoch {hit.epoch}"
                message = (
                    f"run {hit.run}: {rule.name} matched {hit.count} times in {epoch} on {where} "
                    f"(limit {rule.max_per_epoch} per epoch)"
                )
            found.append(
                _Finding(
                    f"pattern:{rule.name}:{hit.run}:{hit.host}:{'-' if hit.rank is None else hit.rank}",
                    AlertKind.PATTERN,
                    message,
                    hit.since,
                    run=hit.run,
                    host=hit.host,
                    rank=hit.rank,
                    evidence=(f"pattern {rule.pattern.pattern!r}", f"last match: {hit.line}"),
                    log_path=hit.path,
                    log_line=hit.line_no,
                    severity=rule.severity,
                )
            )
        return found


# ------------------------------------------------------------------------------------------ loss spikes


def _new_values(metric: MetricSnapshot, tracker: _SpikeTracker, now: float) -> list[tuple[float, float]]:
    """The metric's values appended since the tracker last read it, oldest first (bucket means where more
    arrived than the raw history holds)."""
    new = metric.samples - tracker.processed
    if new <= 0:
        return []
    points = metric.history.points(metric.name, tracker.last_t, now, max_points=1200).points
    values = [(point.t, point.mean) for point in points if point.samples and point.mean is not None]
    tracker.processed = metric.samples
    if values:
        tracker.last_t = values[-1][0]
    return values[-new:]


def _feed_spike(tracker: _SpikeTracker, t: float, value: float, settings: HealthSettings) -> None:
    if math.isnan(value):
        return
    trend = tracker.trend
    if trend is not None and tracker.seen >= _SPIKE_MIN_VALUES:
        sigma = robust_sigma(list(tracker.residuals))
        margin = max(settings.spike_sigmas * sigma, (settings.spike_factor - 1.0) * abs(trend))
        if tracker.spike is not None:
            spike_t, first, then_trend, threshold, highest = tracker.spike
            if value > threshold:
                tracker.spike = (spike_t, first, then_trend, threshold, max(highest, value))
                return
            tracker.spike = None
        elif value > trend + margin:
            tracker.spike = (t, value, trend, trend + margin, value)
            return
    if not math.isfinite(value):
        return
    if trend is None:
        tracker.trend = value
    else:
        tracker.residuals.append(value - trend)
        tracker.trend = _SPIKE_EMA_WEIGHT * trend + (1.0 - _SPIKE_EMA_WEIGHT) * value
    tracker.seen += 1


__all__ = ["DEATH_CONFIRM_S", "DEFAULT_RESOLVED_KEEP_S", "STRAGGLER_CONFIRM_S", "HealthMonitor", "duty_cycle"]
