"""Column readers (``columns_for_shape``, base.ColumnFamily) read the lines of a shape exactly as the per-line
readers do, and the engine's column-wise path gives exactly what reading one line at a time gives.

A column reader is made from one line and then reads many lines of the same digit-masked shape at once, so
each test reads copies of every fixture line with other digits (and the line itself) both ways and compares
field by field, metric order included; the per-line reader must also hold to the contract (a non-empty Hit,
no rank, no timestamp). The engine tests feed long runs of such lines, so that shapes gather the many lines
that make the engine read them column-wise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.unit.family_helpers import Outcome, engine_cleaned, line_by_line
from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.base import ColumnFamily, Columns, Hit
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.parsers.trainlog.fam_deepspeed import DeepSpeedFamily
from trainmon_tui.parsers.trainlog.fam_fairseq import FairseqFamily
from trainmon_tui.parsers.trainlog.fam_hf import HfTrainerFamily
from trainmon_tui.parsers.trainlog.fam_megatron import MegatronFamily
from trainmon_tui.parsers.trainlog.fam_metriclogger import MetricLoggerFamily
from trainmon_tui.parsers.trainlog.fam_mmengine import MmcvFamily, MmengineFamily
from trainmon_tui.parsers.trainlog.fam_nanogpt import ModdedNanoGptFamily, NanoGptFamily
from trainmon_tui.parsers.trainlog.fam_torchtitan import TorchTitanFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
COLUMN_FAMILIES: list[type[ColumnFamily]] = [
    NanoGptFamily,
    ModdedNanoGptFamily,
    HfTrainerFamily,
    FairseqFamily,
    MegatronFamily,
    TorchTitanFamily,
    MetricLoggerFamily,
    MmengineFamily,
    MmcvFamily,
    DeepSpeedFamily,
]
_PROGRESS = ("step", "total_steps", "epoch", "total_epochs", "batch", "batches_per_epoch")


def _fixture_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted(LOGS.rglob("*.txt")):
        with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
            for printed in handle.read().replace("\r", "\n").split("\n"):
                line = printed.rstrip()
                if 0 < len(line) < 2000:
                    lines.append(engine_cleaned(line))
    return lines


FIXTURE_LINES = _fixture_lines()


def _other_digits(line: str, rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") if char.isdigit() and char.isascii() else char for char in line)


def _same(left: object, right: object) -> bool:
    """Equal, NaN equal to NaN, and a float never equal to an int of the same value (JSON tells them
    apart)."""
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right):
        return True
    return type(left) is type(right) and left == right


def _column_hits(columns: Columns, count: int) -> list[Hit]:
    """The Hits the columns stand for, one per line."""
    stamps = None if columns.timestamps is None else columns.timestamps()
    hits = []
    for at in range(count):
        fields = [value[at] if isinstance(value, list) else value for value in columns[:6]]
        metrics = dict(zip(columns.names, (values[at] for values in columns.values), strict=True))
        hit = Hit(metrics=metrics, timestamp=None if stamps is None else stamps[at])
        for name, value in zip(_PROGRESS, fields, strict=True):
            setattr(hit, name, value)
        hits.append(hit)
    return hits


def _assert_same_hit(by_column: Hit, by_line: Hit | None, line: str) -> None:
    assert by_line is not None, line
    assert not by_line.is_empty() and by_line.rank is None, line
    for name in (*_PROGRESS, "timestamp"):
        assert _same(getattr(by_column, name), getattr(by_line, name)), (name, line)
    assert list(by_column.metrics) == list(by_line.metrics), line
    for name, value in by_line.metrics.items():
        assert _same(by_column.metrics[name], value), (name, line)


@pytest.mark.parametrize("family_type", COLUMN_FAMILIES, ids=lambda family: family.name)
def test_column_readers_read_every_fixture_shape_as_the_line_reader(family_type: type[ColumnFamily]) -> None:
    rng = random.Random(f"columns-{family_type.name}")
    family = family_type()
    shapes = 0
    for line in FIXTURE_LINES:
        if not any(gate in line for gate in family.gate):
            continue
        reader = family.columns_for_shape(line)
        if reader is None:
            continue
        shapes += 1
        lines = [line] + [_other_digits(line, rng) for _ in range(15)]
        # Raw lines with something before the text, as the engine hands them over (after the prefixes).
        prefixed = ["[rank1]: " + text for text in lines]
        columns = reader(prefixed, len("[rank1]: "))
        line_reader = family.for_shape(line)
        if columns is None:
            # Allowed only where some line needs the per-line reader: a value float() cannot read.
            assert any(_unreadable(text) for text in lines), line
            continue
        for by_column, text in zip(_column_hits(columns, len(lines)), lines, strict=True):
            _assert_same_hit(by_column, line_reader(text), text)
    assert shapes > 0, f"no fixture line of {family_type.name} is read column-wise"


def _unreadable(text: str) -> bool:
    """Whether digits alone made a number float() rejects or a placeholder (tried loosely: any token)."""
    for token in text.replace(",", " ").replace(":", " ").split():
        stripped = token.rstrip("%").removesuffix("ms").removesuffix("s").strip("'{}[]")
        if any(char.isdigit() for char in stripped):
            try:
                value = float(stripped)
            except ValueError:
                return True
            if value == -100.0:  # nanoGPT's MFU placeholder
                return True
    return False


def test_nanogpt_mfu_placeholder_goes_to_the_line_reader() -> None:
    family = NanoGptFamily()
    line = "iter 10: loss 2.5000, time 30.10ms, mfu -100.00%"
    reader = family.columns_for_shape(line)
    assert reader is not None
    assert reader([line, "iter 11: loss 2.4000, time 31.10ms, mfu -100.00%"], 0) is None
    # The same shape with another value: read column-wise.
    columns = reader(["iter 12: loss 2.3000, time 32.10ms, mfu -012.50%"], 0)
    assert columns is not None
    assert columns.step == [12]
    assert columns.names == ("loss", "time_ms", "mfu")
    assert columns.values == ([2.3], [32.1], [-12.5])


def test_values_printed_as_nan_are_read_column_wise_as_the_line_reader_reads_them() -> None:
    # A NaN timing is modded-nanogpt's warm-up placeholder, left out of every line of its shape; a NaN loss
    # is kept.
    cases: list[tuple[ColumnFamily, str]] = [
        (ModdedNanoGptFamily(), "step:3/20 train_loss:10.8 train_time:120ms step_avg:nanms"),
        (ModdedNanoGptFamily(), "step:4/20 train_loss:nan"),
        (NanoGptFamily(), "iter 425: loss nan, time 1440.31ms, mfu 0.01%"),
        (NanoGptFamily(), "iter 7: loss 2.5, time nanms, mfu nan%"),
    ]
    for family, line in cases:
        reader = family.columns_for_shape(line)
        assert reader is not None, line
        lines = [line, _other_digits(line, random.Random(line))]
        columns = reader(lines, 0)
        assert columns is not None, line
        for by_column, text in zip(_column_hits(columns, len(lines)), lines, strict=True):
            _assert_same_hit(by_column, family.for_shape(line)(text), text)
    placeholder = cases[0][1]
    reader = cases[0][0].columns_for_shape(placeholder)
    columns = None if reader is None else reader([placeholder], 0)
    assert columns is not None and columns.names == ("loss", "train_time_ms")


def test_shapes_with_words_for_values_have_no_column_reader() -> None:
    # Only NaN timings: the line reader finds no metric on any line of the shape.
    assert ModdedNanoGptFamily().columns_for_shape("step:0/20 step_avg:nanms") is None
    # A word float() cannot read.
    assert NanoGptFamily().columns_for_shape("iter 7: loss n/a, time 30.10ms") is None
    # A HF summary dict keeps its own names; read per line.
    assert (
        HfTrainerFamily().columns_for_shape("{'train_runtime': 12.5, 'train_loss': 2.1, 'epoch': 3.0}")
        is None
    )


def _blocks(lines: Sequence[str], size: int) -> tuple[Outcome, int]:
    """The outcome of feed_block over blocks of ``size`` lines, and how many lines were read column-wise."""
    parser = LogParser()
    records: list[LogRecord] = []
    events: list[LogEvent] = []
    column_lines = 0
    read_plan_lines = parser._read_plan_lines

    def counting(plan: object, numbers: list[int], *args: object) -> object:
        nonlocal column_lines
        block = read_plan_lines(plan, numbers, *args)  # type: ignore[arg-type]
        if block is not None:
            column_lines += len(numbers)
        return block

    parser._read_plan_lines = counting  # type: ignore[method-assign,assignment]
    for at in range(0, len(lines), size):
        new_records, new_events = parser.feed_block(lines[at : at + size])
        records += new_records
        events += new_events
    new_records, new_events = parser.finish()
    return (records + new_records, events + new_events, parser.format, parser.ranks), column_lines


def _comparable(outcome: Outcome) -> str:
    # repr: NaN metrics compare equal as text, and every field and metric order counts.
    return repr(outcome)


def _runs_of(path: Path, copies: int, rng: random.Random) -> list[str]:
    """The log's lines, then ``copies`` more with every digit changed: long runs of each shape."""
    with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = [line.rstrip("\r\n") for line in handle]
    return lines + [_other_digits(line, rng) for _ in range(copies) for line in lines]


