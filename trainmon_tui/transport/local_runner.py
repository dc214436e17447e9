"""Run commands on this machine: the :class:`~trainmon_tui.transport.runner.CommandRunner` for the local host.

Commands run without a shell, each in a process group of its own (``start_new_session``), so everything a
command starts can be stopped with it: leaving a stream, cancelling the task that reads it, a timeout or the
command's own end sends TERM to the whole group and KILL to whatever is left after a grace period - the same
guarantee the remote wrapper gives on SSH hosts. A command that cannot be started reads the way a shell would
report it (status 127 "command not found", 126 not executable), so collectors treat local and remote hosts
alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Sequence
from types import TracebackType

from trainmon_tui.transport.streams import (
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_STDERR_TAIL_BYTES,
    CommandResult,
    LineSplitter,
    OutputTooLargeError,
)

#: Seconds a process group gets between TERM and KILL.
DEFAULT_TERM_GRACE_S = 1.0
#: The statuses a POSIX shell gives a command it cannot find or cannot execute.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
_READ_CHUNK_BYTES = 64 * 1024
_GROUP_POLL_S = 0.02
# Polling for a command's exit backs off to this: a long-running stream costs a couple of wakeups a second.
_MAX_EXIT_POLL_S = 0.5
# How long to wait for pipes to close and a killed command to be reaped before giving up on it.
_REAP_WAIT_S = 1.0


def _exit_status(returncode: int) -> int:
    """Death by signal N reads 128 + N, as in a shell (asyncio reports it as -N)."""
    return 128 - returncode if returncode < 0 else returncode


def _launch_failure(argv: Sequence[str], error: OSError) -> tuple[int, str]:
    """The status and message a shell would give for a command that could not be started."""
    if isinstance(error, FileNotFoundError):
        return EXIT_NOT_FOUND, f"{argv[0]}: command not found\n"
    return EXIT_NOT_EXECUTABLE, f"{argv[0]}: {error.strerror or error}\n"


async def _start(argv: Sequence[str]) -> asyncio.subprocess.Process:
    if not argv:
        raise ValueError("a command needs at least one argument")
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


def _signal_group(group: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its user id; it still exists.
        return True
    return True


async def wait_exited(process: asyncio.subprocess.Process) -> int:
    """The command's return code once it has exited, even while something else holds its output pipes open.

    ``Process.wait()`` also waits for the pipes to close, which a child left behind can put off forever.
    """
    delay = _GROUP_POLL_S
    while (returncode := process.returncode) is None:
        await asyncio.sleep(delay)
        delay = min(2 * delay, _MAX_EXIT_POLL_S)
    return returncode


async def stop_process_group(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """TERM the command's process group, KILL whatever is left ``grace_s`` later, and reap the command.

    Returns at once when the command has ended and left nothing behind. If the caller is cancelled while
    waiting out the grace period, the group is killed before the cancellation goes on.
    """
    # start_new_session made the command the leader of a new group whose id is its pid.
    group = process.pid
    if process.returncode is not None and not _group_alive(group):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    _signal_group(group, signal.SIGTERM)
    try:
        # The command itself must be reaped before the group can look empty: a zombie still counts.
        while process.returncode is None or _group_alive(group):
            if loop.time() >= deadline:
                _signal_group(group, signal.SIGKILL)
                break
            await asyncio.sleep(_GROUP_POLL_S)
        # Lets asyncio close the pipes and reap the command (at once, unless it escaped the group).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_REAP_WAIT_S):
                await process.wait()
    except BaseException:
        _signal_group(group, signal.SIGKILL)
        raise


class LocalStream:
    """A local command's stdout as ``async for line in stream`` inside ``async with``; see RemoteStream.

    Iteration ends when the command has closed its output and exited; then ``exit_status`` is set and
    ``stderr_tail`` holds the end of its stderr. Leaving the ``async with`` stops the command's group.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        term_grace_s: float = DEFAULT_TERM_GRACE_S,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        stderr_tail_bytes: int = DEFAULT_STDERR_TAIL_BYTES,
    ) -> None:
        if not argv:
            raise ValueError("a command needs at least one argument")
        self.argv = tuple(argv)
        self._term_grace_s = term_grace_s
        self._splitter = LineSplitter(max_line_bytes)
        self._stderr_tail_bytes = stderr_tail_bytes
        self._stderr = bytearray()
        self._lines: deque[str] = deque()
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._reaper_task: asyncio.Task[None] | None = None
        self._opened = False
        self._eof = False
        self._closed = False
        self.exit_status: int | None = None

    @property
    def stderr_tail(self) -> str:
        return bytes(self._stderr).decode("utf-8", errors="replace")

    @property
    def pid(self) -> int | None:
        """The command's pid (and process group id); None when it could not be started."""
        return None if self._process is None else self._process.pid

    async def open(self) -> None:
        if self._opened:
            raise RuntimeError("a LocalStream is opened once")
        self._opened = True
        try:
            process = await _start(self.argv)
        except OSError as error:
            # Reported like a command that ran and failed at once, as it would be on a remote host.
            status, message = _launch_failure(self.argv, error)
            self._keep_stderr(message.encode())
            self.exit_status = status
            self._eof = True
            return
        self._process = process
        assert process.stderr is not None
        loop = asyncio.get_running_loop()
        self._stderr_task = loop.create_task(self._drain_stderr(process.stderr))
        self._reaper_task = loop.create_task(self._stop_leftovers(process))

    async def aclose(self) -> None:
        """Stop the command's process group; idempotent."""
        if self._closed:
            return
        self._closed = True
        process = self._process
        if process is None:
            return
        tasks = {task for task in (self._stderr_task, self._reaper_task) if task is not None}
        try:
            await stop_process_group(process, self._term_grace_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)

    async def __aenter__(self) -> LocalStream:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> str:
        if not self._opened or (self._closed and not self._lines):
            raise RuntimeError("iterate a LocalStream inside `async with`")
        while not self._lines:
            if self._eof:
                await self._finish()
                raise StopAsyncIteration
            process = self._process
            assert process is not None and process.stdout is not None
            chunk = await process.stdout.read(_READ_CHUNK_BYTES)
            if chunk:
                self._lines.extend(self._splitter.feed(chunk))
            else:
                self._eof = True
                self._lines.extend(self._splitter.flush())
        return self._lines.popleft()

    def take_lines(self) -> list[str]:
        """Every line read from the process and not yet given out, at once (``BufferedLineStream``)."""
        lines = list(self._lines)
        self._lines.clear()
        return lines

    async def _finish(self) -> None:
        process = self._process
        if process is None or self.exit_status is not None:
            return
        returncode = await wait_exited(process)
        if self._stderr_task is not None:
            # Leftovers holding stderr open are being stopped (TERM, then KILL after the grace period).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * self._term_grace_s + 1.0):
                    await asyncio.shield(self._stderr_task)
        self.exit_status = _exit_status(returncode)

    async def _stop_leftovers(self, process: asyncio.subprocess.Process) -> None:
        # As on a remote host: once the command ends, what it left in its group must not hold the output open.
        await wait_exited(process)
        await stop_process_group(process, self._term_grace_s)

    async def _drain_stderr(self, reader: asyncio.StreamReader) -> None:
        # Always drained: a command blocks once the stderr pipe is full.
        while chunk := await reader.read(_READ_CHUNK_BYTES):
            self._keep_stderr(chunk)

    def _keep_stderr(self, chunk: bytes) -> None:
        self._stderr += chunk
        del self._stderr[: max(0, len(self._stderr) - self._stderr_tail_bytes)]


