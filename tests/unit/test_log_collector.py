"""The log collector: listing on the host, one parser per file, shared tails, claims, restarts, run status.

The collector runs against a fake runner whose ``run`` executes the real listing script on files under the
test's temporary directory (so globbing, quoting and the listing format are the real thing) and whose
``stream`` hands out fake ``tail`` streams the tests feed with lines of real training logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.config import MetricPattern, RunConfig
from trainmon_tui.model import EventKind
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.state.store import LogStatus, RunSnapshot, Store
from trainmon_tui.transport.log_collector import (
    HEAD_BYTES,
    FileClaims,
    FileIdentity,
    FileProgress,
    LogCollector,
    ReplaySkipper,
    TailDemux,
    list_argv,
    parse_listing,
    tail_argv,
    tail_exit_reason,
)
from trainmon_tui.transport.session import DownReason, HostDownError
from trainmon_tui.transport.streams import CommandResult, StreamLostError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "log_collector"
TQDM_LOG = FIXTURES / "hf_trainer_tqdm_lines_numbered_then_nccl_timeout.txt"
LOSS_DICT_LOG = FIXTURES / "hf_trainer_buffered_loss_dicts_after_bar_train_runtime.txt"
OOM_LOG = FIXTURES / "cuda_oom_pt22_expandable_segments_hint.txt"
RUN = "llama"
TAIL_LINES = 50


def fixture_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


# --------------------------------------------------------------------------------------------- fakes


class FakeStream:
    """A `tail` that prints what the test pushes; ends when told to, or loses its connection."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = tuple(argv)
        self._items: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self.exit_status: int | None = None
        self.stderr_tail = ""
        self.closed = False

    @property
    def paths(self) -> tuple[str, ...]:
        return self.argv[self.argv.index("--") + 1 :]

    async def __aenter__(self) -> FakeStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> str:
        item = await self._items.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def push(self, lines: Sequence[str]) -> None:
        for line in lines:
            self._items.put_nowait(line)

    def end(self, exit_status: int, stderr: str) -> None:
        self.exit_status = exit_status
        self.stderr_tail = stderr
        self._items.put_nowait(None)

    def lose(self) -> None:
        self._items.put_nowait(StreamLostError(DownReason.CONNECTION_LOST, "connection closed"))


class FakeRunner:
    """Runs short commands (the listing script) for real on this machine; streams are fakes."""

    is_local = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.streams: list[FakeStream] = []
        self.listings = 0
        self.fail_runs: list[BaseException] = []
        # Run (once each) after a listing has measured the files, before its result is returned.
        self.after_listing: list[Callable[[], Awaitable[None]]] = []

    async def wait_up(self, timeout: float | None = None) -> None:
        return None

    def stream(self, argv: Sequence[str]) -> FakeStream:
        stream = FakeStream(argv)
        self.streams.append(stream)
        return stream

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.listings += 1
        if self.fail_runs:
            raise self.fail_runs.pop(0)
        process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except BaseException:
            # Cancelled with the collector: reap the listing before the test's event loop goes.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            raise
        assert process.returncode is not None
        if self.after_listing:
            await self.after_listing.pop(0)()
        return CommandResult(process.returncode, stdout.decode(), stderr.decode())

    def open_streams(self) -> list[FakeStream]:
        return [stream for stream in self.streams if not stream.closed]

    def stream_for(self, path: Path) -> FakeStream:
        found = [stream for stream in self.open_streams() if str(path) in stream.paths]
        assert len(found) == 1, f"{path}: {[stream.argv for stream in self.open_streams()]}"
        return found[0]


class FakeClock:
    def __init__(self) -> None:
        self._ticks = itertools.count(1000)

    def __call__(self) -> float:
        return float(next(self._ticks))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def run_config(*patterns: str, metrics: tuple[MetricPattern, ...] = ()) -> RunConfig:
    return RunConfig(name=RUN, hosts=("node-0",), logs=patterns, metrics=metrics, tail_lines=TAIL_LINES)


def run_snapshot(store: Store) -> RunSnapshot:
    return store.snapshot(0.0).runs[RUN]


def samples(store: Store, name: str, rank: int | None) -> int:
    """How many values of a metric the store holds for a rank (0 before the run exists)."""
    run = store.snapshot(0.0).runs.get(RUN)
    metric = None if run is None else run.metric(name, rank)
    return 0 if metric is None else metric.samples


def has_status(store: Store) -> bool:
    run = store.snapshot(0.0).runs.get(RUN)
    return run is not None and bool(run.log_status)


class Running:
    """A collector's run() as a task, cancelled (and checked to end) at the end of the test."""

    def __init__(self, collector: LogCollector) -> None:
        self.collector = collector
        self.task = asyncio.get_running_loop().create_task(collector.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait({self.task})
        assert self.task.cancelled()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[LogCollector], Running]]:
    started: list[Running] = []

    def start(collector: LogCollector) -> Running:
        started.append(Running(collector))
        return started[-1]

    yield start
    for entry in started:
        if not entry.task.done():
            await entry.stop()


