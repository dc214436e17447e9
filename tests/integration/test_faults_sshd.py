"""The fleet against real OpenSSH servers that fail: each fault shows on its host (or run) with the reason,
the other host goes on untouched, collection resumes by itself once the fault is gone, nothing crashes, and
no remote process outlives the fleet."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.integration.conftest import FIRST_ADDRESS, SECOND_ADDRESS
from tests.integration.sshd_harness import (
    FLEET_TRAINING_LOG,
    FakeGpuTools,
    FakeHost,
    SshdHarness,
    _keygen,
    fleet_hosts_yaml,
    make_fake_gpu_tools,
    restart_host,
    wait_for_no_leftovers,
)
from trainmon_tui.config import Config, parse_config
from trainmon_tui.state.store import HostState, Store, StoreSnapshot
from trainmon_tui.transport.fleet import CollectorSpec, Fleet, HostPlanContext
from trainmon_tui.transport.gpu_collector import GpuCollector
from trainmon_tui.transport.log_collector import LogCollector
from trainmon_tui.transport.proc_collector import ProcessCollector
from trainmon_tui.transport.session import Backoff, HostSession

pytestmark = pytest.mark.integration

OK = "ok"
FAULTY = "gpu-x"
OK_ADDRESS = FIRST_ADDRESS
FAULTY_ADDRESS = SECOND_ADDRESS
FAST_RETRY = Backoff(base_s=0.2, cap_s=1.0)
# The training log's lines up to iteration 90 (loss printed for 20..90) and the rest (100, 110, 120).
LOG_LINES = FLEET_TRAINING_LOG.read_text().splitlines()
FIRST_PART = LOG_LINES[:26]
REST = LOG_LINES[26:]
LOSS_VALUES = 11


def fast_plan(context: HostPlanContext) -> list[CollectorSpec]:
    """The default collectors with intervals short enough for a test to see recovery in seconds."""
    runner, store, name, clock = context.runner, context.store, context.host.name, context.clock
    specs = [
        CollectorSpec(
            "gpu",
            lambda: GpuCollector(
                runner,
                store,
                name,
                clock=clock,
                query_interval_s=0.5,
                failure_retry_s=0.5,
                command_timeout_s=3.0,
                down_retry_s=0.2,
            ),
        ),
        CollectorSpec(
            "processes",
            lambda: ProcessCollector(
                runner, store, name, context.runs, clock=clock, interval_s=0.5, command_timeout_s=3.0
            ),
        ),
    ]
    for run in context.runs:
        specs.append(CollectorSpec(f"log {run.name}", partial(_fast_log_collector, context, run.name)))
    return specs


def _fast_log_collector(context: HostPlanContext, run_name: str) -> LogCollector:
    run = next(run for run in context.runs if run.name == run_name)
    return LogCollector(
        context.runner,
        context.store,
        context.host.name,
        run,
        clock=context.clock,
        claims=context.claims[run_name],
        rescan_interval_s=0.5,
        retry_delay_s=0.2,
    )


class RecordingStore(Store):
    """A Store that also keeps every host status it was told, to check transitions are reported once."""

    def __init__(self) -> None:
        super().__init__()
        self.transitions: dict[str, list[tuple[HostState, str | None]]] = {}

    def set_host_status(self, host: str, state: HostState, now: float, reason: str | None = None) -> None:
        self.transitions.setdefault(host, []).append((state, reason))
        super().set_host_status(host, state, now, reason)


@dataclass
class Running:
    fleet: Fleet
    store: RecordingStore

    def snapshot(self) -> StoreSnapshot:
        return self.store.snapshot(time.monotonic())

    async def wait_for(
        self, condition: Callable[[StoreSnapshot], bool], what: str, timeout: float = 15.0
    ) -> StoreSnapshot:
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.snapshot()
            if condition(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                hosts = {name: (host.status, host.gpu_status) for name, host in snapshot.hosts.items()}
                runs = {name: dict(run.log_status) for name, run in snapshot.runs.items()}
                pytest.fail(f"{what}: not seen within {timeout} s; hosts {hosts}; runs {runs}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Running]:
    store = RecordingStore()
    fleet = Fleet(
        config,
        store,
        plan=fast_plan,
        session_factory=partial(HostSession, backoff=FAST_RETRY),
        restart_delay_s=0.2,
    )
    await fleet.start()
    try:
        yield Running(fleet, store)
    finally:
        assert await fleet.stop(timeout=10.0)


def state(snapshot: StoreSnapshot, host: str) -> HostState | None:
    entry = snapshot.hosts.get(host)
    return None if entry is None else entry.status.state


def gpus_fresh_since(snapshot: StoreSnapshot, host: str, since: float) -> bool:
    """All four GPUs of the replayed capture sent a sample after ``since``."""
    entry = snapshot.hosts.get(host)
    return entry is not None and len(entry.gpus) == 4 and all(gpu.last_t > since for gpu in entry.gpus)


def up_and_fresh(host: str, since: float) -> Callable[[StoreSnapshot], bool]:
    return lambda snapshot: state(snapshot, host) is HostState.UP and gpus_fresh_since(snapshot, host, since)


def assert_untouched(running_fleet: Running) -> None:
    """The healthy host was up all along (one transition, no other) and its GPU samples are current."""
    snapshot = running_fleet.snapshot()
    assert running_fleet.store.transitions[OK] == [(HostState.CONNECTING, None), (HostState.UP, None)]
    assert gpus_fresh_since(snapshot, OK, time.monotonic() - 3.0)
    assert snapshot.hosts[OK].gpu_status is None


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Site:
    """The healthy host and the one a test breaks, each with its own stand-in nvidia-smi."""

    harness: SshdHarness
    ok: FakeHost
    faulty: FakeHost
    ok_tools: FakeGpuTools
    faulty_tools: FakeGpuTools
    log_dir: Path
    started: list[FakeHost]

    @property
    def marks(self) -> list[str]:
        return [self.ok_tools.mark, self.faulty_tools.mark]

    def restart_faulty(self) -> FakeHost:
        """The faulty host's sshd started again: same address, port and host key, as after a reboot."""
        host = restart_host(self.harness, self.faulty)
        self.started.append(host)
        return host

    def config(self, runs_yaml: str = "", **overrides: object) -> Config:
        text = fleet_hosts_yaml(
            self.harness,
            {OK: self.ok, FAULTY: self.faulty},
            runs_yaml,
            overrides={FAULTY: overrides} if overrides else None,
        )
        return parse_config(text, "hosts.yaml")

    def assert_no_leftovers(self) -> None:
        left = wait_for_no_leftovers(self.harness.user, self.marks, [str(self.log_dir)], timeout=10.0)
        assert left == []


