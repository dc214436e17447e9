"""Every way through the dashboard app, pressing real keys, with the alerts panel the command builds: the
health monitor's verdicts merged with the log events (PanelAlerts(HealthMonitor)).

The store is the UI scenario with real log text for every llama-7b rank (tests/ui/test_drilldown.py): rank 3's
log ends in a CUDA OOM traceback. Paths: host -> process -> rank log -> Esc -> Esc; alert -> log at its line
(and a host alert -> host screen); run -> merged log; help; quit. Nothing is stubbed: these are the screens
the product opens.
"""

from __future__ import annotations

from typing import Any

from tests.ui.scenario import (
    DOWN_HOST,
    LLAMA,
    LLAMA_RANKS,
    T_END,
    UP_HOST,
    VIT,
    Scenario,
)
from tests.ui.test_drilldown import OOM, OOM_LINE, OOM_RANK, TQDM, log_screen, rank_path, scenario_with_logs
from trainmon_tui.analysis.health import HealthMonitor
from trainmon_tui.ui.app import TrainmonApp
from trainmon_tui.ui.screens.dashboard import DashboardScreen
from trainmon_tui.ui.screens.help import HelpScreen
from trainmon_tui.ui.screens.host import HostScreen
from trainmon_tui.ui.widgets.alert_rows import PanelAlerts
from trainmon_tui.ui.widgets.process_table import ProcessTable

SIZE = (160, 48)


def make_app(scenario: Scenario, **kwargs: Any) -> TrainmonApp:
    return TrainmonApp(
        scenario.source,
        title="paths",
        clock=scenario.wall_clock,
        age_refresh_s=None,
        alerts_provider=PanelAlerts(HealthMonitor()),
        **kwargs,
    )


def dashboard(app: TrainmonApp) -> DashboardScreen:
    assert isinstance(app.screen, DashboardScreen), type(app.screen).__name__
    return app.screen


def alert_rows(app: TrainmonApp) -> list[str]:
    view = dashboard(app).alerts_view
    return [view.row_text(index).rstrip() for index in range(len(view.row_keys))]


async def test_host_then_process_then_rank_log_then_back_twice() -> None:
    scenario, _ = scenario_with_logs()
    app = make_app(scenario)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")  # the fleet's cursor starts on the first host
        await pilot.pause()
        host = app.screen
        assert isinstance(host, HostScreen) and host.host == UP_HOST
        assert isinstance(host.focused, ProcessTable)
        await pilot.press("j", "j", "enter")  # the third process: rank 2
        await pilot.pause()
        screen = log_screen(app)
        assert (screen.run_name, screen.host, screen.rank) == (LLAMA, UP_HOST, 2)
        assert screen.view is not None and screen.view.path == rank_path(2)
        assert [row.text for row in screen.log_lines.visible_rows()][-1] == TQDM[-1]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is host
        await pilot.press("tab", "escape")  # Esc goes back whichever table has the focus
        await pilot.pause()
        assert dashboard(app).fleet.has_focus


