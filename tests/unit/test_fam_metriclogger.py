"""torchvision-style MetricLogger family on the real logs in tests/fixtures/logs/timm_deit/."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.family_helpers import engine_cleaned, family_hits, physical_lines, read_fixture_lines
from trainmon_tui.parsers.trainlog.base import Hit
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.parsers.trainlog.fam_metriclogger import FAMILIES, MetricLoggerFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
BEIT_LOG = "beit_metriclogger_epoch_eta_smoothed_values.txt"
ACCESSORY_LOG = "llama_accessory_metriclogger_time_prefix_closs.txt"


def fixture_lines(name: str) -> list[str]:
    return read_fixture_lines("timm_deit", name)


def hits_by_line(lines: list[str]) -> dict[int, Hit]:
    return family_hits(MetricLoggerFamily, lines)


def test_module_exports_the_family() -> None:
    assert (MetricLoggerFamily,) == FAMILIES
    assert MetricLoggerFamily.name == "metriclogger"


def test_beit_last_batch_of_epoch_115() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(BEIT_LOG)])
    assert sorted(hits) == [1, 3]
    hit = hits[1]
    # "Epoch: [115]  [1298/1299]" counts from 0: the 116th epoch, its last (1299th) batch done.
    assert (hit.epoch, hit.batch, hit.batches_per_epoch) == (116.0, 1299, 1299)
    assert hit.metrics == {
        "eta_s": 0.0,
        "lr": 0.001435,
        "min_lr": 0.001435,
        "mlm_acc": 0.0333,
        "loss": 6.5993,
        "loss_scale": 8192.0,
        "weight_decay": 0.05,
        # Pasted inside markdown "**...**"; the current value, not the NaN running average.
        "grad_norm": 0.3922,
        "time": 0.4944,
        "data": 0.0001,
        "max_mem": 19152.0,
    }


def test_beit_averaged_stats_read_the_epoch_means() -> None:
    hit = hits_by_line(fixture_lines(BEIT_LOG))[3]
    assert (hit.epoch, hit.batch, hit.step) == (None, None, None)
    assert hit.metrics["avg_loss"] == 6.5925
    assert hit.metrics["avg_mlm_acc"] == 0.0345
    assert hit.metrics["avg_loss_scale"] == 8646.06
    assert math.isnan(hit.metrics["avg_grad_norm"])
    assert "loss" not in hit.metrics


def test_llama_accessory_time_prefix_and_closs() -> None:
    lines = fixture_lines(ACCESSORY_LOG)
    # "[05:50:11.624892]" is a time without a date: the engine leaves it and no timestamp is made up.
    assert engine_cleaned(lines[0]) == lines[0]
    hits = hits_by_line([engine_cleaned(line) for line in lines])
    assert sorted(hits) == list(range(1, 10))
    assert [hit.batch for hit in hits.values()] == [341, 351, 361, 371, 381, 391, 401, 411, 421]
    last = hits[9]
    assert (last.epoch, last.batches_per_epoch, last.timestamp) == (3.0, 1504, None)
    assert last.metrics == {
        "lr": 0.000009,
        "loss": 0.9079,
        "grad_norm": 0.3692,
        "time": 4.6004,
        "data": 0.0002,
        "max_mem": 51710.0,
    }


def test_evaluation_lines_give_val_metrics_without_progress() -> None:
    # Shapes printed by DeiT/MAE's evaluate(): the MetricLogger "Test:" header and the final summary.
    family = MetricLoggerFamily()
    progress = family.parse(
        "Test:  [ 0/50]  eta: 0:01:23  loss: 0.4512 (0.4512)  acc1: 90.6250 (90.6250)  time: 1.6600  "
        "data: 1.2000  max mem: 4210"
    )
    assert progress == Hit(
        metrics={
            "val_eta_s": 83.0,
            "val_loss": 0.4512,
            "val_acc1": 90.625,
            "val_time": 1.66,
            "val_data": 1.2,
            "val_max_mem": 4210.0,
        }
    )
    summary = family.parse("* Acc@1 81.234 Acc@5 95.123 loss 0.812")
    assert summary == Hit(metrics={"val_acc_1": 81.234, "val_acc_5": 95.123, "val_loss": 0.812})


def test_other_frameworks_lines_are_not_claimed() -> None:
    own = LOGS / "timm_deit"
    for path in sorted(LOGS.glob("*/*.txt")):
        if path.parent == own:
            continue
        family = MetricLoggerFamily()
        for line in path.read_text(encoding="utf-8").splitlines():
            assert family.parse(engine_cleaned(line)) is None, (path.name, line)


def test_through_the_log_engine() -> None:
    # The engine removes the "[05:50:11.624892]" time prefix (no date, so no timestamp) before the family
    # reads the line.
    parser = LogParser(families=(MetricLoggerFamily,))
    records = [
        record
        for line in physical_lines(LOGS / "timm_deit" / ACCESSORY_LOG)
        for record in parser.feed(line)[0]
    ]
    assert parser.format == "metriclogger"
    assert [record.batch for record in records] == [341, 351, 361, 371, 381, 391, 401, 411, 421]
    assert {record.epoch for record in records} == {3.0}
    assert records[-1].metrics["loss"] == 0.9079
    assert records[-1].timestamp is None


def test_absurdly_long_numbers_are_not_read() -> None:
    # Python refuses int() of more than 4300 digits; such a line is simply not a progress line.
    assert MetricLoggerFamily().parse("Epoch: [" + "9" * 5000 + "]  [1/2]  loss: 1.0") is None


@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    MetricLoggerFamily().parse(text)


@given(
    st.sampled_from(
        ["Epoch: [1]  [", "Averaged stats: ", "Test:  [ 1/2]  ", "* Acc@1 ", "[00:00:00.1] Epoch: ["]
    ),
    st.text(alphabet="0123456789 ()*:./[]etalosn_dy,", max_size=60),
)
def test_parse_never_raises_on_near_miss_text(head: str, tail: str) -> None:
    hit = MetricLoggerFamily().parse(head + tail)
    assert hit is None or not hit.is_empty()
