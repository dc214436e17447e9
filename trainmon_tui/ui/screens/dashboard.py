"""The main screen: fleet, runs, loss chart and alerts at a glance, and the way into the details.

Layout: at 120 columns and more, the fleet fills the left half and the right half stacks runs, chart and
alerts; below that (80x24 in a tmux pane) everything stacks in one column and the chart takes the fleet's
place on ``g``, because a chart squeezed into a few rows says nothing. Each panel is a line-drawn list, so
one repaint costs what the screen shows, however big the fleet.

Every redraw starts from a snapshot the app hands to :meth:`DashboardScreen.show_snapshot`; nothing here
talks to hosts or waits. Enter drills down: a host or GPU opens the host screen, a rank opens its log, a run
its merged log (also ``m``), an alert the log at its line. Those screens live in
:mod:`trainmon_tui.ui.screens.host` and :mod:`trainmon_tui.ui.screens.log`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from trainmon_tui.analysis.alerts import Alert, Severity
from trainmon_tui.report import RunHints
from trainmon_tui.state.store import HostState, StoreSnapshot
from trainmon_tui.ui.format import WallClock
from trainmon_tui.ui.widgets.alert_rows import alerts_from_snapshot
from trainmon_tui.ui.widgets.alerts_view import AlertsView
from trainmon_tui.ui.widgets.fleet_view import FleetView, gpu_is_stale, host_badge
from trainmon_tui.ui.widgets.loss_chart import LossChart
from trainmon_tui.ui.widgets.row_list import RowList
from trainmon_tui.ui.widgets.runs_view import RunsView

AlertsProvider = Callable[[StoreSnapshot], Sequence[Alert]]
#: The health rules judge minutes of history: a verdict this old is still news (and costs a sixth of a
#: repaint's time when taken every second; benchmarks/bench_dashboard.py).
ALERTS_EVERY_S = 5.0
#: A chart column of the shortest window (10 min) is about 6 s wide: redrawing it every second only moved
#: the same lines, and plotext was the largest cost of a repaint. Keys and resizes redraw it at once.
CHART_EVERY_S = 10.0
#: Alerts about a host or its GPUs: Enter on one opens the host screen (the others open a log).
HOST_ALERT_KINDS = frozenset(
    {"host_down", "host_stale", "gpus_unreadable", "gpu_idle", "memory_imbalance", "log_unreadable"}
)
_NO_HINTS: Mapping[str, RunHints] = MappingProxyType({})


def plural(count: int, noun: str) -> str:
    """``1 alert``, ``3 alerts``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def status_line(
    title: str,
    snapshot: StoreSnapshot | None,
    alerts: Sequence[Alert],
    filter_text: str,
    width: int | None = None,
) -> str:
    """``demo │ 2 up · 1 down │ 24 GPUs · 9 stale │ 2 runs │ 4 alerts · 3 critical``.

    When ``width`` is too narrow for all of it, the least telling parts go first: the run count, then the
    title, then the GPU count; host states, alerts and the filter stay.
    """
    # (text, how long it survives a narrow terminal: higher stays longer)
    parts: list[tuple[str, int]] = [(title or "trainmon-tui", 1)]
    if snapshot is None:
        parts.append(("waiting for data", 9))
    else:
        states: dict[str, int] = {}
        gpus = stale = 0
        for host in snapshot.hosts.values():
            state = host_badge(host, snapshot.now).state
            states[state] = states.get(state, 0) + 1
            gpus += len(host.gpus)
            stale += sum(
                1
                for gpu in host.gpus
                if gpu_is_stale(gpu, snapshot.now) or host.status.state is not HostState.UP
            )
        order = ("up", "stale", "connecting", "down")
        counts = " · ".join(f"{states[state]} {state}" for state in order if states.get(state))
        parts.append((counts or "no hosts", 9))
        parts.append((plural(gpus, "GPU") + (f" · {stale} stale" if stale else ""), 2))
        parts.append((plural(len(snapshot.runs), "run"), 0))
        active = [alert for alert in alerts if alert.active]
        critical = sum(1 for alert in active if alert.severity is Severity.CRITICAL)
        parts.append((plural(len(active), "alert") + (f" · {critical} critical" if critical else ""), 9))
    if filter_text:
        parts.append((f"filter: {filter_text}", 9))
    separator = " │ "
    kept = list(parts)
    while width is not None and len(kept) > 1 and len(separator.join(text for text, _ in kept)) > width:
        least = min(range(len(kept)), key=lambda index: kept[index][1])
        if kept[least][1] >= 9:
            break
        del kept[least]
    return separator.join(text for text, _ in kept)


