"""The run panel: per run its progress, speed, ETA as a finish time with a range, current metrics, ranks.

Rows, per run: the headline (step/total, a progress bar, steps/s, "ETA 14:32 (±20m)"), the newest value of its
headline metrics, a summary of its ranks ("8 ranks · 1 behind"), and a row for each rank that lags: more than
:data:`LAG_SHOWN_S` seconds of progress behind the leader, or silent (at most :data:`MAX_LAGGARD_ROWS`,
furthest behind first). A rank that stops lagging keeps its row for :data:`LAG_HOLD_S` more seconds, below the
ones that lag: a rank hovering at the threshold would otherwise make the panel, and the chart sized around it,
grow and shrink every few seconds. The panel stays a few rows per run however many ranks there are, so every
run fits; ``l`` / right arrow expands a run to every rank, ``h`` / left arrow folds it back. The numbers come
from the rank furthest behind (:func:`trainmon_tui.report.run_progress`): a run ends when its slowest rank
does. Finish times are store times turned into wall-clock times by a
:class:`~trainmon_tui.ui.format.WallClock`, which tests fix.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message

from trainmon_tui.analysis.eta import Eta
from trainmon_tui.report import DEFAULT_LOG_SILENT_S, HEADLINE_METRICS, RunHints, RunProgress, run_progress
from trainmon_tui.state.store import ProgressUnit, RankSnapshot, RunSnapshot, StoreSnapshot
from trainmon_tui.ui.format import (
    UNKNOWN,
    WallClock,
    bar,
    fmt_duration,
    fmt_metric,
    fmt_rate,
    fmt_span,
    shorten,
)
from trainmon_tui.ui.widgets.row_list import RowList

#: A rank at least this many seconds of progress (at the run's rate) behind the leader gets a row of its own.
LAG_SHOWN_S = 10.0
#: How long a rank that stopped lagging keeps its row (see the module docstring).
LAG_HOLD_S = 30.0
#: Rank rows shown for a run that is not expanded.
MAX_LAGGARD_ROWS = 3
_NAME_CELLS = 12
_BAR_CELLS = 10
_RANK_BAR_CELLS = 10
_NO_HINTS: Mapping[str, RunHints] = MappingProxyType({})


def finish_clock(eta: Eta, behind: RankSnapshot | None, now: float, clock: WallClock) -> str:
    """``ETA 14:32 (±20m)``, ``ETA Sun 02:10 (-5m/+13h)``: when the run ends on the wall clock, and how far
    before or after that the range reaches (offsets stay short where two clock times would not); "done" at
    the end.

    The estimate dates from the slowest rank's newest line, so the wall time of that line is the start.
    """
    if eta.remaining_steps is not None and eta.remaining_steps <= 0:
        return "done"
    if eta.eta_s is None or behind is None:
        return f"ETA {UNKNOWN}"
    start = clock.wall_time(now, behind.progress.last_line_t)
    text = f"ETA {clock.fmt_clock(start + eta.eta_s)}"
    if eta.eta_low_s is None or eta.eta_high_s is None:
        return text
    earlier = fmt_span(eta.eta_s - eta.eta_low_s)
    later = fmt_span(eta.eta_high_s - eta.eta_s)
    if earlier is None and later is None:
        return text
    if earlier == later:
        return f"{text} (±{later})"
    parts = [f"-{earlier}"] if earlier is not None else []
    parts += [f"+{later}"] if later is not None else []
    return f"{text} ({'/'.join(parts)})"


def progress_text(progress: RunProgress) -> str:
    """``1200/5000`` steps, or ``ep 3/10`` for logs that count epochs; "-" for what is unknown."""
    if progress.unit is ProgressUnit.STEP or (progress.step is not None and progress.unit is None):
        total = UNKNOWN if progress.total_steps is None else str(progress.total_steps)
        return f"{UNKNOWN if progress.step is None else progress.step}/{total}"
    if progress.epoch is not None:
        total = UNKNOWN if progress.total_epochs is None else str(progress.total_epochs)
        epoch = progress.epoch
        shown = str(int(epoch)) if epoch == int(epoch) else f"{epoch:.2f}"
        return f"ep {shown}/{total}"
    return f"{UNKNOWN}/{UNKNOWN}"


def rank_position(rank: RankSnapshot) -> str:
    """Where a rank is: its step, else ``ep3 120/500`` (epoch, batch/batches), else "-"."""
    progress = rank.progress
    if progress.step is not None:
        return str(progress.step)
    if progress.epoch is not None:
        epoch = progress.epoch
        shown = str(int(epoch)) if epoch == int(epoch) else f"{epoch:.2f}"
        if progress.batch is not None and progress.batches_per_epoch is not None:
            return f"ep{shown} {progress.batch}/{progress.batches_per_epoch}"
        return f"ep{shown}"
    return UNKNOWN


def run_fraction(progress: RunProgress) -> float | None:
    if progress.step is not None and progress.total_steps:
        return min(max(progress.step / progress.total_steps, 0.0), 1.0)
    return None if progress.behind is None else progress.behind.fraction_done()


def headline_metrics(run: RunSnapshot) -> list[tuple[str, float]]:
    """The newest value of each headline metric, as the lowest rank (or an unranked line) printed it."""
    values: list[tuple[str, float]] = []
    for name in HEADLINE_METRICS:
        ranks = [rank for rank, metric_name in run.metrics if metric_name == name]
        if not ranks:
            continue
        rank = min(ranks, key=lambda rank: -1 if rank is None else rank)
        values.append((name, run.metrics[(rank, name)].last))
    return values


def laggards(run: RunSnapshot, progress: RunProgress, now: float, log_silent_s: float) -> list[RankSnapshot]:
    """The ranks worth a row of their own, in order: silent ones (no line for ``log_silent_s``), then the
    ones more than :data:`LAG_SHOWN_S` seconds of progress behind the leader (at least 2 units when the
    rate is unknown), furthest behind first. Ranks compare by their newest progress value when they all
    count the same unit."""
    silent = [rank for rank in run.ranks if now - rank.progress.last_line_t > log_silent_s]
    positions = [(rank, rank.observations[-1][1]) for rank in run.ranks if rank.observations]
    behind: list[tuple[float, RankSnapshot]] = []
    if positions and len({rank.unit for rank in run.ranks}) == 1:
        lead = max(position for _, position in positions)
        rate = progress.eta.steps_per_s
        for rank, position in positions:
            gap = lead - position
            if gap <= 0 or any(rank is quiet for quiet in silent):
                continue
            if (gap / rate >= LAG_SHOWN_S) if rate else gap >= 2.0:
                behind.append((gap, rank))
    behind.sort(key=lambda item: (-item[0], -1 if item[1].rank is None else item[1].rank))
    return silent + [rank for _, rank in behind]


class RunsView(RowList):
    """Runs and their ranks; Enter on a rank opens its log, on a run the merged log of all its ranks."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left,h", "collapse", "Collapse run", show=False),
        Binding("right,l", "expand", "Expand run", show=False),
        Binding("space", "toggle_row", "Collapse/expand run", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "runs-view--name",
        "runs-view--bar",
        "runs-view--dim",
        "runs-view--lag",
        "runs-view--stale",
    }

    def __init__(
        self,
        *,
        clock: WallClock | None = None,
        hints: Mapping[str, RunHints] = _NO_HINTS,
        log_silent_s: float = DEFAULT_LOG_SILENT_S,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ):
        super().__init__(name=name, id=id, classes=classes)
        self.clock = clock or WallClock()
        self.hints = hints
        self.log_silent_s = log_silent_s
        self.snapshot: StoreSnapshot | None = None
        #: Runs showing a row for every rank (the others show their laggards only).
        self.expanded: set[str] = set()
        self._progress: dict[str, RunProgress] = {}
        self._laggards: dict[str, list[RankSnapshot]] = {}
        # Per run, the ranks that lag and then those that lagged within LAG_HOLD_S, in row order; and when
        # each (run, rank) was last seen lagging.
        self._rank_rows: dict[str, list[RankSnapshot]] = {}
        self._lagged_at: dict[tuple[str, int | None], float] = {}

    def show_snapshot(self, snapshot: StoreSnapshot) -> None:
        self.snapshot = snapshot
        self._progress = {
            name: run_progress(run, self.hints.get(name)) for name, run in snapshot.runs.items()
        }
        self._laggards = {
            name: laggards(run, self._progress[name], snapshot.now, self.log_silent_s)
            for name, run in snapshot.runs.items()
        }
        self._hold_rank_rows(snapshot)
        self._rebuild()

    def _hold_rank_rows(self, snapshot: StoreSnapshot) -> None:
        now = snapshot.now
        lagged_at = self._lagged_at
        for name, lagging in self._laggards.items():
            for rank in lagging:
                lagged_at[(name, rank.rank)] = now
        self._lagged_at = lagged_at = {
            key: t for key, t in lagged_at.items() if now - t <= LAG_HOLD_S and key[0] in snapshot.runs
        }
        self._rank_rows = {}
        for name, run in snapshot.runs.items():
            lagging = self._laggards[name]
            shown = {rank.rank for rank in lagging}
            held = [rank for rank in run.ranks if rank.rank not in shown and (name, rank.rank) in lagged_at]
            self._rank_rows[name] = lagging + held

    def _rebuild(self) -> None:
        keys: list[Hashable] = []
        if self.snapshot is not None:
            for name, run in self.snapshot.runs.items():
                keys.append(("run", name))
                keys.append(("metrics", name))
                if len(run.ranks) < 2:
                    # One rank (or unranked lines): the headline already says everything about it.
                    continue
                if name in self.expanded:
                    keys.extend(("rank", name, rank.rank) for rank in run.ranks)
                else:
                    keys.append(("summary", name))
                    keys.extend(
                        ("rank", name, rank.rank) for rank in self._rank_rows.get(name, [])[:MAX_LAGGARD_ROWS]
                    )
        self.set_rows(keys)

    def run_of_cursor(self) -> str | None:
        key = self.cursor_key
        if isinstance(key, tuple) and isinstance(key[1], str):
            return key[1]
        if self.snapshot is not None and self.snapshot.runs:
            return next(iter(self.snapshot.runs))
        return None

    def rank_of_cursor(self) -> RankSnapshot | None:
        key = self.cursor_key
        if self.snapshot is None or not isinstance(key, tuple) or key[0] != "rank":
            return None
        run = self.snapshot.runs.get(key[1])
        return None if run is None else run.rank(key[2])

    def post_message_cursor_moved(self) -> None:
        # The chart follows the run under the cursor.
        self.post_message(self.CursorRunChanged(self.run_of_cursor()))

    class CursorRunChanged(Message):
        """The cursor moved onto another run (or rank of one)."""

        def __init__(self, run: str | None) -> None:
            super().__init__()
            self.run = run

    # -------------------------------------------------------------------------------------- collapsing

    def action_collapse(self) -> None:
        run = self.run_of_cursor()
        if run is not None:
            self.expanded.discard(run)
            self._rebuild()
            self.move_cursor_to(("run", run))

    def action_expand(self) -> None:
        run = self.run_of_cursor()
        if run is not None and run not in self.expanded:
            self.expanded.add(run)
            self._rebuild()

    def action_toggle_row(self) -> None:
        run = self.run_of_cursor()
        if run in self.expanded:
            self.action_collapse()
        else:
            self.action_expand()

    # ----------------------------------------------------------------------------------------- drawing

    def _style(self, name: str) -> Style:
        return self.component_style(f"runs-view--{name}")

    def render_row(self, key: Hashable, width: int) -> Text:
        assert isinstance(key, tuple)
        if self.snapshot is None:
            return Text()
        run = self.snapshot.runs.get(key[1])
        progress = self._progress.get(key[1])
        if run is None or progress is None:
            return Text()
        kind = key[0]
        if kind == "run":
            return self._run_row(run, progress)
        if kind == "metrics":
            return self._metrics_row(run)
        if kind == "summary":
            return self._summary_row(run)
        rank = run.rank(key[2])
        return Text() if rank is None else self._rank_row(run, rank, progress)

    def _run_row(self, run: RunSnapshot, progress: RunProgress) -> Text:
        assert self.snapshot is not None
        text = Text(no_wrap=True)
        text.append("▾ " if run.name in self.expanded else "▸ ", self._style("dim"))
        text.append(shorten(run.name, _NAME_CELLS).ljust(_NAME_CELLS), self._style("name"))
        text.append(f" {progress_text(progress)} ")
        fraction = run_fraction(progress)
        text.append(bar(fraction, _BAR_CELLS), self._style("bar"))
        text.append(" " + ("  -%" if fraction is None else f"{fraction * 100:3.0f}%"))
        unit = (progress.unit or ProgressUnit.STEP).value
        text.append(f"  {fmt_rate(progress.eta.steps_per_s, unit)}")
        text.append(f"  {finish_clock(progress.eta, progress.behind, self.snapshot.now, self.clock)}")
        if progress.eta.eta_s is not None:
            text.append(f"  in {fmt_duration(progress.eta.eta_s)}", self._style("dim"))
        return text

    def _metrics_row(self, run: RunSnapshot) -> Text:
        text = Text("    ", no_wrap=True)
        values = headline_metrics(run)
        if not values:
            text.append("no metrics yet", self._style("dim"))
        for name, value in values:
            text.append(f"{name} ", self._style("dim"))
            style = self._style("lag") if not math.isfinite(value) else Style()
            text.append(f"{fmt_metric(value)}  ", style)
        return text

    def _summary_row(self, run: RunSnapshot) -> Text:
        """``16 ranks · 2 behind  (→ all)`` above the rows of those two, or ``8 ranks · level  (→ all)``."""
        text = Text(f"    {len(run.ranks)} ranks", no_wrap=True)
        behind = len(self._laggards.get(run.name, []))
        if behind:
            text.append(f" · {behind} behind", self._style("lag"))
            if behind > MAX_LAGGARD_ROWS:
                text.append(f" ({MAX_LAGGARD_ROWS} furthest below)", self._style("dim"))
        else:
            text.append(" · level", self._style("dim"))
        text.append("  (→ all)", self._style("dim"))
        return text

    @staticmethod
    def _rank_label(rank: RankSnapshot) -> str:
        return "r?" if rank.rank is None else f"r{rank.rank}"

    def _rank_row(self, run: RunSnapshot, rank: RankSnapshot, progress: RunProgress) -> Text:
        assert self.snapshot is not None
        text = Text(no_wrap=True)
        text.append(f"    {self._rank_label(rank):>4} ", self._style("name"))
        text.append(shorten(rank.host, 12).ljust(12), self._style("dim"))
        step = rank.progress.step
        text.append(f" {rank_position(rank):>11} ")
        text.append(bar(rank.fraction_done(), _RANK_BAR_CELLS), self._style("bar"))
        lead = progress.lead_step
        if step is not None and lead is not None and lead - step > 0:
            text.append(f"  -{lead - step} lags", self._style("lag"))
        silent_s = self.snapshot.now - rank.progress.last_line_t
        if silent_s > self.log_silent_s:
            text.append(f"  silent {fmt_duration(silent_s)}", self._style("stale"))
        return text
