"""Run every configured host's collectors, keep them running, and stop them all cleanly.

The :class:`Fleet` turns a :class:`~trainmon_tui.config.Config` into running work: per monitored host one
connection (a :class:`~trainmon_tui.transport.session.HostSession` whose transitions become the host's status
in the store; a local host needs none) and one supervisor task. The supervisor runs the host's collectors -
GPU, processes, one log collector per run on the host - each in its own task; a collector that fails with an
unexpected exception is logged under the host's name and started again (a fresh instance) after a delay that
grows while it keeps failing, so one bug never takes the fleet or the other collectors down.

:meth:`Fleet.stop` cancels every supervisor; each cancels its collectors (leaving a stream closes its channel,
which makes the remote wrapper kill the command) and then closes its session. The whole stop is bounded by a
timeout, so a host that stopped answering cannot hold the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Protocol

from trainmon_tui.config import Config, HostConfig, RunConfig
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import HostState, Store
from trainmon_tui.transport.gpu_collector import GpuCollector
from trainmon_tui.transport.local_runner import LocalRunner
from trainmon_tui.transport.log_collector import DEFAULT_MAX_STREAMS, FileClaims, LogCollector
from trainmon_tui.transport.nvml import NvmlGpuCollector
from trainmon_tui.transport.proc_collector import ProcessCollector
from trainmon_tui.transport.runner import CommandRunner
from trainmon_tui.transport.session import (
    DEFAULT_MAX_CHANNELS,
    ConnectParams,
    HostSession,
    SessionState,
    SessionStatus,
    shared_connect_limiter,
)
from trainmon_tui.transport.ssh_runner import SshRunner

_log = logging.getLogger(__name__)

#: First wait before a crashed collector is started again; doubled per crash in a row, up to the maximum.
DEFAULT_RESTART_DELAY_S = 1.0
DEFAULT_MAX_RESTART_DELAY_S = 30.0
#: A collector that ran this long before failing counts as healthy again: its next restart waits the minimum.
HEALTHY_RUN_S = 60.0
#: How long :meth:`Fleet.stop` waits, in all, for collectors to end and sessions to close.
DEFAULT_STOP_TIMEOUT_S = 5.0
#: How long a stopping host's collectors get to close their channels before its connection is closed anyway.
DEFAULT_CLOSE_GRACE_S = 1.0


class Collector(Protocol):
    """Anything the supervisor can run: ``run()`` works until cancelled."""

    async def run(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CollectorSpec:
    """One collector of a host: a name for messages ("gpu", "processes", "log llama") and how to build it.

    ``make`` is called again for every restart, so a crashed collector's half-updated state is not reused.
    """

    name: str
    make: Callable[[], Collector]


@dataclass(frozen=True, slots=True)
class HostPlanContext:
    """What a plan needs to build one host's collectors."""

    host: HostConfig
    runner: CommandRunner
    store: Store
    runs: tuple[RunConfig, ...]
    claims: Mapping[str, FileClaims]
    clock: Callable[[], float]


#: Builds the collectors of one host. The default is :func:`default_plan`; tests pass their own.
CollectorPlan = Callable[[HostPlanContext], Sequence[CollectorSpec]]


# Channels of a host's connection held for as long as collecting goes on: dmon and the process listing loop.
_HELD_CHANNELS = 2
# Left for short commands (compute apps, the rank environment grep, the log file listing, --query-gpu): with
# every channel held by a long-running command they would wait for one to end, which a tail never does.
_SHORT_COMMAND_CHANNELS = 1


