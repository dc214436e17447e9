"""Read OpenMMLab runner logs: MMEngine's ``Epoch(train)``/``Iter(train)`` lines and legacy mmcv 1.x lines.

MMEngine (``LogProcessor``; pairs separated by two spaces)::

    10/30 22:18:02 - mmengine - INFO - Epoch(train) [1][200/735]  lr: 1.9870e-04  eta: 2:46:39  time: 2.8906
        data_time: 0.0042  memory: 10762  loss: 2.7522  grad_norm: 3.0608
    Iter(train) [  100/20000]  lr: 1.0000e-04  eta: 1 day, 2:03:04  time: 0.5  loss: 1.2
    Epoch(val) [1][500/500]    coco/bbox_mAP: 0.4170  data_time: 0.0031  time: 0.0428

legacy mmcv ``TextLoggerHook`` (a TAB after the progress block, pairs separated by ``, ``)::

    2021-11-22 01:32:34,502 - mmocr - INFO - Epoch [1][200/62598]\tlr: 1.000e-03, eta: 7 days, 15:55:58, ...
    2025-04-18 21:58:31,047 - mmdet - INFO - Iter [10100/316440]\tlr: 3.990e-04, eta: 7 days, 4:23:57, ...
    Epoch(val) [12][625]\tbbox_mAP: 0.3740, bbox_mAP_50: 0.5860, ...

(one physical line each). ``Epoch(train) [1][200/735]`` gives epoch 1, batch 200 of 735; ``Iter(train)
[100/20000]`` gives step 100 of 20000. ``eta`` (``H:MM:SS`` or ``N days, H:MM:SS``) becomes ``eta_s`` in
seconds. Validation and test lines do not move training progress; their metrics get a ``val_``/``test_``
prefix. MMEngine's own date (``MM/DD HH:MM:SS``) has no year, so it gives no timestamp; mmcv's full date does.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Sequence
from functools import partial
from operator import itemgetter
from typing import ClassVar

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
    float_column,
    float_word,
    group_spans,
    has_digit,
    int_column,
    lazy_float_column,
    never_reads,
    parse_number,
    plain_float_shape,
    texts_at,
)

_MMENGINE_RE = re.compile(
    r"(Epoch|Iter)\((\w+)\)\s*(?:\[\s*(\d{1,18})\])?\[\s*(\d{1,18})(?:\s*/\s*(\d{1,18}))?\]  (.*)"
)
_MMCV_RE = re.compile(r"(Epoch|Iter)(?:\((\w+)\))? ?(?:\[(\d{1,18})\])?\[(\d{1,18})(?:/(\d{1,18}))?\]\t(.*)")
_LEADING_STAMP_RE = re.compile(r"\s*(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:,(\d{1,6}))?")
_ETA_RE = re.compile(r"\s*(?:(\d{1,18}) days?, )?(\d{1,18}):(\d\d):(\d\d)\s*")
_SPLIT_PREFIX = {"train": "", "val": "val_", "test": "test_"}


def _leading_timestamp(text: str) -> float | None:
    """UTC seconds of a ``YYYY-MM-DD HH:MM:SS,mmm`` stamp at the start of ``text``, else None."""
    match = _LEADING_STAMP_RE.match(text)
    return None if match is None else _stamp_seconds(match.groups())


def _stamp_seconds(groups: Sequence[str | None]) -> float | None:
    """UTC seconds of a stamp's groups (year..second, fraction), None when they are no real date and time."""
    try:
        seconds = calendar.timegm((*(int(g or 0) for g in groups[:6]), 0, 0, 0))
    except ValueError:
        return None
    fraction = groups[6]
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _stamp_at(text: str, stamp: tuple[Span | None, ...] | None) -> float | None:
    """The timestamp of ``text`` whose stamp's groups are at ``stamp`` (None: it has none)."""
    return None if stamp is None else _stamp_seconds(texts_at(text, stamp))


def _eta_seconds(text: str) -> float | None:
    match = _ETA_RE.fullmatch(text)
    return None if match is None else eta_seconds(match)


