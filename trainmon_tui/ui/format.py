"""Text formatting shared by every dashboard screen: numbers, sizes, durations, clock times, bars, sparklines.

Pure functions from values to short strings; no Textual here, so any screen (and its tests) can use them.
The one rule they all keep: an unknown value (None) is drawn as :data:`UNKNOWN`, never as 0, and a NaN is
drawn as ``nan`` so a diverged loss stays visible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from trainmon_tui.analysis.durations import format_duration

UNKNOWN = "-"

# Eighth blocks, for bars that move in steps finer than a cell.
_EIGHTHS = " ▏▎▍▌▋▊▉█"
_SPARK = "▁▂▃▄▅▆▇█"
_SECONDS_PER_DAY = 86_400.0


def fmt_number(value: float | None, digits: int = 0, unit: str = "") -> str:
    """``value`` rounded to ``digits`` decimals with ``unit`` glued on; "-" when unknown, "nan" kept."""
    if value is None:
        return UNKNOWN
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}{unit}"


def fmt_pct(value: float | None) -> str:
    return fmt_number(value, 0, "%")


def fmt_temp(value: float | None) -> str:
    return fmt_number(value, 0, "°C")


def fmt_power(value: float | None) -> str:
    return fmt_number(value, 0, "W")


def fmt_metric(value: float | None) -> str:
    """A training metric: four significant digits (losses, learning rates spanning decades)."""
    if value is None:
        return UNKNOWN
    if not math.isfinite(value):
        return fmt_number(value)
    return f"{value:.4g}"


def fmt_gib(mib: float | None) -> str:
    """MiB as GiB with one decimal below 100 GiB ("31.2"), none above ("141")."""
    if mib is None:
        return UNKNOWN
    gib = mib / 1024.0
    return f"{gib:.1f}" if gib < 100 else f"{gib:.0f}"


def fmt_memory(used_mib: float | None, total_mib: float | None) -> str:
    """``31.2/80.0G``; each side "-" on its own when unknown, "-" alone when both are."""
    if used_mib is None and total_mib is None:
        return UNKNOWN
    return f"{fmt_gib(used_mib)}/{fmt_gib(total_mib)}G"


def fmt_duration(seconds: float | None) -> str:
    """``45s``, ``4m05s``, ``3h07m``, ``2d04h``; "-" when unknown or not finite."""
    if seconds is None or not math.isfinite(seconds):
        return UNKNOWN
    return format_duration(seconds, compact=True)


def fmt_span(seconds: float | None) -> str | None:
    """A length of time in one short unit, rounded: ``40s``, ``12m``, ``3h``, ``2d``; None when unknown or
    under half a second (nothing worth saying). For ranges, where two clock times would not fit."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0.5:
        return None
    for limit, size, unit in ((90.0, 1.0, "s"), (5_400.0, 60.0, "m"), (129_600.0, 3_600.0, "h")):
        if seconds < limit:
            return f"{round(seconds / size)}{unit}"
    return f"{round(seconds / _SECONDS_PER_DAY)}d"


def fmt_rate(per_s: float | None, unit: str = "step") -> str:
    """Progress speed in the form people read best: ``2.31 step/s`` when fast, ``4.2 s/step`` when slow."""
    if per_s is None or not math.isfinite(per_s) or per_s <= 0:
        return UNKNOWN
    if per_s >= 1.0:
        return f"{per_s:.2f} {unit}/s"
    return f"{1.0 / per_s:.1f} s/{unit}"


@dataclass(frozen=True, slots=True)
class WallClock:
    """Turns store times (monotonic seconds) into wall-clock times for display.

    The store's clock is monotonic; people read finish times on the wall clock. A store time ``t`` seen in a
    snapshot taken at ``snapshot_now`` happened ``snapshot_now - t`` seconds before the wall clock's now.
    Tests inject a fixed ``now`` and a fixed ``tz`` so what is drawn never depends on when they ran.
    """

    now: Callable[[], float] = field(default=time.time)
    tz: tzinfo | None = None

    def wall_time(self, snapshot_now: float, t: float) -> float:
        """Seconds since the epoch at which store time ``t`` happened (or will happen, when in the future)."""
        return self.now() - (snapshot_now - t)

    def fmt_clock(self, epoch_s: float | None, *, seconds: bool = False) -> str:
        """``14:32`` (``14:32:07`` with ``seconds``); a weekday in front when it is not today."""
        if epoch_s is None or not math.isfinite(epoch_s):
            return UNKNOWN
        moment = datetime.fromtimestamp(epoch_s, self.tz)
        today = datetime.fromtimestamp(self.now(), self.tz).date()
        text = moment.strftime("%H:%M:%S" if seconds else "%H:%M")
        if moment.date() == today:
            return text
        if abs(epoch_s - self.now()) < 6 * _SECONDS_PER_DAY:
            return f"{moment.strftime('%a')} {text}"
        return f"{moment.strftime('%Y-%m-%d')} {text}"


def bar(fraction: float | None, width: int) -> str:
    """A left-to-right bar of ``width`` cells filled to ``fraction`` (0..1) in eighth-cell steps.

    Unknown is a row of dots, so it can never be mistaken for an empty (0) bar.
    """
    if width <= 0:
        return ""
    if fraction is None or math.isnan(fraction):
        return "·" * width
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part else "")
    return text.ljust(width)


def sparkline(values: Sequence[float | None], width: int, low: float = 0.0, high: float = 100.0) -> str:
    """The last ``width`` values as block heights between ``low`` and ``high``; a gap (None) is a space.

    Right-aligned: a series shorter than ``width`` leaves blanks on the left, where there is no history yet.
    """
    if width <= 0:
        return ""
    span = high - low
    cells: list[str] = []
    for value in values[-width:]:
        if value is None or math.isnan(value):
            cells.append(" ")
            continue
        level = 0.0 if span <= 0 else (value - low) / span
        index = round(min(max(level, 0.0), 1.0) * (len(_SPARK) - 1))
        cells.append(_SPARK[index])
    return "".join(cells).rjust(width)


def level_char(pct: float | None) -> str:
    """One cell standing for a percentage (a GPU in a host's heat strip): "?" when unknown."""
    if pct is None or math.isnan(pct):
        return "?"
    index = round(min(max(pct, 0.0), 100.0) / 100.0 * (len(_SPARK) - 1))
    return _SPARK[index]


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` cells with an ellipsis (host names, reasons, commands)."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"
