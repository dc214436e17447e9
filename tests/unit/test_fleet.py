"""The fleet supervisor: connection settings from the config, status mapping, restarts, bounded stop."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from trainmon_tui.config import Config, parse_config
from trainmon_tui.state.store import HostState, Store
from trainmon_tui.transport.fleet import (
    CollectorSpec,
    Fleet,
    HostPlanContext,
    connect_params,
    default_plan,
    jump_chain,
    session_reason,
    tails_per_run,
)
from trainmon_tui.transport.gpu_collector import GpuCollector
from trainmon_tui.transport.local_runner import LocalRunner
from trainmon_tui.transport.log_collector import LogCollector
from trainmon_tui.transport.nvml import NvmlGpuCollector
from trainmon_tui.transport.proc_collector import ProcessCollector
from trainmon_tui.transport.session import (
    DEFAULT_MAX_CHANNELS,
    ConnectParams,
    DownReason,
    HostSession,
    SessionState,
    SessionStatus,
)
from trainmon_tui.transport.ssh_runner import SshRunner

HOSTS_YAML = """
defaults:
  user: trainer
  known_hosts: /etc/trainmon/known_hosts
  keepalive_interval: 2
  keepalive_count_max: 2
hosts:
  - name: outer
    address: outer.example.org
    port: 2200
    identity_file: /keys/outer
    monitor: false
  - name: bastion
    address: 10.0.0.1
    jump: outer
    user: ops
    monitor: false
  - name: gpu-a
    address: 10.0.0.11
    jump: bastion
    identity_file: /keys/gpu
    connect_timeout: 3
    login_timeout: 4
  - name: gpu-b
    address: 10.0.0.12
    jump: admin@gate.example.org:2222
  - name: gpu-c
    address: "fe80::1"
  - name: here
    address: local
runs:
  - name: llama
    hosts: [gpu-a, gpu-b, here]
    logs: [/runs/llama/rank*.log]
    total_steps: 5000
  - name: probe
    hosts: [gpu-a]
    process: probe\\.py
