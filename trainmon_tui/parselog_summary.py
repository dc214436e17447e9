"""parse-log's text output: each rank's latest progress and metrics and its ETA, folded from the records, and
merged from the summaries of a log's parts when it is read in parts."""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

from trainmon_tui.analysis.durations import format_duration
from trainmon_tui.analysis.eta import Eta, estimate_eta
from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.engine import ColumnBlock
from trainmon_tui.sanitize import clean_remote_text

# Enough (time, step) points for a robust recent rate, few enough to stay small for any log.
_ETA_POINTS = 4096
_MAX_EVENTS_SHOWN = 50
# A rank's progress fields, each the latest known value (RankSummary).
_PROGRESS_FIELDS = ("step", "total_steps", "epoch", "total_epochs", "batch", "batches_per_epoch")
_LINE = operator.attrgetter("line")


@dataclass(slots=True)
class RankSummary:
    """The latest known value of every progress field and metric for one rank (None = rank unknown)."""

    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    total_epochs: int | None = None
    batch: int | None = None
    batches_per_epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    last_line: int = 0
    records: int = 0
    # (timestamp, global progress in steps) for the ETA, newest last.
    progress_points: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_ETA_POINTS))
    # A summary of part of a log (see ParseSummary.merge): progress that depends on the epoch or the batches
    # per epoch before the part is left open, as (position in progress_points, batch, epoch, batches per
    # epoch) with what the part knew then; its point holds NaN until merged.
    midway: bool = False
    open_points: list[tuple[int, int, float | None, int | None]] = field(default_factory=list)

    def absorb(self, record: LogRecord) -> None:
        self.records += 1
        self.last_line = record.line
        if record.step is not None:
            self.step = record.step
        if record.total_steps is not None:
            self.total_steps = record.total_steps
        if record.epoch is not None:
            self.epoch = record.epoch
        if record.total_epochs is not None:
            self.total_epochs = record.total_epochs
        if record.batch is not None:
            self.batch = record.batch
        if record.batches_per_epoch is not None:
            self.batches_per_epoch = record.batches_per_epoch
        self.metrics.update(record.metrics)
        if record.timestamp is not None:
            done = self._steps_done(record)
            if done is not None:
                self.progress_points.append((record.timestamp, done))
            elif self.midway and record.batch is not None and None in (self.epoch, self.batches_per_epoch):
                self.open_points.append(
                    (len(self.progress_points), record.batch, self.epoch, self.batches_per_epoch)
                )
                self.progress_points.append((record.timestamp, math.nan))

    def merge(self, later: RankSummary) -> None:
        """Fold in the summary of the part of the log that follows (made with ``midway``): afterwards this is
        what absorbing that part's records here would have made."""
        points: Iterable[tuple[float, float]] = later.progress_points
        if later.open_points:
            settled: list[tuple[float, float] | None] = list(later.progress_points)
            for position, batch, epoch_then, per_epoch_then in later.open_points:
                epoch = self.epoch if epoch_then is None else epoch_then
                per_epoch = self.batches_per_epoch if per_epoch_then is None else per_epoch_then
                point = settled[position]
                assert point is not None
                settled[position] = (
                    (point[0], float((math.ceil(epoch) - 1) * per_epoch + batch))
                    if per_epoch and epoch is not None
                    else None
                )
            points = [point for point in settled if point is not None]
        self.progress_points.extend(points)
        self.records += later.records
        self.last_line = later.last_line
        for name in _PROGRESS_FIELDS:
            value = getattr(later, name)
            if value is not None:
                setattr(self, name, value)
        self.metrics.update(later.metrics)

    def _steps_done(self, record: LogRecord) -> float | None:
        if record.step is not None:
            return float(record.step)
        # Epoch-based logs number whole epochs from 1 (LogRecord's convention), so epoch N, batch b means N-1
        # epochs done plus b batches.
        if record.batch is not None and self.batches_per_epoch and self.epoch is not None:
            return (math.ceil(self.epoch) - 1) * self.batches_per_epoch + record.batch
        return None

    def total_units(self) -> float | None:
        if self.step is not None or self.total_steps is not None:
            return None if self.total_steps is None else float(self.total_steps)
        if self.total_epochs is not None and self.batches_per_epoch:
            return float(self.total_epochs * self.batches_per_epoch)
        return None

    def eta(self) -> Eta | None:
        if len(self.progress_points) < 2:
            return None
        return estimate_eta(list(self.progress_points), self.total_units())


