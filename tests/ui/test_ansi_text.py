"""text_from_sgr reads plotext's coloured text as Rich's Text.from_ansi does, and the chart uses it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.text import Text
from textual_plotext import PlotextPlot

from tests.ui import scenario as sc
from tests.ui.test_repaint import _app
from trainmon_tui.ui.ansi_text import text_from_sgr
from trainmon_tui.ui.screens.dashboard import DashboardScreen

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
_TEXT = st.text(alphabet=st.sampled_from(["a", " ", "\n", "⠁", "│", "x"]), max_size=12)
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


def test_the_styles_are_rich_ones() -> None:
    text = text_from_sgr("\x1b[38;2;255;0;0mred\x1b[0m plain\n\x1b[1mbold\n")
    assert text.plain == "red plain\nbold\n"
    assert [(span.start, span.end, str(span.style)) for span in text.spans] == [
        (0, 3, "#ff0000"),
        (10, 14, "bold"),
    ]


async def test_the_chart_draws_what_textual_plotext_would() -> None:
    scenario = sc.build_scenario()
    app = _app(scenario)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        chart = screen.chart
        # As first drawn, then another window, a log y axis, another metric.
        for keys in ((), ("w",), ("y",), ("n",)):
            await pilot.press(*keys)
            await pilot.pause()
            assert chart.drawn
            chart._load_figure()
            ours = chart._build()
            # Plotext's build changes the data it is given (a log axis), so the figure is loaded afresh.
            chart._load_figure()
            assert isinstance(ours, Text) and ours == PlotextPlot.render(chart)
            assert len(ours.spans) > 10
