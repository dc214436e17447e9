"""Read karpathy/nanoGPT and KellerJordan/modded-nanogpt training lines.

nanoGPT (``train.py``) prints::

    iter 100: loss 2.1000, time 30.10ms, mfu 5.20%
    step 100: train loss 2.1000, val loss 2.2000

modded-nanogpt prints::

    step:100/20344 train_loss:3.2000 train_time:12345ms step_avg:123.45ms
    step:125/20344 val_loss:6.2335 train_time:196726ms step_avg:1710.66ms

Values printed in milliseconds keep the unit in their name (``time_ms``, ``step_avg_ms``). Two printed values
are placeholders, not measurements, and are left out: nanoGPT's ``mfu -100.00%`` before the first estimate and
modded-nanogpt's ``step_avg:nanms`` while the timer still skips warm-up steps. A NaN *loss* is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from math import isnan
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import (
    ColumnReader,
    Columns,
    Hit,
    LineFamily,
    Span,
    canonical_metric_name,
    float_column,
    float_word,
    group_span,
    has_digit,
    int_column,
    lazy_float_column,
    never_reads,
    parse_number,
    plain_float_shape,
)

# Both nanoGPT shapes start their pairs with the (train) loss; forks append pairs after it.
_KARPATHY_RE = re.compile(r"(?:iter|step) (\d{1,18}): ((?:train )?loss .*)")
_MODDED_RE = re.compile(r"step:(\d{1,18})(?:/(\d{1,18}))? (.*)")
_UNIT_SUFFIXES = ("ms", "s")

# nanoGPT seeds its running MFU with -1 and prints it as a percentage until the first real estimate.
_MFU_PLACEHOLDER = -100.0

# Metric name of a printed key, with its unit glued on ("time_ms"): the same few keys repeat on every line.
# nanoGPT's are None where the key is not words.
_KARPATHY_NAMES: dict[str, str | None] = {}
_MODDED_NAMES: dict[str, str] = {}
_MAX_NAMES = 4096


def _number(raw: str) -> float | None:
    # float() reads the common spellings (and "nan") fastest; parse_number covers the rest ("1,234").
    if raw.endswith("%"):
        raw = raw[:-1]
    try:
        return float(raw)
    except ValueError:
        return parse_number(raw)


def _number_and_unit(raw: str) -> tuple[float | None, str]:
    """``"30.10ms"`` -> ``(30.1, "ms")``; ``"5.20%"`` -> ``(5.2, "")``; ``"nanms"`` -> ``(nan, "ms")``."""
    raw = raw.strip()
    for unit in _UNIT_SUFFIXES:
        if raw.endswith(unit) and len(raw) > len(unit):
            return _number(raw[: -len(unit)]), unit
    return _number(raw), ""


def _karpathy_name(key: str) -> str | None:
    """The metric name of a nanoGPT key ("val loss", "time_ms"), None when it is not words."""
    name = _KARPATHY_NAMES.get(key, "")
    if name == "":
        # A name is words ("val loss"); anything else is text that happened to follow the loss.
        name = canonical_metric_name(key) if key.replace(" ", "_").isidentifier() else None
        if len(_KARPATHY_NAMES) < _MAX_NAMES:
            _KARPATHY_NAMES[key] = name
    return name


def _modded_name(key: str) -> str:
    name = _MODDED_NAMES.get(key)
    if name is None:
        name = canonical_metric_name(key)
        if len(_MODDED_NAMES) < _MAX_NAMES:
            _MODDED_NAMES[key] = name
    return name


class NanoGptFamily:
    """karpathy/nanoGPT ``iter N: loss X, time Yms, mfu Z%`` and ``step N: train loss X, val loss Y``."""

    name: ClassVar[str] = "nanogpt"
    gate: ClassVar[tuple[str, ...]] = (": loss ", ": train loss ")

    def parse(self, text: str) -> Hit | None:
        match = _KARPATHY_RE.match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        names = _KARPATHY_NAMES
        for pair in match[2].split(","):
            key, _, raw_value = pair.strip().rpartition(" ")
            # The common values read inline ("4.2082", "0.01%"); "1431.27ms" keeps its unit in the name.
            last = raw_value[-1:]
            value: float | None
            if last == "s":
                value, unit = _number_and_unit(raw_value)
                if unit and key:
                    # (An empty key stays empty: it is no name, with or without a unit.)
                    key = key + "_" + unit
            elif last == "%":
                value = _number(raw_value)
            else:
                try:
                    value = float(raw_value)
                except ValueError:
                    value = parse_number(raw_value)
            if value is None:
                continue
            name = names.get(key, "")
            if name == "":
                name = _karpathy_name(key)
            if name is None or (value == _MFU_PLACEHOLDER and name == "mfu"):
                continue
            metrics[name] = value
        if not metrics:
            return None
        return Hit(int(match[1]), None, None, None, None, None, metrics)

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the pairs are cut at the same
        places on all of them, so only the cutting is saved; every value is read as parse reads it."""
        match = _KARPATHY_RE.match(text)
        if match is None:
            return never_reads
        plan: list[tuple[int, int, int, int, str, str | None]] = []
        at = match.start(2)
        for pair in match[2].split(","):
            pair_at = at
            at += len(pair) + 1
            stripped = pair.strip()
            key_at = pair_at + len(pair) - len(pair.lstrip())
            key, space, raw_value = stripped.rpartition(" ")
            value_at = key_at + len(key) + len(space)
            last = raw_value[-1:]
            name: str | None = None
            if not has_digit(key):
                # The same key on every line: name it once (the unit is the shape's too).
                unit = _number_and_unit(raw_value)[1] if last == "s" else ""
                name = _karpathy_name(key + "_" + unit if unit and key else key)
                if name is None:
                    continue  # not words: parse never keeps its value
            plan.append((key_at, key_at + len(key), value_at, value_at + len(raw_value), last, name))
        return partial(_read_karpathy, tuple(plan), match.span(1))

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for ``text``'s shape (see base.ColumnFamily) when every pair's name is fixed and
        every number is plain digits or a word float() reads ("nan"); the MFU placeholder is left to the
        per-line reader."""
        match = _KARPATHY_RE.match(text)
        if match is None:
            return None
        reader = self.for_shape(text)
        if not isinstance(reader, partial):
            return None
        plan: tuple[tuple[int, int, int, int, str, str | None], ...] = reader.args[0]
        names: list[str] = []
        spans: list[Span] = []
        for _key_at, _key_end, value_at, value_end, last, name in plan:
            raw = text[value_at:value_end]
            number_at, number_end = value_at, value_end
            if last == "s":
                if raw != raw.strip():
                    return None
                unit = _number_and_unit(raw)[1]
                number_end -= len(unit)
            if text[number_end - 1 : number_end] == "%":
                number_end -= 1  # _number's "%" (after a unit too: "5%s" reads as 5)
            if name is None or not _column_number(text[number_at:number_end]):
                return None
            names.append(name)
            spans.append((number_at, number_end))
        if not names:
            return None
        return partial(_karpathy_columns, match.span(1), tuple(names), tuple(spans))


class ModdedNanoGptFamily:
    """modded-nanogpt ``step:N/TOTAL key:value ...`` training and validation lines."""

    name: ClassVar[str] = "modded_nanogpt"
    gate: ClassVar[tuple[str, ...]] = ("step:",)

    def parse(self, text: str) -> Hit | None:
        if not text.startswith("step:"):
            return None
        match = _MODDED_RE.match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        names = _MODDED_NAMES
        value: float | None
        for pair in match[3].split():
            key, sep, raw_value = pair.partition(":")
            if not sep:
                continue
            if raw_value[-1:] == "s":
                # A timing: "train_time:12345ms", "step_avg:nanms" (what _number_and_unit does, inlined: a
                # token holds no whitespace to strip).
                if len(raw_value) > 2 and raw_value[-2] == "m":
                    number, unit = raw_value[:-2], "_ms"
                elif len(raw_value) > 1:
                    number, unit = raw_value[:-1], "_s"
                else:
                    continue
                try:
                    value = float(number)
                except ValueError:
                    value = _number(number)
                    if value is None:
                        continue
                if isnan(value):
                    # A NaN timing is the warm-up placeholder, not a measurement.
                    continue
                key += unit
            else:
                try:
                    value = float(raw_value)
                except ValueError:
                    value = _number(raw_value)
                    if value is None:
                        continue
            metrics[names.get(key) or _modded_name(key)] = value
        if not metrics:
            return None
        total = match[2]
        return Hit(int(match[1]), None if total is None else int(total), None, None, None, None, metrics)

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): where the step, the total and each
        pair's key and number sit is the same on all of them, so only the numbers are read (see parse)."""
        match = _MODDED_RE.match(text) if text.startswith("step:") else None
        if match is None:
            return never_reads
        plan: list[tuple[int, int, int, int, bool, str, str | None]] = []
        rest_at = match.start(3)
        rest = match[3]
        at = 0
        for pair in rest.split():
            # The token's place: only whitespace lies between it and the end of the previous one.
            at = rest.find(pair, at)
            start = rest_at + at
            at += len(pair)
            key, sep, raw_value = pair.partition(":")
            if not sep:
                continue
            number_at = start + len(key) + 1
            number_end = number_at + len(raw_value)
            timing = raw_value[-1:] == "s"
            unit = ""
            if timing:
                if len(raw_value) > 2 and raw_value[-2] == "m":
                    number_end, unit = number_end - 2, "_ms"
                elif len(raw_value) > 1:
                    number_end, unit = number_end - 1, "_s"
                else:
                    continue
            # The same key on every line: name it once.
            name = None if has_digit(key) else _modded_name(key + unit)
            plan.append((start, start + len(key), number_at, number_end, timing, unit, name))
        total_span = group_span(match, 2)
        return partial(_read_modded, tuple(plan), match.span(1), total_span)

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for ``text``'s shape (see base.ColumnFamily) when every key is fixed and every
        number is plain digits or a word float() reads ("nan"); a timing printed as "nan" is the warm-up
        placeholder on every line of the shape, so its column is left out."""
        match = _MODDED_RE.match(text) if text.startswith("step:") else None
        if match is None:
            return None
        reader = self.for_shape(text)
        if not isinstance(reader, partial):
            return None
        plan: tuple[tuple[int, int, int, int, bool, str, str | None], ...] = reader.args[0]
        names: list[str] = []
        spans: list[Span] = []
        for _key_at, _key_end, number_at, number_end, timing, _unit, name in plan:
            number = text[number_at:number_end]
            if name is None or not _column_number(number):
                return None
            if timing and not has_digit(number) and isnan(float(number)):
                # "nanms" on every line of the shape: the warm-up placeholder, left out of every Hit.
                continue
            names.append(name)
            spans.append((number_at, number_end))
        if not names:
            return None
        return partial(_modded_columns, match.span(1), group_span(match, 2), tuple(names), tuple(spans))


def _column_number(number: str) -> bool:
    """Whether ``float()`` reads a value's text on every line of its shape as the per-line readers do (or
    raises): plain digits, or a word ``float()`` reads ("nan", "inf"), which has no digit to differ by."""
    return plain_float_shape(number) or float_word(number)


def _read_karpathy(
    plan: tuple[tuple[int, int, int, int, str, str | None], ...], step_span: tuple[int, int], text: str
) -> Hit | None:
    """What NanoGptFamily.parse reads from a line of the shape ``plan`` was made for."""
    metrics: dict[str, float] = {}
    names = _KARPATHY_NAMES
    value: float | None
    for key_at, key_end, value_at, value_end, last, fixed_name in plan:
        raw_value = text[value_at:value_end]
        unit = ""
        if last == "s":
            value, unit = _number_and_unit(raw_value)
        elif last == "%":
            value = _number(raw_value)
        else:
            try:
                value = float(raw_value)
            except ValueError:
                value = parse_number(raw_value)
        if value is None:
            continue
        name = fixed_name
        if name is None:
            key = text[key_at:key_end]
            if unit and key:
                key = key + "_" + unit
            name = names.get(key, "")
            if name == "":
                name = _karpathy_name(key)
            if name is None:
                continue
        if value == _MFU_PLACEHOLDER and name == "mfu":
            continue
        metrics[name] = value
    if not metrics:
        return None
    return Hit(int(text[step_span[0] : step_span[1]]), None, None, None, None, None, metrics)


def _read_modded(
    plan: tuple[tuple[int, int, int, int, bool, str, str | None], ...],
    step_span: tuple[int, int],
    total_span: tuple[int, int] | None,
    text: str,
) -> Hit | None:
    """What ModdedNanoGptFamily.parse reads from a line of the shape ``plan`` was made for."""
    metrics: dict[str, float] = {}
    names = _MODDED_NAMES
    value: float | None
    for key_at, key_end, number_at, number_end, timing, unit, fixed_name in plan:
        number = text[number_at:number_end]
        try:
            value = float(number)
        except ValueError:
            value = _number(number)
            if value is None:
                continue
        if timing and isnan(value):
            # A NaN timing is the warm-up placeholder, not a measurement.
            continue
        if fixed_name is None:
            key = text[key_at:key_end] + unit
            metrics[names.get(key) or _modded_name(key)] = value
        else:
            metrics[fixed_name] = value
    if not metrics:
        return None
    step = int(text[step_span[0] : step_span[1]])
    total = None if total_span is None else int(text[total_span[0] : total_span[1]])
    return Hit(step, total, None, None, None, None, metrics)


def _karpathy_columns(
    step_span: Span, names: tuple[str, ...], spans: tuple[Span, ...], lines: Sequence[str], start: int
) -> Columns | None:
    """What _read_karpathy reads from each of ``lines`` (one shape, see columns_for_shape), by column."""
    try:
        # The MFU column is looked at (for the placeholder); the others are converted as they are read.
        values = tuple(
            float_column(lines, start, span) if name == "mfu" else lazy_float_column(lines, start, span)
            for name, span in zip(names, spans, strict=True)
        )
    except ValueError:
        return None
    for name, column in zip(names, values, strict=True):
        if name == "mfu" and _MFU_PLACEHOLDER in column:
            return None
    return Columns(int_column(lines, start, step_span), None, None, None, None, None, names, values)


def _modded_columns(  # noqa: PLR0917 - bound by partial, positional
    step_span: Span,
    total_span: Span | None,
    names: tuple[str, ...],
    spans: tuple[Span, ...],
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_modded reads from each of ``lines`` (one shape, see columns_for_shape), by column."""
    try:
        values = tuple(lazy_float_column(lines, start, span) for span in spans)
    except ValueError:
        return None
    total = None if total_span is None else int_column(lines, start, total_span)
    return Columns(int_column(lines, start, step_span), total, None, None, None, None, names, values)


FAMILIES: tuple[type[LineFamily], ...] = (NanoGptFamily, ModdedNanoGptFamily)
