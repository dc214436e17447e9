"""Read DeepSpeed engine log lines and the GPT-NeoX iteration reports that run on top of DeepSpeed.

Shapes handled (each may follow DeepSpeed's ``[date] [INFO] [file.py:line:func]`` logger prefix, which is read
for the timestamp when the engine left it in place)::

    [Rank 0] step=40, skipped=2, lr=[5e-05], mom=[[0.9, 0.999]]
    epoch=0/micro_step=34/global_step=34, RunningAvgSamplesPerSec=7.86, ..., MemAllocated=59.65GB, ...
    0/40, SamplesPerSec=83.48609168106144, MemAllocated=0.26GB, MaxMemAllocated=9.02GB
    [deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768
     samples/sec: 7.799 | iteration       34/   10000 | learning rate: 2.111E-06 | lm_loss: 1.118665E+01 | ...
     validation results at iteration 100 | lm_loss value: 6.1E+00 | lm_loss_ppl value: 4.5E+02 |

The ``step=`` line is also found after other text on the same physical line (a tqdm bar that did not end its
line). A value printed with a unit (``59.65GB``, ``112.9TFLOPS``) keeps the unit in the metric name
(``mem_allocated_gb``), so the number is never read in the wrong unit.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import ClassVar, NamedTuple

from trainmon_tui.parsers.trainlog.base import (
    ColumnReader,
    Columns,
    Hit,
    LineFamily,
    Span,
    canonical_metric_name,
    group_span,
    group_spans,
    has_digit,
    int_column,
    lazy_float_column,
    never_reads,
    parse_number,
    texts_at,
)

_LEADING_STAMP_RE = re.compile(r"\s*\[(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:[,.](\d{1,6}))?\]")
_STEP_RE = re.compile(r"step=(\d{1,18}), skipped=(\d{1,18}), lr=\[([^\]]*)\]")
_RANK_RE = re.compile(r"\[Rank (\d{1,18})\]")
_GLOBAL_STEP_RE = re.compile(r"global_step=(\d{1,18}),(.*)")
_OLD_TIMER_RE = re.compile(r"(\d{1,18})/(\d{1,18}), (SamplesPerSec=.*)")
_OVERFLOW_RE = re.compile(
    r"(?:Rank (\d{1,18}) )?Skipping step\. Attempted loss scale: (\d+(?:\.\d+)?)"
    r"(?:, reducing to (\d+(?:\.\d+)?))?"
)
_NEOX_RE = re.compile(r"\s*samples/sec: ([^|]*)\|\s*iteration\s+(\d{1,18})\s*/\s*(\d{1,18})\s*\|(.*)")
_NEOX_EVAL_RE = re.compile(r"\s*(validation|test) results at (?:iteration (\d{1,18})|[^|]*?)\s*\|(.*)")
_VALUE_UNIT_RE = re.compile(r"\s*([-+]?(?:\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?|nan|inf))\s*([A-Za-z/]*)\s*")


def _leading_stamp(text: str) -> re.Match[str] | None:
    """The ``[YYYY-MM-DD HH:MM:SS,mmm]`` stamp at the start of ``text``, if any."""
    if not text or text[0] not in "[ ":
        return None
    return _LEADING_STAMP_RE.match(text)


def _leading_timestamp(text: str) -> float | None:
    """UTC seconds of a ``[YYYY-MM-DD HH:MM:SS,mmm]`` stamp at the start of ``text``, else None."""
    match = _leading_stamp(text)
    return None if match is None else _stamp_seconds(match.groups())


def _stamp_seconds(groups: tuple[str | None, ...]) -> float | None:
    """UTC seconds of the stamp's groups (year..second, millis), None when they are no real date and time."""
    try:
        seconds = calendar.timegm((*(int(g or 0) for g in groups[:6]), 0, 0, 0))
    except ValueError:
        return None
    millis = groups[6]
    return seconds + (int(millis) / 10 ** len(millis) if millis else 0.0)


def _value_with_unit(raw_name: str, raw_value: str) -> tuple[str, float] | None:
    """``("MemAllocated", "59.65GB")`` -> ``("mem_allocated_gb", 59.65)``; None when not a number."""
    try:
        return canonical_metric_name(raw_name), float(raw_value)
    except ValueError:
        pass
    match = _VALUE_UNIT_RE.fullmatch(raw_value)
    if match is None:
        return None
    number = parse_number(match[1])
    if number is None:
        return None
    return _unit_name(raw_name, match[2]), number


def _unit_name(raw_name: str, unit: str) -> str:
    """The name of a metric printed with a unit (none: ``unit`` is empty)."""
    return canonical_metric_name(raw_name + "_" + unit if unit else raw_name)


