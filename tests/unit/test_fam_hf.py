"""HF Trainer / TRL / Accelerate log dicts, on the real logs in tests/fixtures/logs/ (hf_trainer, trl, ..)."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_hf import FAMILIES, HfTrainerFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def physical_lines(relative: str) -> list[str]:
    """The fixture's lines as a log reader sees them: split on newline only, \\r kept."""
    with (LOGS / relative).open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = handle.read().split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def parse_fixture(relative: str) -> tuple[list[LogRecord], list[LogEvent], str | None]:
    return parse_lines(physical_lines(relative))


def test_families_export() -> None:
    assert list(FAMILIES) == [HfTrainerFamily]
    assert HfTrainerFamily.name == "hf_trainer"


def test_loss_zero_and_nan_grad_norm() -> None:
    records, _, detected = parse_fixture("hf_trainer/hf_trainer_dict_loss0_gradnorm_nan.txt")
    assert detected == "hf_trainer"
    assert [r.line for r in records] == [1, 2, 3]
    assert [r.metrics["loss"] for r in records] == [0.2051, 0.0, 0.0]
    assert all(math.isnan(r.metrics["grad_norm"]) for r in records)
    assert records[0].metrics["lr"] == 9.774074342405685e-06
    assert all(r.epoch == 0.53 for r in records)
    assert all(r.step is None and r.rank is None for r in records)


def test_family_reads_one_dict_line() -> None:
    line = physical_lines("hf_trainer/hf_trainer_dict_tqdm_padding_trailing_spaces.txt")[11]
    hit = HfTrainerFamily().parse(line.rstrip())
    assert hit is not None
    assert hit.epoch == 0.0
    assert hit.metrics["loss"] == 0.0
    assert hit.metrics["lr"] == 0.0002
    assert math.isnan(hit.metrics["grad_norm"])
    assert set(hit.metrics) == {"loss", "grad_norm", "lr"}


def test_trl_keys_with_slashes() -> None:
    records, _, detected = parse_fixture("trl/trl_dpo_simpo_dict_rewards_nan.txt")
    assert detected == "hf_trainer"
    (record,) = records
    assert record.metrics["rewards_accuracies"] == 0.0
    assert math.isnan(record.metrics["rewards_chosen"])
    assert math.isnan(record.metrics["logps_rejected"])
    assert record.metrics["lr"] == 2.5784903139612557e-08
    assert record.epoch == 0.01


def test_train_runtime_summary_keeps_the_run_mean_apart_from_loss() -> None:
    records, _, _ = parse_fixture("hf_trainer/hf_trainer_buffered_loss_dicts_after_bar_train_runtime.txt")
    assert len(records) == 11
    assert records[9].metrics["loss"] == 0.0366
    summary = records[10]
    assert summary.line == 11
    assert "loss" not in summary.metrics
    assert summary.metrics["train_loss"] == 0.08921762292655071
    assert summary.metrics["train_runtime"] == 20909.335
    assert summary.epoch == 1.0


def test_eval_dict_hard_wrapped_at_80_columns_is_joined() -> None:
    records, _, _ = parse_fixture("hf_trainer/hf_trainer_eval_dict_hard_wrapped_80col.txt")
    assert [r.line for r in records] == [1, 2, 4, 5]
    wrapped = records[1]
    assert wrapped.metrics["val_loss"] == 2.2206013202667236
    assert wrapped.metrics["eval_samples_per_second"] == 7.289
    assert wrapped.metrics["eval_steps_per_second"] == 0.911
    assert wrapped.epoch == 0.01
    assert records[3].metrics["val_loss"] == 2.098778247833252


def test_prefixed_eval_keys_are_kept_and_overwritten_bar_gives_nothing() -> None:
    records, _, _ = parse_fixture("hf_trainer/hf_trainer_custom_prefixed_eval_keys_fused_print.txt")
    assert [r.line for r in records] == [2, 3]
    assert records[0].metrics["mrpc_en_eval_loss"] == 4.203643321990967
    assert records[1].metrics["eval_average_metrics"] == 0.0
    assert records[1].epoch == 0.87


def test_dict_glued_after_raw_cr_bar_gets_the_bar_step() -> None:
    records, _, detected = parse_fixture("hf_trainer/hf_trainer_raw_cr_tqdm_then_keyboardinterrupt.txt")
    assert detected == "hf_trainer"
    first = records[0]
    assert (first.line, first.step, first.total_steps) == (12, 560, 240003)
    assert first.metrics == {"loss": 0.4117, "lr": 4.9895834635400394e-05}
    assert first.epoch == 0.01
    # The "Map:" bars (examples/s) give no progress; the last refresh after the traceback does.
    assert [(r.line, r.step) for r in records] == [(12, 560), (31, 560)]


def test_accelerate_glued_bars_then_padded_dict() -> None:
    records, _, detected = parse_fixture("accelerate/accelerate_trl_sft_tqdm_rank_warnings_swanlab.txt")
    assert detected == "hf_trainer"
    by_line = {r.line: r for r in records}
    assert (by_line[28].step, by_line[28].total_steps) == (10, 4854)
    assert by_line[28].metrics["loss"] == 1.5618
    assert by_line[28].metrics["num_tokens"] == 52034.0
    assert by_line[29].step == 20
    assert by_line[29].metrics["mean_token_accuracy"] == 0.6785490036010742


def test_dict_inside_a_sentence_is_not_a_log_dict() -> None:
    line = physical_lines("accelerate/accelerate_trl_sft_tqdm_rank_warnings_swanlab.txt")[11]
    assert "Updated tokens: {'bos_token_id'" in line
    assert HfTrainerFamily().parse(line) is None


def test_bar_fused_with_deepspeed_line() -> None:
    records, _, _ = parse_fixture("hf_trainer/hf_trainer_deepspeed_tqdm_line_fused_with_ds_log.txt")
    on_line_4 = [r for r in records if r.line == 4]
    assert [(r.step, r.total_steps, r.rank) for r in on_line_4] == [(1999, 24128, None), (2000, None, 0)]
    assert on_line_4[1].metrics["lr"] == 0.001
    assert records[0].metrics["loss"] == 6.2645


def test_step_key_in_dict() -> None:
    hit = HfTrainerFamily().parse("{'loss': 1.25, 'step': 40, 'epoch': 0.2}")
    assert hit is not None
    assert (hit.step, hit.epoch, hit.metrics) == (40, 0.2, {"loss": 1.25})


def test_dict_without_numbers_is_not_a_record() -> None:
    assert HfTrainerFamily().parse("{'model': 'bert', 'task': None}") is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    family = HfTrainerFamily()
    family.parse("{'" + text)
    family.parse(text + "{'loss': " + text + ", 'epoch': 1}")
