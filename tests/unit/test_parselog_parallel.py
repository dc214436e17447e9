"""A log read in parts by several processes gives byte for byte what one parser reading it whole gives.

The parts are made small here (a few kilobytes, pieces of a few hundred bytes), so that the fixture logs are
cut in many places: inside tracebacks, wrapped dicts, Keras epochs and Ultralytics tables, between a header
and the lines it names. Both outputs of ``parse-log`` are compared with the one-process read, and how the
reading went (pieces read twice, parts not used) is checked where a case is built to need it.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parselog_cmd import (
    ParseSummary,
    RankSummary,
    summarise,
    write_json,
    write_text,
)
from trainmon_tui.parselog_json import JsonPieces
from trainmon_tui.parselog_parallel import (
    FileChangedError,
    ParallelReadError,
    PartSizes,
    ReadTotals,
    _PartReader,
    can_read_in_parts,
    cut_parts,
    read_in_parts,
)
from trainmon_tui.parselog_read import decode_lines
from trainmon_tui.parsers.trainlog.base import Hit
from trainmon_tui.parsers.trainlog.engine import ColumnBlock, LogParser

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
ROOT = Path(__file__).resolve().parent.parent.parent


def _outputs(path: Path, jobs: int, sizes: PartSizes, totals: ReadTotals | None = None) -> tuple[str, str]:
    json_out = io.StringIO()
    write_json(str(path), json_out, jobs, sizes, totals)
    text_out = io.StringIO()
    write_text(summarise(str(path), jobs, sizes), text_out)
    return json_out.getvalue(), text_out.getvalue()


def _all_fixture_logs(tmp_path: Path) -> Path:
    """Every fixture log, one after the other, in one file."""
    parts = []
    for log in sorted(LOGS.rglob("*.txt")):
        parts.append(log.read_bytes())
    path = tmp_path / "all.log"
    path.write_bytes(b"".join(part if part.endswith(b"\n") else part + b"\n" for part in parts))
    return path


@pytest.mark.parametrize(
    ("jobs", "part", "piece"),
    [(2, 64 << 10, 2 << 10), (3, 16 << 10, 512), (2, 4 << 10, 300), (4, 40 << 10, 7 << 10)],
)
def test_every_fixture_log_read_in_parts_gives_the_same_output(
    tmp_path: Path, jobs: int, part: int, piece: int
) -> None:
    path = _all_fixture_logs(tmp_path)
    sizes = PartSizes(piece=piece, part=part, min_file=0)
    totals = ReadTotals()
    expected = _outputs(path, 1, sizes)
    assert _outputs(path, jobs, sizes, totals) == expected
    # Fewer than size / part where one line (a 122 KB line of redraws) spans several cuts.
    assert totals.parts >= 4
    assert totals.format is not None


@pytest.mark.parametrize("folder", sorted(p.name for p in LOGS.iterdir() if p.is_dir()))
def test_each_folder_read_in_parts_gives_the_same_output(tmp_path: Path, folder: str) -> None:
    """One family at a time, each log three times over, cut into parts of about a tenth."""
    data = b"".join(
        (log.read_bytes().rstrip(b"\n") + b"\n") * 3 for log in sorted((LOGS / folder).glob("*.txt"))
    )
    path = tmp_path / f"{folder}.log"
    path.write_bytes(data)
    sizes = PartSizes(piece=max(64, len(data) // 60), part=max(256, len(data) // 10), min_file=0)
    assert _outputs(path, 3, sizes) == _outputs(path, 1, sizes)


def test_a_state_that_spans_a_whole_part_is_read_on_into_the_parts_after(tmp_path: Path) -> None:
    """Keras names the epoch once, in a header; bar lines after it are read with that epoch. A part that
    starts after the header cannot know it, so the reading before it must go on until a new header, past the
    whole of the next part: that part's own reading is not used."""
    lines = []
    for epoch in (1, 2):
        lines.append(f"Epoch {epoch}/2")
        lines += [
            f"{n}/3000 [====>.....] - ETA: 1s - loss: 0.{n:04d} - accuracy: 0.5" for n in range(1, 3001)
        ]
    path = tmp_path / "keras.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    size = path.stat().st_size
    sizes = PartSizes(piece=4 << 10, part=size // 20, min_file=0)
    totals = ReadTotals()
    expected = _outputs(path, 1, sizes)
    assert _outputs(path, 2, sizes, totals) == expected
    # The first epoch is half the file: ten parts, and the reading from the start goes through the parts
    # after the first (more than the 2 x 2 started ahead of it, which start as it reaches them).
    assert totals.parts_unused >= 8
    assert '"epoch": 2.0' in expected[0]


class _FirstReader:
    """A toy family: reads "value N" lines (as the one a line was last read by, see LogParser) and its own
    marker."""

    name = "first"
    gate = ("value", "first")

    def parse(self, text: str) -> Hit | None:
        if text == self.name:
            return Hit(step=0)
        if text.startswith("value "):
            return Hit(metrics={self.name: float(text[6:])})
        return None


class _SecondReader(_FirstReader):
    name = "second"
    gate = ("value", "second")


class _RecordLines:
    """A sink keeping each record's line and metrics."""

    def __init__(self) -> None:
        self._seen: list[tuple[int, dict[str, float]]] = []

    def take(
        self, lines: list[str], records: list[LogRecord], events: list[LogEvent], blocks: list[ColumnBlock]
    ) -> None:
        assert not blocks
        self._seen += [(record.line, dict(record.metrics)) for record in records]

    def take_finish(self, records: list[LogRecord], events: list[LogEvent]) -> None:
        self.take([], records, events, [])

    def payload(self) -> list[tuple[int, dict[str, float]]]:
        seen, self._seen = self._seen, []
        return seen


def _wrapped_dicts(tmp_path: Path) -> Path:
    lines = []
    for n in range(400):
        lines += [
            f"{{'loss': {n / 1000:.4f}, 'grad_norm': 1.{n},",
            f" 'learning_rate': {n}e-07,",
            f" 'epoch': {n / 100:.2f}}}",
        ]
    path = tmp_path / "wrapped.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_cut_inside_a_wrapped_dict(tmp_path: Path) -> None:
    """A dict hard-wrapped over several lines is held until it closes: a part that starts inside one reads
    its last lines as something else, and pieces of a line or two end inside dicts."""
    path = _wrapped_dicts(tmp_path)
    for piece in (40, 70, 110):
        sizes = PartSizes(piece=piece, part=900, min_file=0)
        expected = _outputs(path, 1, sizes)
        assert '"epoch": 3.99' in expected[0]
        assert _outputs(path, 2, sizes) == expected


def test_a_line_two_families_read_is_read_by_the_one_that_read_the_last_line(tmp_path: Path) -> None:
    """Which family reads a line both can read depends on which read the line before: a part that starts
    among such lines, after the second family's marker, must not be taken as read alike until that is
    settled."""
    lines = []
    for block in range(30):
        lines.append("second" if block % 2 else "first")
        lines += [f"value {block * 100 + n}" for n in range(40)]
    path = tmp_path / "toy.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def make_parser(before: int) -> LogParser:
        return LogParser(families=(_FirstReader, _SecondReader), lines_before=before)  # type: ignore[arg-type]

    whole = make_parser(0)
    expected = [(r.line, dict(r.metrics)) for r in whole.feed_block(lines)[0] + whole.finish()[0]]
    assert {name for _, metrics in expected for name in metrics} == {"first", "second"}
    totals = ReadTotals()
    payloads = read_in_parts(
        str(path),
        jobs=3,
        make_parser=make_parser,
        make_sink=_RecordLines,
        totals=totals,
        sizes=PartSizes(piece=150, part=2500, min_file=0),
    )
    assert [seen for payload in payloads for seen in payload] == expected
    assert totals.parts > 3


def test_parts_that_start_in_a_steady_log_are_joined_after_one_piece(tmp_path: Path) -> None:
    lines = [f"step {n}: train loss {n / 1e5:.4f}, time 10.0ms" for n in range(20_000)]
    path = tmp_path / "nanogpt.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sizes = PartSizes(piece=8 << 10, part=path.stat().st_size // 4 + 1, min_file=0)
    totals = ReadTotals()
    assert _outputs(path, 2, sizes, totals) == _outputs(path, 1, sizes)
    assert totals.parts == 4
    assert totals.parts_unused == 0
    # One piece of each later part was read twice: by its own process and by the one before.
    assert totals.pieces_read_again == 3


def test_a_file_without_a_final_newline_and_with_carriage_returns(tmp_path: Path) -> None:
    body = "".join(
        f"{{'loss': {n / 100}, 'learning_rate': 1e-05, 'epoch': 0.{n:02d}}}\r\n" for n in range(1, 99)
    )
    path = tmp_path / "hf.log"
    path.write_bytes(body.encode("utf-8") + b"  3%|3 | 3/100 [00:01<00:30, 3.1it/s]\r")
    sizes = PartSizes(piece=200, part=1000, min_file=0)
    assert _outputs(path, 2, sizes) == _outputs(path, 1, sizes)


def test_small_files_standard_input_and_one_job_are_read_in_this_process(tmp_path: Path) -> None:
    path = tmp_path / "small.log"
    path.write_text("step 1: train loss 1.0\n", encoding="utf-8")
    assert not can_read_in_parts(str(path), 2)
    assert can_read_in_parts(str(path), 2, PartSizes(min_file=0))
    assert not can_read_in_parts(str(path), 1, PartSizes(min_file=0))
    assert not can_read_in_parts("-", 2, PartSizes(min_file=0))
    assert not can_read_in_parts(str(tmp_path), 2, PartSizes(min_file=0))
    assert not can_read_in_parts(str(tmp_path / "missing.log"), 2, PartSizes(min_file=0))


class _FailingSink:
    def take(
        self, lines: list[str], records: list[LogRecord], events: list[LogEvent], blocks: list[ColumnBlock]
    ) -> None:
        raise ZeroDivisionError("a bug in a sink")

    def take_finish(self, records: list[LogRecord], events: list[LogEvent]) -> None:
        raise AssertionError("not reached")

    def payload(self) -> object:
        return None


class _DyingSink(_FailingSink):
    def take(
        self, lines: list[str], records: list[LogRecord], events: list[LogEvent], blocks: list[ColumnBlock]
    ) -> None:
        os._exit(3)


def _read_steady_log(tmp_path: Path, sink: type[_FailingSink]) -> list[object]:
    path = tmp_path / "steady.log"
    path.write_text("".join(f"step {n}: train loss 1.0\n" for n in range(2000)), encoding="utf-8")
    payloads = read_in_parts(
        str(path),
        jobs=2,
        make_parser=lambda before: LogParser(lines_before=before),
        make_sink=sink,
        totals=ReadTotals(),
        sizes=PartSizes(piece=1000, part=8000, min_file=0),
    )
    return list(payloads)


def test_a_failure_in_a_process_is_reported_with_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="ZeroDivisionError: a bug in a sink"):
        _read_steady_log(tmp_path, _FailingSink)


