"""The alert value type: what the health rules conclude, shown in the dashboard's alert panel and in reports.

An alert is raised once when its condition starts and carries the evidence for it (numbers, the log line);
it is marked resolved, not deleted, when the condition clears. ``key`` identifies one condition (rule and
subject) across evaluations, so the same stall is one alert for as long as it lasts. Every text in an alert
is already sanitised (control sequences made inert, secrets masked) by whoever builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
