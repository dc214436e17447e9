"""The loss chart: a run's metric over time, raw (faint) and smoothed, train and validation, with options.

One chart per dashboard, following the run under the cursor. The options a person changes while watching:
the metric (``loss`` first, then every other metric the run prints), the time window (10 min, 1 h, all) and
a logarithmic y axis. The train series is drawn twice: the raw points in a faint colour and TensorBoard's
debiased EMA (:func:`~trainmon_tui.analysis.smoothing.ema_smooth`) over them; the validation series (the
metric's ``val_`` twin) is drawn the same way in another colour. The x axis is time before the snapshot's
time, so nothing drawn depends on the wall clock, in the unit that suits the span the lines cover (seconds,
minutes, hours or days: :func:`time_ticks`), with round ticks labelled ``30s ago`` ... ``now``. Gaps and
non-finite values are left out of the lines (plotext cannot draw them), and on a log axis so are values
<= 0.

Drawing costs: plotext builds the whole canvas as ANSI text, tens of milliseconds for a 100x34 chart. So a
line gets at most two points per column (a braille cell is two dots wide: more points only overlap), and the
built text is kept until :meth:`LossChart.show` gives new data or the size or theme changes, so a layout pass
or a repaint around the chart does not build it again. The widget draws its lines from that text itself
(:meth:`LossChart.render_line`): handing Textual a Rich ``Text`` to cut into lines cost as much again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from rich.segment import Segment
from rich.style import Style
from textual.app import RenderResult
from textual.strip import Strip
from textual.style import Style as VisualStyle
from textual_plotext import PlotextPlot

from trainmon_tui.analysis.smoothing import ema_smooth
from trainmon_tui.report import HEADLINE_METRICS
from trainmon_tui.state.store import RunSnapshot, StoreSnapshot
from trainmon_tui.ui.ansi_text import StyledRuns, sgr_lines, text_from_sgr
from trainmon_tui.ui.widgets.pass_style import PassStyle

#: (label, seconds; None = the whole run).
WINDOWS: tuple[tuple[str, float | None], ...] = (("10m", 600.0), ("1h", 3600.0), ("all", None))
SMOOTHING_WEIGHT = 0.8
MAX_POINTS = 400
#: Points per column of the chart at most: a braille cell is two dots wide.
POINTS_PER_COLUMN = 2
# 256-colour indices, so the chart reads the same in tmux with 256 colours as in a truecolor terminal.
RAW_TRAIN_COLOUR = 244
SMOOTH_TRAIN_COLOUR = 39
RAW_VAL_COLOUR = 137
SMOOTH_VAL_COLOUR = 208


@dataclass(frozen=True, slots=True)
class Series:
    """One line of the chart: x in seconds relative to the snapshot's time (<= 0), y as read (finite only)."""

    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]


def chart_metrics(run: RunSnapshot) -> list[str]:
    """Metrics the chart can show for ``run``: headline ones first, ``val_`` twins folded into theirs."""
    names = list(dict.fromkeys(name for _, name in run.metrics))
    trains = [name for name in names if not (name.startswith("val_") and name[4:] in names)]
    return [name for name in HEADLINE_METRICS if name in trains] + [
        name for name in trains if name not in HEADLINE_METRICS
    ]


def metric_series(
    snapshot: StoreSnapshot,
    run: RunSnapshot,
    metric: str,
    window_s: float | None,
    *,
    smooth: bool,
    log_y: bool,
    max_points: int = MAX_POINTS,
) -> Series | None:
    """The series of ``metric`` as the lowest rank (or an unranked line) logged it; None if never logged."""
    ranks = [rank for rank, name in run.metrics if name == metric]
    if not ranks:
        return None
    rank = min(ranks, key=lambda rank: -1 if rank is None else rank)
    history = run.metrics[(rank, metric)].history
    since = None if window_s is None else snapshot.now - window_s
    points = history.points(metric, since=since, until=snapshot.now, max_points=max_points).points
    values: list[float | None] = [point.mean for point in points]
    if smooth:
        values = ema_smooth(values, SMOOTHING_WEIGHT)
    xs: list[float] = []
    ys: list[float] = []
    for point, value in zip(points, values, strict=True):
        if value is None or not math.isfinite(value) or (log_y and value <= 0):
            continue
        xs.append(point.t - snapshot.now)
        ys.append(value)
    label = f"{metric} (ema)" if smooth else metric
    return Series(label, tuple(xs), tuple(ys))


