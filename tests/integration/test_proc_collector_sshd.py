"""The process collector against a real OpenSSH server: fake training ranks on a host, found by rank.

A stand-in ``torchrun`` is started over SSH as the test user (so its ranks' environments are readable by the
collector's login) and starts two ranks with ``RANK``/``LOCAL_RANK`` set as on the third node of a multi-node
job; rank 0 forks a DataLoader-style worker. A second "rank" runs on this machine as the test runner's user
with only ``--local_rank 3`` on its command line. The run's pattern is the test's own script path, so fake
ranks of other test runs on the same machine are not mistaken for this test's. The host's ``nvidia-smi`` is
a script that prints a compute-apps table the test writes with the real pids.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import FIRST_ADDRESS
from tests.integration.sshd_harness import (
    MARK_VARIABLE,
    FakeHost,
    SshdHarness,
    _die_with_parent,
    leftover_processes,
    marked_argv,
    wait_for_no_leftovers,
    wait_until_gone,
)
from trainmon_tui.config import RunConfig
from trainmon_tui.model import GpuSample
from trainmon_tui.state.store import HostSnapshot, Store
from trainmon_tui.transport.proc_collector import PS_STEP, ProcessCollector, ps_loop_argv
from trainmon_tui.transport.session import HostSession
from trainmon_tui.transport.ssh_runner import SshRunner

pytestmark = pytest.mark.integration

HOST = "fake-gpu-host"
INTERVAL_S = 0.2
# The third node of a job with 2 ranks per node: global ranks 4 and 5, local ranks 0 and 1.
RANK_BASE = 4

# Prints the compute-apps table the test wrote; anything else is a test mistake and says so.
_STAND_IN_NVIDIA_SMI = """#!/bin/sh
# Stand-in nvidia-smi for the process collector's integration test: replays a compute-apps table.
case "$1" in
    --query-compute-apps=*) cat {apps} ;;
    *) echo "stand-in nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