"""


def config() -> Config:
    return parse_config(HOSTS_YAML, "hosts.yaml")


def host(name: str) -> Any:
    found = config().host_named(name)
    assert found is not None
    return found


def test_connect_params_carry_every_connection_setting() -> None:
    params = connect_params(config(), host("gpu-a"))
    assert params == ConnectParams(
        host="10.0.0.11",
        port=None,
        user="trainer",
        # The host's own key first, then the keys its jump hosts name.
        identity_files=("/keys/gpu", "/keys/outer"),
        known_hosts="/etc/trainmon/known_hosts",
        jump="trainer@outer.example.org:2200,ops@10.0.0.1",
        connect_timeout_s=3.0,
        login_timeout_s=4.0,
        keepalive_interval_s=2.0,
        keepalive_count_max=2,
    )


def test_jump_chain_outermost_first_and_address_jumps_kept_as_written() -> None:
    cfg = config()
    assert jump_chain(cfg, host("gpu-b")) == ("admin@gate.example.org:2222", ())
    assert jump_chain(cfg, host("bastion")) == ("trainer@outer.example.org:2200", ("/keys/outer",))
    assert jump_chain(cfg, host("gpu-c")) == (None, ())
    ipv6 = connect_params(cfg, host("gpu-c"))
    assert (ipv6.host, ipv6.jump) == ("fe80::1", None)


def test_session_reason_names_the_reason_and_a_clean_detail() -> None:
    refused = SessionStatus(SessionState.DOWN, DownReason.CONNECTION_REFUSED, "[Errno 111] refused\x1b[2J")
    assert session_reason(refused) == "connection refused ([Errno 111] refused)"
    assert session_reason(SessionStatus(SessionState.DOWN, DownReason.KEEPALIVE_TIMEOUT, "")) == (
        "keepalive timeout"
    )
    assert session_reason(SessionStatus(SessionState.UP)) is None


class FakeSession(HostSession):
    """A HostSession that never connects: remembers how it was built and lets a test report transitions."""

    made: ClassVar[list[FakeSession]] = []

    def __init__(self, params: ConnectParams, *, on_status: Callable[[SessionStatus], None], **kwargs: Any):
        super().__init__(params, on_status=on_status, **kwargs)
        self.on_status = on_status
        self.kwargs = kwargs
        self.started = False
        self.was_closed = False
        FakeSession.made.append(self)

    def start(self) -> None:
        self.started = True
        self.on_status(SessionStatus(SessionState.CONNECTING))

    async def close(self) -> None:
        self.was_closed = True
        self.on_status(SessionStatus(SessionState.CLOSED))


class Idle:
    """A collector that does nothing until cancelled, and counts its lives."""

    def __init__(self, lives: list[str], name: str, ended: list[str]) -> None:
        self.lives = lives
        self.name = name
        self.ended = ended

    async def run(self) -> None:
        self.lives.append(self.name)
        try:
            await asyncio.Event().wait()
        finally:
            self.ended.append(self.name)


class Flaky:
    """Fails ``failures`` times with the same error, then idles."""

    def __init__(self, attempts: list[int], failures: int) -> None:
        self.attempts = attempts
        self.failures = failures

    async def run(self) -> None:
        self.attempts.append(len(self.attempts))
        if len(self.attempts) <= self.failures:
            raise RuntimeError("parser bug")
        await asyncio.Event().wait()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_sessions_report_into_the_store_and_local_hosts_are_up() -> None:
    FakeSession.made = []
    store = Store()
    contexts: list[HostPlanContext] = []

    def plan(context: HostPlanContext) -> list[CollectorSpec]:
        contexts.append(context)
        return []

    fleet = Fleet(config(), store, plan=plan, session_factory=FakeSession, clock=lambda: 7.0)
    await fleet.start()
    await wait_for(lambda: len(contexts) == 4)
    # Jump-only hosts are not monitored; the local host needs no session.
    assert [session.params.host for session in FakeSession.made] == ["10.0.0.11", "10.0.0.12", "fe80::1"]
    assert all(session.started for session in FakeSession.made)
    assert set(fleet.sessions) == {"gpu-a", "gpu-b", "gpu-c"}
    snapshot = store.snapshot(7.0)
    assert snapshot.hosts["here"].status.state is HostState.UP
    assert snapshot.hosts["gpu-a"].status.state is HostState.CONNECTING
    gpu_a = FakeSession.made[0]
    gpu_a.on_status(SessionStatus(SessionState.DOWN, DownReason.AUTH_FAILED, "Permission denied"))
    status = store.snapshot(7.0).hosts["gpu-a"].status
    assert (status.state, status.reason) == (HostState.DOWN, "authentication failed (Permission denied)")
    gpu_a.on_status(SessionStatus(SessionState.UP))
    assert store.snapshot(7.0).hosts["gpu-a"].status.state is HostState.UP
    by_host = {context.host.name: context for context in contexts}
    assert [run.name for run in by_host["gpu-a"].runs] == ["llama", "probe"]
    assert [run.name for run in by_host["here"].runs] == ["llama"]
    assert isinstance(by_host["here"].runner, LocalRunner)
    assert isinstance(by_host["gpu-a"].runner, SshRunner)
    # One set of claims per run, shared by every host's collector of that run.
    assert by_host["gpu-a"].claims["llama"] is by_host["here"].claims["llama"]
    assert await fleet.stop() is True
    assert all(session.was_closed for session in FakeSession.made)
    # Closing is ours, not news: the last real state stays.
    assert store.snapshot(7.0).hosts["gpu-a"].status.state is HostState.UP


async def test_a_crashing_collector_is_logged_and_restarted_without_touching_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    FakeSession.made = []
    lives: list[str] = []
    ended: list[str] = []
    attempts: list[int] = []

    def plan(context: HostPlanContext) -> list[CollectorSpec]:
        if context.host.name != "gpu-a":
            return []
        return [
            CollectorSpec("steady", lambda: Idle(lives, "steady", ended)),
            CollectorSpec("flaky", lambda: Flaky(attempts, failures=3)),
        ]

    fleet = Fleet(
        config(),
        Store(),
        plan=plan,
        session_factory=FakeSession,
        restart_delay_s=0.01,
        max_restart_delay_s=0.02,
    )
    with caplog.at_level(logging.ERROR, logger="trainmon_tui.transport.fleet"):
        await fleet.start()
        await wait_for(lambda: len(attempts) == 4)
        assert fleet.crashes == {("gpu-a", "flaky"): 3}
        assert lives == ["steady"] and ended == []
        assert await fleet.stop() is True
    assert ended == ["steady"]
    crash_logs = [record for record in caplog.records if "flaky collector failed" in record.getMessage()]
    assert len(crash_logs) == 3
    assert all(record.getMessage().startswith("gpu-a: ") for record in crash_logs)
    # The traceback is logged once; the same failure again is one line.
    assert crash_logs[0].exc_info is not None
    assert [record.exc_info for record in crash_logs[1:]] == [None, None]
    assert "3 in a row" in crash_logs[2].getMessage()


async def test_a_crashed_collector_shows_on_its_host_until_it_runs_for_a_healthy_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeSession.made = []
    attempts: list[int] = []
    monkeypatch.setattr("trainmon_tui.transport.fleet.HEALTHY_RUN_S", 0.2)

    def plan(context: HostPlanContext) -> list[CollectorSpec]:
        if context.host.name != "gpu-a":
            return []
        return [CollectorSpec("flaky", lambda: Flaky(attempts, failures=2))]

    store = Store()
    fleet = Fleet(
        config(),
        store,
        plan=plan,
        session_factory=FakeSession,
        restart_delay_s=0.01,
        max_restart_delay_s=0.02,
    )
    await fleet.start()
    try:
        await wait_for(lambda: len(attempts) == 3)
        problem = store.snapshot(1.0).hosts["gpu-a"].problems["flaky collector"]
        assert problem.message == "failed: RuntimeError: parser bug; restarting in 0 s"
        # The third run does not fail: once it has lasted a healthy while, the problem is gone.
        await wait_for(lambda: "flaky collector" not in store.snapshot(1.0).hosts["gpu-a"].problems)
        assert len(attempts) == 3
    finally:
        assert await fleet.stop() is True


async def test_host_problems_keep_their_start_and_clear_when_fixed() -> None:
    store = Store()
    store.set_host_problem("a", "ps", "ps failed: exit 1", 10.0)
    version = store.version
    store.set_host_problem("a", "ps", "ps failed: exit 1", 11.0)
    assert store.version == version  # the same news again is not news
    store.set_host_problem("a", "ps", "no answer in 15 s", 12.0)
    problem = store.snapshot(13.0).hosts["a"].problems["ps"]
    assert (problem.message, problem.since) == ("no answer in 15 s", 10.0)
    store.set_host_problem("a", "ps", None, 14.0)
    assert dict(store.snapshot(15.0).hosts["a"].problems) == {}


async def test_restart_delay_grows_while_a_collector_keeps_failing() -> None:
    FakeSession.made = []
    attempts: list[int] = []
    times: list[float] = []
    loop = asyncio.get_running_loop()

    class Timed(Flaky):
        async def run(self) -> None:
            times.append(loop.time())
            await super().run()

    def plan(context: HostPlanContext) -> list[CollectorSpec]:
        return [CollectorSpec("timed", lambda: Timed(attempts, failures=3))] if context.host.is_local else []

    fleet = Fleet(
        config(),
        Store(),
        plan=plan,
        session_factory=FakeSession,
        restart_delay_s=0.05,
        max_restart_delay_s=0.1,
    )
    await fleet.start()
    await wait_for(lambda: len(attempts) == 4)
    await fleet.stop()
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.1
    assert gaps[2] < 0.5  # capped at max_restart_delay_s


async def test_stop_is_bounded_even_when_a_collector_is_slow_to_end() -> None:
    FakeSession.made = []
    release = asyncio.Event()
    started = asyncio.Event()

    class Stubborn:
        async def run(self) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                # Cleanup that waits on a host that does not answer.
                await release.wait()

    def plan(context: HostPlanContext) -> list[CollectorSpec]:
        return [CollectorSpec("stubborn", Stubborn)] if context.host.name == "gpu-a" else []

    fleet = Fleet(config(), Store(), plan=plan, session_factory=FakeSession)
    await fleet.start()
    await started.wait()
    loop = asyncio.get_running_loop()
    begun = loop.time()
    assert await fleet.stop(timeout=0.2) is False
    assert loop.time() - begun < 0.5
    release.set()
    await wait_for(lambda: all(session.was_closed for session in FakeSession.made))


async def test_cancellation_is_never_swallowed() -> None:
    FakeSession.made = []
    ended: list[str] = []

    def plan(context: HostPlanContext) -> list[CollectorSpec]:
        return [CollectorSpec("idle", lambda: Idle([], context.host.name, ended))]

    fleet = Fleet(config(), Store(), plan=plan, session_factory=FakeSession)
    await fleet.start()
    await wait_for(lambda: len(FakeSession.made) == 3)
    await asyncio.sleep(0.05)
    assert await fleet.stop(timeout=2.0) is True
    assert sorted(ended) == ["gpu-a", "gpu-b", "gpu-c", "here"]
    assert fleet.crashes == {}


def test_default_plan_builds_the_right_collectors_for_each_host() -> None:
    cfg = config()
    store = Store()
    claims = {run.name: object() for run in cfg.runs}

    def context(name: str, runner: Any) -> HostPlanContext:
        return HostPlanContext(
            host=host(name),
            runner=runner,
            store=store,
            runs=cfg.runs_on(name),
            claims=claims,  # type: ignore[arg-type]
            clock=lambda: 0.0,
        )

    session = HostSession(connect_params(cfg, host("gpu-a")))
    remote = default_plan(context("gpu-a", SshRunner(session, "gpu-a")))
    # "probe" has no logs: it is watched by its processes only.
    assert [spec.name for spec in remote] == ["gpu", "processes", "log llama"]
    built = [spec.make() for spec in remote]
    assert isinstance(built[0], GpuCollector)
    assert isinstance(built[1], ProcessCollector)
    assert isinstance(built[2], LogCollector)
    assert built[2] is not remote[2].make()  # a fresh collector for every restart
    local = default_plan(context("here", LocalRunner("here")))
    assert [spec.name for spec in local] == ["gpu", "processes", "log llama"]
    assert isinstance(local[0].make(), NvmlGpuCollector)


def test_tails_per_run_leave_a_channel_for_short_commands() -> None:
    # dmon and the ps loop hold two of the host's 8 channels; one stays free for compute apps, grep, listings.
    assert [tails_per_run(runs) for runs in range(1, 8)] == [2, 2, 1, 1, 1, 1, 1]
    for runs in range(1, 6):
        assert 2 + runs * tails_per_run(runs) <= DEFAULT_MAX_CHANNELS - 1
    assert tails_per_run(0) == 2 and tails_per_run(3, max_channels=12) == 2


def test_default_plan_shares_the_hosts_channels_among_its_runs() -> None:
    runs = "\n".join(f"  - {{name: trial-{n}, hosts: [box], logs: ['/runs/{n}/*.log']}}" for n in range(3))
    cfg = parse_config(f"hosts:\n  - {{name: box, address: 10.0.0.5}}\nruns:\n{runs}\n", "hosts.yaml")
    box = cfg.host_named("box")
    assert box is not None
    session = HostSession(connect_params(cfg, box))
    plan = default_plan(
        HostPlanContext(
            host=box,
            runner=SshRunner(session, "box"),
            store=Store(),
            runs=cfg.runs_on("box"),
            claims={run.name: object() for run in cfg.runs},  # type: ignore[misc]
            clock=lambda: 0.0,
        )
    )
    logs = [spec.make() for spec in plan if spec.name.startswith("log ")]
    assert len(logs) == 3 and all(isinstance(collector, LogCollector) for collector in logs)
    # Three runs of two tails each would hold every channel with dmon and the ps loop (2 + 6 = 8).
    assert [collector.max_streams for collector in logs if isinstance(collector, LogCollector)] == [1, 1, 1]
