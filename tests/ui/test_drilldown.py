"""Drill-down screens under Pilot, pressing real keys: the host screen, a rank's log (follow, search, events,
first error, wrap, opening at a line), the merged log of a run, and inert rendering of hostile log text.

The store is the shared UI scenario (tests/ui/scenario.py) plus real log text fed through the real
LogParser into the log book: every llama-7b rank logs the LLaMA-Factory tqdm excerpt, and rank 3 then dies
with the CUDA OOM traceback from tests/fixtures/errors. Most tests run the screens in a tiny app that hands
them snapshots the way the dashboard app does; the last ones go through the real app.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.segment import Segment
from textual.app import App
from textual.screen import Screen

from tests.ui.scenario import LLAMA, LLAMA_RANKS, STALE_GPU, T_END, UP_HOST, Scenario, build_scenario
from trainmon_tui.model import EventKind
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.parsers.trainlog.paths import rank_from_path
from trainmon_tui.state.store import Store, StoreSnapshot
from trainmon_tui.ui.app import TrainmonApp
from trainmon_tui.ui.screens.host import HostScreen
from trainmon_tui.ui.screens.log import LogScreen
from trainmon_tui.ui.source import SnapshotConsumer
from trainmon_tui.ui.widgets.log_lines import (
    RANK_PALETTE,
    EventsDocument,
    FileDocument,
    LogDocument,
    LogLines,
    LogRow,
    MergedDocument,
    RowKey,
)
from trainmon_tui.ui.widgets.process_table import ProcessTable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TQDM = (
    (FIXTURES / "log_collector" / "hf_trainer_tqdm_lines_numbered_then_nccl_timeout.txt")
    .read_text()
    .split("\n")[:-1]
)
OOM = (FIXTURES / "errors" / "cuda_oom_forward_traceback_b200_py312.txt").read_text().split("\n")[:-1]
OOM_RANK = 3
# The OOM message is line 14 of the traceback excerpt, which follows the 19 tqdm lines.
OOM_LINE = len(TQDM) + 14
SIZE = (120, 40)


def rank_path(rank: int) -> str:
    return f"/runs/llama/rank{rank}.log"


class LogFeeder:
    """Feeds log lines of files through real parsers into the store, as the log collector does."""

    def __init__(self, store: Store, run: str = LLAMA, host: str = UP_HOST) -> None:
        self.store, self.run, self.host = store, run, host
        self.parsers: dict[str, LogParser] = {}
        self.counts: dict[str, int] = {}

    def feed(self, path: str, lines: Sequence[str], now: float) -> None:
        parser = self.parsers.setdefault(path, LogParser(default_rank=rank_from_path(path)))
        for line in lines:
            _, events = parser.feed(line)
            number = self.counts.get(path, 0) + 1
            self.counts[path] = number
            self.store.append_log_lines(
                self.run, self.host, path, [line], now, first_line=number, ranks=parser.ranks
            )
            for event in events:
                self.store.apply_event(self.run, self.host, event, now, path=path)


def scenario_with_logs(*, repeat: int = 1) -> tuple[Scenario, LogFeeder]:
    """The UI scenario, with every llama rank's log interleaved line by line (rank 3 ends in an OOM)."""
    scenario = build_scenario()
    feeder = LogFeeder(scenario.store)
    logs = {rank: TQDM * repeat + (OOM if rank == OOM_RANK else []) for rank in range(LLAMA_RANKS)}
    for index in range(max(len(lines) for lines in logs.values())):
        for rank, lines in logs.items():
            if index < len(lines):
                feeder.feed(rank_path(rank), [lines[index]], T_END - 60.0)
    return scenario, feeder


class DrillApp(App[None]):
    """Pushes one screen and hands screens snapshots like the dashboard app: at push, and on publish()."""

    def __init__(self, scenario: Scenario, first: Screen[None]) -> None:
        super().__init__()
        self.scenario = scenario
        self.first = first
        self.latest_snapshot: StoreSnapshot | None = scenario.source.snapshot()

    def on_mount(self) -> None:
        self.push_screen(self.first)

    def publish(self) -> None:
        self.latest_snapshot = self.scenario.source.snapshot()
        if isinstance(self.screen, SnapshotConsumer):
            self.screen.show_snapshot(self.latest_snapshot)


