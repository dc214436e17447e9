"""Read torchtitan training and validation step lines.

torchtitan logs through ``[titan] <asctime> - <logger> - <LEVEL> - <message>``; the step lines look like::

    [titan] 2026-02-24 19:46:17,508 - root - INFO - step:  4  loss:  7.62585  grad_norm: 26.6250
        memory: 66.91GiB(37.51%)  tps: 10,050  tflops: 314.71  mfu: 13.99%
    [titan] 2025-06-16 22:30:50,322 - root - INFO - step: 200  loss:  6.1384  memory: 49.66GiB(52.28%)  ...
    [titan] ... - root - INFO - validate step: 100  loss:  5.9876  memory: 49.66GiB(52.28%)  tps: 5,812

(one physical line each). Older releases lack ``grad_norm`` or print ``wps`` instead of ``tps``; every
``name: value`` pair is read. ``memory: 66.91GiB(37.51%)`` becomes ``memory_gib`` and ``memory_pct``; numbers
keep their thousands separators out (``10,050`` -> 10050). The logger prefix is optional (the engine may have
removed the leading timestamp). When every rank shares one stdout the same step appears once per rank with no
rank prefix; each line is read as it is, and telling ranks apart is left to the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date
from functools import partial
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import (
    ColumnReader,
    Columns,
    Hit,
    LineFamily,
    Span,
    canonical_metric_name,
    group_spans,
    has_digit,
    int_column,
    joined_float_column,
    never_reads,
    parse_number,
    plain_float_shape,
    texts_at,
)

_STEP_RE = re.compile(
    r"(?:\[titan\]\s*)?"
    r"(?:(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[,.](\d{1,6}))?)?"
    r"(?:\s*-\s*[\w.]+\s*-\s*[A-Z]+\s*-\s*)?"
    r"\s*(validate step|step):\s*(\d{1,18})\s{2}(.*)"
)
# A "name: value" pair. A name starts at the first letter of a word: the lookbehind saves trying again at
# every later letter of a word that is not followed by ":", and finds the same matches.
_PAIR_RE = re.compile(r"(?<![A-Za-z_])([A-Za-z_]\w*+):\s*(\S+)")
_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?)GiB\((\d+(?:\.\d+)?)%\)")
# Metric name of a pair's name, per prefix ("" or "val_"): the same few repeat on every line.
_NAMES: dict[str, dict[str, str]] = {"": {}, "val_": {}}
_MAX_NAMES = 4096
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Days from the epoch to each printed date ("2026-02-24"), None for one calendar.timegm refuses (a month or a
# year out of range; timegm checks neither the day nor the time of day, so neither is checked here).
_DAYS: dict[str, int | None] = {}


def _stamp_seconds(text: str, match: re.Match[str]) -> float | None:
    """UTC seconds of the stamp groups (1-6 year..second, 7 fraction) as ``calendar.timegm`` counts them, or
    None when the month or year is out of range."""
    return _stamp_of(text[match.start(1) : match.end(3)], match.groups()[:7])


def _stamp_of(day_text: str, groups: tuple[str | None, ...]) -> float | None:
    """:func:`_stamp_seconds` from the printed date (``2026-02-24``) and the stamp groups' texts."""
    days = _DAYS.get(day_text)
    if days is None and day_text not in _DAYS:
        year, month, day = groups[0], groups[1], groups[2]
        assert year is not None and month is not None and day is not None  # the date is printed whole
        try:
            days = date(int(year), int(month), 1).toordinal() - _EPOCH_ORDINAL + int(day) - 1
        except ValueError:
            days = None
        if len(_DAYS) < _MAX_NAMES:
            _DAYS[day_text] = days
    if days is None:
        return None
    hour, minute, second, fraction = groups[3], groups[4], groups[5], groups[6]
    assert hour is not None and minute is not None and second is not None
    seconds = ((days * 24 + int(hour)) * 60 + int(minute)) * 60 + int(second)
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


