"""`trainmon-tui parse-log`: stream one log through the parser and print what it read, as text or JSON.

Streams: records are written (JSON) or folded into a per-rank summary (text) as they come, so memory does not
grow with the size of the log. Everything printed that came from the log is made inert and has its secrets
masked.
"""

from __future__ import annotations

import io
import json
import math
import operator
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import chain, repeat
from typing import IO, Any

from trainmon_tui.analysis.durations import format_duration
from trainmon_tui.analysis.eta import Eta, estimate_eta
from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parselog_parallel import (
    DEFAULT_SIZES,
    ParallelReadError,
    PartSizes,
    ReadTotals,
    can_read_in_parts,
    default_jobs,
    read_in_parts,
)
from trainmon_tui.parsers.trainlog.base import all_finite
from trainmon_tui.parsers.trainlog.engine import ColumnBlock, LogParser
from trainmon_tui.parsers.trainlog.paths import rank_from_path
from trainmon_tui.sanitize import clean_remote_text

# Enough (time, step) points for a robust recent rate, few enough to stay small for any log.
_ETA_POINTS = 4096
_MAX_EVENTS_SHOWN = 50
# A rank's progress fields, each the latest known value (RankSummary).
_PROGRESS_FIELDS = ("step", "total_steps", "epoch", "total_epochs", "batch", "batches_per_epoch")
# Characters read per block: about ten thousand lines of a typical log, a few MB of memory at most.
_CHUNK_CHARS = 1 << 20


class LogReadError(Exception):
    """The log could not be opened or read; the message names the path and the reason."""


def open_log(path: str) -> IO[str]:
    """Open a log for reading (``-`` is standard input); a failure is a one-line LogReadError.

    Lines are split on ``\\n`` only: tqdm redraws with a bare ``\\r``, and Python's universal newlines would
    turn every redraw into a line of its own and shift line numbers away from what ``wc -l`` and editors show.
    """
    try:
        if path == "-":
            return open(sys.stdin.fileno(), encoding="utf-8", errors="replace", newline="\n", closefd=False)
        return open(path, encoding="utf-8", errors="replace", newline="\n")
    except OSError as exc:
        raise LogReadError(f"{path}: cannot read: {exc.strerror or exc}") from None


def iter_log_lines(stream: IO[str], path: str) -> Iterator[str]:
    """Physical lines without their line ending; closes the stream when done."""
    for block in iter_log_blocks(stream, path):
        yield from block


def iter_log_blocks(stream: IO[str], path: str, chunk_chars: int = _CHUNK_CHARS) -> Iterator[list[str]]:
    """Physical lines without their line ending, many at a time; closes the stream when done.

    The same lines as ``for line in stream`` with ``line.rstrip("\\r\\n")``, read a chunk at a time and split
    in one C call each: iterating a text file costs more per line than the parser spends on many lines.
    """
    with stream:
        carry = ""
        try:
            while True:
                chunk = stream.read(chunk_chars)
                if not chunk:
                    break
                text = carry + chunk if carry else chunk
                lines = text.split("\n")
                carry = lines.pop()
                if "\r" in text:
                    # Only a line's end loses its \r: the ones inside are tqdm redraws the parser reads.
                    lines = list(map(str.rstrip, lines, repeat("\r")))
                if lines:
                    yield lines
        except OSError as exc:
            raise LogReadError(f"{path}: read failed: {exc.strerror or exc}") from None
        if carry:
            # The last line had no newline; a file iterator yields it too (unless it is empty).
            carry = carry.rstrip("\r")
            yield [carry]