@pytest.mark.parametrize(
    "folder",
    [
        "nanogpt",
        "keras",
        "lightning",
        "hf_trainer",
        "fairseq",
        "megatron",
        "accelerate",
        "torchrun",
        "errors",
    ],
)
def test_long_runs_read_column_wise_asline_by_line(folder: str) -> None:
    rng = random.Random(f"runs-{folder}")
    lines: list[str] = []
    for path in sorted((LOGS / folder).glob("*.txt")):
        lines += _runs_of(path, 12, rng)
    expected = _comparable(line_by_line(lines))
    for size in (len(lines), 4096, 37):
        outcome, column_lines = _blocks(lines, size)
        assert _comparable(outcome) == expected, (folder, size)
        if folder in {"nanogpt", "hf_trainer", "fairseq", "megatron", "torchtitan"} and size > 1000:
            assert column_lines > 0, folder


def test_identical_lines_repeated_are_read_column_wise_and_in_order() -> None:
    lines = [
        "step:1/100 train_loss:3.5000 train_time:100ms step_avg:10.00ms",
        "iter 7: loss 2.5000, time 30.10ms, mfu 12.50%",
        "some text between them",
        "",
    ] * 20
    (records, events, detected, ranks), column_lines = _blocks(lines, len(lines))
    assert column_lines == 40
    assert _comparable((records, events, detected, ranks)) == _comparable(line_by_line(lines))
    assert [record.line for record in records] == sorted(record.line for record in records)
    assert records[0].metrics == {"loss": 3.5, "train_time_ms": 100.0, "step_avg_ms": 10.0}
    assert records[1].metrics == {"loss": 2.5, "time_ms": 30.1, "mfu": 12.5}
    # As many lines each: the first in registry order names the format.
    assert detected == "nanogpt"


