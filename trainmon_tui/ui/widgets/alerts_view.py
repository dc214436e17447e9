"""The alerts panel: one row per alert (severity, clock time, host, rank, kind, message), most urgent first.

Alerts come from the health engine when the app has one, else from
:func:`~trainmon_tui.ui.widgets.alert_rows.alerts_from_snapshot` (log events and host trouble). Enter on an
alert opens the log at its line (the dashboard does the opening). Messages came from hosts: they are drawn
as plain text (never parsed as markup) and passed through the sanitiser once more here, so a log line
carrying a terminal escape sequence cannot reach the terminal whoever built the alert.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text

from trainmon_tui.analysis.alerts import Alert, Severity
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import StoreSnapshot
from trainmon_tui.ui.format import WallClock, shorten
from trainmon_tui.ui.widgets.alert_rows import sort_for_panel
from trainmon_tui.ui.widgets.row_list import RowList

_ICONS = {Severity.CRITICAL: "✖", Severity.WARNING: "▲", Severity.INFO: "•"}


class AlertsView(RowList):
    """Alerts, active before resolved, then by severity and time."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "alerts-view--critical",
        "alerts-view--warning",
        "alerts-view--info",
        "alerts-view--resolved",
        "alerts-view--dim",
    }

    def __init__(
        self,
        *,
        clock: WallClock | None = None,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ):
        super().__init__(name=name, id=id, classes=classes)
        self.clock = clock or WallClock()
        self.snapshot: StoreSnapshot | None = None
        self.alerts: dict[str, Alert] = {}
        self.text_filter = ""

    def show_alerts(self, snapshot: StoreSnapshot, alerts: Sequence[Alert]) -> None:
        self.snapshot = snapshot
        ordered = sort_for_panel(alerts)
        self.alerts = {alert.key: alert for alert in ordered}
        self._rebuild()

    def set_filter(self, text: str) -> None:
        """Show only alerts whose host, run, kind or message contains ``text`` (any case)."""
        self.text_filter = text.strip().lower()
        self._rebuild()

    def _matches(self, alert: Alert) -> bool:
        if not self.text_filter:
            return True
        fields = (alert.host or "", alert.run or "", alert.kind, alert.message)
        return any(self.text_filter in field.lower() for field in fields)

    def _rebuild(self) -> None:
        self.set_rows([key for key, alert in self.alerts.items() if self._matches(alert)])

    def alert_of_cursor(self) -> Alert | None:
        key = self.cursor_key
        return None if key is None else self.alerts.get(str(key))

    def render_row(self, key: Hashable, width: int) -> Text:
        alert = self.alerts.get(str(key))
        if alert is None or self.snapshot is None:
            return Text()
        return alert_text(
            alert,
            self.snapshot.now,
            self.clock,
            style=self.component_style(
                "alerts-view--resolved" if not alert.active else f"alerts-view--{alert.severity.value}"
            ),
            dim=self.component_style("alerts-view--dim"),
        )


def alert_where(alert: Alert) -> str:
    """``node-2 gpu7 r4``: the host (else the run), the GPU and the rank an alert is about."""
    where = alert.host or alert.run or ""
    if alert.gpu is not None:
        where += f" gpu{alert.gpu}"
    if alert.rank is not None:
        where += f" r{alert.rank}"
    return where.strip()


def alert_text(alert: Alert, now: float, clock: WallClock, *, style: Style, dim: Style) -> Text:
    """One panel row: ``✖ 11:58:30 gpu-node-02 r2 oom torch.OutOfMemoryError ...``. A resolved alert starts
    with a check mark, is drawn dim and says when it ended (when that is not when it started: a past log
    event that the health rules no longer count)."""
    text = Text(no_wrap=True)
    text.append("✓ " if not alert.active else f"{_ICONS[alert.severity]} ", style)
    text.append(f"{clock.fmt_clock(clock.wall_time(now, alert.since), seconds=True)} ", dim)
    where = alert_where(alert)
    if where:
        text.append(f"{shorten(where, 22)} ", dim)
    text.append(f"{alert.kind} ", style)
    if alert.resolved_at is not None and alert.resolved_at > alert.since:
        ended = clock.fmt_clock(clock.wall_time(now, alert.resolved_at), seconds=True)
        text.append(f"(ended {ended}) ", dim)
    text.append(clean_remote_text(alert.message), style if not alert.active else Style())
    return text