StartFn = Callable[[LogCollector], Running]


def make_collector(
    runner: FakeRunner,
    store: Store,
    run: RunConfig,
    *,
    claims: FileClaims | None = None,
    rescan_interval_s: float = 30.0,
    max_streams: int = 2,
) -> LogCollector:
    return LogCollector(
        runner,
        store,
        runner.name,
        run,
        clock=FakeClock(),
        claims=claims or FileClaims(),
        rescan_interval_s=rescan_interval_s,
        max_streams=max_streams,
        retry_delay_s=0.01,
    )


def write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------- lines into the store


async def test_each_file_is_parsed_with_the_rank_its_name_gives(tmp_path: Path, running: StartFn) -> None:
    rank0 = write(tmp_path / "rank0.log", ["banner"])
    rank1 = write(tmp_path / "rank1.log", ["banner"])
    runner, store = FakeRunner("node-0"), Store()
    running(make_collector(runner, store, run_config(str(tmp_path / "rank*.log"))))
    await until(lambda: len(runner.open_streams()) == 2)
    assert runner.stream_for(rank0).argv == tuple(tail_argv([str(rank0)], TAIL_LINES))
    assert tail_argv([str(rank0)], TAIL_LINES) == ["tail", "-n", "50", "-F", "--", str(rank0)]

    runner.stream_for(rank0).push(fixture_lines(TQDM_LOG))
    runner.stream_for(rank1).push(fixture_lines(LOSS_DICT_LOG))
    await until(lambda: RUN in store.snapshot(0.0).runs and len(run_snapshot(store).ranks) == 2)
    await until(
        lambda: (metric := run_snapshot(store).metric("loss", 1)) is not None and metric.samples == 10
    )

    snapshot = run_snapshot(store)
    rank_zero = snapshot.rank(0)
    assert rank_zero is not None
    assert rank_zero.host == "node-0"
    # The last bar of the LlamaFactory log: '23/1752 [01:05<1:23:14,  2.89s/it]'.
    assert (rank_zero.progress.step, rank_zero.progress.total_steps) == (23, 1752)
    loss0, grad_norm0 = snapshot.metric("loss", 0), snapshot.metric("grad_norm", 0)
    assert loss0 is not None and loss0.last == 0.0
    assert grad_norm0 is not None and grad_norm0.last == pytest.approx(1.4142135381698608)
    loss1 = snapshot.metric("loss", 1)
    assert loss1 is not None and loss1.last == pytest.approx(0.0366)
    rank_one = snapshot.rank(1)
    assert rank_one is not None and rank_one.progress.epoch == pytest.approx(1.0)
    assert snapshot.log_status == {}


async def test_events_reach_the_store_with_rank_and_host(tmp_path: Path, running: StartFn) -> None:
    rank3 = write(tmp_path / "train-rank3.log", [])
    runner, store = FakeRunner("node-1"), Store()
    running(make_collector(runner, store, run_config(str(rank3))))
    await until(lambda: len(runner.open_streams()) == 1)
    runner.stream_for(rank3).push(fixture_lines(OOM_LOG))
    await until(lambda: RUN in store.snapshot(0.0).runs and bool(run_snapshot(store).events))
    entry = run_snapshot(store).events[0]
    assert entry.host == "node-1"
    assert entry.event.kind is EventKind.OOM
    assert entry.event.rank == 3
    assert "Tried to allocate 22.00 MiB" in entry.event.text


async def test_user_metric_patterns_are_read(tmp_path: Path, running: StartFn) -> None:
    log = write(tmp_path / "rank0.log", [])
    pattern = MetricPattern("sec_per_it", re.compile(r"(?P<value>\d+\.\d+)s/it"))
    runner, store = FakeRunner("node-0"), Store()
    running(make_collector(runner, store, run_config(str(log), metrics=(pattern,))))
    await until(lambda: len(runner.open_streams()) == 1)
    runner.stream_for(log).push(fixture_lines(TQDM_LOG))
    await until(lambda: samples(store, "sec_per_it", 0) == 15)
    metric = run_snapshot(store).metric("sec_per_it", 0)
    assert metric is not None and metric.last == pytest.approx(2.89)


# ----------------------------------------------------------------------------------- listing, status


