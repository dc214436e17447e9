"""Render a StoreSnapshot as a status report: a JSON-ready object and the Markdown a person would paste.

Pure: no I/O, no clock. Everything time-related is measured against ``snapshot.now`` (monotonic seconds), and
a wall-clock time for the title is passed in. The report is truthful where hand-written status reports were
not: GPU utilisation is the last value *and* the mean/min/max over the collection window (one `nvidia-smi`
reading says little), unknown values are ``null`` / "n/a" and never 0, hosts that are not up come first with
the reason, the ETA comes with its range, and every rank's progress is shown so the one that lags stands out.
Health alerts (:mod:`trainmon_tui.analysis.health`, passed in as ``ReportOptions.alerts``) come first in both
forms. In JSON an alert's ``since`` is an ISO 8601 wall-clock time derived from ``generated_at`` (null when
the report has no wall-clock time), and ``age_s`` is how many seconds before the snapshot it started, like
every other ``*_age_s`` in the report; ``resolved_age_s`` is null while the alert is still on.
All text that came from a host passes through :func:`~trainmon_tui.sanitize.clean_remote_text` again here, so
a report never carries a control sequence or a credential whatever path the text took into the store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from trainmon_tui.analysis.alerts import Alert
from trainmon_tui.analysis.durations import format_duration as duration_text
from trainmon_tui.analysis.eta import Eta, estimate_eta
from trainmon_tui.analysis.health_rules import duty_cycle
from trainmon_tui.model import ProcInfo
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.series import WindowStats
from trainmon_tui.state.store import (
    HostSnapshot,
    HostState,
    ProgressUnit,
    RankSnapshot,
    RunSnapshot,
    StoreSnapshot,
)

UNKNOWN = "n/a"
# A GPU whose newest sample is older than this is shown as stale: its numbers are no longer "now".
DEFAULT_GPU_STALE_S = 15.0
# A rank whose log has been silent this long is listed as a problem (a hung rank, a dead writer).
DEFAULT_LOG_SILENT_S = 120.0
# How many of a run's newest events (OOM, NCCL, NaN, traceback ...) a report lists.
DEFAULT_EVENTS_SHOWN = 10
# Commands are long (full argv); the Markdown table shows the start, the JSON the whole cleaned text.
_MARKDOWN_COMMAND_CHARS = 120
_MARKDOWN_EVENT_CHARS = 200

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunHints:
    """What the config knows about a run that the logs may not say: how to spot its processes, its length."""

    process: re.Pattern[str] | None = None
    total_steps: int | None = None


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """How to build a report. ``window_s``: the statistics window ending at ``snapshot.now`` (None: all
    history). ``generated_at``: the wall-clock time shown in the title (None: not shown)."""

    window_s: float | None = None
    generated_at: datetime | None = None
    runs: Mapping[str, RunHints] = field(default_factory=lambda: MappingProxyType({}))
    gpu_stale_s: float = DEFAULT_GPU_STALE_S
    log_silent_s: float = DEFAULT_LOG_SILENT_S
    events_shown: int = DEFAULT_EVENTS_SHOWN
    # Health verdicts as of the snapshot (HealthMonitor.update), active first, as the monitor orders them.
    alerts: Sequence[Alert] = ()
    # Duty cycle: share of the last ``duty_window_s`` seconds a GPU spent at ``busy_sm_pct`` % SM or more.
    duty_window_s: float = 600.0
    busy_sm_pct: float = 50.0


# ------------------------------------------------------------------------------------------------ values


def json_number(value: float | None) -> float | str | None:
    """A number as JSON can carry it: NaN and infinities become the strings "nan", "inf", "-inf"."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _window_stats_json(stats: WindowStats) -> JsonObject:
    return {
        "last": json_number(stats.last),
        "mean": json_number(stats.mean),
        "min": json_number(stats.low),
        "max": json_number(stats.high),
    }


def _since(snapshot: StoreSnapshot, window_s: float | None) -> float | None:
    return None if window_s is None else snapshot.now - window_s


# ------------------------------------------------------------------------------------------------- hosts


def _host_error(host: HostSnapshot) -> str | None:
    if host.status.state is HostState.UP or host.status.reason is None:
        return None
    return clean_remote_text(host.status.reason)


def _process_run(process: ProcInfo, runs: Mapping[str, RunHints]) -> str | None:
    for name, hints in runs.items():
        if hints.process is not None and hints.process.search(process.command):
            return name
    return None


