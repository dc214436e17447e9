"""fairseq line family on the real logs in tests/fixtures/logs/fairseq/."""

from __future__ import annotations

import calendar
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.family_helpers import engine_cleaned, family_hits, physical_lines, read_fixture_lines
from trainmon_tui.parsers.trainlog.base import Hit
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_fairseq import FAMILIES, FairseqFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
MODERN_LOG = "fairseq_modern_train_inner_info_lines.txt"
LEGACY_SUMMARY_LOG = "fairseq_legacy_epoch_summary_and_inner.txt"
LEGACY_PIPE_LOG = "fairseq_legacy_pipe_epoch_updates_valid.txt"
JSON_LOG = "fairseq_json_log_format_epoch_lines.txt"
STARTUP_LOG = "fairseq_info_startup_and_overflow_notes.txt"


def fixture_lines(name: str) -> list[str]:
    return read_fixture_lines("fairseq", name)


def hits_by_line(lines: list[str]) -> dict[int, Hit]:
    return family_hits(FairseqFamily, lines)


def test_module_exports_the_family() -> None:
    assert (FairseqFamily,) == FAMILIES
    assert FairseqFamily.name == "fairseq"


def test_modern_train_inner_lines() -> None:
    lines = [engine_cleaned(line) for line in fixture_lines(MODERN_LOG)]
    assert lines[0].startswith("| INFO | train_inner | epoch 001:")
    hits = hits_by_line(lines)
    assert [hit.step for hit in hits.values()] == [2800, 2900, 3000, 3100, 3200]
    last = hits[5]
    assert (last.epoch, last.batch, last.batches_per_epoch) == (1.0, 3200, 160368)
    assert last.metrics == {
        "loss": 10.278,
        "ppl": 1241.54,
        "wps": 16.9,
        "ups": 0.04,
        "wpb": 469.0,
        "bsz": 8.0,
        "lr": 3.2e-05,
        "grad_norm": 3.02,
        "train_wall": 13.0,
        "wall": 1349.0,
    }
    assert last.timestamp is None


def test_modern_line_timestamp_read_when_the_engine_left_it() -> None:
    hit = FairseqFamily().parse(fixture_lines(MODERN_LOG)[0])
    assert hit is not None
    assert hit.timestamp == calendar.timegm((2020, 7, 17, 7, 11, 2, 0, 0, 0))
    assert (hit.step, hit.metrics["loss"]) == (2800, 9.255)


def test_legacy_epoch_summary_valid_and_inner_lines() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(LEGACY_SUMMARY_LOG)])
    assert sorted(hits) == list(range(1, 8))
    summary = hits[1]
    assert (summary.epoch, summary.step, summary.batch) == (8.0, 21896, None)
    assert summary.metrics["loss"] == 6.326
    assert summary.metrics["grad_norm"] == 1.201
    assert summary.metrics["clip"] == 0.0
    assert summary.metrics["train_wall"] == 4309.0
    assert hits[2] == Hit(
        step=21896,
        epoch=8.0,
        metrics={"val_loss": 6.43844, "valid_nll_loss": 5.23288, "valid_ppl": 37.61, "valid_best": 6.43844},
    )
    last = hits[7]
    assert (last.epoch, last.batch, last.batches_per_epoch, last.step) == (10.0, 1000, 2737, 25634)
    assert last.metrics["loss"] == 6.144
    assert last.metrics["lr"] == 0.000197511


def test_legacy_pipe_log_with_mid_epoch_validation() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(LEGACY_PIPE_LOG)])
    assert sorted(hits) == list(range(1, 7))
    # The batch counter (450) runs ahead of num_updates (445): update-freq and overflow skips.
    assert (hits[1].batch, hits[1].step) == (450, 445)
    valid = hits[5]
    assert valid == Hit(
        step=600, epoch=1.0, metrics={"val_loss": 8.11425, "valid_nll_loss": 6.8834, "valid_ppl": 118.06}
    )
    last = hits[6]
    assert (last.epoch, last.batch, last.batches_per_epoch, last.step) == (1.0, 650, 1891, 645)
    assert last.metrics["loss"] == 10.902
    assert last.metrics["lr"] == 0.000129084
    assert last.metrics["loss_scale"] == 2.0


def test_json_log_format_with_string_numbers() -> None:
    hits = hits_by_line(fixture_lines(JSON_LOG))
    assert sorted(hits) == list(range(1, 8))
    assert hits[1] == Hit(
        epoch=24.0,
        metrics={"val_loss": 3.110669136914194, "valid_nll_loss": 1.3210852246007831, "valid_ppl": 2.5},
    )
    train = hits[6]
    assert (train.epoch, train.step) == (27.0, 58049)
    assert train.metrics["loss"] == 3.092
    assert train.metrics["grad_norm"] == 0.188
    assert train.metrics["clip"] == 100.0
    assert train.metrics["lr"] == 0.0001837514032631448
    assert train.metrics["wps"] == 1658188.0
    assert "epoch" not in train.metrics
    assert "num_updates" not in train.metrics
    assert hits[7].metrics["val_loss"] == 3.105788957031695


