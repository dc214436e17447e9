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
from collections.abc import Callable
from functools import partial
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import (
    Hit,
    LineFamily,
    Span,
    canonical_metric_name,
    group_spans,
    has_digit,
    never_reads,
    parse_number,
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
    if match is None:
        return None
    try:
        seconds = calendar.timegm((*(int(g) for g in match.groups()[:6]), 0, 0, 0))
    except ValueError:
        return None
    fraction = match[7]
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _eta_seconds(text: str) -> float | None:
    match = _ETA_RE.fullmatch(text)
    if match is None:
        return None
    days = int(match[1]) if match[1] else 0
    return float(((days * 24 + int(match[2])) * 60 + int(match[3])) * 60 + int(match[4]))


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
    return partial(_read_progress, tuple(plan), counters, split, prefix)


def _read_progress(
    plan: tuple[tuple[int, int, int, int, str | None], ...],
    counters: tuple[Span | None, ...],
    split: str,
    prefix: str,
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
    hit.timestamp = _leading_timestamp(text)
    return hit


FAMILIES: tuple[type[LineFamily], ...] = (MmengineFamily, MmcvFamily)
