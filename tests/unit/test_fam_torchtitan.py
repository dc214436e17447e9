"""torchtitan line family on the real logs in tests/fixtures/logs/torchtitan/."""

from __future__ import annotations

import calendar
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.family_helpers import engine_cleaned, family_hits, physical_lines, read_fixture_lines
from trainmon_tui.parsers.trainlog.base import Hit
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_torchtitan import FAMILIES, TorchTitanFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
DUPLICATED_RANKS_LOG = "torchtitan_step_loss_memory_tps_mfu_duplicated_ranks.txt"
RANK0_LOG = "torchtitan_rank0_prefix_step_lines.txt"
GC_LOG = "torchtitan_rank0_gc_profiler_lines_interleaved.txt"


def fixture_lines(name: str) -> list[str]:
    return read_fixture_lines("torchtitan", name)


def hits_by_line(lines: list[str]) -> dict[int, Hit]:
    return family_hits(TorchTitanFamily, lines)


def test_module_exports_the_family() -> None:
    assert (TorchTitanFamily,) == FAMILIES
    assert TorchTitanFamily.name == "torchtitan"


def test_step_line_with_thousands_separator_and_memory_percent() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(DUPLICATED_RANKS_LOG)])
    assert sorted(hits) == list(range(1, 9))
    first = hits[1]
    assert first.step == 4
    assert first.metrics == {
        "loss": 7.62585,
        "grad_norm": 26.6250,
        "memory_gib": 66.91,
        "memory_pct": 37.51,
        "tps": 10050.0,
        "tflops": 314.71,
        "mfu": 13.99,
    }
    assert first.timestamp == calendar.timegm((2026, 2, 24, 19, 46, 17, 0, 0, 0)) + 0.508


def test_duplicated_rank_lines_are_each_read_as_printed() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(DUPLICATED_RANKS_LOG)])
    assert [hit.step for hit in hits.values()] == [4, 4, 4, 4, 4, 4, 4, 5]
    # The ranks differ only in throughput; no rank prefix tells them apart.
    assert hits[5].metrics["tps"] == 10049.0
    assert hits[5].metrics["tflops"] == 314.68
    assert {hit.rank for hit in hits.values()} == {None}
    last = hits[8]
    assert (last.step, last.metrics["loss"], last.metrics["grad_norm"]) == (5, 7.07623, 46.5)


def test_rank0_prefixed_lines_after_engine_cleaning() -> None:
    raw = fixture_lines(RANK0_LOG)
    assert raw[0].startswith("[rank0]:[titan] ")
    hits = hits_by_line([engine_cleaned(line) for line in raw])
    assert [hit.step for hit in hits.values()] == list(range(14, 22))
    assert hits[8].metrics == {
        "loss": 3.00867,
        "grad_norm": 0.6348,
        "memory_gib": 9.46,
        "memory_pct": 64.99,
        "tps": 7304.0,
        "tflops": 0.52,
        "mfu": 0.17,
    }


def test_older_field_set_and_interleaved_info_lines() -> None:
    hits = hits_by_line([engine_cleaned(line) for line in fixture_lines(GC_LOG)])
    # GC and profiler lines share the logger prefix but are not step lines.
    assert sorted(hits) == [2, 5, 6, 7, 8, 10]
    last = hits[10]
    assert last.step == 250
    assert "grad_norm" not in last.metrics
    assert last.metrics["loss"] == 5.8383
    assert last.metrics["tps"] == 5862.0
    assert last.timestamp == calendar.timegm((2025, 6, 16, 22, 32, 0, 0, 0, 0)) + 0.846


def test_line_without_the_logger_date() -> None:
    # If the engine someday removes "[titan] <date>" itself, the rest still reads.
    line = fixture_lines(GC_LOG)[1].partition(",322")[2]
    assert line.startswith(" - root - INFO - step: 200")
    hit = TorchTitanFamily().parse(line)
    assert hit is not None
    assert (hit.step, hit.timestamp, hit.metrics["mfu"]) == (200, None, 34.29)


def test_validation_step_line() -> None:
    # The shape torchtitan's MetricsProcessor.log_validation prints ("validate step: N  loss: ...").
    hit = TorchTitanFamily().parse(
        "[titan] 2025-06-16 22:40:00,000 - root - INFO - validate step: 300  loss:  5.9876  "
        "memory: 49.66GiB(52.28%)  tps: 5,812"
    )
    assert hit is not None
    assert hit.step == 300
    assert hit.metrics == {
        "val_loss": 5.9876,
        "val_memory_gib": 49.66,
        "val_memory_pct": 52.28,
        "val_tps": 5812.0,
    }


def test_other_frameworks_lines_are_not_claimed() -> None:
    own = LOGS / "torchtitan"
    for path in sorted(LOGS.glob("*/*.txt")):
        if path.parent == own:
            continue
        family = TorchTitanFamily()
        for line in path.read_text(encoding="utf-8").splitlines():
            assert family.parse(engine_cleaned(line)) is None, (path.name, line)


def test_through_the_log_engine() -> None:
    records, _, log_format = parse_lines(physical_lines(LOGS / "torchtitan" / RANK0_LOG))
    assert log_format == "torchtitan"
    assert [record.step for record in records] == list(range(14, 22))
    # The rank comes from the "[rank0]:" prefix the engine removed.
    assert {record.rank for record in records} == {0}
    assert records[-1].metrics["loss"] == 3.00867
    assert records[-1].timestamp == calendar.timegm((2026, 5, 18, 16, 4, 54, 0, 0, 0)) + 0.191


@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    TorchTitanFamily().parse(text)


@given(
    st.sampled_from(
        ["[titan] 2025-99-99 25:61:61,1 - root - INFO - step: 1  ", "validate step: 2  ", "step: 3  "]
    ),
    st.text(alphabet="0123456789 ,.:%()GiBlosmemorytpsfu_", max_size=60),
)
def test_parse_never_raises_on_near_miss_text(head: str, tail: str) -> None:
    hit = TorchTitanFamily().parse(head + tail)
    assert hit is None or not hit.is_empty()
