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

import math
import re
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit, LineFamily, canonical_metric_name, parse_number

# Both nanoGPT shapes start their pairs with the (train) loss; forks append pairs after it.
_KARPATHY_RE = re.compile(r"(?:iter|step) (\d{1,18}): ((?:train )?loss .*)")
_MODDED_RE = re.compile(r"step:(\d{1,18})(?:/(\d{1,18}))? (.*)")
_UNIT_SUFFIXES = ("ms", "s")

# nanoGPT seeds its running MFU with -1 and prints it as a percentage until the first real estimate.
_MFU_PLACEHOLDER = -100.0


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


class NanoGptFamily:
    """karpathy/nanoGPT ``iter N: loss X, time Yms, mfu Z%`` and ``step N: train loss X, val loss Y``."""

    name: ClassVar[str] = "nanogpt"
    gate: ClassVar[tuple[str, ...]] = (": loss ", ": train loss ")

    def parse(self, text: str) -> Hit | None:
        match = _KARPATHY_RE.match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        for pair in match[2].split(","):
            key, _, raw_value = pair.strip().rpartition(" ")
            # A name is words ("val loss"); anything else is text that happened to follow the loss.
            if not key.replace(" ", "_").isidentifier():
                continue
            value, unit = _number_and_unit(raw_value)
            if value is None:
                continue
            name = canonical_metric_name(key + "_" + unit if unit else key)
            if name == "mfu" and value == _MFU_PLACEHOLDER:
                continue
            metrics[name] = value
        if not metrics:
            return None
        return Hit(step=int(match[1]), metrics=metrics)


class ModdedNanoGptFamily:
    """modded-nanogpt ``step:N/TOTAL key:value ...`` training and validation lines."""

    name: ClassVar[str] = "modded_nanogpt"
    gate: ClassVar[tuple[str, ...]] = ("step:",)

    def parse(self, text: str) -> Hit | None:
        match = _MODDED_RE.match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        for pair in match[3].split():
            key, sep, raw_value = pair.partition(":")
            if not sep:
                continue
            value, unit = _number_and_unit(raw_value)
            if value is None:
                continue
            if unit and math.isnan(value):
                # A NaN timing is the warm-up placeholder, not a measurement.
                continue
            metrics[canonical_metric_name(key + "_" + unit if unit else key)] = value
        if not metrics:
            return None
        total = match[2]
        return Hit(step=int(match[1]), total_steps=None if total is None else int(total), metrics=metrics)


FAMILIES: tuple[type[LineFamily], ...] = (NanoGptFamily, ModdedNanoGptFamily)