def log_screen(app: App[Any]) -> LogScreen:
    screen = app.screen
    assert isinstance(screen, LogScreen), type(screen).__name__
    return screen


def shown_rows(log: LogLines) -> list[LogRow]:
    return log.visible_rows()


def rendered_segments(log: LogLines) -> list[Segment]:
    height = log.scrollable_content_region.height
    return [segment for y in range(height) for segment in log.render_line(y)]


def rendered_text(log: LogLines) -> list[str]:
    return [log.render_line(y).text for y in range(log.scrollable_content_region.height)]


def cursor_row(log: LogLines) -> LogRow:
    index, document = log.cursor_index, log.document
    assert index is not None and document is not None
    return document.row(index)


# ------------------------------------------------------------------------------------------ host screen


async def test_host_screen_shows_each_gpu_with_its_rank_and_each_process() -> None:
    scenario, _ = scenario_with_logs()
    app = DrillApp(scenario, HostScreen(UP_HOST))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, HostScreen)
        gpus = screen.gpu_table
        assert gpus.row_keys == tuple(str(index) for index in range(8))
        assert gpus.get_row("0")[0] == "0" and gpus.get_row("0")[-1] == "NVIDIA H100 80GB HBM3"
        # Duty cycle: the scenario's eval phase (30 s of every 5 min below 50 % SM) leaves 109 of the 121
        # samples of the last 10 minutes busy.
        assert gpus.get_row("0")[2] == f"{100 * 109 / 121:.0f}%" == "90%"
        assert gpus.get_row("0")[3] == "59.6/79.6G"
        # Rank and pid from the compute-apps map; clocks were never reported: "-", not 0.
        assert gpus.get_row("2")[6:8] == ["2", "40002"] and gpus.get_row("2")[9] == "-"
        stale_age = str(gpus.get_row(str(STALE_GPU[1]))[8])
        assert stale_age.startswith("stale ")
        assert str(gpus.get_row("1")[8]) == "0s"
        processes = screen.process_table
        # Ranks first in rank order, the launcher (no rank) last.
        assert processes.row_keys == (*(str(40_000 + rank) for rank in range(8)), "40999")
        rank0 = processes.get_row("40000")
        assert rank0[:6] == ["40000", "0", "0", "98.5", "12.0G", "31m30s"]
        assert str(rank0[6]) == "running (Rl)"
        assert rank0[7] == "/usr/bin/python3 -u train.py --run llama-7b --local_rank=0"
        assert processes.get_row("40999")[1:3] == ["-", "-"]
        status = str(screen.query_one("#status").render())
        assert "gpu-node-01  up for 30m00s · 8 GPUs · 9 processes" in status


async def test_enter_on_a_process_opens_its_rank_log_and_esc_comes_back() -> None:
    scenario, _ = scenario_with_logs()
    app = DrillApp(scenario, HostScreen(UP_HOST))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "j", "down", "enter")
        await pilot.pause()
        screen = log_screen(app)
        assert (screen.run_name, screen.host, screen.rank) == (LLAMA, UP_HOST, OOM_RANK)
        assert screen.view is not None and screen.view.path == rank_path(OOM_RANK)
        # Following: the last line of rank 3's log is on screen.
        assert shown_rows(screen.log_lines)[-1].text == OOM[-1]
        await pilot.press("escape")
        await pilot.pause()
        host = app.screen
        assert isinstance(host, HostScreen)
        assert host.process_table.pid_of_cursor() == 40_003
        # The launcher has no rank: Enter on it says so and stays.
        await pilot.press("G", "enter")
        await pilot.pause()
        assert isinstance(app.screen, HostScreen)


async def test_enter_on_a_gpu_opens_the_log_of_the_rank_on_it() -> None:
    scenario, _ = scenario_with_logs()
    app = DrillApp(scenario, HostScreen(UP_HOST))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("shift+tab")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, HostScreen) and screen.focused is screen.gpu_table
        for _ in range(6):
            await pilot.press("down")
        await pilot.press("enter")
        await pilot.pause()
        log = log_screen(app)
        assert log.rank == 6 and log.view is not None and log.view.path == rank_path(6)


