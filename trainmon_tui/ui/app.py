"""The Textual application: owns the snapshot source, paces repaints, routes errors, and quits cleanly.

The app never touches hosts. On mount it starts the :class:`~trainmon_tui.ui.source.SnapshotSource` in a
worker (connections come up in the background; the UI path never awaits the network). A timer at
``refresh_hz`` (1 Hz by default, at most 2 Hz) compares ``source.version`` with the version last shown and
takes a snapshot only when it moved, so thousands of ingested lines per second still mean at most one or two
repaints. The snapshot is kept as :attr:`TrainmonApp.latest_snapshot` and handed to the screen on top, and to
any screen the moment it becomes the top one, when that screen implements
:class:`~trainmon_tui.ui.source.SnapshotConsumer`.

Why 1 Hz by default: GPUs are sampled once a second and most training logs print about as often, so a
second repaint per second mostly redraws the same numbers, and a repaint of a big fleet (a snapshot, the
health rules, the panels, the chart) is the dashboard's main cost. Keys never wait for the timer: moving the
cursor or opening a screen redraws at once.

One exception to "only when the version moved": ages ("stale 42s") are measured against the snapshot's
time, so when nothing at all changes they would freeze. When no snapshot was shown for ``age_refresh_s``
(5 s by default; None turns it off) one is taken even at the same version, so a silent fleet is seen to
grow stale; a fleet that keeps changing is repainted anyway and costs no extra repaint for its ages.

Quitting stops the source within ``stop_timeout_s`` before the app exits: a hung host cannot hold the
terminal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from trainmon_tui.report import RunHints
from trainmon_tui.state.store import StoreSnapshot
from trainmon_tui.ui.format import WallClock
from trainmon_tui.ui.screens.dashboard import AlertsProvider, DashboardScreen
from trainmon_tui.ui.screens.help import HelpScreen, help_groups
from trainmon_tui.ui.source import SnapshotConsumer, SnapshotSource

_log = logging.getLogger(__name__)

MAX_REFRESH_HZ = 2.0
#: The repaint rate when none is given (read when the app is built, so a benchmark can compare rates).
DEFAULT_REFRESH_HZ = 1.0
DEFAULT_AGE_REFRESH_S = 5.0
DEFAULT_STOP_TIMEOUT_S = 5.0
_NO_HINTS: Mapping[str, RunHints] = MappingProxyType({})


class TrainmonApp(App[int]):
    """The dashboard application. ``run()`` returns the exit status (0)."""

    CSS_PATH = "app.tcss"
    TITLE = "trainmon-tui"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", show=True),
        Binding("question_mark", "help", "Help", show=True),
    ]

    def __init__(
        self,
        source: SnapshotSource,
        *,
        title: str,
        refresh_hz: float | None = None,
        alerts_provider: AlertsProvider | None = None,
        clock: WallClock | None = None,
        run_hints: Mapping[str, RunHints] = _NO_HINTS,
        age_refresh_s: float | None = DEFAULT_AGE_REFRESH_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ):
        if refresh_hz is None:
            refresh_hz = DEFAULT_REFRESH_HZ
        if not refresh_hz > 0:
            raise ValueError(f"refresh_hz must be more than 0, got {refresh_hz}")
        super().__init__()
        self.source = source
        self.title_text = title
        self.sub_title = title
        self.refresh_hz = min(refresh_hz, MAX_REFRESH_HZ)
        self.alerts_provider = alerts_provider
        self.clock = clock or WallClock()
        self.run_hints = run_hints
        self.age_refresh_s = age_refresh_s
        self.stop_timeout_s = stop_timeout_s
        self.latest_snapshot: StoreSnapshot | None = None
        self._shown_version: int | None = None
        # snapshots_taken at the last age tick: ages are refreshed only when nothing was shown since.
        self._taken_at_age_tick = -1
        self._source_stopped = False
        #: Snapshots taken from the source so far (each one is a repaint of the screen on top).
        self.snapshots_taken = 0

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen(
            title=self.title_text,
            clock=self.clock,
            alerts_provider=self.alerts_provider,
            run_hints=self.run_hints,
        )

    def on_mount(self) -> None:
        self.screen_change_signal.subscribe(self, self._on_screen_change)
        # After the first frame: starting may import the whole collection side (asyncssh), which would
        # otherwise hold the first paint back by a third of a second.
        self.call_after_refresh(self._start_source)
        self.set_interval(1.0 / self.refresh_hz, self.refresh_from_source, name="repaint")
        if self.age_refresh_s is not None:
            self.set_interval(self.age_refresh_s, self.refresh_ages_if_quiet, name="ages")
        # The first paint shows whatever the source already holds, without waiting for the timer.
        self.call_after_refresh(self.refresh_from_source)

    def _start_source(self) -> None:
        self.run_worker(self.source.start(), name="start collection", exit_on_error=False)

    # ----------------------------------------------------------------------------------------- snapshots

    def refresh_from_source(self, *, force: bool = False) -> bool:
        """Take a snapshot and show it if the source's version moved (or ``force``); True if it did."""
        version = self.source.version
        if not force and version == self._shown_version:
            return False
        snapshot = self.source.snapshot()
        self._shown_version = version
        self.latest_snapshot = snapshot
        self.snapshots_taken += 1
        self._deliver(self.screen)
        return True

    def refresh_ages(self) -> None:
        """Take a snapshot now even if the version did not move, so the ages shown catch up."""
        self.refresh_from_source(force=True)

    def refresh_ages_if_quiet(self) -> bool:
        """The age timer (every ``age_refresh_s``): refresh the ages only if no snapshot was shown since the
        last tick; True if it did. A fleet that changed meanwhile was repainted, so its ages are at most one
        interval old already; only a silent one needs the extra snapshot."""
        quiet = self.snapshots_taken == self._taken_at_age_tick
        if quiet:
            self.refresh_ages()
        self._taken_at_age_tick = self.snapshots_taken
        return quiet

    def _on_screen_change(self, screen: Screen[object]) -> None:
        # A screen that just became the top one must not wait for the next change to show something.
        self._deliver(screen)

    def _deliver(self, screen: Screen[object]) -> None:
        snapshot = self.latest_snapshot
        if snapshot is not None and isinstance(screen, SnapshotConsumer):
            screen.show_snapshot(snapshot)

    # --------------------------------------------------------------------------------------------- keys

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(help_groups(self.screen)))

    async def action_quit(self) -> None:
        await self.stop_source()
        self.exit(0)

    async def stop_source(self) -> None:
        """Stop the source once, waiting at most ``stop_timeout_s``."""
        if self._source_stopped:
            return
        self._source_stopped = True
        try:
            async with asyncio.timeout(self.stop_timeout_s):
                await self.source.stop()
        except TimeoutError:
            _log.warning("collection did not stop within %.1f s; quitting anyway", self.stop_timeout_s)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "List every key binding", self.action_help)
        if isinstance(screen, DashboardScreen):
            yield SystemCommand("Filter", "Filter hosts and alerts by name", screen.action_filter)
            yield SystemCommand(
                "Merged log", "All ranks of the run under the cursor", screen.action_merged_log
            )
            yield SystemCommand(
                "Toggle chart", "Show the chart (narrow terminals)", screen.action_toggle_chart
            )
            yield SystemCommand("Log scale", "Toggle a logarithmic y axis on the chart", screen.action_log_y)
            yield SystemCommand("Chart window", "Cycle 10 min / 1 h / all", screen.action_next_window)
            yield SystemCommand("Chart metric", "Cycle the metric shown", screen.action_next_metric)
            yield SystemCommand(
                "Collapse hosts", "Collapse or expand every host", screen.action_toggle_all_hosts
            )

    # ------------------------------------------------------------------------------------------- errors

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures end up: logged, and shown as a notification instead of a crash."""
        worker = event.worker
        if event.state is WorkerState.ERROR and worker.error is not None:
            _log.error("%s failed", worker.name, exc_info=worker.error)
            self.notify(f"{worker.name} failed: {worker.error}", severity="error", timeout=10)
