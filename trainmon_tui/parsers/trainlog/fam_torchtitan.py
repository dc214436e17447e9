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

import calendar
import re
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit, LineFamily, canonical_metric_name, parse_number

_STEP_RE = re.compile(
    r"(?:\[titan\]\s*)?"
    r"(?:(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[,.](\d{1,6}))?)?"
    r"(?:\s*-\s*[\w.]+\s*-\s*[A-Z]+\s*-\s*)?"
    r"\s*(validate step|step):\s*(\d{1,18})\s{2}(.*)"
)
_PAIR_RE = re.compile(r"([A-Za-z_]\w*):\s*(\S+)")
_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?)GiB\((\d+(?:\.\d+)?)%\)")


def _stamp_seconds(groups: tuple[str | None, ...]) -> float | None:
    """UTC seconds of the stamp groups (year..second, fraction), or None when absent or not a real date."""
    if groups[0] is None:
        return None
    try:
        seconds = calendar.timegm((*(int(g or 0) for g in groups[:6]), 0, 0, 0))
    except ValueError:
        return None
    fraction = groups[6]
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
        metrics: dict[str, float] = {}
        for key, raw_value in _PAIR_RE.findall(match[10]):
            if key == "memory":
                memory = _MEMORY_RE.fullmatch(raw_value)
                if memory is not None:
                    metrics[prefix + "memory_gib"] = float(memory[1])
                    metrics[prefix + "memory_pct"] = float(memory[2])
                    continue
            try:
                # tps/tflops carry thousands separators and mfu a percent sign.
                value: float | None = float(raw_value.replace(",", "").rstrip("%"))
            except ValueError:
                value = parse_number(raw_value)
            if value is not None:
                metrics[canonical_metric_name(prefix + key)] = value
        if not metrics:
            return None
        return Hit(step=int(match[9]), metrics=metrics, timestamp=_stamp_seconds(match.groups()[:7]))


FAMILIES: tuple[type[LineFamily], ...] = (TorchTitanFamily,)
