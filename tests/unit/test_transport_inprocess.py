"""Transport tests against asyncssh's in-process server: line iterator, channel budget, backoff, errors.

The fake host is an asyncssh server on 127.0.0.1 whose "commands" are small coroutines. It receives the
wrapped command line exactly as sshd would and splits it back into argv, so the quoting is checked on
every call. Pure pieces (line splitter, backoff, error classification, jump parsing) are tested directly.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import shlex
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.transport.remote import WRAPPER_NAME, WRAPPER_SCRIPT
from trainmon_tui.transport.session import (
    MAX_SIMULTANEOUS_CONNECTS,
    Backoff,
    ConnectParams,
    DownReason,
    HostDownError,
    HostSession,
    JumpHop,
    SessionClosedError,
    SessionState,
    SessionStatus,
    classify_error,
    host_has_known_key,
    load_known_hosts,
    parse_jump,
    shared_connect_limiter,
)
from trainmon_tui.transport.ssh_runner import FRESH_CONNECTION_S, SshRunner
from trainmon_tui.transport.streams import (
    LineSplitter,
    OutputTooLargeError,
    StreamLostError,
    open_stream,
    run,
    shell_exit_status,
)
from trainmon_tui.transport.ticks import DeliveryTicks, shared_delivery_ticks

SERVER_KEY = asyncssh.generate_private_key("ssh-ed25519")
CLIENT_KEY = asyncssh.generate_private_key("ssh-ed25519")
STRANGER_KEY = asyncssh.generate_private_key("ssh-ed25519")

Handler = Callable[["asyncssh.SSHServerProcess[bytes]", list[str]], Awaitable[int]]


async def _lines(process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
    process.stdout.write("".join(f"{line}\n" for line in argv[1:]).encode())
    return 0


async def _raw(process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
    process.stdout.write(bytes.fromhex(argv[1]))
    return int(argv[2])


async def _fail(process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
    process.stderr.write(argv[2].encode())
    return int(argv[1])


async def _spew(process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
    process.stdout.write(b"x" * int(argv[1]))
    return 0


async def _count(process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
    # Numbered lines, written in blocks as fast as the channel takes them (flow control included).
    total, per_block = int(argv[1]), 10_000
    for start in range(0, total, per_block):
        block = "".join(f"{number:07d}\n" for number in range(start, min(start + per_block, total)))
        process.stdout.write(block.encode())
        await process.stdout.drain()
    return 0


async def _tick(process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
    # A line every argv[2] seconds, argv[1] of them: a host printing as dmon does.
    for number in range(int(argv[1])):
        process.stdout.write(f"{number}\n".encode())
        await asyncio.sleep(float(argv[2]))
    return 0


class FakeHost:
    """An in-process SSH server; counts the channels it has open, like sshd's MaxSessions would."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.commands: list[str] = []
        self.open_now = 0
        self.open_most = 0
        self.released = 0
        self.connections: list[asyncssh.SSHServerConnection] = []
        self.port = 0
        self._listener: asyncssh.SSHAcceptor | None = None
        self.handlers: dict[str, Handler] = {
            "lines": _lines,
            "raw": _raw,
            "fail": _fail,
            "spew": _spew,
            "count": _count,
            "tick": _tick,
            "block": self._block,
        }
        self.client_key_path = tmp_path / "id_client"
        CLIENT_KEY.write_private_key(str(self.client_key_path))
        self.known_hosts_path = tmp_path / "known_hosts"

    async def start(self, port: int = 0) -> None:
        host = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                host.connections.append(conn)

        self._listener = await asyncssh.listen(
            "127.0.0.1",
            port,
            server_factory=Server,
            server_host_keys=[SERVER_KEY],
            authorized_client_keys=asyncssh.import_authorized_keys(CLIENT_KEY.export_public_key().decode()),
            process_factory=self._serve,
            encoding=None,
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        self.known_hosts_path.write_text(
            f"[127.0.0.1]:{self.port} {SERVER_KEY.export_public_key().decode().strip()}\n"
        )

    async def stop(self) -> None:
        """Stop listening and drop every connection, like a host that went away."""
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        for conn in self.connections:
            conn.abort()
        self.connections.clear()

    def params(self, **overrides: object) -> ConnectParams:
        base = ConnectParams(
            host="127.0.0.1",
            port=self.port,
            user="tester",
            identity_files=(str(self.client_key_path),),
            known_hosts=str(self.known_hosts_path),
            ssh_config=(),
            use_agent=False,
            connect_timeout_s=5.0,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    async def _serve(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        self.commands.append(command)
        words = shlex.split(command)
        assert words[:5] == ["exec", "sh", "-c", WRAPPER_SCRIPT, WRAPPER_NAME]
        argv = words[5:]
        self.open_now += 1
        self.open_most = max(self.open_most, self.open_now)
        try:
            status = await self.handlers[argv[0]](process, argv)
            process.exit(status)
        finally:
            self.open_now -= 1

    async def _block(self, process: asyncssh.SSHServerProcess[bytes], argv: list[str]) -> int:
        # Like the lifeline wrapper: runs until stdin ends, which is what closing the channel causes.
        process.stdout.write(b"ready\n")
        await process.stdin.read()
        self.released += 1
        return 0


@pytest.fixture
async def fake_host(tmp_path: Path) -> AsyncIterator[FakeHost]:
    host = FakeHost(tmp_path)
    await host.start()
    yield host
    await host.stop()


@dataclass
class StatusLog:
    seen: list[SessionStatus] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, status: SessionStatus) -> None:
        self.seen.append(status)
        self.changed.set()

    async def wait_for(self, state: SessionState, count: int = 1, timeout: float = 10.0) -> SessionStatus:
        async with asyncio.timeout(timeout):
            while True:
                matching = [status for status in self.seen if status.state is state]
                if len(matching) >= count:
                    return matching[count - 1]
                self.changed.clear()
                await self.changed.wait()

    def transitions(self) -> list[tuple[SessionState, DownReason | None]]:
        return [(status.state, status.reason) for status in self.seen]


# ---------------------------------------------------------------- line splitter (pure)


def test_splitter_joins_lines_across_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"# gpu   pwr\n    0   29") == ["# gpu   pwr"]
    assert splitter.feed(b"4\n    1  292\r\n") == ["    0   294", "    1  292"]
    assert splitter.feed(b"partial") == []
    assert splitter.flush() == ["partial"]
    assert splitter.flush() == []


def test_splitter_replaces_undecodable_bytes() -> None:
    assert LineSplitter().feed(b"caf\xe9\n\xff\xfeok\n") == ["caf\ufffd", "\ufffd\ufffdok"]


def test_splitter_truncates_a_runaway_line_and_skips_its_rest() -> None:
    splitter = LineSplitter(max_line_bytes=8)
    assert splitter.feed(b"0123456789") == ["01234567"]
    assert splitter.feed(b"abcdef") == []
    assert splitter.feed(b"ghi\nnext\n") == ["next"]
    assert splitter.truncated_lines == 1
    assert splitter.feed(b"0123456789abcdef\nlast\n") == ["01234567", "last"]
    assert splitter.truncated_lines == 2


def test_splitter_keeps_the_newest_progress_bar_redraw_of_an_endless_line() -> None:
    splitter = LineSplitter(max_line_bytes=40)
    redraws = b"".join(f"\r 50%|#####     | {step}/1000".encode() for step in range(1, 200))
    assert splitter.feed(redraws) == []
    assert splitter.feed(b"\r100%|##########| 1000/1000\n") == ["\r100%|##########| 1000/1000"]
    assert splitter.truncated_lines == 0


def test_splitter_rejects_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LineSplitter(max_line_bytes=0)


@given(st.binary(), st.lists(st.integers(min_value=0, max_value=200)), st.integers(min_value=1, max_value=64))
def test_splitter_never_raises_and_bounds_every_line(data: bytes, cuts: list[int], cap: int) -> None:
    splitter = LineSplitter(max_line_bytes=cap)
    lines: list[str] = []
    for start, end in _chunks(len(data), cuts):
        lines.extend(splitter.feed(data[start:end]))
    lines.extend(splitter.flush())
    # A replacement character stands for at least one byte, so characters never outnumber bytes.
    assert all(len(line) <= cap for line in lines)
    assert len(lines) <= data.count(b"\n") + 1


@given(st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30)))
def test_splitter_output_does_not_depend_on_chunking(lines: list[str]) -> None:
    data = "".join(f"{line}\n" for line in lines).encode()
    whole = LineSplitter(max_line_bytes=200)
    bytewise = LineSplitter(max_line_bytes=200)
    assert whole.feed(data) == lines
    assert [line for index in range(len(data)) for line in bytewise.feed(data[index : index + 1])] == lines