esac
"""

# Named torchrun so that it reads as a launcher. Starts FAKE_NPROC ranks with the variables torchrun sets
# (RANK = FAKE_RANK_BASE + local rank), prints their pids, and reaps them only with FAKE_REAP=1.
_FAKE_TORCHRUN = """
import os, subprocess, sys, time
nproc = int(os.environ["FAKE_NPROC"])
base = int(os.environ["FAKE_RANK_BASE"])
children = []
for local_rank in range(nproc):
    env = dict(os.environ, RANK=str(base + local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE="8")
    child = subprocess.Popen([sys.executable, "-u", *sys.argv[2:]], env=env)
    children.append(child)
    print(f"rank {base + local_rank} pid {child.pid}", flush=True)
while True:
    if os.environ["FAKE_REAP"] == "1":
        for child in children:
            child.poll()
    time.sleep(0.05)
"""

# The training script: rank 0 forks a worker that inherits its environment and command line.
_FAKE_TRAIN = """
import os, time
if int(os.environ["LOCAL_RANK"]) == 0:
    worker = os.fork()
    if worker == 0:
        time.sleep(600)
        os._exit(0)
    print(f"worker {worker}", flush=True)
time.sleep(600)
"""


@dataclass
class ProcHost:
    host: FakeHost
    apps_file: Path
    launcher_path: Path
    train_path: Path


@pytest.fixture
def proc_host(sshd_harness: SshdHarness) -> Iterator[ProcHost]:
    name = f"proc-{uuid.uuid4().hex[:8]}"
    apps_file = sshd_harness.write_file(f"{name}-compute-apps.csv", "")
    bin_dir = sshd_harness.make_bin_dir(
        f"{name}-bin", {"nvidia-smi": _STAND_IN_NVIDIA_SMI.format(apps=shlex.quote(str(apps_file)))}
    )
    scripts = sshd_harness.root / f"{name}-job"
    scripts.mkdir(mode=0o755)
    launcher_path = scripts / "torchrun"
    launcher_path.write_text(_FAKE_TORCHRUN)
    train_path = scripts / "fake_train.py"
    train_path.write_text(_FAKE_TRAIN)
    host = sshd_harness.start_host_with_bin(FIRST_ADDRESS, bin_dir)
    yield ProcHost(host, apps_file, launcher_path, train_path)
    host.stop()


@dataclass
class Job:
    rank_pids: dict[int, int]
    worker: int
    local_rank_process: subprocess.Popen[bytes]


@asynccontextmanager
async def running_job(runner: SshRunner, proc_host: ProcHost, mark: str, *, reap: bool) -> AsyncIterator[Job]:
    """The fake torchrun job on the host (over SSH, as the test user) plus a rank started on this machine."""
    argv = marked_argv(
        mark,
        [
            "FAKE_NPROC=2",
            f"FAKE_RANK_BASE={RANK_BASE}",
            f"FAKE_REAP={int(reap)}",
            "python3",
            str(proc_host.launcher_path),
            "--standalone",
            str(proc_host.train_path),
            "--lr",
            "3e-4",
        ],
    )
    local = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(600)",
            str(proc_host.train_path),
            "--local_rank",
            "3",
        ],
        env={**os.environ, MARK_VARIABLE: mark},
        stdin=subprocess.DEVNULL,
        # Only a prctl call runs in the child: it dies with a killed test runner instead of lingering.
        preexec_fn=_die_with_parent,  # noqa: PLW1509
    )
    try:
        async with runner.stream(argv) as stream:
            rank_pids: dict[int, int] = {}
            worker: int | None = None
            async with asyncio.timeout(15):
                async for line in stream:
                    words = line.split()
                    if words[0] == "rank":
                        rank_pids[int(words[1])] = int(words[3])
                    elif words[0] == "worker":
                        worker = int(words[1])
                    if len(rank_pids) == 2 and worker is not None:
                        break
            assert worker is not None
            yield Job(rank_pids, worker, local)
    finally:
        local.kill()
        local.wait()
    # Leaving the stream closed the channel: the wrapper took the launcher, its ranks and the worker along.
    _, left = await asyncio.to_thread(wait_until_gone, mark, 5.0)
    assert left == []


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def host_view(store: Store) -> HostSnapshot | None:
    return store.snapshot(0.0).hosts.get(HOST)


@asynccontextmanager
async def collecting(
    runner: SshRunner, store: Store, proc_host: ProcHost, *, interval_s: float = INTERVAL_S
) -> AsyncIterator[ProcessCollector]:
    # The pattern names this test's own script path: other test runs on this machine start fake ranks too.
    pattern = re.compile(re.escape(str(proc_host.train_path)))
    run = RunConfig(name="fake-job", hosts=(HOST,), process=pattern)
    collector = ProcessCollector(runner, store, HOST, [run], interval_s=interval_s)
    task = asyncio.create_task(collector.run())
    try:
        yield collector
    finally:
        task.cancel()
        async with asyncio.timeout(10):
            await asyncio.wait({task})
        assert task.cancelled()


def gpu_holders(store: Store) -> dict[int, tuple[int, ...]]:
    view = host_view(store)
    return {} if view is None else dict(view.gpu_of_pid)


def ranks(store: Store) -> dict[int, int]:
    view = host_view(store)
    return {} if view is None else dict(view.rank_of_pid)


async def test_ranks_from_environment_and_command_line_and_a_killed_rank_disappears(
    sshd_harness: SshdHarness, proc_host: ProcHost
) -> None:
    store = Store()
    # What the GPU collector would have stored: the UUIDs the compute-apps table refers to.
    store.apply_gpu(HOST, GpuSample(gpu=0, uuid="GPU-11111111-2222-3333-4444-555555555555"), 0.0)
    store.apply_gpu(HOST, GpuSample(gpu=1, uuid="GPU-66666666-7777-8888-9999-000000000000"), 0.0)
    mark = uuid.uuid4().hex
    async with (
        HostSession(sshd_harness.params(proc_host.host)) as session,
        running_job(SshRunner(session, HOST), proc_host, mark, reap=True) as job,
    ):
        rank4, rank5 = job.rank_pids[RANK_BASE], job.rank_pids[RANK_BASE + 1]
        proc_host.apps_file.write_text(
            f"GPU-11111111-2222-3333-4444-555555555555, {rank4}, /usr/bin/python3, 1200\n"
            f"GPU-66666666-7777-8888-9999-000000000000, {rank5}, /usr/bin/python3, 1180\n"
        )
        local_pid = job.local_rank_process.pid
        expected = {rank4: 4, rank5: 5, local_pid: 3}
        async with collecting(SshRunner(session, HOST), store, proc_host) as collector:
            gpus_held = {rank4: (0,), rank5: (1,)}
            await wait_for(lambda: ranks(store) == expected and gpu_holders(store) == gpus_held, timeout=10)
            view = host_view(store)
            assert view is not None
            listed = {process.pid: process for process in view.processes}
            # The launcher and rank 4's worker are listed, but they are no ranks.
            launcher_pid = listed[rank4].ppid
            assert launcher_pid is not None and launcher_pid == listed[rank5].ppid
            launcher = listed[launcher_pid]
            assert launcher.command == (
                f"python3 {proc_host.launcher_path} --standalone {proc_host.train_path} --lr 3e-4"
            )
            assert job.worker in listed and listed[job.worker].ppid == rank4
            assert launcher.pid not in view.rank_of_pid and job.worker not in view.rank_of_pid
            # The environment of this machine's process is unreadable for the test user (or has no rank):
            # neither is a failure.
            assert collector.problems == {}

            os.kill(rank5, signal.SIGKILL)
            # The launcher reaps it at once; the next poll or the one after no longer lists it.
            await wait_for(lambda: ranks(store) == {rank4: 4, local_pid: 3}, timeout=3 * INTERVAL_S + 2)
            view = host_view(store)
            assert view is not None
            assert rank5 not in {process.pid for process in view.processes}


async def test_a_killed_rank_that_is_not_reaped_stays_listed_as_defunct_with_its_rank(
    sshd_harness: SshdHarness, proc_host: ProcHost
) -> None:
    store = Store()
    mark = uuid.uuid4().hex
    async with (
        HostSession(sshd_harness.params(proc_host.host)) as session,
        running_job(SshRunner(session, HOST), proc_host, mark, reap=False) as job,
    ):
        rank4, rank5 = job.rank_pids[RANK_BASE], job.rank_pids[RANK_BASE + 1]
        async with collecting(SshRunner(session, HOST), store, proc_host) as collector:
            await wait_for(lambda: ranks(store).get(rank5) == 5, timeout=10)
            os.kill(rank5, signal.SIGKILL)

            def rank5_defunct() -> bool:
                view = host_view(store)
                return view is not None and any(p.pid == rank5 and p.defunct for p in view.processes)

            await wait_for(rank5_defunct, timeout=3 * INTERVAL_S + 2)
            # Neither its command line nor its environment says so any more, but it is still rank 5.
            assert ranks(store) == {rank4: 4, rank5: 5, job.local_rank_process.pid: 3}
            assert collector.problems == {}


async def test_one_loop_lists_the_host_and_nothing_of_it_is_left_after_the_collector_is_cancelled(
    sshd_harness: SshdHarness, proc_host: ProcHost
) -> None:
    # An interval no other test uses: the loop's command line (and its wrapper's) names this test's loop.
    interval_s = 0.217
    loop_command = " ".join(ps_loop_argv(interval_s))
    ours = (loop_command, f"sleep {ps_loop_argv(interval_s)[-1]}")
    store = Store()

    def loop_shells() -> list[int]:
        running = leftover_processes(sshd_harness.user, (), (loop_command,))
        return [pid for pid, line in running if line.rstrip() == loop_command]

    async def listings(count: int) -> None:
        for _ in range(count):
            before = host_view(store)

            def came(before: HostSnapshot | None = before) -> bool:
                view = host_view(store)
                return view is not None and (before is None or view.processes_t != before.processes_t)

            await wait_for(came, timeout=5)

    async with HostSession(sshd_harness.params(proc_host.host)) as session:
        async with collecting(SshRunner(session, HOST), store, proc_host, interval_s=interval_s) as collector:
            await listings(1)
            shells = await asyncio.to_thread(loop_shells)
            assert len(shells) == 1
            # Later listings come from the same loop: no new channel, shell and ps wrapper per listing.
            await listings(3)
            assert await asyncio.to_thread(loop_shells) == shells
            assert PS_STEP not in collector.problems
        # Cancelled: the channel is closed and the wrapper takes the loop, its ps and its sleep along.
        assert session.channels_in_use == 0
        left = await asyncio.to_thread(wait_for_no_leftovers, sshd_harness.user, (), ours, 5.0)
        assert left == []
