"""Every real training log in tests/fixtures/logs/, through the whole engine: detected format, the last
progress the log reports, one metric read exactly, and the ranks. A fixture without a row here fails."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trainmon_tui.model import LogRecord
from trainmon_tui.parsers.trainlog.engine import LogParser

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
_PROGRESS = ("step", "total_steps", "epoch", "total_epochs", "batch", "batches_per_epoch")


@dataclass(frozen=True)
class Case:
    path: str
    format: str | None
    # Fields of the last record that reports any progress, with the physical line it came from.
    last: dict[str, float] = field(default_factory=dict)
    # (line, metric, value) read exactly (NaN compares as NaN).
    metric: tuple[int, str, float] | None = None
    ranks: frozenset[int] = frozenset()
    records: int | None = None


NAN = math.nan

CASES = [
    # HF Trainer / TRL / Accelerate
    Case(
        "accelerate/accelerate_trl_sft_tqdm_rank_warnings_swanlab.txt",
        "hf_trainer",
        {"line": 29, "step": 20, "total_steps": 4854, "epoch": 0.01},
        (28, "loss", 1.5618),
        frozenset({0, 1}),
    ),
    Case(
        "hf_trainer/hf_trainer_buffered_loss_dicts_after_bar_train_runtime.txt",
        "hf_trainer",
        {"line": 11, "epoch": 1.0},
        (10, "loss", 0.0366),
        records=11,
    ),
    Case(
        "hf_trainer/hf_trainer_custom_prefixed_eval_keys_fused_print.txt",
        "hf_trainer",
        {"line": 3, "epoch": 0.87},
        (2, "mrpc_en_eval_loss", 4.203643321990967),
        records=2,
    ),
    Case(
        "hf_trainer/hf_trainer_deepspeed_tqdm_line_fused_with_ds_log.txt",
        "hf_trainer",
        {"line": 7, "epoch": 0.1},
        (1, "loss", 6.2645),
        frozenset({0}),
        records=8,
    ),
    Case(
        "hf_trainer/hf_trainer_dict_loss0_gradnorm_nan.txt",
        "hf_trainer",
        {"line": 3, "epoch": 0.53},
        (1, "grad_norm", NAN),
        records=3,
    ),
    Case(
        "hf_trainer/hf_trainer_dict_tqdm_padding_trailing_spaces.txt",
        "hf_trainer",
        {"line": 13, "epoch": 0.0},
        (13, "lr", 0.00020714285714285716),
        records=13,
    ),
    Case(
        "hf_trainer/hf_trainer_eval_dict_hard_wrapped_80col.txt",
        "hf_trainer",
        {"line": 5, "epoch": 0.01},
        (2, "eval_samples_per_second", 7.289),
        records=4,
    ),
    Case(
        "hf_trainer/hf_trainer_raw_cr_tqdm_then_keyboardinterrupt.txt",
        "hf_trainer",
        {"line": 31, "step": 560, "total_steps": 240003},
        (12, "loss", 0.4117),
        records=2,
    ),
    Case(
        "hf_trainer/hf_trainer_tqdm_lines_numbered_then_nccl_timeout.txt",
        "hf_trainer",
        {"line": 19, "step": 23, "total_steps": 1752},
        (14, "grad_norm", 1.4142135381698608),
    ),
    Case(
        "trl/trl_dpo_simpo_dict_rewards_nan.txt",
        "hf_trainer",
        {"line": 1, "epoch": 0.01},
        (1, "rewards_margins", NAN),
    ),
    # PyTorch Lightning (and NeMo)
    Case(
        "lightning/lightning2_bar_slash_metric_keys.txt",
        "lightning",
        {"line": 1, "epoch": 10.0, "batch": 195, "batches_per_epoch": 195},
        (1, "loss", 3.86),
    ),
    Case(
        "lightning/lightning_bar_overwritten_by_checkpoint_msg.txt",
        "lightning",
        {"line": 1, "epoch": 2.0, "batch": 996, "batches_per_epoch": 997},
        (2, "val_loss", 0.67374),
    ),
    Case(
        "lightning/lightning_colab_bar_no_blocks_train_loss.txt",
        "lightning",
        {"line": 14, "epoch": 1.0, "batch": 1664, "batches_per_epoch": 1702},
        (14, "train_loss", 0.149),
        records=14,
    ),
    Case(
        "lightning/lightning_rich_progressbar_line_from_issue_title.txt",
        "lightning",
        {"line": 1, "epoch": 1.0, "total_epochs": 1, "batch": 2, "batches_per_epoch": 2},
        (1, "pixel_auroc", 0.0),
    ),
    Case(
        "lightning/lightning_startup_summary_bar_fit_stopped_max_epochs.txt",
        "lightning",
        {"line": 20, "total_epochs": 1},
        (18, "loss", 0.0663),
    ),
    Case(
        "lightning/lightning_tqdm_file_lines_v_num_loss_truncated_line.txt",
        "lightning",
        {"line": 18, "epoch": 1.0, "batch": 5, "batches_per_epoch": 18},
        (18, "loss", 9.847),
    ),
    Case(
        "errors/nccl_watchdog_timeout_fused_with_nemo_lightning_bar.txt",
        "lightning",
        {"line": 2, "step": 32000, "epoch": 1.0, "batch": 32040, "batches_per_epoch": 500150},
        (2, "reduced_train_loss", 2.59),
    ),
    # Keras
    Case(
        "keras/keras1_epoch_bar_seconds_only.txt",
        "keras",
        {"line": 20, "epoch": 48.0, "total_epochs": 200, "batch": 1562, "batches_per_epoch": 1562},
        (2, "val_acc", 0.7737),
    ),
    Case(
        "keras/keras2_epoch_bar_ms_step_val_metrics.txt",
        "keras",
        {"line": 14, "epoch": 7.0, "total_epochs": 10, "batch": 6072, "batches_per_epoch": 6072},
        (14, "val_loss", 0.3898),
    ),
    Case(
        "keras/keras2_mnist_val_split_interrupted_eta_line.txt",
        "keras",
        {"line": 24, "epoch": 12.0, "total_epochs": 15, "batch": 237, "batches_per_epoch": 422},
        (24, "accuracy", 0.9877),
    ),
    Case(
        "keras/keras3_unknown_total_steps_blank_lines.txt",
        "keras",
        {"line": 58, "batch": 20},
        (1, "loss", 12.679),
        records=20,
    ),
    Case(
        "keras/keras_tf2_us_per_step.txt",
        "keras",
        {"line": 20, "epoch": 10.0, "total_epochs": 10, "batch": 32, "batches_per_epoch": 32},
        (2, "loss", 1457.4397),
    ),
    # Ultralytics YOLO
    Case(
        "ultralytics/yolo_tuner_narrow_terminal_truncated_bars.txt",
        "ultralytics",
        {"line": 16, "epoch": 15.0, "total_epochs": 30},
        (14, "box_loss", 6.077),
    ),
    Case(
        "ultralytics/yolov5_legacy_epoch_gpu_mem_targets.txt",
        "ultralytics",
        {"line": 4, "epoch": 5.0, "total_epochs": 249},
        (2, "obj_loss", 0.01588),
    ),
    Case(
        "ultralytics/yolov8_epoch_table_gpu_mem_val_all_row.txt",
        "ultralytics",
        {"line": 14, "epoch": 72.0, "total_epochs": 1000},
        (4, "map50_95", 0.681),
    ),
    # Bare tqdm, generic key: value
    Case("misc/killed_after_tqdm_100pct.txt", "tqdm", {"line": 3, "step": 3000001, "total_steps": 3000001}),
    Case(
        "basicsr/basicsr_iqa_epoch_iter_eta_with_raw_cr_validation_bar.txt",
        "generic",
        {"line": 10, "step": 800, "epoch": 14.0},
        (10, "l_metric", 0.06163),
    ),
    Case(
        "ignite/ignite_engine_epoch_complete_eval_metrics.txt",
        "generic",
        {"line": 13, "epoch": 14.0},
        (8, "sq_rel", 0.6145007152112157),
    ),
    Case(
        "errors/slurm_oom_kill_killed_after_epoch_lines.txt",
        "generic",
        {"line": 10, "epoch": 0.0, "batch": 511, "batches_per_epoch": 1736},
        (10, "rmse", 0.7153),
    ),
    # Launcher output only: no training record, but the ranks of the prefixes
    Case("torchrun/torchrun_glog_W_omp_num_threads_banner.txt", None, records=0),
    Case(
        "torchrun/torchrun_tee3_role_host_rank_prefix_interleaved_traceback.txt",
        None,
        ranks=frozenset({0, 1, 2, 3}),
        records=0,
    ),
    Case(
        "errors/nccl_watchdog_timeout_rankN_prefix_glog_pt25.txt", None, ranks=frozenset({0, 1, 2}), records=0
    ),
    # Megatron, DeepSpeed, nanoGPT, torchtitan, fairseq, OpenMMLab, MetricLogger
    Case(
        "megatron/megatron_deepspeed_iteration_consumed_tokens_gradnorm_nan.txt",
        "megatron",
        {"line": 3, "step": 5428, "total_steps": 250000},
        (3, "grad_norm", NAN),
    ),
    Case(
        "megatron/megatron_lm_core_iteration_lm_loss_validation_checkpoint.txt",
        "megatron",
        {"line": 43, "step": 120, "total_steps": 1000},
        (43, "loss", 7.426577),
    ),
    Case(
        "deepspeed/deepspeed_fp16_overflow_skipping_step.txt",
        "deepspeed",
        metric=(8, "loss_scale", 512.0),
        ranks=frozenset({0}),
    ),
    Case(
        "deepspeed/deepspeed_gptneox_timer_samples_sec_iteration.txt",
        "deepspeed",
        {"line": 6, "step": 35},
        (4, "loss", 11.18665),
        frozenset({0}),
    ),
    Case(
        "deepspeed/deepspeed_old_timer_ipython_noise.txt",
        "deepspeed",
        {"line": 25, "step": 60},
        (25, "lr", 5e-05),
        frozenset({0}),
    ),
    Case(
        "nanogpt/modded_nanogpt_final_steps_val_loss_tail.txt",
        "modded_nanogpt",
        {"line": 41, "step": 20344, "total_steps": 20344},
        (41, "val_loss", 2.7737),
    ),
    Case(
        "nanogpt/modded_nanogpt_step_total_trainloss_stepavg_nan.txt",
        "modded_nanogpt",
        {"line": 142, "step": 139, "total_steps": 20344},
        (142, "loss", 6.2349),
    ),
    Case(
        "nanogpt/nanogpt_full_log_startup_eval_ckpt_then_nan.txt",
        "nanogpt",
        {"line": 109, "step": 450},
        (109, "loss", NAN),
    ),
    Case(
        "nanogpt/nanogpt_iter_loss_mfu_nan_after_ckpt_quoted.txt",
        "nanogpt",
        {"line": 33, "step": 3060},
        (1, "loss", 3.9883),
    ),
    Case(
        "torchtitan/torchtitan_rank0_gc_profiler_lines_interleaved.txt",
        "torchtitan",
        {"line": 10, "step": 250},
        (10, "loss", 5.8383),
        frozenset({0}),
    ),
    Case(
        "torchtitan/torchtitan_rank0_prefix_step_lines.txt",
        "torchtitan",
        {"line": 8, "step": 21},
        (8, "grad_norm", 0.6348),
        frozenset({0}),
    ),
    Case(
        "torchtitan/torchtitan_step_loss_memory_tps_mfu_duplicated_ranks.txt",
        "torchtitan",
        {"line": 8, "step": 5},
        (8, "loss", 7.07623),
    ),
    Case("fairseq/fairseq_info_startup_and_overflow_notes.txt", "fairseq", metric=(13, "loss_scale", 32.0)),
    Case(
        "fairseq/fairseq_json_log_format_epoch_lines.txt",
        "fairseq",
        {"line": 7, "epoch": 27.0},
        (6, "loss", 3.092),
    ),
    Case(
        "fairseq/fairseq_legacy_epoch_summary_and_inner.txt",
        "fairseq",
        {"line": 7, "step": 25634, "epoch": 10.0, "batch": 1000, "batches_per_epoch": 2737},
        (7, "loss", 6.144),
    ),
    Case(
        "fairseq/fairseq_legacy_pipe_epoch_updates_valid.txt",
        "fairseq",
        {"line": 6, "step": 645, "epoch": 1.0, "batch": 650, "batches_per_epoch": 1891},
        (5, "val_loss", 8.11425),
    ),
    Case(
        "fairseq/fairseq_modern_train_inner_info_lines.txt",
        "fairseq",
        {"line": 5, "step": 3200, "epoch": 1.0, "batch": 3200, "batches_per_epoch": 160368},
        (5, "loss", 10.278),
    ),
    Case(
        "mmengine/mmcv_legacy_mmdet_iter_based_loss_nan.txt",
        "mmcv",
        {"line": 1, "step": 10100, "total_steps": 316440},
        (1, "lr", 0.000399),
    ),
    Case(
        "mmengine/mmcv_legacy_mmocr_epoch_tab_eta_days.txt",
        "mmcv",
        {"line": 2, "epoch": 1.0, "batch": 200, "batches_per_epoch": 62598},
        (2, "loss", 0.9186),
    ),
    Case(
        "mmengine/mmengine_xtuner_epoch_train_lr_eta_gradnorm_nan.txt",
        "mmengine",
        {"line": 6, "epoch": 1.0, "batch": 250, "batches_per_epoch": 735},
        (6, "grad_norm", NAN),
    ),
    Case(
        "timm_deit/beit_metriclogger_epoch_eta_smoothed_values.txt",
        "metriclogger",
        {"line": 1, "epoch": 116.0, "batch": 1299, "batches_per_epoch": 1299},
        (1, "loss", 6.5993),
    ),
    Case(
        "timm_deit/llama_accessory_metriclogger_time_prefix_closs.txt",
        "metriclogger",
        {"line": 9, "epoch": 3.0, "batch": 421, "batches_per_epoch": 1504},
        (9, "loss", 0.9079),
    ),
]


def _read(path: Path) -> tuple[list[LogRecord], LogParser]:
    parser = LogParser()
    records: list[LogRecord] = []
    # As parse-log reads a log: decoding errors replaced, lines split on "\n" only.
    with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
        for line in handle:
            records.extend(parser.feed(line.rstrip("\r\n"))[0])
    records.extend(parser.finish()[0])
    return records, parser


def test_every_fixture_log_has_a_case() -> None:
    on_disk = {str(path.relative_to(LOGS)) for path in LOGS.glob("*/*.txt") if path.parent.name != "errors"}
    on_disk |= {case.path for case in CASES if case.path.startswith("errors/")}
    assert on_disk == {case.path for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.path for case in CASES])
def test_corpus_log(case: Case) -> None:
    records, parser = _read(LOGS / case.path)
    assert parser.format == case.format
    assert parser.ranks == case.ranks
    if case.records is not None:
        assert len(records) == case.records
    with_progress = [r for r in records if any(getattr(r, name) is not None for name in _PROGRESS)]
    if case.last:
        last = with_progress[-1]
        shown = {
            name: getattr(last, name) for name in ("line", *_PROGRESS) if getattr(last, name) is not None
        }
        assert shown == case.last
    else:
        assert with_progress == []
    if case.metric is not None:
        line, name, expected = case.metric
        values = [r.metrics[name] for r in records if r.line == line and name in r.metrics]
        assert len(values) == 1, f"{name} on line {line}: {values}"
        if math.isnan(expected):
            assert math.isnan(values[0])
        else:
            assert values[0] == expected
    # Line numbers are physical and never go backwards.
    assert [r.line for r in records] == sorted(r.line for r in records)
