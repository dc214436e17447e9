"""Time left in a training run, with a range, from (time, progress) observations.

The rate is the median of recent per-step durations, not elapsed time over steps: an evaluation or checkpoint
pause makes one interval long and moves the median not at all. The range comes from quantiles of the same
durations (p10/p90 by default). A step that goes backwards means the run restarted (from a checkpoint or
from scratch): everything before it is dropped. Bursts (many steps arriving at one time, as when a log is
flushed in blocks) count as one interval ending at the highest step; a step seen again keeps its first time.

Time comes in with the observations: log timestamps when the log has them, else arrival times; the caller
decides, and never mixes the two in one sequence. Nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

DEFAULT_WINDOW = 50
DEFAULT_LOW_QUANTILE = 0.1
DEFAULT_HIGH_QUANTILE = 0.9


@dataclass(frozen=True, slots=True)
class Eta:
    """An estimate; None where it is unknown (no total: no ETA, yet the rate may be known).

    Units are whatever the observations counted: optimizer steps, batches, or epochs. Times are seconds from
    ``as_of``, the time of the newest observation used, so a reader can tell how old the estimate is.
    """

    steps_per_s: float | None
    eta_s: float | None
    eta_low_s: float | None
    eta_high_s: float | None
    remaining_steps: float | None
    as_of: float | None = None


UNKNOWN_ETA = Eta(None, None, None, None, None, None)


def current_segment(observations: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The observations since the last restart, one per distinct time, progress strictly increasing.

    Non-finite times or progress values are skipped.
    """
    segment: list[tuple[float, float]] = []
    for t, progress in observations:
        if not (math.isfinite(t) and math.isfinite(progress)):
            continue
        if not segment:
            segment.append((t, progress))
            continue
        last_t, last_progress = segment[-1]
        if progress < last_progress:
            segment = [(t, progress)]
        elif progress == last_progress:
            continue
        elif t <= last_t:
            # A burst: these steps happened since the previous arrival; the interval ends at the newest one.
            segment[-1] = (last_t, progress)
        else:
            segment.append((t, progress))
    return segment


def step_durations(segment: Sequence[tuple[float, float]]) -> list[float]:
    """Seconds per unit of progress over each interval between consecutive observations."""
    return [(t1 - t0) / (p1 - p0) for (t0, p0), (t1, p1) in pairwise(segment)]


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, interpolating linearly between neighbours."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    position = q * (len(sorted_values) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_values) - 1)
    fraction = position - below
    return sorted_values[below] + (sorted_values[above] - sorted_values[below]) * fraction


def estimate_eta(
    observations: Sequence[tuple[float, float]],
    total: float | None,
    *,
    window: int = DEFAULT_WINDOW,
    low_quantile: float = DEFAULT_LOW_QUANTILE,
    high_quantile: float = DEFAULT_HIGH_QUANTILE,
) -> Eta:
    """ETA from (time, progress) pairs in arrival order and the progress at which the run ends.

    ``window`` is how many of the most recent intervals feed the rate. ``eta_low_s`` uses the
    ``low_quantile`` of per-step durations, ``eta_high_s`` the ``high_quantile``.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    if not 0.0 <= low_quantile <= 0.5 <= high_quantile <= 1.0:
        raise ValueError("need 0 <= low_quantile <= 0.5 <= high_quantile <= 1")
    segment = current_segment(observations)
    if not segment:
        return UNKNOWN_ETA
    as_of, progress = segment[-1]
    remaining: float | None = None
    if total is not None and math.isfinite(total):
        remaining = max(total - progress, 0.0)
    # Times and steps are finite, but a difference of two huge ones may not be.
    durations = sorted(d for d in step_durations(segment[-(window + 1) :]) if 0.0 < d < math.inf)
    if not durations:
        return Eta(None, None, None, None, remaining, as_of)
    median = quantile(durations, 0.5)
    rate = 1.0 / median
    if remaining is None:
        return Eta(rate, None, None, None, None, as_of)
    return Eta(
        rate,
        remaining * median,
        remaining * quantile(durations, low_quantile),
        remaining * quantile(durations, high_quantile),
        remaining,
        as_of,
    )


def completed_batches(epoch: int, batch: int, batches_per_epoch: int, *, first_epoch: int) -> int:
    """Batches done when a log says "epoch ``epoch``, batch ``batch``/``batches_per_epoch``".

    ``batch`` is a count of batches done in the epoch, as progress bars print it (``120/500``).
    ``first_epoch`` is how the log numbers its first epoch: 0 (Lightning, DeepSpeed, timm) or 1 (Keras
    "Epoch 1/15", mmengine, fairseq). Epochs before the current one are complete.
    """
    return (epoch - first_epoch) * batches_per_epoch + batch


def epoch_batch_progress(
    epoch: int, batch: int, batches_per_epoch: int, total_epochs: int, *, first_epoch: int
) -> float | None:
    """Fraction of the run done, from epoch and batch counters; None when the totals make no sense."""
    if batches_per_epoch <= 0 or total_epochs <= 0:
        return None
    done = completed_batches(epoch, batch, batches_per_epoch, first_epoch=first_epoch)
    return min(max(done / (total_epochs * batches_per_epoch), 0.0), 1.0)


def infer_first_epoch(lowest_seen: float) -> int:
    """How a log numbers its epochs, judged from the lowest epoch it printed: 0 once it printed an epoch below
    1, else 1 (the usual form when a total is printed: "Epoch 1/15").

    A 0-based log first read mid-run is taken as 1-based until it shows epoch 0 again (a restart), which makes
    that ETA one epoch short; a parser that knows its framework's numbering should say so instead.
    """
    return 0 if lowest_seen < 1 else 1
