"""Read Ultralytics YOLO (v5, v8, 11) training tables: column headers, per-epoch rows and the validation row.

Shapes handled (one cleaned line each; the header is printed again before every epoch)::

          Epoch    GPU_mem   box_loss   cls_loss   dfl_loss  Instances       Size
         70/1000      6.73G      1.081     0.4706      1.084         10        640: 100%|█████| 16/16 [..]
                     Class     Images  Instances      Box(P          R      mAP50  mAP50-95): 100%|█| 8/8
                       all        722       1444      0.989       0.99      0.993      0.681
    Epoch   gpu_mem       box       obj       cls     total   targets  img_size                     (YOLOv5)
         5/249    0.868G   0.06393   0.01588  0.009617   0.08943        36       640: 100%|█| 211/211 [00:4

A row's values are read against the last header: ``70/1000`` is the epoch (as printed, counting from 1) and
total epochs, the bar after ``640:`` is the batch within the epoch. Loss columns keep their names; ``loss`` is
their sum (YOLOv5 prints it as ``total``). The validation ``all`` row is read right-aligned against its
header, because narrow terminals and pasted text damage the left of that header; it gives ``precision``,
``recall``, ``map50`` and ``map50_95`` (``mask_`` etc. for the other heads) at the epoch of the row before it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache, partial
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit, Span, never_reads, plain_float_shape, snake_case
from trainmon_tui.parsers.trainlog.fam_tqdm import BAR_RE, to_number

_ROW_RE = re.compile(r"\s*(\d{1,9})/(\d{1,9})\s+(\S[^:]*?)\s*(?::|$)")
# YOLOv5 names its loss columns without the suffix.
_V5_NAMES = {"box": "box_loss", "obj": "obj_loss", "cls": "cls_loss", "total": "loss"}
# Columns that describe the batch, not the training.
_NOT_METRICS = frozenset({"instances", "targets", "size", "img_size"})
_VAL_NAMES = {"p": "precision", "r": "recall"}


# Column names are remembered per header text: the header is printed again before every epoch, and a log may
# alternate between two prints of it (a validation header cut off by the terminal and a whole one).
_MAX_HEADERS = 1024


@lru_cache(maxsize=_MAX_HEADERS)
def _train_columns(header: str) -> tuple[str, ...]:
    """Metric names of the columns after ``Epoch`` ('' for a column that is not a metric)."""
    names = []
    for raw in header.split()[1:]:
        name = snake_case(raw)
        name = _V5_NAMES.get(name, name)
        names.append("" if name in _NOT_METRICS else name)
    return tuple(names)


def _val_columns(header: str) -> tuple[str, ...]:
    """Metric names of a validation header's columns ('' where the column is not a metric or is cut off)."""
    cut = header.find("%")
    if cut >= 0:
        header = header[: header.rfind(":", 0, cut)]
    return _val_names(header)


@lru_cache(maxsize=_MAX_HEADERS)
def _val_names(header: str) -> tuple[str, ...]:
    """:func:`_val_columns` of a header without its bar."""
    names = []
    head = ""
    for raw in header.rstrip(":").split():
        token = raw
        if "(" in token:
            group, _, token = token.partition("(")
            head = "" if group.lower() == "box" else snake_case(group) + "_"
        token = token.rstrip(")")
        low = token.lower().replace("@.5:.95", "50-95").replace("@.5", "50")
        if low in _VAL_NAMES:
            names.append(head + _VAL_NAMES[low])
        elif low.startswith("map") and not low.endswith("-"):
            names.append(head + snake_case(low))
        else:
            # Class, Images, Instances, pasted-in words, and a name cut off by the terminal's width.
            names.append("")
    return tuple(names)


_CLAIMED = Hit()
# Memory sizes print a unit after the number ("6.73G"); float() refuses them (see _size_value).
_SIZE_UNITS = frozenset("gGmMkK")

#: Where each whitespace-separated value of a row is, and the function that reads it as to_number does.
_ValuePlan = tuple[tuple[int, int, Callable[[str], float | None]], ...]


def _value_plan(text: str, start: int) -> _ValuePlan:
    """The values of ``text[start:]`` split on whitespace: where each is, and how to read it."""
    plan: list[tuple[int, int, Callable[[str], float | None]]] = []
    at = start
    for value in text[start:].split():
        # The value's place: only whitespace lies between it and the end of the previous one.
        at = text.find(value, at)
        plan.append((at, at + len(value), _value_reader(value)))
        at += len(value)
    return tuple(plan)


def _value_reader(value: str) -> Callable[[str], float | None]:
    """A function reading every value of ``value``'s shape (its digits masked) as to_number reads it."""
    if value[-1:] in _SIZE_UNITS and plain_float_shape(value[:-1]):
        return _size_value
    return to_number


def _size_value(raw: str) -> float | None:
    """to_number of a memory size (``6.73G``), without its two failed float() calls: float() refuses the
    unit, and parse_number then reads the number before it in the printed unit (or nothing)."""
    try:
        return float(raw[:-1])
    except ValueError:
        return None


