"""The alerts the dashboard shows when no health engine supplies them: log events and host trouble, as Alerts.

Until the health rules (issue 5) produce verdicts, the alerts panel still has to show what a person must see:
every parsed log event (OOM, NCCL timeout or error, NaN, traceback, failed child, killed process, Xid,
nvidia-smi failure) with its host, rank and line, and every host that is down, failing, stale or cannot read
its GPUs. They are built as :class:`~trainmon_tui.analysis.alerts.Alert` values so the panel draws both
sources the same way. Pure: no Textual, no clock (times are the snapshot's).
"""

from __future__ import annotations

from collections.abc import Sequence

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
    for run in snapshot.runs.values():
        for host_name, log_status in run.log_status.items():
            host_alerts.append(
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
    host_alerts.sort(key=lambda alert: (_SEVERITY_ORDER[alert.severity], -alert.since))
    return host_alerts + _event_alerts(snapshot, max_events)


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
                    log_line=event.line,
                )
            )
    alerts.sort(key=lambda alert: -alert.since)
    return alerts[:max_events]


def sort_for_panel(alerts: Sequence[Alert]) -> list[Alert]:
    """Active before resolved, then most severe, then newest: the order a person should read them in."""
    return sorted(
        alerts,
        key=lambda alert: (not alert.active, _SEVERITY_ORDER[alert.severity], -alert.since),
    )