class _Line(NamedTuple):
    """One line as plotext draws it: x in the axis's unit, y, colour, legend label (None: no entry)."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    colour: int
    label: str | None


class _Figure(NamedTuple):
    """Everything the chart gives plotext for one drawing."""

    lines: tuple[_Line, ...]
    log_y: bool
    x_limits: tuple[float, float] | None
    # (position, label) of each x tick.
    ticks: tuple[tuple[float, str], ...]
    # Shown when there is nothing to draw.
    title: str | None


_NOTHING_DRAWN = _Figure((), log_y=False, x_limits=None, ticks=(), title=None)
_NO_METRICS = _NOTHING_DRAWN._replace(title="no metrics yet")


# (largest span in seconds, seconds per unit, unit suffix): the unit a time axis is labelled in.
_TIME_UNITS: tuple[tuple[float, float, str], ...] = (
    (180.0, 1.0, "s"),
    (3.0 * 3600.0, 60.0, "m"),
    (3.0 * 86_400.0, 3600.0, "h"),
    (math.inf, 86_400.0, "d"),
)
_NICE_STEPS = (1.0, 2.0, 5.0, 10.0)


def time_ticks(span_s: float, count: int = 5) -> tuple[float, list[float], list[str]]:
    """For an axis from ``-span_s`` to 0 seconds: (seconds per unit, tick positions in that unit, labels).

    At most ``count + 1`` ticks at round multiples (1, 2 or 5 x 10^k units), labelled ``8m ago`` ... ``now``.
    """
    span_s = max(span_s, 1.0)
    size, unit = next((size, unit) for limit, size, unit in _TIME_UNITS if span_s <= limit)
    span = span_s / size
    rough = span / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(rough))
    step = next(nice * magnitude for nice in _NICE_STEPS if nice * magnitude >= rough)
    ticks = [round(-index * step, 9) for index in range(int(span / step + 1e-9) + 1)][::-1]
    labels = ["now" if tick == 0 else f"{-tick:g}{unit} ago" for tick in ticks]
    return size, ticks, labels


class LossChart(PassStyle, PlotextPlot):
    """The chart widget; :meth:`show` redraws it from a snapshot and the current options."""

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self.metric: str | None = None
        self.window_index = 0
        self.log_y = False
        self.drawn: list[Series] = []
        #: The x axis's tick labels as last drawn (``["10m ago", ..., "now"]``).
        self.x_labels: list[str] = []
        #: Times plotext built the chart (for tests and benchmarks).
        self.builds = 0
        # Bumped by show(): the plot's data changed since the text below was built.
        self._generation = 0
        # What show() chose to draw, given to plotext afresh before each build.
        self._figure = _NOTHING_DRAWN
        # (size, theme, plotext theme, generation) -> plotext's text built for them, the last one only.
        self._built: tuple[tuple[object, ...], str | None] | None = None
        # The same key -> that text read into a Rich Text (render()).
        self._text: tuple[tuple[object, ...], RenderResult] | None = None
        # (key, width, widget style) -> the lines drawn from that text (render_line()); None where the text
        # is drawn the usual way.
        self._strips: tuple[tuple[object, ...], list[Strip] | None] | None = None

    @property
    def window_label(self) -> str:
        return WINDOWS[self.window_index][0]

    def cycle_window(self) -> None:
        self.window_index = (self.window_index + 1) % len(WINDOWS)

    def cycle_metric(self, run: RunSnapshot | None) -> None:
        choices = [] if run is None else chart_metrics(run)
        if not choices:
            return
        position = choices.index(self.metric) if self.metric in choices else -1
        self.metric = choices[(position + 1) % len(choices)]

    def show(self, snapshot: StoreSnapshot | None, run: RunSnapshot | None) -> None:
        self._generation += 1
        self.drawn = []
        choices = [] if run is None else chart_metrics(run)
        if self.metric not in choices:
            self.metric = choices[0] if choices else None
        if snapshot is None or run is None or self.metric is None:
            self._figure = _NO_METRICS
            self.border_title = "Chart"
            self.refresh()
            return
        metric = self.metric
        window_s = WINDOWS[self.window_index][1]
        val_metric = f"val_{metric}"
        colours = {
            (metric, False): RAW_TRAIN_COLOUR,
            (metric, True): SMOOTH_TRAIN_COLOUR,
            (val_metric, False): RAW_VAL_COLOUR,
            (val_metric, True): SMOOTH_VAL_COLOUR,
        }
        max_points = min(MAX_POINTS, max(self.size.width, 1) * POINTS_PER_COLUMN)
        for name, smooth in colours:
            series = metric_series(
                snapshot, run, name, window_s, smooth=smooth, log_y=self.log_y, max_points=max_points
            )
            if series is not None and series.xs:
                self.drawn.append(series)
        span = max((-series.xs[0] for series in self.drawn), default=0.0)
        size, ticks, self.x_labels = time_ticks(span)
        lines = []
        for series in self.drawn:
            smooth = series.label.endswith("(ema)")
            name = series.label.removesuffix(" (ema)")
            # Only the smoothed lines get a legend entry: four entries would cover the lines at 80 columns.
            lines.append(
                _Line(
                    tuple(x / size for x in series.xs),
                    series.ys,
                    colours[(name, smooth)],
                    series.label if smooth else None,
                )
            )
        self._figure = _Figure(
            tuple(lines),
            log_y=self.log_y,
            x_limits=(-max(span, 1.0) / size, 0.0) if self.drawn else None,
            ticks=tuple(zip(ticks, self.x_labels, strict=True)) if self.drawn else (),
            title=None,
        )
        scale = " · log y" if self.log_y else ""
        self.border_title = f"{metric} · {run.name} · {self.window_label}{scale}"
        self.refresh()

    def _load_figure(self) -> None:
        """Give plotext the figure :meth:`show` chose, from scratch.

        Before every build, not once per :meth:`show`: plotext's build changes the data it was given (a log
        axis takes the logarithm of it in place), so a second build of the same data - for a new size or
        theme - failed with an IndexError or a math domain error and took the dashboard down.
        """
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        figure = self._figure
        if figure.title is not None:
            plt.title(figure.title)
        for line in figure.lines:
            plt.plot(list(line.xs), list(line.ys), color=line.colour, marker="braille", label=line.label)
        plt.yscale("log" if figure.log_y else "linear")
        if figure.x_limits is not None:
            plt.xlim(*figure.x_limits)
        if figure.ticks:
            plt.xticks([tick for tick, _ in figure.ticks], [label for _, label in figure.ticks])

    def render(self) -> RenderResult:
        """The chart as plotext draws it, built again only when the data, the size or the theme changed."""
        key = self._key()
        if self._text is not None and self._text[0] == key:
            return self._text[1]
        terminal_text = self._terminal_text(key)
        text = super().render() if terminal_text is None else text_from_sgr(terminal_text)
        self._text = (key, text)
        return text

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the chart, made straight from plotext's text (Textual's line API).

        Textual would otherwise turn the chart's ``Text`` into its own content and cut that into lines: as
        much work again as plotext's build. Where the text holds more than SGR codes, or textual-plotext
        lacks what :meth:`_terminal_text` needs, the ``Text`` is drawn the usual way.
        """
        key = self._key()
        width = self.size.width
        base_style = self.line_style
        drawn = self._strips
        if drawn is None or drawn[0] != (key, width, base_style):
            terminal_text = self._terminal_text(key)
            lines = None if terminal_text is None else sgr_lines(terminal_text)
            strips = None if lines is None else _strips_of(lines, width, base_style)
            drawn = self._strips = ((key, width, base_style), strips)
        strips = drawn[1]
        if strips is None:
            return super().render_line(y)
        return strips[y] if 0 <= y < len(strips) else Strip.blank(width, base_style)

    def notify_style_update(self) -> None:
        # A theme or CSS change: the widget's style is baked into the kept lines.
        self._strips = None
        super().notify_style_update()

    def _key(self) -> tuple[object, ...]:
        return (self.size, self.app.theme, self.theme, self._generation)

    def _terminal_text(self, key: tuple[object, ...]) -> str | None:
        """Plotext's coloured text of the chart for ``key`` (built once per key); None where this version of
        textual-plotext lacks a step :meth:`_build` needs (the base class then draws the chart itself)."""
        if self._built is not None and self._built[0] == key:
            return self._built[1]
        self._load_figure()
        built = self._build()
        self.builds += 1
        self._built = (key, built)
        return built

    def _build(self) -> str | None:
        """Plotext's text of the chart, made with the steps of ``PlotextPlot.render``.

        The steps are the base class's: the plot sized to the widget (both of its size calls: the second is
        what makes a resize take), the theme that follows the app's, then plotext's text. Where a version of
        textual-plotext lacks one of them, None.
        """
        plot = self.plt
        set_size = getattr(plot, "_set_size", None)
        theme_name_of = getattr(self, "_get_plotext_theme_name", None)
        if set_size is None or theme_name_of is None:
            return None
        width, height = self.size
        plot.plotsize(width, height)
        set_size(width, height)
        plot.theme(theme_name_of(self.app.theme))
        return plot.build()


def _strips_of(lines: list[StyledRuns], width: int, base_style: Style) -> list[Strip]:
    """One strip per line, cut or padded to ``width``, styled as Textual draws a ``Text``: each run's colours
    read as Textual reads a Rich style (a 256-colour index becomes its RGB), the widget's style under it."""
    combined: dict[Style, Style] = {}
    strips = []
    for runs in lines:
        segments = []
        for text, style in runs:
            under = combined.get(style)
            if under is None:
                under = combined[style] = base_style + VisualStyle.from_rich_style(style).rich_style
            segments.append(Segment(text, under))
        strips.append(Strip(segments).adjust_cell_length(width, base_style))
    return strips