async def test_an_event_alert_shows_host_rank_time_and_opens_the_log_at_its_line() -> None:
    scenario, _ = scenario_with_logs()
    app = make_app(scenario)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        rows = alert_rows(app)
        # Verdicts first: the down host (critical), the stale GPU 3 (warning). Then the OOM of rank 3: its
        # rank went on printing after it (the scenario's records run to the end), so the monitor lists it as
        # resolved (ended when it first looked), with host, rank and the time it happened.
        assert rows[0].startswith("✖ 11:58:00 gpu-node-03 host_down host gpu-node-03 is down: connection")
        assert rows[1].startswith("▲ 11:59:15 gpu-node-01 gpu3 host_stale host gpu-node-01: no sample")
        oom_at = "11:59:00"  # T_END - 60 on the wall clock
        oom_rows = [row for row in rows if "gpu-node-01 r3 oom" in row]
        assert len(oom_rows) == 1
        assert oom_rows[0].startswith(f"✓ {oom_at} gpu-node-01 r3 oom (ended 12:00:00) run llama-7b: oom on")
        # Resolved rows are drawn dim.
        view = dashboard(app).alerts_view
        oom_index = rows.index(oom_rows[0])
        styles = [segment.style for segment in view.render_line(oom_index - view.scroll_offset.y)]
        assert any(style is not None and style.dim for style in styles)
        await pilot.press("3")
        assert view.has_focus
        view.move_cursor_to(view.row_keys[oom_index])
        await pilot.press("enter")
        await pilot.pause()
        screen = log_screen(app)
        assert screen.view is not None and screen.view.path == rank_path(OOM_RANK)
        cursor = screen.log_lines.cursor_index
        assert cursor is not None
        document = screen.log_lines.document
        assert document is not None and document.row(cursor).number == OOM_LINE
        assert document.row(cursor).tag == "oom"
        await pilot.press("escape")
        await pilot.pause()
        # A host alert opens the host screen.
        view = dashboard(app).alerts_view
        await pilot.press("home", "enter")
        await pilot.pause()
        assert isinstance(app.screen, HostScreen) and app.screen.host == DOWN_HOST


async def test_an_event_still_failing_is_one_active_alert_not_a_row_per_line() -> None:
    scenario, feeder = scenario_with_logs()
    # After its last progress rank 3 writes the OOM traceback again, to its error file, and says no more.
    err_path = "/runs/llama/rank3.err"
    feeder.feed(err_path, OOM, T_END + 5.0)
    scenario.clock.now = T_END + 10.0
    app = make_app(scenario)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        rows = alert_rows(app)
        # Both OOMs of rank 3 are one critical alert, active, dated from the first: no row per event.
        oom_rows = [row for row in rows if "gpu-node-01 r3 oom" in row]
        assert len(oom_rows) == 1
        assert oom_rows[0].startswith(
            "✖ 11:58:50 gpu-node-01 r3 oom run llama-7b: oom on gpu-node-01, rank 3 (2 times), line 14: "
            "torch.OutOfMemoryError: CUDA out of memory."
        )
        # Active: the down host, the stale GPU and this OOM.
        assert "3 alerts · 2 critical" in str(dashboard(app).query_one("#status").render())
        view = dashboard(app).alerts_view
        await pilot.press("3")
        view.move_cursor_to(view.row_keys[rows.index(oom_rows[0])])
        await pilot.press("enter")
        await pilot.pause()
        screen = log_screen(app)
        document = screen.log_lines.document
        cursor = screen.log_lines.cursor_index
        assert screen.view is not None and screen.view.path == err_path
        assert document is not None and cursor is not None
        assert document.row(cursor).number == OOM_LINE - len(TQDM)


async def test_a_run_opens_its_merged_log_and_m_does_too() -> None:
    scenario, _ = scenario_with_logs()
    app = make_app(scenario)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("2", "enter")
        await pilot.pause()
        screen = log_screen(app)
        assert screen.merged and screen.run_name == LLAMA
        ranks = {row.rank for row in screen.log_lines.visible_rows()}
        assert ranks <= set(range(LLAMA_RANKS)) and len(ranks) > 1
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("end", "m")  # the cursor on vit-base's rows: its merged log
        await pilot.pause()
        screen = log_screen(app)
        assert screen.merged and screen.run_name == VIT
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)


async def test_help_opens_over_any_screen_and_closes() -> None:
    scenario, _ = scenario_with_logs()
    app = make_app(scenario)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter", "question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.help_text())
        assert "Rank's log" in text and "Back" in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HostScreen)


async def test_q_quits_from_a_drill_down_screen_and_stops_the_source() -> None:
    scenario, _ = scenario_with_logs()
    app = make_app(scenario)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter", "enter")
        await pilot.pause()
        log_screen(app)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == 0
    assert scenario.source.stops == 1