def interesting_processes(
    host: HostSnapshot, runs: Mapping[str, RunHints]
) -> list[tuple[ProcInfo, str | None]]:
    """The processes worth a line in a report: those holding a GPU, those with a rank, those matching a
    run's ``process`` pattern - with the run each one matched. Ordered by rank, then pid."""
    chosen: list[tuple[ProcInfo, str | None]] = []
    for process in host.processes:
        run = _process_run(process, runs)
        if run is not None or process.pid in host.gpu_of_pid or process.pid in host.rank_of_pid:
            chosen.append((process, run))
    rank_of_pid = host.rank_of_pid
    chosen.sort(key=lambda item: (rank_of_pid.get(item[0].pid, math.inf), item[0].pid))
    return chosen


def _process_json(host: HostSnapshot, process: ProcInfo, run: str | None) -> JsonObject:
    return {
        "pid": process.pid,
        "ppid": process.ppid,
        "cpu_pct": json_number(process.cpu_pct),
        "rss_mib": json_number(process.rss_mib),
        "elapsed_s": process.elapsed_s,
        "state": process.state.name.lower(),
        "defunct": process.defunct,
        "command": clean_remote_text(process.command),
        # Every GPU the process holds memory on (usually one); empty when it holds none that we know of.
        "gpu": list(host.gpu_of_pid.get(process.pid, ())),
        "rank": host.rank_of_pid.get(process.pid),
        "run": run,
        "in_ps": True,
    }


def _unlisted_gpu_process_json(host: HostSnapshot, pid: int) -> JsonObject:
    """A pid nvidia-smi says holds GPU memory but ps did not list (another PID namespace, a container, or it
    exited between the two commands): everything ps would have said is unknown."""
    return {
        "pid": pid,
        "ppid": None,
        "cpu_pct": None,
        "rss_mib": None,
        "elapsed_s": None,
        "state": None,
        "defunct": False,
        "command": None,
        "gpu": list(host.gpu_of_pid[pid]),
        "rank": host.rank_of_pid.get(pid),
        "run": None,
        "in_ps": False,
    }


def _processes_json(host: HostSnapshot, runs: Mapping[str, RunHints]) -> list[JsonObject]:
    listed = [_process_json(host, process, run) for process, run in interesting_processes(host, runs)]
    in_ps = {process.pid for process in host.processes}
    unlisted = [_unlisted_gpu_process_json(host, pid) for pid in sorted(host.gpu_of_pid) if pid not in in_ps]
    return listed + unlisted


def _gpus_json(snapshot: StoreSnapshot, host: HostSnapshot, options: ReportOptions) -> list[JsonObject]:
    since = _since(snapshot, options.window_s)
    gpus: list[JsonObject] = []
    for gpu in host.gpus:
        latest = gpu.latest
        if "sm_pct" in gpu.history.fields:
            stats = gpu.history.stats("sm_pct", since, snapshot.now)
        else:
            stats = WindowStats(0, None, None, None, None, 0.0)
        age = gpu.age_s(snapshot.now)
        sm = _window_stats_json(stats)
        # The newest reading even when it is older than the window: "age_s" and "stale" say how old.
        sm["last"] = json_number(latest.sm_pct)
        gpus.append(
            {
                "index": gpu.gpu,
                "name": None if latest.name is None else clean_remote_text(latest.name),
                "sm": sm,
                "samples": stats.count,
                # Share (0..1) of the last duty_window_s at >= busy_sm_pct % SM: what a one-off reading hides.
                "duty_cycle": json_number(
                    duty_cycle(gpu.history, snapshot.now, options.duty_window_s, options.busy_sm_pct)
                ),
                "mem_used_mib": json_number(latest.fb_used_mib),
                "mem_total_mib": json_number(latest.fb_total_mib),
                "temp_c": json_number(latest.gpu_temp_c),
                "power_w": json_number(latest.power_w),
                "age_s": age,
                # A host that is not up sends nothing: whatever it sent last is old news, however recent.
                "stale": age > options.gpu_stale_s or host.status.state is not HostState.UP,
            }
        )
    return gpus


