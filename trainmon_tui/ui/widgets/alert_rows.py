"""What the alerts panel lists: health verdicts, and the log events and host trouble behind them, as Alerts.

Two sources, drawn the same way. With a health engine (the dashboard's
:class:`~trainmon_tui.analysis.health.HealthMonitor`), :class:`PanelAlerts` lists the monitor's verdicts
and adds what they do not stand for: every parsed log event (OOM, NCCL timeout or error, NaN, traceback,
failed child, killed process, Xid, nvidia-smi failure) that no verdict covers - the monitor drops an event
once its rank makes progress again - as a resolved row, so the history stays one Enter away from its log
line; and logs that cannot be read. Without one, :func:`alerts_from_snapshot` turns the snapshot itself into
alerts: every event with its host, rank and line, and every host that is down, failing, stale or cannot
read its GPUs. An event is listed once: it is "covered" by a verdict of the same kind, run, host and rank
that started no later than it. Pure: no Textual, no clock (times are the snapshot's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from trainmon_tui.analysis.alerts import Alert, Severity
from trainmon_tui.model import EventKind
from trainmon_tui.report import DEFAULT_GPU_STALE_S
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import HostState, StoreSnapshot

# Events that mean the run is failing or lost; the rest (a NaN metric, a failed nvidia-smi) deserve a look.
_CRITICAL_EVENTS = frozenset(
    {
        EventKind.OOM,
        EventKind.NCCL_TIMEOUT,
        EventKind.NCCL_ERROR,
        EventKind.TRACEBACK,
        EventKind.CHILD_FAILED,
        EventKind.KILLED,
        EventKind.XID,
    }
)
_SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
#: Newest event alerts kept in the panel; older ones stay in the logs (and the store keeps 500 per run).
DEFAULT_EVENT_ALERTS = 200


def alerts_from_snapshot(
    snapshot: StoreSnapshot,
    *,
    gpu_stale_s: float = DEFAULT_GPU_STALE_S,
    max_events: int = DEFAULT_EVENT_ALERTS,
) -> list[Alert]:
    """Host trouble first (most severe first), then log events, newest first."""
    host_alerts: list[Alert] = []
    for host in snapshot.hosts.values():
        status = host.status
        if status.state in (HostState.DOWN, HostState.ERROR):
            reason = clean_remote_text(status.reason) if status.reason else status.state.value
            host_alerts.append(
                Alert(
                    key=f"host:{host.name}",
                    severity=Severity.CRITICAL,
                    kind="host_down",
                    message=f"{host.name} down: {reason}",
                    since=status.since,
                    host=host.name,
                )
            )
        elif (
            status.state is HostState.UP
            and host.last_data_t is not None
            and snapshot.now - host.last_data_t > gpu_stale_s
        ):
            host_alerts.append(
                Alert(
                    key=f"stale:{host.name}",
                    severity=Severity.WARNING,
                    kind="host_stale",
                    message=f"{host.name}: no data for {snapshot.now - host.last_data_t:.0f}s",
                    since=host.last_data_t,
                    host=host.name,
                )
            )
        if host.gpu_status is not None:
            host_alerts.append(
                Alert(
                    key=f"gpus:{host.name}",
                    severity=Severity.WARNING,
                    kind="gpus_unreadable",
                    message=f"{host.name}: GPUs unreadable: {clean_remote_text(host.gpu_status.reason)}",
                    since=host.gpu_status.since,
                    host=host.name,
                )
            )
    host_alerts += log_alerts(snapshot)
    host_alerts.sort(key=lambda alert: (_SEVERITY_ORDER[alert.severity], -alert.since))
    return host_alerts + _event_alerts(snapshot, max_events)


def log_alerts(snapshot: StoreSnapshot) -> list[Alert]:
    """One warning per run and host whose logs cannot be read (the collector's status), with its reason."""
    alerts: list[Alert] = []
    for run in snapshot.runs.values():
        for host_name, log_status in run.log_status.items():
            alerts.append(
                Alert(
                    key=f"log:{run.name}:{host_name}",
                    severity=Severity.WARNING,
                    kind="log_unreadable",
                    message=f"{run.name} on {host_name}: {clean_remote_text(log_status.message)}",
                    since=log_status.since,
                    host=host_name,
                    run=run.name,
                )
            )
    return alerts


def _event_alerts(snapshot: StoreSnapshot, max_events: int) -> list[Alert]:
    alerts: list[Alert] = []
    for run in snapshot.runs.values():
        for entry in run.events[-max_events:]:
            event = entry.event
            text = clean_remote_text(event.text)
            rank = "" if event.rank is None else f":{event.rank}"
            alerts.append(
                Alert(
                    key=f"event:{run.name}:{entry.host}{rank}:{event.line}:{event.kind.value}",
                    severity=Severity.CRITICAL if event.kind in _CRITICAL_EVENTS else Severity.WARNING,
                    kind=event.kind.value,
                    message=text,
                    since=entry.t,
                    host=entry.host,
                    rank=event.rank,
                    run=run.name,
                    evidence=(text,),
                    log_path=entry.path,
                    log_line=event.line,
                )
            )
    alerts.sort(key=lambda alert: -alert.since)
    return alerts[:max_events]


def sort_for_panel(alerts: Sequence[Alert]) -> list[Alert]:
    """Active alerts first, most severe then newest; then resolved ones, most recently ended first: the
    order a person should read them in."""
    active = sorted(
        (alert for alert in alerts if alert.active),
        key=lambda alert: (_SEVERITY_ORDER[alert.severity], -alert.since),
    )
    resolved = sorted(
        (alert for alert in alerts if not alert.active),
        key=lambda alert: (-(alert.resolved_at or alert.since), -alert.since),
    )
    return active + resolved


def _covers(verdict: Alert, event: Alert) -> bool:
    return (
        verdict.kind == event.kind
        and verdict.run == event.run
        and verdict.host == event.host
        and verdict.rank == event.rank
        and verdict.since <= event.since
    )


def merge_alerts(
    verdicts: Sequence[Alert], snapshot: StoreSnapshot, *, max_events: int = DEFAULT_EVENT_ALERTS
) -> list[Alert]:
    """The health verdicts, then each log event no verdict covers (as a resolved row: the monitor judged it
    over), then unreadable logs; see the module docstring."""
    merged = list(verdicts)
    for event in _event_alerts(snapshot, max_events):
        if not any(_covers(verdict, event) for verdict in verdicts):
            merged.append(replace(event, resolved_at=event.since))
    keys = {alert.key for alert in merged}
    merged += [alert for alert in log_alerts(snapshot) if alert.key not in keys]
    return merged


class PanelAlerts:
    """An alerts provider for the dashboard: a health engine's verdicts merged with the event history."""

    def __init__(self, verdicts: Callable[[StoreSnapshot], Sequence[Alert]]) -> None:
        self.verdicts = verdicts

    def __call__(self, snapshot: StoreSnapshot) -> list[Alert]:
        return merge_alerts(self.verdicts(snapshot), snapshot)