def _read_pairs(body: str, separator: str, assign: str, metrics: dict[str, float], prefix: str = "") -> None:
    """Add every ``key<assign>value`` pair of ``body`` (split on ``separator``) that holds a number."""
    for pair in body.split(separator):
        key, sep, value = pair.partition(assign)
        if not sep:
            continue
        key = key.strip()
        if prefix:
            # NeoX eval fields read "lm_loss value: X": the loss itself, under the split's prefix.
            key = prefix + key.removesuffix(" value")
        read = _value_with_unit(key, value)
        if read is not None:
            metrics[read[0]] = read[1]


def _step_match(text: str) -> re.Match[str] | None:
    """The ``step=N, skipped=N, lr=[...]`` of a DeepSpeed progress line, if any."""
    match = _STEP_RE.search(text)
    if match is None:
        return None
    start = match.start()
    if start and (text[start - 1].isalnum() or text[start - 1] == "_"):
        # "global_step=" / "micro_step=" belong to the throughput timer, not to this line shape.
        return None
    return match


def _global_step_match(text: str) -> re.Match[str] | None:
    """``global_step=N,`` and the pairs after it, of a throughput timer line, if any."""
    at = text.find("global_step=")
    return None if at < 0 else _GLOBAL_STEP_RE.match(text, at)


def _old_timer_match(text: str) -> re.Match[str] | None:
    """``EPOCH/GLOBAL_STEP, SamplesPerSec=...`` of an old timer line, if any."""
    at = text.find(", SamplesPerSec=")
    if at < 0:
        return None
    # The old timer prints "EPOCH/GLOBAL_STEP, SamplesPerSec=..." right after the logger prefix.
    return _OLD_TIMER_RE.match(text, text.rfind(" ", 0, at) + 1)


def _neox_eval_prefix(match: re.Match[str]) -> str:
    return "val_" if match[1] == "validation" else "test_"