@given(st.lists(st.binary(max_size=20).map(lambda line: line.replace(b"\n", b"")), max_size=20))
def test_splitter_reads_whole_line_chunks_as_it_reads_them_byte_by_byte(lines: list[bytes]) -> None:
    # Any bytes, \r and broken UTF-8 included: a chunk of whole lines is decoded in one go, which must give
    # what decoding line by line (a byte at a time) gives.
    data = b"".join(line + b"\n" for line in lines)
    whole = LineSplitter(max_line_bytes=1000)
    bytewise = LineSplitter(max_line_bytes=1000)
    expected = [line for index in range(len(data)) for line in bytewise.feed(data[index : index + 1])]
    assert whole.feed(data) == expected
    assert len(expected) == len(lines)


@given(
    st.lists(st.binary(max_size=20).map(lambda line: line.replace(b"\n", b"")), max_size=20),
    st.lists(st.integers(min_value=0, max_value=500)),
)
def test_splitter_reads_chunks_cut_anywhere_as_it_reads_them_byte_by_byte(
    lines: list[bytes], cuts: list[int]
) -> None:
    # Chunks that end mid-line (ps writes 4 KB blocks): the line left pending, the whole lines after it
    # decoded in one go and the unfinished rest must give what reading a byte at a time gives.
    data = b"".join(line + b"\n" for line in lines)
    chunked = LineSplitter(max_line_bytes=1000)
    bytewise = LineSplitter(max_line_bytes=1000)
    expected = [line for index in range(len(data)) for line in bytewise.feed(data[index : index + 1])]
    got = [line for start, end in _chunks(len(data), cuts) for line in chunked.feed(data[start:end])]
    assert got == expected and chunked.flush() == bytewise.flush() == []