def test_a_process_that_dies_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(ParallelReadError, match=r"steady\.log: the process reading part \d+ died"):
        _read_steady_log(tmp_path, _DyingSink)


def test_a_file_cut_shorter_while_read_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "shrinking.log"
    path.write_text("".join(f"step {n}: train loss 1.0\n" for n in range(2000)), encoding="utf-8")
    size = path.stat().st_size
    with path.open("rb") as file:
        reader = _PartReader(file, size, LogParser(), JsonPieces())
        reader.read_own_piece(size, 1000)
        with path.open("r+b") as writer:
            writer.truncate(size // 2)
        with pytest.raises(FileChangedError):
            while reader.position < size:
                reader.read_own_piece(size, 1000)


def test_a_file_whose_line_ends_moved_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "rewritten.log"
    path.write_bytes(b"step 1: train loss 1.0\n" * 10)
    with path.open("rb") as file:
        reader = _PartReader(file, 230, LogParser(), JsonPieces())
        path.write_bytes(b"x" * 230)
        with pytest.raises(FileChangedError):
            reader.read_to(23)


def test_a_file_that_cannot_be_opened_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(ParallelReadError, match=r"missing\.log: cannot read"):
        read_in_parts(
            str(tmp_path / "missing.log"),
            jobs=2,
            make_parser=lambda before: LogParser(lines_before=before),
            make_sink=_FailingSink,
            totals=ReadTotals(),
        )


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(
        st.sampled_from([b"a", b"1", b" ", b"\n", b"\r", b"\xe2\x82\xac", b"\xe2\x82", b"\xff", b"\x1b["]),
        max_size=80,
    ).map(b"".join),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_pieces_decode_to_the_lines_parse_log_reads(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, cuts: list[int]
) -> None:
    """Cut anywhere just past a newline, the pieces' lines are the lines of the whole file as
    a text file's iterator gives them (undecodable bytes, redraws, a last line without its newline)."""
    path = tmp_path_factory.mktemp("decode") / "log"
    path.write_bytes(data)
    with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
        expected = [line.rstrip("\r\n") for line in handle]
    ends = sorted({data.find(b"\n", cut) + 1 for cut in cuts if data.find(b"\n", cut) >= 0} | {len(data)})
    got: list[str] = []
    start = 0
    for end in ends:
        if end > start:
            got += decode_lines(data[start:end], end == len(data))
            start = end
    assert got == expected


def test_parts_are_cut_just_past_a_newline(tmp_path: Path) -> None:
    rng = random.Random(7)
    data = b"".join(b"x" * rng.randrange(0, 300) + b"\n" for _ in range(500)) + b"tail"
    path = tmp_path / "log"
    path.write_bytes(data)
    with path.open("rb") as file:
        bounds = cut_parts(file, len(data), 9)
    assert bounds[0] == 0 and bounds[-1] == len(data)
    assert bounds == sorted(set(bounds))
    assert all(data[bound - 1 : bound] == b"\n" for bound in bounds[1:-1])
    assert len(bounds) - 1 == 9


def _absorbed(records: list[LogRecord], midway: bool) -> ParseSummary:
    summary = ParseSummary(path="p", midway=midway)
    summary.absorb(records, [])
    return summary


@settings(max_examples=200, deadline=None)
@given(
    fields=st.lists(
        st.tuples(
            st.none() | st.integers(0, 50),
            st.none() | st.sampled_from([1.0, 1.5, 2.0, 3.0]),
            st.none() | st.integers(0, 20),
            st.none() | st.sampled_from([0, 10, 20]),
            st.booleans(),
            st.none() | st.sampled_from([0, 1]),
        ),
        max_size=30,
    ),
    cut=st.integers(0, 30),
)
def test_a_summary_merged_from_two_parts_is_the_summary_of_the_whole(
    fields: list[tuple[int | None, float | None, int | None, int | None, bool, int | None]], cut: int
) -> None:
    """Progress points that need the epoch or batches per epoch from before the cut are settled when
    merged."""
    records = [
        LogRecord(
            line=at + 1,
            rank=rank,
            step=step,
            epoch=epoch,
            batch=batch,
            batches_per_epoch=per_epoch,
            timestamp=1000.0 + at if stamped else None,
            metrics={"loss": float(at)},
        )
        for at, (step, epoch, batch, per_epoch, stamped, rank) in enumerate(fields)
    ]
    whole = _absorbed(records, midway=False)
    merged = ParseSummary(path="p")
    merged.merge(_absorbed(records[:cut], midway=True))
    merged.merge(_absorbed(records[cut:], midway=True))
    assert merged.ranks.keys() == whole.ranks.keys()
    for rank_id, rank in whole.ranks.items():
        other = merged.ranks[rank_id]
        assert list(other.progress_points) == list(rank.progress_points)
        assert (other.step, other.epoch, other.batch, other.batches_per_epoch) == (
            rank.step,
            rank.epoch,
            rank.batch,
            rank.batches_per_epoch,
        )
        assert (other.records, other.last_line, other.metrics) == (rank.records, rank.last_line, rank.metrics)
    assert merged.record_count == whole.record_count


def test_a_rank_summary_keeps_its_bound_after_merges() -> None:
    merged = RankSummary()
    later = ParseSummary(path="p", midway=True)
    later.absorb([LogRecord(line=n, step=n, timestamp=float(n)) for n in range(1, 6000)], [])
    merged.merge(later.ranks[None])
    assert merged.progress_points.maxlen is not None
    assert len(merged.progress_points) == merged.progress_points.maxlen


def test_the_command_reads_a_large_log_in_parts_with_the_same_output(tmp_path: Path) -> None:
    """The real command, output to a pipe: a child process must not repeat what the parent had buffered."""
    unit = (LOGS / "nanogpt").glob("*.txt")
    text = "".join(log.read_text(encoding="utf-8") for log in sorted(unit))
    path = tmp_path / "big.log"
    with path.open("w", encoding="utf-8") as out:
        while out.tell() < (9 << 20):
            out.write(text)
    outputs = {}
    for jobs in ("1", "2"):
        for extra in ([], ["--json"]):
            done = subprocess.run(
                [sys.executable, "-m", "trainmon_tui", "parse-log", str(path), "--jobs", jobs, *extra],
                capture_output=True,
                check=True,
                cwd=ROOT,
            )
            outputs[jobs, bool(extra)] = done.stdout
    assert outputs["2", True] == outputs["1", True]
    assert outputs["2", False] == outputs["1", False]
    assert outputs["1", True].count(b'{"records": [') == 1


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_job_count_is_refused(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainmon_tui", "parse-log", "x.log", "--jobs", value],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "--jobs" in done.stderr
    assert "Traceback" not in done.stderr