def _host_json(snapshot: StoreSnapshot, host: HostSnapshot, options: ReportOptions) -> JsonObject:
    return {
        "name": host.name,
        "status": host.status.state.value,
        "error": _host_error(host),
        "status_age_s": snapshot.now - host.status.since,
        # Why the GPUs cannot be read at all (nvidia-smi missing or failing, no driver); null when they can.
        "gpu_error": None if host.gpu_status is None else clean_remote_text(host.gpu_status.reason),
        "gpu_error_age_s": None if host.gpu_status is None else snapshot.now - host.gpu_status.since,
        "problems": [
            {
                "source": source,
                "message": clean_remote_text(problem.message),
                "age_s": snapshot.now - problem.since,
            }
            for source, problem in sorted(host.problems.items())
        ],
        "last_data_age_s": None if host.last_data_t is None else snapshot.now - host.last_data_t,
        "gpus": _gpus_json(snapshot, host, options),
        "processes": _processes_json(host, options.runs),
    }


# -------------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True, slots=True)
class RunProgress:
    """A run's headline numbers, taken from the rank furthest behind (the run ends when it does)."""

    behind: RankSnapshot | None
    step: int | None
    total_steps: int | None
    epoch: float | None
    total_epochs: int | None
    eta: Eta
    unit: ProgressUnit | None
    # Highest step any rank printed, to say how far the others are ahead of the slowest.
    lead_step: int | None


def _slowest_rank(ranks: Sequence[RankSnapshot]) -> RankSnapshot | None:
    with_step = [rank for rank in ranks if rank.progress.step is not None]
    if with_step:
        # Ties go to the lowest rank, as in the store's own ETA choice.
        return min(with_step, key=lambda rank: (rank.progress.step, -1 if rank.rank is None else rank.rank))
    with_fraction = [(rank, rank.fraction_done()) for rank in ranks]
    known = [(rank, done) for rank, done in with_fraction if done is not None]
    if known:
        return min(known, key=lambda item: item[1])[0]
    return next((rank for rank in ranks if rank.observations), ranks[0] if ranks else None)


def run_progress(run: RunSnapshot, hints: RunHints | None = None) -> RunProgress:
    """Step, totals and ETA of a run; the config's ``total_steps`` fills in when the log never printed one."""
    behind = _slowest_rank(run.ranks)
    steps = [rank.progress.step for rank in run.ranks if rank.progress.step is not None]
    lead = max(steps) if steps else None
    if behind is None:
        return RunProgress(None, None, None, None, None, run.eta, None, lead)
    progress = behind.progress
    total_steps = progress.total_steps
    eta = run.eta
    if total_steps is None and hints is not None and hints.total_steps is not None:
        total_steps = hints.total_steps
        if behind.unit is ProgressUnit.STEP and behind.observations:
            eta = estimate_eta(behind.observations, float(total_steps))
    return RunProgress(
        behind,
        progress.step,
        total_steps,
        progress.epoch,
        progress.total_epochs,
        eta,
        behind.unit,
        lead,
    )


# The metrics a reader looks for first; every other metric follows in the order the log first printed it.
HEADLINE_METRICS: tuple[str, ...] = ("loss", "val_loss", "lr", "grad_norm")


def _headline_first(names: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(names))
    return [name for name in HEADLINE_METRICS if name in unique] + [
        name for name in unique if name not in HEADLINE_METRICS
    ]


def _metric_names(run: RunSnapshot) -> list[str]:
    return _headline_first(name for _, name in run.metrics)


def _run_metric_rank(run: RunSnapshot, name: str) -> int | None:
    """Which rank speaks for the run about a metric: unranked lines first, then the lowest rank."""
    ranks = [rank for rank, metric_name in run.metrics if metric_name == name]
    return min(ranks, key=lambda rank: -1 if rank is None else rank)


def _run_metrics_json(snapshot: StoreSnapshot, run: RunSnapshot, options: ReportOptions) -> JsonObject:
    since = _since(snapshot, options.window_s)
    metrics: JsonObject = {}
    for name in _metric_names(run):
        rank = _run_metric_rank(run, name)
        metric = run.metrics[(rank, name)]
        stats = metric.stats(since, snapshot.now)
        metrics[name] = {
            "last": json_number(metric.last),
            "mean": json_number(stats.mean),
            "min": json_number(stats.low),
            "max": json_number(stats.high),
            "samples": stats.count,
            "rank": rank,
        }
    return metrics