def tails_per_run(runs_with_logs: int, max_channels: int = DEFAULT_MAX_CHANNELS) -> int:
    """``tail`` processes each run's log collector may hold on one host that ``runs_with_logs`` runs share.

    Up to :data:`~trainmon_tui.transport.log_collector.DEFAULT_MAX_STREAMS` each, as long as the host's
    channels leave room for short commands; never fewer than one (a run's files then share a ``tail``). Only
    six or more runs with logs on one host take the last channel.
    """
    room = max_channels - _HELD_CHANNELS - _SHORT_COMMAND_CHANNELS
    return max(1, min(DEFAULT_MAX_STREAMS, room // max(runs_with_logs, 1)))


def default_plan(context: HostPlanContext) -> list[CollectorSpec]:
    """GPU samples (NVML on this machine, nvidia-smi over SSH), processes, and one log collector per run."""
    host, runner, store, clock = context.host, context.runner, context.store, context.clock
    name = host.name
    specs: list[CollectorSpec] = []
    if host.is_local:
        specs.append(CollectorSpec("gpu", lambda: NvmlGpuCollector(store, name, clock=clock)))
    else:
        specs.append(CollectorSpec("gpu", lambda: GpuCollector(runner, store, name, clock=clock)))
    runs = context.runs
    specs.append(CollectorSpec("processes", lambda: ProcessCollector(runner, store, name, runs, clock=clock)))
    with_logs = [run for run in runs if run.logs]
    tails = tails_per_run(len(with_logs))
    for run in with_logs:
        specs.append(CollectorSpec(f"log {run.name}", _log_collector_maker(context, run, tails)))
    return specs


def _log_collector_maker(context: HostPlanContext, run: RunConfig, tails: int) -> Callable[[], Collector]:
    # A function of its own so each maker holds its own run (a lambda in the loop would see the last one).
    claims = context.claims[run.name]

    def make() -> LogCollector:
        return LogCollector(
            context.runner,
            context.store,
            context.host.name,
            run,
            clock=context.clock,
            claims=claims,
            max_streams=tails,
        )

    return make


# -------------------------------------------------------------------------------------- connection settings


def _hop(host: HostConfig) -> str:
    """A configured host as one ``[user@]host[:port]`` jump hop (IPv6 addresses in brackets)."""
    user = f"{host.user}@" if host.user else ""
    address = f"[{host.address}]" if ":" in host.address else host.address
    port = f":{host.port}" if host.port is not None else ""
    return f"{user}{address}{port}"


def jump_chain(config: Config, host: HostConfig) -> tuple[str | None, tuple[str, ...]]:
    """The ProxyJump-style chain to reach ``host`` (outermost hop first, or None) and the identity files its
    configured jump hosts name. A jump host that itself jumps puts its own jump in front of it."""
    hops: list[str] = []
    identities: list[str] = []
    seen = {host.name}
    target = config.resolve_jump(host)
    while target is not None:
        if isinstance(target, str):
            hops.append(target)
            break
        if target.name in seen:
            # The config loader rejects cycles; a hand-built Config could still hold one.
            raise ValueError(f"jump hosts of {host.name!r} go round in a circle at {target.name!r}")
        seen.add(target.name)
        hops.append(_hop(target))
        if target.identity_file is not None:
            identities.append(target.identity_file)
        target = config.resolve_jump(target)
    hops.reverse()
    return (",".join(hops) if hops else None), tuple(identities)


def connect_params(config: Config, host: HostConfig) -> ConnectParams:
    """How to reach a configured SSH host: its address, user, key, pinned known_hosts, jumps and timeouts."""
    jump, jump_identities = jump_chain(config, host)
    own = (host.identity_file,) if host.identity_file is not None else ()
    identities = tuple(dict.fromkeys(own + jump_identities))
    return ConnectParams(
        host=host.address,
        port=host.port,
        user=host.user,
        identity_files=identities,
        known_hosts=host.known_hosts,
        jump=jump,
        connect_timeout_s=host.connect_timeout,
        login_timeout_s=host.login_timeout,
        keepalive_interval_s=host.keepalive_interval,
        keepalive_count_max=host.keepalive_count_max,
    )


_HOST_STATE_OF_SESSION = MappingProxyType(
    {
        SessionState.CONNECTING: HostState.CONNECTING,
        SessionState.UP: HostState.UP,
        SessionState.DOWN: HostState.DOWN,
    }
)


def session_reason(status: SessionStatus) -> str | None:
    """The store's reason for a session status: "connection refused (detail)", cleaned; None when up."""
    if status.reason is None:
        return None
    detail = clean_remote_text(status.detail or "").strip()
    return f"{status.reason} ({detail})" if detail and detail != str(status.reason) else str(status.reason)


# ---------------------------------------------------------------------------------------------- supervision


class _CrashRecord:
    """Consecutive failures of one collector, to grow its restart delay and avoid repeating tracebacks."""

    __slots__ = ("count", "last_message")

    def __init__(self) -> None:
        self.count = 0
        self.last_message: str | None = None


class Fleet:
    """Every monitored host of a config, collected into ``store`` until :meth:`stop`.

    ``async with Fleet(config, store):`` starts and stops it. ``plan`` decides which collectors a host gets
    (default :func:`default_plan`); ``restart_delay_s`` / ``max_restart_delay_s`` bound how soon a crashed
    collector comes back; ``close_grace_s`` is how long, when stopping, collectors may take to close their
    channels before the connection is closed under them.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
        plan: CollectorPlan = default_plan,
        restart_delay_s: float = DEFAULT_RESTART_DELAY_S,
        max_restart_delay_s: float = DEFAULT_MAX_RESTART_DELAY_S,
        session_factory: Callable[..., HostSession] = HostSession,
        close_grace_s: float = DEFAULT_CLOSE_GRACE_S,
    ) -> None:
        if restart_delay_s <= 0 or max_restart_delay_s < restart_delay_s:
            raise ValueError("need 0 < restart_delay_s <= max_restart_delay_s")
        self.config = config
        self.store = store
        self._clock = clock
        self._plan = plan
        self._restart_delay_s = restart_delay_s
        self._max_restart_delay_s = max_restart_delay_s
        self._session_factory = session_factory
        self._close_grace_s = close_grace_s
        self._sessions: dict[str, HostSession] = {}
        self._supervisors: dict[str, asyncio.Task[None]] = {}
        # One set of claims per run, shared by that run's log collectors on all hosts.
        self._claims: dict[str, FileClaims] = {}
        self._started = False
        self._stopped = False
        #: Crashes seen so far, per (host, collector name): for tests and a status line.
        self.crashes: dict[tuple[str, str], int] = {}

    @property
    def sessions(self) -> Mapping[str, HostSession]:
        """The SSH session of each remote host, by host name."""
        return MappingProxyType(self._sessions)

    async def start(self) -> None:
        """Open every host's session and start its supervisor; returns at once (connecting goes on)."""
        if self._started:
            raise RuntimeError("a Fleet is started once")
        self._started = True
        self._claims = {run.name: FileClaims() for run in self.config.runs}
        limiter = shared_connect_limiter()
        loop = asyncio.get_running_loop()
        for host in self.config.monitored_hosts:
            runner: CommandRunner
            if host.is_local:
                runner = LocalRunner(host.name)
                self.store.set_host_status(host.name, HostState.UP, self._clock())
            else:
                session = self._session_factory(
                    connect_params(self.config, host),
                    on_status=self._status_listener(host.name),
                    clock=self._clock,
                    connect_limiter=limiter,
                )
                self._sessions[host.name] = session
                runner = SshRunner(session, host.name)
            self._supervisors[host.name] = loop.create_task(
                self._supervise_host(host, runner), name=f"fleet {host.name}"
            )

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Cancel every collector and close every session, waiting at most ``timeout`` seconds.

        Returns True when everything ended in time; False when something was still closing (it is left to
        finish on its own, and logged).
        """
        if self._stopped:
            return True
        self._stopped = True
        supervisors = list(self._supervisors.values())
        for task in supervisors:
            task.cancel()
        if not supervisors:
            return True
        done, pending = await asyncio.wait(supervisors, timeout=timeout)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                _log.error("supervisor %s failed", task.get_name(), exc_info=error)
        if pending:
            _log.warning(
                "stopping took more than %.1f s; still closing: %s",
                timeout,
                ", ".join(sorted(task.get_name() for task in pending)),
            )
            return False
        return True

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _status_listener(self, host: str) -> Callable[[SessionStatus], None]:
        def on_status(status: SessionStatus) -> None:
            state = _HOST_STATE_OF_SESSION.get(status.state)
            if state is None:
                return  # CLOSED: we closed it ourselves; the last real state stays on record.
            self.store.set_host_status(host, state, self._clock(), session_reason(status))

        return on_status

    async def _supervise_host(self, host: HostConfig, runner: CommandRunner) -> None:
        session = self._sessions.get(host.name)
        tasks: list[asyncio.Task[None]] = []
        try:
            if session is not None:
                session.start()
            context = HostPlanContext(
                host=host,
                runner=runner,
                store=self.store,
                runs=self.config.runs_on(host.name),
                claims=MappingProxyType(self._claims),
                clock=self._clock,
            )
            loop = asyncio.get_running_loop()
            for spec in self._plan(context):
                tasks.append(
                    loop.create_task(self._keep_running(host.name, spec), name=f"{host.name} {spec.name}")
                )
            # Collectors are restarted, never finished: this host's work ends only when the fleet stops.
            await loop.create_future()
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                # Collectors close their channels politely (each wrapper sees its stdin end and kills its
                # command) - but a host that stopped answering would make each close wait for nothing.
                await asyncio.wait(tasks, timeout=self._close_grace_s)
            if session is not None:
                # Dropping the connection ends every channel still open, on the host too: the wrappers'
                # stdin ends with it, so they clean up just the same.
                await session.close()
            if tasks:
                await asyncio.wait(tasks)

    async def _keep_running(self, host: str, spec: CollectorSpec) -> None:
        record = _CrashRecord()
        problem_source = f"{spec.name} collector"
        while True:
            started = self._clock()
            failure: Exception | None = None
            try:
                if record.count:
                    await self._run_restarted(host, problem_source, spec)
                else:
                    await spec.make().run()
            except Exception as error:
                failure = error
            ran_s = self._clock() - started
            if ran_s >= HEALTHY_RUN_S:
                record.count = 0
            record.count += 1
            key = (host, spec.name)
            self.crashes[key] = self.crashes.get(key, 0) + 1
            delay = min(self._restart_delay_s * 2 ** min(record.count - 1, 30), self._max_restart_delay_s)
            self._report_crash(host, spec.name, failure, record, delay)
            what = "stopped by itself" if failure is None else f"failed: {type(failure).__name__}: {failure}"
            self.store.set_host_problem(
                host,
                problem_source,
                clean_remote_text(f"{what}; restarting in {delay:.0f} s"),
                self._clock(),
            )
            await asyncio.sleep(delay)

    async def _run_restarted(self, host: str, problem_source: str, spec: CollectorSpec) -> None:
        """Run a collector that crashed before; its problem is cleared once it has run for a healthy while."""
        collector = asyncio.ensure_future(spec.make().run())
        try:
            done, _ = await asyncio.wait({collector}, timeout=HEALTHY_RUN_S)
            if not done:
                self.store.set_host_problem(host, problem_source, None, self._clock())
            await collector
        finally:
            if not collector.done():
                collector.cancel()
                # Wait for it to close its channels, as a collector cancelled directly would.
                await asyncio.wait({collector})

    @staticmethod
    def _report_crash(
        host: str, name: str, failure: Exception | None, record: _CrashRecord, delay: float
    ) -> None:
        if failure is None:
            _log.error("%s: %s collector stopped by itself; starting it again in %.1f s", host, name, delay)
            return
        message = f"{type(failure).__name__}: {failure}"
        if message != record.last_message:
            # The traceback once per distinct failure; a collector failing the same way again is one line.
            record.last_message = message
            _log.error(
                "%s: %s collector failed; starting it again in %.1f s", host, name, delay, exc_info=failure
            )
        else:
            _log.error(
                "%s: %s collector failed again (%d in a row): %s; starting it again in %.1f s",
                host,
                name,
                record.count,
                message,
                delay,
            )
