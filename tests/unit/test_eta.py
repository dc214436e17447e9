"""ETA: median rate robust to pauses, restarts and bursts; epoch x batch progress; a real mmengine log."""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.analysis.eta import (
    UNKNOWN_ETA,
    Eta,
    completed_batches,
    current_segment,
    epoch_batch_progress,
    estimate_eta,
    infer_first_epoch,
    quantile,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eta"


def test_steady_rate() -> None:
    observations = [(2.0 * step, float(step)) for step in range(101)]
    eta = estimate_eta(observations, 1000)
    assert eta == Eta(0.5, 1800.0, 1800.0, 1800.0, 900.0, 200.0)


def test_an_eval_pause_does_not_wreck_the_rate() -> None:
    # 1 s per step, a 60 s evaluation after step 100, then 1 s per step again up to 150.
    observations = [(float(step), float(step)) for step in range(101)]
    observations += [(step + 60.0, float(step)) for step in range(101, 151)]
    eta = estimate_eta(observations, 1000)
    assert eta.steps_per_s == 1.0
    assert eta.remaining_steps == 850.0
    assert eta.eta_s == 850.0
    # The pause is one interval in 50: beyond the 90th percentile, so even the high end ignores it.
    assert eta.eta_high_s == 850.0
    # Elapsed time over steps would have said 210 s / 150 steps = 1.4 s per step: 1190 s.
    assert eta.eta_s < 210.0 / 150.0 * 850.0


def test_range_comes_from_quantiles_of_step_durations() -> None:
    durations = [0.8, 0.9, 1.0, 1.1, 1.2] * 10
    t = 0.0
    observations = [(t, 0.0)]
    for step, duration in enumerate(durations, start=1):
        t += duration
        observations.append((t, float(step)))
    eta = estimate_eta(observations, 550)
    assert eta.remaining_steps == 500.0
    assert eta.eta_s == pytest.approx(500.0)
    # Sorted, the 50 durations are ten of each value. p10: position 4.9, between two 0.8s; p90: position
    # 44.1, between two 1.2s.
    assert eta.eta_low_s == pytest.approx(400.0)
    assert eta.eta_high_s == pytest.approx(600.0)
    narrow = estimate_eta(observations, 550, low_quantile=0.25, high_quantile=0.75)
    # p25: position 12.25 -> 0.9; p75: position 36.75 -> 1.1.
    assert narrow.eta_low_s == pytest.approx(450.0)
    assert narrow.eta_high_s == pytest.approx(550.0)


def test_a_restart_starts_a_new_segment() -> None:
    # 2 s per step up to step 200, then a restart from the step-150 checkpoint running at 1 s per step.
    observations = [(2.0 * step, float(step)) for step in range(201)]
    observations += [(500.0 + (step - 150), float(step)) for step in range(150, 181)]
    assert current_segment(observations)[0] == (500.0, 150.0)
    eta = estimate_eta(observations, 1000)
    assert eta.steps_per_s == 1.0
    assert eta.remaining_steps == 820.0
    assert eta.eta_s == 820.0
    assert eta.as_of == 530.0


def test_bursts_and_redraws() -> None:
    # A block-buffered log: ten steps arrive together every 10 s; a progress bar redraws step 20 later.
    observations = [(100.0 + 10.0 * (step // 10), float(step)) for step in range(1, 31)]
    observations.append((200.0, 30.0))
    segment = current_segment(observations)
    assert segment == [(100.0, 9.0), (110.0, 19.0), (120.0, 29.0), (130.0, 30.0)]
    eta = estimate_eta(observations, 130)
    assert eta.steps_per_s == 1.0
    assert eta.eta_s == 100.0


def test_no_total_means_rate_only() -> None:
    eta = estimate_eta([(0.0, 0.0), (5.0, 10.0)], None)
    assert eta == Eta(2.0, None, None, None, None, 5.0)


def test_finished_and_too_little_data() -> None:
    assert estimate_eta([(0.0, 0.0), (5.0, 10.0)], 10).eta_s == 0.0
    assert estimate_eta([(0.0, 0.0), (5.0, 12.0)], 10).remaining_steps == 0.0
    assert estimate_eta([(3.0, 7.0)], 10) == Eta(None, None, None, None, 3.0, 3.0)
    assert estimate_eta([], 10) is UNKNOWN_ETA
    assert estimate_eta([(math.nan, 1.0), (1.0, math.inf)], 10) is UNKNOWN_ETA


def test_quantile_interpolates() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.0) == 1.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 1.0) == 4.0
    assert quantile([7.0], 0.9) == 7.0
    with pytest.raises(ValueError):
        quantile([], 0.5)
    with pytest.raises(ValueError):
        estimate_eta([(0.0, 0.0)], 1, low_quantile=0.7)


def test_epoch_and_batch_progress_with_either_epoch_numbering() -> None:
    # Keras "Epoch 3/10" then " 120/500": two epochs done plus 120 batches.
    assert completed_batches(3, 120, 500, first_epoch=1) == 1120
    assert epoch_batch_progress(3, 120, 500, 10, first_epoch=1) == pytest.approx(1120 / 5000)
    # Lightning "Epoch 2: ... 120/500" counts from 0: the same point is one epoch later.
    assert completed_batches(2, 120, 500, first_epoch=0) == 1120
    assert epoch_batch_progress(9, 500, 500, 10, first_epoch=0) == 1.0
    assert epoch_batch_progress(1, 0, 0, 10, first_epoch=1) is None
    assert infer_first_epoch(0) == 0
    assert infer_first_epoch(0.02) == 0
    assert infer_first_epoch(1) == 1
    assert infer_first_epoch(3) == 1


_MMENGINE = re.compile(
    r"^(\d\d/\d\d \d\d:\d\d:\d\d) - mmengine - INFO - Epoch\(train\) \[(\d+)\]\[(\d+)/(\d+)\]"
    r".*?eta: (\d+):(\d\d):(\d\d)"
)


def test_real_mmengine_log_agrees_with_its_own_eta() -> None:
    """Six lines of a real XTuner run: 10 iterations every ~29 s, mmengine printing its own ETA.

    mmengine's ETA at iteration 200 (2:46:39 at 2.8906 s/iter, ~3460 iterations) means a 5-epoch run of 735
    iterations each; with that total, the ETA from the timestamps alone lands within 1 % of mmengine's.
    """
    observations: list[tuple[float, float]] = []
    printed: list[float] = []
    for line in (FIXTURES / "mmengine_xtuner_epoch_train_lr_eta_gradnorm_nan.txt").read_text().splitlines():
        match = _MMENGINE.match(line)
        assert match is not None, line
        stamp, epoch, batch, per_epoch, hours, minutes, seconds = match.groups()
        t = datetime.strptime("2023/" + stamp, "%Y/%m/%d %H:%M:%S").timestamp()
        done = completed_batches(int(epoch), int(batch), int(per_epoch), first_epoch=infer_first_epoch(1))
        observations.append((t, float(done)))
        printed.append(int(hours) * 3600 + int(minutes) * 60 + int(seconds))
    eta = estimate_eta(observations, 5 * 735)
    assert eta.steps_per_s == pytest.approx(10 / 29)
    assert eta.remaining_steps == 5 * 735 - 250
    assert eta.eta_s == pytest.approx((5 * 735 - 250) * 2.9)
    assert eta.eta_s == pytest.approx(printed[-1], rel=0.01)
    assert eta.eta_low_s is not None and eta.eta_high_s is not None
    assert eta.eta_low_s <= printed[-1] <= eta.eta_high_s


@given(
    st.lists(st.tuples(st.floats(allow_nan=True), st.floats(allow_nan=True)), max_size=80),
    st.one_of(st.none(), st.floats(allow_nan=True)),
)
def test_never_raises_and_orders_the_range(
    observations: list[tuple[float, float]], total: float | None
) -> None:
    eta = estimate_eta(observations, total)
    if eta.eta_s is not None:
        assert eta.eta_low_s is not None and eta.eta_high_s is not None
        assert eta.eta_low_s <= eta.eta_s <= eta.eta_high_s or math.isinf(eta.eta_s)