def _drilldown(module: str, name: str) -> Callable[..., Screen[Any]] | None:
    """The drill-down screen class ``name`` of ``trainmon_tui.ui.screens.<module>``, imported on first use.

    Imported by name so the dashboard loads (and its tests run) whether or not those screens are installed.
    """
    try:
        found = importlib.import_module(f"trainmon_tui.ui.screens.{module}")
        screen_class: Callable[..., Screen[Any]] = getattr(found, name)
    except (ImportError, AttributeError):
        return None
    return screen_class


class DashboardScreen(Screen[None]):
    """Fleet, runs, chart and alerts; implements the SnapshotConsumer protocol."""

    # Textual declares this a plain attribute, so it cannot be annotated ClassVar here.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # noqa: RUF012

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", show=True),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("m", "merged_log", "Merged log", show=True),
        Binding("g", "toggle_chart", "Chart", show=True),
        Binding("y", "log_y", "Log y", show=False),
        Binding("w", "next_window", "Chart window", show=False),
        Binding("n", "next_metric", "Chart metric", show=False),
        Binding("1", "focus_panel('fleet')", "Fleet panel", show=False),
        Binding("2", "focus_panel('runs')", "Runs panel", show=False),
        Binding("3", "focus_panel('alerts')", "Alerts panel", show=False),
    ]

    def __init__(
        self,
        *,
        title: str = "",
        clock: WallClock | None = None,
        alerts_provider: AlertsProvider | None = None,
        run_hints: Mapping[str, RunHints] = _NO_HINTS,
    ):
        super().__init__()
        self.title_text = title
        self.clock = clock or WallClock()
        self.alerts_provider = alerts_provider
        self.run_hints = run_hints
        self.snapshot: StoreSnapshot | None = None
        self.alerts: Sequence[Alert] = ()
        self.filter_text = ""
        #: How many snapshots this screen drew (repaints), for tests and benchmarks.
        self.snapshots_shown = 0
        # Store times of the last health judgement and chart drawing (None: not yet).
        self._alerts_judged_at: float | None = None
        self._chart_drawn_at: float | None = None
        # A snapshot can arrive before the panels exist; it is kept and drawn once they do.
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static(status_line(self.title_text, None, (), ""), id="status", markup=False)
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield FleetView(id="fleet")
            with Vertical(id="right"):
                yield RunsView(id="runs", clock=self.clock, hints=self.run_hints)
                yield LossChart(id="chart")
                yield AlertsView(id="alerts", clock=self.clock)
        yield Input(placeholder="filter hosts and alerts (Enter keeps it, Esc clears)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.fleet.border_title = "Fleet"
        self.runs.border_title = "Runs"
        self.alerts_view.border_title = "Alerts"
        self.chart.border_title = "Chart"
        self.fleet.focus()
        self._ready = True
        if self.snapshot is not None:
            self.show_snapshot(self.snapshot)

    # ------------------------------------------------------------------------------------------ widgets

    @property
    def fleet(self) -> FleetView:
        return self.query_one("#fleet", FleetView)

    @property
    def runs(self) -> RunsView:
        return self.query_one("#runs", RunsView)

    @property
    def chart(self) -> LossChart:
        return self.query_one("#chart", LossChart)

    @property
    def alerts_view(self) -> AlertsView:
        return self.query_one("#alerts", AlertsView)

    # ------------------------------------------------------------------------------------------ drawing

    def show_snapshot(self, snapshot: StoreSnapshot) -> None:
        self.snapshot = snapshot
        if not self._ready:
            return
        self.snapshots_shown += 1
        judged = self._alerts_judged_at
        if judged is None or not 0 <= snapshot.now - judged < ALERTS_EVERY_S:
            provider = self.alerts_provider or alerts_from_snapshot
            self.alerts = tuple(provider(snapshot))
            self._alerts_judged_at = snapshot.now
        self.fleet.show_snapshot(snapshot)
        self.runs.show_snapshot(snapshot)
        self.alerts_view.show_alerts(snapshot, self.alerts)
        self._draw_chart(periodic=True)
        self._draw_status()

    def _draw_status(self) -> None:
        status = self.query_one("#status", Static)
        # The padding takes a cell on each side; before the first layout the width is not known yet (0).
        width = status.size.width - 2 if status.size.width else None
        # One line of fixed height: a new text never changes the layout, so none is computed for it.
        status.update(
            status_line(self.title_text, self.snapshot, self.alerts, self.filter_text, width), layout=False
        )

    def _draw_chart(self, *, periodic: bool = False) -> None:
        """Draw the chart now; ``periodic`` (new data, no one asked): only if the last drawing is old."""
        chart = self.chart
        snapshot = self.snapshot
        if snapshot is None or not chart.display or chart.size.height == 0:
            # A hidden chart costs nothing: it is drawn when it is shown.
            return
        run_name = self.runs.run_of_cursor()
        run = None if run_name is None else snapshot.runs.get(run_name)
        drawn = self._chart_drawn_at
        # A chart that had no metric to show is drawn as soon as its run has one, not up to CHART_EVERY_S
        # later (at start, the first lines come a few seconds after the first frame).
        first_lines = chart.metric is None and run is not None and bool(run.metrics)
        if periodic and not first_lines and drawn is not None and 0 <= snapshot.now - drawn < CHART_EVERY_S:
            return
        self._chart_drawn_at = snapshot.now
        chart.show(snapshot, run)

    def on_resize(self) -> None:
        self.call_after_refresh(self._draw_chart)
        self.call_after_refresh(self._draw_status)

    def on_runs_view_cursor_run_changed(self, _message: RunsView.CursorRunChanged) -> None:
        self._draw_chart()

    # ----------------------------------------------------------------------------------------- drilling

    def on_row_list_selected(self, message: RowList.Selected) -> None:
        message.stop()
        key = message.key
        if message.row_list is self.fleet and isinstance(key, tuple):
            self.open_host(str(key[1]))
        elif message.row_list is self.runs and isinstance(key, tuple):
            if key[0] == "rank":
                rank = self.runs.rank_of_cursor()
                host = rank.host if rank is not None else None
                self.open_log(run=str(key[1]), host=host, rank=key[2], path=None, line=None)
            else:
                self.open_log(run=str(key[1]), host=None, rank=None, path=None, line=None)
        elif message.row_list is self.alerts_view:
            alert = self.alerts_view.alert_of_cursor()
            if alert is not None:
                self.open_alert(alert)

    def open_alert(self, alert: Alert) -> None:
        """Where an alert's evidence is: its log line when it has one; the host screen for trouble with a host
        or its GPUs; else the log of its rank, or the merged log of its run."""
        if alert.run is not None and alert.log_line is not None:
            self.open_log(
                run=alert.run, host=alert.host, rank=alert.rank, path=alert.log_path, line=alert.log_line
            )
        elif alert.host is not None and (alert.run is None or alert.kind in HOST_ALERT_KINDS):
            self.open_host(alert.host)
        elif alert.run is not None:
            host = alert.host if alert.rank is not None else None
            self.open_log(run=alert.run, host=host, rank=alert.rank, path=alert.log_path, line=None)

    def open_host(self, host: str) -> None:
        screen_class = _drilldown("host", "HostScreen")
        if screen_class is not None:
            self.app.push_screen(screen_class(host))

    def open_log(
        self, *, run: str, host: str | None, rank: int | None, path: str | None, line: int | None
    ) -> None:
        screen_class = _drilldown("log", "LogScreen")
        if screen_class is not None:
            self.app.push_screen(screen_class(run=run, host=host, rank=rank, path=path, line=line))

    def action_merged_log(self) -> None:
        run = self.runs.run_of_cursor()
        if run is None:
            self.notify("no run to show", severity="warning")
            return
        self.open_log(run=run, host=None, rank=None, path=None, line=None)

    # ------------------------------------------------------------------------------------------ options

    def action_toggle_chart(self) -> None:
        self.toggle_class("-chart")
        self.call_after_refresh(self._draw_chart)

    def action_log_y(self) -> None:
        self.chart.log_y = not self.chart.log_y
        self._draw_chart()

    def action_next_window(self) -> None:
        self.chart.cycle_window()
        self._draw_chart()

    def action_next_metric(self) -> None:
        run_name = self.runs.run_of_cursor()
        run = None if self.snapshot is None or run_name is None else self.snapshot.runs.get(run_name)
        self.chart.cycle_metric(run)
        self._draw_chart()

    def action_focus_panel(self, panel: str) -> None:
        self.query_one(f"#{panel}", RowList).focus()

    def action_toggle_all_hosts(self) -> None:
        self.fleet.action_toggle_all()

    # ------------------------------------------------------------------------------------------- filter

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("-open")
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if not field.has_class("-open") and not self.filter_text:
            return
        field.value = ""
        self._apply_filter("")
        field.remove_class("-open")
        self.fleet.focus()

    def on_input_changed(self, message: Input.Changed) -> None:
        if message.input.id == "filter":
            self._apply_filter(message.value)

    def on_input_submitted(self, message: Input.Submitted) -> None:
        if message.input.id == "filter":
            message.input.remove_class("-open")
            self.fleet.focus()

    def _apply_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self.fleet.set_filter(self.filter_text)
        self.alerts_view.set_filter(self.filter_text)
        self._draw_status()
