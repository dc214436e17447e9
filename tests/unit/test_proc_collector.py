"""Tests for the process collector: a scripted runner replays recorded ps, nvidia-smi and environ output."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from itertools import pairwise
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
from trainmon_tui.transport.proc_collector import (
    APPS_STEP,
    ENVIRON_STEP,
    PS_COMMAND,
    PS_STEP,
    ProcessCollector,
    relevant_ps_lines,
)
from trainmon_tui.transport.remote import WRAPPER_NAME
from trainmon_tui.transport.runner import LineStream
from trainmon_tui.transport.session import DownReason, HostDownError
from trainmon_tui.transport.streams import CommandResult

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


class ScriptedRunner:
    """Answers each program (ps, nvidia-smi, grep) from its own queue; the last reply repeats."""

    name = HOST
    is_local = False

    def __init__(self) -> None:
        self.replies: dict[str, deque[Reply | Callable[[Sequence[str]], Reply]]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.up = asyncio.Event()
        self.up.set()
        self.waits = 0

    def script(self, program: str, *replies: Reply | Callable[[Sequence[str]], Reply]) -> None:
        self.replies[program] = deque(replies)

    async def wait_up(self, timeout: float | None = None) -> None:
        self.waits += 1
        await self.up.wait()

    def stream(self, argv: Sequence[str]) -> AbstractAsyncContextManager[LineStream]:
        raise AssertionError("the process collector runs short commands only")

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


def collector(
    runner: ScriptedRunner,
    store: Store,
    clock: FakeClock,
    *,
    runs: Sequence[RunConfig] | None = None,
    interval_s: float = 3.0,
) -> ProcessCollector:
    if runs is None:
        runs = [RunConfig(name="llm", hosts=(HOST,), process=re.compile(r"train"))]
    return ProcessCollector(runner, store, HOST, runs, clock=clock, interval_s=interval_s, apps_retry_s=30.0)


def host(store: Store, clock: FakeClock) -> HostSnapshot:
    return store.snapshot(clock()).hosts[HOST]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> Store:
    return Store()


async def test_first_poll_stores_listing_ranks_and_reads_candidate_environments(
    store: Store, clock: FakeClock
) -> None:
    runner = ScriptedRunner()
    runner.script("ps", ok(ALIVE))
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", CommandResult(2, ALIVE_ENVIRON, ""))
    await collector(runner, store, clock).poll()
    assert runner.calls == [
        PS_ARGV,
        # The launcher and `tail -F train.log` match the pattern too, but cannot be ranks: not read.
        environ_grep_argv([RANK0, RANK1, RANK2, WORKER_A, WORKER_B]),
        QUERY_APPS_ARGV,
    ]
    snapshot = host(store, clock)
    assert [p.pid for p in snapshot.processes] == [LAUNCHER, TAIL, RANK0, RANK1, RANK2, WORKER_A, WORKER_B]
    assert snapshot.processes_t == clock.now
    assert dict(snapshot.rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
    launcher = snapshot.processes[0]
    assert launcher.command.endswith(
        "torchrun --nnodes=1 --nproc_per_node=3 train.py --lr 3e-4 --run-name exp1"
    )
    assert launcher.ppid == 401 and launcher.rss_kib == 14096 and launcher.cpu_pct == 4.4


async def test_rank_turning_defunct_keeps_its_rank_then_disappears(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script(
        "ps", ok(ALIVE), ok(DEFUNCT), ok("\n".join(DEFUNCT.splitlines()[:4] + DEFUNCT.splitlines()[5:]))
    )
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    # A pattern for the ranks' own command lines: the zombie no longer matches it, memory keeps it.
    runs = [RunConfig(name="llm", hosts=(HOST,), process=re.compile(r"-u train\.py"))]
    poller = collector(runner, store, clock, runs=runs)
    await poller.poll()
    clock.now += 1.7
    await poller.poll()
    snapshot = host(store, clock)
    zombie = next(p for p in snapshot.processes if p.pid == RANK2)
    assert zombie.defunct and zombie.command == "[python3] <defunct>" and zombie.rss_kib == 0
    assert dict(snapshot.rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
    # Environments never change: each was read once, at the first poll.
    assert len(runner.calls_of("grep")) == 1
    clock.now += 3.0
    await poller.poll()
    snapshot = host(store, clock)
    assert RANK2 not in {p.pid for p in snapshot.processes}
    assert dict(snapshot.rank_of_pid) == {RANK0: 0, RANK1: 1}


async def test_compute_apps_map_pids_to_gpu_indexes(store: Store, clock: FakeClock) -> None:
    for sample in blackwell_gpus():
        store.apply_gpu(HOST, sample, clock())
    runner = ScriptedRunner()
    runner.script("ps", ok(ALIVE))
    runner.script("nvidia-smi", ok(compute_apps_in_collector_order()))
    runner.script("grep", ok(ALIVE_ENVIRON))
    await collector(runner, store, clock).poll()
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
    runner.script("ps", ok(ALIVE))
    runner.script("nvidia-smi", ok(compute_apps_in_collector_order()), CommandResult(9, SMI_FAILED, ""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock)
    await poller.poll()
    assert host(store, clock).gpu_of_pid
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(4):
        clock.now += 3.0
        await poller.poll()
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
    await poller.poll()
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
    runner.script("ps", ok(ALIVE))
    runner.script("nvidia-smi", hang)
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock)
    await poller.poll()
    # The listing was stored before nvidia-smi was asked: a wedged driver does not hold it back.
    assert listed_before_asking == [LAUNCHER, TAIL, RANK0, RANK1, RANK2, WORKER_A, WORKER_B]
    assert poller.problems == {APPS_STEP: "no answer in 10 s"}
    assert dict(host(store, clock).rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}


async def test_our_own_ps_is_left_out_and_commands_are_cleaned(store: Store, clock: FakeClock) -> None:
    wrapper = f"sh -c stop() {{ kill -TERM $@; }}; exec 3<&0 </dev/null {WRAPPER_NAME} {PS_COMMAND}"
    extra = [
        f" 9000  8999 S          00:00  0.0  1500 {wrapper}",
        f" 9001  9000 R          00:00  0.0  3000 {PS_COMMAND}",
        # A helper rank 0 started (a child of a run's process, so it is kept), with a secret to mask.
        " 9002   449 S          00:05  0.1  9000 python3 upload.py --hf_token=hf_AbCdEfGhIjKlMnOpQrStUvWxYz0",
        # Nothing to do with any run: not kept, so neither parsed nor stored.
        " 9003     1 S       01:02:03  0.0  5000 /usr/sbin/cron -f",
    ]
    runner = ScriptedRunner()
    runner.script("ps", ok(ALIVE + "\n".join(extra) + "\n"))
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    await collector(runner, store, clock).poll()
    processes = {p.pid: p for p in host(store, clock).processes}
    assert 9000 not in processes and 9001 not in processes
    assert processes[9002].command == "python3 upload.py --hf_token=***"
    assert 9003 not in processes


async def test_failing_ps_keeps_the_last_listing_and_is_reported_once(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = ScriptedRunner()
    runner.script("ps", ok(ALIVE), CommandResult(1, "", "error: unsupported option (BSD syntax)\nUsage: ps"))
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock)
    await poller.poll()
    stored_at = clock.now
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(3):
        clock.now += 3.0
        await poller.poll()
    snapshot = host(store, clock)
    assert snapshot.processes_t == stored_at and len(snapshot.processes) == 7
    assert poller.problems == {PS_STEP: "exit status 1: error: unsupported option (BSD syntax)"}
    assert len(caplog.records) == 1


async def test_without_grep_ranks_come_from_the_launchers_child_order(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    runner.script("ps", ok(ALIVE))
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", CommandResult(127, "", "sh: 1: grep: not found\n"))
    poller = collector(runner, store, clock)
    await poller.poll()
    assert dict(host(store, clock).rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
    assert poller.problems == {ENVIRON_STEP: "exit status 127: sh: 1: grep: not found"}


async def test_a_run_without_pattern_reads_the_environments_of_gpu_holders(
    store: Store, clock: FakeClock
) -> None:
    apps = "".join(
        f"GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce, {pid}, python3, 1000\n" for pid in (RANK0, RANK1)
    )
    runner = ScriptedRunner()
    runner.script("ps", ok(ALIVE))
    runner.script("nvidia-smi", ok(apps))
    runner.script("grep", ok(ALIVE_ENVIRON))
    runs = [RunConfig(name="unnamed", hosts=(HOST,), process=None)]
    poller = collector(runner, store, clock, runs=runs)
    await poller.poll()
    # Nothing was known to hold a GPU yet: no environment read, no rank.
    assert runner.calls_of("grep") == []
    assert dict(host(store, clock).rank_of_pid) == {}
    clock.now += 3.0
    await poller.poll()
    assert runner.calls_of("grep") == [environ_grep_argv([RANK0, RANK1])]
    # The scripted dump also holds rank 2 (not on a GPU): only what was asked for counts.
    assert dict(host(store, clock).rank_of_pid) == {RANK0: 0, RANK1: 1}


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_the_collector_waits_out_a_host_that_is_down(store: Store, clock: FakeClock) -> None:
    runner = ScriptedRunner()
    down = HostDownError(DownReason.CONNECTION_REFUSED, "[Errno 111] Connect call failed")
    runner.script("ps", down, ok(ALIVE))
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    runner.up.clear()
    task = asyncio.create_task(collector(runner, store, clock, interval_s=0.01).run())
    await wait_for(lambda: runner.waits == 1)
    await asyncio.sleep(0.05)
    # Still waiting for the host: no retry in the meantime, nothing stored.
    assert runner.calls == [PS_ARGV]
    assert HOST not in store.snapshot(clock()).hosts
    runner.up.set()
    await wait_for(lambda: HOST in store.snapshot(clock()).hosts)
    assert dict(host(store, clock).rank_of_pid) == {RANK0: 0, RANK1: 1, RANK2: 2}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_polls_are_paced_by_the_interval_until_cancelled(store: Store, clock: FakeClock) -> None:
    loop = asyncio.get_running_loop()
    started: list[float] = []

    def listing(argv: Sequence[str]) -> CommandResult:
        started.append(loop.time())
        return ok(ALIVE)

    runner = ScriptedRunner()
    runner.script("ps", listing)
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    task = asyncio.create_task(collector(runner, store, clock, interval_s=0.05).run())
    await wait_for(lambda: len(started) >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(later - earlier >= 0.045 for earlier, later in pairwise(started))


class CancelSwallowingRunner(ScriptedRunner):
    """Its first ps is cancelled just as the answer arrives, inside ``asyncio.wait_for``, which on Python
    3.11 then returns the answer and drops the cancellation (as the SSH transport's channel waits can)."""

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        answer = await super().run(argv, timeout)
        if argv[0] != "ps" or len(self.calls) > 1:
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
    runner.script("ps", ok(ALIVE))
    runner.script("nvidia-smi", ok(""))
    runner.script("grep", ok(ALIVE_ENVIRON))
    task = asyncio.create_task(collector(runner, store, clock, interval_s=0.01).run())
    async with asyncio.timeout(5):
        await asyncio.wait({task})
    assert task.cancelled()
    # The poll that was under way finished; no further poll started.
    assert runner.calls_of("ps") == [PS_ARGV]


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


def test_a_listing_with_a_header_is_left_to_be_parsed_whole() -> None:
    listing = "  PID  PPID STAT ELAPSED %CPU   RSS COMMAND\n" + ALIVE
    assert relevant_ps_lines(listing, [re.compile("train")], set()).text is None
    # Without any process of interest nothing is kept, but every pid is known to be listed.
    selection = relevant_ps_lines(ALIVE, [re.compile("no such program")], set())
    assert selection.text == ""
    assert selection.listed == {LAUNCHER, TAIL, RANK0, RANK1, RANK2, WORKER_A, WORKER_B}


async def test_a_process_that_starts_holding_a_gpu_is_listed_in_the_same_poll(
    store: Store, clock: FakeClock
) -> None:
    # ps lists an inference server no run's pattern matches; compute-apps then names it as a GPU holder.
    server = 9100
    listing = ALIVE + f" {server}     1 S          10:00 99.0 99000 /opt/serve --model llama\n"
    apps = f"GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce, {server}, serve, 40000\n"
    runner = ScriptedRunner()
    runner.script("ps", ok(listing))
    runner.script("nvidia-smi", ok(apps))
    runner.script("grep", ok(ALIVE_ENVIRON))
    await collector(runner, store, clock).poll()
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
    runner.script("ps", ok(ALIVE))
    runner.script("nvidia-smi", ok(apps_for_ranks(RANK0, RANK1, RANK2)))
    runner.script("grep", ok(ALIVE_ENVIRON))
    poller = collector(runner, store, clock)
    await poller.poll()
    assert dict(host(store, clock).gpu_of_pid) == {RANK0: (0,), RANK1: (1,), RANK2: (2,)}
    # The same processes poll after poll: the answer cannot have changed, so it is not asked again...
    for _ in range(4):
        clock.now += 3.0
        await poller.poll()
    assert len(runner.calls_of("nvidia-smi")) == 1
    # ... until the refresh is due (15 s after the answer).
    clock.now += 3.0
    await poller.poll()
    assert len(runner.calls_of("nvidia-smi")) == 2
    # A rank ends (its line leaves the listing): asked at once, and the mapping follows.
    without_rank2 = "\n".join(
        line for line in ALIVE.splitlines() if not line.lstrip().startswith(f"{RANK2} ")
    )
    runner.script("ps", ok(without_rank2 + "\n"))
    runner.script("nvidia-smi", ok(apps_for_ranks(RANK0, RANK1)))
    clock.now += 3.0
    await poller.poll()
    assert len(runner.calls_of("nvidia-smi")) == 3
    assert dict(host(store, clock).gpu_of_pid) == {RANK0: (0,), RANK1: (1,)}
    clock.now += 3.0
    await poller.poll()
    assert len(runner.calls_of("nvidia-smi")) == 3
