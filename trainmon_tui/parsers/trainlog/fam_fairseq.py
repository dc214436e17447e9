"""Read fairseq training logs in all three of its progress formats.

Shapes handled::

    2020-07-17 07:11:02 | INFO | train_inner | epoch 001:   2800 / 160368 loss=9.255, ..., num_updates=2800
    2020-07-17 07:20:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.1 | ... | num_updates 31
    | epoch 009:   1000 / 2737 loss=6.220, nll_loss=5.070, ..., num_updates=22897, lr=0.000208983, ...
    | epoch 008 | loss 6.326 | nll_loss 5.193 | ... | num_updates 21896 | ...
    | epoch 008 | valid on 'valid' subset | valid_loss 6.43844 | ... | num_updates 21896 | best 6.43844
    {"epoch": 25, "loss": "3.097", ..., "num_updates": 53749, "lr": 0.00019096019143386865, ...}
    [2021-03-03 11:30:01,123][train_inner][INFO] - epoch 001:    100 / 1234 loss=..., ...
    2020-04-05 18:47:19 | INFO | fairseq.trainer | NOTE: overflow detected, setting loss scale to: 64.0

The logger prefix (date, level, logger name) is optional: the engine may already have removed the date.
``epoch 009:   1000 / 2737`` gives epoch 9, batch 1000 of 2737; ``num_updates`` is the optimizer step. Metrics
of a ``valid on 'X' subset`` summary carry the subset as prefix, so fairseq's ``valid_loss`` (legacy) and the
bare ``loss`` of a modern valid summary both become ``val_loss``; ``gnorm`` becomes ``grad_norm``. JSON values
printed as strings (``"3.097"``, ``"100%"``) are read as numbers. An fp16 overflow note gives the new
``loss_scale``.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable, Sequence
from functools import partial
from operator import itemgetter
from typing import ClassVar, NamedTuple

from trainmon_tui.parsers.trainlog.base import (
    ColumnReader,
    Columns,
    Hit,
    LineFamily,
    Span,
    canonical_metric_name,
    float_column,
    group_spans,
    has_digit,
    int_column,
    lazy_float_column,
    never_reads,
    parse_number,
    plain_float_shape,
    texts_at,
)
from trainmon_tui.parsers.trainlog.fam_tqdm import PairSpans, pair_spans, split_starts

_PREFIX_RE = re.compile(
    r"\s*\[?(?:(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:,(\d{1,6}))?\]?\s*)?"
    r"(?:\|\s*)?"
    r"(?:[A-Z]+\s*\|\s*([\w.]+)\s*\|\s*|\[([\w.]+)\]\[[A-Z]+\] - )?"
)
_INNER_RE = re.compile(r"epoch (\d{1,18}):\s+(\d{1,18}) / (\d{1,18}) (.*)")
_SUMMARY_RE = re.compile(r"epoch (\d{1,18}) \| (.*)")
_SUBSET_RE = re.compile(r"valid on '([^']*)' subset")
_OVERFLOW_RE = re.compile(
    r"overflow detected, (?:ignoring gradient, )?setting loss scale to: (\d+(?:\.\d+)?)"
)

# Keys that are progress, not metrics.
_STEP_KEY = "num_updates"
_EPOCH_KEY = "epoch"
# JSON inner lines add "update", the fractional epoch; it repeats epoch/step information.
_FRACTIONAL_EPOCH_KEY = "update"


def _stamp_seconds(groups: tuple[str | None, ...]) -> float | None:
    """UTC seconds of the stamp groups (year..second, millis), or None when absent or not a real date."""
    if groups[0] is None:
        return None
    try:
        seconds = calendar.timegm((*(int(g or 0) for g in groups[:6]), 0, 0, 0))
    except ValueError:
        return None
    fraction = groups[6]
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _number(text: str) -> float | None:
    # float() is the fast path; "clip=0%" and string-typed JSON values like "100%" lose their percent sign
    # first so they stay on it, and parse_number covers the rest ("1,234").
    if text.endswith("%"):
        text = text[:-1]
    try:
        return float(text)
    except ValueError:
        return parse_number(text)


def _subset_name(key: str, subset: str | None) -> str:
    """Metric name of ``key`` in a summary of ``subset`` (None: training); ``loss`` of 'valid' -> val_loss."""
    if subset is not None and not key.startswith(subset + "_"):
        key = subset + "_" + key
    return canonical_metric_name(key)


class FairseqFamily:
    """fairseq ``train_inner`` progress, epoch/valid summaries (pipe or JSON) in modern and legacy layouts."""

    name: ClassVar[str] = "fairseq"
    gate: ClassVar[tuple[str, ...]] = ("| epoch ", "- epoch ", '{"epoch"', "overflow detected")

    def parse(self, text: str) -> Hit | None:
        prefix = _PREFIX_RE.match(text)
        if prefix is None:
            return None
        body = text[prefix.end() :]
        if body.startswith("epoch "):
            hit = self._parse_progress(body)
        elif body.startswith("{"):
            hit = self._parse_json(body, prefix[8] or prefix[9])
        else:
            overflow = _OVERFLOW_RE.search(body)
            if overflow is None:
                return None
            hit = Hit(metrics={"loss_scale": float(overflow[1])})
        if hit is not None:
            hit.timestamp = _stamp_seconds(prefix.groups()[:7])
        return hit

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the stamp, the counters and each
        value of a ``train_inner`` line, an epoch summary, a flat JSON record or an overflow note sit at the
        same places on all of them (no pattern of parse tells one digit from another). Shapes the readers
        do not cover (a key with a digit, a nested JSON value) are read by parse."""
        prefix = _PREFIX_RE.match(text)
        if prefix is None:
            return never_reads
        at = prefix.end()
        stamp = group_spans(prefix, range(1, 8))
        if text.startswith("epoch ", at):
            inner = _INNER_RE.match(text, at)
            if inner is not None:
                pairs, starts = split_starts(text, inner.start(4), ",")
                spans = pair_spans(pairs, starts, "=")
                return partial(_read_inner, spans, stamp, group_spans(inner, range(1, 4)))
            summary = _SUMMARY_RE.match(text, at)
            if summary is None:
                return never_reads
            return _summary_reader(summary, stamp) or self.parse
        if text.startswith("{", at):
            return _json_reader(text, at, prefix[8] or prefix[9], stamp) or self.parse
        overflow = _OVERFLOW_RE.search(text, at)
        if overflow is None:
            return never_reads
        return partial(_read_overflow, overflow.span(1), stamp)

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for the lines of ``text``'s shape (see base.ColumnFamily) that ``for_shape`` reads
        with a reader of its own, whose metric names are fixed and distinct, values plain digits (a ``%``
        after them aside), with a step at most once."""
        reader = self.for_shape(text)
        if not isinstance(reader, partial):
            return None
        if reader.func is _read_inner:
            return _inner_columns_for(text, *reader.args)
        if reader.func is _read_summary:
            return _summary_columns_for(text, *reader.args)
        if reader.func is _read_json:
            return _json_columns_for(text, *reader.args)
        if reader.func is _read_overflow:
            return partial(_overflow_columns, *reader.args)
        return None

    @staticmethod
    def _parse_progress(body: str) -> Hit | None:
        inner = _INNER_RE.match(body)
        if inner is not None:
            hit = Hit(epoch=float(inner[1]), batch=int(inner[2]), batches_per_epoch=int(inner[3]))
            for pair in inner[4].split(","):
                key, sep, value = pair.partition("=")
                if sep:
                    FairseqFamily._store(hit, key.strip(), value, None)
            return hit if hit.metrics else None
        summary = _SUMMARY_RE.match(body)
        if summary is None:
            return None
        hit = Hit(epoch=float(summary[1]))
        subset: str | None = None
        for field in summary[2].split(" | "):
            key, sep, value = field.strip().rpartition(" ")
            if not sep:
                continue
            named = _SUBSET_RE.fullmatch(field.strip())
            if named is not None:
                subset = named[1]
                continue
            FairseqFamily._store(hit, key, value, subset)
        return hit if hit.metrics else None

    @staticmethod
    def _parse_json(body: str, logger_tag: str | None) -> Hit | None:
        if not body.rstrip().endswith("}"):
            return None
        try:
            record = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(record, dict):
            return None
        hit = Hit()
        # An end-of-epoch record prefixes its keys with its tag ("train_loss", "valid_num_updates"); a "train"
        # prefix is dropped so the training loss is "loss", while "valid_loss" already means val_loss.
        strip = "train_" if logger_tag == "train" else ""
        for raw_key, raw_value in record.items():
            value = _json_number(raw_value)
            if value is None:
                continue
            key = raw_key.removeprefix(strip) if strip else raw_key
            if key == _EPOCH_KEY:
                hit.epoch = value
            elif key == _STEP_KEY or key.endswith("_" + _STEP_KEY):
                if value.is_integer():
                    hit.step = int(value)
            elif key != _FRACTIONAL_EPOCH_KEY:
                hit.metrics[canonical_metric_name(key)] = value
        return None if hit.is_empty() else hit

    @staticmethod
    def _store(hit: Hit, key: str, value: str, subset: str | None) -> None:
        if key == _STEP_KEY:
            step = _number(value)
            if step is not None and step.is_integer():
                hit.step = int(step)
            return
        number = _number(value)
        if number is not None:
            hit.metrics[_subset_name(key, subset)] = number


def _read_inner(
    spans: PairSpans, stamp: tuple[Span | None, ...], counters: tuple[Span | None, ...], text: str
) -> Hit | None:
    """What FairseqFamily.parse reads from a ``train_inner`` line of the shape the spans were found in."""
    epoch, batch, total = texts_at(text, counters)
    assert epoch is not None and batch is not None and total is not None  # the groups are not optional
    hit = Hit(epoch=float(epoch), batch=int(batch), batches_per_epoch=int(total))
    metrics = hit.metrics
    for key_at, key_end, value_at, value_end, fixed in spans:
        # fixed: a key without a digit and its name (canonical_metric_name's, as parse names training keys).
        key, name = (text[key_at:key_end], "") if fixed is None else fixed
        if key == _STEP_KEY:
            step = _number(text[value_at:value_end])
            if step is not None and step.is_integer():
                hit.step = int(step)
            continue
        number = _number(text[value_at:value_end])
        if number is not None:
            metrics[name or canonical_metric_name(key)] = number
    if not metrics:
        return None
    hit.timestamp = _stamp_seconds(texts_at(text, stamp))
    return hit


def _inner_columns_for(
    text: str, spans: PairSpans, stamp: tuple[Span | None, ...], counters: tuple[Span, Span, Span]
) -> ColumnReader | None:
    """The column reader of the ``train_inner`` lines of ``text``'s shape (see columns_for_shape)."""
    names: list[str] = []
    value_spans: list[Span] = []
    step_span: Span | None = None
    for _key_at, _key_end, value_at, value_end, fixed in spans:
        raw = text[value_at:value_end]
        end = value_end - 1 if raw.endswith("%") else value_end
        if fixed is None or not plain_float_shape(text[value_at:end].strip()):
            return None
        key, name = fixed
        if key == _STEP_KEY:
            if step_span is not None:
                return None
            step_span = (value_at, end)
            continue
        names.append(name)
        value_spans.append((value_at, end))
    if not names:
        return None
    return partial(
        _inner_columns,
        counters,
        tuple(names),
        tuple(value_spans),
        step_span,
        _stamp_or_none(stamp),
    )