def _rank_json(snapshot: StoreSnapshot, run: RunSnapshot, rank: RankSnapshot, lead: int | None) -> JsonObject:
    progress = rank.progress
    own = {name: metric for (owner, name), metric in run.metrics.items() if owner == rank.rank}
    metrics = {name: json_number(own[name].last) for name in _headline_first(own)}
    behind = None if lead is None or progress.step is None else lead - progress.step
    return {
        "rank": rank.rank,
        "host": rank.host,
        "step": progress.step,
        "epoch": json_number(progress.epoch),
        "steps_behind": behind,
        "fraction_done": json_number(rank.fraction_done()),
        "last_line_age_s": snapshot.now - progress.last_line_t,
        "metrics": metrics,
    }


def _events_json(snapshot: StoreSnapshot, run: RunSnapshot, limit: int) -> list[JsonObject]:
    newest = run.events[-limit:] if limit > 0 else ()
    return [
        {
            "kind": entry.event.kind.value,
            "host": entry.host,
            "rank": entry.event.rank,
            "line": entry.event.line,
            "age_s": snapshot.now - entry.t,
            "text": clean_remote_text(entry.event.text),
        }
        for entry in newest
    ]


def _run_json(snapshot: StoreSnapshot, run: RunSnapshot, options: ReportOptions) -> JsonObject:
    progress = run_progress(run, options.runs.get(run.name))
    eta = progress.eta
    return {
        "name": run.name,
        "step": progress.step,
        "total_steps": progress.total_steps,
        "epoch": json_number(progress.epoch),
        "total_epochs": progress.total_epochs,
        # What the rate and ETA count: "step", "batch" or "epoch" (null while nothing was counted).
        "progress_unit": None if progress.unit is None else progress.unit.value,
        "steps_per_s": json_number(eta.steps_per_s),
        "eta_s": json_number(eta.eta_s),
        "eta_low_s": json_number(eta.eta_low_s),
        "eta_high_s": json_number(eta.eta_high_s),
        "last_line_age_s": None if run.last_line_t is None else snapshot.now - run.last_line_t,
        # Hosts where some of the run's logs cannot be read (missing, unreadable, tail failing), and why.
        "log_problems": [
            {"host": host, "message": clean_remote_text(status.message), "age_s": snapshot.now - status.since}
            for host, status in sorted(run.log_status.items())
        ],
        "metrics": _run_metrics_json(snapshot, run, options),
        "ranks": [_rank_json(snapshot, run, rank, progress.lead_step) for rank in run.ranks],
        "events": _events_json(snapshot, run, options.events_shown),
    }


# -------------------------------------------------------------------------------------------- the report


def _hosts_in_order(snapshot: StoreSnapshot) -> list[HostSnapshot]:
    """Hosts that are not up first (the reader must see them), otherwise in the order the store met them."""
    hosts = list(snapshot.hosts.values())
    return [host for host in hosts if host.status.state is not HostState.UP] + [
        host for host in hosts if host.status.state is HostState.UP
    ]


def _wall_time(snapshot: StoreSnapshot, options: ReportOptions, t: float) -> str | None:
    """A store-clock time as ISO 8601 wall-clock time, counted back from ``generated_at``."""
    if options.generated_at is None:
        return None
    return (options.generated_at - timedelta(seconds=round(snapshot.now - t))).isoformat()


def _alert_json(snapshot: StoreSnapshot, alert: Alert, options: ReportOptions) -> JsonObject:
    return {
        "severity": alert.severity.value,
        "kind": alert.kind,
        "host": alert.host,
        "gpu": alert.gpu,
        "rank": alert.rank,
        "run": alert.run,
        "message": clean_remote_text(alert.message),
        "since": _wall_time(snapshot, options, alert.since),
        "age_s": snapshot.now - alert.since,
        "resolved_age_s": None if alert.resolved_at is None else snapshot.now - alert.resolved_at,
        "evidence": [clean_remote_text(line) for line in alert.evidence],
        "log_path": None if alert.log_path is None else clean_remote_text(alert.log_path),
        "log_line": alert.log_line,
        "key": alert.key,
    }


def build_report(snapshot: StoreSnapshot, options: ReportOptions | None = None) -> JsonObject:
    """The report as a JSON-serialisable object: ``{"alerts": [...], "hosts": [...], "runs": [...]}`` plus
    the window."""
    options = options or ReportOptions()
    return {
        "generated_at": None if options.generated_at is None else options.generated_at.isoformat(),
        "window_s": options.window_s,
        "alerts": [_alert_json(snapshot, alert, options) for alert in options.alerts],
        "hosts": [_host_json(snapshot, host, options) for host in _hosts_in_order(snapshot)],
        "runs": [_run_json(snapshot, run, options) for run in snapshot.runs.values()],
    }


