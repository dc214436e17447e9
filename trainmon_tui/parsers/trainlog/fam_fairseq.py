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
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import (
    ColumnReader,
    Columns,
    Hit,
    LineFamily,
    Span,
    canonical_metric_name,
    float_column,
    group_spans,
    int_column,
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
        """A reader for every line of ``text``'s shape (its digits masked) that is a ``train_inner`` progress
        line: its stamp, counters and ``key=value`` pairs sit at the same places on all of them (see parse).
        Summaries, JSON records and overflow notes are read by parse."""
        prefix = _PREFIX_RE.match(text)
        if prefix is None:
            return never_reads
        inner = _INNER_RE.match(text, prefix.end())
        if inner is None:
            return self.parse
        pairs, starts = split_starts(text, inner.start(4), ",")
        spans = pair_spans(pairs, starts, "=")
        return partial(_read_inner, spans, group_spans(prefix, range(1, 8)), group_spans(inner, range(1, 4)))

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for the ``train_inner`` lines of ``text``'s shape (see base.ColumnFamily) whose
        keys are fixed and values plain digits (a ``%`` after them aside), ``num_updates`` at most once."""
        reader = self.for_shape(text)
        if not isinstance(reader, partial) or reader.func is not _read_inner:
            return None
        spans: PairSpans = reader.args[0]
        stamp: tuple[Span | None, ...] = reader.args[1]
        counters: tuple[Span, Span, Span] = reader.args[2]
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
            None if stamp[0] is None else stamp,
        )

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
        values = tuple(float_column(lines, start, span) for span in spans)
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
