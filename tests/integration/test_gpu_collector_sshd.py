"""GpuCollector over real SSH: four fake hosts, each with its own stand-in ``nvidia-smi``, one shared store.

- ``healthy``: dmon replays the Blackwell capture, ``--query-gpu`` prints that host's recorded answer;
- ``no-driver``: nvidia-smi prints the corpus "couldn't communicate with the NVIDIA driver" message, status 9;
- ``no-smi``: there is no nvidia-smi on the PATH at all (the shell's status 127);
- ``quiet-dmon``: dmon prints its headers and then nothing; ``--query-gpu`` works.

Every stand-in re-executes itself with a test mark in its environment, so the test can check that nothing
it started on a host is left running once the collectors are cancelled.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.sshd_harness import (
    MARK_VARIABLE,
    FakeHost,
    SshdHarness,
    marked_processes,
    wait_until_gone,
)
from tests.unit.test_gpu_collector import BLACKWELL_NAME, BLACKWELL_UUIDS, blackwell_query_answer
from trainmon_tui.parsers.smi_csv import QUERY_GPU_ARGV
from trainmon_tui.parsers.smi_status import DRIVER_UNREACHABLE, NOT_INSTALLED
from trainmon_tui.state.store import GpuSnapshot, HostSnapshot, Store
from trainmon_tui.transport.gpu_collector import GpuCollector, GpuSource
from trainmon_tui.transport.session import HostSession
from trainmon_tui.transport.ssh_runner import SshRunner

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DMON_BLACKWELL = FIXTURES / "dmon" / "dmon_s_pucm_blackwell_4gpu_driver595.txt"
DRIVER_FAILURE = FIXTURES / "smi_errors" / "smi_failed_couldnt_communicate_single_line.txt"
CLEANUP_LIMIT_S = 5.0

# The first line makes the stand-in carry the test mark, and so does everything it starts.
_MARK_ITSELF = '[ -n "${{{variable}:-}}" ] || exec env {variable}={mark} "$0" "$@"\n'
_HEALTHY = """#!/bin/sh
{mark_itself}case "$1" in
    dmon)
        while :; do
            while IFS= read -r line; do
                printf '%s\\n' "$line"
                sleep 0.05
            done < {dmon}
        done ;;
    --query-gpu=*)
        cat {query} ;;
    *)
        echo "stand-in nvidia-smi cannot answer: $*" >&2
        exit 2 ;;
esac
"""
_QUIET_DMON = """#!/bin/sh
{mark_itself}case "$1" in
    dmon)
        head -n 2 {dmon}
        exec sleep 600 ;;
    *)
        cat {query} ;;
