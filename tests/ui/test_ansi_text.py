"""text_from_sgr and sgr_lines read plotext's coloured text as Rich's Text.from_ansi does, and the chart draws
its lines from them exactly as Textual draws the chart's Text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.pilot import Pilot
from textual.strip import Strip
from textual.widget import Widget
from textual_plotext import PlotextPlot

from tests.ui import scenario as sc
from tests.ui.test_repaint import _app
from trainmon_tui.ui.ansi_text import sgr_lines, text_from_sgr
from trainmon_tui.ui.screens.dashboard import DashboardScreen
from trainmon_tui.ui.widgets.loss_chart import LossChart

# Codes plotext prints (truecolor and 256-colour fore/background, reset) and others Rich knows.
_CODES = st.sampled_from(
    [
        "0",
        "",
        "1",
        "3;4",
        "38;2;12;200;7",
        "48;2;0;0;0",
        "38;5;39",
        "48;5;244",
        "1;38;2;255;0;0",
        "39",
        "49",
        "22",
        "38;2;1",
        "999",
    ]
)
_TEXT = st.text(alphabet=st.sampled_from(["a", " ", "\n", "⠁", "│", "x", "\x08", "\x07"]), max_size=12)
_PIECES = st.lists(st.one_of(_TEXT, _CODES.map(lambda code: f"\x1b[{code}m")), max_size=30)


@settings(max_examples=400, deadline=None)
@given(_PIECES)
def test_equal_to_rich_on_any_mix_of_sgr_codes_text_and_newlines(pieces: list[str]) -> None:
    terminal_text = "".join(pieces)
    assert text_from_sgr(terminal_text) == Text.from_ansi(terminal_text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_equal_to_rich_on_any_text_at_all(terminal_text: str) -> None:
    # Carriage returns and other escape sequences go to Rich itself; everything else is read here.
    assert text_from_sgr(terminal_text) == Text.from_ansi(terminal_text)


def _cells_of_rich_lines(terminal_text: str) -> list[list[tuple[str, Style]]]:
    """Every character of every line of ``Text.from_ansi(terminal_text)`` with the style Rich draws it in."""
    console = Console()
    return [
        [(char, segment.style or Style.null()) for segment in line.render(console) for char in segment.text]
        for line in Text.from_ansi(terminal_text).split("\n", allow_blank=True)
    ]


def _cells_of_runs(terminal_text: str) -> list[list[tuple[str, Style]]] | None:
    lines = sgr_lines(terminal_text)
    if lines is None:
        return None
    return [[(char, style) for text, style in runs for char in text] for runs in lines]


@settings(max_examples=400, deadline=None)
@given(_PIECES)
def test_lines_of_runs_draw_the_same_cells_as_rich(pieces: list[str]) -> None:
    terminal_text = "".join(pieces)
    assert _cells_of_runs(terminal_text) == _cells_of_rich_lines(terminal_text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_lines_of_runs_on_any_text_at_all_or_none_for_rich_to_read(terminal_text: str) -> None:
    cells = _cells_of_runs(terminal_text)
    if "\r" in terminal_text or "\x1b" in terminal_text.replace("\x1b[", ""):
        assert cells is None
    elif cells is not None:
        assert cells == _cells_of_rich_lines(terminal_text)


def test_lines_of_runs_split_at_newlines_and_keep_the_style_across_them() -> None:
    lines = sgr_lines("\x1b[1mbold\nstill\x1b[0m plain\n\nend")
    bold = Style(bold=True)
    plain = Style.null()
    assert lines == [[("bold", bold)], [("still", bold), (" plain", plain)], [], [("end", plain)]]
    assert sgr_lines("bar\rredrawn") is None
    assert sgr_lines("\x1b]0;title\x07text") is None


def test_the_styles_are_rich_ones() -> None:
    text = text_from_sgr("\x1b[38;2;255;0;0mred\x1b[0m plain\n\x1b[1mbold\n")
    assert text.plain == "red plain\nbold\n"
    assert [(span.start, span.end, str(span.style)) for span in text.spans] == [
        (0, 3, "#ff0000"),
        (10, 14, "bold"),
    ]


def _cells(strip: Strip) -> list[tuple[str, Style | None]]:
    # Textual marks each piece of a Text it draws with its offset (for the mouse): the chart needs none.
    return [
        (char, None if segment.style is None else segment.style.clear_meta_and_links())
        for segment in strip
        for char in segment.text
    ]


@asynccontextmanager
async def _dashboard_chart() -> AsyncIterator[tuple[Pilot[int], LossChart]]:
    """The scenario's dashboard at 160x48, running, and its chart."""
    app = _app(sc.build_scenario())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        yield pilot, screen.chart


async def test_the_chart_draws_what_textual_plotext_would_as_textual_would_draw_it() -> None:
    async with _dashboard_chart() as (pilot, chart):
        # As first drawn, then another window, a log y axis, another metric.
        for keys in ((), ("w",), ("y",), ("n",)):
            await pilot.press(*keys)
            await pilot.pause()
            assert chart.drawn
            width, height = chart.size
            # The lines the chart draws itself, and the base class's: its Text cut into lines by Textual.
            ours = [_cells(chart.render_line(y)) for y in range(height)]
            textual = [_cells(Widget.render_line(chart, y)) for y in range(height)]
            assert ours == textual
            assert all(len(line) == width for line in ours)
            assert any("\u2801" <= char <= "\u28ff" for line in ours for char, _ in line)
            # The text is what textual-plotext's own render reads from plotext.
            chart._load_figure()
            built = chart._build()
            assert built is not None
            text = text_from_sgr(built)
            # Plotext's build changes the data it is given (a log axis), so the figure is loaded afresh.
            chart._load_figure()
            assert isinstance(text, Text) and text == PlotextPlot.render(chart)
            assert len(text.spans) > 10
        builds = chart.builds
        # Lines drawn again for another widget style (a theme) read the kept text: no new build.
        chart.notify_style_update()
        chart.render_line(0)
        assert chart.builds == builds


async def test_a_chart_text_with_other_escapes_is_drawn_the_usual_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _dashboard_chart() as (_, chart):
        # A carriage return and an OSC sequence: only Rich's general decoder reads these.
        monkeypatch.setattr(chart, "_build", lambda: "\x1b[1mbold\x1b[0m\r\nnext \x1b]0;title\x07line")
        chart._generation += 1
        builds = chart.builds
        ours = [_cells(chart.render_line(y)) for y in range(3)]
        textual = [_cells(Widget.render_line(chart, y)) for y in range(3)]
        assert ours == textual
        assert "".join(char for char, _ in ours[1]).startswith("next ")
        assert chart.builds == builds + 1