# --------------------------------------------------------------------------------------------- log screen


async def test_the_log_follows_new_lines_until_scrolled_up_and_resumes_on_end() -> None:
    scenario, feeder = scenario_with_logs(repeat=4)
    app = DrillApp(scenario, LogScreen(run=LLAMA, host=UP_HOST, rank=0))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        log = log_screen(app).log_lines
        assert log.following
        last = shown_rows(log)[-1]
        assert (last.number, last.text) == (4 * len(TQDM), TQDM[-1])
        feeder.feed(rank_path(0), TQDM[1:4], T_END)
        app.publish()
        await pilot.pause()
        assert [row.text for row in shown_rows(log)[-3:]] == TQDM[1:4]
        await pilot.press("pageup")
        await pilot.pause()
        assert not log.following
        top_before = shown_rows(log)[0]
        feeder.feed(rank_path(0), TQDM[4:10], T_END)
        app.publish()
        await pilot.pause()
        # Paused: the same line stays at the top while lines arrive below.
        assert shown_rows(log)[0] == top_before
        status = str(app.screen.query_one("#status").render())
        assert "paused" in status
        await pilot.press("G")
        await pilot.pause()
        assert log.following
        assert shown_rows(log)[-1].text == TQDM[9]
        await pilot.press("g")
        await pilot.pause()
        assert not log.following and shown_rows(log)[0].number == 1
        await pilot.press("0")
        await pilot.pause()
        assert log.following and shown_rows(log)[-1].number == 4 * len(TQDM) + 9


async def test_search_finds_highlights_and_steps_through_matches() -> None:
    scenario, _ = scenario_with_logs()
    app = DrillApp(scenario, LogScreen(run=LLAMA, host=UP_HOST, rank=OOM_RANK))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = log_screen(app)
        log = screen.log_lines
        await pilot.press("g", "slash", "l", "o", "s", "s", "enter")
        await pilot.pause()
        # 'loss' is in the loss dict (line 14) and in the traceback ("loss = net(x)", line 19 + 3).
        first = cursor_row(log)
        assert first.number == 14 and "'loss': 0.0" in first.text
        assert "'loss' 1 of 2" in str(screen.query_one("#status").render())
        matches = [
            segment
            for segment in rendered_segments(log)
            if segment.text.lower() == "loss"
            and segment.style is not None
            and segment.style.bgcolor is not None
        ]
        assert len(matches) >= 2
        await pilot.press("n")
        await pilot.pause()
        second = cursor_row(log)
        assert second.number == len(TQDM) + 3 and second.text.strip() == "loss = net(x)"
        await pilot.press("n")
        await pilot.pause()
        assert cursor_row(log).number == 14  # wrapped around
        await pilot.press("N")
        await pilot.pause()
        assert cursor_row(log).number == len(TQDM) + 3
        assert not log.following
        # A search for nothing there says so and leaves the cursor.
        await pilot.press("slash", "ctrl+u", *"zzz_not_here", "enter")
        await pilot.pause()
        assert cursor_row(log).number == len(TQDM) + 3
        assert "not found" in str(screen.query_one("#status").render())
        # Esc closes the search box first; the screen stays.
        await pilot.press("slash", "escape")
        await pilot.pause()
        assert app.screen is screen and not screen.has_class("-searching")
        assert screen.focused is log


async def test_events_filter_first_error_and_back_to_context() -> None:
    scenario, _ = scenario_with_logs()
    app = DrillApp(scenario, LogScreen(run=LLAMA, host=UP_HOST, rank=OOM_RANK))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = log_screen(app)
        log = screen.log_lines
        await pilot.press("g", "E")
        await pilot.pause()
        error = cursor_row(log)
        assert (error.number, error.tag) == (OOM_LINE, EventKind.OOM.value)
        assert error.text.startswith(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 55.88 GiB."
        )
        assert any(
            text.lstrip().startswith(f"{OOM_LINE} [oom] torch.OutOfMemoryError")
            for text in rendered_text(log)
        )
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(log.document, EventsDocument)
        rows = [log.document.row(index) for index in range(len(log.document))]
        assert [(row.number, row.tag) for row in rows] == [(OOM_LINE, "oom")]
        assert "events only" in str(screen.query_one("#status").render())
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(log.document, FileDocument)
        assert cursor_row(log).number == OOM_LINE
        assert OOM_LINE in [row.number for row in shown_rows(log)]


