"""The log collector against real OpenSSH servers: a fake training process writes per-rank logs on the host.

The fake hosts are sshd processes on this machine, so "the host's files" are files here, in a directory the
test user the sessions log in as may read. Two fake hosts therefore see the same files, as two nodes on a
shared file system would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration.sshd_harness import FakeHost, SshdHarness, parent_pids, start_fake_trainer
from trainmon_tui.config import RunConfig
from trainmon_tui.state.store import RunSnapshot, Store
from trainmon_tui.transport.log_collector import FileClaims, LogCollector
from trainmon_tui.transport.session import Backoff, HostSession
from trainmon_tui.transport.ssh_runner import SshRunner

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "log_collector"
TQDM_LOG = FIXTURES / "hf_trainer_tqdm_lines_numbered_then_nccl_timeout.txt"
LOSS_DICT_LOG = FIXTURES / "hf_trainer_buffered_loss_dicts_after_bar_train_runtime.txt"
RUN = "llama"
RESCAN_S = 0.3
WAIT_S = 15.0


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.fixture
def log_dir(sshd_harness: SshdHarness) -> Iterator[Path]:
    """A directory of the fake hosts' "file system" that the test user may read (and only read)."""
    path = Path(tempfile.mkdtemp(prefix="logs-", dir=sshd_harness.root))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def trainers() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts fake training processes; every one is killed at the end of the test."""
    started: list[subprocess.Popen[str]] = []

    def start(fixture: Path, paths: Sequence[Path], interval_s: float = 0.02) -> subprocess.Popen[str]:
        process = start_fake_trainer(fixture, paths, interval_s=interval_s)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def wait_done(trainer: subprocess.Popen[str]) -> None:
    """Until the fake trainer wrote its last line (read in a thread: the collector must keep running)."""
    assert trainer.stdout is not None
    assert await asyncio.to_thread(trainer.stdout.readline) == "done\n"


def tails_reading(directory: Path) -> list[int]:
    """Processes whose command line names ``directory``, other than this test's own fake trainers: the
    collector's tails and listings on the fake host."""
    needle = str(directory).encode()
    found: list[int] = []
    for pid, parent in parent_pids().items():
        if pid == os.getpid() or parent == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


async def until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def run_of(store: Store) -> RunSnapshot | None:
    return store.snapshot(time.monotonic()).runs.get(RUN)


def samples(store: Store, name: str, rank: int | None) -> int:
    run = run_of(store)
    metric = None if run is None else run.metric(name, rank)
    return 0 if metric is None else metric.samples


def status_of(store: Store, host: str) -> str | None:
    run = run_of(store)
    status = None if run is None else run.log_status.get(host)
    return None if status is None else status.message


