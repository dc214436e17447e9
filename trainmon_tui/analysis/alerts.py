"""The alert value type: what the health rules conclude, shown in the dashboard's alert panel and in reports.

An alert is raised once when its condition starts and carries the evidence for it (numbers, the log line);
it is marked resolved, not deleted, when the condition clears. ``key`` identifies one condition (rule and
subject) across evaluations, so the same stall is one alert for as long as it lasts. Every text in an alert
is already sanitised (control sequences made inert, secrets masked) by whoever builds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Severity(StrEnum):
    """How urgently a person should look: ``critical`` (the run is failing or lost), ``warning``, ``info``."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Alert:
    """One health verdict about one subject (a host, a GPU, a rank or a run)."""

    key: str
    severity: Severity
    kind: str
    message: str
    # Store clock (monotonic seconds) when the condition started, and when it cleared (None: still on).
    since: float
    host: str | None = None
    gpu: int | None = None
    rank: int | None = None
    run: str | None = None
    resolved_at: float | None = None
    # The numbers or log lines that show it, one short sanitised line each.
    evidence: tuple[str, ...] = ()
    # Where in which log the evidence is, when it is a log line (1-based line number in the file as read).
    log_path: str | None = None
    log_line: int | None = None

    @property
    def active(self) -> bool:
        return self.resolved_at is None


class AlertKind(StrEnum):
    """What an alert is about; the health rules raise these, user patterns raise ``pattern``."""

    STALL = "stall"
    GPU_IDLE = "gpu_idle"
    PROCESS_DIED = "process_died"
    STRAGGLER = "straggler"
    NAN = "nan"
    OOM = "oom"
    NCCL_TIMEOUT = "nccl_timeout"
    NCCL_ERROR = "nccl_error"
    TRACEBACK = "traceback"
    CHILD_FAILED = "child_failed"
    KILLED = "killed"
    XID = "xid"
    LOSS_SPIKE = "loss_spike"
    PLATEAU = "plateau"
    THROUGHPUT_LOW = "throughput_low"
    MEMORY_IMBALANCE = "memory_imbalance"
    HOST_DOWN = "host_down"
    HOST_STALE = "host_stale"
    PATTERN = "pattern"


# Why each kind has the severity it has:
# - critical: the run is failing or its results are lost unless someone acts: it stopped (stall), a rank or a
#   host is gone (process_died, host_down), or the log says it crashed or broke (oom, nccl_*, traceback,
#   child_failed, killed, nan, xid - a NaN loss makes every later step worthless).
# - warning: the run goes on but wastes time or money, or may fail soon: gpu_idle, straggler, loss_spike,
#   throughput_low, memory_imbalance, host_stale (we cannot see it, which is not yet proof it is down), and
#   user patterns unless they say otherwise.
# - info: worth knowing, not acting on at once: plateau (a metric that stopped improving may be the end of
#   useful training, or only a slow phase).
DEFAULT_SEVERITY: Mapping[AlertKind, Severity] = MappingProxyType(
    {
        AlertKind.STALL: Severity.CRITICAL,
        AlertKind.GPU_IDLE: Severity.WARNING,
        AlertKind.PROCESS_DIED: Severity.CRITICAL,
        AlertKind.STRAGGLER: Severity.WARNING,
        AlertKind.NAN: Severity.CRITICAL,
        AlertKind.OOM: Severity.CRITICAL,
        AlertKind.NCCL_TIMEOUT: Severity.CRITICAL,
        AlertKind.NCCL_ERROR: Severity.CRITICAL,
        AlertKind.TRACEBACK: Severity.CRITICAL,
        AlertKind.CHILD_FAILED: Severity.CRITICAL,
        AlertKind.KILLED: Severity.CRITICAL,
        AlertKind.XID: Severity.CRITICAL,
        AlertKind.LOSS_SPIKE: Severity.WARNING,
        AlertKind.PLATEAU: Severity.INFO,
        AlertKind.THROUGHPUT_LOW: Severity.WARNING,
        AlertKind.MEMORY_IMBALANCE: Severity.WARNING,
        AlertKind.HOST_DOWN: Severity.CRITICAL,
        AlertKind.HOST_STALE: Severity.WARNING,
        AlertKind.PATTERN: Severity.WARNING,
    }
)

# Most urgent first: how alert lists are ordered.
SEVERITY_ORDER: Mapping[Severity, int] = MappingProxyType(
    {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
)