def test_startup_lines_are_not_progress_but_overflow_notes_give_the_loss_scale() -> None:
    raw = fixture_lines(STARTUP_LOG)
    hits = hits_by_line([engine_cleaned(line) for line in raw])
    # "loading train data for epoch 0" and the other startup lines are not read.
    assert sorted(hits) == [12, 13]
    assert hits[12] == Hit(metrics={"loss_scale": 64.0})
    assert hits[13] == Hit(metrics={"loss_scale": 32.0})
    with_stamp = FairseqFamily().parse(raw[12])
    assert with_stamp is not None
    assert with_stamp.timestamp == calendar.timegm((2020, 4, 5, 18, 49, 4, 0, 0, 0))


def test_modern_valid_summary_prefixes_its_bare_keys() -> None:
    # The shape of fairseq's SimpleProgressBar.print under the "valid" logger: keys are not prefixed.
    hit = FairseqFamily().parse(
        "| INFO | valid | epoch 001 | valid on 'valid' subset | loss 7.927 | nll_loss 6.509 | ppl 91.06 "
        "| wps 11452.2 | wpb 2133.6 | bsz 85.6 | num_updates 1000 | best_loss 7.927"
    )
    assert hit is not None
    assert hit.step == 1000
    assert hit.metrics["val_loss"] == 7.927
    assert hit.metrics["valid_nll_loss"] == 6.509
    assert hit.metrics["valid_best_loss"] == 7.927
    assert "loss" not in hit.metrics


def test_hydra_prefix_and_tagged_json_summary() -> None:
    inner = FairseqFamily().parse(
        "[2021-03-03 11:30:01,123][train_inner][INFO] - epoch 002:    100 / 1234 loss=5.5, num_updates=1334"
    )
    assert inner == Hit(
        step=1334,
        epoch=2.0,
        batch=100,
        batches_per_epoch=1234,
        metrics={"loss": 5.5},
        timestamp=calendar.timegm((2021, 3, 3, 11, 30, 1, 0, 0, 0)) + 0.123,
    )
    summary = FairseqFamily().parse(
        '| INFO | train | {"epoch": 2, "train_loss": "5.4", "train_train_wall": "812", '
        '"train_num_updates": "2468"}'
    )
    assert summary is not None
    assert (summary.epoch, summary.step) == (2.0, 2468)
    assert summary.metrics == {"loss": 5.4, "train_wall": 812.0}


def test_other_frameworks_lines_are_not_claimed() -> None:
    own = LOGS / "fairseq"
    for path in sorted(LOGS.glob("*/*.txt")):
        if path.parent == own:
            continue
        family = FairseqFamily()
        for line in path.read_text(encoding="utf-8").splitlines():
            assert family.parse(engine_cleaned(line)) is None, (path.name, line)


def test_through_the_log_engine() -> None:
    records, _, log_format = parse_lines(physical_lines(LOGS / "fairseq" / MODERN_LOG))
    assert log_format == "fairseq"
    assert [record.step for record in records] == [2800, 2900, 3000, 3100, 3200]
    assert records[-1].timestamp == calendar.timegm((2020, 7, 17, 7, 12, 55, 0, 0, 0))
    assert (records[-1].batch, records[-1].batches_per_epoch) == (3200, 160368)
    records, _, log_format = parse_lines(physical_lines(LOGS / "fairseq" / JSON_LOG))
    assert log_format == "fairseq"
    assert len(records) == 7
    assert (records[-2].epoch, records[-2].step, records[-2].metrics["loss"]) == (27.0, 58049, 3.092)


def test_json_integer_too_large_for_a_float_is_skipped() -> None:
    hit = FairseqFamily().parse('{"epoch": 1' + "0" * 400 + ', "loss": "2.5"}')
    assert hit == Hit(metrics={"loss": 2.5})


@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    FairseqFamily().parse(text)


@given(
    st.sampled_from(
        [
            "| epoch 001:  ",
            "| INFO | valid | epoch 002 | ",
            '{"epoch": ',
            "[2021-13-40 11:30:01,123][train][INFO] - epoch 1 | ",
            "| overflow detected, setting loss scale to: ",
        ]
    ),
    st.text(alphabet='0123456789 |=,./:"{}[]-eEnaNlosvalid_', max_size=60),
)
def test_parse_never_raises_on_near_miss_text(head: str, tail: str) -> None:
    hit = FairseqFamily().parse(head + tail)
    assert hit is None or not hit.is_empty()