class Collecting:
    """One fake host's session, runner and log collector, running as a task."""

    def __init__(self, session: HostSession, collector: LogCollector) -> None:
        self.session = session
        self.collector = collector
        self.task = asyncio.get_running_loop().create_task(collector.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait({self.task})
        await self.session.close()


@pytest.fixture
async def collecting(sshd_harness: SshdHarness) -> AsyncIterator[Callable[..., Collecting]]:
    started: list[Collecting] = []

    def start(
        host: FakeHost,
        name: str,
        store: Store,
        run: RunConfig,
        *,
        claims: FileClaims | None = None,
        max_streams: int = 2,
    ) -> Collecting:
        session = HostSession(
            sshd_harness.params(host, keepalive_interval_s=1.0, keepalive_count_max=2),
            backoff=Backoff(0.1, 0.5),
        )
        session.start()
        collector = LogCollector(
            SshRunner(session, name),
            store,
            name,
            run,
            claims=claims or FileClaims(),
            rescan_interval_s=RESCAN_S,
            max_streams=max_streams,
            retry_delay_s=0.1,
        )
        started.append(Collecting(session, collector))
        return started[-1]

    yield start
    for entry in started:
        await entry.stop()


def run_config(*patterns: str, tail_lines: int = 100) -> RunConfig:
    return RunConfig(name=RUN, hosts=("node-0",), logs=patterns, tail_lines=tail_lines)


async def test_ranks_new_files_and_a_rewritten_log_reach_the_store(
    fake_host: FakeHost,
    log_dir: Path,
    trainers: Callable[..., subprocess.Popen[str]],
    collecting: Callable[..., Collecting],
) -> None:
    rank0, rank1, rank2 = (log_dir / f"rank{rank}.log" for rank in range(3))
    first = trainers(TQDM_LOG, [rank0, rank1])
    store = Store()
    node = collecting(fake_host, "node-0", store, run_config(str(log_dir / "rank*.log")))
    await wait_done(first)

    # Both ranks: the LlamaFactory log's last bar '23/1752' and its loss dict (loss 0.0, grad_norm sqrt 2).
    await until(lambda: samples(store, "loss", 1) == 1 and samples(store, "grad_norm", 0) == 1)
    await until(lambda: _step(store, 0) == 23 and _step(store, 1) == 23)
    for rank in (0, 1):
        run = run_of(store)
        assert run is not None
        entry = run.rank(rank)
        assert entry is not None and entry.host == "node-0"
        assert entry.progress.total_steps == 1752
        loss = run.metric("loss", rank)
        assert loss is not None and loss.last == 0.0
    assert node.collector.following == (str(rank0), str(rank1))

    # A rank file that appears later is found by the next rescan.
    trainers(LOSS_DICT_LOG, [rank2])
    await until(lambda: samples(store, "loss", 2) == 10)
    run = run_of(store)
    assert run is not None
    loss2 = run.metric("loss", 2)
    assert loss2 is not None and loss2.last == pytest.approx(0.0366)

    # The training restarts and rewrites rank0.log from scratch: tail -F keeps following it.
    rank0.write_text("")
    await asyncio.sleep(0.5)
    restarted = trainers(LOSS_DICT_LOG, [rank0])
    await wait_done(restarted)
    await until(lambda: samples(store, "loss", 0) == 11)
    run = run_of(store)
    assert run is not None
    loss0 = run.metric("loss", 0)
    assert loss0 is not None and loss0.last == pytest.approx(0.0366)
    # tail said "file truncated" on stderr: that is tail doing its job, not a problem of the run.
    assert status_of(store, "node-0") is None

    await node.stop()
    await until(lambda: tails_reading(log_dir) == [], timeout=5.0)


def _step(store: Store, rank: int) -> int | None:
    run = run_of(store)
    entry = None if run is None else run.rank(rank)
    return None if entry is None else entry.progress.step


async def test_more_rank_files_than_streams_share_tails(
    fake_host: FakeHost,
    log_dir: Path,
    trainers: Callable[..., subprocess.Popen[str]],
    collecting: Callable[..., Collecting],
) -> None:
    ranks = [log_dir / f"rank{rank}.log" for rank in range(5)]
    store = Store()
    node = collecting(fake_host, "node-0", store, run_config(str(log_dir / "rank*.log")), max_streams=2)
    await until(lambda: status_of(store, "node-0") is not None)
    early = trainers(LOSS_DICT_LOG, ranks[:2], interval_s=0.1)
    await until(lambda: samples(store, "loss", 0) >= 3 and samples(store, "loss", 1) >= 3)
    assert node.collector.following == tuple(map(str, ranks[:2]))
    # Files that appear while both tails run join them: each such tail restarts, and replays its old
    # files' last lines, which must not count again.
    late = trainers(LOSS_DICT_LOG, ranks[2:], interval_s=0.05)
    await until(lambda: len(node.collector.following) == 5)
    assert node.session.channels_in_use <= 2 + 1  # two tails, and a listing now and then
    await wait_done(early)
    await wait_done(late)
    await until(lambda: all(samples(store, "loss", rank) == 10 for rank in range(5)))
    await asyncio.sleep(3 * RESCAN_S)
    assert [samples(store, "loss", rank) for rank in range(5)] == [10] * 5
    assert status_of(store, "node-0") is None


async def test_missing_log_is_the_run_status_until_it_appears(
    fake_host: FakeHost,
    log_dir: Path,
    trainers: Callable[..., subprocess.Popen[str]],
    collecting: Callable[..., Collecting],
) -> None:
    store = Store()
    pattern = str(log_dir / "rank*.log")
    collecting(fake_host, "node-0", store, run_config(pattern))
    await until(lambda: status_of(store, "node-0") is not None)
    assert status_of(store, "node-0") == f"no such file: {pattern}"

    await wait_done(trainers(LOSS_DICT_LOG, [log_dir / "rank0.log"]))
    await until(lambda: samples(store, "loss", 0) == 10)
    assert status_of(store, "node-0") is None


async def test_unreadable_log_is_the_run_status(
    sshd_harness: SshdHarness, fake_host: FakeHost, log_dir: Path, collecting: Callable[..., Collecting]
) -> None:
    if not sshd_harness.as_root:
        pytest.skip("the sessions log in as this same user, who may read every file the test writes")
    secret = log_dir / "rank0.log"
    shutil.copyfile(LOSS_DICT_LOG, secret)
    secret.chmod(0o600)
    store = Store()
    collecting(fake_host, "node-0", store, run_config(str(secret)))
    await until(lambda: status_of(store, "node-0") is not None)
    assert status_of(store, "node-0") == f"permission denied: {secret}"
    assert samples(store, "loss", 0) == 0

    secret.chmod(0o644)
    await until(lambda: samples(store, "loss", 0) == 10)
    assert status_of(store, "node-0") is None


async def test_patterns_are_data_never_code(
    sshd_harness: SshdHarness,
    fake_host: FakeHost,
    log_dir: Path,
    trainers: Callable[..., subprocess.Popen[str]],
    collecting: Callable[..., Collecting],
) -> None:
    # The test user may write here, so a pattern that got executed would leave its mark.
    writable = Path(tempfile.mkdtemp(prefix="pwn-", dir=sshd_harness.root))
    writable.chmod(0o777)
    marker = writable / "pwned"
    spaced = log_dir / "my run" / "rank0 final.log"
    spaced.parent.mkdir(mode=0o755)
    hostile = [
        f"{log_dir}/$(touch {marker})",
        f"{log_dir}/`touch {marker}`",
        f"{log_dir}/x; touch {marker}",
        f"{log_dir}/x' ; touch {marker} ; echo '",
        f'{log_dir}/x" && touch {marker} && echo "',
        f"{log_dir}/x\ntouch {marker}",
    ]
    try:
        store = Store()
        collecting(fake_host, "node-0", store, run_config(*hostile, f"{log_dir}/my run/rank* final.log"))
        await wait_done(trainers(LOSS_DICT_LOG, [spaced]))
        await until(lambda: samples(store, "loss", 0) == 10)
        status = status_of(store, "node-0")
        assert status is not None
        assert status.count("no such file: ") == len(hostile)
        assert not marker.exists()
        assert os.listdir(writable) == []
    finally:
        shutil.rmtree(writable, ignore_errors=True)


async def test_hosts_sharing_a_file_system_read_each_file_once(
    fake_host: FakeHost,
    second_host: FakeHost,
    log_dir: Path,
    trainers: Callable[..., subprocess.Popen[str]],
    collecting: Callable[..., Collecting],
) -> None:
    rank0 = log_dir / "rank0.log"
    store, claims = Store(), FileClaims()
    run = run_config(str(log_dir / "rank*.log"))
    # A first line over 1 KiB, as a real log's start (config dumps) is: identities agree from the start.
    rank0.write_text("#" * 2048 + "\n")
    first = collecting(fake_host, "node-0", store, run, claims=claims)
    second = collecting(second_host, "node-1", store, run, claims=claims)
    await until(lambda: first.collector.following != () or second.collector.following != ())
    holder, other = (first, second) if first.collector.following else (second, first)
    await wait_done(trainers(LOSS_DICT_LOG, [rank0]))
    await until(lambda: samples(store, "loss", 0) == 10)
    await asyncio.sleep(3 * RESCAN_S)
    assert samples(store, "loss", 0) == 10
    assert other.collector.following == ()

    # The host reading the file goes away: the other host takes it over and counts nothing twice.
    dead_host = fake_host if holder is first else second_host
    dead_host.stop()
    await until(lambda: other.collector.following == (str(rank0),))
    await wait_done(trainers(LOSS_DICT_LOG, [rank0]))
    await until(lambda: samples(store, "loss", 0) >= 20)
    await asyncio.sleep(3 * RESCAN_S)
    assert samples(store, "loss", 0) == 20
    run_now = run_of(store)
    assert run_now is not None
    entry = run_now.rank(0)
    assert entry is not None and entry.host == ("node-1" if other is second else "node-0")
