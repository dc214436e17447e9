"""Tests for the process collector: a scripted runner plays the listing loop's stream and recorded
nvidia-smi and environ output; the loop script itself runs under the shells of this machine."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.analysis.ranks import environ_candidates, environ_grep_argv, find_rank_processes
from trainmon_tui.config import RunConfig
from trainmon_tui.model import GpuSample
from trainmon_tui.parsers.ps import PS_ARGV, parse_ps
from trainmon_tui.parsers.smi_csv import QUERY_APPS_ARGV, QUERY_APPS_FIELDS
from trainmon_tui.state.store import HostSnapshot, Store
from trainmon_tui.transport import proc_collector
from trainmon_tui.transport.local_runner import LocalRunner
from trainmon_tui.transport.proc_collector import (
    APPS_STEP,
    ENVIRON_STEP,
    LISTING_END,
    PS_COMMAND,
    PS_LOOP_NAME,
    PS_LOOP_SCRIPT,
    PS_STEP,
    ProcessCollector,
    RelevantLines,
    ps_loop_argv,
    relevant_ps_lines,
)
from trainmon_tui.transport.remote import WRAPPER_NAME, WRAPPER_SCRIPT, remote_command_line
from trainmon_tui.transport.runner import LineStream
from trainmon_tui.transport.session import DownReason, HostDownError
from trainmon_tui.transport.streams import ChannelRefusedError, CommandResult

FIXTURES = Path(__file__).parent.parent / "fixtures"
PS = FIXTURES / "ps"
OWN = FIXTURES / "proc_collector"
HOST = "gpu-node-1"
LAUNCHER, TAIL, RANK0, RANK1, RANK2, WORKER_A, WORKER_B = 405, 407, 449, 450, 451, 452, 453
LOGGER = "trainmon_tui.transport.proc_collector"

Reply = CommandResult | BaseException


def text(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


ALIVE = text(PS / "ps_torchrun_3_ranks_dataloader_workers_generated.txt")
ALIVE_ENVIRON = text(PS / "environ_grep_torchrun_3_ranks_generated.bin")
DEFUNCT = text(PS / "ps_torchrun_rank2_defunct_generated.txt")
DEFUNCT_ENVIRON = text(PS / "environ_grep_torchrun_rank2_defunct_generated.bin")
SMI_FAILED = text(OWN / "smi_failed_couldnt_communicate_single_line.txt")
ALL_PIDS = [LAUNCHER, TAIL, RANK0, RANK1, RANK2, WORKER_A, WORKER_B]


def ok(stdout: str = "") -> CommandResult:
    return CommandResult(0, stdout, "")


def compute_apps_in_collector_order() -> str:
    """The corpus capture's rows (asked as pid,process_name,gpu_uuid,used_memory) in the collector's order."""
    lines = []
    for line in text(OWN / "query_compute_apps_noheader_nounits_uuid.txt").splitlines():
        pid, name, uuid, memory = (cell.strip() for cell in line.split(","))
        cells = {"pid": pid, "process_name": name, "gpu_uuid": uuid, "used_memory": memory}
        lines.append(", ".join(cells[field] for field in QUERY_APPS_FIELDS))
    return "\n".join(lines) + "\n"


def blackwell_gpus() -> list[GpuSample]:
    """Index and UUID of each GPU in the query-gpu capture from the same machine."""
    samples = []
    for line in text(OWN / "query_gpu_noheader_nounits_23fields_blackwell.txt").splitlines():
        index, uuid = (cell.strip() for cell in line.split(",")[:2])
        samples.append(GpuSample(gpu=int(index), uuid=uuid))
    return samples


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeLoop:
    """One run of the listing loop on the host: the test hands it lines, then ends it with a status.

    ``waiting`` is set while the collector waits for a line and none is queued: it has taken everything
    handed over so far (listings included, with the commands they set off).
    """

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | tuple[int, str]] = asyncio.Queue()
        self.waiting = asyncio.Event()
        self.exit_status: int | None = None
        self.stderr_tail = ""
        self.closed = False
        self.opened_at = asyncio.get_running_loop().time()
        self.closed_at: float | None = None

    def hand(self, *lines: str) -> None:
        self.waiting.clear()
        for line in lines:
            self._lines.put_nowait(line)

    def end(self, status: int, stderr: str = "") -> None:
        self.waiting.clear()
        self._lines.put_nowait((status, stderr))

    def __aiter__(self) -> FakeLoop:
        return self

    async def __anext__(self) -> str:
        assert not self.closed, "read after the stream was left"
        if self._lines.empty():
            self.waiting.set()
        item = await self._lines.get()
        if isinstance(item, tuple):
            self.exit_status, self.stderr_tail = item
            raise StopAsyncIteration
        return item


class BufferedFakeLoop(FakeLoop):
    """A :class:`FakeLoop` that also hands over every queued line at once, as the real streams do
    (``BufferedLineStream``): the collector then cuts listings out of whole batches."""

    def take_lines(self) -> list[str]:
        taken: list[str] = []
        # Up to the loop's end, which only __anext__ reports (as the real streams: it comes after the lines).
        while not self._lines.empty():
            queued = self._lines._queue  # type: ignore[attr-defined]
            if isinstance(queued[0], tuple):
                break
            taken.append(self._lines.get_nowait())  # type: ignore[arg-type]
        return taken


@pytest.fixture(autouse=True, params=["line by line", "in batches"])
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs against both kinds of stream: one that gives lines one by one, one that also gives
    whatever it holds at once."""
    kind = str(request.param)
    monkeypatch.setattr(
        ScriptedRunner, "loop_class", FakeLoop if kind == "line by line" else BufferedFakeLoop
    )
    return kind


