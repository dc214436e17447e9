"""Remote commands over a host's session: long-running ones as async line iterators, short ones as results.

Every command runs under the lifeline wrapper of :mod:`trainmon_tui.transport.remote` and holds one of the
session's channel slots while it runs. The channel is closed on every way out - end of output, an error, a
``break`` out of the loop, cancellation - and closing it is what makes the wrapper kill the remote process
group. Output is read as bytes and decoded per line with ``errors="replace"``: a log with a stray Latin-1
byte must not stop the stream. Lines are capped in length so one runaway line cannot eat memory.

Output is taken straight from asyncssh's channel callbacks (an ``SSHClientSession``) rather than through
its process streams: each packet is split into lines where it arrives, and no reader task per stream or
per stderr exists. At a fleet's rate (two streams per host, a packet a second each) the stream machinery
cost more than the lines' parsing. A stream whose reader falls behind pauses its channel, so SSH flow
control holds the rest on the host.

Readers are woken for new lines on a shared grid (:data:`DEFAULT_DELIVERY_TICK_S`), all together, rather
than once per packet: hosts send unsynchronised, and a reader woken alone runs its parser and the store
with cold caches after the idle gap - measured at three times the cost per row of the same work done back
to back (benchmarks/bench_collect.py). A line waits at most one tick; the end of a stream is not delayed.
The session reads the connection's socket on the same grid (:mod:`trainmon_tui.transport.ticks`); a short
command and a stream being opened have it read at once while they wait for the host's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import NamedTuple, TypeVar

import asyncssh
from asyncssh.constants import EXTENDED_DATA_STDERR

from trainmon_tui.transport.remote import remote_command_line
from trainmon_tui.transport.session import (
    CHANNEL_CLOSE_WAIT_S,
    DownReason,
    HostSession,
    TrafficMeter,
    TransportError,
    classify_error,
)
from trainmon_tui.transport.ticks import DEFAULT_DELIVERY_TICK_S, DeliveryTicks, shared_delivery_ticks

DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_STDERR_TAIL_BYTES = 16 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
# A stream pauses its channel once this much output arrived since its reader last caught up.
_PAUSE_AFTER_BYTES = 1024 * 1024
# sshd counts a closed session against MaxSessions until the next turn of its main loop, so a channel opened
# the moment another one closed can be refused although the budget keeps below the limit: such a refusal
# is tried again after these pauses (0.1 s in all) before it counts.
_REFUSAL_RETRY_S = (0.01, 0.03, 0.06)


class StreamLostError(TransportError):
    """The channel ended without an exit status: the connection dropped under the command."""


class ChannelRefusedError(Exception):
    """The host refused to open a channel (for example sshd's MaxSessions, or a ForceCommand policy)."""


class OutputTooLargeError(Exception):
    """A short command printed more than the caller allowed; it was stopped."""


def _last_redraw_start(data: bytes | bytearray) -> int:
    """Index of the carriage return that starts the newest redraw on this line, or 0 when there is none.

    A carriage return at the very end does not count: tqdm-style writers may end a redraw with it, and the
    text before it is the newest one.
    """
    return max(data.rfind(b"\r", 0, len(data) - 1), 0)


class LineSplitter:
    """Bytes in, whole decoded lines out; pure and incremental.

    Lines end at ``\\n`` (a ``\\r`` right before it is dropped). A line longer than ``max_line_bytes`` first
    loses everything before its last carriage return - progress bars redraw a line with ``\\r`` thousands of
    times and a terminal would show only the newest - and if it is still too long, its first
    ``max_line_bytes`` are kept and the rest, up to the next newline, is skipped. ``truncated_lines`` counts
    lines cut that way.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = max_line_bytes
        self.truncated_lines = 0
        self._pending = bytearray()
        # True while skipping the rest of a line that was already emitted truncated.
        self._skipping = False

    def feed(self, data: bytes) -> list[str]:
        if (
            data.endswith(b"\n")
            and not self._pending
            and not self._skipping
            and len(data) <= self.max_line_bytes
        ):
            # The common chunk - whole lines, none of them too long - decoded in one go.
            return self._whole_lines(data)
        lines: list[str] = []
        first = data.find(b"\n")
        if first >= 0:
            # The line the last chunk left unfinished ends here.
            if self._skipping:
                self._skipping = False
            else:
                self._pending += data[:first]
                if self._pending.endswith(b"\r"):
                    del self._pending[-1]
                lines.append(self._finish(self._pending))
                self._pending = bytearray()
            last = data.rfind(b"\n")
            if last > first:
                # The whole lines after it. A block no longer than the cap holds no line over it, so it is
                # decoded in one go: a command that writes in 4 KB blocks (ps) cuts lines at every block.
                middle = data[first + 1 : last + 1]
                if len(middle) <= self.max_line_bytes:
                    lines += self._whole_lines(middle)
                else:
                    lines += self._line_by_line(middle)
            data = data[last + 1 :]
        if not self._skipping:
            self._pending += data
            if len(self._pending) > self.max_line_bytes:
                del self._pending[: _last_redraw_start(self._pending)]
                if len(self._pending) > self.max_line_bytes:
                    lines.append(self._finish(self._pending))
                    self._pending = bytearray()
                    self._skipping = True
        return lines

    @staticmethod
    def _whole_lines(data: bytes) -> list[str]:
        """Lines of ``data``, which ends with a newline and holds no line over the cap: a newline is never
        part of a UTF-8 sequence, so decoding it whole gives what decoding each line would."""
        lines = data.decode("utf-8", errors="replace").split("\n")
        del lines[-1]
        if b"\r" in data:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        return lines

    def _line_by_line(self, data: bytes) -> list[str]:
        """Lines of ``data`` (whole lines, nothing pending before them), each cut to the cap on its own."""
        lines: list[str] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            line = data[start:end]
            if line.endswith(b"\r"):
                line = line[:-1]
            lines.append(self._finish(line))
            start = end + 1
        return lines

    def flush(self) -> list[str]:
        """At end of output: the last line if it had no newline."""
        pending, self._pending = self._pending, bytearray()
        skipping, self._skipping = self._skipping, False
        if skipping or not pending:
            return []
        return [self._finish(pending)]

    def _finish(self, line: bytes | bytearray) -> str:
        if len(line) > self.max_line_bytes:
            line = line[_last_redraw_start(line) :]
        if len(line) > self.max_line_bytes:
            line = line[: self.max_line_bytes]
            self.truncated_lines += 1
        return bytes(line).decode("utf-8", errors="replace")


def shell_exit_status(returncode: int | None) -> int | None:
    """A channel's return code as a shell shows it: death by signal N (-N) reads 128 + N; None stays."""
    if returncode is None or returncode >= 0:
        return returncode
    return 128 + -returncode


class _Output(asyncssh.SSHClientSession[bytes]):
    """Base for what receives a channel's output: remembers the channel, how it ended, wakes a waiter."""

    def __init__(self) -> None:
        self.channel: asyncssh.SSHClientChannel[bytes] | None = None
        self.closed = False
        self.lost_with: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.channel = chan

    def eof_received(self) -> bool:
        # Keep our side open: the exit status and the host's close are still to come, and closing stdin
        # early would trip the wrapper's lifeline.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost_with = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def changed(self) -> None:
        """Return after the next delivery of output, end of output, or close."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def returncode(self) -> int | None:
        return None if self.channel is None else shell_exit_status(self.channel.get_returncode())


class _LineOutput(_Output):
    """A long-running command's stdout split into lines as packets arrive, and the tail of its stderr."""

    def __init__(
        self,
        splitter: LineSplitter,
        stderr_tail_bytes: int,
        ticks: DeliveryTicks | None,
        traffic: TrafficMeter | None = None,
    ) -> None:
        super().__init__()
        self._traffic = traffic
        self.lines: deque[str] = deque()
        self.stderr = bytearray()
        self.eof = False
        self._splitter = splitter
        self._stderr_tail_bytes = stderr_tail_bytes
        self._ticks = ticks
        self._wake_due = False
        # Bytes of stdout received since the reader last found no line waiting.
        self._unread = 0
        self._paused = False

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._traffic is not None:
            self._traffic.packets += 1
        if datatype == EXTENDED_DATA_STDERR:
            self.stderr += data
            del self.stderr[: max(0, len(self.stderr) - self._stderr_tail_bytes)]
            return
        lines = self._splitter.feed(data)
        if lines:
            self.lines.extend(lines)
            if self._ticks is None:
                self._wake()
            elif self._waiter is not None and not self._wake_due:
                self._wake_due = True
                self._ticks.call_at_next_tick(self._tick)
        self._unread += len(data)
        if self._unread > _PAUSE_AFTER_BYTES and not self._paused and self.channel is not None:
            self._paused = True
            self.channel.pause_reading()

    def _tick(self) -> None:
        self._wake_due = False
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.lines.extend(self._splitter.flush())
        self._wake()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.eof and exc is None:
            # Closed without an end of output (an odd server): what was left of a last line still counts.
            self.lines.extend(self._splitter.flush())
        super().connection_lost(exc)

    def caught_up(self) -> None:
        """The reader took every line: let the host send more."""
        self._unread = 0
        if self._paused and self.channel is not None:
            self._paused = False
            self.channel.resume_reading()


class _CollectedOutput(_Output):
    """A short command's whole stdout and stderr, each refused beyond ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.too_large: str | None = None
        self._limit = limit

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        name, buffer = (
            ("stderr", self.stderr) if datatype == EXTENDED_DATA_STDERR else ("stdout", self.stdout)
        )
        buffer += data
        if len(buffer) > self._limit and self.too_large is None and self.channel is not None:
            self.too_large = f"{name} exceeded {self._limit} bytes"
            self.channel.close()


async def _close_channel(channel: asyncssh.SSHClientChannel[bytes]) -> None:
    channel.close()
    # When the host stopped answering, keepalive will close the whole connection and the channel with it.
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation (CPython gh-86296).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CHANNEL_CLOSE_WAIT_S):
            await channel.wait_closed()


_OutputT = TypeVar("_OutputT", bound=_Output)


def _same(output: _OutputT) -> _OutputT:
    return output


async def _open_channel(
    conn: asyncssh.SSHClientConnection, argv: Sequence[str], make_output: Callable[[], _OutputT]
) -> tuple[asyncssh.SSHClientChannel[bytes], _OutputT]:
    command = remote_command_line(argv)
    for retry_in in (*_REFUSAL_RETRY_S, None):
        output = make_output()
        try:
            channel, _ = await conn.create_session(functools.partial(_same, output), command, encoding=None)
        except asyncssh.ChannelOpenError as exc:
            if conn.is_closed():
                raise StreamLostError(DownReason.CONNECTION_LOST, str(exc)) from exc
            if retry_in is None:
                raise ChannelRefusedError(f"{argv[0]}: {exc.reason}") from exc
        except (asyncssh.Error, OSError) as exc:
            raise StreamLostError(*classify_error(exc)) from exc
        else:
            return channel, output
        await asyncio.sleep(retry_in)
    raise AssertionError("the last attempt returns or raises")


class RemoteStream:
    """A long-running remote command as ``async for line in stream``, used as an async context manager.

    Iteration ends when the command exits (then ``exit_status`` is set and ``stderr_tail`` holds the end of
    its stderr) and raises :class:`StreamLostError` when the connection drops under it. Leaving the
    ``async with`` closes the channel, which kills the remote process group.
    """

    def __init__(
        self,
        session: HostSession,
        argv: Sequence[str],
        *,
        open_timeout: float | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        stderr_tail_bytes: int = DEFAULT_STDERR_TAIL_BYTES,
        delivery_tick_s: float = DEFAULT_DELIVERY_TICK_S,
    ) -> None:
        if delivery_tick_s < 0:
            raise ValueError("delivery_tick_s must not be negative")
        self.argv = tuple(argv)
        # Built once here so a bad argv fails before any channel is taken.
        remote_command_line(self.argv)
        self._session = session
        self._open_timeout = open_timeout
        self._delivery_tick_s = delivery_tick_s
        self._splitter = LineSplitter(max_line_bytes)
        self._stderr_tail_bytes = stderr_tail_bytes
        # The output's own deque once open: the per-line fast path reads it without a lookup through it.
        self._lines: deque[str] = deque()
        self._stack = AsyncExitStack()
        self._output: _LineOutput | None = None
        self._closed = False
        self.exit_status: int | None = None

    @property
    def truncated_lines(self) -> int:
        return self._splitter.truncated_lines

    @property
    def stderr_tail(self) -> str:
        """The last ``stderr_tail_bytes`` of the command's stderr so far."""
        stderr = b"" if self._output is None else bytes(self._output.stderr)
        return stderr.decode("utf-8", errors="replace")

    async def open(self) -> None:
        """Take a channel slot (waiting up to ``open_timeout`` for the host) and start the command."""
        if self._output is not None or self._closed:
            raise RuntimeError("a RemoteStream is opened once")
        try:
            conn = await self._stack.enter_async_context(self._session.channel(self._open_timeout))
            ticks = shared_delivery_ticks(self._delivery_tick_s) if self._delivery_tick_s else None
            traffic = self._session.traffic
            with self._session.reading_at_once():
                channel, output = await _open_channel(
                    conn,
                    self.argv,
                    lambda: _LineOutput(self._splitter, self._stderr_tail_bytes, ticks, traffic),
                )
            self._stack.push_async_callback(_close_channel, channel)
        except BaseException:
            await self.aclose()
            raise
        self._output = output
        self._lines = output.lines

    async def aclose(self) -> None:
        """Close the channel (the remote process group dies with it) and give the slot back; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._stack.aclose()

    async def __aenter__(self) -> RemoteStream:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> str:
        if self._lines:
            # Lines of a packet already split: no checks, no await (this runs once per line).
            return self._lines.popleft()
        return await self._next_line()

    def take_lines(self) -> list[str]:
        """Every line received and not yet read, at once (``BufferedLineStream``)."""
        lines = list(self._lines)
        self._lines.clear()
        return lines

    async def _next_line(self) -> str:
        output = self._output
        if output is None or self._closed:
            raise RuntimeError("iterate a RemoteStream inside `async with`")
        while not self._lines:
            output.caught_up()
            if self._lines:
                break  # letting the host send again delivered what the channel had held back
            if output.closed:
                self._finish(output)
                raise StopAsyncIteration
            # Output ended: the exit status comes with the channel's close (or never, if the connection dies).
            await output.changed()
        return self._lines.popleft()

    def _finish(self, output: _LineOutput) -> None:
        if output.lost_with is not None:
            raise StreamLostError(*classify_error(output.lost_with))
        code = output.returncode()
        if code is None:
            raise StreamLostError(
                DownReason.CONNECTION_LOST, f"{self.argv[0]}: channel closed without exit status"
            )
        self.exit_status = code


def open_stream(
    session: HostSession,
    argv: Sequence[str],
    *,
    open_timeout: float | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    stderr_tail_bytes: int = DEFAULT_STDERR_TAIL_BYTES,
    delivery_tick_s: float = DEFAULT_DELIVERY_TICK_S,
) -> RemoteStream:
    """``async with open_stream(session, ["nvidia-smi", "dmon"]) as stream: async for line in stream: ...``"""
    return RemoteStream(
        session,
        argv,
        open_timeout=open_timeout,
        max_line_bytes=max_line_bytes,
        stderr_tail_bytes=stderr_tail_bytes,
        delivery_tick_s=delivery_tick_s,
    )


class CommandResult(NamedTuple):
    """What a short command left behind; unpacks as ``exit_status, stdout, stderr``."""

    exit_status: int
    stdout: str
    stderr: str


async def run(
    session: HostSession,
    argv: Sequence[str],
    *,
    timeout: float,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    at_once: bool = True,
) -> CommandResult:
    """Run a short command to completion: ``status, out, err = await run(session, ["ps", ...], timeout=5)``.

    ``timeout`` bounds everything: waiting for the host (:class:`~.session.HostDownError` with the reason it
    is down), the command itself (:class:`TimeoutError`; the remote command is killed). A command killed by
    signal N has exit status 128 + N. Raises :class:`StreamLostError` when the connection drops under it.
    ``at_once=False`` lets the host's answers wait for the session's read grid like a stream's output (a
    few ticks per command, a second or so at 0.5 s): for periodic polls, where that does not matter
    and a wake-up per packet would cost more than the poll itself.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with session.channel(timeout) as conn, asyncio.timeout_at(deadline):
        with session.reading_at_once() if at_once else contextlib.nullcontext():
            channel, output = await _open_channel(conn, argv, lambda: _CollectedOutput(max_output_bytes))
            try:
                while not output.closed:
                    await output.changed()
            finally:
                await _close_channel(channel)
    if output.too_large is not None:
        raise OutputTooLargeError(output.too_large)
    if output.lost_with is not None:
        raise StreamLostError(*classify_error(output.lost_with))
    code = output.returncode()
    if code is None:
        raise StreamLostError(DownReason.CONNECTION_LOST, f"{argv[0]}: channel closed without exit status")
    return CommandResult(
        code,
        output.stdout.decode("utf-8", errors="replace"),
        output.stderr.decode("utf-8", errors="replace"),
    )
