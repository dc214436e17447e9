"""Read PyTorch Lightning progress: the TQDM and Rich epoch bars and ModelCheckpoint's "reached" messages.

Shapes handled (one cleaned line each)::

    Epoch 9: 100%|██████████| 195/195 [01:58<00:00,  1.64it/s, train/loss_step=3.860, train/entropy=0.59]
    Epoch 0:  97% 1651/1702 [13:00<00:24,  2.11it/s, loss=0.158, v_num=0, train_loss=0.149]     (notebook)
    Epoch 0: :   6%|██   | 32040/500150 [6:28:43<94:39:17,  1.37it/s, loss=2.6, global_step=3.2e+4] (NeMo)
    Epoch 0/0 ━━━━━━━━━━━━━━━━━━ 2/2 0:00:15 • 0:00:00 6.37it/s pixel_AUROC: 0.000 v_num: 3            (Rich)
    Epoch 00000: val_loss reached 0.67374 (best 0.67374), saving model to ../epoch=0.ckpt as top 1
    Epoch 3, global step 400: 'val_loss' reached 0.31000 (best 0.31000), saving model to ...

The epoch is Lightning's own (0-based) epoch index as printed; the bar's n/total is the batch within the epoch
(validation batches included, as Lightning counts them). The Rich bar prints ``Epoch N/MAX-1``, so its total
epochs is the second number plus one. ``v_num`` (the logger's version) is not a metric.
"""

from __future__ import annotations

import re
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit
from trainmon_tui.parsers.trainlog.fam_tqdm import BAR_RE, add_metric, read_pairs, read_postfix, to_number

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

    def parse(self, text: str) -> Hit | None:
        at = text.find("Epoch ")
        bar = _last_match(_TQDM_RE, text, at)
        if bar is not None:
            metrics: dict[str, float] = {}
            step = read_postfix(bar[5], metrics)
            # Positional: step, total_steps, epoch, total_epochs, batch, batches_per_epoch, metrics.
            return Hit(step, None, float(bar[1]), None, int(bar[3]), int(bar[4]), metrics)
        rich = _RICH_RE.search(text, at)
        if rich is not None:
            metrics = {}
            # "pixel_AUROC: 0.000 v_num: 3": pairs separated by spaces, keys followed by ": ".
            read_pairs(_RICH_METRIC_RE.findall(rich[5]), ": ", metrics, _NOT_METRICS)
            return Hit(
                epoch=float(rich[1]),
                total_epochs=int(rich[2]) + 1,
                batch=int(rich[3]),
                batches_per_epoch=int(rich[4]),
                metrics=metrics,
            )
        checkpoint = _CHECKPOINT_RE.search(text, at)
        if checkpoint is not None:
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


FAMILIES = (LightningFamily,)