def _store(metrics: dict[str, float], key: str, value: str, prefix: str) -> None:
    key = key.strip()
    if key == "eta":
        seconds = _eta_seconds(value)
        if seconds is not None:
            metrics[prefix + "eta_s"] = seconds
        return
    try:
        number: float | None = float(value)
    except ValueError:
        number = parse_number(value)
    if number is not None:
        metrics[canonical_metric_name(prefix + key)] = number


def _progress_hit(match: re.Match[str], split: str, metrics: dict[str, float]) -> Hit:
    """The Hit of one progress line (groups: kind, split, epoch, index, total, rest); only training lines move
    the run's epoch/batch/step."""
    if split != "train":
        return Hit(metrics=metrics)
    kind, _, epoch, index, total, _ = match.groups()
    if kind == "Iter":
        return Hit(step=int(index), total_steps=None if total is None else int(total), metrics=metrics)
    return Hit(
        epoch=None if epoch is None else float(epoch),
        batch=int(index),
        batches_per_epoch=None if total is None else int(total),
        metrics=metrics,
    )


class MmengineFamily:
    """MMEngine ``Epoch(train) [e][i/n]  key: value  ...`` and ``Iter(train) [i/n]  ...`` lines."""

    name: ClassVar[str] = "mmengine"
    gate: ClassVar[tuple[str, ...]] = ("Epoch(", "Iter(")

    def parse(self, text: str) -> Hit | None:
        at = text.find("Epoch(")
        if at < 0:
            at = text.find("Iter(")
            if at < 0:
                return None
        match = _MMENGINE_RE.match(text, at)
        if match is None:
            return None
        split = match[2]
        prefix = _SPLIT_PREFIX.get(split, split + "_")
        metrics: dict[str, float] = {}
        for pair in match[6].split("  "):
            key, sep, value = pair.partition(": ")
            if sep:
                _store(metrics, key, value, prefix)
        if not metrics:
            return None
        hit = _progress_hit(match, split, metrics)
        hit.timestamp = _leading_timestamp(text)
        return hit

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the counters and each
        ``key: value`` pair sit at the same places on all of them (see parse)."""
        at = text.find("Epoch(")
        if at < 0:
            at = text.find("Iter(")
        match = _MMENGINE_RE.match(text, at) if at >= 0 else None
        if match is None:
            return never_reads
        if has_digit(match[2]):
            return self.parse  # a split named with a digit names its metrics differently per line
        pairs: list[tuple[int, int, int, int]] = []
        pair_at = match.start(6)
        for pair in match[6].split("  "):
            key, sep, _ = pair.partition(": ")
            if sep:
                pairs.append(
                    (pair_at, pair_at + len(key), pair_at + len(key) + len(sep), pair_at + len(pair))
                )
            pair_at += len(pair) + 2
        return _progress_reader(match, match[2], pairs)

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for the progress lines of ``text``'s shape (see _columns_for)."""
        return _columns_for(text, self.for_shape(text))


