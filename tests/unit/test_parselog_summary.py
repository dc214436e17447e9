"""The text summary's fold of column-wise blocks (with_block_ends: block ends, held ETA points) against the
fold of every record, on fixture lines given timestamps, ranks and other digits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from trainmon_tui.model import LogRecord
from trainmon_tui.parselog_summary import ParseSummary, RankSummary, _line_record, with_block_ends
from trainmon_tui.parsers.trainlog.engine import LogParser

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
FOLDERS = ["nanogpt", "torchtitan", "hf_trainer", "keras", "fairseq", "megatron", "lightning"]


def _fixture_lines(folder: str, rng: random.Random, prefixed: bool) -> list[str]:
    """The folder's logs, then copies with other digits; with ``prefixed``, each line after a timestamp
    (a second apart) and one of two ranks, so a block's lines carry timestamps and several ranks."""
    lines: list[str] = []
    for path in sorted((LOGS / folder).glob("*.txt")):
        with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
            lines += [line.rstrip("\r\n") for line in handle]
    lines += [
        "".join(rng.choice("0123456789") if char.isdigit() and char.isascii() else char for char in line)
        for _ in range(4)
        for line in lines
    ]
    if not prefixed:
        return lines
    return [
        f"2024-05-01 {at // 3600 % 24:02d}:{at // 60 % 60:02d}:{at % 60:02d} [rank{rng.choice('01')}]: {line}"
        for at, line in enumerate(lines)
    ]


def _fold_both_ways(lines: list[str], midway: bool) -> tuple[ParseSummary, ParseSummary]:
    """The summary folded through with_block_ends, and the one folded from every record of every block."""
    parser = LogParser()
    fast = ParseSummary(path="p", midway=midway)
    slow = ParseSummary(path="p", midway=midway)
    for at in range(0, len(lines), 700):
        records, events, blocks = parser.feed_block_columns(lines[at : at + 700])
        every = sorted(records + [record for block in blocks for record in block.records()], key=_line)
        slow.absorb(every, events)
        fast.absorb(with_block_ends(records, blocks, fast), events)
    assert not fast.held_points
    return fast, slow


def _line(record: LogRecord) -> int:
    return record.line


def _state(rank: RankSummary) -> tuple[object, ...]:
    return (
        rank.step,
        rank.total_steps,
        rank.epoch,
        rank.total_epochs,
        rank.batch,
        rank.batches_per_epoch,
        list(rank.metrics.items()),
        rank.last_line,
        rank.records,
        list(rank.progress_points),
        rank.open_points,
    )


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("prefixed", [False, True])
@pytest.mark.parametrize("midway", [False, True])
def test_block_ends_and_held_points_fold_as_every_record(folder: str, prefixed: bool, midway: bool) -> None:
    lines = _fixture_lines(folder, random.Random(folder), prefixed)
    fast, slow = _fold_both_ways(lines, midway)
    assert fast.record_count == slow.record_count
    assert fast.ranks.keys() == slow.ranks.keys()
    for rank_id, rank in slow.ranks.items():
        # NaN points (open ones, settled when merged) compare by their text.
        assert repr(_state(fast.ranks[rank_id])) == repr(_state(rank))


def test_the_prefixed_lines_make_blocks_with_timestamps_and_several_ranks() -> None:
    """What the test above relies on to reach the held points of blocks of several ranks."""
    lines = _fixture_lines("torchtitan", random.Random(0), prefixed=True)
    _records, _events, blocks = LogParser().feed_block_columns(lines)
    assert any(block.has_timestamps() and isinstance(block.rank, list) for block in blocks)
    held = ParseSummary(path="p")
    with_block_ends([], blocks, held)
    assert {0, 1} <= held.held_points.keys()


def test_a_line_record_is_the_blocks_record() -> None:
    checked = 0
    for folder in FOLDERS:
        for prefixed in (False, True):
            lines = _fixture_lines(folder, random.Random(folder), prefixed)
            _records, _events, blocks = LogParser().feed_block_columns(lines)
            for block in blocks:
                stamps = block.timestamps()
                made = [_line_record(block, at, stamps) for at in range(len(block.numbers))]
                assert repr(made) == repr(block.records())
                checked += 1
    assert checked > 30
