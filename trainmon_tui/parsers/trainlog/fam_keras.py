"""Read Keras ``fit()`` progress (Keras 1, 2 and 3): the ``Epoch N/M`` header and the bar lines under it.

Shapes handled (one cleaned line each)::

    Epoch 3/10
    6072/6072 [==============================] - 110s 18ms/step - loss: 0.6284 - val_loss: 0.5469
    1562/1562 [==============================] - 484s - loss: 0.7744 - acc: 0.7344    (Keras 1: no step time)
    237/422 [===============>..............] - ETA: 7s - loss: 0.0398 - accuracy: 0.9877  (epoch in progress)
      32/32 [==============================] - 0s 781us/step - loss: 1457.4397
      1/Unknown  7s 7s/step - loss: 12.6790 - mean_absolute_error: 3.2470   (Keras 3, unknown dataset size)
    195/195 ━━━━━━━━━━━━━━━━━━━━ 3s 12ms/step - accuracy: 0.9052 - loss: 0.3312              (Keras 3)

Keras reports progress per epoch: the bar's n/total is the batch within the epoch and the header's epoch (as
printed, counting from 1) and total epochs are carried onto every bar line that follows it. ``Unknown`` leaves
batches per epoch unknown. The ETA and the step time are not metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit, Span, never_reads
from trainmon_tui.parsers.trainlog.fam_tqdm import (
    FixedPairs,
    PairSpans,
    fixed_pairs,
    pair_spans,
    read_pair_spans,
    read_pairs,
    split_starts,
)

_HEADER_RE = re.compile(r"\s*Epoch (\d{1,9})/(\d{1,9})\s*$")
# n/total, then the Keras 2 "[====>...]" or the Keras 3 "━━━" bar (absent when the total is unknown).
_BAR_RE = re.compile(r"\s*(\d{1,15})/(\d{1,15}|Unknown)(?: +(?:\[[=>.]*\]|[━─╸]+))?(?=\s)")
# "ETA: 7s" sits among the metrics of an epoch in progress.
_NOT_METRICS = frozenset({"ETA"})


class KerasFamily:
    """Keras ``Epoch N/M`` headers and the progress bar lines under them."""

    name: ClassVar[str] = "keras"
    gate: ClassVar[tuple[str, ...]] = ("Epoch ", "/step", "[=", "[.", "━", "/Unknown")

    def __init__(self) -> None:
        self._epoch: float | None = None
        self._total_epochs: int | None = None

    def parse(self, text: str) -> Hit | None:
        bar = _BAR_RE.match(text)
        if bar is not None:
            # " - 110s 18ms/step - loss: 0.6284 - val_loss: 0.5469": the first item is the timing.
            items = text[bar.end() :].split(" - ")
            # A count at the start of a line is common; Keras follows it with a step time or " - key: value".
            if len(items) < 2 and "/step" not in items[0]:
                return None
            metrics: dict[str, float] = {}
            read_pairs(items[1:], ": ", metrics, _NOT_METRICS)
            total = bar[2]
            # Positional: step, total_steps, epoch, total_epochs, batch, batches_per_epoch, metrics.
            return Hit(
                None,
                None,
                self._epoch,
                self._total_epochs,
                int(bar[1]),
                None if total == "Unknown" else int(total),
                metrics,
            )
        header = _HEADER_RE.match(text)
        if header is not None:
            self._epoch = float(header[1])
            self._total_epochs = int(header[2])
            return Hit(epoch=self._epoch, total_epochs=self._total_epochs)
        return None

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): a bar line's count and pairs sit
        at the same places on all of them (see parse); the epoch comes from the header, read as it comes."""
        bar = _BAR_RE.match(text)
        if bar is None:
            # An epoch header (which parse reads into the family's state), or no Keras line at all.
            header = _HEADER_RE.match(text)
            if header is None:
                return never_reads
            return partial(self._read_header, header.span(1), header.span(2))
        items, starts = split_starts(text, bar.end(), " - ")
        if len(items) < 2 and "/step" not in items[0]:
            return never_reads
        spans = pair_spans(items[1:], starts[1:], ": ")
        total_span = None if bar[2] == "Unknown" else bar.span(2)
        fixed = fixed_pairs(spans, _NOT_METRICS)
        if fixed is not None:
            return partial(self._read_fixed_bar, fixed, spans, bar.span(1), total_span)
        return partial(self._read_bar, spans, bar.span(1), total_span)

    def _read_header(self, epoch_span: Span, total_span: Span, text: str) -> Hit:
        """What parse reads from an epoch header of the shape the spans were found in."""
        self._epoch = float(text[epoch_span[0] : epoch_span[1]])
        self._total_epochs = int(text[total_span[0] : total_span[1]])
        return Hit(None, None, self._epoch, self._total_epochs, None, None, {})

    def _read_bar(self, spans: PairSpans, batch_span: Span, total_span: Span | None, text: str) -> Hit:
        metrics: dict[str, float] = {}
        read_pair_spans(text, spans, metrics, _NOT_METRICS)
        total = None if total_span is None else int(text[total_span[0] : total_span[1]])
        batch = int(text[batch_span[0] : batch_span[1]])
        return Hit(None, None, self._epoch, self._total_epochs, batch, total, metrics)

    def _read_fixed_bar(
        self, pairs: FixedPairs, spans: PairSpans, batch_span: Span, total_span: Span | None, text: str
    ) -> Hit:
        """_read_bar for a shape whose keys are fixed (see fam_tqdm.fixed_pairs): the names are settled, only
        the values are read, unless one is no float literal (then as _read_bar reads the line)."""
        metrics: dict[str, float] = {}
        try:
            for name, raw_at, raw_end in pairs:
                metrics[name] = float(text[raw_at:raw_end])
        except ValueError:
            return self._read_bar(spans, batch_span, total_span, text)
        total = None if total_span is None else int(text[total_span[0] : total_span[1]])
        batch = int(text[batch_span[0] : batch_span[1]])
        return Hit(None, None, self._epoch, self._total_epochs, batch, total, metrics)


FAMILIES = (KerasFamily,)
