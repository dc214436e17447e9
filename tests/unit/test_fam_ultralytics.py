"""Ultralytics YOLO epoch tables, on the real logs in tests/fixtures/logs/ultralytics/."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_ultralytics import FAMILIES, UltralyticsFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def physical_lines(relative: str) -> list[str]:
    """The fixture's lines as a log reader sees them: split on newline only, \\r kept."""
    with (LOGS / relative).open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = handle.read().split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def parse_fixture(relative: str) -> tuple[list[LogRecord], list[LogEvent], str | None]:
    return parse_lines(physical_lines(relative))


def test_families_export() -> None:
    assert list(FAMILIES) == [UltralyticsFamily]
    assert UltralyticsFamily.name == "ultralytics"


def test_yolov8_row_and_validation_row() -> None:
    lines = physical_lines("ultralytics/yolov8_epoch_table_gpu_mem_val_all_row.txt")
    family = UltralyticsFamily()
    header = family.parse(lines[0])
    assert header is not None and header.is_empty()
    row = family.parse(lines[1])
    assert row is not None
    assert (row.epoch, row.total_epochs, row.batch, row.batches_per_epoch) == (70.0, 1000, 16, 16)
    assert row.metrics["gpu_mem"] == 6.73
    assert row.metrics["box_loss"] == 1.081
    assert row.metrics["cls_loss"] == 0.4706
    assert row.metrics["dfl_loss"] == 1.084
    assert abs(row.metrics["loss"] - (1.081 + 0.4706 + 1.084)) < 1e-9
    assert "instances" not in row.metrics and "size" not in row.metrics
    val_header = family.parse(lines[2])
    assert val_header is not None and val_header.is_empty()
    val = family.parse(lines[3])
    assert val is not None
    assert (val.epoch, val.total_epochs) == (70.0, 1000)
    assert val.metrics == {"precision": 0.989, "recall": 0.99, "map50": 0.993, "map50_95": 0.681}


def test_yolov8_whole_file() -> None:
    records, _, detected = parse_fixture("ultralytics/yolov8_epoch_table_gpu_mem_val_all_row.txt")
    assert detected == "ultralytics"
    assert [r.line for r in records] == [2, 4, 7, 9, 12, 14]
    assert records[-1].metrics["map50_95"] == 0.734
    assert (records[-2].epoch, records[-2].metrics["box_loss"]) == (72.0, 1.096)


def test_yolov5_columns_and_pasted_text_in_header() -> None:
    records, _, detected = parse_fixture("ultralytics/yolov5_legacy_epoch_gpu_mem_targets.txt")
    assert detected == "ultralytics"
    row, val = records
    assert (row.epoch, row.total_epochs, row.batch, row.batches_per_epoch) == (5.0, 249, 211, 211)
    assert row.metrics == {
        "gpu_mem": 0.868,
        "box_loss": 0.06393,
        "obj_loss": 0.01588,
        "cls_loss": 0.009617,
        "loss": 0.08943,
    }
    # "Targetsbox is" pushed the header's left columns out of line: read from the right, metrics still fit.
    assert val.metrics == {"precision": 0.23, "recall": 0.328, "map50": 0.203, "map50_95": 0.0525}


def test_narrow_terminal_cut_bars_and_headers() -> None:
    records, _, _ = parse_fixture("ultralytics/yolo_tuner_narrow_terminal_truncated_bars.txt")
    # Line 1 is an "all" row before any header: not read.
    assert [r.line for r in records] == [4, 6, 9, 11, 14, 16]
    row = records[0]
    assert (row.epoch, row.total_epochs, row.batch) == (13.0, 30, None)
    assert row.metrics["cls_loss"] == 21.96
    assert records[2].metrics["gpu_mem"] == 13.0
    # "mAP50-" was cut off by the terminal: that column is left out.
    assert records[1].metrics == {"precision": 0.0, "recall": 0.0, "map50": 0.0}


def test_segmentation_header_prefixes_mask_metrics() -> None:
    family = UltralyticsFamily()
    family.parse("      Epoch    GPU_mem   box_loss   seg_loss   cls_loss   dfl_loss  Instances       Size")
    family.parse(
        "       1/10      3.21G      1.234      2.345     0.9876      1.111         42        640: 100%"
    )
    family.parse(
        "                 Class     Images  Instances      Box(P          R      mAP50  mAP50-95)"
        "     Mask(P          R      mAP50  mAP50-95): 100%|███| 4/4 [00:01<00:00,  3.1it/s]"
    )
    hit = family.parse(
        "                   all        128        929      0.701      0.602      0.672      0.481"
        "      0.690      0.590      0.650      0.401"
    )
    assert hit is not None
    assert hit.metrics == {
        "precision": 0.701,
        "recall": 0.602,
        "map50": 0.672,
        "map50_95": 0.481,
        "mask_precision": 0.69,
        "mask_recall": 0.59,
        "mask_map50": 0.65,
        "mask_map50_95": 0.401,
    }
    assert hit.epoch == 1.0


def test_rows_before_a_header_are_not_read() -> None:
    assert (
        UltralyticsFamily().parse(
            "     70/1000      6.73G      1.081     0.4706      1.084         10        640:"
        )
        is None
    )


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    family = UltralyticsFamily()
    family.parse("Epoch GPU_mem " + text)
    family.parse(" 3/9 " + text)
    family.parse("Class Images " + text)
    family.parse("all " + text)
    family.parse(text)


def test_alternating_cut_and_whole_validation_headers_keep_their_own_names() -> None:
    # A narrow terminal prints the header cut off, then whole with its bar: the names of each print are
    # remembered once (fam_ultralytics' header caches) and stay what that print names.
    cut = "          Class     Images  Instances      Box(P          R      mAP50  mAP50-"
    whole = cut + "95): 100%|█| 8/8"
    row = "            all        722       1444      0.991      0.997      0.994      0.716"
    family = UltralyticsFamily()
    family.parse("      Epoch    GPU_mem   box_loss   cls_loss   dfl_loss  Instances       Size")
    family.parse("    70/1000      6.73G      1.081     0.4706      1.084        10     640: 100%|█| 1/16")
    seen: list[dict[str, float]] = []
    for header in (cut, whole, cut, whole):
        family.parse(header)
        hit = family.parse(row)
        assert hit is not None
        seen.append(hit.metrics)
    # The cut column's value is no metric; the row is read right-aligned.
    assert seen[0] == seen[2] == {"map50": 0.994, "recall": 0.997, "precision": 0.991}
    assert seen[1] == seen[3] == {"map50_95": 0.716, "map50": 0.994, "recall": 0.997, "precision": 0.991}