async def test_missing_path_is_the_run_status_until_the_file_appears(
    tmp_path: Path, running: StartFn
) -> None:
    rank0 = write(tmp_path / "rank0.log", [])
    missing = tmp_path / "eval.log"
    runner, store = FakeRunner("node-0"), Store()
    collector = make_collector(
        runner, store, run_config(str(tmp_path / "rank*.log"), str(missing)), rescan_interval_s=0.05
    )
    running(collector)
    await until(lambda: has_status(store))
    status = run_snapshot(store).log_status["node-0"]
    assert status.message == f"no such file: {missing}"
    assert collector.following == (str(rank0),)
    since, version = status.since, store.version

    # Rescans that find the same problem change nothing: not news.
    listings = runner.listings
    await until(lambda: runner.listings >= listings + 3)
    assert run_snapshot(store).log_status["node-0"].since == since
    assert store.version == version

    write(missing, ["{'loss': 1.5, 'learning_rate': 0.0001, 'epoch': 0.5}"])
    await until(lambda: str(missing) in collector.following)
    await until(lambda: run_snapshot(store).log_status == {})
    assert collector.status is None


async def test_pattern_matching_nothing_is_reported_by_its_own_text(tmp_path: Path, running: StartFn) -> None:
    runner, store = FakeRunner("node-0"), Store()
    pattern = str(tmp_path / "logs" / "rank*.log")
    running(make_collector(runner, store, run_config(pattern)))
    await until(lambda: has_status(store))
    assert run_snapshot(store).log_status["node-0"].message == f"no such file: {pattern}"
    assert runner.streams == []


async def test_rescan_picks_up_a_new_rank_file(tmp_path: Path, running: StartFn) -> None:
    write(tmp_path / "rank0.log", [])
    runner, store = FakeRunner("node-0"), Store()
    collector = make_collector(
        runner, store, run_config(str(tmp_path / "rank*.log")), rescan_interval_s=0.05, max_streams=4
    )
    running(collector)
    await until(lambda: len(runner.open_streams()) == 1)
    first = runner.open_streams()[0]

    rank2 = write(tmp_path / "rank2.log", [])
    await until(lambda: len(runner.open_streams()) == 2)
    # The running tail was left alone; the new file got a tail of its own.
    assert not first.closed
    runner.stream_for(rank2).push(fixture_lines(LOSS_DICT_LOG)[:3])
    await until(lambda: samples(store, "loss", 2) > 0)
    assert collector.following == (str(tmp_path / "rank0.log"), str(rank2))


async def test_a_file_that_disappears_is_no_longer_followed(tmp_path: Path, running: StartFn) -> None:
    rank0 = write(tmp_path / "rank0.log", [])
    rank1 = write(tmp_path / "rank1.log", [])
    runner, store = FakeRunner("node-0"), Store()
    claims = FileClaims()
    collector = make_collector(
        runner, store, run_config(str(tmp_path / "rank*.log")), claims=claims, rescan_interval_s=0.05
    )
    running(collector)
    await until(lambda: len(runner.open_streams()) == 2)
    rank1_stream = runner.stream_for(rank1)
    rank1.unlink()
    await until(lambda: rank1_stream.closed)
    assert collector.following == (str(rank0),)
    assert runner.open_streams() == [runner.stream_for(rank0)]


# -------------------------------------------------------------------------------------- shared tails