async def test_wrap_breaks_long_lines_and_back() -> None:
    scenario, _ = scenario_with_logs()
    app = DrillApp(scenario, LogScreen(run=LLAMA, host=UP_HOST, rank=OOM_RANK))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        log = log_screen(app).log_lines
        lines = len(TQDM) + len(OOM)
        assert log.virtual_size.height == lines
        assert log.virtual_size.width > SIZE[0]  # the OOM message is longer than the screen
        await pilot.press("w")
        await pilot.pause()
        assert log.wrap
        assert log.virtual_size.height > lines
        assert log.virtual_size.width <= SIZE[0]
        text = rendered_text(log)
        oom_row = next(index for index, line in enumerate(text) if "[oom] torch.OutOfMemoryError" in line)
        # The message goes on in the next screen rows, indented past the line numbers.
        assert text[oom_row + 1].startswith("   ") and text[oom_row + 1].strip()
        assert shown_rows(log)[-1].text == OOM[-1]
        await pilot.press("w")
        await pilot.pause()
        assert not log.wrap and log.virtual_size.height == lines


async def test_opening_at_a_line_scrolls_to_it_and_marks_it() -> None:
    scenario, _ = scenario_with_logs(repeat=6)
    target = 17
    app = DrillApp(scenario, LogScreen(run=LLAMA, host=UP_HOST, rank=2, line=target))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        log = log_screen(app).log_lines
        assert not log.following
        marked = cursor_row(log)
        assert marked.key == (UP_HOST, rank_path(2), target)
        assert marked.text == TQDM[target - 1]
        assert target in [row.number for row in shown_rows(log)]
        # The marked row is drawn with the cursor background.
        y = log.cursor_index - log.scroll_offset.y  # type: ignore[operator]
        assert any(segment.style is not None and segment.style.bold for segment in log.render_line(y))


async def test_opening_at_a_line_the_book_no_longer_holds_says_so() -> None:
    scenario, _ = scenario_with_logs()
    app = DrillApp(scenario, LogScreen(run=LLAMA, host=UP_HOST, rank=5, line=2_731))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = log_screen(app)
        assert screen.log_lines.cursor_index is None
        assert any("line 2731 is not in the log book" in str(note.message) for note in app._notifications)


async def test_merged_view_interleaves_ranks_in_arrival_order_coloured_by_rank() -> None:
    scenario, _ = scenario_with_logs()
    app = DrillApp(scenario, LogScreen(run=LLAMA))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = log_screen(app)
        log = screen.log_lines
        document = log.document
        assert isinstance(document, MergedDocument)
        assert len(document) == LLAMA_RANKS * len(TQDM) + len(OOM)
        # Fed line by line round robin: line 1 of ranks 0..7, then line 2 ...
        assert [(row.rank, row.number) for row in map(document.row, range(9))] == [
            *((rank, 1) for rank in range(8)),
            (0, 2),
        ]
        await pilot.press("g")
        await pilot.pause()
        text = rendered_text(log)
        assert text[0].startswith(" 1 r0   [1744]") and text[1].startswith(" 1 r1   [1744]")
        colours = {
            segment.text.strip(): segment.style.color.name
            for segment in rendered_segments(log)
            if segment.style is not None
            and segment.style.color is not None
            and segment.text.strip().startswith("r")
        }
        assert colours["r0"] == RANK_PALETTE[0] and colours["r5"] == RANK_PALETTE[5]
        # Only rank 3's OOM is an error in the run's logs with a line held; E goes to it.
        await pilot.press("E")
        await pilot.pause()
        error = cursor_row(log)
        assert (error.rank, error.number, error.tag) == (OOM_RANK, OOM_LINE, "oom")
        # The events filter lists the scenario's older rank 5 events too, from what they said.
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(log.document, EventsDocument)
        tags = [log.document.row(index) for index in range(len(log.document))]
        assert [(row.rank, row.tag) for row in tags] == [(5, "nan"), (5, "nccl_timeout"), (OOM_RANK, "oom")]
        assert tags[0].text.endswith("(line no longer held)")


