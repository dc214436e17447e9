"""MMEngine and legacy mmcv line families on the real logs in tests/fixtures/logs/mmengine/."""

from __future__ import annotations

import calendar
import math
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.parsers.trainlog.base import Hit, LineFamily
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_mmengine import FAMILIES, MmcvFamily, MmengineFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
XTUNER_LOG = "mmengine_xtuner_epoch_train_lr_eta_gradnorm_nan.txt"
MMOCR_LOG = "mmcv_legacy_mmocr_epoch_tab_eta_days.txt"
MMDET_LOG = "mmcv_legacy_mmdet_iter_based_loss_nan.txt"

# What the engine removes before a family sees a line: a [rankN]: prefix and a timestamp at the very start.
_ENGINE_PREFIX = re.compile(r"(?:\[rank\d+\]:)?(?:\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\]?\s*)?")


def fixture_lines(name: str) -> list[str]:
    return (LOGS / "mmengine" / name).read_text(encoding="utf-8").splitlines()


def engine_cleaned(line: str) -> str:
    prefix = _ENGINE_PREFIX.match(line)
    return line[prefix.end() :] if prefix else line


def physical_lines(path: Path) -> list[str]:
    """The file's lines as the engine reads them: split on newline only."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def hits_by_line(family: LineFamily, lines: list[str]) -> dict[int, Hit]:
    """Feed every line to one family instance; 1-based line number -> Hit. A hit must pass the gate."""
    found: dict[int, Hit] = {}
    for number, line in enumerate(lines, start=1):
        hit = family.parse(line)
        if hit is not None:
            assert any(token in line for token in family.gate), line
            found[number] = hit
    return found


def test_module_exports_both_families() -> None:
    assert (MmengineFamily, MmcvFamily) == FAMILIES
    assert (MmengineFamily.name, MmcvFamily.name) == ("mmengine", "mmcv")


def test_xtuner_epoch_lines_give_epoch_batch_and_nan_grad_norm() -> None:
    lines = [engine_cleaned(line) for line in fixture_lines(XTUNER_LOG)]
    hits = hits_by_line(MmengineFamily(), lines)
    assert [(hit.epoch, hit.batch, hit.batches_per_epoch) for hit in hits.values()] == [
        (1.0, batch, 735) for batch in (200, 210, 220, 230, 240, 250)
    ]
    assert hits[1].metrics == {
        "lr": 1.9870e-04,
        "eta_s": 2 * 3600 + 46 * 60 + 39,
        "time": 2.8906,
        "data_time": 0.0042,
        "memory": 10762.0,
        "loss": 2.7522,
        "grad_norm": 3.0608,
    }
    last = hits[6]
    assert last.metrics["loss"] == 2.4566
    assert math.isnan(last.metrics["grad_norm"])
    # "10/30 22:18:02" has no year: no timestamp is made up.
    assert last.timestamp is None
    assert last.step is None


def test_mmocr_legacy_epoch_lines_with_days_in_eta() -> None:
    raw = fixture_lines(MMOCR_LOG)
    hits = hits_by_line(MmcvFamily(), [engine_cleaned(line) for line in raw])
    assert sorted(hits) == [1, 2]
    first = hits[1]
    assert (first.epoch, first.batch, first.batches_per_epoch) == (1.0, 100, 62598)
    assert first.metrics["eta_s"] == 6 * 86400 + 15 * 3600 + 22 * 60 + 46
    assert math.isnan(first.metrics["grad_norm"])
    last = hits[2]
    assert (last.epoch, last.batch, last.batches_per_epoch) == (1.0, 200, 62598)
    assert last.metrics == {
        "lr": 1.000e-03,
        "eta_s": 7 * 86400 + 15 * 3600 + 55 * 60 + 58,
        "time": 0.705,
        "data_time": 0.002,
        "memory": 7239.0,
        "loss_ce": 0.5921,
        "horizon_bbox_loss": 0.2210,
        "vertical_bbox_loss": 0.1055,
        "loss": 0.9186,
        "grad_norm": 3.9772,
    }
    with_stamp = MmcvFamily().parse(raw[1])
    assert with_stamp is not None
    assert with_stamp.timestamp == calendar.timegm((2021, 11, 22, 1, 32, 34, 0, 0, 0)) + 0.502
    assert with_stamp.metrics == last.metrics


def test_mmdet_legacy_iter_line_with_nan_loss() -> None:
    hits = hits_by_line(MmcvFamily(), [engine_cleaned(line) for line in fixture_lines(MMDET_LOG)])
    hit = hits[1]
    assert (hit.step, hit.total_steps, hit.epoch, hit.batch) == (10100, 316440, None, None)
    assert math.isnan(hit.metrics["loss"])
    assert math.isnan(hit.metrics["grad_norm"])
    assert math.isnan(hit.metrics["frame_0_enc_loss_cls"])
    assert hit.metrics["frame_0_d0_loss_cls"] == 0.0
    assert hit.metrics["lr"] == 3.990e-04
    assert hit.metrics["eta_s"] == 7 * 86400 + 4 * 3600 + 23 * 60 + 57
    # Every one of the 36 "key: value" pairs is kept; the dotted keys stay distinct after snake_case.
    assert len(hit.metrics) == 36


def test_the_two_layouts_do_not_read_each_other() -> None:
    for line in fixture_lines(XTUNER_LOG):
        assert MmcvFamily().parse(line) is None, line
    for line in fixture_lines(MMOCR_LOG) + fixture_lines(MMDET_LOG):
        assert MmengineFamily().parse(line) is None, line


def test_mmengine_iteration_based_and_validation_lines() -> None:
    # Shapes from MMEngine's LogProcessor: an iteration-based run (eta past a day) and a validation summary.
    family = MmengineFamily()
    train = family.parse(
        "Iter(train) [  100/20000]  lr: 1.0000e-04  eta: 1 day, 2:03:04  time: 0.5012  memory: 3000  "
        "loss: 1.25"
    )
    assert train == Hit(
        step=100,
        total_steps=20000,
        metrics={"lr": 1e-04, "eta_s": 93784.0, "time": 0.5012, "memory": 3000.0, "loss": 1.25},
    )
    val = family.parse("Epoch(val) [1][500/500]    coco/bbox_mAP: 0.4170  data_time: 0.0031  time: 0.0428")
    assert val == Hit(metrics={"val_coco_bbox_m_ap": 0.417, "val_data_time": 0.0031, "val_time": 0.0428})


def test_mmcv_validation_line_skips_non_numbers() -> None:
    # Shape of mmcv 1.x TextLoggerHook in val mode: "Epoch(val) [epoch][iters]<TAB>...".
    hit = MmcvFamily().parse(
        "Epoch(val) [12][625]\tbbox_mAP: 0.3740, bbox_mAP_50: 0.5860, bbox_mAP_copypaste: 0.374 0.586"
    )
    assert hit == Hit(metrics={"val_bbox_m_ap": 0.374, "val_bbox_m_ap_50": 0.586})


def test_other_frameworks_lines_are_not_claimed() -> None:
    own = LOGS / "mmengine"
    for path in sorted(LOGS.glob("*/*.txt")):
        if path.parent == own:
            continue
        families: list[LineFamily] = [MmengineFamily(), MmcvFamily()]
        for line in path.read_text(encoding="utf-8").splitlines():
            for family in families:
                assert family.parse(engine_cleaned(line)) is None, (family.name, path.name, line)


def test_through_the_log_engine() -> None:
    records, _, log_format = parse_lines(physical_lines(LOGS / "mmengine" / XTUNER_LOG))
    assert log_format == "mmengine"
    assert [record.batch for record in records] == [200, 210, 220, 230, 240, 250]
    assert records[-1].metrics["loss"] == 2.4566
    records, _, log_format = parse_lines(physical_lines(LOGS / "mmengine" / MMDET_LOG))
    assert log_format == "mmcv"
    assert (records[0].step, records[0].total_steps) == (10100, 316440)
    assert records[0].timestamp == calendar.timegm((2025, 4, 18, 21, 58, 31, 0, 0, 0)) + 0.047
    assert math.isnan(records[0].metrics["loss"])


@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    MmengineFamily().parse(text)
    MmcvFamily().parse(text)


@given(
    st.sampled_from(
        [
            "Epoch(train) [1][",
            "Iter(val) [",
            "Epoch [2][3/4]\t",
            "2021-19-42 01:32:34,502 - mmocr - INFO - Iter [5/6]\t",
            "Epoch(test) [1][2/3]  eta: ",
        ]
    ),
    st.text(alphabet="0123456789 ,.:/[]()\tdaysetalrosn_", max_size=60),
)
def test_parse_never_raises_on_near_miss_text(head: str, tail: str) -> None:
    families: list[LineFamily] = [MmengineFamily(), MmcvFamily()]
    for family in families:
        hit = family.parse(head + tail)
        assert hit is None or not hit.is_empty()