def test_a_full_rank_set_holds_the_ranks_that_came_first() -> None:
    # More ranks than the parser keeps (4096), in random order, interleaved with lines read one by one that
    # name ranks too: the kept set depends on the order, which reading column-wise must not change.
    rng = random.Random("ranks")
    ranks = list(range(1000, 9999))
    rng.shuffle(ranks)
    lines = []
    for rank in ranks[:6000]:
        lines.append(f"[rank{rank}]: step:{rank}/20000 train_loss:2.5000 train_time:100ms step_avg:10.00ms")
        if rank % 7 == 0:
            lines.append(f"[rank{rank + 3}]: something else")
    expected = line_by_line(lines)
    for size in (len(lines), 3000, 500):
        outcome, column_lines = _blocks(lines, size)
        assert outcome[3] == expected[3]
        assert len(outcome[3]) == 4096
        assert _comparable(outcome) == _comparable(expected)
        assert column_lines > 0


def test_quiet_lines_are_read_while_a_metrics_block_is_open() -> None:
    # "  accuracy: 0.9100" names no progress: the generic family reads such a line only inside an indented
    # block of metrics, and feed_block passes it by only while no block is open.
    lines = []
    for epoch in range(1, 40):
        lines += [f"  accuracy: 0.{epoch:04d}", f"  recall: 0.{epoch:04d}", "Validation metrics:"]
        lines += [f"  accuracy: 0.{9000 + epoch:04d}", f"  f1: 0.{8000 + epoch:04d}", ""]
        lines += [f"step:{epoch}/100 train_loss:3.{epoch:04d} train_time:100ms step_avg:10.00ms"] * 3
    expected = line_by_line(lines)
    records = expected[0]
    assert [dict(r.metrics) for r in records[:2]] == [{"accuracy": 0.9001}, {"f1": 0.8001}]
    for size in (len(lines), 50, 7):
        outcome, _ = _blocks(lines, size)
        assert _comparable(outcome) == _comparable(expected)