def hosts_not_up(snapshot: StoreSnapshot) -> list[str]:
    """Names of hosts whose connection is not up (down, error or still connecting)."""
    return [name for name, host in snapshot.hosts.items() if host.status.state is not HostState.UP]


# -------------------------------------------------------------------------------------------- formatting


def format_duration(seconds: float | None) -> str:
    """``12 s``, ``4m 05s``, ``3h 07m``, ``2d 04h``; "n/a" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return UNKNOWN
    return duration_text(seconds)


def _percent(share: float | None) -> str:
    """A share (0..1) as a whole percentage; "n/a" when unknown."""
    return UNKNOWN if share is None else f"{100 * share:.0f} %"


def format_number(value: float | str | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals (integers without); "n/a" when unknown, "nan" kept as such."""
    if value is None:
        return UNKNOWN
    if isinstance(value, str):
        return value
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}f}"


def _format_metric(value: float | str | None) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no pipe or newline breaks the row, no backtick opens code."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("\n", " ")


def _code(text: str) -> str:
    """Text from a host as a Markdown code span: its ``*``, ``_`` or ``<`` cannot turn into formatting."""
    return "`" + text.replace("`", "'") + "`"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows)
    return lines


def _rank_label(rank: int | None) -> str:
    return "all" if rank is None else str(rank)


def _problems(report: JsonObject, options: ReportOptions) -> list[str]:
    problems: list[str] = []
    for host in report["hosts"]:
        if host["status"] != HostState.UP.value:
            why = f": {_code(host['error'])}" if host["error"] else ""
            duration = format_duration(host["status_age_s"])
            problems.append(f"host **{host['name']}** is {host['status']}{why} (for {duration})")
            continue
        if host["gpu_error"] is not None:
            duration = format_duration(host["gpu_error_age_s"])
            problems.append(
                f"host **{host['name']}**: GPUs cannot be read: {_code(host['gpu_error'])} (for {duration})"
            )
        for problem in host["problems"]:
            duration = format_duration(problem["age_s"])
            problems.append(
                f"host **{host['name']}**: {problem['source']}: {_code(problem['message'])} (for {duration})"
            )
        stale = [gpu for gpu in host["gpus"] if gpu["stale"]]
        if stale:
            indices = ", ".join(str(gpu["index"]) for gpu in stale)
            oldest = max(gpu["age_s"] for gpu in stale)
            problems.append(
                f"host **{host['name']}**: no GPU sample from GPU {indices} for {format_duration(oldest)}"
            )
        defunct = [process for process in host["processes"] if process["defunct"]]
        for process in defunct:
            problems.append(f"host **{host['name']}**: process {process['pid']} is defunct (zombie)")
    for run in report["runs"]:
        for problem in run["log_problems"]:
            problems.append(
                f"run **{run['name']}** on {problem['host']}: {_code(problem['message'])} "
                f"(for {format_duration(problem['age_s'])})"
            )
        for rank in run["ranks"]:
            if rank["last_line_age_s"] > options.log_silent_s:
                problems.append(
                    f"run **{run['name']}**: rank {_rank_label(rank['rank'])} on {rank['host']} "
                    f"has written nothing for {format_duration(rank['last_line_age_s'])}"
                )
        for name, metric in run["metrics"].items():
            if metric["last"] in ("nan", "inf", "-inf"):
                problems.append(f"run **{run['name']}**: {name} is {metric['last']}")
        for event in run["events"]:
            where = f"{event['host']}, rank {_rank_label(event['rank'])}, line {event['line']}"
            text = _shorten(event["text"], _MARKDOWN_EVENT_CHARS)
            problems.append(
                f"run **{run['name']}**: {event['kind']} ({where}, {format_duration(event['age_s'])} ago): "
                f"{_code(text)}"
            )
    return problems


def _alert_line(alert: JsonObject) -> str:
    subject = [f"run {alert['run']}"] if alert["run"] is not None else []
    if alert["host"] is not None:
        subject.append(f"host {alert['host']}")
    if alert["gpu"] is not None:
        subject.append(f"GPU {alert['gpu']}")
    if alert["rank"] is not None:
        subject.append(f"rank {alert['rank']}")
    started = f"since {alert['since']}, " if alert["since"] is not None else ""
    when = f"{started}{format_duration(alert['age_s'])} ago"
    if alert["resolved_age_s"] is not None:
        when += f"; resolved {format_duration(alert['resolved_age_s'])} ago"
    where = f" ({', '.join(subject)})" if subject else ""
    message = _shorten(alert["message"], _MARKDOWN_EVENT_CHARS)
    return f"**{alert['severity'].upper()}** {alert['kind']}{where}: {_code(message)} — {when}"


