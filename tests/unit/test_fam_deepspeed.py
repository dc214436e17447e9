"""DeepSpeed / GPT-NeoX line family on the real logs in tests/fixtures/logs/deepspeed/."""

from __future__ import annotations

import calendar
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.family_helpers import engine_cleaned, family_hits, physical_lines, read_fixture_lines
from trainmon_tui.parsers.trainlog.base import Hit
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_deepspeed import FAMILIES, DeepSpeedFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
OVERFLOW_LOG = "deepspeed_fp16_overflow_skipping_step.txt"
NEOX_LOG = "deepspeed_gptneox_timer_samples_sec_iteration.txt"
OLD_TIMER_LOG = "deepspeed_old_timer_ipython_noise.txt"

# Line 4 of corpus logs/hf_trainer/hf_trainer_deepspeed_tqdm_line_fused_with_ds_log.txt
# (huggingface/transformers issue #14531, turn 2), verbatim: a tqdm bar with no newline, then DeepSpeed's.
FUSED_WITH_TQDM = (
    "  8%|"
    + "\u2588" * 13
    + " " * 144
    + "| 1999/24128 [1:52:09<20:27:23,  3.33s/it][2021-11-26 03:07:16,494] "
    "[INFO] [logging.py:69:log_dist] [Rank 0] step=2000, skipped=1995, lr=[0.001, 0.001], mom=[0.0, 0.0]"
)


def fixture_lines(name: str) -> list[str]:
    return read_fixture_lines("deepspeed", name)


def hits_by_line(lines: list[str]) -> dict[int, Hit]:
    return family_hits(DeepSpeedFamily, lines)


def test_module_exports_the_family() -> None:
    assert (DeepSpeedFamily,) == FAMILIES
    assert DeepSpeedFamily.name == "deepspeed"


def test_fp16_overflow_lines_track_the_loss_scale() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(OVERFLOW_LOG)])
    assert sorted(hits) == list(range(1, 9))
    # First line only spends hysteresis, so the scale stays at the attempted 65536.
    assert [hit.metrics["loss_scale"] for hit in hits.values()] == [
        65536.0,
        32768.0,
        16384.0,
        8192.0,
        4096.0,
        2048.0,
        1024.0,
        512.0,
    ]
    assert {hit.rank for hit in hits.values()} == {0}
    assert all(hit.step is None for hit in hits.values())


def test_logger_timestamp_read_when_the_engine_left_it() -> None:
    hit = DeepSpeedFamily().parse(fixture_lines(OVERFLOW_LOG)[7])
    assert hit is not None
    assert hit.timestamp == calendar.timegm((2024, 7, 17, 19, 44, 19, 0, 0, 0)) + 0.048
    stripped = DeepSpeedFamily().parse(engine_cleaned(fixture_lines(OVERFLOW_LOG)[7]))
    assert stripped is not None
    assert stripped.timestamp is None
    assert stripped.metrics == {"loss_scale": 512.0}


def test_gptneox_log_timer_iteration_and_step_lines() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(NEOX_LOG)])
    # Lines 2, 3 and 5 are wall-clock breakdowns ("time (ms) | forward: ..."), not progress.
    assert sorted(hits) == [1, 4, 6]
    timer = hits[1]
    assert timer.step == 34
    assert timer.metrics == {
        "running_avg_samples_per_sec": 7.864669709950182,
        "curr_samples_per_sec": 8.00912418308922,
        "mem_allocated_gb": 59.65,
        "max_mem_allocated_gb": 63.31,
    }
    neox = hits[4]
    assert (neox.step, neox.total_steps) == (34, 10000)
    assert neox.metrics["loss"] == 1.118665e01
    assert neox.metrics["lr"] == 2.111e-06
    assert neox.metrics["samples_per_sec"] == 7.799
    assert neox.metrics["approx_flops_per_gpu_tflops"] == 112.9
    assert neox.metrics["elapsed_time_per_iteration_ms"] == 4103.1
    step = hits[6]
    assert step.step == 35
    assert step.rank == 0
    assert step.metrics == {"skipped": 0.0, "lr": 2.1731931451279077e-06}


def test_old_timer_log_with_notebook_noise() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(OLD_TIMER_LOG)])
    # Every '<IPython.core.display.HTML object>' line is left alone.
    assert sorted(hits) == [1, 2, 13, 14, 25]
    assert [hits[n].step for n in sorted(hits)] == [40, 40, 50, 50, 60]
    assert hits[25].metrics == {"skipped": 2.0, "lr": 5e-05}
    assert hits[14].metrics == {
        "samples_per_sec": 83.73838805358588,
        "mem_allocated_gb": 0.26,
        "max_mem_allocated_gb": 9.02,
    }
    assert hits[14].rank is None


def test_step_line_found_after_an_unterminated_tqdm_bar() -> None:
    hit = DeepSpeedFamily().parse(FUSED_WITH_TQDM)
    assert hit is not None
    assert hit.step == 2000
    assert hit.rank == 0
    assert hit.metrics == {"skipped": 1995.0, "lr": 0.001}


def test_neox_validation_results_line() -> None:
    # The shape GPT-NeoX's evaluate_and_print_results prints (" {chart} results at {prefix} | k value: v | ").
    hit = DeepSpeedFamily().parse(
        " validation results at iteration 100 | lm_loss value: 6.912345E+00 | lm_loss_ppl value: 1.004E+03 | "
    )
    assert hit == Hit(step=100, metrics={"val_loss": 6.912345, "val_lm_loss_ppl": 1004.0})


def test_other_frameworks_lines_are_not_claimed() -> None:
    own = LOGS / "deepspeed"
    # The HF Trainer + DeepSpeed log really does carry DeepSpeed engine lines.
    shared = {"hf_trainer_deepspeed_tqdm_line_fused_with_ds_log.txt"}
    for path in sorted(LOGS.glob("*/*.txt")):
        if path.parent == own or path.name in shared:
            continue
        family = DeepSpeedFamily()
        for line in path.read_text(encoding="utf-8").splitlines():
            assert family.parse(engine_cleaned(line)) is None, (path.name, line)


def test_through_the_log_engine() -> None:
    records, _, log_format = parse_lines(physical_lines(LOGS / "deepspeed" / OVERFLOW_LOG))
    assert log_format == "deepspeed"
    assert [record.metrics["loss_scale"] for record in records][-2:] == [1024.0, 512.0]
    assert {record.rank for record in records} == {0}
    assert records[-1].timestamp == calendar.timegm((2024, 7, 17, 19, 44, 19, 0, 0, 0)) + 0.048
    records, _, log_format = parse_lines(physical_lines(LOGS / "deepspeed" / NEOX_LOG))
    assert log_format == "deepspeed"
    assert [(record.line, record.step) for record in records] == [(1, 34), (4, 34), (6, 35)]
    assert records[1].total_steps == 10000
    assert records[1].metrics["loss"] == 1.118665e01


@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    DeepSpeedFamily().parse(text)


@given(
    st.sampled_from(
        [
            "[Rank 3] step=",
            "global_step=",
            "[2022-99-11 02:06:58,985] 0/",
            " SamplesPerSec=",
            "OVERFLOW! Rank 0 Skipping step. Attempted loss scale: ",
            " samples/sec: 1 | iteration ",
            " test results at ",
        ]
    ),
    st.text(alphabet="0123456789 |:,./=[]-eEnaGBTFLOPS", max_size=60),
)
def test_parse_never_raises_on_near_miss_text(head: str, tail: str) -> None:
    hit = DeepSpeedFamily().parse(head + tail)
    assert hit is None or not hit.is_empty()