@pytest.fixture
def site(sshd_harness: SshdHarness) -> Iterator[Site]:
    ok_tools = make_fake_gpu_tools(sshd_harness, unique("ok"), interval_s=0.25)
    faulty_tools = make_fake_gpu_tools(sshd_harness, unique("faulty"), interval_s=0.25)
    log_dir = sshd_harness.root / unique("logs")
    log_dir.mkdir(mode=0o755)
    ok = sshd_harness.start_host_with_bin(OK_ADDRESS, ok_tools.bin_dir)
    faulty = sshd_harness.start_host_with_bin(FAULTY_ADDRESS, faulty_tools.bin_dir)
    started = [ok, faulty]
    yield Site(sshd_harness, ok, faulty, ok_tools, faulty_tools, log_dir, started)
    for host in started:
        host.stop()


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if anything logged a traceback (a collector that crashed) or a fleet error."""
    caplog.set_level(logging.WARNING)
    yield
    crashed = [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]
    assert crashed == [], [record.getMessage() for record in crashed]


def down_reason(snapshot: StoreSnapshot, host: str) -> str:
    reason = snapshot.hosts[host].status.reason
    assert reason is not None
    return reason


def write_lines(path: Path, lines: list[str], mode: str = "a") -> None:
    with path.open(mode, encoding="utf-8") as output:
        output.writelines(line + "\n" for line in lines)
    path.chmod(0o644)


def run_yaml(name: str, host: str, logs: str) -> str:
    return f"runs:\n  - name: {name}\n    hosts: [{host}]\n    logs: ['{logs}']\n"


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.usefixtures("no_tracebacks")
async def test_connection_refused_then_the_host_comes_back(site: Site) -> None:
    site.faulty.stop()
    async with running(site.config()) as fleet:
        snapshot = await fleet.wait_for(lambda s: state(s, FAULTY) is HostState.DOWN, "refused host down")
        assert down_reason(snapshot, FAULTY).startswith("connection refused")
        await fleet.wait_for(up_and_fresh(OK, 0.0), "healthy host collecting")
        # Retried many times meanwhile, reported once.
        await asyncio.sleep(1.5)
        assert [s for s, _ in fleet.store.transitions[FAULTY]] == [HostState.CONNECTING, HostState.DOWN]
        site.restart_faulty()
        back = time.monotonic()
        await fleet.wait_for(up_and_fresh(FAULTY, back), "refused host back and sending GPU samples")
        assert_untouched(fleet)
    site.assert_no_leftovers()


@pytest.mark.usefixtures("no_tracebacks")
def bind_when_free(listener: socket.socket, address: tuple[str, int], within_s: float = 5.0) -> None:
    """Bind once the killed sshd's last process let go of the port: one forked just before the kill may
    still hold the listening socket for a moment."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            listener.bind(address)
            return
        except OSError as error:
            if error.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def test_connect_timeout_then_the_host_answers(site: Site) -> None:
    port = site.faulty.port
    site.faulty.stop()
    # A listener that never accepts: the kernel completes the TCP handshake, no SSH banner ever comes.
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bind_when_free(silent, (FAULTY_ADDRESS, port))
    silent.listen(64)
    try:
        async with running(site.config(connect_timeout=1, login_timeout=1)) as fleet:
            snapshot = await fleet.wait_for(lambda s: state(s, FAULTY) is HostState.DOWN, "silent host down")
            assert down_reason(snapshot, FAULTY).startswith("connect timeout")
            silent.close()
            site.restart_faulty()
            back = time.monotonic()
            await fleet.wait_for(up_and_fresh(FAULTY, back), "host answering again")
            assert_untouched(fleet)
    finally:
        silent.close()
    site.assert_no_leftovers()


