"""parse-log's fast paths give what the plain ones give: the block reader yields the lines a file iterator
yields, and RecordEncoder writes each record exactly as ``json.dumps(record_to_json(record))`` does."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import LogRecord
from trainmon_tui.parselog_cmd import RecordEncoder, iter_log_blocks, record_to_json, write_json
from trainmon_tui.parsers.trainlog.engine import parse_lines

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def _file_iterator_lines(text: str) -> list[str]:
    stream = io.StringIO(text, newline="\n")
    return [line.rstrip("\r\n") for line in stream]


def _block_lines(text: str, chunk_bytes: int) -> list[str]:
    encoded = text.encode("utf-8")
    stream = io.BytesIO(encoded)
    blocks = list(iter_log_blocks(stream, "test.log", chunk_bytes))
    assert all(block.lines for block in blocks)
    assert stream.closed
    # Each block's bytes are its lines' own, in order: together, the file.
    assert b"".join(block.encoded for block in blocks) == encoded
    for block in blocks:
        assert block.encoded.decode("utf-8").count("\n") in (len(block.lines), len(block.lines) - 1)
    return [line for block in blocks for line in block.lines]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 5, 64, 1 << 20])
@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "a",
        "a\nb",
        "a\nb\n",
        "a\r\nb\r\n",
        "a\r\r\n\rb\r",
        "bar 1\rbar 2\rbar 3\n{'loss': 1.0}\n",
        "\n\n\nx\n\n",
        "é\u2028ü\nsecond\x0bline\x1b[0m\n",
    ],
)
def test_block_reader_yields_the_file_iterators_lines(text: str, chunk_bytes: int) -> None:
    assert _block_lines(text, chunk_bytes) == _file_iterator_lines(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", "b", "\n", "\r", " ", "é"]), max_size=60), st.integers(1, 9))
def test_block_reader_on_any_text(text: str, chunk_bytes: int) -> None:
    assert _block_lines(text, chunk_bytes) == _file_iterator_lines(text)


def _fixture_records() -> list[LogRecord]:
    records: list[LogRecord] = []
    for path in sorted(LOGS.rglob("*.txt")):
        with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
            records += parse_lines(line.rstrip("\r\n") for line in handle)[0]
    return records


def test_encoder_matches_json_dumps_on_every_fixture_record() -> None:
    records = _fixture_records()
    assert len(records) > 500
    assert any(math.isnan(value) for record in records for value in record.metrics.values())
    encoder = RecordEncoder()
    expected = [json.dumps(record_to_json(record)) for record in records]
    # Twice: the first pass meets every metric name for the first time.
    for _ in range(2):
        assert encoder.encode(records) == expected
    assert [text for record in records for text in encoder.encode([record])] == expected
    assert encoder.encode([]) == []


_NAMES = st.one_of(
    st.sampled_from(["loss", "lr", "grad_norm", "val_loss", "None_x", "a: b", "100%", "x\x00y", "k\u00e9y"]),
    st.text(max_size=12),
)
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
)
_OPTIONAL_INT = st.none() | st.integers(min_value=-(10**12), max_value=10**18)


@st.composite
def _records(draw: st.DrawFn) -> LogRecord:
    return LogRecord(
        line=draw(st.integers(min_value=1, max_value=10**9)),
        rank=draw(_OPTIONAL_INT),
        step=draw(_OPTIONAL_INT),
        total_steps=draw(_OPTIONAL_INT),
        epoch=draw(st.none() | st.floats(allow_nan=True, allow_infinity=True)),
        total_epochs=draw(_OPTIONAL_INT),
        batch=draw(_OPTIONAL_INT),
        batches_per_epoch=draw(_OPTIONAL_INT),
        metrics=draw(st.dictionaries(_NAMES, _VALUES, max_size=6)),
        timestamp=draw(st.none() | st.floats(allow_nan=False)),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_records(), max_size=8))
def test_encoder_matches_json_dumps_on_any_records(records: list[LogRecord]) -> None:
    encoder = RecordEncoder()
    expected = [json.dumps(record_to_json(record)) for record in records]
    assert encoder.encode(records) == expected
    assert encoder.encode(records) == expected


def test_write_json_streams_valid_json_with_every_record(tmp_path: Path) -> None:
    log = tmp_path / "train_rank3.log"
    log.write_text(
        "step:1/10 train_loss:2.5 train_time:100ms step_avg:nanms\n"
        "iter 2: loss nan, time 10.0ms, mfu 0.01%\n"
        "{'loss': 0.5, 'grad_norm': inf, 'epoch': 0.1}\n"
        "RuntimeError: CUDA error: out of memory\n",
        encoding="utf-8",
    )
    out = io.StringIO()
    write_json(str(log), out)
    document = json.loads(out.getvalue())
    assert [record["line"] for record in document["records"]] == [1, 2, 3]
    assert {record["rank"] for record in document["records"]} == {3}
    assert document["records"][1]["metrics"]["loss"] == "nan"
    assert document["records"][2]["metrics"] == {"loss": 0.5, "grad_norm": "inf"}
    assert [event["kind"] for event in document["events"]] == ["nan", "oom"]


def test_encoder_takes_any_mapping_of_metrics() -> None:
    record = LogRecord(line=3, step=1, metrics=MappingProxyType({"loss": 1.5}))
    assert RecordEncoder().encode([record]) == [json.dumps(record_to_json(record))]


def test_encoder_with_epochs_that_only_overflow_together() -> None:
    records = [LogRecord(line=n, epoch=1.5e308, metrics={"loss": 1e308}) for n in (1, 2)]
    assert RecordEncoder().encode(records) == [json.dumps(record_to_json(record)) for record in records]
