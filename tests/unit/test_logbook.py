"""The log book: bounded raw lines per file with their numbers, cleaned and masked on read, frozen views,
events that name their file, picking the file a drill-down means, and the merged view of a run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_log_collector import (
    RUN,
    FakeRunner,
    Running,
    fixture_lines,
    make_collector,
    run_config,
    until,
    write,
)
from trainmon_tui.model import EventKind
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.logbook import (
    CHUNK_LINES,
    MAX_LINE_CHARS,
    LogBook,
    LogFileView,
    MergedLog,
    display_text,
    pick_file,
)
from trainmon_tui.state.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TQDM_LOG = FIXTURES / "log_collector" / "hf_trainer_tqdm_lines_numbered_then_nccl_timeout.txt"
OOM_TRACEBACK = FIXTURES / "errors" / "cuda_oom_forward_traceback_b200_py312.txt"
NCCL_RANKS = FIXTURES / "errors" / "nccl_watchdog_timeout_rankN_prefix_glog_pt25.txt"
RAW_CR_LOG = FIXTURES / "logs" / "hf_trainer" / "hf_trainer_raw_cr_tqdm_then_keyboardinterrupt.txt"
TEE_LOG = FIXTURES / "logs" / "torchrun" / "torchrun_tee3_role_host_rank_prefix_interleaved_traceback.txt"
# Not a real key: 40 hex digits, the shape of a W&B API key (as in test_sanitize.py).
FAKE_WANDB_KEY = "3f9a1c2e4b5d6a7f8091a2b3c4d5e6f708192a3b"


def raw_lines(path: Path) -> list[str]:
    """A fixture's physical lines with their \\r redraws (read_text would turn each \\r into a line break)."""
    return path.read_bytes().decode("utf-8").split("\n")


def append_one_by_one(store: Store, host: str, path: str, lines: list[str], *, start: int = 1) -> None:
    for offset, line in enumerate(lines):
        store.append_log_lines(RUN, host, path, [line], 100.0 + offset, first_line=start + offset)


def only_view(store: Store, now: float = 0.0) -> LogFileView:
    (view,) = store.snapshot(now).logs(RUN)
    return view


# ----------------------------------------------------------------------------------------------- bounds


def test_the_newest_lines_are_kept_with_their_numbers_within_the_bound() -> None:
    tqdm = fixture_lines(TQDM_LOG)
    lines = [tqdm[index % len(tqdm)] for index in range(3000)]
    store = Store(log_lines_per_file=1000)
    append_one_by_one(store, "node-0", "/logs/rank0.log", lines)
    view = only_view(store)
    assert view.end_line == 3001
    assert 1000 <= len(view) < 1000 + CHUNK_LINES
    # Whole chunks go: the oldest line held starts one.
    assert (view.first_line - 1) % CHUNK_LINES == 0
    assert view.line(view.first_line - 1) is None
    assert view.line(3001) is None
    assert view.line(2999) == clean_remote_text(lines[2998])
    assert view.line(2999) == "[1759]   1%|          | 20/1752 [00:57<1:22:40,  2.86s/it]"
    held = view.lines(1, 5000)
    assert held == [clean_remote_text(line) for line in lines[view.first_line - 1 :]]
    assert view.lines(2998, 3000) == [clean_remote_text(lines[2997]), clean_remote_text(lines[2998])]
    assert view.last_t == 100.0 + 2999


