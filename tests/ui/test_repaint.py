"""Repainting only what changed: the app's pacing, and row lists that redraw only the lines that differ.

The dashboard's cost is its repaints (issue 4: 64 hosts x 8 GPUs within 8 % of a core), so these tests pin
down what a repaint does: which lines are rendered again when one GPU changes or the cursor moves, when a
big fleet collapses, and when the age timer adds a snapshot. They count work (lines rendered, snapshots
taken); they never time it (timings live in benchmarks/bench_dashboard.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.dom import DOMNode
from textual.geometry import Region

from tests.ui import scenario as sc
from trainmon_tui.analysis.alerts import Alert
from trainmon_tui.model import GpuSample, LogRecord
from trainmon_tui.state.store import HostState, RunSnapshot, Store, StoreSnapshot
from trainmon_tui.ui.app import DEFAULT_REFRESH_HZ, MAX_REFRESH_HZ, TrainmonApp
from trainmon_tui.ui.screens.dashboard import ALERTS_EVERY_S, CHART_EVERY_S, DashboardScreen
from trainmon_tui.ui.widgets.fleet_view import AUTO_COLLAPSE_ROWS, FleetView
from trainmon_tui.ui.widgets.loss_chart import metric_series
from trainmon_tui.ui.widgets.row_list import appended_row_strip

WIDE = (160, 48)


def _app(scenario: sc.Scenario, **kwargs: float | None) -> TrainmonApp:
    kwargs.setdefault("age_refresh_s", None)
    return TrainmonApp(scenario.source, title="scenario", clock=scenario.wall_clock, **kwargs)  # type: ignore[arg-type]


def _fleet(app: TrainmonApp) -> FleetView:
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    return screen.fleet


def _drawn(fleet: FleetView, key: object) -> str:
    """The row as it is on screen now (the line the widget hands Textual), not as it would render."""
    index = fleet.row_keys.index(key) - fleet.scroll_offset.y
    return fleet.render_line(index).text


def test_the_normal_repaint_rate_is_one_hertz_and_never_more_than_two() -> None:
    scenario = sc.build_scenario()
    assert _app(scenario).refresh_hz == DEFAULT_REFRESH_HZ == 1.0
    assert _app(scenario, refresh_hz=10.0).refresh_hz == MAX_REFRESH_HZ == 2.0


async def test_a_change_to_one_gpu_repaints_its_row_and_its_host_row_only() -> None:
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        fleet = _fleet(app)
        visible = min(fleet.size.height, len(fleet.row_keys))
        assert visible > 10
        before = fleet.lines_rendered
        # Same store time: nothing but GPU 0 of the first host (and so its host's summary) changes.
        scenario.store.apply_gpu(sc.UP_HOST, GpuSample(gpu=0, sm_pct=7.0), scenario.clock())
        assert app.refresh_from_source() is True
        await pilot.pause()
        assert fleet.lines_rendered - before == 2
        assert "   7% " in _drawn(fleet, ("gpu", sc.UP_HOST, 0))
        assert "   7% " not in _drawn(fleet, ("gpu", sc.UP_HOST, 1))
        # A snapshot with nothing new in the fleet repaints none of its lines.
        before = fleet.lines_rendered
        scenario.store.set_host_status(sc.DOWN_HOST, HostState.DOWN, sc.T_END, sc.DOWN_REASON)
        app.refresh_from_source(force=True)
        await pilot.pause()
        assert fleet.lines_rendered == before


async def test_moving_the_cursor_renders_the_two_rows_it_leaves_and_enters() -> None:
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        fleet = _fleet(app)
        first, second = fleet.row_keys[0], fleet.row_keys[1]
        before = fleet.lines_rendered
        await pilot.press("j")
        await pilot.pause()
        assert fleet.cursor_key == second
        assert fleet.lines_rendered - before == 2
        # The cursor's highlight moved with it: the two lines differ in style, not in text.
        cursor_style = fleet.get_component_rich_style("row-list--cursor")
        assert any(
            segment.style and segment.style.bgcolor == cursor_style.bgcolor for segment in _line(fleet, 1)
        )
        assert not any(
            segment.style and segment.style.bgcolor == cursor_style.bgcolor for segment in _line(fleet, 0)
        )
        assert _drawn(fleet, first).startswith("▾ gpu-node-01")


def _line(fleet: FleetView, y: int) -> list:  # type: ignore[type-arg]
    return list(fleet.render_line(y))


async def test_a_big_fleet_collapses_once_its_gpus_are_known_and_then_follows_the_person() -> None:
    store = Store()
    clock = sc.FakeClock(100.0)
    hosts = [f"node-{index:02d}" for index in range(64)]
    for host in hosts:
        store.set_host_status(host, HostState.CONNECTING, 100.0)  # known from the config, no GPU yet
    source = sc.ScenarioSource(store, clock)
    app = TrainmonApp(source, title="big", clock=sc.build_scenario().wall_clock, age_refresh_s=None)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        fleet = _fleet(app)
        assert len(fleet.row_keys) == 64 <= AUTO_COLLAPSE_ROWS and not fleet.collapsed
        for host in hosts:
            store.set_host_status(host, HostState.UP, 101.0)
            for gpu in range(8):
                store.apply_gpu(host, GpuSample(gpu=gpu, sm_pct=90.0), 101.0)
        app.refresh_from_source()
        await pilot.pause()
        assert len(fleet.row_keys) == 64 and fleet.collapsed == set(hosts)
        await pilot.press("l")  # the person opens the first host: later snapshots leave it open
        store.apply_gpu(hosts[0], GpuSample(gpu=0, sm_pct=50.0), 102.0)
        app.refresh_from_source()
        await pilot.pause()
        assert len(fleet.row_keys) == 72 and hosts[0] not in fleet.collapsed


async def test_the_age_timer_adds_a_snapshot_only_when_nothing_was_shown_since_its_last_tick() -> None:
    scenario = sc.build_scenario()
    app = _app(scenario, age_refresh_s=5.0)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        taken = app.snapshots_taken
        assert app.refresh_ages_if_quiet() is False  # the first paint was a snapshot
        assert app.refresh_ages_if_quiet() is True and app.snapshots_taken == taken + 1
        scenario.store.apply_gpu(sc.UP_HOST, GpuSample(gpu=1, sm_pct=50.0), scenario.clock())
        assert app.refresh_from_source() is True
        assert app.refresh_ages_if_quiet() is False and app.snapshots_taken == taken + 2
        scenario.clock.advance(30.0)
        assert app.refresh_ages_if_quiet() is True
        await pilot.pause()
        # 45 s at the end of the scenario, and 30 s later.
        assert _drawn(_fleet(app), ("gpu", *sc.STALE_GPU)).rstrip().endswith("stale 75s")


async def test_health_is_judged_every_few_seconds_and_the_chart_redrawn_when_old_or_asked() -> None:
    scenario = sc.build_scenario()
    judged: list[float] = []

    def provider(snapshot: StoreSnapshot) -> list[Alert]:
        judged.append(snapshot.now)
        return []

    app = _app(scenario, alerts_provider=provider)  # type: ignore[arg-type]
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        drawn: list[float] = []
        original = screen.chart.show

        def counting_show(snapshot: StoreSnapshot | None, run: RunSnapshot | None) -> None:
            drawn.append(-1.0 if snapshot is None else snapshot.now)
            original(snapshot, run)

        screen.chart.show = counting_show  # type: ignore[method-assign]
        first = judged[-1]
        for _ in range(11):
            scenario.clock.advance(1.0)
            screen.show_snapshot(scenario.store.snapshot(scenario.clock()))
        # New data every second: health judged every ALERTS_EVERY_S, the chart redrawn every CHART_EVERY_S.
        assert [t - first for t in judged[-3:]] == [0.0, ALERTS_EVERY_S, 2 * ALERTS_EVERY_S]
        assert len(drawn) == 1 and drawn[0] - first == CHART_EVERY_S
        # A key that changes the chart draws it at once.
        await pilot.press("w")
        await pilot.pause()
        assert len(drawn) == 2


async def test_the_chart_is_built_again_for_new_data_or_a_new_size_not_for_a_repaint_around_it() -> None:
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        chart = screen.chart
        assert chart.drawn and chart.builds >= 1
        builds = chart.builds
        # A repaint of the whole screen and a layout pass, with the same data: the built chart is reused.
        screen.refresh(layout=True)
        chart.refresh()
        await pilot.pause()
        assert chart.builds == builds
        # New data (a key that changes the window): built once more.
        await pilot.press("w")
        await pilot.pause()
        assert chart.builds == builds + 1 and chart.border_title is not None and "1h" in chart.border_title
        # A new size: built again for it.
        await pilot.resize_terminal(140, 40)
        await pilot.pause()
        await pilot.pause()
        assert chart.builds > builds + 1


async def test_a_log_y_chart_survives_being_built_again_for_a_new_size_or_theme() -> None:
    # Plotext's build takes the logarithm of the data it was given in place: a second build of the same
    # data (a resize, a theme change) raised IndexError or "math domain error" and took the app down.
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        chart = screen.chart
        await pilot.press("y")
        await pilot.pause()
        assert chart.log_y and chart.drawn
        builds = chart.builds
        await pilot.resize_terminal(WIDE[0] - 10, WIDE[1] - 4)
        await pilot.pause()
        await pilot.pause()
        app.theme = "textual-light" if app.theme != "textual-light" else "textual-dark"
        await pilot.pause()
        assert chart.builds >= builds + 2
        assert app.is_running and chart.drawn
        text = chart.render()
        # The lines are still drawn (braille dots), on the new size.
        assert isinstance(text, Text) and any("\u2801" <= char <= "\u28ff" for char in text.plain)


async def test_the_chart_asks_for_at_most_two_points_per_column() -> None:
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=(40, 24)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        chart = screen.chart
        await pilot.press("w", "w")
        await pilot.pause()
        assert chart.window_label == "all" and chart.metric is not None
        snapshot, run_name = screen.snapshot, screen.runs.run_of_cursor()
        assert snapshot is not None and run_name is not None
        # The whole run holds more points than a 40-column chart shows (two per braille cell) ...
        whole = metric_series(
            snapshot, snapshot.runs[run_name], chart.metric, None, smooth=False, log_y=False
        )
        assert whole is not None and len(whole.xs) > 2 * chart.size.width
        # ... so the lines drawn hold two per column at most.
        assert chart.drawn and all(len(series.xs) <= 2 * chart.size.width for series in chart.drawn)


async def test_kept_row_styles_follow_a_change_of_theme() -> None:
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        fleet = _fleet(app)
        dark = fleet.component_style("fleet-view--host")
        assert dark == fleet.get_component_rich_style("fleet-view--host")
        app.theme = "textual-light"
        await pilot.pause()
        light = fleet.component_style("fleet-view--host")
        assert light != dark and light == fleet.get_component_rich_style("fleet-view--host")


async def test_a_drawing_pass_reads_each_widgets_style_once_and_lines_follow_a_change_of_theme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Textual works out a widget's style from all its ancestors on every read; a pass over tens of lines
    # must not (ui/widgets/pass_style.py).
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        fleet = _fleet(app)
        height = fleet.size.height
        reads: list[object] = []
        original = DOMNode.rich_style

        def counted(node: DOMNode) -> Style:
            reads.append(node)
            style: Style = original.__get__(node)
            return style

        monkeypatch.setattr(DOMNode, "rich_style", property(counted))
        fleet.refresh()
        lines = fleet.render_lines(Region(0, 0, fleet.size.width, height))
        assert len(lines) == height and reads.count(fleet) == 1
        monkeypatch.undo()
        dark_background = fleet.rich_style.bgcolor
        backgrounds = {segment.style.bgcolor for segment in lines[0] if segment.style is not None}
        assert backgrounds == {dark_background}
        # A new theme: the next pass draws on the new background.
        app.theme = "textual-light"
        await pilot.pause()
        light_background = fleet.rich_style.bgcolor
        assert light_background != dark_background
        fleet.refresh()
        lines = fleet.render_lines(Region(0, 0, fleet.size.width, height))
        assert {segment.style.bgcolor for segment in lines[0] if segment.style is not None} == {
            light_background
        }


# ----------------------------------------------------------------------------- the lines of appended rows

_PIECE_STYLES = [Style(color="red"), Style(bold=True, bgcolor="blue"), Style(dim=True), Style.null()]


@st.composite
def _appended_rows(draw: st.DrawFn) -> Text:
    """A row built the way the panels build theirs: pieces appended with a style or none."""
    text = Text(no_wrap=True)
    for piece in draw(st.lists(st.text(alphabet="ab ·▁█▸…界\x07", max_size=6), max_size=8)):
        text.append(piece, draw(st.sampled_from([None, *_PIECE_STYLES])))
    if draw(st.booleans()):
        # Rows the shortcut must leave to the general way: an overlapping style, a style over the whole row.
        if draw(st.booleans()):
            text.stylize(Style(italic=True), 0, draw(st.integers(0, 12)))
        else:
            text.style = Style(underline=True)
    return text


_BASE_STYLES = [Style(), Style(bgcolor="#102030", color="white")]


@settings(max_examples=300, deadline=None)
@given(_appended_rows(), st.integers(0, 50), st.sampled_from(_BASE_STYLES))
def test_an_appended_rows_line_is_the_line_rich_would_make(text: Text, width: int, base: Style) -> None:
    strip = appended_row_strip(text, width, base)
    shown = text.copy()
    shown.truncate(width, overflow="ellipsis", pad=True)
    general = list(Segment.apply_style(shown.render(Console()), base))
    if strip is None:
        ends = [span.end for span in text.spans if span.end > span.start]
        overlapping = any(span.start < max(ends[:i], default=0) for i, span in enumerate(text.spans))
        assert text.style or cell_len(text.plain) > width or overlapping
        return
    assert list(strip) == general
    assert strip.cell_length == width


async def test_every_panel_row_on_the_dashboard_is_drawn_as_rich_would_draw_it() -> None:
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        fast = 0
        for collapsed in (False, True):
            screen.fleet.collapsed = set(screen.fleet.snapshot.hosts) if collapsed else set()  # type: ignore[union-attr]
            screen.fleet.set_rows([])
            screen.fleet.show_snapshot(screen.fleet.snapshot)  # type: ignore[arg-type]
            await pilot.pause()
            for panel in (screen.fleet, screen.runs, screen.alerts_view):
                base = panel.rich_style
                for width in (panel.size.width, 30):
                    for key in panel.row_keys:
                        text = panel.render_row(key, width)
                        strip = appended_row_strip(text, width, base)
                        fast += strip is not None
                        general = panel.general_row_strip(text, width, 0, base)
                        assert strip is None or list(strip) == list(general), (panel.id, key)
        # The shortcut is what draws the rows that fit (the narrow ones are cut by the general way).
        assert fast > 40


async def test_a_host_row_that_reads_the_same_is_not_made_again_and_follows_a_theme() -> None:
    # Every host row is looked at every second; most read as they did (rounded numbers, a few heat levels).
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        fleet = _fleet(app)
        key = ("host", sc.UP_HOST)
        width = fleet.size.width
        first = fleet.render_row(key, width)
        assert fleet.render_row(key, width) is first
        # GPU 1 reports its reading again (a new sample, a new snapshot): the row reads the same.
        latest = fleet.snapshot.hosts[sc.UP_HOST].gpu(1).latest  # type: ignore[union-attr]
        scenario.store.apply_gpu(sc.UP_HOST, latest, scenario.clock())
        app.refresh_from_source(force=True)
        await pilot.pause()
        assert fleet.render_row(key, width) is first
        # A GPU that drops to 7 %: another heat cell and mean, a new row.
        scenario.store.apply_gpu(sc.UP_HOST, GpuSample(gpu=1, sm_pct=7.0), scenario.clock())
        app.refresh_from_source(force=True)
        await pilot.pause()
        changed = fleet.render_row(key, width)
        assert changed is not first and changed.plain != first.plain
        # Another theme: the same pieces of text in the new theme's styles.
        host_style = fleet.get_component_rich_style("fleet-view--host")
        app.theme = "textual-light"
        await pilot.pause()
        light = fleet.render_row(key, width)
        assert light.plain == changed.plain
        assert fleet.get_component_rich_style("fleet-view--host") != host_style
        assert [span.style for span in light.spans][1] == fleet.get_component_rich_style("fleet-view--host")


async def test_a_chart_with_no_metric_yet_is_drawn_as_soon_as_its_run_prints_one() -> None:
    # At start the first log lines come seconds after the first frame: the chart must not wait CHART_EVERY_S
    # (it once said "no metrics yet" beside a runs panel that showed the loss).
    clock = sc.FakeClock(100.0)
    store = Store()
    store.set_host_status("node-0", HostState.UP, 100.0)
    store.apply_record("llama", "node-0", LogRecord(1, 0, 10, 1000), 100.0)  # progress, no metric
    app = TrainmonApp(sc.ScenarioSource(store, clock), title="t", clock=sc.build_scenario().wall_clock)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        assert screen.chart.metric is None and not screen.chart.drawn
        clock.advance(1.0)
        store.apply_record("llama", "node-0", LogRecord(2, 0, 11, 1000, metrics={"loss": 2.5}), clock())
        clock.advance(1.0)
        store.apply_record("llama", "node-0", LogRecord(3, 0, 12, 1000, metrics={"loss": 2.4}), clock())
        app.refresh_from_source()
        await pilot.pause()
        assert screen.chart.metric == "loss" and screen.chart.drawn
        # From then on the chart follows its period again.
        drawn_at = screen._chart_drawn_at
        clock.advance(1.0)
        store.apply_record("llama", "node-0", LogRecord(4, 0, 13, 1000, metrics={"loss": 2.3}), clock())
        app.refresh_from_source()
        await pilot.pause()
        assert screen._chart_drawn_at == drawn_at