class UltralyticsFamily:
    """Ultralytics YOLO epoch tables and validation ``all`` rows."""

    name: ClassVar[str] = "ultralytics"
    gate: ClassVar[tuple[str, ...]] = ("Epoch", "Class", "all ", "G ")

    def __init__(self) -> None:
        # The header is printed again before every epoch: keep the last one read and its column names.
        self._train_header = ""
        self._train_names: tuple[str, ...] = ()
        self._val_header = ""
        self._val_names: tuple[str, ...] = ()
        self._epoch: float | None = None
        self._total_epochs: int | None = None

    def parse(self, text: str) -> Hit | None:
        stripped = text.lstrip()
        if stripped.startswith("Epoch "):
            if "mem" not in text:
                return None
            if stripped != self._train_header:
                self._train_header = stripped
                self._train_names = _train_columns(stripped)
            return _CLAIMED
        if stripped.startswith("Class ") and "Images" in text:
            # The bar after the names changes on every print; the names before it do not.
            names = stripped[: stripped.find("%")] if "%" in stripped else stripped
            if names != self._val_header:
                self._val_header = names
                self._val_names = _val_columns(stripped)
            return _CLAIMED
        if stripped.startswith("all ") and self._val_names:
            return self._val_row(stripped)
        if self._train_names:
            row = _ROW_RE.match(text)
            if row is not None:
                return self._train_row(row, text)
        return None

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked) that is a training or validation
        row: its epoch, values and bar sit at the same places on all of them (see parse); they are named by
        the header read last, as parse names them. Headers are read by parse."""
        stripped = text.lstrip()
        if stripped.startswith("Epoch ") and "mem" not in text:
            return never_reads  # another framework's "Epoch" line: parse passes it by
        if stripped.startswith(("Epoch ", "Class ")):
            return self.parse
        if stripped.startswith("all "):
            # (No training row starts with a word: parse reads such a line as a validation row or not at all.)
            values = _value_plan(text, len(text) - len(stripped))[1:]
            return partial(self._read_val_row, tuple(reversed(values)))
        row = _ROW_RE.match(text)
        if row is None:
            return never_reads
        bar = BAR_RE.search(text, row.end())
        counts = None if bar is None else (bar.span(2), bar.span(3))
        values = _value_plan(text[: row.end(3)], row.start(3))
        return partial(self._read_row, values, row.span(1), row.span(2), counts)

    def _read_row(
        self,
        values: _ValuePlan,
        epoch_span: Span,
        total_span: Span,
        counts: tuple[Span, Span] | None,
        text: str,
    ) -> Hit | None:
        """What parse reads from a training row of the shape the spans were found in."""
        names = self._train_names
        if not names or len(values) > len(names):
            return None
        metrics: dict[str, float] = {}
        loss_sum = 0.0
        loss_parts = 0
        for name, (start, end, read) in zip(names, values, strict=False):
            if not name:
                continue
            value = read(text[start:end])
            if value is None:
                continue
            metrics[name] = value
            if name.endswith("_loss"):
                loss_sum += value
                loss_parts += 1
        if loss_parts and "loss" not in metrics:
            metrics["loss"] = loss_sum
        self._epoch = float(text[epoch_span[0] : epoch_span[1]])
        self._total_epochs = int(text[total_span[0] : total_span[1]])
        if counts is None:
            return Hit(None, None, self._epoch, self._total_epochs, None, None, metrics)
        (batch_at, batch_end), (per_epoch_at, per_epoch_end) = counts
        batch = int(text[batch_at:batch_end])
        per_epoch = int(text[per_epoch_at:per_epoch_end])
        return Hit(None, None, self._epoch, self._total_epochs, batch, per_epoch, metrics)

    def _read_val_row(self, values: _ValuePlan, text: str) -> Hit | None:
        """What parse reads from a validation row of the shape whose values (last first) are at ``values``
        (see _val_row)."""
        if not self._val_names:
            return None
        metrics: dict[str, float] = {}
        for name, (start, end, read) in zip(reversed(self._val_names), values, strict=False):
            if not name:
                continue
            value = read(text[start:end])
            if value is not None:
                metrics[name] = value
        if not metrics:
            return None
        return Hit(None, None, self._epoch, self._total_epochs, None, None, metrics)

    def _train_row(self, row: re.Match[str], text: str) -> Hit | None:
        values = row[3].split()
        if len(values) > len(self._train_names):
            return None
        metrics: dict[str, float] = {}
        loss_sum = 0.0
        loss_parts = 0
        for name, raw in zip(self._train_names, values, strict=False):
            if not name:
                continue
            value = to_number(raw)
            if value is None:
                continue
            metrics[name] = value
            if name.endswith("_loss"):
                loss_sum += value
                loss_parts += 1
        if loss_parts and "loss" not in metrics:
            metrics["loss"] = loss_sum
        self._epoch = float(row[1])
        self._total_epochs = int(row[2])
        hit = Hit(epoch=self._epoch, total_epochs=self._total_epochs, metrics=metrics)
        bar = BAR_RE.search(text, row.end())
        if bar is not None:
            hit.batch = int(bar[2])
            hit.batches_per_epoch = int(bar[3])
        return hit

    def _val_row(self, row: str) -> Hit | None:
        values = row.split()[1:]
        metrics: dict[str, float] = {}
        # Right-aligned: the last value belongs to the last column.
        for name, raw in zip(reversed(self._val_names), reversed(values), strict=False):
            if not name:
                continue
            value = to_number(raw)
            if value is not None:
                metrics[name] = value
        if not metrics:
            return None
        return Hit(epoch=self._epoch, total_epochs=self._total_epochs, metrics=metrics)


FAMILIES = (UltralyticsFamily,)