async def test_escape_sequences_from_a_host_never_reach_the_terminal() -> None:
    scenario = build_scenario()
    feeder = LogFeeder(scenario.store)
    hostile = [
        f"\x1b]0;owned terminal title\x07{TQDM[1]}",
        f"\x1b[2J\x1b[H{TQDM[2]}",
        f"{TQDM[3]}\x1b]52;c;ZWNobyBwd25lZA==\x07",
        "\x9b31mC1 introducer\x1b[0m and an OSC 8 \x1b]8;;http://example.invalid\x1b\\link\x1b]8;;\x1b\\",
    ]
    feeder.feed(rank_path(0), hostile, T_END)
    app = DrillApp(scenario, LogScreen(run=LLAMA, host=UP_HOST, rank=0))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        log = log_screen(app).log_lines
        for wrap in (False, True):
            segments = rendered_segments(log)
            assert segments
            assert not [
                segment.text for segment in segments if "\x1b" in segment.text or "\x9b" in segment.text
            ]
            assert not [segment.text for segment in segments if "\x07" in segment.text]
            if not wrap:
                await pilot.press("w")
                await pilot.pause()
        texts = [row.text for row in shown_rows(log)]
        assert texts[:3] == [TQDM[1], TQDM[2], TQDM[3]]
        assert texts[3] == "C1 introducer and an OSC 8 link"


class CountingDocument:
    """A document that counts the rows asked of it."""

    def __init__(self, inner: LogDocument) -> None:
        self.inner = inner
        self.rows_made = 0
        self.merged = inner.merged
        self.number_width = inner.number_width

    def __len__(self) -> int:
        return len(self.inner)

    def row(self, index: int) -> LogRow:
        self.rows_made += 1
        return self.inner.row(index)

    def text(self, index: int) -> str:
        return self.inner.text(index)

    def find(self, key: RowKey) -> int | None:
        return self.inner.find(key)


async def test_a_long_log_draws_only_the_rows_on_screen() -> None:
    store = Store()
    lines = [TQDM[index % len(TQDM)] for index in range(10_000)]
    store.append_log_lines(LLAMA, UP_HOST, rank_path(0), lines, T_END, first_line=1)
    view = store.snapshot(T_END).logs(LLAMA)[0]
    app = DrillApp(build_scenario(), LogScreen(run="nothing here"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        log = log_screen(app).log_lines
        counting = CountingDocument(FileDocument(view, {}))
        log.set_document(counting, keep_place=False)
        await pilot.pause()
        counting.rows_made = 0
        log.refresh()
        await pilot.pause()
        height = log.scrollable_content_region.height
        assert 0 < counting.rows_made <= 3 * height
        assert shown_rows(log)[-1].number == 10_000
        assert not list(log.children)


# ------------------------------------------------------------------------------------- through the app


async def test_through_the_dashboard_app_host_rank_log_and_back() -> None:
    scenario, feeder = scenario_with_logs()
    app = TrainmonApp(scenario.source, title="drill", clock=scenario.wall_clock, age_refresh_s=None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        host = app.screen
        assert isinstance(host, HostScreen) and host.host == UP_HOST
        assert isinstance(host.focused, ProcessTable)
        for _ in range(OOM_RANK):
            await pilot.press("down")
        await pilot.press("enter")
        await pilot.pause()
        screen = log_screen(app)
        assert screen.view is not None and screen.view.path == rank_path(OOM_RANK)
        # New lines reach the screen through the app's own repaint timer path.
        feeder.feed(rank_path(OOM_RANK), TQDM[1:3], T_END)
        assert app.refresh_from_source()
        await pilot.pause()
        assert [row.text for row in shown_rows(screen.log_lines)[-2:]] == TQDM[1:3]
        await pilot.press("E", "escape")
        await pilot.pause()
        assert app.screen is host
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "DashboardScreen"
