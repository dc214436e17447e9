"""One SSH connection per host, kept up: strict host keys, timeouts, keepalive, reconnect with backoff.

A :class:`HostSession` owns a supervisor task that connects, waits for the connection to end, classifies why,
waits a capped exponential backoff with jitter and connects again, forever, until closed. It reports state
changes (connecting / up / down with a short reason) through a callback, on transitions only. Users of the
connection take a channel slot first (:meth:`HostSession.channel`): sshd refuses the 11th session on a
connection by default (``MaxSessions 10``), so each connection gets a budget of 8. Connect attempts across
the whole process share a small cap, because sshd drops simultaneous unauthenticated connections beyond
``MaxStartups``.

Keepalive: asyncssh re-arms its keepalive timer on every packet it receives, a timer cancelled and created
again dozens of times a second on a busy fleet. While our streams bring data (dmon prints every second), the
connection is plainly alive, so a session turns asyncssh's keepalive off and turns it back on as soon as a
check every ``keepalive_interval_s`` finds no new data: a host that hangs is noticed at most one interval
later than with the timer always armed (plus up to one ``read_tick_s``: the checks fall on the read grid).

Reading: once a connection is up, its socket is read on the event loop's shared grid
(:mod:`trainmon_tui.transport.ticks`, every ``read_tick_s``) rather than as each packet arrives: a fleet's
hosts send unsynchronised, and each wake-up of the process costs more than the packet it brings. Whoever
waits for the host's answer (a short command, a channel being opened) holds
:meth:`HostSession.reading_at_once` so that round trips are not stretched to the grid.

Host keys are always checked: against the given known_hosts file or ``~/.ssh/known_hosts``, never disabled,
whatever ``~/.ssh/config`` says (``UserKnownHostsFile none`` would otherwise turn checking off). Everything
else the user's ssh config says (aliases, User, Port, IdentityFile, ProxyJump, IdentityAgent) applies unless
given here explicitly.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import asyncssh

from trainmon_tui.transport.ticks import DEFAULT_DELIVERY_TICK_S, ReadPoll, shared_delivery_ticks, sleep_until

_log = logging.getLogger(__name__)

DEFAULT_SSH_PORT = 22
# sshd's MaxSessions defaults to 10 channels per connection; keep two spare for a user's own tools.
DEFAULT_MAX_CHANNELS = 8
# sshd's MaxStartups defaults to 10:30:100: beyond 10 unauthenticated connections it starts dropping some.
MAX_SIMULTANEOUS_CONNECTS = 8
# How long closing a channel may wait for the host to confirm before we stop waiting.
CHANNEL_CLOSE_WAIT_S = 2.0
#: Ciphers offered, best first. AES-GCM leads because ``cryptography`` does it in one AES-NI call per packet,
#: where asyncssh's chacha20-poly1305 builds three ChaCha20 contexts and a Poly1305 tag per packet: 4.8 us
#: against 23.6 us to decrypt a 1.8 kB packet on the 2-core test box, the largest single cost of a stream
#: (benchmarks/bench_collect.py). The rest are asyncssh's other defaults, so a server that accepted any of
#: those still connects; the server's own list decides what is allowed.
PREFERRED_CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """How to reach one host. ``None`` means "whatever ~/.ssh/config (or OpenSSH's default) says".

    ``host`` is an address or an alias from the ssh config. ``jump`` is ``[user@]host[:port]``, several
    separated by commas, tried in order like OpenSSH's ProxyJump; every jump host's key is checked against
    the same known_hosts. ``ssh_config`` lists client config files to read: ``None`` reads
    ``~/.ssh/config`` when it exists, an empty tuple reads none. The defaults notice a hung host after
    keepalive_interval_s * (keepalive_count_max + 2) = 20 s (one interval more when data was flowing until the
    host hung: see the module docstring). ``ciphers`` are offered in this order (see
    :data:`PREFERRED_CIPHERS`) and replace a ``Ciphers`` line of the ssh config; ``None`` leaves the choice
    to the config, else to asyncssh's defaults. ``read_tick_s`` is the grid the connection's socket is read
    on once up (module docstring); 0 reads each packet as it arrives.
    """

    host: str
    port: int | None = None
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    known_hosts: str | None = None
    jump: str | None = None
    ssh_config: tuple[str, ...] | None = None
    use_agent: bool = True
    connect_timeout_s: float = 10.0
    login_timeout_s: float = 20.0
    keepalive_interval_s: float = 4.0
    keepalive_count_max: int = 3
    max_channels: int = DEFAULT_MAX_CHANNELS
    ciphers: tuple[str, ...] | None = PREFERRED_CIPHERS
    read_tick_s: float = DEFAULT_DELIVERY_TICK_S

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        for name in ("connect_timeout_s", "login_timeout_s", "keepalive_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.keepalive_count_max < 1:
            raise ValueError("keepalive_count_max must be at least 1")
        if self.max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        if self.read_tick_s < 0:
            raise ValueError("read_tick_s must not be negative")
        if self.ciphers is not None and not self.ciphers:
            raise ValueError("ciphers must name at least one cipher (or be None for the defaults)")

    @property
    def label(self) -> str:
        """How to name this host in messages: user@host:port with the parts that were given."""
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{self.host}{port}"


class SessionState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    CLOSED = "closed"


class DownReason(StrEnum):
    """Why a host is not connected, in the words a person would use."""

    CONNECTION_REFUSED = "connection refused"
    CONNECT_TIMEOUT = "connect timeout"
    AUTH_FAILED = "authentication failed"
    HOST_KEY_UNKNOWN = "host key unknown"
    HOST_KEY_MISMATCH = "host key mismatch"
    HOST_UNREACHABLE = "host unreachable"
    CONNECTION_LOST = "connection lost"
    KEEPALIVE_TIMEOUT = "keepalive timeout"
    # Anything else (protocol or key exchange failure, unreadable key file); the detail says what.
    SSH_ERROR = "ssh error"


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """A state and, when down, why. ``detail`` is the underlying error's message, for a tooltip or log."""

    state: SessionState
    reason: DownReason | None = None
    detail: str | None = None