async def _read_capped(reader: asyncio.StreamReader, limit: int, name: str) -> bytes:
    data = bytearray()
    while chunk := await reader.read(_READ_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise OutputTooLargeError(f"{name} exceeded {limit} bytes")
    return bytes(data)


class LocalRunner:
    """Commands on this machine, as subprocesses; always up."""

    is_local = True

    def __init__(
        self,
        name: str = "local",
        *,
        term_grace_s: float = DEFAULT_TERM_GRACE_S,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        self.name = name
        self._term_grace_s = term_grace_s
        self._max_output_bytes = max_output_bytes

    async def wait_up(self, timeout: float | None = None) -> None:
        """This machine is always reachable."""

    def stream(self, argv: Sequence[str]) -> LocalStream:
        return LocalStream(argv, term_grace_s=self._term_grace_s)

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run a short command to completion; TimeoutError (its group killed) past ``timeout`` seconds."""
        try:
            process = await _start(argv)
        except OSError as error:
            status, message = _launch_failure(argv, error)
            return CommandResult(status, "", message)
        assert process.stdout is not None and process.stderr is not None
        loop = asyncio.get_running_loop()
        readers = (
            loop.create_task(_read_capped(process.stdout, self._max_output_bytes, "stdout")),
            loop.create_task(_read_capped(process.stderr, self._max_output_bytes, "stderr")),
        )
        exited = loop.create_task(wait_exited(process))
        try:
            async with asyncio.timeout(timeout):
                pending: set[asyncio.Task[int] | asyncio.Task[bytes]] = {exited, *readers}
                while not exited.done():
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for reader in readers:
                        if reader.done() and (failure := reader.exception()) is not None:
                            raise failure
                # Whatever the command left running in its group goes with it; that also ends the output.
                await stop_process_group(process, self._term_grace_s)
                stdout, stderr = await readers[0], await readers[1]
        finally:
            try:
                await stop_process_group(process, self._term_grace_s)
            finally:
                for task in (*readers, exited):
                    task.cancel()
                await asyncio.wait((*readers, exited))
        return CommandResult(
            _exit_status(exited.result()),
            stdout.decode("utf-8", errors="replace"),
            stderr.decode("utf-8", errors="replace"),
        )