esac
"""
# nvidia-smi exits with 9 when the driver is not loaded.
_NO_DRIVER = """#!/bin/sh
{mark_itself}cat {message}
exit 9
"""


@dataclass
class GpuHost:
    name: str
    fake: FakeHost
    collector: GpuCollector


def stand_in(template: str, mark: str, **files: Path) -> str:
    mark_itself = _MARK_ITSELF.format(variable=MARK_VARIABLE, mark=mark)
    quoted = {name: shlex.quote(str(path)) for name, path in files.items()}
    return template.format(mark_itself=mark_itself, **quoted)


async def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@asynccontextmanager
async def collecting(
    harness: SshdHarness, store: Store, hosts: dict[str, tuple[str, Path]]
) -> AsyncIterator[dict[str, GpuHost]]:
    """Start a fake host per entry (name -> address, bin dir) with its session and GPU collector."""
    started: dict[str, GpuHost] = {}
    tasks: list[asyncio.Task[None]] = []
    async with AsyncExitStack() as stack:
        try:
            for name, (address, bin_dir) in hosts.items():
                fake = harness.start_host_with_bin(address, bin_dir)
                stack.callback(fake.stop)
                session = await stack.enter_async_context(HostSession(harness.params(fake)))
                collector = GpuCollector(
                    SshRunner(session, name),
                    store,
                    name,
                    query_interval_s=0.2,
                    dmon_silence_s=1.5,
                    inventory_interval_s=1.0,
                    failure_retry_s=0.3,
                )
                started[name] = GpuHost(name, fake, collector)
                tasks.append(asyncio.get_running_loop().create_task(collector.run()))
            yield started
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
    for task in tasks:
        assert task.cancelled()


def host(store: Store, name: str) -> HostSnapshot | None:
    return store.snapshot(0.0).hosts.get(name)


def gpu(store: Store, name: str, index: int) -> GpuSnapshot | None:
    entry = host(store, name)
    return None if entry is None else entry.gpu(index)


async def test_gpu_readings_and_failures_of_several_hosts(sshd_harness: SshdHarness) -> None:
    mark = uuid.uuid4().hex
    dmon = sshd_harness.write_file(f"dmon-{mark}.txt", DMON_BLACKWELL.read_text())
    query = sshd_harness.write_file(f"query-{mark}.txt", blackwell_query_answer(QUERY_GPU_ARGV))
    message = sshd_harness.write_file(f"no-driver-{mark}.txt", DRIVER_FAILURE.read_text())
    bins = {
        "healthy": {"nvidia-smi": stand_in(_HEALTHY, mark, dmon=dmon, query=query)},
        "no-driver": {"nvidia-smi": stand_in(_NO_DRIVER, mark, message=message)},
        "no-smi": {},
        "quiet-dmon": {"nvidia-smi": stand_in(_QUIET_DMON, mark, dmon=dmon, query=query)},
    }
    addresses = {
        "healthy": "127.0.0.2",
        "no-driver": "127.0.0.3",
        "no-smi": "127.0.0.4",
        "quiet-dmon": "127.0.0.5",
    }
    hosts = {
        name: (addresses[name], sshd_harness.make_bin_dir(f"bin-{name}-{mark}", scripts))
        for name, scripts in bins.items()
    }
    store = Store()
    async with collecting(sshd_harness, store, hosts) as running:
        healthy = running["healthy"].collector
        await eventually(lambda: healthy.source is GpuSource.DMON)
        # A dmon row (98 %; the query said 99 %) with what only the query knows merged in.
        await eventually(
            lambda: (entry := gpu(store, "healthy", 0)) is not None and entry.latest.sm_pct == 98
        )
        await eventually(
            lambda: (entry := gpu(store, "healthy", 3)) is not None and entry.latest.sm_pct == 100
        )
        await eventually(lambda: running["no-driver"].collector.gpu_status is not None)
        await eventually(lambda: running["no-smi"].collector.gpu_status is not None)
        await eventually(lambda: running["quiet-dmon"].collector.source is GpuSource.QUERY)

        snapshot = store.snapshot(0.0)
        good = snapshot.hosts["healthy"]
        assert good.gpu_status is None
        assert [entry.gpu for entry in good.gpus] == [0, 1, 2, 3]
        first = good.gpus[0].latest
        assert (first.sm_pct, first.power_w, first.fb_used_mib, first.sm_clock_mhz) == (98, 294, 90538, 1897)
        assert (first.fb_total_mib, first.power_limit_w) == (97887, 300)
        assert (first.uuid, first.name) == (BLACKWELL_UUIDS[0], BLACKWELL_NAME)

        no_driver = snapshot.hosts["no-driver"]
        assert no_driver.gpu_status is not None and no_driver.gpu_status.reason == DRIVER_UNREACHABLE
        assert no_driver.gpus == ()
        no_smi = snapshot.hosts["no-smi"]
        assert no_smi.gpu_status is not None and no_smi.gpu_status.reason == NOT_INSTALLED
        assert no_smi.gpus == ()

        quiet = snapshot.hosts["quiet-dmon"]
        assert quiet.gpu_status is None
        polled = quiet.gpus[0].latest
        assert (polled.sm_pct, polled.power_w, polled.fb_total_mib) == (99, 299.35, 97887)

        # The stand-ins run marked (the healthy host's dmon is running; the quiet one was given up).
        assert marked_processes(mark) != []
        # The failures are stored once, however often they are retried.
        reasons = (no_driver.gpu_status, no_smi.gpu_status)
        await asyncio.sleep(1.0)
        later = store.snapshot(0.0)
        assert (later.hosts["no-driver"].gpu_status, later.hosts["no-smi"].gpu_status) == reasons
    # Cancelling the collectors closed their channels, and the wrapper stopped every stand-in.
    _, left = wait_until_gone(mark, CLEANUP_LIMIT_S)
    assert left == []