@pytest.mark.usefixtures("no_tracebacks")
async def test_authentication_failure_then_the_key_is_authorized(site: Site) -> None:
    harness = site.harness
    authorized = harness.authorized_keys.read_text()
    try:
        async with running(site.config(identity_file=harness.wrong_key)) as fleet:
            snapshot = await fleet.wait_for(lambda s: state(s, FAULTY) is HostState.DOWN, "auth failure")
            assert down_reason(snapshot, FAULTY).startswith("authentication failed")
            assert fleet.snapshot().hosts[FAULTY].gpus == ()
            harness.authorized_keys.write_text(authorized + Path(f"{harness.wrong_key}.pub").read_text())
            back = time.monotonic()
            await fleet.wait_for(up_and_fresh(FAULTY, back), "host usable once the key is authorized")
            assert_untouched(fleet)
    finally:
        harness.authorized_keys.write_text(authorized)
    site.assert_no_leftovers()


@pytest.mark.usefixtures("no_tracebacks")
async def test_host_key_mismatch_is_refused_until_known_hosts_is_corrected(site: Site) -> None:
    harness = site.harness
    impostor = _keygen(harness.root / unique("impostor"), "impostor").rpartition(" ")[0]
    known_hosts = harness.root / unique("known_hosts")
    known_hosts.write_text(site.ok.known_hosts_line() + site.faulty.known_hosts_line(impostor))
    async with running(site.config(known_hosts=known_hosts)) as fleet:
        snapshot = await fleet.wait_for(lambda s: state(s, FAULTY) is HostState.DOWN, "key mismatch")
        assert down_reason(snapshot, FAULTY).startswith("host key mismatch")
        await asyncio.sleep(1.0)
        assert fleet.snapshot().hosts[FAULTY].gpus == ()
        known_hosts.write_text(site.ok.known_hosts_line() + site.faulty.known_hosts_line())
        back = time.monotonic()
        await fleet.wait_for(up_and_fresh(FAULTY, back), "host trusted once known_hosts is right")
        assert_untouched(fleet)
    site.assert_no_leftovers()


