"""The per-shape and column readers of the logger-line families (fairseq, DeepSpeed, MetricLogger, MMEngine,
Megatron, HF, generic) on the less common paths of their shapes: each reader is made from one line and must
read other lines of the same shape (other digits) exactly as ``parse`` does, and a column reader exactly as
the per-line reader does, or give up (None) where a value needs the per-line reader.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from functools import partial

from trainmon_tui.parsers.trainlog.base import ColumnFamily, Columns, Hit, ShapeAwareFamily, never_reads
from trainmon_tui.parsers.trainlog.fam_deepspeed import DeepSpeedFamily
from trainmon_tui.parsers.trainlog.fam_fairseq import FairseqFamily
from trainmon_tui.parsers.trainlog.fam_generic import GenericFamily
from trainmon_tui.parsers.trainlog.fam_hf import HfTrainerFamily
from trainmon_tui.parsers.trainlog.fam_megatron import MegatronFamily
from trainmon_tui.parsers.trainlog.fam_metriclogger import MetricLoggerFamily
from trainmon_tui.parsers.trainlog.fam_mmengine import MmcvFamily, MmengineFamily

_PROGRESS = ("step", "total_steps", "epoch", "total_epochs", "batch", "batches_per_epoch", "timestamp")


def _variants(line: str, count: int, seed: str, digits: str = "0123456789") -> list[str]:
    """``line`` and ``count`` copies of it with other digits (drawn from ``digits``)."""
    rng = random.Random(seed)
    copies = ["".join(rng.choice(digits) if char.isdigit() else char for char in line) for _ in range(count)]
    return [line, *copies]


def _assert_reads_like_parse(family: ShapeAwareFamily, lines: Sequence[str]) -> None:
    """The reader made from the first line reads every line as parse does (a fresh family each way)."""
    reader = family.for_shape(lines[0])
    by_parse = type(family)()
    for line in lines:
        assert repr(reader(line)) == repr(by_parse.parse(line)), line


def _hits_of(columns: Columns, count: int) -> list[Hit]:
    stamps = None if columns.timestamps is None else columns.timestamps()
    hits = []
    for at in range(count):
        hit = Hit(metrics=dict(zip(columns.names, (values[at] for values in columns.values), strict=True)))
        for name, value in zip(_PROGRESS[:6], columns[:6], strict=True):
            setattr(hit, name, value[at] if isinstance(value, list) else value)
        hit.timestamp = None if stamps is None else stamps[at]
        hits.append(hit)
    return hits


def _same(left: object, right: object) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right):
        return True
    # repr tells -0.0 from 0.0 and a float from an int of the same value.
    return type(left) is type(right) and repr(left) == repr(right)


def _read_by_column(family: ColumnFamily, lines: Sequence[str]) -> Columns | None:
    """The columns the column reader made from the first line reads from ``lines`` (each after a prefix, as
    the engine hands them over), checked field by field against the per-line reader where it reads them."""
    reader = family.columns_for_shape(lines[0])
    assert reader is not None, lines[0]
    columns = reader([f"[rank1]: {line}" for line in lines], len("[rank1]: "))
    if columns is None:
        return None
    line_reader = family.for_shape(lines[0])
    for by_column, line in zip(_hits_of(columns, len(lines)), lines, strict=True):
        by_line = line_reader(line)
        assert by_line is not None and not by_line.is_empty() and by_line.rank is None, line
        for name in _PROGRESS:
            assert _same(getattr(by_column, name), getattr(by_line, name)), (name, line)
        assert list(by_column.metrics) == list(by_line.metrics), line
        for name, value in by_line.metrics.items():
            assert _same(by_column.metrics[name], value), (name, line)
    return columns


_FAIRSEQ_RECORD = (
    '{"epoch": 25, "loss": "3.097", "ppl": "2.51", "wps": 1667443, "ups": "2.7", "num_updates": 53749, '
    '"lr": 0.00019096019143386865, "clip": "100%", "oom": 0.02612141621239465, "wall": 20721, "best": null}'
)


def test_fairseq_json_records_are_read_per_shape_and_by_column() -> None:
    family = FairseqFamily()
    # Digits 1-9: JSON allows no leading 0, tried below.
    lines = _variants(_FAIRSEQ_RECORD, 15, "fairseq-json", "123456789")
    _assert_reads_like_parse(family, lines)
    columns = _read_by_column(family, lines)
    assert columns is not None
    assert columns.names == ("loss", "ppl", "wps", "ups", "lr", "clip", "oom", "wall")
    tagged = [f"| INFO | train | {line.replace('loss', 'train_loss')}" for line in lines]
    _assert_reads_like_parse(family, tagged)
    assert _read_by_column(family, tagged) is not None


def test_fairseq_json_number_with_a_leading_zero_is_no_record() -> None:
    family = FairseqFamily()
    lines = _variants(_FAIRSEQ_RECORD, 15, "fairseq-zero", "123456789")
    lines.append(_FAIRSEQ_RECORD.replace("1667443", "0667443"))
    assert family.parse(lines[-1]) is None
    _assert_reads_like_parse(family, lines)
    assert _read_by_column(family, lines) is None  # that line is read by the per-line reader


def test_fairseq_json_integer_minus_zero_reads_as_json_reads_it() -> None:
    family = FairseqFamily()
    lines = ['{"epoch": 3, "loss": -0, "num_updates": 10}', '{"epoch": 4, "loss": -7, "num_updates": 11}']
    _assert_reads_like_parse(family, lines)
    hit = family.for_shape(lines[0])(lines[0])
    assert hit is not None and repr(hit.metrics["loss"]) == "0.0"
    lines = _variants(lines[0], 10, "minus-zero", "123456789")
    columns = _read_by_column(family, lines)
    assert columns is not None and columns.step is not None


def test_fairseq_json_shapes_the_readers_do_not_cover_are_read_by_parse() -> None:
    family = FairseqFamily()
    for line in (
        '{"epoch": 3, "loss": 2.5, "loss": 2.4}',  # a repeated key: the last value, at the first place
        '{"epoch": 3, "loss": {"a": 2.5}}',  # a nested value
        '{"epoch": 3, "loss_1": 2.5}',  # a key with a digit
        '{"epoch": 3, "loss": "2\\u0035"}',  # an escape
        '{"epoch": 3, "loss": ' + "7" * 320 + "}",  # an integer too long for a float
        '{"epoch": 3, "loss": NaN}',
    ):
        assert family.for_shape(line) == family.parse, line
        _assert_reads_like_parse(family, _variants(line, 5, line))


def test_fairseq_summaries_and_overflow_notes_are_read_per_shape_and_by_column() -> None:
    family = FairseqFamily()
    for line in (
        "| epoch 008 | loss 6.326 | nll_loss 5.193 | ppl 36.58 | wps 12876 | num_updates 21896 | clip 0%",
        "| epoch 008 | valid on 'valid' subset | valid_loss 6.43844 | num_updates 21896 | best 6.43844",
        "2020-07-17 07:20:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.1 | num_updates 3",
        "2020-04-05 18:47:19 | INFO | fairseq.trainer | NOTE: overflow detected, setting loss scale to: 64.0",
    ):
        lines = _variants(line, 12, line)
        _assert_reads_like_parse(family, lines)
        assert _read_by_column(family, lines) is not None, line
    # A summary whose subset is named with a digit names its metrics per line: parse reads it.
    line = "| epoch 008 | valid on 'valid1' subset | loss 6.43844"
    assert family.for_shape(line) == family.parse
    assert family.for_shape("| epoch 008 done") is never_reads


def test_deepspeed_readers_read_every_kind_of_line_like_parse() -> None:
    family = DeepSpeedFamily()
    for line in (
        "[2022-03-11 02:06:58,985] [INFO] [logging.py:69:log_dist] [Rank 0] step=40, skipped=2, lr=[5e-05], "
        "mom=[[0.9, 0.999]]",
        "[INFO] [timer.py:215:stop] epoch=0/micro_step=34/global_step=34, RunningAvgSamplesPerSec=7.86, "
        "CurrSamplesPerSec=8.01, MemAllocated=59.65GB, MaxMemAllocated=63.31GB",
        "[2022-03-11 02:06:58,985] [INFO] [timer.py:189:stop] 0/40, SamplesPerSec=83.48, MemAllocated=0.26GB",
        "[INFO] [timer.py:189:stop] 0/40, SamplesPerSec=n/a",
        "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768",
        "[deepspeed] OVERFLOW! Skipping step. Attempted loss scale: 65536",
        " samples/sec: 7.799 | iteration       34/   10000 | learning rate: 2.111E-06 | approx flops per "
        "GPU: 112.9TFLOPS | lm_loss: 1.118665E+01 | number of nan iterations:   0 |",
        " validation results at iteration 100 | lm_loss value: 6.1E+00 | lm_loss_ppl value: 4.5E+02 |",
        " test results at the end of training | lm_loss value: 6.1E+00 |",
        " validation results at iteration 100 | note: none |",
    ):
        _assert_reads_like_parse(family, _variants(line, 12, line))
    assert family.for_shape("Epoch 0: 6%| global_step=44200003.2e+4") is never_reads
    # A key with a digit names its metric per line: parse reads the shape.
    line = "[INFO] [timer.py:189:stop] 0/40, SamplesPerSec=83.48, Mem1=0.26GB"
    assert family.for_shape(line) == family.parse


def test_deepspeed_timer_and_neox_lines_are_read_by_column() -> None:
    family = DeepSpeedFamily()
    for line in (
        "[2023-07-25 21:03:17,269] [INFO] [timer.py:215:stop] epoch=0/micro_step=34/global_step=34, "
        "RunningAvgSamplesPerSec=7.864669709950182, MemAllocated=59.65GB, MaxMemAllocated=63.31GB",
        "[INFO] [timer.py:189:stop] 0/40, SamplesPerSec=83.48609168106144, MemAllocated=0.26GB",
        " samples/sec: 7.799 | iteration       34/   10000 | learning rate: 2.111E-06 | approx flops per "
        "GPU: 112.9TFLOPS | lm_loss: 1.118665E+01 |",
    ):
        assert _read_by_column(family, _variants(line, 12, line)) is not None, line
    # A number with a thousands separator only parse_number reads: read per line.
    line = " samples/sec: 7.799 | iteration       34/   10000 | approx flops per GPU: 1,112.9TFLOPS |"
    lines = _variants(line, 12, line)
    _assert_reads_like_parse(family, lines)
    assert _read_by_column(family, lines) is None
    # The lines that name a rank are read per line.
    assert family.columns_for_shape("[Rank 0] step=40, skipped=2, lr=[5e-05], mom=[[0.9, 0.999]]") is None


def test_metriclogger_lines_are_read_per_shape_and_by_column() -> None:
    family = MetricLoggerFamily()
    for line in (
        "Epoch: [115]  [1298/1299]  eta: 1 day, 0:00:07  lr: 0.001435  loss: 6.5993 (6.5971)  "
        "**grad_norm: 0.3922 (0.7)**  max mem: 19152",
        "Averaged stats: lr: 0.001435  loss: 6.5993 (6.5925)  eta: 0:01:02  loss_scale: 8192.0 (8646.06)",
        "Test:  [ 0/50]  eta: 0:01:23  loss: 0.4512 (0.4512)  acc: 90.6250 (90.6250)",
    ):
        lines = _variants(line, 12, line)
        _assert_reads_like_parse(family, lines)
        assert _read_by_column(family, lines) is not None, line
    # A key with a digit ("acc1") names its metric per line: read per line only.
    line = "Test:  [ 0/50]  eta: 0:01:23  loss: 0.4512 (0.4512)  acc1: 90.6250 (90.6250)"
    _assert_reads_like_parse(family, _variants(line, 12, line))
    assert family.columns_for_shape(line) is None
    # A value only parse_number reads (a "%"): read per line only.
    line = "Epoch: [1]  [10/99]  lr: 0.5  acc: 12.5%"
    _assert_reads_like_parse(family, _variants(line, 12, line))
    assert family.columns_for_shape(line) is None
    assert family.for_shape("Epoch: [0][415/1736]\t Loss 0.5844") is never_reads


def test_mm_keys_with_a_digit_are_named_once_per_block_where_they_agree() -> None:
    line = (
        "2025-04-18 21:58:31,047 - mmdet - INFO - Iter [10100/316440]\tlr: 3.990e-04, eta: 7 days, 4:23:57, "
        "time: 2.125, frame_0_loss_cls: 0.0000, frame_0_d0.loss_bbox: 0.0000, loss: nan"
    )
    family = MmcvFamily()
    # Other values, the keys' digits kept.
    rng = random.Random("mmcv")
    same_keys = [
        "2025-04-18 21:58:31,047 - mmdet - INFO - Iter [{}/316440]\tlr: {}e-04, eta: 7 days, 4:23:{}, "
        "time: {}, frame_0_loss_cls: {}, frame_0_d0.loss_bbox: {}, loss: nan".format(
            rng.randrange(10000, 99999),
            f"{rng.random() * 9:.3f}",
            rng.randrange(10, 59),
            f"{rng.random() * 9:.3f}",
            f"{rng.random() * 9:.4f}",
            f"{rng.random() * 9:.4f}",
        )
        for _ in range(10)
    ]
    _assert_reads_like_parse(family, [line, *same_keys])
    columns = _read_by_column(family, [line, *same_keys])
    assert columns is not None
    assert columns.names == ("lr", "eta_s", "time", "frame_0_loss_cls", "frame_0_d0_loss_bbox", "loss")
    assert columns.timestamps is not None
    other_keys = _variants(line, 10, "mmcv-keys")
    _assert_reads_like_parse(family, other_keys)
    assert _read_by_column(family, other_keys) is None  # the keys' names differ between lines


def test_mmengine_lines_are_read_by_column() -> None:
    family = MmengineFamily()
    line = (
        "Epoch(train) [1][200/735]  lr: 1.9870e-04  eta: 1 day, 2:46:39  time: 2.8906  loss: 2.7522  "
        "grad_norm: nan"
    )
    lines = _variants(line, 12, line)
    _assert_reads_like_parse(family, lines)
    assert _read_by_column(family, lines) is not None
    line = "Iter(val) [100/20000]  time: 0.5  loss: 1.2"
    assert _read_by_column(family, _variants(line, 12, line)) is not None


def test_nan_metrics_are_read_by_column() -> None:
    hf = "{'loss': 0.2051, 'grad_norm': nan, 'learning_rate': 9.774074342405685e-06, 'epoch': 0.53}"
    megatron = (
        " iteration       20/    1000 | consumed samples:          320 | learning rate: 2.999E-04 | "
        "grad norm: nan | lm loss: 1.07E+01 |"
    )
    for family, line in ((HfTrainerFamily(), hf), (MegatronFamily(), megatron)):
        columns = _read_by_column(family, _variants(line, 12, line))
        assert columns is not None, line
        assert all(map(math.isnan, columns.values[columns.names.index("grad_norm")])), line
    # A step or an epoch stays plain digits.
    assert HfTrainerFamily().columns_for_shape("{'loss': 0.2, 'epoch': nan}") is None


def test_megatron_validation_and_checkpoint_lines_are_read_per_shape() -> None:
    family = MegatronFamily()
    for line in (
        " [2025-04-13 23:41:20] validation loss at iteration 50 | lm loss value: 8.889540E+00 | lm loss PPL: "
        "7.255679E+03 |",
        " validation loss at the end of training for test data | lm loss value: 8.8E+00 |",
        " validation loss at iteration 50 on validation set | lm loss value: n/a |",
        "saving checkpoint at iteration     100 to /ckpt in torch_dist format",
        "  successfully saved checkpoint from iteration     100 to /ckpt [ t 1/1, p 1/1 ]",
    ):
        _assert_reads_like_parse(family, _variants(line, 12, line))
    assert family.for_shape("tokens per iteration will be: 4096") is never_reads
    line = " validation loss at iteration 50 on val2 set | lm loss value: 8.8E+00 |"
    assert family.for_shape(line) == family.parse


def test_generic_progress_lines_are_read_per_shape_with_the_block_they_open() -> None:
    lines = [
        "Epoch: [0][415/1736]\t Loss 0.5844 MAE 0.6568 RMSE 0.7644",
        "epoch=3 step=1,200 loss=0.25 lr=1e-4 acc=nan",
        "[ignite][INFO] - Engine run starting with max_epochs=12.",
        "İstanbul epoch 3 iter 4/10 loss: 2.5",  # lower() makes the line longer: counters read in it
        "Epoch 14 - Evaluation time (seconds): 7.51 - Vis metrics:",
        "    abs_rel: 0.08523062198386379",
        "    a1: 0.9",
        "Dumping profiler traces at step 200",
        "    abs_rel: 0.5",
    ]
    by_reader = GenericFamily()
    by_parse = GenericFamily()
    rng = random.Random("generic")
    readers: dict[str, Callable[[str], Hit | None]] = {}
    for line in [*lines, *lines, *(_variants(line, 1, str(rng.random()))[1] for line in lines)]:
        shape = "".join("0" if char.isdigit() else char for char in line)
        reader = readers.setdefault(shape, by_reader.for_shape(line))
        assert repr(reader(line)) == repr(by_parse.parse(line)), line
    reader = GenericFamily().for_shape(lines[0])
    assert isinstance(reader, partial)
    assert GenericFamily().for_shape(lines[-2]).__name__ == "_block_line_only"
