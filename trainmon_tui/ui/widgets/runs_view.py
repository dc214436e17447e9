"""The run panel: per run its progress, speed, ETA as a finish time with a range, current metrics, ranks.

Rows, per run: the headline (step/total, a progress bar, steps/s, "ETA 14:32 (14:20-14:51)"), the newest
value of its headline metrics, then one row per rank with its step and how far behind the leader it is, so
the rank that lags stands out. A run with many ranks starts collapsed to one summary row naming the slowest
rank. The numbers come from the rank furthest behind (:func:`trainmon_tui.report.run_progress`): a run ends
when its slowest rank does. Finish times are store times turned into wall-clock times by a
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
    shorten,
)
from trainmon_tui.ui.widgets.row_list import RowList

#: A run with more ranks than this starts collapsed to its summary row.
AUTO_COLLAPSE_RANKS = 8
_NAME_CELLS = 12
_BAR_CELLS = 10
_RANK_BAR_CELLS = 10
_NO_HINTS: Mapping[str, RunHints] = MappingProxyType({})


def finish_clock(eta: Eta, behind: RankSnapshot | None, now: float, clock: WallClock) -> str:
    """``ETA 14:32 (14:20-14:51)``: when the run ends on the wall clock, with its range; "done" at the end.

    The estimate dates from the slowest rank's newest line, so the wall time of that line is the start.
    """
    if eta.remaining_steps is not None and eta.remaining_steps <= 0:
        return "done"
    if eta.eta_s is None or behind is None:
        return f"ETA {UNKNOWN}"
    start = clock.wall_time(now, behind.progress.last_line_t)
    middle = clock.fmt_clock(start + eta.eta_s)
    text = f"ETA {middle}"
    if eta.eta_low_s is not None and eta.eta_high_s is not None:
        low = clock.fmt_clock(start + eta.eta_low_s)
        high = clock.fmt_clock(start + eta.eta_high_s)
        if not low == middle == high:
            text += f" ({low}-{high})"
    return text


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
        self.collapsed: set[str] = set()
        self._seen_runs: set[str] = set()
        self._progress: dict[str, RunProgress] = {}

    def show_snapshot(self, snapshot: StoreSnapshot) -> None:
        self.snapshot = snapshot
        self._progress = {
            name: run_progress(run, self.hints.get(name)) for name, run in snapshot.runs.items()
        }
        for name, run in snapshot.runs.items():
            if name not in self._seen_runs:
                self._seen_runs.add(name)
                if len(run.ranks) > AUTO_COLLAPSE_RANKS:
                    self.collapsed.add(name)
        self._rebuild()

    def _rebuild(self) -> None:
        keys: list[Hashable] = []
        if self.snapshot is not None:
            for name, run in self.snapshot.runs.items():
                keys.append(("run", name))
                keys.append(("metrics", name))
                if name in self.collapsed:
                    keys.append(("summary", name))
                else:
                    keys.extend(("rank", name, rank.rank) for rank in run.ranks)
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
            self.collapsed.add(run)
            self._rebuild()
            self.move_cursor_to(("run", run))

    def action_expand(self) -> None:
        run = self.run_of_cursor()
        if run is not None and run in self.collapsed:
            self.collapsed.discard(run)
            self._rebuild()

    def action_toggle_row(self) -> None:
        run = self.run_of_cursor()
        if run in self.collapsed:
            self.action_expand()
        else:
            self.action_collapse()

    # ----------------------------------------------------------------------------------------- drawing

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"runs-view--{name}")

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
            return self._summary_row(run, progress)
        rank = run.rank(key[2])
        return Text() if rank is None else self._rank_row(run, rank, progress)

    def _run_row(self, run: RunSnapshot, progress: RunProgress) -> Text:
        assert self.snapshot is not None
        text = Text(no_wrap=True)
        text.append("▸ " if run.name in self.collapsed else "▾ ", self._style("dim"))
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

    def _summary_row(self, run: RunSnapshot, progress: RunProgress) -> Text:
        text = Text(f"    {len(run.ranks)} ranks", no_wrap=True)
        behind = progress.behind
        lead = progress.lead_step
        if behind is not None and lead is not None and behind.progress.step is not None:
            gap = lead - behind.progress.step
            if gap > 0:
                text.append(f" · slowest {self._rank_label(behind)} on {behind.host}: ", self._style("dim"))
                text.append(f"{gap} steps behind", self._style("lag"))
                return text
        text.append(" · level", self._style("dim"))
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
