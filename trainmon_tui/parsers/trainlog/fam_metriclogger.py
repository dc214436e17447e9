"""Read torchvision-style ``MetricLogger`` lines (DeiT, MAE, BEiT, timm-derived scripts, LLaMA2-Accessory).

Shapes handled (pairs separated by two spaces; a ``value (average)`` pair is read as its first value)::

    Epoch: [115]  [1298/1299]  eta: 0:00:00  lr: 0.001435  loss: 6.5993 (6.5971)  ...  max mem: 19152
    [05:50:11.624892] Epoch: [2]  [340/1504]  lr: 0.000010  closs: 0.9181 (0.8303)  grad_norm: 0.3259 (0.3568)
    Averaged stats: lr: 0.001435  loss: 6.5993 (6.5925)  ...
    Test:  [ 0/50]  eta: 0:01:23  loss: 0.4512 (0.4512)  acc1: 90.6250 (90.6250)  ...
    * Acc@1 81.234 Acc@5 95.123 loss 0.812

The scripts count epochs and batches from 0 (``Epoch: [0]  [0/1299]`` is the first batch of the first epoch)
while the rest of trainmon counts completed work from 1 (mmengine's ``[1][50/1000]``), so epoch and batch are
read one higher than printed: ``Epoch: [115]  [1298/1299]`` is epoch 116, batch 1299 of 1299 (epoch done).
``Averaged stats`` (the epoch's mean) is read from the ``(average)`` values into ``avg_*`` metrics; evaluation
lines give ``val_*`` metrics and no progress. LLaMA2-Accessory's ``closs`` is its training loss -> ``loss``.
``eta`` becomes ``eta_s`` in seconds; markdown ``**`` around a pair (pasted logs) is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from itertools import repeat
from operator import add
from typing import ClassVar, NamedTuple

from trainmon_tui.parsers.trainlog.base import (
    ColumnReader,
    Columns,
    EtaSpans,
    Hit,
    LineFamily,
    Span,
    canonical_metric_name,
    eta_column,
    eta_seconds,
    eta_spans,
    has_digit,
    int_column,
    lazy_float_column,
    never_reads,
    parse_number,
    plain_float_shape,
)

_EPOCH_RE = re.compile(r"Epoch: \[(\d{1,18})\]\s+\[\s*(\d{1,18})/(\d{1,18})\]\s+(.*)")
_TEST_RE = re.compile(r"Test:\s+\[\s*\d+/\d+\]\s+(.*)")
_ETA_RE = re.compile(r"(?:(\d{1,18}) days?, )?(\d{1,18}):(\d\d):(\d\d)")
_SUMMARY_RE = re.compile(r"\*\s+(.*)")
_ALIASES = {"closs": "loss"}


def _eta_seconds(text: str) -> float | None:
    match = _ETA_RE.fullmatch(text)
    return None if match is None else eta_seconds(match)


def _read_pairs(body: str, prefix: str, use_average: bool) -> dict[str, float]:
    """Metrics of ``key: value (average)`` pairs separated by two spaces."""
    metrics: dict[str, float] = {}
    for pair in body.split("  "):
        key, sep, value = pair.strip(" *").partition(": ")
        if not sep:
            continue
        key = key.strip()
        if key == "eta":
            seconds = _eta_seconds(value.strip())
            if seconds is not None:
                metrics[prefix + "eta_s"] = seconds
            continue
        current, _, average = value.partition(" (")
        raw = average.rstrip(")") if use_average and average else current
        number = _number(raw)
        if number is not None:
            metrics[_metric_name(prefix, key)] = number
    return metrics


def _metric_name(prefix: str, key: str) -> str:
    return canonical_metric_name(prefix + _ALIASES.get(key, key))


class _Pair(NamedTuple):
    """Where _read_pairs finds one pair in every line of a shape: its key (stripped), and the value it reads
    (an ETA, or the current or average value), and the metric's name (None for a key with a digit, named per
    line)."""

    key_at: int
    key_end: int
    value_at: int
    value_end: int
    name: str | None
    eta: bool


def _pair_plan(text: str, body_at: int, prefix: str, use_average: bool) -> tuple[_Pair, ...]:
    """The pairs _read_pairs reads in ``text[body_at:]``, at the same places on every line of ``text``'s shape
    (its digits masked): splitting and stripping tell no digit from another. An ETA that is no ``H:MM:SS``
    reads as nothing on every such line and is left out."""
    pairs: list[_Pair] = []
    pair_at = body_at
    for pair in text[body_at:].split("  "):
        stripped_at = pair_at + len(pair) - len(pair.lstrip(" *"))
        pair_at += len(pair) + 2
        key, sep, value = pair.strip(" *").partition(": ")
        if not sep:
            continue
        name = key.strip()
        key_at = stripped_at + len(key) - len(key.lstrip())
        value_at = stripped_at + len(key) + len(sep)
        if name == "eta":
            eta = value.strip()
            eta_at = value_at + len(value) - len(value.lstrip())
            if _ETA_RE.fullmatch(eta) is not None:
                pairs.append(_Pair(key_at, key_at + 3, eta_at, eta_at + len(eta), prefix + "eta_s", True))
            continue
        current, _, average = value.partition(" (")
        if use_average and average:
            value_at += len(current) + 2
            value_end = value_at + len(average.rstrip(")"))
        else:
            value_end = value_at + len(current)
        fixed = None if has_digit(name) else _metric_name(prefix, name)
        pairs.append(_Pair(key_at, key_at + len(name), value_at, value_end, fixed, False))
    return tuple(pairs)


def _read_planned_pairs(pairs: tuple[_Pair, ...], prefix: str, text: str) -> dict[str, float]:
    """What _read_pairs reads from a line of the shape ``pairs`` were found in."""
    metrics: dict[str, float] = {}
    for key_at, key_end, value_at, value_end, name, eta in pairs:
        raw = text[value_at:value_end]
        number = _eta_seconds(raw) if eta else _number(raw)
        if number is not None:
            metrics[name or _metric_name(prefix, text[key_at:key_end])] = number
    return metrics


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return parse_number(raw)


class MetricLoggerFamily:
    """``Epoch: [e]  [i/n]  key: value (avg)  ...`` progress, ``Averaged stats`` and evaluation summaries."""

    name: ClassVar[str] = "metriclogger"
    gate: ClassVar[tuple[str, ...]] = ("Epoch: [", "Averaged stats:", "Test:", "* Acc@")

    def parse(self, text: str) -> Hit | None:
        at = text.find("Epoch: [")
        if at >= 0:
            return self._parse_epoch(text, at)
        at = text.find("Averaged stats:")
        if at >= 0:
            metrics = _read_pairs(text[at + len("Averaged stats:") :], "avg_", use_average=True)
            return Hit(metrics=metrics) if metrics else None
        at = text.find("Test:")
        if at >= 0:
            match = _TEST_RE.match(text, at)
            if match is None:
                return None
            metrics = _read_pairs(match[1], "val_", use_average=False)
            return Hit(metrics=metrics) if metrics else None
        return self._parse_eval_summary(text)

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the counters and each pair of a
        progress line, of ``Averaged stats`` or of an evaluation line sit at the same places on all of them
        (see parse). Evaluation summaries (``* Acc@1 ...``) are read by parse."""
        at = text.find("Epoch: [")
        if at >= 0:
            match = _EPOCH_RE.match(text, at)
            if match is None:
                return never_reads
            counters = (match.span(1), match.span(2), match.span(3))
            return partial(_read_progress, _pair_plan(text, match.start(4), "", False), counters)
        at = text.find("Averaged stats:")
        if at >= 0:
            pairs = _pair_plan(text, at + len("Averaged stats:"), "avg_", True)
            return partial(_read_summary, pairs, "avg_")
        at = text.find("Test:")
        if at >= 0:
            match = _TEST_RE.match(text, at)
            if match is None:
                return never_reads
            return partial(_read_summary, _pair_plan(text, match.start(1), "val_", False), "val_")
        return self.parse

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for the progress, ``Averaged stats`` and evaluation lines of ``text``'s shape
        (see base.ColumnFamily) whose metric names are fixed and distinct and values plain digits."""
        reader = self.for_shape(text)
        if not isinstance(reader, partial):
            return None
        pairs: tuple[_Pair, ...] = reader.args[0]
        names: list[str] = []
        for pair in pairs:
            if pair.name is None or pair.name in names:
                return None
            if not pair.eta and not plain_float_shape(text[pair.value_at : pair.value_end].strip()):
                return None
            names.append(pair.name)
        if not names:
            return None
        etas = tuple(_eta_at(text, pair) if pair.eta else None for pair in pairs)
        counters = reader.args[1] if reader.func is _read_progress else None
        return partial(_columns, tuple(names), pairs, etas, counters)

    @staticmethod
    def _parse_epoch(text: str, at: int) -> Hit | None:
        match = _EPOCH_RE.match(text, at)
        if match is None:
            return None
        metrics = _read_pairs(match[4], "", use_average=False)
        if not metrics:
            return None
        # Printed counters start at 0; see the module docstring.
        return Hit(
            epoch=float(int(match[1]) + 1),
            batch=int(match[2]) + 1,
            batches_per_epoch=int(match[3]),
            metrics=metrics,
        )

    @staticmethod
    def _parse_eval_summary(text: str) -> Hit | None:
        """``* Acc@1 81.234 Acc@5 95.123 loss 0.812``: names and values alternate."""
        stripped = text.lstrip()
        if not stripped.startswith("* Acc@"):
            return None
        match = _SUMMARY_RE.match(stripped)
        if match is None:
            return None
        tokens = match[1].split()
        if len(tokens) % 2:
            return None
        metrics: dict[str, float] = {}
        for key, raw in zip(tokens[::2], tokens[1::2], strict=True):
            number = parse_number(raw)
            if number is None:
                return None
            metrics[canonical_metric_name("val_" + key)] = number
        return Hit(metrics=metrics) if metrics else None


def _eta_at(text: str, pair: _Pair) -> EtaSpans:
    match = _ETA_RE.fullmatch(text, pair.value_at, pair.value_end)
    assert match is not None  # _pair_plan keeps only ETAs that match
    return eta_spans(match)


def _read_progress(pairs: tuple[_Pair, ...], counters: tuple[Span, Span, Span], text: str) -> Hit | None:
    """What MetricLoggerFamily.parse reads from a progress line of the shape ``pairs`` were found in."""
    metrics = _read_planned_pairs(pairs, "", text)
    if not metrics:
        return None
    (epoch_at, epoch_end), (batch_at, batch_end), (total_at, total_end) = counters
    # Printed counters start at 0; see the module docstring.
    return Hit(
        epoch=float(int(text[epoch_at:epoch_end]) + 1),
        batch=int(text[batch_at:batch_end]) + 1,
        batches_per_epoch=int(text[total_at:total_end]),
        metrics=metrics,
    )


def _read_summary(pairs: tuple[_Pair, ...], prefix: str, text: str) -> Hit | None:
    """What MetricLoggerFamily.parse reads from an ``Averaged stats`` or evaluation line of the shape
    ``pairs`` were found in."""
    metrics = _read_planned_pairs(pairs, prefix, text)
    return Hit(metrics=metrics) if metrics else None


def _columns(  # noqa: PLR0917 - bound by partial, positional
    names: tuple[str, ...],
    pairs: tuple[_Pair, ...],
    etas: tuple[EtaSpans | None, ...],
    counters: tuple[Span, Span, Span] | None,
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_progress or _read_summary reads from each of ``lines`` (one shape, see
    columns_for_shape), by column."""
    try:
        values = tuple(
            lazy_float_column(lines, start, (pair.value_at, pair.value_end))
            if eta is None
            else eta_column(lines, start, eta)
            for pair, eta in zip(pairs, etas, strict=True)
        )
    except ValueError:
        return None
    if counters is None:
        return Columns(None, None, None, None, None, None, names, values)
    # Printed counters start at 0; see the module docstring.
    epoch = list(map(float, _plus_one(int_column(lines, start, counters[0]))))
    batch = _plus_one(int_column(lines, start, counters[1]))
    total = int_column(lines, start, counters[2])
    return Columns(None, None, epoch, None, batch, total, names, values)


def _plus_one(column: list[int]) -> list[int]:
    return list(map(add, column, repeat(1)))


FAMILIES: tuple[type[LineFamily], ...] = (MetricLoggerFamily,)
