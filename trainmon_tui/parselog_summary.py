"""parse-log's text output: each rank's latest progress and metrics and its ETA, folded from the records, and
merged from the summaries of a log's parts when it is read in parts."""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import IO, TypeVar

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
_RANK = operator.attrgetter("rank")
_FIRST = operator.itemgetter(0)
_TIME_AND_DONE = operator.itemgetter(1, 2)
# An ETA point of a line whose record is not made: (line, timestamp, steps done).
_HeldPoint = tuple[int, float, float]
# What an open point (RankSummary.open_points) needs: the batch, and the epoch and batches per epoch then.
_Unsettled = tuple[int, float | None, int | None]
# A point as RankSummary.absorb_run gathers them: (line, timestamp, steps done, what it needs when open).
_LinePoint = tuple[int, float, float, _Unsettled | None]
_T = TypeVar("_T")


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
        """Absorb the next record of this rank."""
        self.absorb_run([record])

    def absorb_run(self, records: list[LogRecord], held: list[_HeldPoint] | None = None) -> None:
        """Absorb ``records`` of this rank, in line order, and the ETA points ``held`` for it by
        :func:`with_block_ends` (their lines' records are not made), in line order with the records' points.

        The progress fields live in locals while the records are read, so each record costs a few local
        stores rather than attribute stores.
        """
        step, total_steps, epoch = self.step, self.total_steps, self.epoch
        total_epochs, batch, per_epoch = self.total_epochs, self.batch, self.batches_per_epoch
        # In place (the same dict): unlike update(), |= is called without building an argument tuple.
        metrics = self.metrics
        fresh: list[_LinePoint] = []
        for record in records:
            if record.step is not None:
                step = record.step
            if record.total_steps is not None:
                total_steps = record.total_steps
            if record.epoch is not None:
                epoch = record.epoch
            if record.total_epochs is not None:
                total_epochs = record.total_epochs
            if record.batch is not None:
                batch = record.batch
            if record.batches_per_epoch is not None:
                per_epoch = record.batches_per_epoch
            metrics |= record.metrics
            if record.timestamp is None:
                continue
            # The steps done, from the fields as this record leaves them. Epoch-based logs number whole epochs
            # from 1 (LogRecord's convention), so epoch N, batch b means N-1 epochs done plus b batches.
            if record.step is not None:
                fresh.append((record.line, record.timestamp, float(record.step), None))
            elif record.batch is not None and per_epoch and epoch is not None:
                done = (math.ceil(epoch) - 1) * per_epoch + record.batch
                fresh.append((record.line, record.timestamp, done, None))
            elif self.midway and record.batch is not None and (epoch is None or per_epoch is None):
                fresh.append((record.line, record.timestamp, math.nan, (record.batch, epoch, per_epoch)))
        self.step, self.total_steps, self.epoch = step, total_steps, epoch
        self.total_epochs, self.batch, self.batches_per_epoch = total_epochs, batch, per_epoch
        if records:
            self.records += len(records)
            self.last_line = records[-1].line
        if held:
            fresh += [(line, stamp, done, None) for line, stamp, done in held]
            # Stable: points of one line (records of one line) keep their order; lines differ otherwise.
            fresh.sort(key=_FIRST)
        self._add_points(fresh)

    def _add_points(self, points: list[_LinePoint]) -> None:
        """Append points, in order, to ``progress_points``, an open one (with what it needs) also to
        ``open_points`` at its position."""
        progress_points = self.progress_points
        if self.midway:
            for position, (_, _, _, open_point) in enumerate(points, len(progress_points)):
                if open_point is not None:
                    self.open_points.append((position, *open_point))
        progress_points.extend(map(_TIME_AND_DONE, points))

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
    # Per rank, the ETA points with_block_ends took from lines whose records it did not make, for the next
    # absorb to fold in line order with its records (so empty between a block's absorb and the next block).
    held_points: dict[int | None, list[_HeldPoint]] = field(default_factory=dict)

    def rank(self, rank_id: int | None) -> RankSummary:
        summary = self.ranks.get(rank_id)
        if summary is None:
            # A part's points are unbounded: which are kept is known only once its open ones are settled.
            summary = RankSummary(progress_points=deque(), midway=True) if self.midway else RankSummary()
            self.ranks[rank_id] = summary
        return summary

    def absorb(self, records: list[LogRecord], events: list[LogEvent]) -> None:
        """Fold in ``records`` (in line order) and the points held for them, and ``events``."""
        self.record_count += len(records)
        held = self.held_points
        for rank_id, of_rank in _by_rank(records, held).items():
            self.rank(rank_id).absorb_run(of_rank, held.pop(rank_id, None))
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