def test_a_line_longer_than_the_limit_is_cut_and_says_so() -> None:
    banner = fixture_lines(TQDM_LOG)[14]
    long_line = banner * (MAX_LINE_CHARS // len(banner) + 2)
    store = Store()
    store.append_log_lines(RUN, "node-0", "/logs/rank0.log", [long_line], 1.0, first_line=1)
    shown = only_view(store).line(1)
    assert shown is not None
    assert shown.startswith(long_line[:MAX_LINE_CHARS])
    assert shown.endswith(f"[... {len(long_line) - MAX_LINE_CHARS} more characters]")


def test_a_run_keeps_a_bounded_number_of_files_dropping_the_least_recently_written() -> None:
    book = LogBook(files_per_run=2)
    line = fixture_lines(TQDM_LOG)[1]
    book.append(RUN, "node-0", "rank0.log", [line], 1.0, first_line=1)
    book.append(RUN, "node-0", "rank1.log", [line], 2.0, first_line=1)
    book.append(RUN, "node-0", "rank0.log", [line], 3.0, first_line=2)
    book.append(RUN, "node-0", "rank2.log", [line], 4.0, first_line=1)
    assert [view.path for view in book.views()[RUN]] == ["rank0.log", "rank2.log"]


def test_numbering_that_restarts_starts_the_file_over() -> None:
    lines = fixture_lines(TQDM_LOG)
    store = Store()
    append_one_by_one(store, "node-0", "rank0.log", lines[:10])
    before = only_view(store)
    # Another reader took the file over after lines were missed: numbering jumps to 50.
    append_one_by_one(store, "node-0", "rank0.log", lines[10:12], start=50)
    after = only_view(store)
    assert (after.first_line, after.end_line) == (50, 52)
    assert after.line(50) == lines[10]
    assert before.line(5) == lines[4]


# ------------------------------------------------------------------------------------- cleaning on read


def test_reading_makes_control_sequences_inert_and_masks_secrets_while_the_raw_line_is_kept() -> None:
    line = fixture_lines(TQDM_LOG)[13]
    hostile = [
        f"\x1b]0;pwned title\x07{line}",
        f"\x1b[2J\x1b[H{line}",
        f"export WANDB_API_KEY={FAKE_WANDB_KEY}",
    ]
    store = Store()
    append_one_by_one(store, "node-0", "rank0.log", hostile)
    view = only_view(store)
    assert view.lines(1, 4) == [line, line, "export WANDB_API_KEY=***"]
    assert all("\x1b" not in text for text in view.lines(1, 4))
    assert view.raw_line(1) == hostile[0]
    assert view.raw_line(3) == hostile[2]
    # Cleaned once, then served from the cache: the same string object every time.
    assert view.line(3) is view.line(3)


def test_carriage_return_redraws_show_what_a_terminal_would() -> None:
    lines = raw_lines(RAW_CR_LOG)
    redrawn = next(line for line in lines if line.startswith("\r  0%"))
    pieces = [piece for piece in redrawn.split("\r") if piece.strip()]
    assert len(pieces) > 100
    assert display_text(redrawn) == pieces[-1]
    assert "\r" not in display_text(redrawn)


# ------------------------------------------------------------------------------------------ snapshots


def test_a_view_never_changes_after_its_snapshot() -> None:
    lines = fixture_lines(TQDM_LOG)
    many = [lines[index % len(lines)] for index in range(600)]
    store = Store(log_lines_per_file=300)
    append_one_by_one(store, "node-0", "rank0.log", many[:299])
    version = store.version
    old = only_view(store)
    old_text = old.lines(1, 300)
    assert (old.first_line, old.end_line) == (1, 300)
    append_one_by_one(store, "node-0", "rank0.log", many[299:], start=300)
    assert store.version == version + 301
    new = only_view(store, 1.0)
    assert new.first_line > 1 and new.end_line == 601
    # The old view still holds exactly what it held, though the book dropped those lines since.
    assert (old.first_line, old.end_line, len(old)) == (1, 300, 299)
    assert old.lines(1, 1000) == old_text
    assert old.line(300) is None
    assert new.line(1) is None


def test_an_unchanged_file_shares_its_view_between_snapshots() -> None:
    lines = fixture_lines(TQDM_LOG)
    store = Store()
    append_one_by_one(store, "node-0", "rank0.log", lines[:3])
    append_one_by_one(store, "node-1", "rank1.log", lines[:3])
    first = store.snapshot(1.0).logs(RUN)
    store.append_log_lines(RUN, "node-1", "rank1.log", [lines[3]], 2.0, first_line=4)
    second = store.snapshot(2.0).logs(RUN)
    assert second[0] is first[0]
    assert second[1] is not first[1] and second[1].end_line == 5
    assert store.snapshot(3.0).logs("no such run") == ()


# ------------------------------------------------------------------------------ through the collector


async def test_collected_lines_and_events_name_their_file_and_line(tmp_path: Path) -> None:
    rank3 = write(tmp_path / "train-rank3.log", [])
    rank5 = write(tmp_path / "train-rank5.log", [])
    runner, store = FakeRunner("node-1"), Store()
    running = Running(make_collector(runner, store, run_config(str(tmp_path / "train-rank*.log"))))
    try:
        await until(lambda: len(runner.open_streams()) == 2)
        oom = fixture_lines(OOM_TRACEBACK)
        tqdm = fixture_lines(TQDM_LOG)
        runner.stream_for(rank5).push(tqdm)
        runner.stream_for(rank3).push(tqdm[:4] + oom)
        await until(
            lambda: sum(len(view) for view in store.snapshot(0.0).logs(RUN)) == len(tqdm) + 4 + len(oom)
        )
        # Let the collector finish the traceback it may still hold.
        await asyncio.sleep(0.01)
    finally:
        await running.stop()
    snapshot = store.snapshot(0.0)
    views = {Path(view.path).name: view for view in snapshot.logs(RUN)}
    assert views["train-rank3.log"].rank == 3 and views["train-rank5.log"].rank == 5
    assert views["train-rank3.log"].lines(1, 100) == tqdm[:4] + oom
    events = snapshot.runs[RUN].events
    ooms = [entry for entry in events if entry.event.kind is EventKind.OOM]
    assert ooms and all(entry.path == str(rank3) for entry in ooms)
    # Every event points at a line of its own file that says what the event says.
    for entry in events:
        assert entry.path is not None
        view = views[Path(entry.path).name]
        shown = view.line(entry.event.line)
        assert shown is not None
        assert entry.event.text[:30] in shown or entry.event.kind is EventKind.TRACEBACK


def test_parser_line_numbers_match_the_book() -> None:
    # The collector numbers lines as its parser counts them; check the two agree on a real log.
    lines = fixture_lines(NCCL_RANKS)
    parser = LogParser()
    store = Store()
    for number, line in enumerate(lines, start=1):
        _, events = parser.feed(line)
        store.append_log_lines(RUN, "node-0", "all.log", [line], 1.0, first_line=number, ranks=parser.ranks)
        for event in events:
            store.apply_event(RUN, "node-0", event, 1.0, path="all.log")
    snapshot = store.snapshot(1.0)
    view = snapshot.logs(RUN)[0]
    # One log for ranks 0-2 (torchrun prefixes): no single rank, all three known.
    assert view.rank is None and view.ranks == frozenset({0, 1, 2})
    timeouts = [entry for entry in snapshot.runs[RUN].events if entry.event.kind is EventKind.NCCL_TIMEOUT]
    assert {entry.event.rank for entry in timeouts} == {0, 1, 2}
    for entry in timeouts:
        shown = view.line(entry.event.line)
        assert shown is not None and "Watchdog caught collective operation timeout" in shown
        assert shown.startswith(f"[rank{entry.event.rank}]:")


# ------------------------------------------------------------------------------------------- picking


def _views_for_picking() -> tuple[LogFileView, ...]:
    tee = fixture_lines(TEE_LOG)
    store = Store()
    parser = LogParser()
    for number, line in enumerate(tee, start=1):
        parser.feed(line)
        store.append_log_lines(
            RUN, "host1", "/runs/all.log", [line], 1.0, first_line=number, ranks=parser.ranks
        )
    append_one_by_one(store, "node-0", "/runs/rank0.log", tee[:2])
    append_one_by_one(store, "node-0", "/runs/rank1.log", tee[:2])
    append_one_by_one(store, "node-1", "/runs/rank7.log", tee[:2])
    return store.snapshot(1.0).logs(RUN)


def test_pick_file_by_path_then_by_host_and_rank() -> None:
    views = _views_for_picking()
    picked = pick_file(views, host=None, rank=None, path="/runs/rank1.log")
    assert picked is not None and picked.path == "/runs/rank1.log"
    assert pick_file(views, host="node-1", rank=None, path="/runs/rank1.log") is None
    by_rank = pick_file(views, host="node-0", rank=1, path=None)
    assert by_rank is not None and by_rank.path == "/runs/rank1.log"
    # The shared torchrun log names ranks 0-3 in its prefixes: rank 2 on host1 is in it.
    shared = pick_file(views, host="host1", rank=2, path=None)
    assert shared is not None and shared.path == "/runs/all.log"
    assert shared.ranks == frozenset({0, 1, 2, 3})
    # Rank 7 is not on node-0: the file of that rank on another host is next best.
    elsewhere = pick_file(views, host="node-0", rank=7, path=None)
    assert elsewhere is not None and elsewhere.host == "node-1"
    assert pick_file(views, host="node-0", rank=42, path=None) is None
    single = pick_file(views, host="node-1", rank=None, path=None)
    assert single is not None and single.path == "/runs/rank7.log"


# --------------------------------------------------------------------------------------------- merged


def _merged_text(log: MergedLog) -> list[tuple[str, int, str | None]]:
    merged = log.lines()
    out = []
    for index in range(len(merged)):
        entry = merged.entry(index)
        out.append((entry.view.path, entry.number, entry.view.line(entry.number)))
    return out


def test_merged_log_interleaves_files_in_arrival_order() -> None:
    tqdm = fixture_lines(TQDM_LOG)
    nccl = fixture_lines(NCCL_RANKS)
    store = Store()
    store.append_log_lines(RUN, "n0", "rank0.log", tqdm[:2], 1.0, first_line=1)
    store.append_log_lines(RUN, "n1", "rank1.log", nccl[:1], 1.0, first_line=1)
    store.append_log_lines(RUN, "n0", "rank0.log", tqdm[2:3], 2.0, first_line=3)
    merged = MergedLog()
    assert merged.update(store.snapshot(2.0).logs(RUN))
    assert _merged_text(merged) == [
        ("rank0.log", 1, tqdm[0]),
        ("rank0.log", 2, tqdm[1]),
        ("rank1.log", 1, nccl[0]),
        ("rank0.log", 3, tqdm[2]),
    ]
    assert not merged.update(store.snapshot(3.0).logs(RUN))
    before = merged.lines()
    store.append_log_lines(RUN, "n1", "rank1.log", nccl[1:3], 4.0, first_line=2)
    assert merged.update(store.snapshot(4.0).logs(RUN))
    # What was listed before the update stays as it was.
    assert len(before) == 4 and before.entry(3).number == 3
    with pytest.raises(IndexError):
        before.entry(4)
    assert _merged_text(merged)[-2:] == [("rank1.log", 2, nccl[1]), ("rank1.log", 3, nccl[2])]
    assert merged.lines().index_of("n1", "rank1.log", 2) == 4
    assert merged.lines().index_of("n0", "rank0.log", 9) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 40), st.booleans(), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_merged_log_updated_step_by_step_equals_one_built_at_once(
    steps: list[tuple[int, int, bool, bool]],
) -> None:
    """Whatever the appends, drops and restarts between updates, the incremental merge lists exactly the held
    lines in arrival order."""
    source = fixture_lines(TQDM_LOG)
    book = LogBook(lines_per_file=CHUNK_LINES)
    next_line = [1, 1, 1]
    incremental = MergedLog()
    arrival_order: list[tuple[str, int]] = []
    for file_index, count, restart, update in steps:
        path = f"rank{file_index}.log"
        if restart:
            next_line[file_index] = 1
            arrival_order = [item for item in arrival_order if item[0] != path]
        lines = [source[(next_line[file_index] + k) % len(source)] for k in range(count)]
        book.append(RUN, "n0", path, lines, 1.0, first_line=next_line[file_index])
        arrival_order.extend((path, next_line[file_index] + k) for k in range(count))
        next_line[file_index] += count
        if update:
            incremental.update(book.views()[RUN])
    views = book.views()[RUN]
    incremental.update(views)
    at_once = MergedLog()
    at_once.update(views)
    held = {view.path: view for view in views}
    expected = [item for item in arrival_order if held[item[0]].holds(item[1])]
    listed = incremental.lines()
    assert [(line.view.path, line.number) for line in map(listed.entry, range(len(listed)))] == expected
    built = at_once.lines()
    assert [(line.view.path, line.number) for line in map(built.entry, range(len(built)))] == expected


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="lines_per_file"):
        LogBook(lines_per_file=0)
