"""DmonParser.feed_lines (a burst of lines at once) against feed (line by line) on every dmon capture.

The burst reader must give exactly what feeding the same lines one by one gives: the same samples in the same
order, the same foreign lines, and a parser in the same state for the lines after the burst (headers and
units lines in the middle of a burst change the layout of the rows after them). Captures are cut into bursts
at random, with headers printed again, layouts changed, and rows spoiled the ways real output is spoiled.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import GpuSample
from trainmon_tui.parsers.dmon import DmonParser

FIXTURES = Path(__file__).parent.parent / "fixtures"
# Every dmon capture under tests/fixtures (copies of the shared corpus' dmon/, tests/fixtures/dmon/SOURCES.md
# says where each comes from), with those kept for the fleet, integration and report tests.
CAPTURES = sorted(path for path in FIXTURES.rglob("*.txt") if "dmon" in path.name)
PMON = sorted((FIXTURES / "pmon").glob("*.txt"))
_UUID = "GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce"


def capture_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if "quoted" in path.name:
        # The markdown blockquote a GitHub issue wrapped this capture in (`> ` prefix, `\#` escape).
        lines = [line.removeprefix("> ").replace("\\#", "#", 1) for line in lines]
    return lines


def is_comment(line: str) -> bool:
    return line.lstrip()[:1] == "#"


def parsers(inventory: bool = False) -> tuple[DmonParser, DmonParser]:
    known = {0: GpuSample(gpu=0, fb_total_mib=97887, power_limit_w=300.0, uuid=_UUID, name="GPU zero")}
    return DmonParser(inventory=known if inventory else None), DmonParser(
        inventory=known if inventory else None
    )


def fingerprint(samples: Sequence[GpuSample | None]) -> list[tuple[object, ...]]:
    """Everything a reader can tell about each sample: its type, its fields (repr tells 1 from 1.0), its
    extras as a plain dict, and equality with GpuSample built from its fields."""
    return [
        (type(s), repr(s), dict(s.extra), s == GpuSample(**{name: getattr(s, name) for name in s.__slots__}))
        for s in samples
        if s is not None
    ]


def state(parser: DmonParser) -> tuple[object, ...]:
    """The parser's state that decides how the next lines read."""
    layout = parser._layout
    return (
        parser.columns,
        None if layout is None else layout.right_edges,
        dict(parser._bus_order),
        parser._inventory,
    )


def read_line_by_line(parser: DmonParser, lines: Sequence[str]) -> tuple[list[GpuSample], list[str]]:
    samples: list[GpuSample] = []
    foreign: list[str] = []
    for line in lines:
        sample = parser.feed(line)
        if sample is not None:
            samples.append(sample)
        elif line.strip() and not is_comment(line):
            foreign.append(line)
    return samples, foreign


def assert_bursts_read_as_lines(
    lines: Sequence[str], cuts: Sequence[int], *, inventory: bool = False
) -> list[GpuSample]:
    """Feed ``lines`` one by one to one parser and cut at ``cuts`` into bursts to another; both must agree
    after every burst."""
    by_line, by_burst = parsers(inventory)
    start = 0
    everything: list[GpuSample] = []
    for end in [*sorted(cuts), len(lines)]:
        burst = lines[start:end]
        expected, expected_foreign = read_line_by_line(by_line, burst)
        foreign: list[str] = []
        got = by_burst.feed_lines(burst, foreign)
        assert fingerprint(got) == fingerprint(expected), (start, end)
        assert foreign == expected_foreign
        assert state(by_burst) == state(by_line)
        everything += got
        start = end
    return everything


def random_cuts(rng: random.Random, length: int) -> list[int]:
    cuts: list[int] = []
    at = 0
    while at < length:
        at += rng.choice([1, 2, 3, 8, 8, 8, 9, 10, 16, 40])
        cuts.append(min(at, length))
    return cuts


