"""Remote commands over a host's session: long-running ones as async line iterators, short ones as results.

Every command runs under the lifeline wrapper of :mod:`trainmon_tui.transport.remote` and holds one of the
session's channel slots while it runs. The channel is closed on every way out - end of output, an error, a
``break`` out of the loop, cancellation - and closing it is what makes the wrapper kill the remote process
group. Output is read as bytes and decoded per line with ``errors="replace"``: a log with a stray Latin-1
byte must not stop the stream. Lines are capped in length so one runaway line cannot eat memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, NamedTuple

import asyncssh

from trainmon_tui.transport.remote import remote_command_line
from trainmon_tui.transport.session import (
    CHANNEL_CLOSE_WAIT_S,
    DownReason,
    HostSession,
    TransportError,
    classify_error,
)

DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_STDERR_TAIL_BYTES = 16 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
_READ_CHUNK_BYTES = 64 * 1024


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
        lines: list[str] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False
            else:
                self._pending += data[start:end]
                if self._pending.endswith(b"\r"):
                    del self._pending[-1]
                lines.append(self._finish(self._pending))
                self._pending = bytearray()
            start = end + 1
        if not self._skipping:
            self._pending += data[start:]
            if len(self._pending) > self.max_line_bytes:
                del self._pending[: _last_redraw_start(self._pending)]
                if len(self._pending) > self.max_line_bytes:
                    lines.append(self._finish(self._pending))
                    self._pending = bytearray()
                    self._skipping = True
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


def exit_code(process: asyncssh.SSHClientProcess[bytes]) -> int | None:
    """The command's exit status; death by signal N reads 128 + N, as in a shell; None when none came."""
    returncode = process.returncode
    if returncode is None:
        return None
    if returncode < 0:
        return 128 + -returncode
    return returncode


async def _close_channel(process: asyncssh.SSHClientProcess[bytes]) -> None:
    process.close()
    # When the host stopped answering, keepalive will close the whole connection and the channel with it.
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation (CPython gh-86296).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CHANNEL_CLOSE_WAIT_S):
            await process.wait_closed()


