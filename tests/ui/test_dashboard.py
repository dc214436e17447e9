"""Pilot tests of the dashboard on the hand-filled scenario cluster (tests/ui/scenario.py): what is shown,
how keys move and drill down, the help screen, quitting, repaint pacing and inert host text."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, ClassVar

import pytest
from textual.screen import Screen
from textual.widgets import Static

from tests.ui import scenario as sc
from trainmon_tui.analysis.alerts import Alert, Severity
from trainmon_tui.model import EventKind, GpuSample, LogEvent
from trainmon_tui.state.store import HostState, Store, StoreSnapshot
from trainmon_tui.ui.app import TrainmonApp
from trainmon_tui.ui.screens import dashboard as dashboard_module
from trainmon_tui.ui.screens.dashboard import DashboardScreen
from trainmon_tui.ui.screens.help import HelpScreen
from trainmon_tui.ui.widgets import runs_view
from trainmon_tui.ui.widgets.alerts_view import AlertsView
from trainmon_tui.ui.widgets.fleet_view import FleetView
from trainmon_tui.ui.widgets.loss_chart import LossChart
from trainmon_tui.ui.widgets.row_list import RowList
from trainmon_tui.ui.widgets.runs_view import RunsView

WIDE = (160, 48)
SMALL = (80, 24)


def make_app(scenario: sc.Scenario, **kwargs: Any) -> TrainmonApp:
    kwargs.setdefault("age_refresh_s", None)
    return TrainmonApp(scenario.source, title="scenario", clock=scenario.wall_clock, **kwargs)


def rows(view: RowList) -> list[str]:
    return [view.row_text(index) for index in range(len(view.row_keys))]


def row_of(view: RowList, key: object) -> str:
    return view.row_text(view.row_keys.index(key))


def cursor(view: RowList) -> object:
    return view.cursor_key


def dashboard(app: TrainmonApp) -> DashboardScreen:
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    return screen


class RecordingScreen(Screen[None]):
    """Stands in for the drill-down screens: remembers how it was opened and what it was shown."""

    opened: ClassVar[list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = []

    def __init__(self, kind: str, *args: Any, **kwargs: Any):
        super().__init__()
        RecordingScreen.opened.append((kind, args, kwargs))
        self.shown: list[StoreSnapshot] = []

    def show_snapshot(self, snapshot: StoreSnapshot) -> None:
        self.shown.append(snapshot)


@pytest.fixture
def recorded_drilldowns(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    RecordingScreen.opened = []

    def fake(module: str, name: str) -> Any:
        return lambda *args, **kwargs: RecordingScreen(module, *args, **kwargs)

    monkeypatch.setattr(dashboard_module, "_drilldown", fake)
    return RecordingScreen.opened


async def test_fleet_shows_badges_values_stale_idle_and_unknown() -> None:
    scenario = sc.build_scenario()
    app = make_app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        fleet = app.screen.query_one(FleetView)
        snapshot = scenario.store.snapshot(sc.T_END)
        assert row_of(fleet, ("host", sc.DOWN_HOST)).split()[1:5] == [
            sc.DOWN_HOST,
            "down:",
            "connection",
            "refused",
        ]
        assert "  up  " in row_of(fleet, ("host", sc.UP_HOST))
        # A down host's totals are unknown, not 0.
        assert "SM -" in row_of(fleet, ("host", sc.DOWN_HOST))
        # GPU 0 of node 01: the numbers of its newest sample, and rank 0 on it.
        gpu0 = snapshot.hosts[sc.UP_HOST].gpus[0].latest
        text = row_of(fleet, ("gpu", sc.UP_HOST, 0))
        assert f"{gpu0.sm_pct:.0f}%" in text
        assert f"{gpu0.gpu_temp_c:.0f}°C" in text
        assert f"{gpu0.power_w:.0f}W" in text
        assert gpu0.fb_used_mib is not None
        assert f"{gpu0.fb_used_mib / 1024:.1f}/79.6G" in text
        assert text.rstrip().endswith("r0")
        stale_host, stale_index = sc.STALE_GPU
        stale_age = sc.T_END - snapshot.hosts[stale_host].gpu(stale_index).last_t  # type: ignore[union-attr]
        assert stale_age == 45.0
        assert row_of(fleet, ("gpu", stale_host, stale_index)).rstrip().endswith(f"stale {stale_age:.0f}s")
        idle = row_of(fleet, ("gpu", *sc.IDLE_GPU)).split()
        assert idle[1] == "0%" and idle[-1] == "-"
        # The host row's heat strip marks the stale GPU with a dot and the idle GPU with the lowest block.
        strip = row_of(fleet, ("host", sc.UP_HOST)).split()[3]
        assert len(strip) == 8 and strip[sc.STALE_GPU[1]] == "·" and "·" not in strip.replace("·", "", 1)
        other_strip = row_of(fleet, ("host", sc.OTHER_UP_HOST)).split()[3]
        assert other_strip[sc.IDLE_GPU[1]] == "▁" and "▁" not in other_strip[:7]
        status = str(app.screen.query_one("#status", Static).render())
        assert "2 up · 1 down" in status and "24 GPUs · 9 stale" in status and "2 runs" in status


async def test_runs_show_progress_eta_range_and_the_lagging_rank() -> None:
    scenario = sc.build_scenario()
    app = make_app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        runs = app.screen.query_one(RunsView)
        run = scenario.store.snapshot(sc.T_END).runs[sc.LLAMA]
        lagging = run.rank(sc.LAGGING_RANK)
        assert lagging is not None and lagging.progress.step is not None
        leader_step = max(rank.progress.step or 0 for rank in run.ranks)
        # Each run: headline, metrics, a summary of its ranks and a row for each rank that lags (llama's
        # rank 5, 54 steps behind at 1 step/s); vit-base's ranks are level.
        assert runs.row_keys == (
            ("run", sc.LLAMA),
            ("metrics", sc.LLAMA),
            ("summary", sc.LLAMA),
            ("rank", sc.LLAMA, sc.LAGGING_RANK),
            ("run", sc.VIT),
            ("metrics", sc.VIT),
            ("summary", sc.VIT),
        )
        assert row_of(runs, ("summary", sc.LLAMA)).rstrip() == "    8 ranks · 1 behind  (→ all)"
        assert row_of(runs, ("summary", sc.VIT)).rstrip() == "    7 ranks · level  (→ all)"
        headline = row_of(runs, ("run", sc.LLAMA))
        assert f"{lagging.progress.step}/{sc.LLAMA_TOTAL_STEPS}" in headline
        eta = run.eta
        assert eta.eta_s is not None and eta.eta_low_s is not None and eta.eta_high_s is not None
        finish = datetime.fromtimestamp(sc.WALL_AT_END + eta.eta_s, UTC).strftime("%H:%M")
        # Every step took one second but some: the range reaches later, not earlier; in whole minutes.
        assert eta.eta_s - eta.eta_low_s < 0.5 and 90 <= eta.eta_high_s - eta.eta_s < 5400
        later = round((eta.eta_high_s - eta.eta_s) / 60)
        assert f"ETA {finish} (+{later}m)  in " in headline
        assert "step/s" in headline
        lag_row = row_of(runs, ("rank", sc.LLAMA, sc.LAGGING_RANK))
        assert f"-{leader_step - lagging.progress.step} lags" in lag_row
        metrics = row_of(runs, ("metrics", sc.LLAMA))
        assert f"loss {run.metric('loss', 0).last:.4g}" in metrics  # type: ignore[union-attr]
        assert "val_loss" in metrics
        # Right arrow on a run shows every rank of it; left arrow folds it back.
        await pilot.press("2", "end", "up", "up", "right")
        assert runs.row_keys[4:] == (
            ("run", sc.VIT),
            ("metrics", sc.VIT),
            *(("rank", sc.VIT, rank) for rank in range(sc.VIT_RANKS)),
        )
        assert "lags" not in row_of(runs, ("rank", sc.VIT, 1))
        vit_rank = row_of(runs, ("rank", sc.VIT, 0))
        progress = scenario.store.snapshot(sc.T_END).runs[sc.VIT].ranks[0].progress
        assert f"ep{progress.epoch:.0f} {progress.batch}/{sc.VIT_BATCHES_PER_EPOCH}" in vit_rank
        await pilot.press("left")
        assert runs.row_keys[4:] == (("run", sc.VIT), ("metrics", sc.VIT), ("summary", sc.VIT))
        assert cursor(runs) == ("run", sc.VIT)


async def test_alerts_list_events_and_the_down_host_most_urgent_first() -> None:
    scenario = sc.build_scenario()
    app = make_app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        alerts = rows(app.screen.query_one(AlertsView))
        assert len(alerts) == 4
        assert alerts[0].startswith("✖ 11:58:30 gpu-node-02 r2 oom torch.OutOfMemoryError")
        assert "host_down gpu-node-03 down: connection refused" in alerts[1]
        assert "nccl_timeout" in alerts[2]
        assert alerts[3].startswith("▲") and " nan " in alerts[3]


async def test_alerts_provider_replaces_the_built_in_rows() -> None:
    def provider(snapshot: StoreSnapshot) -> list[Alert]:
        return [
            Alert("stall:llama", Severity.CRITICAL, "stall", "llama-7b: no step for 10m", snapshot.now - 60)
        ]

    app = make_app(sc.build_scenario(), alerts_provider=provider)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        assert rows(app.screen.query_one(AlertsView)) == ["✖ 11:59:00 stall llama-7b: no step for 10m"]


async def test_keys_move_collapse_and_switch_panels() -> None:
    app = make_app(sc.build_scenario())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        fleet = app.screen.query_one(FleetView)
        assert fleet.has_focus
        assert cursor(fleet) == ("host", sc.UP_HOST)
        await pilot.press("j", "down")
        assert cursor(fleet) == ("gpu", sc.UP_HOST, 1)
        await pilot.press("k")
        assert cursor(fleet) == ("gpu", sc.UP_HOST, 0)
        await pilot.press("h")  # collapse the host the cursor is in
        assert cursor(fleet) == ("host", sc.UP_HOST)
        assert len(fleet.row_keys) == 3 * 9 - 8
        await pilot.press("l")
        assert len(fleet.row_keys) == 27
        await pilot.press("z")
        assert fleet.row_keys == tuple(("host", host) for host in sc.HOSTS)
        await pilot.press("end")
        assert cursor(fleet) == ("host", sc.DOWN_HOST)
        await pilot.press("tab")
        assert app.screen.query_one(RunsView).has_focus
        await pilot.press("3")
        assert app.screen.query_one(AlertsView).has_focus


async def test_enter_drills_down_to_host_rank_merged_log_and_alert_line(
    recorded_drilldowns: list[tuple[str, tuple[Any, ...], dict[str, Any]]],
) -> None:
    app = make_app(sc.build_scenario())
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        await pilot.press("j", "enter")  # a GPU row of node 01 opens its host
        assert recorded_drilldowns.pop() == ("host", (sc.UP_HOST,), {})
        # The drill-down screen received the latest snapshot as soon as it was on top.
        assert isinstance(app.screen, RecordingScreen) and app.screen.shown == [app.latest_snapshot]
        await app.pop_screen()
        await pilot.press("2")  # runs panel: run row, metrics row, summary, then the lagging rank
        await pilot.press("j", "j", "j", "enter")
        expected_rank = {
            "run": sc.LLAMA,
            "host": sc.UP_HOST,
            "rank": sc.LAGGING_RANK,
            "path": None,
            "line": None,
        }
        assert recorded_drilldowns.pop() == ("log", (), expected_rank)
        await app.pop_screen()
        await pilot.press("m")
        merged = {"run": sc.LLAMA, "host": None, "rank": None, "path": None, "line": None}
        assert recorded_drilldowns.pop() == ("log", (), merged)
        await app.pop_screen()
        await pilot.press("3", "enter")  # the newest critical alert: the OOM at its log line
        oom = {
            "run": sc.VIT,
            "host": sc.OTHER_UP_HOST,
            "rank": sc.OOM_RANK,
            "path": None,
            "line": sc.OOM_LINE,
        }
        assert recorded_drilldowns.pop() == ("log", (), oom)
        await app.pop_screen()
        await pilot.press("j", "enter")  # the down host opens the host screen
        assert recorded_drilldowns.pop() == ("host", (sc.DOWN_HOST,), {})


async def test_help_lists_every_binding_and_closes() -> None:
    app = make_app(sc.build_scenario())
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.help_text())
        for widget_class in (TrainmonApp, DashboardScreen, FleetView, RunsView, RowList):
            for binding in widget_class.BINDINGS:
                assert not isinstance(binding, tuple)
                description = binding.description
                assert description and description in text, description
        for keys in ("↑ / k", "↓ / j", "q / ^q", "?", "/", "m", "⏎", "← / h", "→ / l", "esc", "tab"):
            assert f"  {keys} " in text, keys
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_q_stops_the_source_and_quits() -> None:
    scenario = sc.build_scenario()
    app = make_app(scenario)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert scenario.source.starts == 1
        await pilot.press("q")
        await pilot.pause()
    assert scenario.source.stops == 1
    assert app.return_code == 0


async def test_snapshots_are_taken_and_shown_only_when_the_version_moves() -> None:
    scenario = sc.build_scenario()
    app = make_app(scenario, refresh_hz=2.0)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        screen = dashboard(app)
        taken, shown = scenario.source.snapshots, screen.snapshots_shown
        assert shown >= 1 and app.latest_snapshot is not None
        for _ in range(5):
            assert app.refresh_from_source() is False
        scenario.clock.advance(1.0)
        assert app.refresh_from_source() is False  # time passing alone is not a change
        assert (scenario.source.snapshots, screen.snapshots_shown) == (taken, shown)
        scenario.store.apply_gpu(sc.UP_HOST, GpuSample(gpu=0, sm_pct=12.0), scenario.clock())
        assert app.refresh_from_source() is True
        assert (scenario.source.snapshots, screen.snapshots_shown) == (taken + 1, shown + 1)
        assert app.latest_snapshot.version == scenario.store.version
        assert " 12% " in row_of(screen.fleet, ("gpu", sc.UP_HOST, 0))
        # Many changes between two ticks still make one repaint.
        for value in range(50):
            scenario.store.apply_gpu(sc.UP_HOST, GpuSample(gpu=1, sm_pct=float(value)), scenario.clock())
        assert app.refresh_from_source() is True
        assert app.refresh_from_source() is False
        assert screen.snapshots_shown == shown + 2


async def test_ages_keep_counting_when_nothing_changes() -> None:
    scenario = sc.build_scenario()
    app = make_app(scenario, age_refresh_s=5.0)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        fleet = dashboard(app).fleet
        assert row_of(fleet, ("gpu", *sc.STALE_GPU)).rstrip().endswith("stale 45s")
        scenario.clock.advance(60.0)
        app.refresh_ages()
        assert row_of(fleet, ("gpu", *sc.STALE_GPU)).rstrip().endswith("stale 105s")


async def test_escape_sequences_from_a_log_never_reach_the_terminal() -> None:
    scenario = sc.build_scenario()
    hostile = "\x1b]0;pwned-title\x07NCCL error \x1b[2J\x1b[31mcleared\x1b[0m"
    scenario.store.apply_event(
        sc.LLAMA, sc.UP_HOST, LogEvent(3_001, 0, EventKind.NCCL_ERROR, hostile), sc.T_END
    )
    scenario.store.set_host_status(sc.DOWN_HOST, HostState.DOWN, sc.T_END, "refused \x1b[2J\x1b]0;x\x07now")
    app = make_app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        screen = dashboard(app)
        alerts = screen.alerts_view
        texts = rows(alerts)
        assert any("NCCL error cleared" in text for text in texts)
        assert all("pwned" not in text for text in texts)
        for view in (alerts, screen.fleet):
            for y in range(view.size.height):
                for segment in view.render_line(y):
                    assert "\x1b" not in segment.text and "\x07" not in segment.text
        assert "down: refused now" in row_of(screen.fleet, ("host", sc.DOWN_HOST))


async def test_filter_narrows_hosts_and_alerts_and_escape_clears_it() -> None:
    app = make_app(sc.build_scenario())
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        screen = dashboard(app)
        await pilot.press("slash", "0", "2", "enter")
        assert {key[1] for key in screen.fleet.row_keys} == {sc.OTHER_UP_HOST}  # type: ignore[index]
        assert [row.split()[4] for row in rows(screen.alerts_view)] == ["oom"]
        assert screen.fleet.has_focus
        await pilot.press("escape")
        assert len(screen.fleet.row_keys) == 27
        assert len(screen.alerts_view.row_keys) == 4


async def test_chart_draws_train_and_val_and_follows_the_options() -> None:
    app = make_app(sc.build_scenario())
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        chart = app.screen.query_one(LossChart)
        assert [series.label for series in chart.drawn] == [
            "loss",
            "loss (ema)",
            "val_loss",
            "val_loss (ema)",
        ]
        raw = chart.drawn[0]
        # 10 minutes of one value every 10 s: 61 points, x in seconds before now, labelled in minutes.
        assert len(raw.xs) == 61 and raw.xs[0] == -600.0 and raw.xs[-1] == 0.0
        assert chart.x_labels == ["10m ago", "8m ago", "6m ago", "4m ago", "2m ago", "now"]
        assert chart.border_title == "loss · llama-7b · 10m"
        await pilot.press("w")
        # 30 minutes of values 10 s apart (181) are more than two per column of the chart: they are averaged
        # in 20 s buckets (91 points, 20 s apart).
        assert chart.window_label == "1h" and 2 * chart.size.width < 181
        hour = chart.drawn[0].xs
        assert len(hour) == 91 and {b - a for a, b in pairwise(hour)} == {20.0}
        # The scenario holds 30 minutes: the axis spans what is drawn, not the window.
        assert chart.x_labels == ["30m ago", "20m ago", "10m ago", "now"]
        await pilot.press("y")
        assert chart.log_y and chart.border_title == "loss · llama-7b · 1h · log y"
        await pilot.press("n")
        assert chart.metric == "lr" and [series.label for series in chart.drawn] == ["lr", "lr (ema)"]
        await pilot.press("2", "j", "j", "j", "j", "j", "j", "j", "j", "j", "j")  # down into vit-base
        assert chart.border_title is not None and "vit-base" in chart.border_title


async def test_narrow_terminal_swaps_the_fleet_for_the_chart_on_g() -> None:
    app = make_app(sc.build_scenario())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        screen = dashboard(app)
        assert screen.has_class("-narrow")
        assert not screen.chart.display or screen.chart.size.height == 0
        await pilot.press("g")
        await pilot.pause()
        assert screen.chart.size.height > 5 and screen.fleet.size.height == 0
        assert screen.chart.drawn


async def test_a_fleet_of_64_hosts_starts_collapsed_and_stays_navigable() -> None:
    store = Store()
    clock = sc.FakeClock(100.0)
    for host_index in range(64):
        for gpu in range(8):
            store.apply_gpu(f"node-{host_index:02d}", GpuSample(gpu=gpu, sm_pct=gpu * 100 / 7), 100.0)
    source = sc.ScenarioSource(store, clock)
    app = TrainmonApp(source, title="big", clock=sc.build_scenario().wall_clock, age_refresh_s=None)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        fleet = dashboard(app).fleet
        assert len(fleet.row_keys) == 64
        assert "▁▂▃▄▅▆▇█" in row_of(fleet, ("host", "node-00"))
        await pilot.press("end", "l")
        assert cursor(fleet) == ("host", "node-63") and len(fleet.row_keys) == 72
        await pilot.press("j")
        assert cursor(fleet) == ("gpu", "node-63", 0)


async def test_a_rank_that_stops_lagging_keeps_its_row_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    # A rank hovering at the lag threshold would make the runs panel (and the chart beside it) change
    # height every few seconds: its row stays for LAG_HOLD_S after it last lagged, then goes.
    scenario = sc.build_scenario()
    app = make_app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        runs = app.screen.query_one(RunsView)
        lag_row = ("rank", sc.LLAMA, sc.LAGGING_RANK)
        runs.show_snapshot(scenario.store.snapshot(sc.T_END))
        assert lag_row in runs.row_keys
        # From now on nothing lags by the panel's measure.
        monkeypatch.setattr(runs_view, "LAG_SHOWN_S", 1e9)
        runs.show_snapshot(scenario.store.snapshot(sc.T_END + runs_view.LAG_HOLD_S - 1.0))
        assert lag_row in runs.row_keys
        assert row_of(runs, ("summary", sc.LLAMA)).rstrip() == "    8 ranks · level  (→ all)"
        runs.show_snapshot(scenario.store.snapshot(sc.T_END + runs_view.LAG_HOLD_S + 1.0))
        assert lag_row not in runs.row_keys
