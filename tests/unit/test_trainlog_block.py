"""``LogParser.feed_block`` and the engine's shape cache give exactly what ``feed`` line by line gives.

Checked on every text fixture under tests/fixtures/ (training logs, error samples, tool output: any text must
go through the same way), on the benchmark's mixed log (copies of all training logs with advancing counters),
and on random mixtures of fixture lines and arbitrary text cut into blocks of random sizes.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.family_helpers import Outcome, line_by_line
from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parselog_read import iter_log_blocks
from trainmon_tui.parsers.trainlog import engine
from trainmon_tui.parsers.trainlog.engine import LogParser

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BENCHMARK = Path(__file__).resolve().parent.parent.parent / "benchmarks" / "bench_parse_log.py"
_TEXT_SUFFIXES = {".txt", ".log", ".csv", ".md", ".json"}


def _fixture_paths() -> list[Path]:
    return sorted(path for path in FIXTURES.rglob("*") if path.is_file() and path.suffix in _TEXT_SUFFIXES)


def _physical_lines(path: Path) -> list[str]:
    """The lines as parse-log reads them: decoding errors replaced, split on "\\n" only, ends stripped."""
    with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
        return [line.rstrip("\r\n") for line in handle]


# Lines with digits and prefixes, for the bytes strategy below (their digits vary in the mixes it makes).
_FIXTURE_LINES_SAMPLE = [
    "[rank3]: step:10/100 train_loss:2.5",
    "2023-03-22 10:11:12 step:12/100 train_loss:2.3",
    "{'loss': 1.5, 'grad_norm': nan, 'epoch': 0.1}",
    "  6/100 [====>.........] - ETA: 3s - loss: 0.5120",
    "iter 120: loss 2.4312, time 35.12ms, mfu 41.20%",
    "Epoch 1/10",
    "Traceback (most recent call last):",
    "torch.OutOfMemoryError: CUDA out of memory.",
]


def _in_blocks(lines: Sequence[str], sizes: Sequence[int]) -> Outcome:
    """Feed ``lines`` in blocks of the given sizes, cycling through them."""
    parser = LogParser()
    records: list[LogRecord] = []
    events: list[LogEvent] = []
    at = 0
    turn = 0
    while at < len(lines):
        size = sizes[turn % len(sizes)]
        new_records, new_events = parser.feed_block(lines[at : at + size])
        records += new_records
        events += new_events
        at += size
        turn += 1
    new_records, new_events = parser.finish()
    return records + new_records, events + new_events, parser.format, parser.ranks


def _in_read_blocks(data: bytes, chunk_bytes: int) -> tuple[list[str], Outcome]:
    """The lines parse-log's reader makes of ``data``, and what the parser makes of them fed with the bytes
    they were decoded from (shapes masked from the bytes, see LogParser.feed_block_columns)."""
    parser = LogParser()
    lines: list[str] = []
    records: list[LogRecord] = []
    events: list[LogEvent] = []
    for block in iter_log_blocks(io.BytesIO(data), "test.log", chunk_bytes):
        lines += block.lines
        new_records, new_events = parser.feed_block(block.lines, block.encoded)
        records += new_records
        events += new_events
    new_records, new_events = parser.finish()
    return lines, (records + new_records, events + new_events, parser.format, parser.ranks)


def _comparable(outcome: Outcome) -> str:
    # repr, so that a NaN metric compares equal to itself and 0.0 differs from -0.0.
    return repr(outcome)


def _benchmark_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_parse_log", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_fixtures_to_compare() -> None:
    paths = _fixture_paths()
    assert len(paths) > 100
    assert any(path.parent.name == "nanogpt" for path in paths)


@pytest.mark.parametrize("path", _fixture_paths(), ids=lambda path: str(path.relative_to(FIXTURES)))
def test_every_fixture_reads_the_same_in_blocks(path: Path) -> None:
    lines = _physical_lines(path)
    expected = _comparable(line_by_line(lines))
    assert _comparable(_in_blocks(lines, [len(lines) or 1])) == expected
    assert _comparable(_in_blocks(lines, [1])) == expected
    assert _comparable(_in_blocks(lines, [3, 1, 7])) == expected


@pytest.mark.parametrize("path", _fixture_paths(), ids=lambda path: str(path.relative_to(FIXTURES)))
def test_every_fixture_reads_the_same_with_its_bytes(path: Path) -> None:
    data = path.read_bytes()
    for chunk_bytes in (len(data) + 1, 300):
        lines, outcome = _in_read_blocks(data, chunk_bytes)
        assert lines == _physical_lines(path)
        assert _comparable(outcome) == _comparable(line_by_line(lines))
    # The same log with Windows line ends: the bytes keep a \r the lines have lost.
    lines, outcome = _in_read_blocks(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), 500)
    assert _comparable(outcome) == _comparable(line_by_line(lines))


_LOG_BYTES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"\n",
                b"\r\n",
                b"\r",
                b"\x1b[2K",
                b"\x08",
                b"\xff",
                b"\xe2\x96",
                b"\xe2\x96\x88",
                b"\xf0\x9f\x9a\x80",
            ]
        ),
        st.sampled_from(sorted({line.encode() for line in _FIXTURE_LINES_SAMPLE})),
        st.binary(max_size=12),
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_LOG_BYTES, st.integers(min_value=1, max_value=64))
def test_any_bytes_read_the_same_with_their_bytes(data: bytes, chunk_bytes: int) -> None:
    """Undecodable bytes, lone and doubled \r, terminal codes, characters of every width, cut anywhere."""
    lines, outcome = _in_read_blocks(data, chunk_bytes)
    assert _comparable(outcome) == _comparable(line_by_line(lines))


def test_the_benchmark_mix_reads_the_same_in_blocks() -> None:
    # Three copies: the first holds the logs of huge \r-redrawn lines; counters advance from copy to copy.
    mixed = _benchmark_module().mixed_lines(3000)
    lines = list(mixed)
    assert len(lines) >= 3000
    one_at_a_time = line_by_line(lines)
    records, events, log_format, _ = one_at_a_time
    assert len(records) > 1500
    assert events
    assert log_format is not None
    expected = _comparable(one_at_a_time)
    assert _comparable(_in_blocks(lines, [4096])) == expected
    assert _comparable(_in_blocks(lines, [1000, 1, 17])) == expected


def test_the_shape_cache_changes_nothing() -> None:
    """The cache decides gates, event phrases, prefixes and the families' per-shape readers from a line's
    digit-masked shape; without it (every family reading with ``parse``), the same."""
    lines = list(_benchmark_module().mixed_lines(3000))
    uncached = LogParser()
    uncached._max_shape_chars = -1
    assert _comparable(line_by_line(lines, uncached)) == _comparable(line_by_line(lines))


def test_a_block_counts_its_lines_like_single_lines() -> None:
    parser = LogParser()
    parser.feed_block(["hello", "", "world"])
    records, _ = parser.feed("{'loss': 1.5, 'epoch': 0.1}")
    assert records[0].line == 4
    records, _ = parser.feed_block(["x", "step:7/10 train_loss:2.5"])
    assert [(r.line, r.step, dict(r.metrics)) for r in records] == [(6, 7, {"loss": 2.5})]
    assert parser.feed_block([]) == ([], [])


def test_a_wrapped_dict_may_span_two_blocks() -> None:
    lines = ["{'eval_loss': 2.22, 'eval_samples_pe", "r_second': 7.289, 'epoch': 0.01}", "done"]
    parser = LogParser()
    first, _ = parser.feed_block(lines[:1])
    second, _ = parser.feed_block(lines[1:])
    assert first == []
    assert [(r.line, dict(r.metrics)) for r in second] == [
        (1, {"val_loss": 2.22, "eval_samples_per_second": 7.289})
    ]
    assert second[0].epoch == 0.01


_FIXTURE_LINES = sorted(
    {line for path in _fixture_paths() for line in _physical_lines(path) if len(line) < 400}
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(_FIXTURE_LINES),
            st.text(max_size=80),
            st.sampled_from(_FIXTURE_LINES).map(lambda line: line.replace("1", "7").replace("0", "9")),
        ),
        max_size=60,
    ),
    st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=5),
)
def test_random_mixtures_read_the_same_in_blocks(lines: list[str], sizes: list[int]) -> None:
    # Lines never hold "\n": the reader splits on it.
    lines = [line.replace("\n", " ") for line in lines]
    assert _comparable(_in_blocks(lines, sizes)) == _comparable(line_by_line(lines))


def test_the_shape_cache_stays_bounded() -> None:
    parser = LogParser()
    for number in range(5000):
        # Letters are not masked: every line is a shape of its own.
        parser.feed("".join(chr(ord("a") + int(digit)) for digit in str(number)) + " step:1 train_loss:2.5")
    assert 0 < len(parser._shapes) <= 2048
    records, _ = parser.feed("step:7/10 train_loss:2.5")
    assert records[0].step == 7


def test_lines_of_one_shape_read_their_own_prefix_values() -> None:
    """feed_block decides the prefixes once per line shape; the rank and time come from each line."""
    lines = [
        "[rank3]: step:10/100 train_loss:2.5",
        "[rank7]: step:11/100 train_loss:2.4",
        "2023-03-22 10:11:12 step:12/100 train_loss:2.3",
        "2023-03-22 10:11:19 step:13/100 train_loss:2.2",
        "2023-13-45 10:11:19 step:14/100 train_loss:2.1",  # the same shape, but no real date
        "[2025-04-13 23:41:12] [rank1]: step:15/100 train_loss:2.0",
        "[2025-04-13 23:41:13] [rank2]: step:16/100 train_loss:1.9",
    ]
    records, _ = LogParser().feed_block(lines)
    march_22 = 1679443200.0
    april_13 = 1744502400.0
    assert [(r.rank, r.step, r.timestamp) for r in records] == [
        (3, 10, None),
        (7, 11, None),
        (None, 12, march_22 + 10 * 3600 + 11 * 60 + 12),
        (None, 13, march_22 + 10 * 3600 + 11 * 60 + 19),
        (None, 14, None),
        (1, 15, april_13 + 23 * 3600 + 41 * 60 + 12),
        (2, 16, april_13 + 23 * 3600 + 41 * 60 + 13),
    ]
    assert _comparable(_in_blocks(lines, [3])) == _comparable(line_by_line(lines))


def test_a_prefix_with_nothing_after_it_still_names_its_rank() -> None:
    lines = ["[rank5]:", "[rank6]:   ", "", "[rank7]: step:3/10 train_loss:2.5"]
    parser = LogParser()
    records, _ = parser.feed_block(lines)
    assert parser.ranks == {5, 6, 7}
    assert [(r.rank, r.step) for r in records] == [(7, 3)]
    assert _comparable(_in_blocks(lines, [1])) == _comparable(line_by_line(lines))


def test_the_line_plan_cache_stays_bounded() -> None:
    parser = LogParser()
    lines = [
        "".join(chr(ord("a") + int(digit)) for digit in str(number)) + " step:1 train_loss:2.5"
        for number in range(5000)
    ]
    parser.feed_block(lines)
    assert 0 < len(parser._line_plans) <= 2048
    records, _ = parser.feed_block(["step:7/10 train_loss:2.5"])
    assert records[0].step == 7


_STAMP_FORMATS = [
    "{y}-{mo}-{d} {h}:{mi}:{s} step:7/10 train_loss:2.5",
    "[{y}-{mo}-{d} {h}:{mi}:{s},{f}] [INFO] step:7/10 train_loss:2.5",
    "{y}-{mo}-{d}T{h}:{mi}:{s}.{f}Z step:7/10 train_loss:2.5",
    "{y}-{mo}-{d} {h}:{mi}:{s}.{f}+05:30 step:7/10 train_loss:2.5",
]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(_STAMP_FORMATS),
    st.lists(
        st.tuples(
            st.integers(1990, 2030),
            st.integers(0, 19),  # months up to 19, days up to 39, hours up to 29...: some lines no real time
            st.integers(0, 39),
            st.integers(0, 29),
            st.integers(0, 69),
            st.integers(0, 69),
            st.integers(0, 999),
        ),
        min_size=1,
        max_size=30,
    ),
    st.booleans(),
)
def test_a_blocks_timestamps_read_column_wise_are_the_lines_own(
    template: str, parts: list[tuple[int, int, int, int, int, int, int]], all_real: bool
) -> None:
    """ColumnBlock's timestamps come from one pass over the lines of a shape; each is what reading the line
    alone gives (a day seen for the first time, times out of range, fractions, UTC offsets)."""
    if all_real:
        parts = [(y, mo % 12 + 1, d % 28 + 1, h % 24, mi % 60, s % 61, f) for y, mo, d, h, mi, s, f in parts]
    lines = [
        template.format(
            y=y, mo=f"{mo:02d}", d=f"{d:02d}", h=f"{h:02d}", mi=f"{mi:02d}", s=f"{s:02d}", f=f"{f:03d}"
        )
        for y, mo, d, h, mi, s, f in parts
    ]
    spans = engine._prefix_spans(lines[0])[2]
    assert spans is not None
    expected = [engine._stamp_at(line, spans) for line in lines]
    # Twice: the first pass may meet days not yet cached, the second finds them cached.
    assert repr(engine._stamps_at(lines, spans)) == repr(expected)
    assert repr(engine._stamps_at(lines, spans)) == repr(expected)