@dataclass(slots=True)
class ParseSummary:
    """Everything the text output needs, folded from the stream."""

    path: str
    lines: int = 0
    record_count: int = 0
    ranks: dict[int | None, RankSummary] = field(default_factory=dict)
    events: list[LogEvent] = field(default_factory=list)
    event_counts: dict[str, int] = field(default_factory=dict)
    format: str | None = None
    # A summary of a part of the log, to be merged into the summary of what comes before it (see merge).
    midway: bool = False

    def rank(self, rank_id: int | None) -> RankSummary:
        summary = self.ranks.get(rank_id)
        if summary is None:
            # A part's points are unbounded: which are kept is known only once its open ones are settled.
            summary = RankSummary(progress_points=deque(), midway=True) if self.midway else RankSummary()
            self.ranks[rank_id] = summary
        return summary

    def absorb(self, records: list[LogRecord], events: list[LogEvent]) -> None:
        for record in records:
            self.record_count += 1
            summary = self.ranks.get(record.rank)
            if summary is None:
                summary = self.rank(record.rank)
            summary.absorb(record)
        for event in events:
            self.event_counts[event.kind] = self.event_counts.get(event.kind, 0) + 1
            if len(self.events) < _MAX_EVENTS_SHOWN:
                self.events.append(event)

    def merge(self, later: ParseSummary) -> None:
        """Fold in the summary (made with ``midway``) of the lines that follow the ones summed up here."""
        self.lines += later.lines
        self.record_count += later.record_count
        for rank_id, rank in later.ranks.items():
            self.rank(rank_id).merge(rank)
        for kind, count in later.event_counts.items():
            self.event_counts[kind] = self.event_counts.get(kind, 0) + count
        self.events += later.events[: max(0, _MAX_EVENTS_SHOWN - len(self.events))]


def with_block_ends(
    records: list[LogRecord], blocks: list[ColumnBlock], summary: ParseSummary
) -> list[LogRecord]:
    """``records`` merged in line order with what the summary needs of each column-wise block: all its
    records where they carry timestamps (every one is a point of the ETA) or ranks of their own, else only
    its first and last, the others only counted (into ``summary``) as absorbed.

    That folds to the same summary: the lines of a block share a rank and the same fields and metric names
    (a field is a number on all of them or on none), so a metric's first appearance and every field's and
    metric's last value are on a block's first or last line, or on another record.
    """
    merged = list(records)
    for block in blocks:
        count = len(block.numbers)
        rank_id = block.rank
        if count <= 2 or isinstance(rank_id, list) or block.has_timestamps():
            merged += block.records()
            continue
        merged += block.records((0, count - 1))
        rank = summary.rank(rank_id)
        rank.records += count - 2
        summary.record_count += count - 2
    merged.sort(key=_LINE)
    return merged


class SummaryPieces:
    """The summary of each piece of a log read in parts (a parselog_parallel.PieceSink)."""

    def __init__(self) -> None:
        self._summary = ParseSummary(path="", midway=True)

    def take(
        self, lines: list[str], records: list[LogRecord], events: list[LogEvent], blocks: list[ColumnBlock]
    ) -> None:
        summary = self._summary
        summary.lines += len(lines)
        if blocks:
            records = with_block_ends(records, blocks, summary)
        if records or events:
            summary.absorb(records, events)

    def take_finish(self, records: list[LogRecord], events: list[LogEvent]) -> None:
        self._summary.absorb(records, events)

    def payload(self) -> ParseSummary:
        summary = self._summary
        self._summary = ParseSummary(path="", midway=True)
        return summary


