"""parse-log's JSON: the text of records and events, many records formatted by one ``%``.

The text is what ``json.dumps`` of :func:`record_to_json` gives, byte for byte; metric names that JSON or
sanitising would change, and values that are not finite, go through ``json.dumps`` itself.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Sequence
from functools import partial
from itertools import chain
from typing import Any

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.base import all_finite
from trainmon_tui.parsers.trainlog.engine import ColumnBlock
from trainmon_tui.sanitize import clean_remote_text


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
        values: list[Sequence[int] | Sequence[float]] = []
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


def texts_in_line_order(
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


class JsonPieces:
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
            self._texts += texts_in_line_order(self._encoder, records, blocks)
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