async def _open_process(
    conn: asyncssh.SSHClientConnection, argv: Sequence[str]
) -> asyncssh.SSHClientProcess[bytes]:
    try:
        process: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
            remote_command_line(argv), encoding=None
        )
    except asyncssh.ChannelOpenError as exc:
        if conn.is_closed():
            raise StreamLostError(DownReason.CONNECTION_LOST, str(exc)) from exc
        raise ChannelRefusedError(f"{argv[0]}: {exc.reason}") from exc
    except (asyncssh.Error, OSError) as exc:
        raise StreamLostError(*classify_error(exc)) from exc
    return process


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
    ) -> None:
        self.argv = tuple(argv)
        # Built once here so a bad argv fails before any channel is taken.
        remote_command_line(self.argv)
        self._session = session
        self._open_timeout = open_timeout
        self._splitter = LineSplitter(max_line_bytes)
        self._stderr_tail_bytes = stderr_tail_bytes
        self._stderr = bytearray()
        self._lines: deque[str] = deque()
        self._stack = AsyncExitStack()
        self._process: asyncssh.SSHClientProcess[bytes] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._eof = False
        self._closed = False
        self.exit_status: int | None = None

    @property
    def truncated_lines(self) -> int:
        return self._splitter.truncated_lines

    @property
    def stderr_tail(self) -> str:
        """The last ``stderr_tail_bytes`` of the command's stderr so far."""
        return bytes(self._stderr).decode("utf-8", errors="replace")

    async def open(self) -> None:
        """Take a channel slot (waiting up to ``open_timeout`` for the host) and start the command."""
        if self._process is not None or self._closed:
            raise RuntimeError("a RemoteStream is opened once")
        try:
            conn = await self._stack.enter_async_context(self._session.channel(self._open_timeout))
            process = await _open_process(conn, self.argv)
            self._stack.push_async_callback(_close_channel, process)
            self._stderr_task = asyncio.get_running_loop().create_task(self._drain_stderr(process))
            self._stack.push_async_callback(_stop_task, self._stderr_task)
        except BaseException:
            await self.aclose()
            raise
        self._process = process

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
        process = self._process
        if process is None or (self._closed and not self._lines):
            raise RuntimeError("iterate a RemoteStream inside `async with`")
        while not self._lines:
            if self._eof:
                await self._finish(process)
                raise StopAsyncIteration
            try:
                chunk = await process.stdout.read(_READ_CHUNK_BYTES)
            except (asyncssh.Error, OSError) as exc:
                raise StreamLostError(*classify_error(exc)) from exc
            if chunk:
                self._lines.extend(self._splitter.feed(chunk))
            else:
                self._eof = True
                self._lines.extend(self._splitter.flush())
        return self._lines.popleft()

    async def _finish(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        # Output ended; the exit status comes with the channel's close (or never, if the connection died).
        await process.wait_closed()
        if self._stderr_task is not None:
            # The channel is closed, so the drain has seen (or is about to see) the end of stderr.
            await asyncio.wait({self._stderr_task})
        code = exit_code(process)
        if code is None:
            raise StreamLostError(
                DownReason.CONNECTION_LOST, f"{self.argv[0]}: channel closed without exit status"
            )
        self.exit_status = code

    async def _drain_stderr(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        # Always drained: asyncssh pauses the whole channel when any of its buffers fills up.
        while True:
            try:
                chunk = await process.stderr.read(_READ_CHUNK_BYTES)
            except (asyncssh.Error, OSError):
                return  # the stdout side reports the loss
            if not chunk:
                return
            self._stderr += chunk
            del self._stderr[: max(0, len(self._stderr) - self._stderr_tail_bytes)]


async def _stop_task(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.wait({task})


def open_stream(
    session: HostSession,
    argv: Sequence[str],
    *,
    open_timeout: float | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    stderr_tail_bytes: int = DEFAULT_STDERR_TAIL_BYTES,
) -> RemoteStream:
    """``async with open_stream(session, ["nvidia-smi", "dmon"]) as stream: async for line in stream: ...``"""
    return RemoteStream(
        session,
        argv,
        open_timeout=open_timeout,
        max_line_bytes=max_line_bytes,
        stderr_tail_bytes=stderr_tail_bytes,
    )


class CommandResult(NamedTuple):
    """What a short command left behind; unpacks as ``exit_status, stdout, stderr``."""

    exit_status: int
    stdout: str
    stderr: str


async def _read_all(reader: asyncssh.SSHReader[bytes], limit: int, name: str) -> bytes:
    data = bytearray()
    while chunk := await reader.read(_READ_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise OutputTooLargeError(f"{name} exceeded {limit} bytes")
    return bytes(data)


async def _both(first: Coroutine[Any, Any, bytes], second: Coroutine[Any, Any, bytes]) -> tuple[bytes, bytes]:
    """Run two readers; the first failure stops the other (gather would leave it running)."""
    loop = asyncio.get_running_loop()
    tasks = (loop.create_task(first), loop.create_task(second))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return tasks[0].result(), tasks[1].result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)


async def run(
    session: HostSession,
    argv: Sequence[str],
    *,
    timeout: float,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> CommandResult:
    """Run a short command to completion: ``status, out, err = await run(session, ["ps", ...], timeout=5)``.

    ``timeout`` bounds everything: waiting for the host (:class:`~.session.HostDownError` with the reason it
    is down), the command itself (:class:`TimeoutError`; the remote command is killed). A command killed by
    signal N has exit status 128 + N. Raises :class:`StreamLostError` when the connection drops under it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with session.channel(timeout) as conn, asyncio.timeout_at(deadline):
        process = await _open_process(conn, argv)
        try:
            stdout, stderr = await _both(
                _read_all(process.stdout, max_output_bytes, "stdout"),
                _read_all(process.stderr, max_output_bytes, "stderr"),
            )
            await process.wait_closed()
        except (asyncssh.Error, OSError) as exc:
            raise StreamLostError(*classify_error(exc)) from exc
        finally:
            await _close_channel(process)
    code = exit_code(process)
    if code is None:
        raise StreamLostError(DownReason.CONNECTION_LOST, f"{argv[0]}: channel closed without exit status")
    return CommandResult(
        code, stdout.decode("utf-8", errors="replace"), stderr.decode("utf-8", errors="replace")
    )