def test_splitter_cuts_each_long_line_of_a_chunk_on_its_own() -> None:
    # A chunk ending mid-line whose whole lines are together longer than the cap: each is cut by itself.
    splitter = LineSplitter(max_line_bytes=8)
    assert splitter.feed(b"ab\n0123456789\nshort\r\n0123") == ["ab", "01234567", "short"]
    assert splitter.feed(b"4567890\n") == ["01234567"]
    assert splitter.truncated_lines == 2


def _chunks(length: int, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({0, length, *(cut for cut in cuts if cut < length)})
    return list(itertools.pairwise(points))


# ---------------------------------------------------------------- backoff, classification, parameters (pure)


def test_backoff_doubles_up_to_the_cap_with_half_of_it_random() -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0)
    assert [backoff.delay(attempt, lambda: 0.0) for attempt in range(7)] == [0.5, 1, 2, 4, 8, 15, 15]
    assert [backoff.delay(attempt, lambda: 1.0) for attempt in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000, lambda: 0.5) == 22.5


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0.0, max_value=1.0))
def test_backoff_stays_between_half_the_ceiling_and_the_cap(attempt: int, draw: float) -> None:
    backoff = Backoff(base_s=0.5, cap_s=20.0)
    ceiling = min(20.0, 0.5 * 2.0 ** min(attempt, 60))
    assert ceiling / 2 <= backoff.delay(attempt, lambda: draw) <= min(ceiling, 20.0)