def _alert_items(alert: JsonObject) -> list[str]:
    """An alert as a list item, its evidence (at most three lines) as items below it."""
    items = [f"- {_alert_line(alert)}"]
    items += [f"  - {_code(_shorten(text, _MARKDOWN_EVENT_CHARS))}" for text in alert["evidence"][:3]]
    return items


def _alerts_markdown(alerts: Sequence[JsonObject]) -> list[str]:
    """Active alerts, most severe first, then the ones resolved recently."""
    active = [alert for alert in alerts if alert["resolved_age_s"] is None]
    resolved = [alert for alert in alerts if alert["resolved_age_s"] is not None]
    lines = ["## Alerts", ""]
    if not active:
        lines.append("None active.")
    for alert in active:
        lines += _alert_items(alert)
    if resolved:
        lines += ["", "Resolved recently:", ""]
        for alert in resolved:
            lines += _alert_items(alert)
    return [*lines, ""]


def _host_markdown(host: JsonObject, window: str, options: ReportOptions) -> list[str]:
    state = host["status"]
    error = f" — {_code(host['error'])}" if host["error"] else ""
    lines = [f"### {host['name']} ({state}{error})", ""]
    if host["gpus"]:
        rows = []
        for gpu in host["gpus"]:
            sm = gpu["sm"]
            used, total = gpu["mem_used_mib"], gpu["mem_total_mib"]
            memory = f"{format_number(used, 0)} / {format_number(total, 0)}"
            age = f"{format_duration(gpu['age_s'])} ago" + (" (stale)" if gpu["stale"] else "")
            rows.append(
                [
                    str(gpu["index"]),
                    format_number(sm["last"]),
                    format_number(sm["mean"]),
                    format_number(sm["min"]),
                    format_number(sm["max"]),
                    _percent(gpu["duty_cycle"]),
                    str(gpu["samples"]),
                    memory,
                    format_number(gpu["temp_c"], 0),
                    format_number(gpu["power_w"], 0),
                    age,
                ]
            )
        header = [
            "GPU",
            "SM % last",
            f"SM % mean {window}",
            "min",
            "max",
            f"busy (SM >= {options.busy_sm_pct:g} %) last {format_duration(options.duty_window_s)}",
            "samples",
            "memory MiB used / total",
            "temp °C",
            "power W",
            "last sample",
        ]
        lines += [*_table(header, rows), ""]
    elif host["gpu_error"] is not None:
        lines += [f"GPUs cannot be read: {_code(host['gpu_error'])}.", ""]
    elif state == HostState.UP.value:
        lines += ["No GPU samples received.", ""]
    if host["processes"]:
        rows = [
            [
                str(process["pid"]),
                UNKNOWN if process["rank"] is None else str(process["rank"]),
                ",".join(str(index) for index in process["gpu"]) or "-",
                process["run"] or "-",
                process["state"] or UNKNOWN,
                format_number(process["cpu_pct"]),
                format_number(process["rss_mib"], 0),
                format_duration(process["elapsed_s"]),
                _shorten(process["command"], _MARKDOWN_COMMAND_CHARS)
                if process["in_ps"]
                else "(not in ps: another PID namespace, or exited)",
            ]
            for process in host["processes"]
        ]
        header = ["pid", "rank", "GPU", "run", "state", "CPU %", "RSS MiB", "running for", "command"]
        lines += [*_table(header, rows), ""]
    return lines


def _progress_line(run: JsonObject) -> str:
    step, total = run["step"], run["total_steps"]
    if step is None:
        text = f"step {UNKNOWN}"
    elif total is None:
        text = f"step {step} of an unknown total"
    else:
        text = f"step {step} / {total} ({100.0 * step / total:.1f} %)" if total > 0 else f"step {step}"
    if run["epoch"] is not None:
        epochs = f" / {run['total_epochs']}" if run["total_epochs"] is not None else ""
        text += f", epoch {format_number(run['epoch'], 2)}{epochs}"
    if len(run["ranks"]) > 1:
        text += " (slowest rank)"
    return text