class ScriptedRunner:
    """Plays the listing loop as :class:`FakeLoop` streams and answers nvidia-smi and grep from their own
    queues (the last reply repeats)."""

    name = HOST
    is_local = False
    loop_class: type[FakeLoop] = FakeLoop

    def __init__(self) -> None:
        self.replies: dict[str, deque[Reply | Callable[[Sequence[str]], Reply]]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.loops: list[FakeLoop] = []
        # What the next stream opens give, in turn: an error to raise; then a fresh FakeLoop each.
        self.open_errors: deque[BaseException] = deque()
        self.up = asyncio.Event()
        self.up.set()
        self.waits = 0

    def script(self, program: str, *replies: Reply | Callable[[Sequence[str]], Reply]) -> None:
        self.replies[program] = deque(replies)

    async def wait_up(self, timeout: float | None = None) -> None:
        self.waits += 1
        await self.up.wait()

    def stream(self, argv: Sequence[str]) -> AbstractAsyncContextManager[LineStream]:
        self.calls.append(tuple(argv))
        return self._open()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[LineStream]:
        if self.open_errors:
            raise self.open_errors.popleft()
        loop = self.loop_class()
        self.loops.append(loop)
        try:
            yield loop
        finally:
            loop.closed = True
            loop.closed_at = asyncio.get_running_loop().time()

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        assert timeout > 0
        self.calls.append(tuple(argv))
        queue = self.replies[argv[0]]
        reply = queue.popleft() if len(queue) > 1 else queue[0]
        if callable(reply):
            reply = reply(argv)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def calls_of(self, program: str) -> list[tuple[str, ...]]:
        return [call for call in self.calls if call[0] == program]

    async def open_loop(self, number: int | None = None) -> FakeLoop:
        """The loop opened ``number``-th (from 0; None: the one open now), once the collector reads it."""
        if number is None:
            await wait_for(lambda: bool(self.loops) and not self.loops[-1].closed)
            loop = self.loops[-1]
        else:
            await wait_for(lambda: len(self.loops) > number)
            loop = self.loops[number]
        await wait_for(loop.waiting.is_set)
        return loop

    async def listing(self, listing: str) -> None:
        """Hand the open loop one listing and wait until the collector has taken it."""
        loop = await self.open_loop()
        loop.hand(*listing.splitlines(), LISTING_END)
        await wait_for(loop.waiting.is_set)


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


def collector(
    runner: ScriptedRunner,
    store: Store,
    clock: FakeClock,
    *,
    runs: Sequence[RunConfig] | None = None,
    interval_s: float = 3.0,
    command_timeout_s: float = 10.0,
) -> ProcessCollector:
    if runs is None:
        runs = [RunConfig(name="llm", hosts=(HOST,), process=re.compile(r"train"))]
    return ProcessCollector(
        runner,
        store,
        HOST,
        runs,
        clock=clock,
        interval_s=interval_s,
        command_timeout_s=command_timeout_s,
        apps_retry_s=30.0,
    )


@asynccontextmanager
async def running(poller: ProcessCollector) -> AsyncIterator[asyncio.Task[None]]:
    """The collector's run() as a task, cancelled (and awaited) on the way out."""
    task = asyncio.create_task(poller.run())
    try:
        yield task
    finally:
        task.cancel()
        async with asyncio.timeout(5):
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise AssertionError("the collector failed") from task.exception()


def host(store: Store, clock: FakeClock) -> HostSnapshot:
    return store.snapshot(clock()).hosts[HOST]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> Store:
    return Store()


# ------------------------------------------------------------------------------------------- the loop


def test_the_loop_runs_ps_with_its_arguments_and_takes_the_interval_as_an_argument() -> None:
    assert ps_loop_argv(5.0) == ("sh", "-c", PS_LOOP_SCRIPT, PS_LOOP_NAME, "5")
    assert ps_loop_argv(0.2)[-1] == "0.2"
    assert ps_loop_argv(12.5)[-1] == "12.5"
    # No exponent sleep(1) may not read, and never a zero that would make the loop spin.
    assert ps_loop_argv(1e-6)[-1] == "0.001"
    assert " ".join(PS_ARGV) in PS_LOOP_SCRIPT and "$1" in PS_LOOP_SCRIPT
    # One line, no single quote: it travels single-quoted through the wrapper and any login shell.
    assert "\n" not in PS_LOOP_SCRIPT and "'" not in PS_LOOP_SCRIPT
    assert not LISTING_END[0].isdigit() and parse_ps(LISTING_END) == []


_STAND_IN_PS = """#!/bin/sh
# Stand-in ps: one fixed process line per call, with the arguments it was given; fails when told to.
[ -e "{fail}" ] && {{ echo "ps: told to fail" >&2; exit 3; }}
echo "    1     0 S    1-00:00:00  0.0  1000 ps-args: $*"
"""


def _shells() -> list[str]:
    return [path for name in ("dash", "bash", "busybox") if (path := shutil.which(name)) is not None]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shell", _shells())
def test_the_loop_script_prints_listings_and_markers_and_ends_with_the_status_of_ps(
    shell: str, tmp_path: Path
) -> None:
    argv = [shell, "ash"] if shell.endswith("busybox") else [shell]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fail = tmp_path / "fail"
    stand_in = bin_dir / "ps"
    stand_in.write_text(_STAND_IN_PS.format(fail=fail))
    stand_in.chmod(0o755)
    sleep = shutil.which("sleep")
    assert sleep is not None
    (bin_dir / "sleep").symlink_to(sleep)
    env = {**os.environ, "PATH": str(bin_dir)}
    loop = subprocess.Popen(
        [*argv, "-c", PS_LOOP_SCRIPT, PS_LOOP_NAME, "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert loop.stdout is not None
        first = [loop.stdout.readline() for _ in range(4)]
        fail.touch()
        out, err = loop.communicate(timeout=10)
    finally:
        loop.kill()
        loop.wait()
    listing = f"    1     0 S    1-00:00:00  0.0  1000 ps-args: {' '.join(PS_ARGV[1:])}\n"
    assert first == [listing, LISTING_END + "\n", listing, LISTING_END + "\n"]
    assert set((out or "").splitlines()) <= {listing.rstrip("\n"), LISTING_END}
    assert loop.returncode == 3 and err == "ps: told to fail\n"
    # Without ps at all: the shell's 127 and its message, naming the loop.
    (bin_dir / "ps").unlink()
    missing = subprocess.run(
        [*argv, "-c", PS_LOOP_SCRIPT, PS_LOOP_NAME, "0.05"],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
        check=False,
    )
    assert missing.returncode == 127 and missing.stdout == ""
    assert "ps" in missing.stderr and PS_LOOP_NAME in missing.stderr


async def test_a_real_loop_on_this_machine_through_the_local_runner(store: Store, clock: FakeClock) -> None:
    # An interval no other test uses, and a pattern for exactly this loop: it is read (a seed whose
    # ancestors, this test's own process among them, are kept) and left out itself.
    interval_s = 0.237
    loop_command = " ".join(ps_loop_argv(interval_s))
    runs = [RunConfig(name="self", hosts=(HOST,), process=re.compile(re.escape(f"{PS_LOOP_NAME} 0.237")))]
    poller = ProcessCollector(LocalRunner(HOST), store, HOST, runs, clock=clock, interval_s=interval_s)
    async with running(poller) as task:
        await wait_for(lambda: HOST in store.snapshot(clock()).hosts)
        first = host(store, clock).processes_t
        clock.now += 1.0
        # The next listings come from the same loop.
        await wait_for(lambda: host(store, clock).processes_t != first)
        loops = [p for p in parse_ps(_ps_here()) if p.command == loop_command and p.ppid == os.getpid()]
        assert len(loops) == 1
        stored = host(store, clock).processes
        assert os.getpid() in {p.pid for p in stored}
        assert all(p.pid != loops[0].pid and p.ppid != loops[0].pid for p in stored)
        # (This machine may have no nvidia-smi: only ps's own step matters here.)
        assert PS_STEP not in poller.problems
    assert task.cancelled()
    # Leaving the stream stopped the loop's process group.
    await wait_for(lambda: all(p.pid != loops[0].pid for p in parse_ps(_ps_here())))


def _ps_here() -> str:
    return subprocess.run(PS_ARGV, capture_output=True, text=True, check=True).stdout


# ------------------------------------------------------------------------------------------- listings


async def test_first_listing_stores_processes_ranks_and_reads_candidate_environments(
    store: Store, clock: FakeClock
) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", CommandResult(2, ALIVE_ENVIRON, ""))
    poller = collector(runner, store, clock)
    async with running(poller):
        await runner.listing(ALIVE)
    assert runner.calls == [
        ps_loop_argv(3.0),
        # The launcher and `tail -F train.log` match the pattern too, but cannot be ranks: not read.
        environ_grep_argv([RANK0, RANK1, RANK2, WORKER_A, WORKER_B]),
        QUERY_APPS_ARGV,
    ]
    snapshot = host(store, clock)
    assert [p.pid for p in snapshot.processes] == ALL_PIDS
    assert snapshot.processes_t == clock.now
    assert dict(snapshot.rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
    launcher = snapshot.processes[0]
    assert launcher.command.endswith(
        "torchrun --nnodes=1 --nproc_per_node=3 train.py --lr 3e-4 --run-name exp1"
    )
    assert launcher.ppid == 401 and launcher.rss_kib == 14096 and launcher.cpu_pct == 4.4


async def test_every_listing_of_one_loop_updates_the_store(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    without_worker_b = "\n".join(ALIVE.splitlines()[:-1])
    async with running(collector(runner, store, clock)):
        seen: list[tuple[float | None, list[int]]] = []
        for listing in (ALIVE, without_worker_b, ALIVE):
            await runner.listing(listing)
            snapshot = host(store, clock)
            seen.append((snapshot.processes_t, [p.pid for p in snapshot.processes]))
            clock.now += 3.0
        # One loop for all of them: no new channel per listing.
        assert len(runner.loops) == 1 and not runner.loops[0].closed
    assert seen == [(1000.0, ALL_PIDS), (1003.0, ALL_PIDS[:-1]), (1006.0, ALL_PIDS)]
    assert runner.calls_of("sh") == [ps_loop_argv(3.0)]


async def test_a_listing_split_across_reads_is_taken_only_when_complete(
    store: Store, clock: FakeClock
) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    async with running(collector(runner, store, clock)):
        loop = await runner.open_loop()
        lines = ALIVE.splitlines()
        loop.hand(*lines[:3])
        await wait_for(loop.waiting.is_set)
        assert HOST not in store.snapshot(clock()).hosts
        assert runner.calls_of("grep") == []
        loop.hand(*lines[3:])
        await wait_for(loop.waiting.is_set)
        assert HOST not in store.snapshot(clock()).hosts
        loop.hand(LISTING_END)
        await wait_for(loop.waiting.is_set)
    assert [p.pid for p in host(store, clock).processes] == ALL_PIDS


async def test_the_end_marker_only_ends_a_listing_and_is_never_a_process(
    store: Store, clock: FakeClock
) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    # A process whose command line holds the marker (a person grepping for it) is an ordinary line.
    grepper = f" 9010   449 S          00:01  0.0  2000 grep -e {LISTING_END} train.log"
    runs = [RunConfig(name="llm", hosts=(HOST,), process=re.compile(r"train|trainmon-ps-end"))]
    async with running(collector(runner, store, clock, runs=runs)):
        await runner.listing(ALIVE + grepper + "\n")
        assert [p.pid for p in host(store, clock).processes] == [*ALL_PIDS, 9010]
        # The marker went to neither parser: a listing of the marker alone would have no process anyway.
        await runner.listing("")
        assert host(store, clock).processes == ()
    assert parse_ps(LISTING_END) == [] and relevant_ps_lines(LISTING_END, [], set()).listed == frozenset()


async def test_our_own_loop_its_ps_its_sleep_and_its_wrapper_are_left_out(
    store: Store, clock: FakeClock
) -> None:
    poller_argv = ps_loop_argv(3.0)
    loop_command = " ".join(poller_argv)
    wrapper = f"sh -c {WRAPPER_SCRIPT} {WRAPPER_NAME} {loop_command}"
    extra = [
        " 8990     1 Ss         00:09  0.0  6900 sshd: trainer@notty",
        f" 8999  8990 S          00:09  0.0  1500 {wrapper}",
        # The wrapper's watcher subshell has the wrapper's command line.
        f" 9004  8999 S          00:09  0.0  1400 {wrapper}",
        f" 9000  8999 S          00:09  0.0  1600 {loop_command}",
        f" 9001  9000 R          00:00  0.0  3000 {PS_COMMAND}",
        " 9005  9000 S          00:00  0.0   900 sleep 3",
        # A helper rank 0 started (a child of a run's process, so it is kept), with a secret to mask.
        " 9002   449 S          00:05  0.1  9000 python3 upload.py --hf_token=hf_AbCdEfGhIjKlMnOpQrStUvWxYz0",
        # A sleep of rank 0's own, with the same command line as the loop's: not ours.
        " 9006   449 S          00:01  0.0   900 sleep 3",
        # Another loop's shell that is not exactly ours (another interval): not ours either.
        f" 9007     1 S          00:01  0.0  1600 {' '.join(ps_loop_argv(7.0))}",
        # Nothing to do with any run: not kept, so neither parsed nor stored.
        " 9003     1 S       01:02:03  0.0  5000 /usr/sbin/cron -f",
    ]
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    async with running(collector(runner, store, clock)):
        await runner.listing(ALIVE + "\n".join(extra) + "\n")
    processes = {p.pid: p for p in host(store, clock).processes}
    assert not {8999, 9004, 9000, 9001, 9005} & processes.keys()
    assert processes[9002].command == "python3 upload.py --hf_token=***"
    assert processes[9006].command == "sleep 3"
    assert processes[9007].command.endswith(f"{PS_LOOP_NAME} 7")
    assert 9003 not in processes
    # The wrapper line is what the SSH runner starts: the loop as quoted by the remote command line.
    assert remote_command_line(poller_argv).endswith(
        f"{WRAPPER_NAME} sh -c '{PS_LOOP_SCRIPT}' {PS_LOOP_NAME} 3"
    )


async def test_a_ps_of_our_own_run_as_a_command_is_still_left_out(store: Store, clock: FakeClock) -> None:
    wrapper = f"sh -c stop() {{ kill -TERM $@; }}; exec 3<&0 </dev/null {WRAPPER_NAME} {PS_COMMAND}"
    extra = [
        f" 9000  8999 S          00:00  0.0  1500 {wrapper}",
        f" 9001  9000 R          00:00  0.0  3000 {PS_COMMAND}",
    ]
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    async with running(collector(runner, store, clock)):
        await runner.listing(ALIVE + "\n".join(extra) + "\n")
    assert [p.pid for p in host(store, clock).processes] == ALL_PIDS


async def test_rank_turning_defunct_keeps_its_rank_then_disappears(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    # A pattern for the ranks' own command lines: the zombie no longer matches it, memory keeps it.
    runs = [RunConfig(name="llm", hosts=(HOST,), process=re.compile(r"-u train\.py"))]
    async with running(collector(runner, store, clock, runs=runs)):
        await runner.listing(ALIVE)
        clock.now += 1.7
        await runner.listing(DEFUNCT)
        snapshot = host(store, clock)
        zombie = next(p for p in snapshot.processes if p.pid == RANK2)
        assert zombie.defunct and zombie.command == "[python3] <defunct>" and zombie.rss_kib == 0
        assert dict(snapshot.rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
        # Environments never change: each was read once, with the first listing.
        assert len(runner.calls_of("grep")) == 1
        clock.now += 3.0
        await runner.listing("\n".join(DEFUNCT.splitlines()[:4] + DEFUNCT.splitlines()[5:]))
    snapshot = host(store, clock)
    assert RANK2 not in {p.pid for p in snapshot.processes}
    assert dict(snapshot.rank_of_pid) == {RANK0: 0, RANK1: 1}


async def test_compute_apps_map_pids_to_gpu_indexes(store: Store, clock: FakeClock) -> None:
    for sample in blackwell_gpus():
        store.apply_gpu(HOST, sample, clock())
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(compute_apps_in_collector_order()))
    runner.script("grep", ok(ALIVE_ENVIRON))
    async with running(collector(runner, store, clock)):
        await runner.listing(ALIVE)
    assert dict(host(store, clock).gpu_of_pid) == {
        2094147: (0,),
        2094383: (1,),
        377306: (2, 3),
        377813: (2,),
        377814: (3,),
    }


async def test_failing_compute_apps_empty_the_mapping_once_and_retry_later(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    for sample in blackwell_gpus():
        store.apply_gpu(HOST, sample, clock())
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(compute_apps_in_collector_order()), CommandResult(9, SMI_FAILED, ""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock)
    async with running(poller):
        await runner.listing(ALIVE)
        assert host(store, clock).gpu_of_pid
        caplog.set_level(logging.INFO, logger=LOGGER)
        for _ in range(4):
            clock.now += 3.0
            await runner.listing(ALIVE)
        snapshot = host(store, clock)
        assert dict(snapshot.gpu_of_pid) == {}
        # The GPU status is the GPU collector's business; processes and ranks go on.
        assert dict(snapshot.rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
        assert poller.problems == {APPS_STEP: "exit status 9: driver not loaded"}
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warnings] == [
            f"{HOST}: nvidia-smi --query-compute-apps failed: exit status 9: driver not loaded"
        ]
        # Tried once after the success, then not again within apps_retry_s.
        assert len(runner.calls_of("nvidia-smi")) == 2
        clock.now += 30.0
        runner.script("nvidia-smi", ok(compute_apps_in_collector_order()))
        await runner.listing(ALIVE)
        assert len(runner.calls_of("nvidia-smi")) == 3
        assert host(store, clock).gpu_of_pid[377306] == (2, 3)
        assert poller.problems == {}
    assert any(
        r.getMessage() == f"{HOST}: nvidia-smi --query-compute-apps works again" for r in caplog.records
    )


async def test_a_hung_nvidia_smi_is_a_problem_not_an_error(store: Store, clock: FakeClock) -> None:
    listed_before_asking: list[int] = []

    def hang(argv: Sequence[str]) -> Reply:
        listed_before_asking.extend(p.pid for p in host(store, clock).processes)
        return TimeoutError()

    runner = ScriptedRunner()
    runner.script("nvidia-smi", hang)
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock)
    async with running(poller):
        await runner.listing(ALIVE)
        # The listing was stored before nvidia-smi was asked: a wedged driver does not hold it back.
        assert listed_before_asking == ALL_PIDS
        assert poller.problems == {APPS_STEP: "no answer in 10 s"}
        assert dict(host(store, clock).rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}


async def test_without_grep_ranks_come_from_the_launchers_child_order(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", CommandResult(127, "", "sh: 1: grep: not found\n"))
    poller = collector(runner, store, clock)
    async with running(poller):
        await runner.listing(ALIVE)
        assert dict(host(store, clock).rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
        assert poller.problems == {ENVIRON_STEP: "exit status 127: sh: 1: grep: not found"}


async def test_a_run_without_pattern_reads_the_environments_of_gpu_holders(
    store: Store, clock: FakeClock
) -> None:
    apps = "".join(
        f"GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce, {pid}, python3, 1000\n" for pid in (RANK0, RANK1)
    )
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(apps))
    runner.script("grep", ok(ALIVE_ENVIRON))
    runs = [RunConfig(name="unnamed", hosts=(HOST,), process=None)]
    async with running(collector(runner, store, clock, runs=runs)):
        await runner.listing(ALIVE)
        # Nothing was known to hold a GPU yet: no environment read, no rank.
        assert runner.calls_of("grep") == []
        assert dict(host(store, clock).rank_of_pid) == {}
        clock.now += 3.0
        await runner.listing(ALIVE)
        assert runner.calls_of("grep") == [environ_grep_argv([RANK0, RANK1])]
        # The scripted dump also holds rank 2 (not on a GPU): only what was asked for counts.
        assert dict(host(store, clock).rank_of_pid) == {RANK0: 0, RANK1: 1}


# ------------------------------------------------------------------------------ when listings stop


async def test_a_loop_that_ends_is_reported_started_again_after_the_interval_and_cleared_when_it_lists(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    interval_s = 0.6
    poller = collector(runner, store, clock, interval_s=interval_s)
    async with running(poller):
        await runner.listing(ALIVE)
        stored_at = clock.now
        clock.now += 3.0
        # ps disappears from the host (a half-done upgrade): the shell answers 127, the loop ends.
        first = runner.loops[0]
        first.hand(*ALIVE.splitlines()[:2])
        first.end(127, "trainmon-ps: 1: ps: not found\n")
        expected = {PS_STEP: "exit status 127: trainmon-ps: 1: ps: not found"}
        await wait_for(lambda: poller.problems == expected)
        assert first.closed
        # Started again, but only interval_s after it ended; it fails the same way, reported once.
        second = await runner.open_loop(1)
        assert first.closed_at is not None and second.opened_at - first.closed_at >= interval_s
        second.end(127, "trainmon-ps: 1: ps: not found\n")
        third = await runner.open_loop(2)
        assert second.closed_at is not None and third.opened_at - second.closed_at >= interval_s
        # The cut listing was not stored, the last complete one stays.
        snapshot = host(store, clock)
        assert snapshot.processes_t == stored_at and [p.pid for p in snapshot.processes] == ALL_PIDS
        assert snapshot.problems[PS_STEP].message == expected[PS_STEP]
        await runner.listing(ALIVE)
        assert poller.problems == {}
        assert PS_STEP not in host(store, clock).problems
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, f"{HOST}: ps failed: exit status 127: trainmon-ps: 1: ps: not found"),
        (logging.INFO, f"{HOST}: ps works again"),
    ]


async def test_ps_that_refuses_its_options_shows_its_first_line(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    poller = collector(runner, store, clock, interval_s=0.05)
    async with running(poller):
        loop = await runner.open_loop()
        loop.end(1, "error: unsupported option (BSD syntax)\nUsage: ps\n")
        await wait_for(lambda: PS_STEP in poller.problems)
    assert poller.problems == {PS_STEP: "exit status 1: error: unsupported option (BSD syntax)"}


async def test_a_hung_loop_is_reported_stopped_and_started_again(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock, interval_s=0.05, command_timeout_s=0.25)
    async with running(poller):
        await runner.listing(ALIVE)
        first = runner.loops[0]
        # Half a listing, then nothing: ps hangs (a stuck /proc read).
        first.hand(*ALIVE.splitlines()[:3])
        await wait_for(lambda: poller.problems == {PS_STEP: "no listing in 0.3 s"})
        assert first.closed and first.closed_at is not None
        assert first.closed_at - first.opened_at >= 0.3
        second = await runner.open_loop(1)
        assert second.opened_at - first.closed_at >= 0.05
        clock.now += 3.0
        await runner.listing(ALIVE)
        assert poller.problems == {}
        assert host(store, clock).processes_t == clock.now


async def test_listings_that_come_in_time_never_count_as_hung(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock, interval_s=0.05, command_timeout_s=0.5)
    async with running(poller):
        # Each listing comes well within the patience after the previous one, for longer than the patience.
        for _ in range(6):
            await runner.listing(ALIVE)
            await asyncio.sleep(0.15)
        assert poller.problems == {}
        assert len(runner.loops) == 1 and not runner.loops[0].closed


async def test_a_listing_too_large_to_hold_is_not_stored_and_is_reported(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proc_collector, "MAX_LISTING_LINES", 10)
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock)
    async with running(poller):
        await runner.listing(ALIVE)
        clock.now += 3.0
        await runner.listing(ALIVE + ALIVE)
        assert poller.problems == {PS_STEP: "listing over 10 lines or 16777216 characters: not read"}
        assert host(store, clock).processes_t == 1000.0
        # The same loop goes on; a listing of a sane size is taken again.
        clock.now += 3.0
        await runner.listing(ALIVE)
        assert poller.problems == {}
        assert host(store, clock).processes_t == clock.now
    assert len(runner.loops) == 1


async def test_a_refused_channel_is_a_problem_and_tried_again(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    runner.open_errors.append(ChannelRefusedError("sh: open failed"))
    poller = collector(runner, store, clock, interval_s=0.05)
    async with running(poller):
        await wait_for(lambda: PS_STEP in poller.problems)
        assert poller.problems == {PS_STEP: "channel refused: sh: open failed"}
        await runner.listing(ALIVE)
        assert poller.problems == {}


async def test_the_collector_waits_out_a_host_that_is_down(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.open_errors.append(HostDownError(DownReason.CONNECTION_REFUSED, "[Errno 111] Connect call failed"))
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    runner.up.clear()
    async with running(collector(runner, store, clock, interval_s=0.01)) as task:
        await wait_for(lambda: runner.waits == 1)
        await asyncio.sleep(0.05)
        # Still waiting for the host: no retry in the meantime, nothing stored, no problem of ps's own.
        assert runner.calls == [ps_loop_argv(0.01)] and runner.loops == []
        assert HOST not in store.snapshot(clock()).hosts
        runner.up.set()
        await runner.listing(ALIVE)
        assert dict(host(store, clock).rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
    assert task.cancelled()


async def test_a_cancelled_collector_leaves_its_stream(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    async with running(collector(runner, store, clock)) as task:
        await runner.listing(ALIVE)
        loop = runner.loops[0]
        assert not loop.closed
    assert task.cancelled() and loop.closed
    assert len(runner.loops) == 1


class CancelSwallowingRunner(ScriptedRunner):
    """Its first nvidia-smi is cancelled just as the answer arrives, inside ``asyncio.wait_for``, which on
    Python 3.11 then returns the answer and drops the cancellation (as the SSH transport's waits can)."""

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        answer = await super().run(argv, timeout)
        if argv[0] != "nvidia-smi" or len(self.calls_of("nvidia-smi")) > 1:
            return answer
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        ready: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        ready.set_result(answer)
        return await asyncio.wait_for(ready, timeout)


async def test_a_cancellation_lost_in_the_transport_still_stops_the_collector(
    store: Store, clock: FakeClock
) -> None:
    runner = CancelSwallowingRunner()
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    task = asyncio.create_task(collector(runner, store, clock, interval_s=0.01).run())
    loop = await runner.open_loop()
    loop.hand(*ALIVE.splitlines(), LISTING_END, *ALIVE.splitlines(), LISTING_END)
    async with asyncio.timeout(5):
        await asyncio.wait({task})
    assert task.cancelled()
    # The listing under way was taken; the next one was not, and the stream was left.
    assert len(runner.calls_of("nvidia-smi")) == 1 and loop.closed


def test_invalid_intervals_are_refused(store: Store, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        ProcessCollector(ScriptedRunner(), store, HOST, [], interval_s=0)


# ------------------------------------------------------------------------------ which ps lines are parsed

_COMMANDS = [
    "/usr/bin/python3 ../venv/bin/torchrun --nnodes=1 --nproc_per_node=2 train.py --lr 3e-4",
    "python -m torch.distributed.run --nproc_per_node 3 --node_rank 1 train.py",
    "/usr/bin/python3 -u train.py --lr 3e-4",
    "python3 train.py --local_rank 1 --world_size 4",
    "python3 worker.py --shard 2",
    "bash run_training.sh",
    "tail -n 0 -F train.log",
    "sshd: trainer@notty",
    "/usr/sbin/cron -f",
    "[kworker/0:1-events]",
]
_PROCESS = st.tuples(st.integers(0, 40), st.sampled_from(_COMMANDS), st.booleans())


def _listing(processes: list[tuple[int, str, bool]]) -> str:
    """ps lines for pids 100, 101 ...; each one's parent is an earlier process (index) or pid 1 (0)."""
    lines = []
    for index, (parent, command, defunct) in enumerate(processes):
        pid = 100 + index
        ppid = 100 + parent - 1 if 0 < parent <= index else 1
        state, shown = ("Z", f"[{command.split()[0]}] <defunct>") if defunct else ("S", command)
        lines.append(f"{pid:>6} {ppid:>6} {state}    01:{index % 60:02d}  0.5 {1000 + index:>6} {shown}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_PROCESS, min_size=1, max_size=30),
    st.sets(st.integers(0, 29), max_size=4),
    st.sets(st.integers(0, 29), max_size=4),
)
def test_the_lines_kept_give_the_ranks_the_whole_listing_gives(
    processes: list[tuple[int, str, bool]], gpu_at: set[int], environ_at: set[int]
) -> None:
    listing = _listing(processes)
    everything = parse_ps(listing)
    listed = {process.pid for process in everything}
    environ = {100 + at: at % 4 for at in environ_at if 100 + at in listed}
    known = {100 + at for at in gpu_at} | set(environ)
    pattern = re.compile(r"train")
    selection = relevant_ps_lines(listing, [pattern], known)
    assert selection.text is not None and selection.listed == listed
    # A blank line sends a listing the line-by-line way (every line a process goes the bulk way): the same.
    assert relevant_ps_lines(listing + "\n", [pattern], known) == selection
    kept = parse_ps(selection.text)
    assert [process.pid for process in kept] == sorted(process.pid for process in kept)
    kept_pids = {process.pid for process in kept}
    assert {process.pid for process in everything if pattern.search(process.command)} <= kept_pids
    assert known & listed <= kept_pids
    for run_pattern in (pattern, None):
        assert find_rank_processes(kept, run_pattern, environ) == find_rank_processes(
            everything, run_pattern, environ
        )
    assert environ_candidates(kept, pattern) == environ_candidates(everything, pattern)


_LISTING_STEP = st.tuples(
    st.lists(_PROCESS, min_size=1, max_size=12),
    st.sets(st.integers(0, 11), max_size=3),
    st.sampled_from(
        ["new", "same processes", "same processes and known pids", "other parents", "blank line"]
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_LISTING_STEP, min_size=1, max_size=6))
def test_a_hosts_line_picker_answers_every_listing_as_if_it_were_the_first(
    steps: list[tuple[list[tuple[int, str, bool]], set[int], str]],
) -> None:
    # RelevantLines keeps its last choice while the processes (pid, parent, command) and the pids asked
    # about stay; the next listing's times and CPU differ anyway.
    picker = RelevantLines()
    pattern = re.compile(r"train")
    processes: list[tuple[int, str, bool]] = []
    known: set[int] = set()
    for number, (new_processes, known_at, step) in enumerate(steps):
        if step == "new" or not processes:
            processes = new_processes
        elif step == "other parents":
            processes = [(parent + 1, command, defunct) for parent, command, defunct in processes]
        if step != "same processes and known pids":
            known = {100 + at for at in known_at}
        listing = _listing(processes).replace("  0.5 ", f" {number}.25 ")
        if step == "blank line":
            listing += "\n"
        assert picker.select(listing, [pattern], known) == relevant_ps_lines(listing, [pattern], known)


def test_a_listing_with_a_header_is_left_to_be_parsed_whole() -> None:
    listing = "  PID  PPID STAT ELAPSED %CPU   RSS COMMAND\n" + ALIVE
    assert relevant_ps_lines(listing, [re.compile("train")], set()).text is None
    # Without any process of interest nothing is kept, but every pid is known to be listed.
    selection = relevant_ps_lines(ALIVE, [re.compile("no such program")], set())
    assert selection.text == ""
    assert selection.listed == {LAUNCHER, TAIL, RANK0, RANK1, RANK2, WORKER_A, WORKER_B}


async def test_a_process_that_starts_holding_a_gpu_is_listed_with_the_same_listing(
    store: Store, clock: FakeClock
) -> None:
    # ps lists an inference server no run's pattern matches; compute-apps then names it as a GPU holder.
    server = 9100
    listing = ALIVE + f" {server}     1 S          10:00 99.0 99000 /opt/serve --model llama\n"
    apps = f"GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce, {server}, serve, 40000\n"
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(apps))
    runner.script("grep", ok(ALIVE_ENVIRON))
    async with running(collector(runner, store, clock)):
        await runner.listing(listing)
    listed = {process.pid: process for process in host(store, clock).processes}
    assert listed[server].command == "/opt/serve --model llama"
    assert listed[server].cpu_pct == 99.0
    # Listing it read no environment: the run's pattern picks whose environment is read, not the GPU.
    assert runner.calls_of("grep") == [environ_grep_argv([RANK0, RANK1, RANK2, WORKER_A, WORKER_B])]


def apps_for_ranks(*pids: int) -> str:
    """Compute-apps rows: each pid holding one GPU of the Blackwell capture, in the collector's order."""
    uuids = [sample.uuid for sample in blackwell_gpus()]
    rows = {"gpu_uuid": "", "pid": "", "process_name": "python3", "used_memory": "40000"}
    lines = []
    for pid, uuid in zip(pids, uuids, strict=False):
        rows.update(pid=str(pid), gpu_uuid=str(uuid))
        lines.append(", ".join(rows[field] for field in QUERY_APPS_FIELDS))
    return "\n".join(lines) + "\n"


async def test_compute_apps_run_again_only_when_the_processes_change_or_the_refresh_is_due(
    store: Store, clock: FakeClock
) -> None:
    for sample in blackwell_gpus():
        store.apply_gpu(HOST, sample, clock())
    runner = ScriptedRunner()
    runner.script("nvidia-smi", ok(apps_for_ranks(RANK0, RANK1, RANK2)))
    runner.script("grep", ok(ALIVE_ENVIRON))
    async with running(collector(runner, store, clock)):
        await runner.listing(ALIVE)
        assert dict(host(store, clock).gpu_of_pid) == {RANK0: (0,), RANK1: (1,), RANK2: (2,)}
        # The same processes in every listing: the answer cannot have changed, so it is not asked again...
        listings = round(proc_collector.DEFAULT_APPS_REFRESH_S / 3.0)
        assert listings * 3.0 == proc_collector.DEFAULT_APPS_REFRESH_S
        for _ in range(listings - 1):
            clock.now += 3.0
            await runner.listing(ALIVE)
        assert len(runner.calls_of("nvidia-smi")) == 1
        # ... until the refresh is due (DEFAULT_APPS_REFRESH_S after the answer).
        clock.now += 3.0
        await runner.listing(ALIVE)
        assert len(runner.calls_of("nvidia-smi")) == 2
        # A rank ends (its line leaves the listing): asked at once, and the mapping follows.
        without_rank2 = "\n".join(
            line for line in ALIVE.splitlines() if not line.lstrip().startswith(f"{RANK2} ")
        )
        runner.script("nvidia-smi", ok(apps_for_ranks(RANK0, RANK1)))
        clock.now += 3.0
        await runner.listing(without_rank2)
        assert len(runner.calls_of("nvidia-smi")) == 3
        assert dict(host(store, clock).gpu_of_pid) == {RANK0: (0,), RANK1: (1,)}
        clock.now += 3.0
        await runner.listing(without_rank2)
        assert len(runner.calls_of("nvidia-smi")) == 3
