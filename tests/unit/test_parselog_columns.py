"""parse-log's column-wise paths print what the record-by-record paths print.

``write_json`` formats the records of shapes read column-wise from their columns (``RecordEncoder.
encode_columns``) and ``summarise`` folds only the first and last record of such a shape's lines; both must
give byte for byte what encoding and folding every LogRecord gives. Checked on long runs of real log lines
(each fixture log, then copies with other digits, so shapes gather the many lines that are read
column-wise), with rank prefixes and timestamps, and on blocks made to need the fallbacks.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from trainmon_tui.parselog_cmd import (
    ParseSummary,
    RecordEncoder,
    event_to_json,
    record_to_json,
    summarise,
    write_json,
    write_text,
)
from trainmon_tui.parsers.trainlog.base import Columns
from trainmon_tui.parsers.trainlog.engine import ColumnBlock, LogParser, parse_lines

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def _other_digits(line: str, rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") if char.isdigit() and char.isascii() else char for char in line)


def _long_log(tmp_path: Path, folders: list[str], prefix: str = "", copies: int = 15) -> Path:
    """Every log of ``folders``, then ``copies`` copies of it with other digits, each line after
    ``prefix``."""
    rng = random.Random("-".join(folders) + prefix)
    lines: list[str] = []
    for folder in folders:
        for path in sorted((LOGS / folder).glob("*.txt")):
            with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
                own = [prefix + line.rstrip("\r\n") for line in handle]
            lines += own + [_other_digits(line, rng) for _ in range(copies) for line in own]
    path = tmp_path / ("_".join(folders) + ".log")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _lines(path: Path) -> list[str]:
    """As parse-log reads them: split on "\\n" only (tqdm's "\\r" redraws stay in their line)."""
    with path.open(encoding="utf-8", newline="\n") as handle:
        return handle.read().split("\n")[:-1]


def _json_one_by_one(path: Path) -> dict[str, object]:
    records, events, detected = parse_lines(_lines(path))
    return {
        "records": [record_to_json(record) for record in records],
        "events": [event_to_json(event) for event in events],
        "format": detected,
    }


def _templated_lines(path: Path) -> int:
    """How many lines write_json's blocks read column-wise and formatted from their columns."""
    parser = LogParser()
    encoder = RecordEncoder()
    lines = _lines(path)
    count = 0
    for at in range(0, len(lines), 1 << 14):
        _records, _events, blocks = parser.feed_block_columns(lines[at : at + (1 << 14)])
        count += sum(len(block.numbers) for block in blocks if encoder.encode_columns(block) is not None)
    return count


def _text_record_by_record(path: Path) -> str:
    """The text summary folded from every LogRecord (feed_block's), as summarise did before columns."""
    parser = LogParser()
    summary = ParseSummary(path=str(path))
    lines = _lines(path)
    summary.lines = len(lines)
    for at in range(0, len(lines), 5000):
        summary.absorb(*parser.feed_block(lines[at : at + 5000]))
    summary.absorb(*parser.finish())
    summary.format = parser.format
    out = io.StringIO()
    write_text(summary, out)
    return out.getvalue()


CASES = [
    (["nanogpt"], ""),
    (["hf_trainer", "accelerate"], ""),
    (["nanogpt"], "[rank3]: "),
    (["nanogpt"], "2024-05-01 10:00:00 "),
    (["nanogpt", "keras", "errors", "megatron"], ""),
    (["fairseq"], ""),
    (["fairseq"], "[rank0]: "),
    (["megatron", "deepspeed"], ""),
    (["torchtitan"], ""),
]


@pytest.mark.parametrize(("folders", "prefix"), CASES)
def test_write_json_prints_every_record_as_one_by_one(
    tmp_path: Path, folders: list[str], prefix: str
) -> None:
    path = _long_log(tmp_path, folders, prefix)
    out = io.StringIO()
    write_json(str(path), out)
    text = out.getvalue()
    assert json.loads(text) == _json_one_by_one(path)
    # Byte for byte as well: the same records through RecordEncoder alone.
    records, _events, _ = parse_lines(_lines(path))
    record_texts = RecordEncoder().encode(records)
    if folders[0] in {"nanogpt", "hf_trainer"}:
        # (Most HF dicts of the fixtures hold a NaN grad norm: those lines are read one by one.)
        assert _templated_lines(path) > (1000 if folders[0] == "nanogpt" else 100), "no line read column-wise"
    assert text.startswith('{"records": [\n  ' + ",\n  ".join(record_texts) + "\n],\n")


@pytest.mark.parametrize(("folders", "prefix"), CASES)
def test_summary_folds_as_record_by_record(tmp_path: Path, folders: list[str], prefix: str) -> None:
    path = _long_log(tmp_path, folders, prefix)
    out = io.StringIO()
    write_text(summarise(str(path)), out)
    assert out.getvalue() == _text_record_by_record(path)


def _block(columns: Columns, rank: list[int] | int | None = None) -> ColumnBlock:
    count = len(columns.values[0]) if columns.values else 2
    numbers = list(range(10, 10 + count))
    return ColumnBlock(numbers, rank, columns, [""] * count, None)


@pytest.mark.parametrize(
    "columns",
    [
        Columns([1, 2], [9, 9], None, None, None, None, ("loss", "lr"), ([2.5, 2.25], [0.001, 1e-05])),
        Columns([1, 2], None, [0.5, 1.5], 3, [4, 5], 50, ("val_loss",), ([1e300, -0.0],)),
        Columns(None, None, 2.0, 5, [1, 2], None, ("loss",), ([0.1, 0.2],)),
        # What the template cannot say: encode() is used, with the same text.
        Columns([1, 2], None, [float("inf"), 1.0], None, None, None, ("loss",), ([1.0, 2.0],)),
        Columns([1, 2], None, None, None, None, None, ("loss",), ([float("nan"), 2.0],)),
        Columns([1, 2], None, None, None, None, None, ("loss", "loss"), ([1.0, 2.0], [3.0, 4.0])),
        Columns([1, 2], None, None, None, None, None, ('we"ird', "x\x1b[31m"), ([1.0, 2.0], [3.0, 4.0])),
    ],
)
@pytest.mark.parametrize("rank", [None, 3, [0, 7]])
def test_encode_columns_matches_the_records_json(columns: Columns, rank: list[int] | int | None) -> None:
    block = _block(columns, rank)
    expected = [json.dumps(record_to_json(record)) for record in block.records()]
    texts = RecordEncoder().encode_columns(block)
    if texts is None:
        assert RecordEncoder().encode(block.records()) == expected
    else:
        assert texts == expected


def test_encode_columns_declines_what_json_dumps_must_write() -> None:
    encoder = RecordEncoder()
    nan_loss = Columns([1], None, None, None, None, None, ("loss",), ([float("nan")],))
    assert encoder.encode_columns(_block(nan_loss)) is None
    plain = Columns([1, 2], None, None, None, None, None, ("loss",), ([1.0, 2.0],))
    assert encoder.encode_columns(_block(plain)) == [
        '{"line": 10, "rank": null, "step": 1, "total_steps": null, "epoch": null, "total_epochs": null, '
        '"batch": null, "batches_per_epoch": null, "metrics": {"loss": 1.0}}',
        '{"line": 11, "rank": null, "step": 2, "total_steps": null, "epoch": null, "total_epochs": null, '
        '"batch": null, "batches_per_epoch": null, "metrics": {"loss": 2.0}}',
    ]


def test_block_records_picks_lines() -> None:
    columns = Columns([1, 2, 3], None, None, None, None, None, ("loss",), ([1.0, 2.0, 3.0],))
    block = ColumnBlock([5, 6, 7], 2, columns, ["", "", ""], None)
    picked = block.records((0, 2))
    assert [(r.line, r.rank, r.step, dict(r.metrics)) for r in picked] == [
        (5, 2, 1, {"loss": 1.0}),
        (7, 2, 3, {"loss": 3.0}),
    ]
    assert block.records()[1].line == 6


def test_an_eta_past_the_calendar_prints_no_finishing_date(tmp_path: Path) -> None:
    # Timestamps garbled into the far future (seen above with random digits) used to crash the summary.
    path = tmp_path / "far.log"
    path.write_text(
        "[2024-01-01 00:00:00] iteration        1/  900000000 | lm loss: 2.0 |\n"
        "[2024-01-01 00:01:00] iteration        2/  900000000 | lm loss: 1.9 |\n"
        "[9999-12-31 00:00:00] iteration        3/  900000000 | lm loss: 1.8 |\n",
        encoding="utf-8",
    )
    out = io.StringIO()
    write_text(summarise(str(path)), out)
    eta_line = next(line for line in out.getvalue().splitlines() if line.startswith("  eta"))
    assert "steps/s" in eta_line or "s/step" in eta_line
    assert "finishing" not in eta_line
