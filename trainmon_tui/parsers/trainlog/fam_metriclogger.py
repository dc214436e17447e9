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
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit, LineFamily, canonical_metric_name, parse_number

_EPOCH_RE = re.compile(r"Epoch: \[(\d{1,18})\]\s+\[\s*(\d{1,18})/(\d{1,18})\]\s+(.*)")
_TEST_RE = re.compile(r"Test:\s+\[\s*\d+/\d+\]\s+(.*)")
_ETA_RE = re.compile(r"(?:(\d{1,18}) days?, )?(\d{1,18}):(\d\d):(\d\d)")
_SUMMARY_RE = re.compile(r"\*\s+(.*)")
_ALIASES = {"closs": "loss"}


def _eta_seconds(text: str) -> float | None:
    match = _ETA_RE.fullmatch(text)
    if match is None:
        return None
    days = int(match[1]) if match[1] else 0
    return float(((days * 24 + int(match[2])) * 60 + int(match[3])) * 60 + int(match[4]))


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
        try:
            number: float | None = float(raw)
        except ValueError:
            number = parse_number(raw)
        if number is not None:
            metrics[canonical_metric_name(prefix + _ALIASES.get(key, key))] = number
    return metrics


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


FAMILIES: tuple[type[LineFamily], ...] = (MetricLoggerFamily,)