def spoiled(rng: random.Random, line: str) -> str:
    """A row spoiled the ways real output is: values dmon cannot read, a bus id, touching or cut columns."""
    tokens = line.split()
    if not tokens or is_comment(line):
        return line
    choice = rng.randrange(11)
    if choice == 0:
        return line.replace(" - ", "N/A", 1) if " - " in line else line.replace("  -", "N/A", 1)
    if choice == 1:
        return line.replace(tokens[-1], rng.choice(["1e999", "nan", "1_0", "inf", "ERR!", "-1e999"]), 1)
    if choice == 2:
        index = tokens.index(next(token for token in tokens if token.isdigit()))
        bus_id = rng.choice(["00000000:C1:00.0", "0000:01:00.0", "41:00.0"])
        return line.replace(f" {tokens[index]} ", f" {bus_id} ", 1)
    if choice == 3:
        return line[: rng.randrange(len(line))]
    if choice == 4:
        # A value as wide as its column touches its left neighbour (legacy fixed-width columns).
        return line.replace("     0 ", "    0111651 ", 1)
    if choice == 5:
        return line + "\r"
    if choice == 6:
        return rng.choice(["", "   ", "\t", "loop_count=262 elapsed=15.030 last_wall_seconds=0.0513"])
    if choice == 7:
        return "  " + line.replace(tokens[0], "9" * 400, 1)
    if choice == 8:
        return line.replace(tokens[-1], "\u0663", 1)  # ARABIC-INDIC DIGIT THREE: float() reads it
    if choice == 9:
        # `-o DT` columns one digit short or long, or a time with its colons moved.
        return re.sub(
            rng.choice([r"\b([0-9]{7})[0-9]\b", r"\b([0-9]{8})\b", r"\b([0-9]{2}):([0-9]{2}):"]),
            rng.choice([r"\1", r"\g<1>0", r"\1::"]),
            line,
            count=1,
        )
    return line


def mixed_stream(rng: random.Random, path: Path, *, spoil: bool) -> list[str]:
    """The capture played three times over, its headers printed again at random places, another capture's
    layout (and a pmon table) in between, and, with ``spoil``, spoiled rows."""
    lines = capture_lines(path)
    headers = [line for line in lines if is_comment(line)]
    other = capture_lines(rng.choice(CAPTURES))
    stream: list[str] = []
    for _ in range(3):
        for line in lines:
            if headers and rng.random() < 0.1:
                stream += headers
            if rng.random() < 0.03:
                stream += headers[:1]
            stream.append(spoiled(rng, line) if spoil and rng.random() < 0.3 else line)
    return [*stream, *other, *PMON[0].read_text(encoding="utf-8").splitlines()[:4], *stream]


def test_captures_are_found() -> None:
    assert len(CAPTURES) >= 10


@pytest.mark.parametrize("path", CAPTURES, ids=lambda path: f"{path.parent.name}/{path.name}")
@pytest.mark.parametrize("seed", range(4))
def test_random_bursts_read_as_line_by_line(path: Path, seed: int) -> None:
    rng = random.Random(f"{path.name}/{seed}")
    lines = mixed_stream(rng, path, spoil=False)
    samples = assert_bursts_read_as_lines(lines, random_cuts(rng, len(lines)), inventory=seed % 2 == 1)
    assert samples


@pytest.mark.parametrize("path", CAPTURES, ids=lambda path: f"{path.parent.name}/{path.name}")
@pytest.mark.parametrize("seed", range(6))
def test_random_bursts_with_spoiled_rows_read_as_line_by_line(path: Path, seed: int) -> None:
    rng = random.Random(f"spoiled {path.name}/{seed}")
    lines = mixed_stream(rng, path, spoil=True)
    assert_bursts_read_as_lines(lines, random_cuts(rng, len(lines)), inventory=seed % 2 == 0)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_whole_capture_in_one_burst(path: Path) -> None:
    lines = capture_lines(path)
    assert_bursts_read_as_lines(lines, [])
    # Header and rows in one burst, then the rows again as bursts of one interval each.
    rows = [line for line in lines if not is_comment(line)]
    assert_bursts_read_as_lines(lines + rows * 4, [len(lines) + len(rows) * n for n in range(4)])


class LineCountingParser(DmonParser):
    """A DmonParser that lists the lines it read one by one."""

    __slots__ = ("fed",)

    def __init__(self) -> None:
        super().__init__()
        self.fed: list[str] = []

    def feed(self, line: str) -> GpuSample | None:
        self.fed.append(line)
        return super().feed(line)


def test_a_burst_of_rows_is_read_at_once() -> None:
    # The common case, 8 GPUs' rows of the layout in force, is read without feed(): each sample is built
    # from the whole burst's columns.
    lines = capture_lines(FIXTURES / "dmon" / "dmon_gpm_metrics_8gpu_h800.txt")
    parser = LineCountingParser()
    parser.feed_lines(lines[:2])
    samples = parser.feed_lines(lines[2:])
    assert parser.fed == [] and [sample.gpu for sample in samples] == list(range(8))
    # A burst holding one odd row goes line by line; it reads the same (the other tests check how).
    parser.feed_lines([lines[2].replace(" 56 ", "N/A ", 1), *lines[3:]])
    assert len(parser.fed) == 8
    # The eight rows share one list of values; each row's extras read their own part of it.
    assert samples[0].extra["gract"] is None and samples[1].extra["gract"] == 0
    assert [sample.power_w for sample in samples] == [56, 55, 54, 57, 55, 54, 56, 54]


