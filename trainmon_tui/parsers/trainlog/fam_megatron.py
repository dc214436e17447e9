"""Read Megatron-LM and Megatron-DeepSpeed log lines: iteration reports, validation losses, checkpoint saves.

Shapes handled (after the engine's cleaning; a ``[YYYY-MM-DD HH:MM:SS]`` stamp the engine left in place is
read here)::

     [2025-04-13 23:41:20] iteration       20/    1000 | consumed samples:   320 | ... | lm loss: 1.07E+01 |
     validation loss at iteration 50 | lm loss value: 8.889540E+00 | lm loss PPL: 7.255679E+03 |
     validation loss at iteration 50 on validation set | lm loss value: ... |
     saving checkpoint at iteration     100 to /ckpt in torch_dist format
      successfully saved checkpoint from iteration     100 to /ckpt [ t 1/1, p 1/1 ]

Every ``key: value`` field of an iteration report becomes a metric (``lm loss`` -> ``loss``,
``learning rate`` -> ``lr``, ``grad norm`` -> ``grad_norm``); validation fields are prefixed
``val_``/``test_`` so ``lm loss value`` becomes ``val_loss``. A ``grad norm: nan`` stays NaN: that is the
fault a monitor must show.
"""

from __future__ import annotations

import calendar
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
    float_word,
    group_span,
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

_STAMP = r"(?:\[(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)\]\s*)?"
_ITERATION_RE = re.compile(r"\s*" + _STAMP + r"iteration\s+(\d{1,18})\s*/\s*(\d{1,18})\s*\|(.*)")
_VALIDATION_RE = re.compile(
    r"\s*" + _STAMP + r"validation loss at "
    r"(?:iteration\s+(\d{1,18})(?: on (\w+) set)?|the end of training for (\w+) data)\s*\|(.*)"
)
_CHECKPOINT_RE = re.compile(
    r"\s*" + _STAMP + r"(?:saving checkpoint at|successfully saved checkpoint from) iteration\s+(\d{1,18})\b"
)

# Megatron names the split it evaluated ("validation set", "val data", "test data"); only the validation split
# maps onto the canonical val_* metrics.
_SPLIT_PREFIX = {"validation": "val_", "valid": "val_", "val": "val_", "test": "test_"}


def _stamp_seconds(groups: tuple[str | None, ...]) -> float | None:
    """UTC seconds of the six stamp groups (year..second), or None when absent or not a real date."""
    if groups[0] is None:
        return None
    try:
        fields = tuple(int(g or 0) for g in groups)
        return float(calendar.timegm((*fields, 0, 0, 0)))
    except ValueError:
        return None


def _number(text: str) -> float | None:
    # float() already accepts padding, E-notation and nan; parse_number covers the rest (1,234 or 12%).
    try:
        return float(text)
    except ValueError:
        return parse_number(text)


def _split_prefix(validation: re.Match[str]) -> str:
    """The metric prefix of the split a validation report names."""
    split = validation[8] or validation[9] or "validation"
    return _SPLIT_PREFIX.get(split, split + "_")


def _read_fields(body: str, metrics: dict[str, float], prefix: str = "") -> None:
    """Add every ``key: number`` field of a ``|``-separated Megatron report to ``metrics``."""
    for field in body.split("|"):
        key, sep, value = field.partition(":")
        if not sep:
            continue
        number = _number(value)
        if number is None:
            continue
        if prefix:
            key = key.strip()
            # "lm loss value" is the loss itself; "lm loss PPL" keeps its own name under the prefix.
            key = prefix + key.removesuffix(" value")
        metrics[canonical_metric_name(key)] = number


class MegatronFamily:
    """Megatron-LM / Megatron-DeepSpeed ``iteration N/ TOTAL | key: value | ...`` reports and siblings."""

    name: ClassVar[str] = "megatron"
    gate: ClassVar[tuple[str, ...]] = ("iteration",)

    def parse(self, text: str) -> Hit | None:
        match = _ITERATION_RE.match(text)
        if match is not None:
            metrics: dict[str, float] = {}
            _read_fields(match[9], metrics)
            return Hit(
                step=int(match[7]),
                total_steps=int(match[8]),
                metrics=metrics,
                timestamp=_stamp_seconds(match.groups()[:6]),
            )
        match = _VALIDATION_RE.match(text)
        if match is not None:
            metrics = {}
            _read_fields(match[10], metrics, _split_prefix(match))
            if not metrics:
                return None
            step = match[7]
            return Hit(
                step=None if step is None else int(step),
                metrics=metrics,
                timestamp=_stamp_seconds(match.groups()[:6]),
            )
        match = _CHECKPOINT_RE.match(text)
        if match is not None:
            return Hit(step=int(match[7]), timestamp=_stamp_seconds(match.groups()[:6]))
        return None

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the stamp, counters and fields of
        an iteration report, a validation report or a checkpoint note sit at the same places on all of them
        (see parse; no pattern tells one digit from another). A validation report with a key or split named
        with a digit is read by parse."""
        match = _ITERATION_RE.match(text)
        if match is not None:
            fields, starts = split_starts(text, match.start(9), "|")
            spans = pair_spans(fields, starts, ":")
            return partial(_read_iteration, spans, group_spans(match, range(1, 9)))
        match = _VALIDATION_RE.match(text)
        if match is not None:
            return _validation_reader(text, match) or self.parse
        match = _CHECKPOINT_RE.match(text)
        if match is not None:
            return partial(_read_checkpoint, group_spans(match, range(1, 8)))
        return never_reads

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for the iteration reports of ``text``'s shape (see base.ColumnFamily) whose keys
        are fixed and values plain digits or a word ``float()`` reads (``grad norm: nan``)."""
        reader = self.for_shape(text)
        if not isinstance(reader, partial) or reader.func is not _read_iteration:
            return None
        spans: PairSpans = reader.args[0]
        names: list[str] = []
        value_spans: list[Span] = []
        for _key_at, _key_end, value_at, value_end, fixed in spans:
            raw = text[value_at:value_end].strip()
            if fixed is None or not (plain_float_shape(raw) or float_word(raw)):
                return None
            names.append(fixed[1])
            value_spans.append((value_at, value_end))
        return partial(_iteration_columns, tuple(names), tuple(value_spans), reader.args[1])


