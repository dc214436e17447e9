"""Megatron-LM / Megatron-DeepSpeed line family on the real logs in tests/fixtures/logs/megatron/."""

from __future__ import annotations

import calendar
import math

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.family_helpers import LOGS, engine_cleaned, physical_lines, read_fixture_lines
from trainmon_tui.parsers.trainlog.base import Hit
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_megatron import FAMILIES, MegatronFamily

CORE_LOG = "megatron_lm_core_iteration_lm_loss_validation_checkpoint.txt"
DEEPSPEED_FORK_LOG = "megatron_deepspeed_iteration_consumed_tokens_gradnorm_nan.txt"


def hits_by_line(lines: list[str]) -> dict[int, Hit]:
    """Feed every line to one family instance; 1-based line number -> Hit. A hit must pass the gate."""
    family = MegatronFamily()
    found: dict[int, Hit] = {}
    for number, line in enumerate(lines, start=1):
        hit = family.parse(line)
        if hit is not None:
            assert any(token in line for token in MegatronFamily.gate), line
            found[number] = hit
    return found


def test_module_exports_the_family() -> None:
    assert (MegatronFamily,) == FAMILIES
    assert MegatronFamily.name == "megatron"


def test_core_log_iterations_give_step_total_and_metrics() -> None:
    lines = [engine_cleaned(line) for line in read_fixture_lines("megatron", CORE_LOG)]
    hits = hits_by_line(lines)
    iterations = [hit for hit in hits.values() if hit.total_steps is not None]
    assert [hit.step for hit in iterations] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]
    assert {hit.total_steps for hit in iterations} == {1000}
    last = iterations[-1]
    assert last.metrics["loss"] == 7.426577
    assert last.metrics["lr"] == 9.821720e-05
    assert last.metrics["grad_norm"] == 1.023
    assert last.metrics["consumed_samples"] == 1920.0
    assert last.metrics["elapsed_time_per_iteration_ms"] == 774.3
    assert last.metrics["number_of_skipped_iterations"] == 0.0


def test_core_log_skipped_warmup_iteration_has_no_loss() -> None:
    lines = [engine_cleaned(line) for line in read_fixture_lines("megatron", CORE_LOG)]
    first = hits_by_line(lines)[4]
    assert first.step == 10
    # fp16 loss-scale search: the line prints no lm loss and no grad norm, so neither is invented.
    assert "loss" not in first.metrics
    assert "grad_norm" not in first.metrics
    assert first.metrics["lr"] == 0.0
    assert first.metrics["loss_scale"] == 8388608.0
    assert first.metrics["number_of_skipped_iterations"] == 10.0


def test_core_log_validation_and_checkpoint_lines() -> None:
    lines = [engine_cleaned(line) for line in read_fixture_lines("megatron", CORE_LOG)]
    hits = hits_by_line(lines)
    validation = hits[21]
    assert validation.step == 50
    assert validation.total_steps is None
    assert validation.metrics == {"val_loss": 8.889540, "val_lm_loss_ppl": 7255.679}
    assert hits[34].metrics == {"val_loss": 7.398865, "val_lm_loss_ppl": 1634.128}
    # "saving checkpoint at iteration 100" and "successfully saved checkpoint from iteration 100".
    assert hits[36] == Hit(step=100)
    assert hits[39] == Hit(step=100)


def test_core_log_foreign_lines_are_not_read() -> None:
    lines = [engine_cleaned(line) for line in read_fixture_lines("megatron", CORE_LOG)]
    hits = hits_by_line(lines)
    iteration_lines = {4, 11, 12, 13, 14, 23, 24, 25, 26, 27, 42, 43}
    assert set(hits) == iteration_lines | {21, 34, 36, 39}
    # Contains "iterations" but is a memory report, not progress.
    assert "(after 10 iterations) memory" in lines[9]
    assert MegatronFamily().parse(lines[9]) is None


def test_timestamp_read_when_the_engine_left_it() -> None:
    raw = read_fixture_lines("megatron", CORE_LOG)
    hit = MegatronFamily().parse(raw[10])
    assert hit is not None
    assert hit.step == 20
    assert hit.timestamp == calendar.timegm((2025, 4, 13, 23, 41, 20, 0, 0, 0))
    # Megatron indents the stamp, so whether the engine strips it is the engine's business; without it the
    # family reads the same values and no time.
    without_stamp = raw[10].partition("] ")[2]
    assert without_stamp.startswith("iteration       20/")
    cleaned = MegatronFamily().parse(without_stamp)
    assert cleaned is not None
    assert cleaned.timestamp is None
    assert cleaned.metrics == hit.metrics


def test_deepspeed_fork_lines_with_nan_grad_norm_and_no_loss() -> None:
    hits = hits_by_line(read_fixture_lines("megatron", DEEPSPEED_FORK_LOG))
    assert [hit.step for hit in hits.values()] == [5426, 5427, 5428]
    last = hits[3]
    assert last.total_steps == 250000
    assert math.isnan(last.metrics["grad_norm"])
    # A non-last pipeline stage prints no loss at all.
    assert "loss" not in last.metrics
    assert last.metrics["consumed_tokens"] == 88932352.0
    assert last.metrics["actual_seqlen"] == 2048.0
    assert last.metrics["samples_per_second"] == 1.892
    assert last.metrics["tflops"] == 78.71
    assert last.metrics["lr"] == 2.999e-04


def test_other_frameworks_lines_are_not_claimed() -> None:
    own = LOGS / "megatron"
    for path in sorted(LOGS.glob("*/*.txt")):
        if path.parent == own:
            continue
        family = MegatronFamily()
        for line in path.read_text(encoding="utf-8").splitlines():
            assert family.parse(engine_cleaned(line)) is None, (path.name, line)


def test_through_the_log_engine() -> None:
    records, _, log_format = parse_lines(physical_lines(LOGS / "megatron" / CORE_LOG))
    assert log_format == "megatron"
    assert [record.line for record in records] == [
        4, 11, 12, 13, 14, 21, 23, 24, 25, 26, 27, 34, 36, 39, 42, 43
    ]  # fmt: skip
    last = records[-1]
    assert (last.step, last.total_steps) == (120, 1000)
    assert last.metrics["loss"] == 7.426577
    # The engine took the indented "[2025-04-13 23:42:55]" stamp off the line and kept it.
    assert last.timestamp == calendar.timegm((2025, 4, 13, 23, 42, 55, 0, 0, 0))
    assert records[11].metrics["val_loss"] == 7.398865


def test_absurdly_long_numbers_are_not_read() -> None:
    # Python refuses int() of more than 4300 digits; such a line is simply not an iteration report.
    assert MegatronFamily().parse("iteration " + "9" * 5000 + "/ 10 | lm loss: 1.0 |") is None


@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    MegatronFamily().parse(text)


@given(
    st.sampled_from(
        [
            " iteration ",
            "iteration 5/",
            " [2025-13-45 99:99:99] iteration 1/ 2 |",
            "validation loss at iteration 3 on ",
            "validation loss at the end of training for x data |",
            "saving checkpoint at iteration ",
        ]
    ),
    st.text(alphabet="0123456789 |:./-eEnaNnfi[]", max_size=60),
)
def test_parse_never_raises_on_near_miss_text(head: str, tail: str) -> None:
    hit = MegatronFamily().parse(head + tail)
    assert hit is None or not hit.is_empty()