def test_inventory_set_between_bursts_reaches_the_rows_after_it() -> None:
    lines = capture_lines(FIXTURES / "dmon" / "dmon_s_pucm_blackwell_4gpu_driver595.txt")
    parser = DmonParser()
    first = parser.feed_lines(lines)
    parser.set_inventory({1: GpuSample(gpu=1, power_limit_w=250.0, uuid=_UUID)})
    second = parser.feed_lines(lines[2:])
    assert [s.power_limit_w for s in first] == [None] * 4
    assert [(s.power_limit_w, s.uuid) for s in second] == [(None, None), (250.0, _UUID), *[(None, None)] * 2]


def test_date_time_rows_read_at_once_keep_their_printed_time() -> None:
    lines = capture_lines(FIXTURES / "dmon" / "dmon_o_DT_s_pucet_sbecc_dbecc_dash.txt")
    samples = DmonParser().feed_lines(lines)
    assert [s.printed_time for s in samples] == [
        "20210102 19:12:31",
        "20210102 19:12:33",
        "20210102 19:12:35",
    ]
    # A time dmon would never print but feed() takes (`_is_time` looks at length and colons) still reads.
    odd = lines[3].replace("19:12:33", "19:1::33")
    assert_bursts_read_as_lines([*lines, odd, lines[4]], [])


_DATE_TIME_CAPTURES = [path for path in CAPTURES if "_o_DT_" in path.name or "_o_TD_" in path.name]


@pytest.mark.parametrize("path", _DATE_TIME_CAPTURES, ids=lambda path: path.name)
@pytest.mark.parametrize(
    ("printed", "variant"),
    [
        ("20210102", "2021010"),
        ("20210102", "202101020"),
        ("20210102", "2021O102"),
        ("20210102", "2021\u0660102"),  # ARABIC-INDIC DIGIT ZERO: isdigit() but not ASCII
        ("19:12:33", "19:12:3"),
        ("19:12:33", "19:12:333"),
        ("19:12:33", "1912:333"),
        ("19:12:33", "19:1::33"),
        ("19:12:33", "::::::::"),
        ("19:12:33", "19-12-33"),
        ("19:12:33", "19:12:\u0663\u0663"),
    ],
)
def test_odd_dates_and_times_in_a_burst_read_as_line_by_line(path: Path, printed: str, variant: str) -> None:
    lines = capture_lines(path)
    headers = [line for line in lines if is_comment(line)]
    rows = [line for line in lines if line.strip() and not is_comment(line)]
    date, time = rows[0].split()[:2] if rows[0].split()[0].isdigit() else reversed(rows[0].split()[:2])
    odd = rows[0].replace(date if printed.isdigit() else time, variant, 1)
    assert odd != rows[0]
    # Enough rows around it for the burst to be read at once, were it not for the odd one.
    assert_bursts_read_as_lines([*headers, rows[1], odd, rows[1], rows[2], rows[1], rows[2]], [])


def test_bus_ids_read_in_a_burst_number_gpus_in_order() -> None:
    lines = capture_lines(FIXTURES / "dmon" / "dmon_s_pucm_blackwell_4gpu_driver595.txt")
    rows = [line.replace(f"    {gpu} ", f"0000:{gpu + 1:02x}:00.0 ", 1) for gpu, line in enumerate(lines[2:])]
    samples = assert_bursts_read_as_lines([*lines[:2], *rows, *reversed(rows)], [])
    assert [s.gpu for s in samples] == [0, 1, 2, 3, 3, 2, 1, 0]


# ------------------------------------------------------------------------------------------- properties

_REAL_LINES = sorted({line for path in CAPTURES for line in capture_lines(path)} | {""})
_FRAGMENTS = st.sampled_from(
    [
        *(
            "#",
            "# gpu",
            "#Date",
            "Time",
            "gpu",
            "Idx",
            "pwr",
            "temp",
            "sm",
            "fb",
            "pid",
            "-",
            "0",
            "7",
            "N/A",
        ),
        *(
            "00000000:01:00.0",
            "20210102",
            "19:12:31",
            "12345",
            "1.5",
            "nan",
            "1e999",
            "\t",
            " ",
            "\r",
            "\x00",
        ),
    ]
)
_LINES = st.one_of(
    st.sampled_from(_REAL_LINES),
    st.sampled_from(_REAL_LINES),
    st.lists(_FRAGMENTS, max_size=12).map(" ".join),
    st.text(max_size=80),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINES, max_size=40), st.lists(st.integers(min_value=0, max_value=40), max_size=8))
def test_bursts_of_real_lines_and_junk_read_as_line_by_line(lines: list[str], cuts: list[int]) -> None:
    assert_bursts_read_as_lines(lines, [min(cut, len(lines)) for cut in cuts])


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_feed_lines_never_raises_on_any_text(text: str) -> None:
    samples = DmonParser().feed_lines(text.splitlines(), [])
    assert all(type(sample) is GpuSample for sample in samples)