class TransportError(Exception):
    """The host could not be used; ``reason`` says why in a few words, ``detail`` gives the specifics."""

    def __init__(self, reason: DownReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


class HostDownError(TransportError):
    """Waited for the host's connection and it did not come up in time."""


class SessionClosedError(RuntimeError):
    """The session was closed; it will not connect again."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with "equal jitter": half the ceiling fixed, half random.

    The fixed half keeps a refused host from being hammered; the random half spreads hosts that went down
    together (a switch reboot) so they do not all reconnect in the same instant.
    """

    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based); ``rng()`` returns a float in [0, 1)."""
        # The exponent is clamped so a host down for weeks cannot overflow the float.
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt, 60))
        return ceiling / 2.0 + rng() * ceiling / 2.0


# Disconnects that are a disagreement between the two ends rather than a lost connection.
_PROTOCOL_FAULTS = (
    asyncssh.KeyExchangeFailed,
    asyncssh.ProtocolError,
    asyncssh.ProtocolNotSupported,
    asyncssh.MACError,
    asyncssh.CompressionError,
    asyncssh.ServiceNotAvailable,
    asyncssh.IllegalUserName,
)
_UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})


def classify_error(exc: BaseException | None, *, host_key_known: bool = False) -> tuple[DownReason, str]:
    """Turn what asyncssh or the socket layer raised into a short reason and a detail message.

    ``host_key_known`` tells a changed key from an unknown one: asyncssh reports both the same way, so the
    caller looks the host up in known_hosts. ``None`` is a connection closed without an error.
    """
    if exc is None:
        return DownReason.CONNECTION_LOST, "connection closed"
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return (DownReason.HOST_KEY_MISMATCH if host_key_known else DownReason.HOST_KEY_UNKNOWN), detail
    if isinstance(exc, asyncssh.PermissionDenied):
        return DownReason.AUTH_FAILED, detail
    if isinstance(exc, asyncssh.ConnectionLost):
        lowered = detail.lower()
        if "keepalive" in lowered:
            return DownReason.KEEPALIVE_TIMEOUT, detail
        if "login timeout" in lowered:
            return DownReason.CONNECT_TIMEOUT, detail
        return DownReason.CONNECTION_LOST, detail
    if isinstance(exc, TimeoutError):
        return DownReason.CONNECT_TIMEOUT, detail if str(exc) else "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return DownReason.CONNECTION_REFUSED, detail
    if isinstance(exc, socket.gaierror):
        return DownReason.HOST_UNREACHABLE, f"name not resolved: {detail}"
    if isinstance(exc, FileNotFoundError | PermissionError) and exc.filename:
        # A local file the login needs (identity file, known_hosts, ssh config): say which and why.
        return DownReason.SSH_ERROR, f"cannot read {exc.filename}: {exc.strerror}"
    if isinstance(exc, _PROTOCOL_FAULTS):
        return DownReason.SSH_ERROR, f"{type(exc).__name__}: {detail}"
    if isinstance(exc, ConnectionError | asyncssh.DisconnectError):
        return DownReason.CONNECTION_LOST, detail
    if isinstance(exc, OSError):
        if exc.errno in _UNREACHABLE_ERRNOS:
            return DownReason.HOST_UNREACHABLE, detail
        if exc.errno == errno.ETIMEDOUT:
            return DownReason.CONNECT_TIMEOUT, detail
    return DownReason.SSH_ERROR, f"{type(exc).__name__}: {detail}"


def load_known_hosts(path: str | None) -> asyncssh.SSHKnownHosts:
    """The trusted host keys: from ``path``, else ``~/.ssh/known_hosts``; a missing file trusts nothing.

    Returned as a parsed object rather than a path because asyncssh treats an empty value as "use the
    default file" and ``None`` as "accept anything"; an object means exactly these keys.
    """
    file = Path(path).expanduser() if path is not None else Path("~", ".ssh", "known_hosts").expanduser()
    if file.is_file():
        return asyncssh.read_known_hosts(str(file))
    return asyncssh.import_known_hosts("")


def host_has_known_key(known_hosts: asyncssh.SSHKnownHosts, host: str, addr: str, port: int) -> bool:
    """Whether known_hosts holds any key (or CA) for this host: if so, a rejected key is a changed key."""
    # known_hosts writes the default port as a bare name, any other port as [host]:port.
    lookup_port = None if port == DEFAULT_SSH_PORT else port
    host_keys, ca_keys, *_ = asyncssh.match_known_hosts(known_hosts, host, addr, lookup_port)
    return bool(host_keys or ca_keys)


@dataclass(frozen=True, slots=True)
class JumpHop:
    user: str | None
    host: str
    port: int | None


def parse_jump(spec: str) -> list[JumpHop]:
    """``[user@]host[:port]`` hops separated by commas; IPv6 addresses in brackets (``[::1]:22``)."""
    hops: list[JumpHop] = []
    for part in spec.split(","):
        text = part.strip()
        if not text:
            raise ValueError(f"empty jump host in {spec!r}")
        user, at, rest = text.rpartition("@")
        port: int | None = None
        if rest.startswith("["):
            host, bracket, tail = rest[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise ValueError(f"bad jump host {text!r}")
            port_text = tail[1:]
        elif rest.count(":") == 1:
            host, _, port_text = rest.partition(":")
        else:
            host, port_text = rest, ""
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"bad port in jump host {text!r}")
            port = int(port_text)
        if not host:
            raise ValueError(f"bad jump host {text!r}")
        hops.append(JumpHop(user=user if at else None, host=host, port=port))
    return hops


_connect_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def shared_connect_limiter() -> asyncio.Semaphore:
    """The process-wide cap on simultaneous connects, one per event loop (the app runs one loop)."""
    loop = asyncio.get_running_loop()
    limiter = _connect_limiters.get(loop)
    if limiter is None:
        limiter = asyncio.Semaphore(MAX_SIMULTANEOUS_CONNECTS)
        _connect_limiters[loop] = limiter
    return limiter


class _WatchingClient(asyncssh.SSHClient):
    """Remembers what asyncssh only tells the client object: the host whose key it refused, why it closed."""

    def __init__(self) -> None:
        self.refused_key_of: tuple[str, str, int] | None = None
        self.lost_with: Exception | None = None
        self.lost = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        # Only called for a key known_hosts does not trust; refusing it is the point.
        self.refused_key_of = (host, addr, port)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_with = exc


class _ConnectError(Exception):
    def __init__(self, reason: DownReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


StatusCallback = Callable[[SessionStatus], None]
SleepFn = Callable[[float], Awaitable[None]]


class TrafficMeter:
    """Counts the packets of output the streams of one session received: the sign the connection lives."""

    __slots__ = ("packets",)

    def __init__(self) -> None:
        self.packets = 0


class HostSession:
    """One host's connection, reconnected forever until :meth:`close`.

    ``async with HostSession(params) as session:`` starts it; :meth:`channel` hands out the connection with
    a channel slot; ``on_status`` hears every transition. ``rng``, ``sleep`` and ``clock`` are injectable so
    tests can check the retry schedule without waiting.
    """

    def __init__(
        self,
        params: ConnectParams,
        *,
        on_status: StatusCallback | None = None,
        backoff: Backoff | None = None,
        rng: Callable[[], float] = random.random,
        sleep: SleepFn = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        connect_limiter: asyncio.Semaphore | None = None,
        stable_after_s: float = 30.0,
    ) -> None:
        self.params = params
        self._on_status = on_status
        self._backoff = backoff or Backoff()
        self._rng = rng
        self._sleep = sleep
        self._clock = clock
        self._connect_limiter = connect_limiter
        # A connection that stayed up this long resets the backoff; a flapping one keeps backing off.
        self._stable_after_s = stable_after_s
        self._channels = asyncio.Semaphore(params.max_channels)
        self._channels_in_use = 0
        self._up = asyncio.Event()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._read_poll: ReadPoll | None = None
        self._up_since = 0.0
        self._tunnels: list[asyncssh.SSHClientConnection] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._status = SessionStatus(SessionState.CONNECTING)
        self.connects = 0
        #: Bumped by the streams of this session as output arrives (see :class:`TrafficMeter`).
        self.traffic = TrafficMeter()

    @property
    def status(self) -> SessionStatus:
        return self._status

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def channels_in_use(self) -> int:
        """Channel slots held right now (at most ``params.max_channels``)."""
        return self._channels_in_use

    def start(self) -> None:
        """Start the supervisor task (idempotent); the first transition reported is ``connecting``."""
        if self._closed:
            raise SessionClosedError(self.params.label)
        if self._task is None:
            self._report(SessionStatus(SessionState.CONNECTING), force=True)
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"ssh-session {self.params.label}"
            )

    async def close(self) -> None:
        """Stop reconnecting and close the connection; open channels end with it."""
        if self._closed:
            return
        self._closed = True
        self._drop_connection()
        # Wake anybody waiting for the connection so they see the session is closed.
        self._up.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # asyncio.wait rather than awaiting the task: our own cancellation must still propagate.
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                _log.error("supervisor of %s failed", self.params.label, exc_info=task.exception())
        self._report(SessionStatus(SessionState.CLOSED))

    async def __aenter__(self) -> HostSession:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_up(self, timeout: float | None = None) -> asyncssh.SSHClientConnection:
        """The live connection, waiting up to ``timeout`` seconds (forever when None) for it to come up.

        Raises :class:`HostDownError` (with the current down reason) on timeout, and
        :class:`SessionClosedError` when the session is or gets closed.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closed:
                raise SessionClosedError(self.params.label)
            conn = self._conn
            if conn is not None and self._up.is_set():
                return conn
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise self._host_down()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
                # lands as the awaited thing completes (CPython gh-86296).
                async with asyncio.timeout(remaining):
                    await self._up.wait()
            except TimeoutError:
                raise self._host_down() from None

    @asynccontextmanager
    async def channel(self, timeout: float | None = None) -> AsyncIterator[asyncssh.SSHClientConnection]:
        """Hold one of this connection's channel slots; yields the connection to open exactly one channel on.

        ``timeout`` bounds the wait for a free slot and for the connection together.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(timeout):
                await self._channels.acquire()
        except TimeoutError:
            raise HostDownError(
                self._status.reason or DownReason.CONNECT_TIMEOUT,
                f"all {self.params.max_channels} channels to {self.params.label} stayed busy",
            ) from None
        self._channels_in_use += 1
        try:
            remaining = None if timeout is None else max(0.0, timeout - (loop.time() - started))
            yield await self.wait_up(remaining)
        finally:
            self._channels_in_use -= 1
            self._channels.release()

    @contextmanager
    def reading_at_once(self) -> Iterator[None]:
        """Read the connection's packets as they arrive while inside: the caller waits for an answer."""
        poll = self._read_poll
        if poll is None:
            yield
            return
        with poll.at_once():
            yield

    def up_for_s(self) -> float | None:
        """How long the live connection has been up; None while there is none."""
        if self._conn is None or not self._up.is_set():
            return None
        return self._clock() - self._up_since

    @property
    def reads_on_grid(self) -> bool:
        """Whether the live connection's socket is read on the grid (module docstring)."""
        poll = self._read_poll
        return poll is not None and not poll.closed

    def _host_down(self) -> HostDownError:
        status = self._status
        if status.state is SessionState.DOWN and status.reason is not None:
            return HostDownError(status.reason, status.detail or "")
        return HostDownError(DownReason.CONNECT_TIMEOUT, f"{self.params.label} not connected yet")

    def _report(self, status: SessionStatus, *, force: bool = False) -> None:
        if status == self._status and not force:
            return
        self._status = status
        if status.state is SessionState.DOWN:
            _log.warning("%s down: %s (%s)", self.params.label, status.reason, status.detail)
        else:
            _log.info("%s %s", self.params.label, status.state)
        if self._on_status is not None:
            try:
                self._on_status(status)
            except Exception:
                # A broken listener must not take the connection down with it.
                _log.exception("status callback failed for %s", self.params.label)

    def _report_down(self, reason: DownReason, detail: str) -> None:
        # A transition is a change of state or of reason; the same failure retried is not news, and neither
        # is a detail that differs only in, say, a port number.
        current = self._status
        if current.state is SessionState.DOWN and current.reason is reason:
            return
        self._report(SessionStatus(SessionState.DOWN, reason, detail))

    async def _supervise(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                conn, client = await self._connect()
            except _ConnectError as failure:
                self._report_down(failure.reason, failure.detail)
                await self._sleep(self._backoff.delay(attempt, self._rng))
                attempt += 1
                continue
            up_since = self._up_since = self._clock()
            self.connects += 1
            self._conn = conn
            self._read_poll = self._poll_reads(conn)
            self._up.set()
            self._report(SessionStatus(SessionState.UP))
            watcher = asyncio.get_running_loop().create_task(self._keepalive_while_quiet(conn))
            try:
                await conn.wait_closed()
            finally:
                watcher.cancel()
                self._up.clear()
                self._drop_connection()
            if self._closed:
                return
            reason, detail = classify_error(client.lost_with)
            self._report_down(reason, detail)
            if self._clock() - up_since >= self._stable_after_s:
                attempt = 0
            await self._sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    async def _keepalive_while_quiet(self, conn: asyncssh.SSHClientConnection) -> None:
        """asyncssh's keepalive on while no stream brings data, off while data flows (module docstring)."""
        params = self.params
        seen = self.traffic.packets
        probing = True  # connected with the keepalive on
        loop = asyncio.get_running_loop()
        while True:
            await sleep_until(loop.time() + params.keepalive_interval_s)
            packets = self.traffic.packets
            flowing, seen = packets != seen, packets
            if flowing and probing:
                conn.set_keepalive(0)
                probing = False
            elif not flowing and not probing:
                conn.set_keepalive(params.keepalive_interval_s, params.keepalive_count_max)
                probing = True

    def _poll_reads(self, conn: asyncssh.SSHClientConnection) -> ReadPoll | None:
        tick = self.params.read_tick_s
        if not tick:
            return None
        # asyncssh has no public accessor for the transport it reads from. Without one (another asyncssh),
        # the connection is read as packets arrive, as asyncio does by default.
        transport = getattr(conn, "_transport", None)
        if not isinstance(transport, asyncio.Transport):
            return None
        return shared_delivery_ticks(tick).poll_reads(transport)

    def _drop_connection(self) -> None:
        poll, self._read_poll = self._read_poll, None
        if poll is not None:
            poll.close()
        conn, self._conn = self._conn, None
        tunnels, self._tunnels = self._tunnels, []
        if conn is not None:
            conn.close()
        for tunnel in reversed(tunnels):
            tunnel.close()

    async def _connect(self) -> tuple[asyncssh.SSHClientConnection, _WatchingClient]:
        params = self.params
        known_hosts = load_known_hosts(params.known_hosts)
        limiter = self._connect_limiter or shared_connect_limiter()
        tunnels: list[asyncssh.SSHClientConnection] = []
        hop_label = params.label
        client = _WatchingClient()
        try:
            async with limiter:
                for hop in parse_jump(params.jump) if params.jump else []:
                    hop_label = f"jump host {hop.host}"
                    client = _WatchingClient()
                    tunnels.append(
                        await self._open(
                            host=hop.host,
                            port=hop.port,
                            user=hop.user,
                            tunnels=tunnels,
                            client=client,
                            known_hosts=known_hosts,
                        )
                    )
                hop_label = params.label
                client = _WatchingClient()
                conn = await self._open(
                    host=params.host,
                    port=params.port,
                    user=params.user,
                    tunnels=tunnels,
                    client=client,
                    known_hosts=known_hosts,
                )
        except Exception as exc:
            for tunnel in reversed(tunnels):
                tunnel.close()
            known = client.refused_key_of is not None and host_has_known_key(
                known_hosts, *client.refused_key_of
            )
            reason, detail = classify_error(exc, host_key_known=known)
            if hop_label != params.label:
                detail = f"{hop_label}: {detail}"
            raise _ConnectError(reason, detail) from exc
        self._tunnels = tunnels
        return conn, client

    async def _open(
        self,
        *,
        host: str,
        port: int | None,
        user: str | None,
        tunnels: list[asyncssh.SSHClientConnection],
        client: _WatchingClient,
        known_hosts: asyncssh.SSHKnownHosts,
    ) -> asyncssh.SSHClientConnection:
        params = self.params
        config: tuple[()] | list[str] | None
        if params.ssh_config is None:
            config = ()  # asyncssh's "default": ~/.ssh/config when readable
        elif params.ssh_config:
            config = list(params.ssh_config)
        else:
            config = None
        # An explicit jump chain replaces any ProxyJump from the config; otherwise the config decides.
        tunnel: asyncssh.SSHClientConnection | tuple[()] = tunnels[-1] if tunnels else ()
        return await asyncssh.connect(
            host,
            port if port is not None else (),
            tunnel=tunnel,
            config=config,
            username=user if user is not None else (),
            client_factory=lambda: client,
            known_hosts=known_hosts,
            client_keys=list(params.identity_files) if params.identity_files else (),
            agent_path=() if params.use_agent else None,
            connect_timeout=params.connect_timeout_s,
            login_timeout=params.login_timeout_s,
            keepalive_interval=params.keepalive_interval_s,
            keepalive_count_max=params.keepalive_count_max,
            encryption_algs=list(params.ciphers) if params.ciphers is not None else (),
        )