class TorchTitanFamily:
    """torchtitan ``step: N  loss: X  ...`` and ``validate step: N  loss: X  ...`` lines."""

    name: ClassVar[str] = "torchtitan"
    gate: ClassVar[tuple[str, ...]] = ("step:",)

    def parse(self, text: str) -> Hit | None:
        match = _STEP_RE.match(text)
        if match is None:
            return None
        # Validation lines reuse the training names; the prefix keeps the two series apart.
        prefix = "val_" if match[8] == "validate step" else ""
        names = _NAMES[prefix]
        metrics: dict[str, float] = {}
        for key, raw_value in _PAIR_RE.findall(match[10]):
            if key == "memory":
                memory = _MEMORY_RE.fullmatch(raw_value)
                if memory is not None:
                    metrics[prefix + "memory_gib"] = float(memory[1])
                    metrics[prefix + "memory_pct"] = float(memory[2])
                    continue
            value: float | None
            try:
                # tps/tflops carry thousands separators and mfu a percent sign.
                value = float(raw_value.replace(",", "").rstrip("%"))
            except ValueError:
                value = parse_number(raw_value)
                if value is None:
                    continue
            name = names.get(key)
            if name is None:
                name = canonical_metric_name(prefix + key)
                if len(names) < _MAX_NAMES:
                    names[key] = name
            metrics[name] = value
        if not metrics:
            return None
        stamp = None if match[1] is None else _stamp_seconds(text, match)
        return Hit(int(match[9]), None, None, None, None, None, metrics, stamp)

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the stamp, the step and each
        ``name: value`` pair sit at the same places on all of them (see parse)."""
        match = _STEP_RE.match(text)
        if match is None:
            return never_reads
        prefix = "val_" if match[8] == "validate step" else ""
        at = match.start(10)
        pairs = tuple(
            (
                at + pair.start(1),
                at + pair.end(1),
                at + pair.start(2),
                at + pair.end(2),
                # A name without a digit is the same on every line of the shape: name the metric once.
                None if has_digit(pair[1]) else (pair[1], canonical_metric_name(prefix + pair[1])),
            )
            for pair in _PAIR_RE.finditer(match[10])
        )
        stamp = (
            None if match.start(1) < 0 else ((match.start(1), match.end(3)), group_spans(match, range(1, 8)))
        )
        return partial(_read_step, prefix, pairs, match.span(9), stamp)

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for ``text``'s shape (see base.ColumnFamily) when every name is fixed and every
        value plain digits (thousands separators and a percent sign aside)."""
        reader = self.for_shape(text)
        if not isinstance(reader, partial):
            return None
        prefix: str = reader.args[0]
        pairs: tuple[tuple[int, int, int, int, tuple[str, str] | None], ...] = reader.args[1]
        names: list[str] = []
        spans: list[tuple[Span, ...]] = []
        for _key_at, _key_end, raw_at, raw_end, fixed in pairs:
            if fixed is None:
                return None
            key, name = fixed
            raw = text[raw_at:raw_end]
            memory = _MEMORY_RE.fullmatch(raw) if key == "memory" else None
            if memory is not None:
                names += [prefix + "memory_gib", prefix + "memory_pct"]
                spans += [((raw_at + memory.start(1), raw_at + memory.end(1)),)]
                spans += [((raw_at + memory.start(2), raw_at + memory.end(2)),)]
                continue
            pieces = _value_pieces(raw, raw_at)
            if pieces is None:
                return None
            names.append(name)
            spans.append(pieces)
        if not names:
            return None
        return partial(_step_columns, reader.args[2], tuple(names), tuple(spans), reader.args[3])


def _step_columns(  # noqa: PLR0917 - bound by partial, positional
    step_span: Span,
    names: tuple[str, ...],
    spans: tuple[tuple[Span, ...], ...],
    stamp_plan: tuple[Span, tuple[Span | None, ...]] | None,
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_step reads from each of ``lines`` (one shape, see columns_for_shape), by column."""
    try:
        values = tuple(joined_float_column(lines, start, pieces) for pieces in spans)
    except ValueError:
        return None
    stamps = None if stamp_plan is None else partial(_step_stamps, stamp_plan, lines, start)
    return Columns(int_column(lines, start, step_span), None, None, None, None, None, names, values, stamps)


def _step_stamps(
    stamp_plan: tuple[Span, tuple[Span | None, ...]], lines: Sequence[str], start: int
) -> list[float | None]:
    day, groups = stamp_plan
    texts = [line[start:] for line in lines]
    return [_stamp_of(text[day[0] : day[1]], texts_at(text, groups)) for text in texts]


def _value_pieces(raw: str, at: int) -> tuple[Span, ...] | None:
    """Where the number of a printed value ``raw`` (at ``at``) is, its thousands separators and trailing
    percent signs cut out, as _read_step's ``float(raw.replace(",", "").rstrip("%"))`` reads it; None unless
    that is plain digits on every line of the shape."""
    kept = raw.rstrip("%")
    pieces: list[Span] = []
    offset = at
    for piece in kept.split(","):
        if piece:
            pieces.append((offset, offset + len(piece)))
        offset += len(piece) + 1
    number = kept.replace(",", "")
    return tuple(pieces) if pieces and plain_float_shape(number) else None


def _read_step(
    prefix: str,
    pairs: tuple[tuple[int, int, int, int, tuple[str, str] | None], ...],
    step_span: tuple[int, int],
    stamp_plan: tuple[Span, tuple[Span | None, ...]] | None,
    text: str,
) -> Hit | None:
    """What TorchTitanFamily.parse reads from a line of the shape ``pairs`` were found in."""
    names = _NAMES[prefix]
    metrics: dict[str, float] = {}
    for key_at, key_end, raw_at, raw_end, fixed in pairs:
        key, fixed_name = (text[key_at:key_end], None) if fixed is None else fixed
        raw_value = text[raw_at:raw_end]
        if key == "memory":
            memory = _MEMORY_RE.fullmatch(raw_value)
            if memory is not None:
                metrics[prefix + "memory_gib"] = float(memory[1])
                metrics[prefix + "memory_pct"] = float(memory[2])
                continue
        value: float | None
        try:
            value = float(raw_value.replace(",", "").rstrip("%"))
        except ValueError:
            value = parse_number(raw_value)
            if value is None:
                continue
        name = fixed_name or names.get(key)
        if name is None:
            name = canonical_metric_name(prefix + key)
            if len(names) < _MAX_NAMES:
                names[key] = name
        metrics[name] = value
    if not metrics:
        return None
    stamp = None
    if stamp_plan is not None:
        day, groups = stamp_plan
        stamp = _stamp_of(text[day[0] : day[1]], texts_at(text, groups))
    return Hit(int(text[step_span[0] : step_span[1]]), None, None, None, None, None, metrics, stamp)


FAMILIES: tuple[type[LineFamily], ...] = (TorchTitanFamily,)