@pytest.mark.usefixtures("no_tracebacks")
async def test_nvidia_smi_missing_or_failing_is_the_hosts_gpu_status(site: Site) -> None:
    # The faulty host has no nvidia-smi at all; a third host has one that cannot reach its driver.
    site.faulty_tools.uninstall()
    broken_tools = make_fake_gpu_tools(site.harness, unique("nodriver"), interval_s=0.25)
    broken_tools.fail_like_a_missing_driver()
    broken = site.harness.start_host_with_bin("127.0.0.4", broken_tools.bin_dir)
    site.started.append(broken)
    hosts = {OK: site.ok, FAULTY: site.faulty, "nodriver": broken}
    config = parse_config(fleet_hosts_yaml(site.harness, hosts), "hosts.yaml")

    def gpu_status(snapshot: StoreSnapshot, host: str) -> str | None:
        entry = snapshot.hosts.get(host)
        return None if entry is None or entry.gpu_status is None else entry.gpu_status.reason

    async with running(config) as fleet:
        snapshot = await fleet.wait_for(
            lambda s: gpu_status(s, FAULTY) is not None and gpu_status(s, "nodriver") is not None,
            "GPU failures reported",
        )
        assert gpu_status(snapshot, FAULTY) == "nvidia-smi not installed"
        assert gpu_status(snapshot, "nodriver") == "driver not loaded"
        # The hosts themselves are fine: up, and their processes are collected (none of them matters to a
        # run here, so the listing stored is empty: its time says it was taken).
        snapshot = await fleet.wait_for(
            lambda s: all(s.hosts[name].processes_t is not None for name in (FAULTY, "nodriver")),
            "processes collected",
        )
        assert state(snapshot, FAULTY) is HostState.UP and state(snapshot, "nodriver") is HostState.UP
        assert snapshot.hosts[FAULTY].gpus == () and snapshot.hosts["nodriver"].gpus == ()
        site.faulty_tools.install()
        broken_tools.recover()
        fixed = time.monotonic()
        snapshot = await fleet.wait_for(
            lambda s: gpus_fresh_since(s, FAULTY, fixed) and gpus_fresh_since(s, "nodriver", fixed),
            "GPU samples once nvidia-smi works",
        )
        assert gpu_status(snapshot, FAULTY) is None and gpu_status(snapshot, "nodriver") is None
        assert_untouched(fleet)
    left = wait_for_no_leftovers(site.harness.user, [*site.marks, broken_tools.mark], [str(site.log_dir)])
    assert left == []


@pytest.mark.usefixtures("no_tracebacks")
async def test_missing_and_unreadable_logs_are_the_runs_status_until_fixed(site: Site) -> None:
    if not site.harness.as_root:
        pytest.skip("an unreadable log needs a host user other than the file's owner (run as root)")
    locked = site.log_dir / "locked.log"
    write_lines(locked, LOG_LINES, "w")
    locked.chmod(0o600)  # root's file: the test user on the host may not read it
    pattern = f"{site.log_dir}/rank*.log"
    runs = (
        run_yaml("missing", FAULTY, pattern)
        + f"  - name: locked\n    hosts: [{FAULTY}]\n    logs: ['{locked}']\n"
    )
    async with running(site.config(runs)) as fleet:
        snapshot = await fleet.wait_for(
            lambda s: (
                {"missing", "locked"} <= set(s.runs)
                and FAULTY in s.runs["missing"].log_status
                and FAULTY in s.runs["locked"].log_status
            ),
            "log problems reported",
        )
        assert snapshot.runs["missing"].log_status[FAULTY].message == f"no such file: {pattern}"
        assert snapshot.runs["locked"].log_status[FAULTY].message == f"permission denied: {locked}"
        assert snapshot.runs["missing"].ranks == () and snapshot.runs["locked"].ranks == ()
        assert state(snapshot, FAULTY) is HostState.UP
        write_lines(site.log_dir / "rank0.log", LOG_LINES)
        locked.chmod(0o644)
        snapshot = await fleet.wait_for(
            lambda s: all(
                not s.runs[name].log_status and [rank.progress.step for rank in s.runs[name].ranks] == [120]
                for name in ("missing", "locked")
            ),
            "both runs read once the logs are there",
        )
        assert snapshot.runs["missing"].ranks[0].rank == 0  # from the file name rank0.log
        assert snapshot.runs["locked"].metric("loss").last == pytest.approx(7.426577)  # type: ignore[union-attr]
        assert_untouched(fleet)
    site.assert_no_leftovers()


