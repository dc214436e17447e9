"""Read PyTorch Lightning progress: the TQDM and Rich epoch bars and ModelCheckpoint's "reached" messages.

Shapes handled (one cleaned line each)::

    Epoch 9: 100%|██████████| 195/195 [01:58<00:00,  1.64it/s, train/loss_step=3.860, train/entropy=0.59]
    Epoch 0:  97% 1651/1702 [13:00<00:24,  2.11it/s, loss=0.158, v_num=0, train_loss=0.149]     (notebook)
    Epoch 0: :   6%|██   | 32040/500150 [6:28:43<94:39:17,  1.37it/s, loss=2.6, global_step=3.2e+4] (NeMo)
    Epoch 0/0 ━━━━━━━━━━━━━━━━━━ 2/2 0:00:15 • 0:00:00 6.37it/s pixel_AUROC: 0.000 v_num: 3            (Rich)
    Epoch 00000: val_loss reached 0.67374 (best 0.67374), saving model to ../epoch=0.ckpt as top 1
    Epoch 3, global step 400: 'val_loss' reached 0.31000 (best 0.31000), saving model to ...

Lightning (1.0 on) prints its own 0-based epoch index, ``Epoch 0`` for the first epoch; the record's epoch
counts from 1 (LogRecord's convention), so the printed number is read one higher. Lightning before 1.0
numbered the bar from 1 while its ModelCheckpoint printed the 0-based index zero-padded (``Epoch 00000:``):
once such a message is seen, later bars of the log are read as printed (bars before it cannot be told apart
and stay one high). The bar's n/total is the batch within the epoch (validation batches included, as
Lightning counts them). The Rich bar prints ``Epoch N/MAX-1`` (both 0-based), so its total epochs is the
second number plus one.
``v_num`` (the logger's version) is not a metric.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit, Span, never_reads
from trainmon_tui.parsers.trainlog.fam_tqdm import (
    BAR_RE,
    FixedPairs,
    PairSpans,
    add_metric,
    fixed_postfix_pairs,
    postfix_spans,
    read_pairs,
    read_postfix,
    read_postfix_spans,
    to_int,
    to_number,
)

_TQDM_RE = re.compile(r"Epoch (\d{1,9}):[\s:]*" + BAR_RE.pattern)
_RICH_RE = re.compile(
    r"Epoch (\d{1,9})/(\d{1,9}) +\S+ +(\d{1,15})/(\d{1,15})(?: +[\d:]+ +• +[\d:\-]+)?(?: +[\d.]+it/s)?(.*)"
)
# A key starts where a word starts and is matched possessively: no quadratic retries inside long names.
_RICH_METRIC_RE = re.compile(r"(?<![\w/.\-])[A-Za-z_][\w/.\-]*+: \S+")
_CHECKPOINT_RE = re.compile(
    r"Epoch (\d{1,9})(?:, global step (\d{1,15}))?: '?([A-Za-z_][\w/.\-]*)'? reached (\S+?),? \(best"
)
_NOT_METRICS = frozenset({"v_num"})
# Lightning before 1.0 printed the checkpoint's epoch as "{epoch:05d}".
_PRE_1_0_EPOCH_DIGITS = 5


def _last_match(pattern: re.Pattern[str], text: str, at: int) -> re.Match[str] | None:
    """The last match from ``at`` on: bar states that lost their ``\\r`` sit side by side on one line."""
    match = pattern.search(text, at)
    if match is None:
        return None
    while text.find("Epoch ", match.end()) >= 0:
        later = pattern.search(text, match.end())
        if later is None:
            break
        match = later
    return match


class LightningFamily:
    """PyTorch Lightning (and NeMo) epoch bars and checkpoint messages."""

    name: ClassVar[str] = "lightning"
    gate: ClassVar[tuple[str, ...]] = ("Epoch ",)

    def __init__(self) -> None:
        # What to add to a printed bar epoch for a 1-based epoch: 1, until a pre-1.0 checkpoint message shows
        # that this log's bars count from 1 already.
        self._bar_epoch_shift = 1

    def parse(self, text: str) -> Hit | None:
        at = text.find("Epoch ")
        bar = _last_match(_TQDM_RE, text, at)
        if bar is not None:
            metrics: dict[str, float] = {}
            step = read_postfix(bar[5], metrics)
            epoch = float(int(bar[1]) + self._bar_epoch_shift)
            # Positional: step, total_steps, epoch, total_epochs, batch, batches_per_epoch, metrics.
            return Hit(step, None, epoch, None, int(bar[3]), int(bar[4]), metrics)
        rich = _RICH_RE.search(text, at)
        if rich is not None:
            metrics = {}
            # "pixel_AUROC: 0.000 v_num: 3": pairs separated by spaces, keys followed by ": ".
            read_pairs(_RICH_METRIC_RE.findall(rich[5]), ": ", metrics, _NOT_METRICS)
            return Hit(
                epoch=float(int(rich[1]) + 1),
                total_epochs=int(rich[2]) + 1,
                batch=int(rich[3]),
                batches_per_epoch=int(rich[4]),
                metrics=metrics,
            )
        checkpoint = _CHECKPOINT_RE.search(text, at)
        if checkpoint is not None:
            if len(checkpoint[1]) == _PRE_1_0_EPOCH_DIGITS and checkpoint[2] is None:
                # "Epoch 00000: val_loss reached ...": Lightning before 1.0, whose bars count from 1.
                self._bar_epoch_shift = 0
            value = to_number(checkpoint[4])
            if value is None:
                return None
            metrics = {}
            add_metric(metrics, checkpoint[3], value)
            # The checkpoint's epoch counts from 0 even where the bar of the same run counted from 1
            # (Lightning 0.8), so only the metric and the global step are taken.
            global_step = checkpoint[2]
            return Hit(step=None if global_step is None else int(global_step), metrics=metrics)
        return None

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): where the last tqdm bar state sits
        and its numbers and postfix pairs are is the same on all of them (see parse). Other lines (Rich bars,
        checkpoint messages) are read by parse."""
        at = text.find("Epoch ")
        bar = _last_match(_TQDM_RE, text, at)
        if bar is None:
            if _RICH_RE.search(text, at) is None and _CHECKPOINT_RE.search(text, at) is None:
                return never_reads
            return self.parse
        postfix_at = bar.start(5)
        postfix = () if postfix_at < 0 else postfix_spans(bar[5], postfix_at)
        fixed = fixed_postfix_pairs(postfix)
        if fixed is not None:
            pairs, step_span = fixed
            counts = (bar.span(1), bar.span(3), bar.span(4))
            return partial(self._read_fixed_bar, pairs, step_span, postfix, counts)
        return partial(self._read_bar, postfix, bar.span(1), bar.span(3), bar.span(4))

    def _read_bar(
        self,
        postfix: PairSpans,
        epoch_span: tuple[int, int],
        batch_span: tuple[int, int],
        total_span: tuple[int, int],
        text: str,
    ) -> Hit:
        metrics: dict[str, float] = {}
        step = read_postfix_spans(text, postfix, metrics)
        epoch = float(int(text[epoch_span[0] : epoch_span[1]]) + self._bar_epoch_shift)
        batch = int(text[batch_span[0] : batch_span[1]])
        total = int(text[total_span[0] : total_span[1]])
        return Hit(step, None, epoch, None, batch, total, metrics)

    def _read_fixed_bar(
        self,
        pairs: FixedPairs,
        step_span: Span | None,
        postfix: PairSpans,
        counts: tuple[Span, Span, Span],
        text: str,
    ) -> Hit:
        """_read_bar for a shape whose postfix keys are fixed (see fam_tqdm.fixed_postfix_pairs), ``counts``
        being the epoch's, the batch's and the total's spans: only the values are read, unless one is no float
        literal (then as _read_bar reads the line)."""
        metrics: dict[str, float] = {}
        step = None
        try:
            for name, raw_at, raw_end in pairs:
                metrics[name] = float(text[raw_at:raw_end])
            if step_span is not None:
                step = to_int(float(text[step_span[0] : step_span[1]]))
        except ValueError:
            return self._read_bar(postfix, *counts, text)
        (epoch_at, epoch_end), (batch_at, batch_end), (total_at, total_end) = counts
        epoch = float(int(text[epoch_at:epoch_end]) + self._bar_epoch_shift)
        batch = int(text[batch_at:batch_end])
        total = int(text[total_at:total_end])
        return Hit(step, None, epoch, None, batch, total, metrics)


FAMILIES = (LightningFamily,)