def _eta_line(run: JsonObject) -> str:
    unit = run["progress_unit"] or "step"
    rate = run["steps_per_s"]
    speed = UNKNOWN if rate is None else f"{_format_metric(rate)} {unit}s/s"
    if run["eta_s"] is None:
        eta = UNKNOWN if run["total_steps"] is not None or unit != "step" else f"{UNKNOWN} (total unknown)"
    else:
        eta = (
            f"{format_duration(run['eta_s'])} "
            f"(range {format_duration(run['eta_low_s'])} – {format_duration(run['eta_high_s'])})"
        )
    return f"Speed {speed}; ETA {eta}"


def _run_markdown(run: JsonObject, window: str) -> list[str]:
    lines = [f"### {run['name']}", ""]
    last_line = run["last_line_age_s"]
    lines.append(f"- Progress: {_progress_line(run)}")
    lines.append(f"- {_eta_line(run)}")
    lines.append(f"- Last log line: {UNKNOWN if last_line is None else format_duration(last_line) + ' ago'}")
    for name, metric in run["metrics"].items():
        lines.append(
            f"- {name}: {_format_metric(metric['last'])} (min {_format_metric(metric['min'])}, "
            f"mean {_format_metric(metric['mean'])}, max {_format_metric(metric['max'])} "
            f"over {metric['samples']} value{'' if metric['samples'] == 1 else 's'} {window})"
        )
    if not run["ranks"]:
        lines += ["- No progress read from the logs yet.", ""]
        return lines
    lines.append("")
    lagging = _lagging_rank(run["ranks"])
    rows = []
    for rank in run["ranks"]:
        behind = rank["steps_behind"]
        note = UNKNOWN if behind is None else ("-" if behind == 0 else f"{behind} steps")
        if rank is lagging:
            note += " ← slowest"
        shown = [name for name in rank["metrics"] if name in HEADLINE_METRICS] or list(rank["metrics"])[:3]
        metrics = ", ".join(f"{name} {_format_metric(rank['metrics'][name])}" for name in shown)
        rows.append(
            [
                _rank_label(rank["rank"]),
                rank["host"],
                UNKNOWN if rank["step"] is None else str(rank["step"]),
                note,
                f"{format_duration(rank['last_line_age_s'])} ago",
                metrics or "-",
            ]
        )
    lines += [*_table(["rank", "host", "step", "behind", "last line", "latest values"], rows), ""]
    return lines


def _lagging_rank(ranks: Sequence[JsonObject]) -> JsonObject | None:
    """The rank furthest behind, when ranks disagree at all (one rank, or all level, lags nobody)."""
    behind = [rank for rank in ranks if rank["steps_behind"]]
    return max(behind, key=lambda rank: rank["steps_behind"]) if behind else None


def markdown_report(snapshot: StoreSnapshot, options: ReportOptions | None = None) -> str:
    """Shorthand for ``render_markdown(build_report(snapshot, options), options)``."""
    return render_markdown(build_report(snapshot, options), options)


def render_markdown(report: JsonObject, options: ReportOptions | None = None) -> str:
    """The report as Markdown: title, problems first, then hosts (GPUs, processes), then runs."""
    options = options or ReportOptions()
    window = (
        "over all history" if report["window_s"] is None else f"over {format_duration(report['window_s'])}"
    )
    title = "# Training status"
    if report["generated_at"] is not None:
        title += f" — {report['generated_at']}"
    hosts = report["hosts"]
    counts: dict[str, int] = {}
    for host in hosts:
        counts[host["status"]] = counts.get(host["status"], 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in counts.items()) or "none"
    lines = [
        title,
        "",
        f"Hosts: {len(hosts)} ({summary}). Runs: {len(report['runs'])}. "
        f"GPU utilisation is the streaming-multiprocessor (SM) busy %, {window}.",
        "",
    ]
    lines += _alerts_markdown(report.get("alerts", []))
    problems = _problems(report, options)
    lines += ["## Problems", ""]
    lines += [f"- {problem}" for problem in problems] if problems else ["None seen."]
    lines += ["", "## Hosts", ""]
    for host in hosts:
        lines += _host_markdown(host, window, options)
    if report["runs"]:
        lines += ["## Runs", ""]
        for run in report["runs"]:
            lines += _run_markdown(run, window)
    return "\n".join(lines).rstrip("\n") + "\n"