@pytest.mark.usefixtures("no_tracebacks")
async def test_host_killed_mid_stream_then_restarted(site: Site) -> None:
    log = site.log_dir / "rank0.log"
    write_lines(log, FIRST_PART)
    async with running(site.config(run_yaml("megatron", FAULTY, str(log)))) as fleet:
        await fleet.wait_for(
            lambda s: (
                gpus_fresh_since(s, FAULTY, 0.0)
                and "megatron" in s.runs
                and [rank.progress.step for rank in s.runs["megatron"].ranks] == [90]
            ),
            "GPU and log streams running",
        )
        site.faulty.stop()  # SIGKILL to sshd and every process of its connections
        snapshot = await fleet.wait_for(lambda s: state(s, FAULTY) is HostState.DOWN, "killed host down")
        assert down_reason(snapshot, FAULTY).startswith("connection lost")
        # The remote commands lost their channel: the wrapper killed them (nothing left once sshd died).
        left = wait_for_no_leftovers(site.harness.user, [site.faulty_tools.mark], [str(log)], timeout=10.0)
        assert left == []
        write_lines(log, REST)  # the run goes on while the host is unreachable
        site.restart_faulty()
        back = time.monotonic()
        snapshot = await fleet.wait_for(
            lambda s: (
                up_and_fresh(FAULTY, back)(s)
                and [rank.progress.step for rank in s.runs["megatron"].ranks] == [120]
            ),
            "host back, GPU and log collection resumed",
        )
        # Every loss line counted once: none lost while down, none counted twice by the restarted tail.
        await asyncio.sleep(1.0)
        assert fleet.snapshot().runs["megatron"].metric("loss", 0).samples == LOSS_VALUES  # type: ignore[union-attr]
        assert_untouched(fleet)
    site.assert_no_leftovers()


@pytest.mark.usefixtures("no_tracebacks")
async def test_hung_host_is_noticed_by_keepalive_and_resumes_when_continued(site: Site) -> None:
    async with running(site.config()) as fleet:
        await fleet.wait_for(up_and_fresh(FAULTY, 0.0), "faulty host streaming")
        site.faulty.signal_sshd(signal.SIGSTOP)
        hung = time.monotonic()
        try:
            snapshot = await fleet.wait_for(lambda s: state(s, FAULTY) is HostState.DOWN, "hung host down")
            # keepalive 1 s x (2 + 1): noticed after about 3 s.
            assert time.monotonic() - hung < 8.0
            assert down_reason(snapshot, FAULTY).startswith("keepalive timeout")
            assert_untouched(fleet)
        finally:
            site.faulty.signal_sshd(signal.SIGCONT)
        resumed = time.monotonic()
        await fleet.wait_for(up_and_fresh(FAULTY, resumed), "host collecting again after SIGCONT")
        assert_untouched(fleet)
    site.assert_no_leftovers()


@pytest.mark.usefixtures("no_tracebacks")
async def test_log_truncated_and_rewritten_is_read_from_the_start(site: Site) -> None:
    log = site.log_dir / "train.log"
    write_lines(log, LOG_LINES[:14], "w")  # iterations 10..50, loss printed for 20..50
    async with running(site.config(run_yaml("megatron", FAULTY, str(log)))) as fleet:
        await fleet.wait_for(
            lambda s: (
                "megatron" in s.runs and [rank.progress.step for rank in s.runs["megatron"].ranks] == [50]
            ),
            "first part read",
        )
        # The run restarts from scratch: same file, truncated, then written again from the top.
        with log.open("w"):
            pass
        await asyncio.sleep(1.5)  # long enough for tail to see the file shrink
        write_lines(log, LOG_LINES)
        snapshot = await fleet.wait_for(
            lambda s: [rank.progress.step for rank in s.runs["megatron"].ranks] == [120],
            "rewritten log read",
        )
        run = snapshot.runs["megatron"]
        # 4 loss values before the truncation and all 11 of the rewritten log: nothing skipped, nothing twice.
        await asyncio.sleep(1.0)
        loss = fleet.snapshot().runs["megatron"].metric("loss")
        assert loss is not None and loss.samples == 4 + LOSS_VALUES
        assert run.log_status == {}
        # The ETA follows the rewritten run: 1000 iterations, the new segment's rate.
        assert run.eta.remaining_steps == 880
        assert_untouched(fleet)
    site.assert_no_leftovers()