def _fmt_value(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.6g}"


def _progress_text(rank: RankSummary) -> str:
    parts = []
    if rank.step is not None:
        parts.append(f"step {rank.step}" + (f"/{rank.total_steps}" if rank.total_steps is not None else ""))
    elif rank.total_steps is not None:
        parts.append(f"total steps {rank.total_steps}")
    if rank.epoch is not None:
        epoch = f"{rank.epoch:g}"
        parts.append(f"epoch {epoch}" + (f"/{rank.total_epochs}" if rank.total_epochs is not None else ""))
    if rank.batch is not None:
        parts.append(
            f"batch {rank.batch}"
            + (f"/{rank.batches_per_epoch}" if rank.batches_per_epoch is not None else "")
        )
    return "  ".join(parts) if parts else "no progress fields"


def _eta_text(rank: RankSummary) -> str:
    eta = rank.eta()
    if eta is None:
        return "unknown (the log has no timestamps next to its progress)"
    rate = "unknown rate" if eta.steps_per_s is None else _rate_text(eta.steps_per_s)
    if eta.eta_s is None:
        return f"unknown (no total in the log), {rate}"
    last_time = rank.progress_points[-1][0]
    try:
        finish_at = datetime.fromtimestamp(last_time + eta.eta_s, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        finish = f", finishing {finish_at} as of the last line"
    except (ValueError, OverflowError, OSError):
        # A date past what datetime can hold (a garbled timestamp in the log): no finishing date.
        finish = ""
    spread = ""
    if eta.eta_low_s is not None and eta.eta_high_s is not None:
        spread = f" (range {format_duration(eta.eta_low_s)} - {format_duration(eta.eta_high_s)})"
    return f"{format_duration(eta.eta_s)}{spread} at {rate}{finish}"


def _rate_text(steps_per_s: float) -> str:
    if steps_per_s <= 0:
        return "no progress"
    if steps_per_s >= 1:
        return f"{steps_per_s:.3g} steps/s"
    return f"{1 / steps_per_s:.3g} s/step"


def write_text(summary: ParseSummary, out: IO[str]) -> None:
    clean = clean_remote_text
    out.write(f"file     {clean(summary.path)}\n")
    out.write(f"format   {summary.format or 'unknown (no known training-log lines)'}\n")
    event_total = sum(summary.event_counts.values())
    out.write(f"lines    {summary.lines}   records {summary.record_count}   events {event_total}\n")
    known_ranks = sorted(r for r in summary.ranks if r is not None)
    rank_list = ", ".join(str(r) for r in known_ranks) if known_ranks else "none named"
    out.write(f"ranks    {rank_list}\n")
    for rank_id in sorted(summary.ranks, key=lambda r: -1 if r is None else r):
        rank = summary.ranks[rank_id]
        label = "(no rank)" if rank_id is None else f"rank {rank_id}"
        out.write(f"\n{label}: {rank.records} records, last at line {rank.last_line}\n")
        out.write(f"  progress {_progress_text(rank)}\n")
        if rank.metrics:
            metrics = "  ".join(f"{clean(name)}={_fmt_value(v)}" for name, v in rank.metrics.items())
            out.write(f"  metrics  {metrics}\n")
        out.write(f"  eta      {_eta_text(rank)}\n")
    if summary.event_counts:
        counts = ", ".join(f"{kind} x{n}" for kind, n in sorted(summary.event_counts.items()))
        out.write(f"\nevents   {counts}\n")
        for event in summary.events:
            about = "" if event.rank is None else f" rank {event.rank}"
            out.write(f"  line {event.line}{about}  {event.kind}: {clean(event.text)}\n")
        hidden = sum(summary.event_counts.values()) - len(summary.events)
        if hidden > 0:
            out.write(f"  ... and {hidden} more (see --json)\n")
    else:
        out.write("\nevents   none\n")