def _inner_columns(  # noqa: PLR0917 - bound by partial, positional
    counters: tuple[Span, Span, Span],
    names: tuple[str, ...],
    spans: tuple[Span, ...],
    step_span: Span | None,
    stamp: tuple[Span | None, ...] | None,
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_inner reads from each of ``lines`` (one shape, see columns_for_shape), by column."""
    try:
        values = tuple(lazy_float_column(lines, start, span) for span in spans)
        epoch = float_column(lines, start, counters[0])
        step: list[int] | None = None
        if step_span is not None:
            updates = float_column(lines, start, step_span)
            if not all(map(float.is_integer, updates)):
                return None
            step = list(map(int, updates))
    except ValueError:
        return None
    batch = int_column(lines, start, counters[1])
    total = int_column(lines, start, counters[2])
    stamps = None if stamp is None else partial(_inner_stamps, stamp, lines, start)
    return Columns(step, None, epoch, None, batch, total, names, values, stamps)


def _inner_stamps(stamp: tuple[Span | None, ...], lines: Sequence[str], start: int) -> list[float | None]:
    return [_stamp_seconds(texts_at(line[start:], stamp)) for line in lines]


#: What ``Columns.timestamps`` holds: a function giving each line's timestamp, or None.
Stamps = Callable[[], list[float | None]] | None


def _stamp_or_none(stamp: tuple[Span | None, ...]) -> tuple[Span | None, ...] | None:
    """The stamp spans of a shape, None when it prints no date (its lines have no timestamp to read)."""
    return None if stamp[0] is None else stamp


def _stamp_column(stamp: tuple[Span | None, ...] | None, lines: Sequence[str], start: int) -> Stamps:
    """What ``Columns.timestamps`` is for lines whose stamp is at ``stamp`` (None: no stamp)."""
    return None if stamp is None else partial(_inner_stamps, stamp, lines, start)


def _read_overflow(value: Span, stamp: tuple[Span | None, ...], text: str) -> Hit:
    """What FairseqFamily.parse reads from an overflow note of the shape ``value`` was found in."""
    hit = Hit(metrics={"loss_scale": float(text[value[0] : value[1]])})
    hit.timestamp = _stamp_seconds(texts_at(text, stamp))
    return hit


def _overflow_columns(
    value: Span, stamp: tuple[Span | None, ...], lines: Sequence[str], start: int
) -> Columns:
    """What _read_overflow reads from each of ``lines`` (one shape), by column."""
    scales = float_column(lines, start, value)  # the pattern's digits and point: float() reads them all
    return Columns(
        None,
        None,
        None,
        None,
        None,
        None,
        ("loss_scale",),
        (scales,),
        _stamp_column(_stamp_or_none(stamp), lines, start),
    )


#: Where a summary's fields are (value start, value end) and what they name: a metric, or None for the step.
_SummaryFields = tuple[tuple[int, int, str | None], ...]


def _summary_reader(
    summary: re.Match[str], stamp: tuple[Span | None, ...]
) -> Callable[[str], Hit | None] | None:
    """The reader of the epoch summaries of ``summary``'s shape (see _parse_progress); None when a key or the
    subset holds a digit (its name may differ from line to line)."""
    fields: list[tuple[int, int, str | None]] = []
    subset: str | None = None
    field_at = summary.start(2)
    for field in summary[2].split(" | "):
        stripped = field.strip()
        value_end = field_at + len(field) - len(field.lstrip()) + len(stripped)
        field_at += len(field) + 3
        key, sep, value = stripped.rpartition(" ")
        if not sep:
            continue
        named = _SUBSET_RE.fullmatch(stripped)
        if named is not None:
            subset = named[1]
            if has_digit(subset):
                return None
            continue
        if has_digit(key):
            return None
        fields.append(
            (value_end - len(value), value_end, None if key == _STEP_KEY else _subset_name(key, subset))
        )
    return partial(_read_summary, tuple(fields), summary.span(1), stamp)


def _read_summary(
    fields: _SummaryFields, epoch: Span, stamp: tuple[Span | None, ...], text: str
) -> Hit | None:
    """What FairseqFamily.parse reads from an epoch summary of the shape ``fields`` were found in."""
    hit = Hit(epoch=float(text[epoch[0] : epoch[1]]))
    metrics = hit.metrics
    for value_at, value_end, name in fields:
        number = _number(text[value_at:value_end])
        if number is None:
            continue
        if name is not None:
            metrics[name] = number
        elif number.is_integer():
            hit.step = int(number)
    if not metrics:
        return None
    hit.timestamp = _stamp_seconds(texts_at(text, stamp))
    return hit


def _summary_columns_for(
    text: str, fields: _SummaryFields, epoch: Span, stamp: tuple[Span | None, ...]
) -> ColumnReader | None:
    """The column reader of the summaries of ``text``'s shape (see columns_for_shape)."""
    names: list[str] = []
    spans: list[Span] = []
    step: Span | None = None
    for value_at, value_end, name in fields:
        end = value_end - 1 if text[value_end - 1] == "%" else value_end
        if not plain_float_shape(text[value_at:end]):
            return None
        if name is None:
            if step is not None:
                return None
            step = (value_at, end)
        elif name in names:
            return None
        else:
            names.append(name)
            spans.append((value_at, end))
    if not names:
        return None
    return partial(_summary_columns, tuple(names), tuple(spans), step, epoch, _stamp_or_none(stamp))


def _summary_columns(  # noqa: PLR0917 - bound by partial, positional
    names: tuple[str, ...],
    spans: tuple[Span, ...],
    step_span: Span | None,
    epoch: Span,
    stamp: tuple[Span | None, ...] | None,
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_summary reads from each of ``lines`` (one shape, see _summary_columns_for), by column."""
    try:
        values = tuple(lazy_float_column(lines, start, span) for span in spans)
        step = None if step_span is None else _integral_column(lines, start, step_span)
    except ValueError:
        return None
    if step_span is not None and step is None:
        return None
    epochs = float_column(lines, start, epoch)
    return Columns(step, None, epochs, None, None, None, names, values, _stamp_column(stamp, lines, start))


def _integral_column(lines: Sequence[str], start: int, span: Span) -> list[int] | None:
    """The numbers at ``span`` as ints, as ``int(_number(...))`` gives a step; None when one is not integral
    (the per-line reader leaves that line's step out). Raises ValueError as float_column does."""
    numbers = float_column(lines, start, span)
    if not all(map(float.is_integer, numbers)):
        return None
    return list(map(int, numbers))


# A flat JSON record as fairseq's json log format prints it: each pair's key, then its value (a string, an
# integer with its fraction and exponent when printed, or true/false/null), then "," or the closing "}".
# Digits only ever match [0-9], so the pairs are at the same places on every line of a shape; JSON's one rule
# that tells digits apart (no leading zero) is checked per line.
_JSON_WS = r"[ \t\n\r]*"
_JSON_PAIR_RE = re.compile(
    _JSON_WS
    + r'"([^"\\\x00-\x1f]*)"'
    + _JSON_WS
    + ":"
    + _JSON_WS
    + r'(?:"([^"\\\x00-\x1f]*)"|(-?)([0-9]+)(\.[0-9]+)?([eE][-+]?[0-9]+)?|true|false|null)'
    + _JSON_WS
    + "([,}])"
)
# An integer with more digits may be too large for a float (parse skips it) or for int() (json rejects it).
_MAX_JSON_DIGITS = 300


def _json_int(raw: str) -> float:
    # json reads an integer with int(): "-0" is 0, never float("-0") == -0.0.
    return float(int(raw))


#: A JSON value's place (start, end), and how its text becomes the number _json_number makes of it.
_JsonValue = tuple[int, int, Callable[[str], float | None]]


class _JsonPlan(NamedTuple):
    """Where the values of the JSON records of one shape are, and which digits must not be a leading 0."""

    epoch: tuple[_JsonValue, ...]
    step: tuple[_JsonValue, ...]
    names: tuple[str, ...]
    metrics: tuple[_JsonValue, ...]
    first_digits: tuple[int, ...]


def _json_reader(
    text: str, at: int, logger_tag: str | None, stamp: tuple[Span | None, ...]
) -> Callable[[str], Hit | None] | None:
    """The reader of the flat JSON records of the shape of ``text`` (its record at ``at``); None for a shape
    it does not cover (a nested or repeated key, a key with a digit, a long integer: parse reads it)."""
    strip = "train_" if logger_tag == "train" else ""
    epoch: list[_JsonValue] = []
    step: list[_JsonValue] = []
    names: list[str] = []
    metrics: list[_JsonValue] = []
    first_digits: list[int] = []
    keys: set[str] = set()
    pos = at + 1
    while True:
        pair = _JSON_PAIR_RE.match(text, pos)
        if pair is None or pair[1] in keys or has_digit(pair[1]) or len(pair[4] or "") > _MAX_JSON_DIGITS:
            return None
        keys.add(pair[1])
        value = _json_value(pair, first_digits)
        key = pair[1].removeprefix(strip) if strip else pair[1]
        # Where _parse_json puts the value (a value that is never a number goes nowhere).
        if value is not None and key != _FRACTIONAL_EPOCH_KEY:
            if key == _EPOCH_KEY:
                epoch.append(value)
            elif key == _STEP_KEY or key.endswith("_" + _STEP_KEY):
                step.append(value)
            else:
                names.append(canonical_metric_name(key))
                metrics.append(value)
        pos = pair.end()
        if pair[7] == "}":
            break
    if pos != len(text):
        return None
    plan = _JsonPlan(tuple(epoch), tuple(step), tuple(names), tuple(metrics), tuple(first_digits))
    return partial(_read_json, plan, stamp)


def _json_value(pair: re.Match[str], first_digits: list[int]) -> _JsonValue | None:
    """How to read the value of ``pair`` (see _JsonValue); None for one that is never a number (true, a
    word). A number's first digit, where a leading 0 would make the record no JSON, goes to
    ``first_digits``."""
    if pair.start(2) >= 0:
        # A string without a digit reads the same on every line: left out where it is no number.
        if not has_digit(pair[2]) and _number(pair[2]) is None:
            return None
        return (*pair.span(2), _number)
    if pair.start(4) < 0:
        return None
    if len(pair[4]) > 1:
        first_digits.append(pair.start(4))
    if pair.start(5) < 0 and pair.start(6) < 0:
        return (pair.start(3), pair.end(4), _json_int)
    return (pair.start(3), max(pair.end(4), pair.end(5), pair.end(6)), float)


def _read_json(plan: _JsonPlan, stamp: tuple[Span | None, ...], text: str) -> Hit | None:
    """What FairseqFamily.parse reads from a JSON record of the shape ``plan`` was made for."""
    for at in plan.first_digits:
        if text[at] == "0":
            return None  # a number with a leading 0: no JSON, so parse reads nothing
    hit = Hit()
    for value_at, value_end, read in plan.epoch:
        value = read(text[value_at:value_end])
        if value is not None:
            hit.epoch = value
    for value_at, value_end, read in plan.step:
        value = read(text[value_at:value_end])
        if value is not None and value.is_integer():
            hit.step = int(value)
    metrics = hit.metrics
    for name, (value_at, value_end, read) in zip(plan.names, plan.metrics, strict=True):
        value = read(text[value_at:value_end])
        if value is not None:
            metrics[name] = value
    if hit.is_empty():
        return None
    hit.timestamp = _stamp_seconds(texts_at(text, stamp))
    return hit


def _json_columns_for(text: str, plan: _JsonPlan, stamp: tuple[Span | None, ...]) -> ColumnReader | None:
    """The column reader of the JSON records of ``text``'s shape (see columns_for_shape)."""
    names = plan.names
    if len(plan.epoch) > 1 or len(plan.step) > 1 or not names or len(set(names)) < len(names):
        return None
    columns: list[tuple[Span, bool]] = []
    for value_at, value_end, read in (*plan.epoch, *plan.step, *plan.metrics):
        end = value_end
        if read is _number:
            # A string's number, read by float() once a "%" after it is cut off.
            if text[end - 1] == "%":
                end -= 1
            if not plain_float_shape(text[value_at:end]):
                return None
        columns.append(((value_at, end), read is _json_int))
    return partial(
        _json_columns, tuple(columns), len(plan.epoch), len(plan.step), plan, _stamp_or_none(stamp)
    )


def _json_columns(  # noqa: PLR0917 - bound by partial, positional
    columns: tuple[tuple[Span, bool], ...],
    epochs: int,
    steps: int,
    plan: _JsonPlan,
    stamp: tuple[Span | None, ...] | None,
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_json reads from each of ``lines`` (one shape, see _json_columns_for), by column: the
    epoch's (when printed), the step's, then the metrics'."""
    for at in plan.first_digits:
        if "0" in map(itemgetter(start + at), lines):
            return None
    try:
        numbers = [
            list(map(float, int_column(lines, start, span))) if integral else float_column(lines, start, span)
            for span, integral in columns
        ]
    except ValueError:
        return None
    step: list[int] | None = None
    if steps:
        updates = numbers[epochs]
        if not all(map(float.is_integer, updates)):
            return None
        step = list(map(int, updates))
    epoch = numbers[0] if epochs else None
    values = tuple(numbers[epochs + steps :])
    return Columns(
        step, None, epoch, None, None, None, plan.names, values, _stamp_column(stamp, lines, start)
    )


def _json_number(raw: object) -> float | None:
    """A JSON value as a number: ints/floats as they are, strings as printed numbers, anything else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, float):
        return raw
    if isinstance(raw, int):
        # JSON integers are unbounded; one too large for a float is no reading.
        return float(raw) if abs(raw) < 2**1023 else None
    if isinstance(raw, str):
        return _number(raw)
    return None


FAMILIES: tuple[type[LineFamily], ...] = (FairseqFamily,)
