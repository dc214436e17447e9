"""In-process SSH servers on loopback that play the simulated hosts, and the config that points at them.

``async with DemoCluster(hosts=3, gpus_per_host=8, seed=1, speed=1.0) as cluster:`` starts one asyncssh server
per host on 127.0.0.1 (ephemeral ports), each with its own host key generated in memory, and writes a client
key and a known_hosts file pinning those host keys into a private temporary directory (mode 0700, removed on
exit). :attr:`DemoCluster.config` is a :class:`~trainmon_tui.config.Config` naming the hosts, ports, key,
known_hosts and runs, ready for a :class:`~trainmon_tui.transport.fleet.Fleet`: the production client connects
with strict host-key checking, the lifeline wrapper and the real parsers. Nothing is read from or written to
``~/.ssh`` by the servers; pass :meth:`DemoCluster.session_factory` to the Fleet so the client does not read
the user's ssh config either.

The servers run no shell: each exec request is taken out of the wrapper
(:func:`~trainmon_tui.transport.remote.unwrap_command_line`) and answered by
:class:`~trainmon_tui.demo.commands.HostCommands`. A streaming command ends when the channel's stdin ends,
as the wrapper's lifeline does on a real host. The dropping host closes its listener and every connection at
the start of each outage (clients see the connection lost, then refused) and listens again on the same port
when it ends.

Simulated time is ``(clock() - start) * speed``; ``speed`` > 1 makes steps, evaluations and outages come
sooner (tests), while ``dmon`` keeps printing at its own interval in real seconds.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import asyncssh
import yaml

from trainmon_tui.config import Config, parse_config
from trainmon_tui.demo.cluster import DEFAULT_DROP, DropSchedule, Simulation
from trainmon_tui.demo.commands import TERMINATED, HostCommands, Reply, Stream
from trainmon_tui.transport.remote import unwrap_command_line
from trainmon_tui.transport.session import ConnectParams, HostSession

_log = logging.getLogger(__name__)

LOOPBACK: Final = "127.0.0.1"
#: The login name the config gives; the servers accept the demo key for any name.
DEMO_USER: Final = "demo"
#: The longest the outage supervisor sleeps between looks at the schedule (real seconds).
_DROP_POLL_S: Final = 0.5
# How long stopping waits for the servers' command handlers to notice their channels closed.
_STOP_WAIT_S: Final = 2.0


class _HostServer:
    """One simulated host's SSH server: listens, answers commands, and can drop off the network."""

    def __init__(
        self,
        commands: HostCommands,
        host_key: asyncssh.SSHKey,
        authorized: asyncssh.SSHAuthorizedKeys,
        now: Callable[[], float],
    ) -> None:
        self.commands = commands
        self.host = commands.host
        self.port = 0
        self.host_key = host_key
        self._authorized = authorized
        self._now = now
        self._listener: asyncssh.SSHAcceptor | None = None
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.drops = 0

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def listen(self) -> None:
        """Listen on the host's port (a new ephemeral one the first time)."""
        server = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self.conn = conn
                server.connections.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                server.connections.discard(self.conn)

        self._listener = await asyncssh.listen(
            LOOPBACK,
            self.port,
            server_factory=Server,
            server_host_keys=[self.host_key],
            authorized_client_keys=self._authorized,
            process_factory=self._serve,
            encoding=None,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            reuse_address=True,
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def drop(self) -> None:
        """Go off the network: stop listening (connects are refused) and cut every connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            await listener.wait_closed()
        for conn in list(self.connections):
            conn.abort()
        self.drops += 1

    async def stop(self) -> None:
        await self.drop()
        handlers = set(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=_STOP_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _serve(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            status = await self._run(process)
            process.exit(status)
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            pass  # the client went away (or the host dropped) while we answered: nobody to tell
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _run(self, process: asyncssh.SSHServerProcess[bytes]) -> int:
        command = process.command
        if command is None:
            process.stderr.write(b"this demo host runs commands only, no interactive shell\n")
            return 1
        argv = unwrap_command_line(command)
        if argv is None:
            # Not sent through the wrapper (a person's `ssh host cmd`): split it as a shell would, no more.
            try:
                argv = tuple(shlex.split(command))
            except ValueError as error:
                process.stderr.write(f"sh: 1: Syntax error: {error}\n".encode())
                return 2
        answer = self.commands.answer(argv, self._now())
        if isinstance(answer, Reply):
            _write(process, answer)
            return answer.exit_status
        return await self._stream(process, answer)

    async def _stream(self, process: asyncssh.SSHServerProcess[bytes], stream: Stream) -> int:
        first = stream.start(self._now())
        _write(process, first)
        # The lifeline: stdin ends when the client closes the channel or the connection goes.
        lifeline = asyncio.ensure_future(process.stdin.read())
        try:
            while not stream.finished:
                done, _ = await asyncio.wait({lifeline}, timeout=stream.interval_s)
                if done:
                    return TERMINATED
                data = stream.more(self._now())
                if data:
                    process.stdout.write(data)
            return first.exit_status
        finally:
            lifeline.cancel()
            await asyncio.wait({lifeline})
            if not lifeline.cancelled():
                lifeline.exception()  # retrieved, so asyncio does not log it as lost


def _write(process: asyncssh.SSHServerProcess[bytes], reply: Reply) -> None:
    if reply.stdout:
        process.stdout.write(reply.stdout)
    if reply.stderr:
        process.stderr.write(reply.stderr)


class DemoCluster:
    """The simulated cluster, served over SSH on loopback; see the module docstring.

    ``drop`` is the outage schedule of the last host (None: it never drops). ``clock`` (monotonic seconds)
    and ``wall_clock`` (epoch seconds, for timestamps in logs and dmon) can be replaced in tests.
    """

    def __init__(
        self,
        hosts: int = 3,
        gpus_per_host: int = 8,
        *,
        seed: int = 1,
        speed: float = 1.0,
        drop: DropSchedule | None = DEFAULT_DROP,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.simulation = Simulation(hosts, gpus_per_host, seed=seed, drop=drop)
        self.speed = speed
        self._clock = clock
        self._wall_clock = wall_clock
        self._started_at: float | None = None
        self._servers: list[_HostServer] = []
        self._directory: Path | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._config: Config | None = None
        self._config_text: str | None = None
        #: Real seconds from :meth:`start` being called to the servers listening and the config written.
        self.startup_s: float | None = None

    # ---------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._started_at is not None:
            raise RuntimeError("a DemoCluster is started once")
        began = self._clock()
        self._started_at = began
        wall_epoch = self._wall_clock()
        # mkdtemp creates the directory with mode 0700: the key in it is ours alone.
        self._directory = Path(tempfile.mkdtemp(prefix="trainmon-demo-"))
        try:
            client_key = asyncssh.generate_private_key("ssh-ed25519", comment="trainmon-demo")
            identity = self._directory / "id_ed25519"
            identity.write_bytes(client_key.export_private_key())
            identity.chmod(0o600)
            authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
            for host in self.simulation.hosts:
                server = _HostServer(
                    HostCommands(self.simulation, host, wall_epoch),
                    asyncssh.generate_private_key("ssh-ed25519"),
                    authorized,
                    self.now,
                )
                await server.listen()
                self._servers.append(server)
            known_hosts = self._directory / "known_hosts"
            known_hosts.write_text(
                "".join(
                    f"[{LOOPBACK}]:{server.port} {server.host_key.export_public_key().decode().strip()}\n"
                    for server in self._servers
                )
            )
            self._config_text = self._render_config(identity, known_hosts)
            self._config = parse_config(self._config_text, "<demo cluster>")
            if self.simulation.drop is not None and self.simulation.dropping_host is not None:
                self._supervisor = asyncio.get_running_loop().create_task(
                    self._play_outages(), name="demo outages"
                )
        except BaseException:
            await self.stop()
            raise
        self.startup_s = self._clock() - began

    async def stop(self) -> None:
        """Stop every server and remove the key directory; idempotent."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait({supervisor})
        servers, self._servers = self._servers, []
        for server in servers:
            await server.stop()
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    async def __aenter__(self) -> DemoCluster:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------------------- reading

    @property
    def config(self) -> Config:
        """The hosts, runs, key and known_hosts of the running cluster, for a Fleet."""
        if self._config is None:
            raise RuntimeError("the DemoCluster is not started")
        return self._config

    @property
    def config_text(self) -> str:
        """:attr:`config` as hosts.yaml text (loadable by :func:`trainmon_tui.config.load_config`)."""
        if self._config_text is None:
            raise RuntimeError("the DemoCluster is not started")
        return self._config_text

    @property
    def directory(self) -> Path | None:
        """The private directory holding the client key and known_hosts while the cluster runs."""
        return self._directory

    def now(self) -> float:
        """Simulated seconds since the start."""
        if self._started_at is None:
            return 0.0
        return (self._clock() - self._started_at) * self.speed

    def port_of(self, host: str) -> int:
        return next(server.port for server in self._servers if server.host.name == host)

    def drops_of(self, host: str) -> int:
        """How many outages the host has had so far."""
        return next(server.drops for server in self._servers if server.host.name == host)

    @staticmethod
    def session_factory(params: ConnectParams, **kwargs: Any) -> HostSession:
        """A :class:`HostSession` that reads no user ssh config and asks no agent: for ``Fleet(...,
        session_factory=DemoCluster.session_factory)``, so settings in ~/.ssh/config for 127.0.0.1 (a
        ProxyJump, another user) cannot get between the dashboard and the demo hosts."""
        return HostSession(replace(params, ssh_config=(), use_agent=False), **kwargs)

    # ------------------------------------------------------------------------------------------ internals

    def _render_config(self, identity: Path, known_hosts: Path) -> str:
        simulation = self.simulation
        document: dict[str, object] = {
            "defaults": {
                "user": DEMO_USER,
                "identity_file": str(identity),
                "known_hosts": str(known_hosts),
            },
            "hosts": [
                {"name": server.host.name, "address": LOOPBACK, "port": server.port}
                for server in self._servers
            ],
            "runs": [
                {
                    "name": run.name,
                    "hosts": [simulation.hosts[index].name for index in run.host_indexes],
                    "logs": [run.log_glob],
                    "process": run.process_pattern,
                }
                for run in simulation.runs
            ],
        }
        header = (
            f"# trainmon-tui demo cluster: {len(simulation.hosts)} hosts x {simulation.gpus_per_host} GPUs, "
            f"seed {simulation.seed}, speed {self.speed:g}.\n"
            "# The key and known_hosts below are removed when the demo server stops.\n"
        )
        return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)

    async def _play_outages(self) -> None:
        schedule = self.simulation.drop
        server = next((server for server in self._servers if server.host.drops), None)
        if schedule is None or server is None:
            return
        while True:
            now = self.now()
            down = schedule.is_down(now)
            if down and server.listening:
                _log.info("demo: %s drops off the network", server.host.name)
                await server.drop()
            elif not down and not server.listening:
                try:
                    await server.listen()
                    _log.info("demo: %s is back", server.host.name)
                except OSError as error:
                    # The port was taken meanwhile: try again shortly (the host just stays down longer).
                    _log.warning("demo: %s cannot listen again yet: %s", server.host.name, error)
            wait_s = (schedule.next_change(now) - now) / self.speed
            await asyncio.sleep(min(max(wait_s, 0.01), _DROP_POLL_S))