def _json_number(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def record_to_json(record: LogRecord) -> dict[str, Any]:
    return {
        "line": record.line,
        "rank": record.rank,
        "step": record.step,
        "total_steps": record.total_steps,
        "epoch": record.epoch,
        "total_epochs": record.total_epochs,
        "batch": record.batch,
        "batches_per_epoch": record.batches_per_epoch,
        "metrics": {clean_remote_text(k): _json_number(v) for k, v in record.metrics.items()},
    }


# The fields of a record before its metrics, in record_to_json's order.
_FIXED_FIELDS = operator.attrgetter(
    "line", "rank", "step", "total_steps", "epoch", "total_epochs", "batch", "batches_per_epoch"
)
_EPOCH = operator.attrgetter("epoch")
_LINE = operator.attrgetter("line")
_METRICS = operator.attrgetter("metrics")
_not_none = partial(operator.is_not, None)
# NUL never occurs in what the templates format (numbers, None, checked metric names): it separates records.
_FIXED_TEMPLATE = (
    '{"line": %r, "rank": %r, "step": %r, "total_steps": %r, "epoch": %r, "total_epochs": %r, "batch": %r, '
    '"batches_per_epoch": %r, "metrics": {\0'
)
_MAX_PLAIN_NAMES = 4096
# record_to_json's keys before the metrics, as encode_columns writes them before each value.
_FIELD_LABELS = (
    '{"line": ',
    ', "rank": ',
    ', "step": ',
    ', "total_steps": ',
    ', "epoch": ',
    ', "total_epochs": ',
    ', "batch": ',
    ', "batches_per_epoch": ',
)


class RecordEncoder:
    """The JSON text of records, exactly ``json.dumps(record_to_json(record))``, formatted a block at a time.

    json.dumps spends most of its time per dict key; here one ``%`` over a template repeated for every record
    of a block formats them all in one C call. That needs what the template cannot express to be absent: it
    holds for metric names already seen to need neither sanitising nor JSON escaping ("plain"), and for an
    epoch that is a finite number or None (json writes ``NaN`` where ``%r`` writes ``nan``). A record with
    anything else goes through json.dumps. Metric values that are not finite are quoted, as record_to_json
    does.
    """

    def __init__(self) -> None:
        self._plain: set[str] = set()
        self._metric_templates: list[str] = []

    def encode(self, records: Sequence[LogRecord]) -> list[str]:
        """The JSON text of each record, in order."""
        if not records:
            return []
        all_metrics = list(map(_METRICS, records))
        plain = self._plain
        if not plain.issuperset(chain.from_iterable(all_metrics)):
            self._learn_names(all_metrics)
        epoch_sum = sum(filter(_not_none, map(_EPOCH, records)))
        if epoch_sum - epoch_sum == 0 and plain.issuperset(chain.from_iterable(all_metrics)):
            return self._format_or_dump(records, all_metrics)
        # Some record needs json.dumps (or the epochs only added up to infinity): format the runs of records
        # between such ones.
        texts: list[str] = []
        run: list[LogRecord] = []
        for record in records:
            epoch = record.epoch
            if plain.issuperset(record.metrics) and (epoch is None or epoch - epoch == 0):
                run.append(record)
                continue
            if run:
                texts += self._format_or_dump(run, list(map(_METRICS, run)))
                run = []
            texts.append(json.dumps(record_to_json(record)))
        if run:
            texts += self._format_or_dump(run, list(map(_METRICS, run)))
        return texts

    def _format_or_dump(self, records: Sequence[LogRecord], all_metrics: list[Any]) -> list[str]:
        try:
            return self._format(records, all_metrics)
        except TypeError:
            # Metrics held in a mapping that is not a dict (LogRecord allows any Mapping).
            return [json.dumps(record_to_json(record)) for record in records]

    def _format(self, records: Sequence[LogRecord], all_metrics: list[Any]) -> list[str]:
        fixed = (_FIXED_TEMPLATE * len(records)) % tuple(chain.from_iterable(map(_FIXED_FIELDS, records)))
        # Only a None field prints "None": numbers cannot, and plain names never hold it.
        fixed_parts = fixed.replace("None", "null").split("\0")
        templates = self._templates_for(max(map(len, all_metrics)))
        metrics_template = "".join(map(templates.__getitem__, map(len, all_metrics)))
        names_and_values = tuple(chain.from_iterable(chain.from_iterable(map(dict.items, all_metrics))))
        metrics_text = metrics_template % names_and_values
        value_sum = sum(chain.from_iterable(map(dict.values, all_metrics)))
        if value_sum - value_sum != 0:
            # A value is nan or ±inf: record_to_json writes it as a string. A plain name holds no ":", so
            # ": nan" and ": inf" can only be such a value.
            metrics_text = metrics_text.replace(": nan", ': "nan"').replace(": inf", ': "inf"')
            metrics_text = metrics_text.replace(": -inf", ': "-inf"')
        return list(map(str.__add__, fixed_parts, metrics_text.split("\0")))[: len(records)]

    def encode_columns(self, block: ColumnBlock) -> list[str] | None:
        """The JSON text of each record of a column-wise block, exactly what :meth:`encode` gives for its
        records, formatted by one ``%`` over a template repeated for every line, with no LogRecord or
        metrics dict made; None when the template cannot say it (a metric name that is not plain, a value
        that is not finite: :meth:`encode` then takes the block's records)."""
        columns = block.columns
        plain = self._plain
        names = columns.names
        if not plain.issuperset(names):
            self._learn_names([names])
            if not plain.issuperset(names):
                return None
        parts: list[str] = []
        values: list[list[int] | list[float]] = []
        fixed: tuple[object, ...] = (block.numbers, block.rank, *columns[:6])
        for label, value in zip(_FIELD_LABELS, fixed, strict=True):
            parts.append(label)
            if type(value) is list:
                if value and type(value[0]) is float and not all_finite(value):
                    return None
                parts.append("%r")
                values.append(value)
            elif value is None:
                parts.append("null")
            elif type(value) is int or (type(value) is float and math.isfinite(value)):
                parts.append(repr(value))
            else:
                return None
        parts.append(', "metrics": {')
        for index, (name, column) in enumerate(zip(names, columns.values, strict=True)):
            if not all_finite(column):
                return None
            parts.append(('"%s": %%r' if index == 0 else ', "%s": %%r') % name)
            values.append(column)
        if len(set(names)) != len(names):
            # A name met twice is one key in the metrics dict: let encode() print it.
            return None
        parts.append("}}\0")
        template = "".join(parts)
        texts = (template * len(block.numbers)) % tuple(chain.from_iterable(zip(*values, strict=True)))
        return texts.split("\0")[:-1]

    def _learn_names(self, all_metrics: list[Any]) -> None:
        plain = self._plain
        for metrics in all_metrics:
            for name in metrics:
                if name not in plain and len(plain) < _MAX_PLAIN_NAMES and _is_plain_name(name):
                    plain.add(name)

    def _templates_for(self, count: int) -> list[str]:
        templates = self._metric_templates
        while len(templates) <= count:
            templates.append(", ".join(['"%s": %r'] * len(templates)) + "}}\0")
        return templates


def _is_plain_name(name: str) -> bool:
    """A metric name that JSON and sanitising leave as it is, and that cannot be mistaken for the template's
    own text ("None", ": ", NUL)."""
    return (
        type(name) is str
        and name.isascii()
        and name.isprintable()
        and "None" not in name
        and ":" not in name
        and "%" not in name
        and json.dumps(name) == '"' + name + '"'
        and clean_remote_text(name) == name
    )


def _texts_in_line_order(
    encoder: RecordEncoder, records: list[LogRecord], blocks: list[ColumnBlock]
) -> list[str]:
    """The JSON text of ``records`` and of every record of ``blocks``, in line order (a line's records keep
    their order: no block shares a line with a record or another block)."""
    texts = encoder.encode(records)
    line_numbers = list(map(_LINE, records))
    for block in blocks:
        block_texts = encoder.encode_columns(block)
        if block_texts is None:
            block_texts = encoder.encode(block.records())
        texts += block_texts
        line_numbers += block.numbers
    order = sorted(range(len(texts)), key=line_numbers.__getitem__)
    return list(map(texts.__getitem__, order))


def event_to_json(event: LogEvent) -> dict[str, Any]:
    return {
        "line": event.line,
        "rank": event.rank,
        "kind": str(event.kind),
        "text": clean_remote_text(event.text),
    }


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


def _default_rank(path: str) -> int | None:
    return None if path == "-" else rank_from_path(os.path.basename(path))


def _parser_for(path: str, lines_before: int = 0) -> LogParser:
    return LogParser(default_rank=_default_rank(path), lines_before=lines_before)


def summarise(path: str, jobs: int = 1, sizes: PartSizes = DEFAULT_SIZES) -> ParseSummary:
    """The summary of the log at ``path``; a large file (see ``sizes``) is read by up to ``jobs``
    processes."""
    summary = ParseSummary(path=path)
    if can_read_in_parts(path, jobs, sizes):
        totals = ReadTotals()
        for piece in read_in_parts(
            path,
            jobs=jobs,
            make_parser=partial(_parser_for, path),
            make_sink=_SummaryPieces,
            totals=totals,
            sizes=sizes,
        ):
            summary.merge(piece)
        summary.format = totals.format
        return summary
    parser = _parser_for(path)
    for lines in iter_log_blocks(open_log(path), path):
        summary.lines += len(lines)
        records, events, blocks = parser.feed_block_columns(lines)
        if blocks:
            records = _with_block_ends(records, blocks, summary)
        if records or events:
            summary.absorb(records, events)
    summary.absorb(*parser.finish())
    summary.format = parser.format
    return summary


class _SummaryPieces:
    """The summary of each piece of a log read in parts (a parselog_parallel.PieceSink)."""

    def __init__(self) -> None:
        self._summary = ParseSummary(path="", midway=True)

    def take(
        self, lines: list[str], records: list[LogRecord], events: list[LogEvent], blocks: list[ColumnBlock]
    ) -> None:
        summary = self._summary
        summary.lines += len(lines)
        if blocks:
            records = _with_block_ends(records, blocks, summary)
        if records or events:
            summary.absorb(records, events)

    def take_finish(self, records: list[LogRecord], events: list[LogEvent]) -> None:
        self._summary.absorb(records, events)

    def payload(self) -> ParseSummary:
        summary = self._summary
        self._summary = ParseSummary(path="", midway=True)
        return summary


def _with_block_ends(
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


def write_json(
    path: str, out: IO[str], jobs: int = 1, sizes: PartSizes = DEFAULT_SIZES, totals: ReadTotals | None = None
) -> None:
    """Stream ``{"records": [...], "events": [...], "format": ...}``: records are written as they are read (a
    large file, see ``sizes``, by up to ``jobs`` processes, a part at a time; ``totals`` tells how that
    went)."""
    if totals is None:
        totals = ReadTotals()
    pieces: Iterator[tuple[str | bytes, list[dict[str, Any]]]]
    if can_read_in_parts(path, jobs, sizes):
        pieces = read_in_parts(
            path,
            jobs=jobs,
            make_parser=partial(_parser_for, path),
            make_sink=partial(_JsonPieces, as_bytes=True),
            totals=totals,
            sizes=sizes,
            streams=(out,),
        )
    else:
        pieces = _json_pieces(open_log(path), path, totals)
    # Only once the log is open: a log that cannot be read prints nothing but its error.
    out.write('{"records": [')
    binary: IO[bytes] | None = getattr(out, "buffer", None)
    first = True
    events: list[dict[str, Any]] = []
    for text, new_events in pieces:
        if text:
            lead = "\n  " if first else ",\n  "
            if isinstance(text, str):
                out.write(lead + text)
            elif binary is not None:
                out.flush()
                binary.write(lead.encode("ascii") + text)
            else:
                out.write(lead + text.decode("ascii"))
            first = False
        events += new_events
    out.write("\n],\n")
    out.write(' "events": ' + json.dumps(events) + ",\n")
    out.write(' "format": ' + json.dumps(totals.format) + "}\n")


def _json_pieces(
    stream: IO[str], path: str, totals: ReadTotals
) -> Iterator[tuple[str | bytes, list[dict[str, Any]]]]:
    """write_json's pieces read by one parser in this process: a block at a time, then its finish."""
    blocks = iter_log_blocks(stream, path)
    parser = _parser_for(path)
    sink = _JsonPieces()
    for lines in blocks:
        records, events, column_blocks = parser.feed_block_columns(lines)
        if records or events or column_blocks:
            sink.take(lines, records, events, column_blocks)
            yield sink.payload()
    sink.take_finish(*parser.finish())
    yield sink.payload()
    totals.format = parser.format


class _JsonPieces:
    """The JSON text of a piece's records (joined as write_json joins them) and its events as JSON objects
    (a parselog_parallel.PieceSink). ``as_bytes``: the text encoded (ASCII: JSON escapes everything else, and
    plain metric names are ASCII), for a payload another process writes straight to its output's buffer."""

    def __init__(self, *, as_bytes: bool = False) -> None:
        self._as_bytes = as_bytes
        self._encoder = RecordEncoder()
        self._texts: list[str] = []
        self._events: list[dict[str, Any]] = []

    def take(
        self, lines: list[str], records: list[LogRecord], events: list[LogEvent], blocks: list[ColumnBlock]
    ) -> None:
        if blocks:
            self._texts += _texts_in_line_order(self._encoder, records, blocks)
        elif records:
            self._texts += self._encoder.encode(records)
        if events:
            self._events += map(event_to_json, events)

    def take_finish(self, records: list[LogRecord], events: list[LogEvent]) -> None:
        self.take([], records, events, [])

    def payload(self) -> tuple[str | bytes, list[dict[str, Any]]]:
        text = ",\n  ".join(self._texts)
        events = self._events
        self._texts = []
        self._events = []
        return (text.encode("ascii") if self._as_bytes else text), events


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


def run_parse_log(path: str, *, as_json: bool, out: IO[str], jobs: int | None = 1) -> int:
    """Exit status: 0 when the log was read, 2 when it could not be, 141 when the output was closed early
    (``| head``), 130 on Ctrl-C. A large file is read by up to ``jobs`` processes (None:
    parselog_parallel.default_jobs()), with the same output."""
    if jobs is None:
        jobs = default_jobs()
    try:
        if as_json:
            write_json(path, out, jobs)
        else:
            write_text(summarise(path, jobs), out)
        out.flush()
    except (LogReadError, ParallelReadError) as exc:
        print(f"trainmon-tui parse-log: {clean_remote_text(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away: nothing left to say, and nothing to flush into the closed pipe at exit.
        _silence(out)
        return 141
    except KeyboardInterrupt:
        return 130
    return 0


def _silence(out: IO[str]) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