def _by_rank(
    records: list[LogRecord], held: dict[int | None, list[_HeldPoint]]
) -> dict[int | None, list[LogRecord]]:
    """``records`` by rank, each rank's in line order, with every rank that has points held (maybe no
    records)."""
    by_rank: dict[int | None, list[LogRecord]] = {rank_id: [] for rank_id in held}
    # A rank's records mostly come in runs (a log of one rank, or each rank's lines in bursts).
    for rank_id, run in groupby(records, _RANK):
        of_rank = by_rank.get(rank_id)
        if of_rank is None:
            by_rank[rank_id] = list(run)
        else:
            of_rank += run
    return by_rank


def with_block_ends(
    records: list[LogRecord], blocks: list[ColumnBlock], summary: ParseSummary
) -> list[LogRecord]:
    """``records`` merged in line order with what the summary needs of each column-wise block: of each rank's
    lines in it, the records of the first and the last; the others are only counted (into ``summary``) as
    absorbed, and where they carry timestamps, their ETA points are held in ``summary`` for the next
    ``absorb``. Where the points would depend on fields of earlier records (a block without steps, whose
    points count epochs and batches), all the block's records are made instead.

    That folds to the same summary: a rank's lines in a block share the same fields and metric names (a
    field is a number on all of them or on none), so a metric's first appearance and every field's and
    metric's last value are on its first or last line there, or on another record.
    """
    merged = list(records)
    for block in blocks:
        count = len(block.numbers)
        stamped = block.has_timestamps()
        if count <= 2 or (stamped and block.columns.step is None):
            merged += block.records()
            continue
        stamps = block.timestamps() if stamped else None
        for rank_id, indexes in _indexes_by_rank(block.rank, count).items():
            merged += [_line_record(block, at, stamps) for at in {indexes[0]: None, indexes[-1]: None}]
            middle = indexes[1:-1]
            if middle:
                rank = summary.rank(rank_id)
                rank.records += len(middle)
                summary.record_count += len(middle)
                if stamps is not None:
                    summary.held_points.setdefault(rank_id, []).extend(_points_at(block, middle, stamps))
    merged.sort(key=_LINE)
    return merged


def _indexes_by_rank(rank: list[int] | int | None, count: int) -> Mapping[int | None, Sequence[int]]:
    """The indexes of a block's lines of each rank, ascending."""
    if not isinstance(rank, list):
        return {rank: range(count)}
    by_rank: dict[int | None, list[int]] = {}
    for at, rank_id in enumerate(rank):
        by_rank.setdefault(rank_id, []).append(at)
    return by_rank


def _line_record(block: ColumnBlock, at: int, stamps: list[float | None] | None) -> LogRecord:
    """The record of a block's line at index ``at`` (as ``block.records`` makes it, given the block's
    timestamps, which that would read again)."""
    columns = block.columns
    return LogRecord(
        line=block.numbers[at],
        rank=_value_at(block.rank, at),
        step=_value_at(columns.step, at),
        total_steps=_value_at(columns.total_steps, at),
        epoch=_value_at(columns.epoch, at),
        total_epochs=_value_at(columns.total_epochs, at),
        batch=_value_at(columns.batch, at),
        batches_per_epoch=_value_at(columns.batches_per_epoch, at),
        metrics=dict(zip(columns.names, [values[at] for values in columns.values], strict=True)),
        timestamp=None if stamps is None else stamps[at],
    )


def _value_at(column: list[_T] | _T | None, at: int) -> _T | None:
    """A column's value on the line at index ``at``: one per line, or one for all."""
    return column[at] if isinstance(column, list) else column


def _points_at(block: ColumnBlock, indexes: Sequence[int], stamps: list[float | None]) -> list[_HeldPoint]:
    """The ETA points of a block's lines at ``indexes`` (those with a timestamp): a line with a step has done
    that many steps, whatever came before it."""
    numbers, step = block.numbers, block.columns.step
    assert step is not None
    if isinstance(step, list):
        return [(numbers[at], stamp, float(step[at])) for at in indexes if (stamp := stamps[at]) is not None]
    return [(numbers[at], stamp, float(step)) for at in indexes if (stamp := stamps[at]) is not None]


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