@pytest.mark.parametrize(
    ("error", "known", "reason"),
    [
        (None, False, DownReason.CONNECTION_LOST),
        (asyncssh.HostKeyNotVerifiable("Host key is not trusted"), False, DownReason.HOST_KEY_UNKNOWN),
        (asyncssh.HostKeyNotVerifiable("Host key is not trusted"), True, DownReason.HOST_KEY_MISMATCH),
        (asyncssh.PermissionDenied("Permission denied"), False, DownReason.AUTH_FAILED),
        (asyncssh.ConnectionLost("Server not responding to keepalive"), False, DownReason.KEEPALIVE_TIMEOUT),
        (asyncssh.ConnectionLost("Login timeout expired"), False, DownReason.CONNECT_TIMEOUT),
        (asyncssh.ConnectionLost("Connection lost"), False, DownReason.CONNECTION_LOST),
        (TimeoutError(), False, DownReason.CONNECT_TIMEOUT),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
            False,
            DownReason.CONNECTION_REFUSED,
        ),
        (socket.gaierror(-2, "Name or service not known"), False, DownReason.HOST_UNREACHABLE),
        (OSError(errno.EHOSTUNREACH, "No route to host"), False, DownReason.HOST_UNREACHABLE),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), False, DownReason.HOST_UNREACHABLE),
        (OSError(errno.ETIMEDOUT, "Connection timed out"), False, DownReason.CONNECT_TIMEOUT),
        (ConnectionResetError(errno.ECONNRESET, "reset"), False, DownReason.CONNECTION_LOST),
        (asyncssh.KeyExchangeFailed("No matching key exchange algorithm"), False, DownReason.SSH_ERROR),
        (FileNotFoundError(errno.ENOENT, "No such file", "~/.ssh/id_missing"), False, DownReason.SSH_ERROR),
    ],
)
def test_errors_are_classified_into_short_reasons(
    error: BaseException | None, known: bool, reason: DownReason
) -> None:
    classified, detail = classify_error(error, host_key_known=known)
    assert classified is reason
    assert detail


def test_classification_keeps_the_detail() -> None:
    assert classify_error(socket.gaierror(-2, "Name or service not known")) == (
        DownReason.HOST_UNREACHABLE,
        "name not resolved: [Errno -2] Name or service not known",
    )
    assert classify_error(asyncssh.KeyExchangeFailed("No matching host key"))[1] == (
        "KeyExchangeFailed: No matching host key"
    )


def test_parse_jump_reads_users_ports_chains_and_ipv6() -> None:
    assert parse_jump("bastion") == [JumpHop(None, "bastion", None)]
    assert parse_jump("ops@bastion:2222, gw") == [JumpHop("ops", "bastion", 2222), JumpHop(None, "gw", None)]
    assert parse_jump("me@[fe80::1]:22") == [JumpHop("me", "fe80::1", 22)]
    assert parse_jump("fe80::1") == [JumpHop(None, "fe80::1", None)]