class MmcvFamily:
    """Legacy mmcv ``Epoch [e][i/n]<TAB>key: value, ...``, ``Iter [i/n]<TAB>...`` and ``Epoch(val)`` lines."""

    name: ClassVar[str] = "mmcv"
    gate: ClassVar[tuple[str, ...]] = ("]\t",)

    def parse(self, text: str) -> Hit | None:
        at = text.find("Epoch")
        if at < 0:
            at = text.find("Iter")
            if at < 0:
                return None
        match = _MMCV_RE.match(text, at)
        if match is None:
            return None
        split = match[2] or "train"
        prefix = _SPLIT_PREFIX.get(split, split + "_")
        metrics: dict[str, float] = {}
        key = ""
        value = ""
        for chunk in match[6].split(", "):
            name, sep, rest = chunk.partition(": ")
            if sep:
                if key:
                    _store(metrics, key, value, prefix)
                key, value = name, rest
            elif key:
                # "eta: 7 days, 15:55:58" was cut at its own ", ": glue the piece back onto the value.
                value += ", " + chunk
        if key:
            _store(metrics, key, value, prefix)
        if not metrics:
            return None
        hit = _progress_hit(match, split, metrics)
        hit.timestamp = _leading_timestamp(text)
        return hit

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the counters and each
        ``key: value`` pair (an ETA's ", " glued back as parse does) sit at the same places on all of them."""
        at = text.find("Epoch")
        if at < 0:
            at = text.find("Iter")
        match = _MMCV_RE.match(text, at) if at >= 0 else None
        if match is None:
            return never_reads
        split = match[2] or "train"
        if has_digit(split):
            return self.parse  # a split named with a digit names its metrics differently per line
        pairs: list[tuple[int, int, int, int]] = []
        # Whether the last pair is one parse keeps (it drops one with an empty key, and what is glued to it).
        open_pair = False
        chunk_at = match.start(6)
        for chunk in match[6].split(", "):
            name, sep, _ = chunk.partition(": ")
            if sep:
                open_pair = bool(name)
                if open_pair:
                    value_at = chunk_at + len(name) + len(sep)
                    pairs.append((chunk_at, chunk_at + len(name), value_at, chunk_at + len(chunk)))
            elif open_pair:
                # A piece of the previous value cut at its own ", ": the value runs on to here.
                key_at, key_end, value_at, _ = pairs[-1]
                pairs[-1] = (key_at, key_end, value_at, chunk_at + len(chunk))
            chunk_at += len(chunk) + 2
        return _progress_reader(match, split, pairs)

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for the progress lines of ``text``'s shape (see _columns_for)."""
        return _columns_for(text, self.for_shape(text))


def _progress_reader(
    match: re.Match[str], split: str, pairs: list[tuple[int, int, int, int]]
) -> Callable[[str], Hit | None]:
    """The reader of a progress line of ``match``'s shape, its pairs at ``pairs`` (key start, key end, value
    start, value end)."""
    prefix = _SPLIT_PREFIX.get(split, split + "_")
    plan: list[tuple[int, int, int, int, str | None]] = []
    for key_at, key_end, value_at, value_end in pairs:
        key = match.string[key_at:key_end]
        stripped = key.strip()
        # The name of a key without a digit, once; "eta" (read as seconds) and others per line.
        name = None if has_digit(key) or stripped == "eta" else canonical_metric_name(prefix + stripped)
        plan.append((key_at, key_end, value_at, value_end, name))
    counters = group_spans(match, (1, 3, 4, 5))
    # The stamp pattern tells no digit from another either: every line of the shape has one or none.
    stamp = _LEADING_STAMP_RE.match(match.string)
    stamp_spans = None if stamp is None else group_spans(stamp, range(1, 8))
    return partial(_read_progress, tuple(plan), counters, split, prefix, stamp_spans)


def _read_progress(  # noqa: PLR0917 - bound by partial, positional
    plan: tuple[tuple[int, int, int, int, str | None], ...],
    counters: tuple[Span | None, ...],
    split: str,
    prefix: str,
    stamp: tuple[Span | None, ...] | None,
    text: str,
) -> Hit | None:
    """What MmengineFamily.parse and MmcvFamily.parse read from a line of the shape ``plan`` was made for."""
    metrics: dict[str, float] = {}
    for key_at, key_end, value_at, value_end, name in plan:
        value = text[value_at:value_end]
        if name is None:
            _store(metrics, text[key_at:key_end], value, prefix)
            continue
        try:
            number: float | None = float(value)
        except ValueError:
            number = parse_number(value)
        if number is not None:
            metrics[name] = number
    if not metrics:
        return None
    kind, epoch, index, total = texts_at(text, counters)
    assert index is not None  # the group is not optional
    if split != "train":
        hit = Hit(metrics=metrics)
    elif kind == "Iter":
        hit = Hit(step=int(index), total_steps=None if total is None else int(total), metrics=metrics)
    else:
        hit = Hit(
            epoch=None if epoch is None else float(epoch),
            batch=int(index),
            batches_per_epoch=None if total is None else int(total),
            metrics=metrics,
        )
    hit.timestamp = _stamp_at(text, stamp)
    return hit


def _columns_for(text: str, reader: Callable[[str], Hit | None]) -> ColumnReader | None:
    """A column reader (see base.ColumnFamily) of the progress lines of ``text``'s shape that ``reader``
    (for_shape's) reads: values plain digits or a word ``float()`` reads (``nan``), an ETA read from its
    parts; each metric named once for the shape or, by a key with a digit, once for a block (see
    _block_names)."""
    if not isinstance(reader, partial) or reader.func is not _read_progress:
        return None
    plan, counters, split, prefix, stamp = reader.args
    names: list[str | Span] = []
    spans: list[Span | None] = []
    etas: list[EtaSpans | None] = []
    for key_at, key_end, value_at, value_end, fixed in plan:
        if fixed is None and text[key_at:key_end].strip() == "eta":
            eta = _ETA_RE.fullmatch(text, value_at, value_end)
            if eta is None:
                continue  # no ETA on any line of the shape: parse stores none
            names.append(prefix + "eta_s")
            spans.append(None)
            etas.append(eta_spans(eta))
            continue
        raw = text[value_at:value_end].strip()
        if not plain_float_shape(raw) and not float_word(raw):
            return None
        names.append((key_at, key_end) if fixed is None else fixed)
        spans.append((value_at, value_end))
        etas.append(None)
    if not names:
        return None
    # What the counters are: none of a validation line, a step, or an epoch's batch (see _read_progress).
    kind = "" if split != "train" else text[counters[0][0] : counters[0][1]]
    return partial(
        _progress_columns, (tuple(names), prefix), tuple(spans), tuple(etas), kind, counters, stamp
    )


def _progress_columns(  # noqa: PLR0917 - bound by partial, positional
    naming: tuple[tuple[str | Span, ...], str],
    spans: tuple[Span | None, ...],
    etas: tuple[EtaSpans | None, ...],
    kind: str,
    counters: tuple[Span | None, ...],
    stamp: tuple[Span | None, ...] | None,
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_progress reads from each of ``lines`` (one shape, see _columns_for), by column."""
    names = _block_names(*naming, lines, start)
    if names is None:
        return None
    try:
        values = tuple(_value_column(lines, start, span, eta) for span, eta in zip(spans, etas, strict=True))
    except ValueError:
        return None
    stamps = None if stamp is None else partial(_stamp_column, stamp, lines, start)
    if not kind:
        return Columns(None, None, None, None, None, None, names, values, stamps)
    _, epoch, index, total = counters
    assert index is not None  # the group is not optional
    totals = None if total is None else int_column(lines, start, total)
    if kind == "Iter":
        return Columns(int_column(lines, start, index), totals, None, None, None, None, names, values, stamps)
    epochs = None if epoch is None else float_column(lines, start, epoch)
    batches = int_column(lines, start, index)
    return Columns(None, None, epochs, None, batches, totals, names, values, stamps)


def _block_names(
    names: tuple[str | Span, ...], prefix: str, lines: Sequence[str], start: int
) -> tuple[str, ...] | None:
    """The metric names of ``lines``: each a fixed name, or the name of the key at a span, a key with a digit
    that ``_store`` names per line, here once, where it reads the same on every line; None when such a key
    differs between lines or two metrics share a name (the line reader keeps one of them)."""
    resolved: list[str] = []
    for name in names:
        if isinstance(name, str):
            resolved.append(name)
            continue
        keys = set(map(itemgetter(slice(start + name[0], start + name[1])), lines))
        if len(keys) > 1:
            return None
        resolved.append(canonical_metric_name(prefix + keys.pop().strip()))
    return tuple(resolved) if len(set(resolved)) == len(resolved) else None


def _value_column(
    lines: Sequence[str], start: int, span: Span | None, eta: EtaSpans | None
) -> Sequence[float]:
    """A metric's column: the ETA's seconds, or the value at ``span`` read by float()."""
    if eta is not None:
        return eta_column(lines, start, eta)
    assert span is not None  # a value is at a span or an ETA
    return lazy_float_column(lines, start, span)


def _stamp_column(stamp: tuple[Span | None, ...], lines: Sequence[str], start: int) -> list[float | None]:
    return [_stamp_at(line[start:], stamp) for line in lines]


FAMILIES: tuple[type[LineFamily], ...] = (MmengineFamily, MmcvFamily)