class DeepSpeedFamily:
    """DeepSpeed engine progress (``step=``, throughput timers, fp16 overflow notes) and GPT-NeoX reports."""

    name: ClassVar[str] = "deepspeed"
    gate: ClassVar[tuple[str, ...]] = ("step=", "PerSec=", "samples/sec", "Skipping step", "results at")

    def parse(self, text: str) -> Hit | None:
        if "step=" in text:
            hit = self._parse_step(text)
            if hit is None:
                hit = self._parse_global_step_timer(text)
        elif "PerSec=" in text:
            hit = self._parse_old_timer(text)
        elif "Skipping step" in text:
            hit = self._parse_overflow(text)
        elif "samples/sec" in text:
            hit = self._parse_neox(text)
        else:
            hit = self._parse_neox_eval(text)
        if hit is not None:
            hit.timestamp = _leading_timestamp(text)
        return hit

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the stamp, counters and values
        parse reads sit at the same places on all of them, no pattern or test of parse tells one digit from
        another, and whether ``float()`` reads a value (or it has a unit) holds for the whole shape. A shape
        with a key holding a digit (its metric's name may differ from line to line) is read by parse."""
        stamp_match = _leading_stamp(text)
        stamp = None if stamp_match is None else group_spans(stamp_match, range(1, 8))
        if "step=" in text:
            step = _step_match(text)
            if step is not None:
                return _step_reader(text, step, stamp)
        elif "Skipping step" in text and "PerSec=" not in text:  # (parse reads "PerSec=" lines as timers)
            overflow = _OVERFLOW_RE.search(text)
            if overflow is None:
                return never_reads
            scale = overflow.span(3) if overflow.start(3) >= 0 else overflow.span(2)
            return partial(_read_overflow, scale, group_span(overflow, 1), stamp)
        report = _report_plan(text, stamp)
        if report is None:
            return never_reads
        return self.parse if report.values is None else partial(_read_report, report)

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader (see base.ColumnFamily) for the throughput timer and NeoX lines of ``text``'s
        shape whose metrics are distinct and read by ``float()`` (where parse_number reads one, as it does
        a number without a thousands separator). ``step=`` lines and overflow notes name a rank: read per
        line."""
        reader = self.for_shape(text)
        if not isinstance(reader, partial) or reader.func is not _read_report:
            return None
        report: _Report = reader.args[0]
        values = report.values
        if not values or report.step is None:
            return None
        names = tuple(value.name for value in values)
        if len(set(names)) < len(names):
            return None
        return partial(_report_columns, report, names)

    @staticmethod
    def _parse_step(text: str) -> Hit | None:
        match = _step_match(text)
        if match is None:
            return None
        metrics = {"skipped": float(match[2])}
        # One lr per parameter group; the first group is the one schedules are usually written for. The
        # optimizer momentum/betas ("mom=") are constants of the run, not progress, and are left out.
        first_lr = parse_number(match[3].partition(",")[0])
        if first_lr is not None:
            metrics["lr"] = first_lr
        rank = _RANK_RE.search(text, 0, match.start())
        return Hit(step=int(match[1]), metrics=metrics, rank=None if rank is None else int(rank[1]))

    @staticmethod
    def _parse_global_step_timer(text: str) -> Hit | None:
        match = _global_step_match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        _read_pairs(match[2], ",", "=", metrics)
        # The timer's "epoch=" counter is left out: training loops rarely advance it, so it reads 0 forever.
        return Hit(step=int(match[1]), metrics=metrics)

    @staticmethod
    def _parse_old_timer(text: str) -> Hit | None:
        match = _old_timer_match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        _read_pairs(match[3], ",", "=", metrics)
        if not metrics:
            return None
        return Hit(step=int(match[2]), metrics=metrics)

    @staticmethod
    def _parse_overflow(text: str) -> Hit | None:
        match = _OVERFLOW_RE.search(text)
        if match is None:
            return None
        # With hysteresis left, DeepSpeed keeps the attempted scale; otherwise it drops to the new one.
        scale = float(match[3] or match[2])
        rank = match[1]
        return Hit(metrics={"loss_scale": scale}, rank=None if rank is None else int(rank))

    @staticmethod
    def _parse_neox(text: str) -> Hit | None:
        match = _NEOX_RE.match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        samples_per_sec = parse_number(match[1])
        if samples_per_sec is not None:
            metrics["samples_per_sec"] = samples_per_sec
        _read_pairs(match[4], "|", ":", metrics)
        return Hit(step=int(match[2]), total_steps=int(match[3]), metrics=metrics)

    @staticmethod
    def _parse_neox_eval(text: str) -> Hit | None:
        match = _NEOX_EVAL_RE.match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        _read_pairs(match[3], "|", ":", metrics, _neox_eval_prefix(match))
        if not metrics:
            return None
        step = match[2]
        return Hit(step=None if step is None else int(step), metrics=metrics)


class _Value(NamedTuple):
    """Where a value parse reads is in every line of a shape, the metric it gives, and how it is read: by
    ``float()``, or (``loose``: a number before a unit, NeoX's samples/sec) by parse_number."""

    at: int
    end: int
    name: str
    loose: bool


class _Report(NamedTuple):
    """Where parse finds the counters and values of a timer or NeoX line in every line of one shape (None
    for values: a key holds a digit, so parse reads the shape)."""

    step: Span | None
    total: Span | None
    values: tuple[_Value, ...] | None
    #: Whether a line whose values give no metric reads as nothing.
    needs_metrics: bool
    stamp: tuple[Span | None, ...] | None


def _report_plan(text: str, stamp: tuple[Span | None, ...] | None) -> _Report | None:
    """Where parse finds what it reads in a throughput timer or NeoX line of ``text``'s shape; None when
    ``text`` is none (nor is any line of its shape)."""
    if "step=" in text:
        timer = _global_step_match(text)
        if timer is None:
            return None
        return _Report(timer.span(1), None, _value_plan(text, timer.span(2), ",", "="), False, stamp)
    if "PerSec=" in text:
        timer = _old_timer_match(text)
        if timer is None:
            return None
        return _Report(timer.span(2), None, _value_plan(text, timer.span(3), ",", "="), True, stamp)
    if "samples/sec" in text:
        neox = _NEOX_RE.match(text)
        if neox is None:
            return None
        values = _value_plan(text, neox.span(4), "|", ":")
        speed = _Value(neox.start(1), neox.end(1), "samples_per_sec", loose=True)
        return _Report(neox.span(2), neox.span(3), None if values is None else (speed, *values), False, stamp)
    neox = _NEOX_EVAL_RE.match(text)
    if neox is None:
        return None
    values = _value_plan(text, neox.span(3), "|", ":", _neox_eval_prefix(neox))
    return _Report(group_span(neox, 2), None, values, True, stamp)


def _value_plan(
    text: str, body: Span, separator: str, assign: str, prefix: str = ""
) -> tuple[_Value, ...] | None:
    """The values _read_pairs reads in ``text`` at ``body``, at the same places in every line of its shape;
    None when a key holds a digit."""
    values: list[_Value] = []
    pair_at = body[0]
    for pair in text[body[0] : body[1]].split(separator):
        key, sep, value = pair.partition(assign)
        value_at = pair_at + len(key) + len(sep)
        value_end = pair_at + len(pair)
        pair_at = value_end + len(separator)
        if not sep:
            continue
        key = key.strip()
        if has_digit(key):
            return None
        if prefix:
            key = prefix + key.removesuffix(" value")
        if _reads_as_float(value):
            values.append(_Value(value_at, value_end, canonical_metric_name(key), loose=False))
            continue
        unit = _VALUE_UNIT_RE.fullmatch(text, value_at, value_end)
        if unit is not None:
            values.append(_Value(unit.start(1), unit.end(1), _unit_name(key, unit[2]), loose=True))
    return tuple(values)


def _reads_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_report(report: _Report, text: str) -> Hit | None:
    """What DeepSpeedFamily.parse reads from a timer or NeoX line of the shape ``report`` was made for."""
    metrics: dict[str, float] = {}
    assert report.values is not None  # for_shape makes no reader of a shape parse reads
    for value_at, value_end, name, loose in report.values:
        if loose:
            number = parse_number(text[value_at:value_end])
            if number is not None:
                metrics[name] = number
        else:
            metrics[name] = float(text[value_at:value_end])
    if report.needs_metrics and not metrics:
        return None
    step, total = report.step, report.total
    hit = Hit(
        step=None if step is None else int(text[step[0] : step[1]]),
        total_steps=None if total is None else int(text[total[0] : total[1]]),
        metrics=metrics,
    )
    hit.timestamp = _timestamp_at(text, report.stamp)
    return hit


def _report_columns(
    report: _Report, names: tuple[str, ...], lines: Sequence[str], start: int
) -> Columns | None:
    """What _read_report reads from each of ``lines`` (one shape, see columns_for_shape), by column."""
    assert report.values is not None and report.step is not None  # see columns_for_shape
    try:
        values = tuple(lazy_float_column(lines, start, (value.at, value.end)) for value in report.values)
    except ValueError:
        return None  # a number parse_number reads and float() does not ("1,234")
    step = int_column(lines, start, report.step)
    total = None if report.total is None else int_column(lines, start, report.total)
    stamp = report.stamp
    stamps = None if stamp is None else partial(_stamp_column, stamp, lines, start)
    return Columns(step, total, None, None, None, None, names, values, stamps)


def _stamp_column(stamp: tuple[Span | None, ...], lines: Sequence[str], start: int) -> list[float | None]:
    return [_timestamp_at(line[start:], stamp) for line in lines]


def _timestamp_at(text: str, stamp: tuple[Span | None, ...] | None) -> float | None:
    return None if stamp is None else _stamp_seconds(texts_at(text, stamp))


def _step_reader(
    text: str, step: re.Match[str], stamp: tuple[Span | None, ...] | None
) -> Callable[[str], Hit | None]:
    """The reader of the ``step=`` lines of ``step``'s shape (see DeepSpeedFamily._parse_step)."""
    lrs = step.group(3)
    first_lr = (step.start(3), step.start(3) + len(lrs.partition(",")[0]))
    rank = _RANK_RE.search(text, 0, step.start())
    counters = (step.span(1), step.span(2), first_lr, None if rank is None else rank.span(1))
    return partial(_read_step, counters, stamp)


def _read_step(
    counters: tuple[Span, Span, Span, Span | None], stamp: tuple[Span | None, ...] | None, text: str
) -> Hit:
    """What DeepSpeedFamily.parse reads from a ``step=`` line of the shape ``counters`` were found in."""
    step, skipped, first_lr, rank = counters
    metrics = {"skipped": float(text[skipped[0] : skipped[1]])}
    lr = parse_number(text[first_lr[0] : first_lr[1]])
    if lr is not None:
        metrics["lr"] = lr
    hit = Hit(
        step=int(text[step[0] : step[1]]),
        metrics=metrics,
        rank=None if rank is None else int(text[rank[0] : rank[1]]),
    )
    hit.timestamp = _timestamp_at(text, stamp)
    return hit


def _read_overflow(scale: Span, rank: Span | None, stamp: tuple[Span | None, ...] | None, text: str) -> Hit:
    """What DeepSpeedFamily.parse reads from an overflow note of the shape the spans were found in."""
    hit = Hit(
        metrics={"loss_scale": float(text[scale[0] : scale[1]])},
        rank=None if rank is None else int(text[rank[0] : rank[1]]),
    )
    hit.timestamp = _timestamp_at(text, stamp)
    return hit


FAMILIES: tuple[type[LineFamily], ...] = (DeepSpeedFamily,)