@pytest.mark.parametrize("spec", ["", "a,,b", "host:99999", "host:x", "[::1", "[::1]x", "user@", ":22"])
def test_parse_jump_rejects_nonsense(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_jump(spec)


@given(st.text())
def test_parse_jump_raises_only_value_error(spec: str) -> None:
    try:
        hops = parse_jump(spec)
    except ValueError:
        return
    assert all(hop.host for hop in hops)


def test_connect_params_validate_and_name_the_host() -> None:
    assert ConnectParams(host="gpu1").label == "gpu1"
    assert ConnectParams(host="10.0.0.7", port=2222, user="ml").label == "ml@10.0.0.7:2222"
    # The defaults notice a hung host within 20 s: keepalive interval * (count_max + 1).
    defaults = ConnectParams(host="gpu1")
    assert defaults.keepalive_interval_s * (defaults.keepalive_count_max + 1) <= 20
    assert defaults.max_channels == 8
    # AES-GCM first (one AES-NI call per packet), every other asyncssh default after it.
    assert defaults.ciphers is not None and defaults.ciphers[0] == "aes128-gcm@openssh.com"
    assert "chacha20-poly1305@openssh.com" in defaults.ciphers
    for bad in (
        {"host": ""},
        {"port": 0},
        {"connect_timeout_s": 0},
        {"keepalive_count_max": 0},
        {"max_channels": 0},
        {"ciphers": ()},
    ):
        with pytest.raises(ValueError):
            replace(defaults, **bad)


def test_a_missing_known_hosts_file_trusts_nobody(tmp_path: Path) -> None:
    nothing = load_known_hosts(str(tmp_path / "absent"))
    assert not host_has_known_key(nothing, "gpu1", "10.0.0.7", 22)
    listed = tmp_path / "known_hosts"
    listed.write_text(f"[10.0.0.7]:2222 {SERVER_KEY.export_public_key().decode()}")
    known = load_known_hosts(str(listed))
    assert host_has_known_key(known, "10.0.0.7", "10.0.0.7", 2222)
    assert not host_has_known_key(known, "10.0.0.7", "10.0.0.7", 22)


async def test_the_connect_cap_is_shared_per_event_loop() -> None:
    limiter = shared_connect_limiter()
    assert limiter is shared_connect_limiter()
    held = [limiter.acquire() for _ in range(MAX_SIMULTANEOUS_CONNECTS)]
    await asyncio.gather(*held)
    assert limiter.locked()
    for _ in held:
        limiter.release()


def test_exit_status_reads_a_signal_as_a_shell_does() -> None:
    assert [shell_exit_status(code) for code in (0, 3, -9, -15, None)] == [0, 3, 137, 143, None]


async def test_delivery_ticks_wake_everything_due_together_on_the_grid() -> None:
    loop = asyncio.get_running_loop()
    interval = 0.05
    ticks = DeliveryTicks(interval)
    woken: list[str] = []
    registered_at = loop.time()
    grid = (registered_at // interval + 1) * interval

    def first() -> None:
        assert loop.time() >= grid
        # Anything scheduled now runs after every callback of this tick: they all run in one turn.
        loop.call_soon(woken.append, "next turn")
        woken.append("first")

    ticks.call_at_next_tick(first)
    ticks.call_at_next_tick(lambda: woken.append("second"))
    async with asyncio.timeout(2):
        while len(woken) < 3:
            await asyncio.sleep(0.005)
    assert woken == ["first", "second", "next turn"]
    assert shared_delivery_ticks(interval) is shared_delivery_ticks(interval)
    assert shared_delivery_ticks(interval) is not shared_delivery_ticks(0.1)


# ---------------------------------------------------------------- streams and run over the in-process server


async def test_stream_yields_lines_then_the_exit_status(fake_host: FakeHost) -> None:
    async with (
        HostSession(fake_host.params()) as session,
        open_stream(session, ["lines", "# gpu pwr", "", "    0  294 "]) as stream,
    ):
        lines = [line async for line in stream]
    assert lines == ["# gpu pwr", "", "    0  294 "]
    assert stream.exit_status == 0
    assert session.channels_in_use == 0


async def test_stream_decodes_with_replacement_and_caps_lines(fake_host: FakeHost) -> None:
    payload = b"caf\xe9\n" + b"y" * 50 + b"\nlast without newline"
    async with (
        HostSession(fake_host.params()) as session,
        open_stream(session, ["raw", payload.hex(), "3"], max_line_bytes=16) as stream,
    ):
        lines = [line async for line in stream]
    assert lines == ["caf\ufffd", "y" * 16, "last without new"]
    assert stream.truncated_lines == 2
    assert stream.exit_status == 3


async def test_stream_keeps_the_tail_of_stderr(fake_host: FakeHost) -> None:
    async with (
        HostSession(fake_host.params()) as session,
        open_stream(
            session, ["fail", "127", "sh: 1: nvidia-smi: not found\n"], stderr_tail_bytes=12
        ) as stream,
    ):
        assert [line async for line in stream] == []
    assert stream.exit_status == 127
    assert stream.stderr_tail == ": not found\n"


@pytest.mark.parametrize("delivery_tick_s", [0.0, 0.05])
async def test_a_reader_slower_than_the_host_gets_every_line_in_order(
    fake_host: FakeHost, delivery_tick_s: float
) -> None:
    # 2.4 MB of output: more than a stream buffers before it pauses its channel, so the host is held back
    # by flow control while the reader dawdles, and let go again as it catches up.
    total = 300_000
    async with (
        HostSession(fake_host.params()) as session,
        open_stream(session, ["count", str(total)], delivery_tick_s=delivery_tick_s) as stream,
    ):
        received = 0
        async for line in stream:
            assert line == f"{received:07d}"
            received += 1
            if received % 50_000 == 0:
                await asyncio.sleep(0.05)
    assert received == total
    assert stream.exit_status == 0


async def test_a_stream_must_be_entered_before_iterating(fake_host: FakeHost) -> None:
    async with HostSession(fake_host.params()) as session:
        stream = open_stream(session, ["lines", "x"])
        with pytest.raises(RuntimeError, match="async with"):
            await stream.__anext__()
        with pytest.raises(ValueError, match="NUL"):
            open_stream(session, ["echo", "\0"])


async def test_run_returns_status_and_both_outputs(fake_host: FakeHost) -> None:
    async with HostSession(fake_host.params()) as session:
        assert await run(session, ["lines", "a", "b"], timeout=5) == (0, "a\nb\n", "")
        status, out, err = await run(session, ["fail", "2", "bad flag\n"], timeout=5)
    assert (status, out, err) == (2, "", "bad flag\n")
    assert fake_host.commands[0].endswith(" lines a b")


async def test_a_session_reads_its_socket_on_the_grid_unless_told_not_to(fake_host: FakeHost) -> None:
    async with HostSession(fake_host.params()) as session:
        await session.wait_up(5)
        assert session.reads_on_grid
        # Answers and streams still come through while the socket is polled.
        assert await run(session, ["lines", "a"], timeout=5) == (0, "a\n", "")
        assert await run(session, ["lines", "b"], timeout=5, at_once=False) == (0, "b\n", "")
        async with open_stream(session, ["lines", "x", "y"]) as stream:
            assert [line async for line in stream] == ["x", "y"]
    assert not session.reads_on_grid
    async with HostSession(fake_host.params(read_tick_s=0)) as session:
        await session.wait_up(5)
        assert not session.reads_on_grid
    with pytest.raises(ValueError, match="read_tick_s"):
        fake_host.params(read_tick_s=-1)


async def test_collectors_commands_wait_for_the_grid_once_the_connection_has_settled(
    fake_host: FakeHost,
) -> None:
    now = [1000.0]
    tick = 1.0  # coarse, so that waiting for the grid shows plainly
    async with HostSession(fake_host.params(read_tick_s=tick), clock=lambda: now[0]) as session:
        await session.wait_up(5)
        runner = SshRunner(session, "fake")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await runner.run(["lines", "fresh"], timeout=10) == (0, "fresh\n", "")
        fresh_s = loop.time() - started
        now[0] += FRESH_CONNECTION_S
        # The fresh command's socket goes back to the grid at the next tick.
        await asyncio.sleep(1.2 * tick)
        assert not session_reads_at_once(session)
        started = loop.time()
        assert await runner.run(["lines", "settled"], timeout=10) == (0, "settled\n", "")
        settled_s = loop.time() - started
    # Fresh: answers read as they come. Settled: the answers to opening, starting and ending the command
    # come on at least two ticks.
    assert fresh_s < tick / 2 < tick < settled_s, (fresh_s, settled_s)


def session_reads_at_once(session: HostSession) -> bool:
    transport = getattr(session._conn, "_transport", None)
    return isinstance(transport, asyncio.Transport) and transport.is_reading()


async def test_run_timeout_closes_the_channel(fake_host: FakeHost) -> None:
    async with HostSession(fake_host.params()) as session:
        with pytest.raises(TimeoutError):
            await run(session, ["block"], timeout=0.3)
        assert session.channels_in_use == 0
        for _ in range(100):
            if fake_host.released:
                break
            await asyncio.sleep(0.01)
    assert fake_host.released == 1


async def test_run_refuses_output_beyond_the_limit(fake_host: FakeHost) -> None:
    async with HostSession(fake_host.params()) as session:
        with pytest.raises(OutputTooLargeError, match="stdout exceeded 1000 bytes"):
            await run(session, ["spew", "5000"], timeout=5, max_output_bytes=1000)
        assert (await run(session, ["spew", "1000"], timeout=5, max_output_bytes=1000)).stdout == "x" * 1000


async def test_channel_budget_makes_extra_streams_wait(fake_host: FakeHost) -> None:
    async with HostSession(fake_host.params(max_channels=2)) as session:
        first = open_stream(session, ["block"])
        second = open_stream(session, ["block"])
        await first.open()
        await second.open()
        third_opened = asyncio.Event()

        async def open_third() -> None:
            async with open_stream(session, ["block"]) as third:
                assert await third.__anext__() == "ready"
                third_opened.set()

        waiter = asyncio.create_task(open_third())
        await asyncio.sleep(0.2)
        assert not third_opened.is_set()
        assert session.channels_in_use == 2
        await first.aclose()
        await asyncio.wait_for(third_opened.wait(), 5)
        await waiter
        await second.aclose()
    assert fake_host.open_most == 2
    assert fake_host.released == 3


async def test_cancelled_reader_gives_back_its_channel(fake_host: FakeHost) -> None:
    started = asyncio.Event()

    async def follow(session: HostSession) -> None:
        async with open_stream(session, ["block"]) as stream:
            async for _line in stream:
                started.set()

    async with HostSession(fake_host.params()) as session:
        reader = asyncio.create_task(follow(session))
        await asyncio.wait_for(started.wait(), 5)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert session.channels_in_use == 0
        for _ in range(100):
            if fake_host.released:
                break
            await asyncio.sleep(0.01)
    assert fake_host.released == 1


async def test_dropped_connection_ends_the_stream_with_stream_lost(fake_host: FakeHost) -> None:
    async with HostSession(fake_host.params()) as session, open_stream(session, ["block"]) as stream:
        assert await stream.__anext__() == "ready"
        for conn in fake_host.connections:
            conn.abort()
        with pytest.raises(StreamLostError) as lost:
            await stream.__anext__()
    assert lost.value.reason is DownReason.CONNECTION_LOST


# ---------------------------------------------------------------- session states, reconnects, refusals


async def test_session_reports_transitions_and_reconnects_on_the_backoff_schedule(
    fake_host: FakeHost,
) -> None:
    log = StatusLog()
    delays: list[float] = []

    async def quick_sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0.01)

    session = HostSession(
        fake_host.params(), on_status=log, backoff=Backoff(1.0, 8.0), rng=lambda: 0.0, sleep=quick_sleep
    )
    async with session:
        await log.wait_for(SessionState.UP)
        port = fake_host.port
        await fake_host.stop()
        await log.wait_for(SessionState.DOWN, count=2)
        while len(delays) < 6:
            await asyncio.sleep(0.01)
        await fake_host.start(port)
        await log.wait_for(SessionState.UP, count=2)
        assert (await run(session, ["lines", "back"], timeout=5)).stdout == "back\n"
    assert log.transitions() == [
        (SessionState.CONNECTING, None),
        (SessionState.UP, None),
        (SessionState.DOWN, DownReason.CONNECTION_LOST),
        (SessionState.DOWN, DownReason.CONNECTION_REFUSED),
        (SessionState.UP, None),
        (SessionState.CLOSED, None),
    ]
    # The connection was up for less than the 30 s that reset the schedule: it keeps growing, capped.
    assert delays[:6] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert session.connects == 2


async def test_wait_up_says_why_the_host_is_down(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = StatusLog()
    params = ConnectParams(host="127.0.0.1", port=port, ssh_config=(), use_agent=False)
    async with HostSession(params, on_status=log, backoff=Backoff(0.01, 0.05)) as session:
        await log.wait_for(SessionState.DOWN)
        with pytest.raises(HostDownError) as down:
            await session.wait_up(timeout=0.05)
        with pytest.raises(HostDownError):
            await run(session, ["lines"], timeout=0.05)
    assert down.value.reason is DownReason.CONNECTION_REFUSED
    with pytest.raises(SessionClosedError):
        await session.wait_up()


async def test_closing_wakes_whoever_waits_for_the_connection(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = HostSession(ConnectParams(host="127.0.0.1", port=port, ssh_config=(), use_agent=False))
    session.start()
    waiter = asyncio.create_task(session.wait_up())
    await asyncio.sleep(0.05)
    await session.close()
    with pytest.raises(SessionClosedError):
        await waiter
    assert session.status.state is SessionState.CLOSED


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("unknown host", DownReason.HOST_KEY_UNKNOWN),
        ("changed host key", DownReason.HOST_KEY_MISMATCH),
        ("wrong client key", DownReason.AUTH_FAILED),
    ],
)
async def test_refusals_are_told_apart(
    fake_host: FakeHost, tmp_path: Path, change: str, reason: DownReason
) -> None:
    known_hosts = tmp_path / "known_hosts_variant"
    key = tmp_path / "id_variant"
    CLIENT_KEY.write_private_key(str(key))
    if change == "unknown host":
        known_hosts.write_text(f"[127.0.0.1]:{fake_host.port + 1} {SERVER_KEY.export_public_key().decode()}")
    elif change == "changed host key":
        known_hosts.write_text(f"[127.0.0.1]:{fake_host.port} {STRANGER_KEY.export_public_key().decode()}")
    else:
        known_hosts.write_text(fake_host.known_hosts_path.read_text())
        STRANGER_KEY.write_private_key(str(key))
    log = StatusLog()
    params = fake_host.params(known_hosts=str(known_hosts), identity_files=(str(key),))
    async with HostSession(params, on_status=log, backoff=Backoff(0.01, 0.05)):
        down = await log.wait_for(SessionState.DOWN)
    assert down.reason is reason
    assert fake_host.commands == []


async def test_a_broken_status_listener_does_not_stop_the_session(fake_host: FakeHost) -> None:
    def broken(status: SessionStatus) -> None:
        raise RuntimeError("listener bug")

    async with HostSession(fake_host.params(), on_status=broken) as session:
        assert (await run(session, ["lines", "ok"], timeout=5)).stdout == "ok\n"


async def test_keepalive_is_off_while_a_stream_brings_data_and_back_on_when_it_stops(
    fake_host: FakeHost,
) -> None:
    # asyncssh re-arms its keepalive timer on every packet; while output flows the session turns it off.
    calls: list[tuple[float, int | None]] = []
    async with HostSession(fake_host.params(keepalive_interval_s=0.2, keepalive_count_max=2)) as session:
        conn = await session.wait_up(5.0)
        set_keepalive = conn.set_keepalive

        def recording(interval: float | str | None = None, count_max: int | None = None) -> None:
            assert isinstance(interval, (int, float))
            calls.append((interval, count_max))
            set_keepalive(interval, count_max)

        conn.set_keepalive = recording  # type: ignore[method-assign]
        async with open_stream(session, ["tick", "20", "0.05"]) as stream:
            lines = [line async for line in stream]
        assert len(lines) == 20
        assert session.traffic.packets >= 20
        assert calls and calls[0] == (0, None)  # off while the lines came
        async with asyncio.timeout(5.0):
            while len(calls) < 2:
                await asyncio.sleep(0.05)
        assert calls[:2] == [(0, None), (0.2, 2)]  # on again once a check found nothing new