def real_tail_output(paths: Sequence[Path], lines: int) -> list[str]:
    """What GNU tail prints for several files (its headers and separators), as lines."""
    text = subprocess.run(
        [*tail_argv([str(path) for path in paths], lines)[:3], "--", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return text.split("\n")[:-1]


async def test_more_files_than_streams_share_one_tail(tmp_path: Path, running: StartFn) -> None:
    tqdm, losses = fixture_lines(TQDM_LOG), fixture_lines(LOSS_DICT_LOG)
    files = [
        write(tmp_path / "rank0.log", tqdm),
        write(tmp_path / "rank1.log", losses),
        write(tmp_path / "rank2.log", [*losses[:4], "", "==> not/one/of/ours.log <==", *losses[4:6]]),
    ]
    runner, store = FakeRunner("node-0"), Store()
    running(make_collector(runner, store, run_config(str(tmp_path / "rank*.log")), max_streams=1))
    await until(lambda: len(runner.open_streams()) == 1)
    stream = runner.open_streams()[0]
    assert stream.paths == tuple(map(str, files))

    stream.push(real_tail_output(files, TAIL_LINES))
    await until(lambda: RUN in store.snapshot(0.0).runs and len(run_snapshot(store).ranks) == 3)
    await until(lambda: samples(store, "loss", 2) == 6)
    snapshot = run_snapshot(store)
    rank0 = snapshot.rank(0)
    assert rank0 is not None and (rank0.progress.step, rank0.progress.total_steps) == (23, 1752)
    loss1 = snapshot.metric("loss", 1)
    assert loss1 is not None and loss1.samples == 10 and loss1.last == pytest.approx(0.0366)
    # rank2's own lines, a header-looking line that names none of our files included, all went to rank 2.
    loss2 = snapshot.metric("loss", 2)
    assert loss2 is not None and loss2.last == pytest.approx(0.0789)


async def test_a_file_joining_a_shared_tail_does_not_repeat_old_lines(
    tmp_path: Path, running: StartFn
) -> None:
    losses = fixture_lines(LOSS_DICT_LOG)
    rank0 = write(tmp_path / "rank0.log", losses[:6])
    runner, store = FakeRunner("node-0"), Store()
    running(
        make_collector(
            runner, store, run_config(str(tmp_path / "rank*.log")), rescan_interval_s=0.05, max_streams=1
        )
    )
    await until(lambda: len(runner.open_streams()) == 1)
    first = runner.open_streams()[0]
    first.push(losses[:6])
    await until(lambda: samples(store, "loss", 0) == 6)

    write(rank0, losses[:8])
    rank1 = write(tmp_path / "rank1.log", losses[:2])
    await until(lambda: first.closed and len(runner.open_streams()) == 1)
    second = runner.open_streams()[0]
    assert second.paths == (str(rank0), str(rank1))
    # The restarted tail prints the last lines of rank0 again: only the two written since count.
    second.push(real_tail_output([rank0, rank1], TAIL_LINES))
    await until(lambda: samples(store, "loss", 1) > 0)
    await until(lambda: samples(store, "loss", 1) == 2)
    loss0 = run_snapshot(store).metric("loss", 0)
    assert loss0 is not None and loss0.samples == 8
    assert loss0.last == pytest.approx(float(re.findall(r"'loss': ([\d.]+)", losses[7])[0]))


async def test_lines_delivered_during_a_listing_are_not_repeated_after_a_regroup(
    tmp_path: Path, running: StartFn
) -> None:
    losses = fixture_lines(LOSS_DICT_LOG)
    rank0 = write(tmp_path / "rank0.log", losses[:3])
    runner, store = FakeRunner("node-0"), Store()
    pattern = str(tmp_path / "rank*.log")
    running(make_collector(runner, store, run_config(pattern), rescan_interval_s=0.05, max_streams=1))
    await until(lambda: len(runner.open_streams()) == 1)
    first = runner.open_streams()[0]
    first.push(losses[:3])
    await until(lambda: samples(store, "loss", 0) == 3)

    async def file_grows_after_it_was_measured() -> None:
        first.push(losses[3:6])
        await until(lambda: samples(store, "loss", 0) == 6)
        write(rank0, losses[:6])

    runner.after_listing.append(file_grows_after_it_was_measured)
    rank1 = write(tmp_path / "rank1.log", losses[:1])
    await until(lambda: first.closed and len(runner.open_streams()) == 1)
    # The last lines delivered lie beyond the size the listing saw; the replay still ends at them.
    runner.open_streams()[0].push(real_tail_output([rank0, rank1], TAIL_LINES))
    await until(lambda: samples(store, "loss", 1) == 1)
    assert samples(store, "loss", 0) == 6


# ------------------------------------------------------------------------------ failures and restarts


async def test_host_lost_then_back_resumes_without_counting_lines_twice(
    tmp_path: Path, running: StartFn
) -> None:
    losses = fixture_lines(LOSS_DICT_LOG)
    log = write(tmp_path / "rank0.log", losses[:5])
    runner, store = FakeRunner("node-0"), Store()
    claims = FileClaims()
    running(make_collector(runner, store, run_config(str(log)), claims=claims))
    await until(lambda: len(runner.open_streams()) == 1)
    runner.stream_for(log).push(losses[:5])
    await until(lambda: samples(store, "loss", 0) == 5)

    lost = runner.stream_for(log)
    lost.lose()
    await until(lambda: lost.closed and len(runner.open_streams()) == 1)
    # While the host was away the trainer wrote three more lines; tail -n replays the file's end.
    write(log, losses[:8])
    runner.stream_for(log).push(losses[:8])
    await until(lambda: samples(store, "loss", 0) >= 8)
    await asyncio.sleep(0.05)
    loss = run_snapshot(store).metric("loss", 0)
    assert loss is not None and loss.samples == 8
    assert run_snapshot(store).log_status == {}


async def test_listing_failure_of_the_host_is_survived(tmp_path: Path, running: StartFn) -> None:
    log = write(tmp_path / "rank0.log", [])
    runner, store = FakeRunner("node-0"), Store()
    runner.fail_runs.append(HostDownError(DownReason.CONNECTION_REFUSED, "refused"))
    running(make_collector(runner, store, run_config(str(log))))
    await until(lambda: len(runner.open_streams()) == 1)
    assert runner.listings == 2
    assert store.snapshot(0.0).runs.get(RUN) is None or run_snapshot(store).log_status == {}


async def test_tail_failure_is_the_status_but_truncation_notices_are_not(
    tmp_path: Path, running: StartFn
) -> None:
    log = write(tmp_path / "rank0.log", [])
    runner, store = FakeRunner("node-0"), Store()
    collector = make_collector(runner, store, run_config(str(log)), rescan_interval_s=0.05)
    running(collector)
    await until(lambda: len(runner.open_streams()) == 1)
    runner.stream_for(log).end(
        1,
        f"tail: {log}: file truncated\n"
        f"tail: error reading '{log}': Input/output error\n"
        f"tail: '{log}' has been replaced;  following new file\n",
    )
    await until(lambda: has_status(store))
    message = run_snapshot(store).log_status["node-0"].message
    assert message == f"tail exited with status 1: tail: error reading '{log}': Input/output error ({log})"

    # The next rescan starts tail again; once lines flow the problem is over.
    await until(lambda: len(runner.open_streams()) == 1)
    runner.stream_for(log).push(fixture_lines(LOSS_DICT_LOG)[:1])
    await until(lambda: run_snapshot(store).log_status == {})
    assert collector.status is None


async def test_cancelling_run_closes_every_stream(tmp_path: Path, running: StartFn) -> None:
    for rank in range(3):
        write(tmp_path / f"rank{rank}.log", [])
    runner, store = FakeRunner("node-0"), Store()
    claims = FileClaims()
    collector = running(make_collector(runner, store, run_config(str(tmp_path / "rank*.log")), claims=claims))
    await until(lambda: len(runner.open_streams()) == 2)
    await collector.stop()
    assert all(stream.closed for stream in runner.streams)
    # Claims are given up, so another host could follow the files.
    stdout, _ = listing([str(tmp_path / "rank*.log")])
    listed = parse_listing(stdout, [str(tmp_path / "rank*.log")])
    assert [claims.holder(entry.identity) for entry in listed.files] == [None, None, None]


async def test_a_run_without_logs_waits_quietly(running: StartFn) -> None:
    runner, store = FakeRunner("node-0"), Store()
    collector = running(make_collector(runner, store, RunConfig(name=RUN, hosts=("node-0",))))
    await asyncio.sleep(0.05)
    assert not collector.task.done()
    assert runner.listings == 0


# ------------------------------------------------------------------------------------------- claims


async def test_a_shared_file_is_read_by_one_host_and_taken_over_when_it_goes(
    tmp_path: Path, running: StartFn
) -> None:
    losses = fixture_lines(LOSS_DICT_LOG)
    # Over HEAD_BYTES from the start, so both hosts list the same identity.
    log = write(tmp_path / "rank0.log", ["#" * HEAD_BYTES, *losses[:6]])
    store, claims = Store(), FileClaims()
    node0, node1 = FakeRunner("node-0"), FakeRunner("node-1")
    pattern = str(tmp_path / "rank*.log")
    first = running(make_collector(node0, store, run_config(pattern), claims=claims, rescan_interval_s=0.05))
    await until(lambda: len(node0.open_streams()) == 1)
    running(make_collector(node1, store, run_config(pattern), claims=claims, rescan_interval_s=0.05))
    await until(lambda: node1.listings >= 3)
    assert node1.streams == []
    node0.stream_for(log).push(losses[:6])
    await until(lambda: samples(store, "loss", 0) == 6)

    # node-0's collector stops (its host went away): node-1 takes the file over with node-0's progress.
    await first.stop()
    await until(lambda: len(node1.open_streams()) == 1)
    write(log, ["#" * HEAD_BYTES, *losses[:9]])
    node1.stream_for(log).push(["#" * HEAD_BYTES, *losses[:9]])
    await until(lambda: samples(store, "loss", 0) >= 9)
    await asyncio.sleep(0.05)
    loss = run_snapshot(store).metric("loss", 0)
    assert loss is not None and loss.samples == 9
    rank = run_snapshot(store).rank(0)
    assert rank is not None and rank.host == "node-1"


def identity(
    path: str = "/data/run/rank0.log", inode: int = 7, crc: int = 1, length: int = 1024
) -> FileIdentity:
    return FileIdentity(path, inode, crc, length)


def test_claims_first_come_and_release_only_by_the_holder() -> None:
    claims = FileClaims()
    assert claims.claim("node-0", identity())
    assert claims.claim("node-0", identity())
    assert not claims.claim("node-1", identity())
    claims.release("node-1", identity())
    assert claims.holder(identity()) == "node-0"
    # A different file at the same path (another inode, or other first bytes) is another file.
    assert claims.claim("node-1", identity(inode=8))
    assert claims.claim("node-1", identity(crc=2))
    claims.release("node-0", identity())
    assert claims.holder(identity()) is None
    assert claims.claim("node-1", identity())


def test_claims_hand_progress_over_once() -> None:
    claims = FileClaims()
    progress = FileProgress(LogParser(default_rank=0))
    claims.claim("node-0", identity())
    claims.release("node-0", identity(), progress)
    assert claims.take_progress(identity(inode=8)) is None
    assert claims.take_progress(identity()) is progress
    assert claims.take_progress(identity()) is None


# ------------------------------------------------------------------------------ the listing script


def listing(patterns: Sequence[str], env: dict[str, str] | None = None) -> tuple[str, str]:
    result = subprocess.run(list_argv(patterns), capture_output=True, text=True, env=env, check=True)
    return result.stdout, result.stderr


def test_listing_never_runs_a_pattern_as_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spaced = tmp_path / "my run" / "rank 0.log"
    spaced.parent.mkdir()
    write(spaced, ["x"])
    patterns = [
        f"{tmp_path}/$(touch {marker})",
        f"{tmp_path}/`touch {marker}`",
        f"{tmp_path}/x; touch {marker}",
        f"{tmp_path}/x' ; touch {marker}; echo '",
        f'{tmp_path}/x" && touch {marker} && "',
        f"{tmp_path}/x | touch {marker}",
        f"{tmp_path}/my run/rank *.log",
        "$HOME",
    ]
    stdout, stderr = listing(patterns)
    assert not marker.exists()
    assert stderr == ""
    result = parse_listing(stdout, patterns)
    assert [listed.path for listed in result.files] == [str(spaced)]
    assert result.problems == tuple(
        f"no such file: {pattern}" for pattern in patterns if "my run" not in pattern
    )


def test_listing_reports_identity_and_each_file_once(tmp_path: Path) -> None:
    rank0 = write(tmp_path / "rank0.log", ["a" * 2000])
    rank1 = write(tmp_path / "rank1.log", ["short"])
    (tmp_path / "latest.log").symlink_to(rank0)
    (tmp_path / "dir.log").mkdir()
    patterns = [str(tmp_path / "rank*.log"), str(tmp_path / "latest.log"), str(tmp_path / "dir.log")]
    stdout, _ = listing(patterns)
    result = parse_listing(stdout, patterns)
    assert [listed.path for listed in result.files] == [str(rank0), str(rank1)]
    first, second = result.files
    stat0 = os.stat(rank0)
    assert (first.device, first.inode, first.size) == (stat0.st_dev, stat0.st_ino, 2001)
    assert first.head_len == HEAD_BYTES
    assert (second.size, second.head_len) == (6, 6)
    cksum = subprocess.run(["cksum"], input=b"short\n", capture_output=True, check=True).stdout.split()
    assert second.head_crc == int(cksum[0])
    assert result.problems == (f"not a regular file: {tmp_path / 'dir.log'}",)


def test_listing_expands_a_leading_tilde_to_home(tmp_path: Path) -> None:
    log = write(tmp_path / "rank5.log", [])
    env = {**os.environ, "HOME": str(tmp_path)}
    stdout, _ = listing(["~/rank*.log", "~"], env)
    result = parse_listing(stdout, ["~/rank*.log", "~"])
    assert [listed.path for listed in result.files] == [str(log)]
    assert result.problems == ("not a regular file: ~",)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path sits in a directory only its owner may)."""
    path = Path(tempfile.mkdtemp(prefix="trainmon-listing-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_listing_reports_files_and_directories_it_may_not_read(shared_dir: Path) -> None:
    secret = write(shared_dir / "secret.log", ["x"])
    secret.chmod(0o600)
    closed = shared_dir / "closed"
    (closed / "logs").mkdir(parents=True)
    closed.chmod(0o700)
    patterns = [str(secret), str(closed / "logs" / "rank*.log"), str(shared_dir / "missing" / "rank0.log")]
    argv = list_argv(patterns)
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    stdout = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result = parse_listing(stdout, patterns)
    assert result.files == ()
    assert result.problems == (
        f"permission denied: {secret}",
        f"permission denied: {closed / 'logs' / 'rank*.log'}",
        f"no such file: {shared_dir / 'missing' / 'rank0.log'}",
    )


def test_parse_listing_ignores_shell_noise_and_odd_records() -> None:
    patterns = ["/logs/*.log"]
    stdout = (
        "Welcome to node-0!\n"
        "\0F 1 2049 77 10 123 10 /logs/a b.log"
        "\0F 2 2049 78 10 123 10 /logs/out-of-range.log"
        "\0F 1 x 79 10 123 10 /logs/bad.log"
        "\0F 1 2049 80 10 123 10 /logs/bad\ufffdname.log"
        "\0U 1 /logs/\x1b]0;title\x07secret.log"
        "\0M 9\0Q 1\0"
    )
    result = parse_listing(stdout, patterns)
    assert [(listed.path, listed.inode) for listed in result.files] == [("/logs/a b.log", 77)]
    assert result.problems == (
        "unsupported file name: '/logs/bad\ufffdname.log'",
        "permission denied: /logs/secret.log",
    )


@given(st.text(alphabet=st.sampled_from("FUEMNP 0123456789/\0\n\ufffdab")), st.lists(st.text(), max_size=3))
def test_parse_listing_never_raises(stdout: str, patterns: list[str]) -> None:
    result = parse_listing(stdout, patterns)
    assert all(listed.path for listed in result.files)


@given(st.text())
def test_parse_listing_never_raises_on_any_text(stdout: str) -> None:
    parse_listing(stdout, ["a", "b"])


# ---------------------------------------------------------------------------------- tail, replays


def test_demux_splits_real_tail_output_by_file(tmp_path: Path) -> None:
    a = write(tmp_path / "a.log", ["a1", "", "a3", ""])
    b = write(tmp_path / "b.log", ["", "b2"])
    c = tmp_path / "c.log"
    c.write_text("partial")  # no newline at the end: tail ends it before the next header
    d = write(tmp_path / "d.log", [f"==> {a} <==", "d2"])
    demux = TailDemux([str(a), str(b), str(c), str(d)])
    pairs = [pair for line in real_tail_output([a, b, c, d], 10) for pair in demux.feed(line)]
    pairs += demux.flush()
    assert pairs == [
        (str(a), "a1"),
        (str(a), ""),
        (str(a), "a3"),
        (str(a), ""),
        (str(b), ""),
        (str(b), "b2"),
        (str(c), "partial"),
        # A line that is exactly another file's header cannot be told from one: it switches files. Only
        # headers of the files this tail follows count, so a log cannot redirect lines outside the group.
        (str(a), "d2"),
    ]


def test_demux_of_one_file_passes_every_line() -> None:
    demux = TailDemux(["/x/rank0.log"])
    assert demux.feed("==> /x/rank0.log <==") == [("/x/rank0.log", "==> /x/rank0.log <==")]
    assert demux.feed("") == [("/x/rank0.log", "")]


@given(st.lists(st.sampled_from(["", "==> a <==", "==> b <==", "==> c <==", "x", "y"])))
def test_demux_never_raises_and_keeps_lines_in_order(lines: list[str]) -> None:
    demux = TailDemux(["a", "b"])
    out = [pair for line in lines for pair in demux.feed(line)] + demux.flush()
    assert [text for _, text in out if text] == [
        line for line in lines[_first_header(lines) :] if line and line not in ("==> a <==", "==> b <==")
    ]


def _first_header(lines: list[str]) -> int:
    return next((i for i, line in enumerate(lines) if line in ("==> a <==", "==> b <==")), len(lines))


def test_replay_skipper_drops_lines_up_to_the_anchor() -> None:
    skipper = ReplaySkipper(["l3", "l4", "l5"], max_lines=50, max_bytes=1000)
    assert [skipper.feed(line) for line in ["l1", "l2", "l3", "l4", "l5"]] == [[], [], [], [], []]
    assert skipper.done
    assert skipper.feed("l6") == ["l6"]


def test_replay_skipper_delivers_a_replay_without_the_anchor() -> None:
    by_lines = ReplaySkipper(["old"], max_lines=3, max_bytes=10_000)
    assert [by_lines.feed(line) for line in ["n1", "n2", "n3"]] == [[], [], ["n1", "n2", "n3"]]
    # A file shorter than N lines that no longer holds the anchor: over once its size has been replayed.
    by_bytes = ReplaySkipper(["old"], max_lines=500, max_bytes=6)
    assert [by_bytes.feed(line) for line in ["n1", "n2"]] == [[], ["n1", "n2"]]


def test_replay_skipper_without_an_anchor_passes_everything() -> None:
    for skipper in (
        ReplaySkipper([], 50, 100),
        ReplaySkipper(["x"], 0, 100),
        ReplaySkipper(["x"], 50, 0),
    ):
        assert skipper.done
        assert skipper.feed("line") == ["line"]


@given(st.lists(st.text(max_size=5), max_size=3), st.lists(st.text(max_size=5)), st.integers(-1, 20))
def test_replay_skipper_never_raises_nor_loses_lines_after_catching_up(
    anchor: list[str], lines: list[str], limit: int
) -> None:
    skipper = ReplaySkipper(anchor, max_lines=limit, max_bytes=limit * 4)
    delivered = [out for line in lines for out in skipper.feed(line)]
    assert delivered == lines[len(lines) - len(delivered) :]


def test_tail_exit_reason_leaves_out_what_tail_f_prints_while_working() -> None:
    stderr = (
        "tail: cannot open '/l/rank1.log' for reading: No such file or directory\n"
        "tail: '/l/rank1.log' has appeared;  following new file\n"
        "tail: /l/rank0.log: file truncated\n"
        "tail: '/l/rank0.log' has become inaccessible: No such file or directory\n"
    )
    assert tail_exit_reason(143, stderr) == "tail exited with status 143"
    assert tail_exit_reason(None, "") == "tail exited without status"
    assert tail_exit_reason(1, "tail: invalid option -- 'F'\nUsage: tail [OPTION]... [FILE]...\n") == (
        "tail exited with status 1: Usage: tail [OPTION]... [FILE]..."
    )
    assert tail_exit_reason(1, "tail: \x1b]0;owned\x07bad") == "tail exited with status 1: tail: bad"


@given(st.one_of(st.none(), st.integers()), st.text())
def test_tail_exit_reason_never_raises(status: int | None, stderr: str) -> None:
    assert tail_exit_reason(status, stderr).startswith("tail exited")


# ------------------------------------------------------------------------------------- run status


def test_store_run_status_changes_once_per_message() -> None:
    store = Store()
    store.set_run_status(RUN, "node-0", "no such file: /x.log", 10.0)
    version = store.version
    store.set_run_status(RUN, "node-0", "no such file: /x.log", 11.0)
    assert store.version == version
    store.set_run_status(RUN, "node-1", "permission denied: /y.log", 12.0)
    assert run_snapshot(store).log_status == {
        "node-0": LogStatus("no such file: /x.log", 10.0),
        "node-1": LogStatus("permission denied: /y.log", 12.0),
    }
    store.set_run_status(RUN, "node-0", None, 13.0)
    assert dict(run_snapshot(store).log_status) == {"node-1": LogStatus("permission denied: /y.log", 12.0)}
    store.set_run_status(RUN, "node-0", None, 14.0)
    assert store.version == version + 2


def test_collector_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_streams"):
        make_collector(FakeRunner("n"), Store(), run_config("/x"), max_streams=0)
    with pytest.raises(ValueError, match="rescan_interval_s"):
        make_collector(FakeRunner("n"), Store(), run_config("/x"), rescan_interval_s=0)


class TimedRunner(FakeRunner):
    """Remembers when each listing started and ended (loop time)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.spans: list[tuple[float, float]] = []

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await super().run(argv, timeout)
        finally:
            self.spans.append((started, loop.time()))

    def waits(self) -> list[float]:
        """The pauses between one listing's end and the next one's start."""
        return [after[0] - before[1] for before, after in itertools.pairwise(self.spans)]


def backing_off_collector(runner: TimedRunner, store: Store, tmp_path: Path) -> LogCollector:
    """Follows tmp_path/rank*.log, listing every 0.1 s and, while nothing changes, down to every 0.8 s."""
    return LogCollector(
        runner,
        store,
        runner.name,
        run_config(str(tmp_path / "rank*.log")),
        clock=FakeClock(),
        claims=FileClaims(),
        rescan_interval_s=0.1,
        rescan_max_interval_s=0.8,
        wake_grid_s=0.0,
    )


async def test_listings_come_less_often_while_nothing_changes_and_at_once_again_after_a_change(
    tmp_path: Path, running: StartFn
) -> None:
    write(tmp_path / "rank0.log", [])
    runner, store = TimedRunner("node-0"), Store()
    collector = backing_off_collector(runner, store, tmp_path)
    running(collector)
    # Unchanged listings: the pause doubles, 0.1 -> 0.2 -> 0.4 -> 0.8, and stays at the ceiling.
    await until(lambda: len(runner.spans) >= 6, timeout=10.0)
    waits = runner.waits()
    assert waits[0] < 0.4, waits
    assert waits[2] >= 0.35, waits
    assert waits[3] >= 0.75, waits
    assert 0.75 <= waits[4] < 1.6, waits
    # A new rank file: found at the next listing, and the one after it comes at the short interval again.
    write(tmp_path / "rank1.log", [])
    seen = len(runner.spans)
    await until(lambda: len(collector.following) == 2, timeout=10.0)
    await until(lambda: len(runner.spans) >= seen + 2, timeout=10.0)
    assert runner.waits()[seen] < 0.5, runner.waits()


def test_the_longest_listing_interval_is_not_shorter_than_the_first() -> None:
    with pytest.raises(ValueError, match="rescan_max_interval_s"):
        LogCollector(
            FakeRunner("n"),
            Store(),
            "n",
            run_config("/x"),
            claims=FileClaims(),
            rescan_interval_s=1.0,
            rescan_max_interval_s=0.5,
        )


async def test_a_pattern_that_matches_nothing_yet_is_listed_at_the_short_interval(
    tmp_path: Path, running: StartFn
) -> None:
    # trainmon started before the run: its log does not exist yet, and must be found soon after it does.
    runner, store = TimedRunner("node-0"), Store()
    collector = backing_off_collector(runner, store, tmp_path)
    running(collector)
    await until(lambda: len(runner.spans) >= 6, timeout=10.0)
    assert max(runner.waits()) < 0.5, runner.waits()
    assert run_snapshot(store).log_status["node-0"].message == f"no such file: {tmp_path / 'rank*.log'}"
    write(tmp_path / "rank0.log", [])
    await until(lambda: len(collector.following) == 1, timeout=10.0)