def _iteration_columns(
    names: tuple[str, ...],
    spans: tuple[Span, ...],
    groups: tuple[Span | None, ...],
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_iteration reads from each of ``lines`` (one shape, see columns_for_shape), by column."""
    try:
        values = tuple(lazy_float_column(lines, start, span) for span in spans)
    except ValueError:
        return None
    step_span, total_span = groups[6], groups[7]
    assert step_span is not None and total_span is not None  # the groups are not optional
    step = int_column(lines, start, step_span)
    total = int_column(lines, start, total_span)
    stamps = None if groups[0] is None else partial(_iteration_stamps, groups[:6], lines, start)
    return Columns(step, total, None, None, None, None, names, values, stamps)


def _iteration_stamps(
    groups: tuple[Span | None, ...], lines: Sequence[str], start: int
) -> list[float | None]:
    return [_stamp_seconds(texts_at(line[start:], groups)) for line in lines]


def _read_iteration(spans: PairSpans, groups: tuple[Span | None, ...], text: str) -> Hit:
    """What MegatronFamily.parse reads from an iteration report of the shape the spans were found in."""
    metrics: dict[str, float] = {}
    for key_at, key_end, value_at, value_end, fixed in spans:
        number = _number(text[value_at:value_end])
        if number is not None:
            # fixed: a key without a digit and its canonical name. canonical_metric_name strips a key, so
            # the stripped key names the metric as parse's unstripped one does.
            metrics[canonical_metric_name(text[key_at:key_end]) if fixed is None else fixed[1]] = number
    values = texts_at(text, groups)
    step, total = values[6], values[7]
    assert step is not None and total is not None  # the groups are not optional
    return Hit(step=int(step), total_steps=int(total), metrics=metrics, timestamp=_stamp_seconds(values[:6]))


def _validation_reader(text: str, match: re.Match[str]) -> Callable[[str], Hit | None] | None:
    """The reader of the validation reports of ``match``'s shape; None when the split or a key is named with
    a digit (the metric's name may differ from line to line)."""
    prefix = _split_prefix(match)
    if has_digit(prefix):
        return None
    fields: list[tuple[Span, str]] = []
    field_at = match.start(10)
    for field in match[10].split("|"):
        key, sep, _ = field.partition(":")
        if sep:
            if has_digit(key):
                return None
            # As _read_fields names it under a prefix.
            name = canonical_metric_name(prefix + key.strip().removesuffix(" value"))
            fields.append(((field_at + len(key) + 1, field_at + len(field)), name))
        field_at += len(field) + 1
    return partial(_read_validation, tuple(fields), group_span(match, 7), group_spans(match, range(1, 7)))


def _read_validation(
    fields: tuple[tuple[Span, str], ...], step: Span | None, stamp: tuple[Span | None, ...], text: str
) -> Hit | None:
    """What MegatronFamily.parse reads from a validation report of the shape ``fields`` were found in."""
    metrics: dict[str, float] = {}
    for (value_at, value_end), name in fields:
        number = _number(text[value_at:value_end])
        if number is not None:
            metrics[name] = number
    if not metrics:
        return None
    return Hit(
        step=None if step is None else int(text[step[0] : step[1]]),
        metrics=metrics,
        timestamp=_stamp_seconds(texts_at(text, stamp)),
    )


def _read_checkpoint(groups: tuple[Span | None, ...], text: str) -> Hit:
    """What MegatronFamily.parse reads from a checkpoint note of the shape ``groups`` were found in."""
    values = texts_at(text, groups)
    step = values[6]
    assert step is not None  # the group is not optional
    return Hit(step=int(step), timestamp=_stamp_seconds(values[:6]))


FAMILIES: tuple[type[LineFamily], ...] = (MegatronFamily,)
