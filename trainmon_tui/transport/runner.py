"""The one interface collectors use to run commands on a host, whether over SSH or on this machine.

Collectors never touch asyncssh or subprocess directly: they get a :class:`CommandRunner`. ``SshRunner`` runs
commands over a host's :class:`~trainmon_tui.transport.session.HostSession` (each under the self-cleaning
wrapper); ``LocalRunner`` runs them as local subprocesses in their own process group. Both quote nothing
themselves: argv lists go in, and only the SSH runner turns them into a quoted remote command line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from trainmon_tui.transport.streams import CommandResult


class LineStream(Protocol):
    """A running command's stdout as lines; ``exit_status``/``stderr_tail`` are set once it has ended."""

    def __aiter__(self) -> AsyncIterator[str]: ...

    @property
    def exit_status(self) -> int | None: ...

    @property
    def stderr_tail(self) -> str: ...


@runtime_checkable
class BufferedLineStream(LineStream, Protocol):
    """A line stream that can also hand over, at once, every line it has received and not yet given out.

    For readers of long outputs (a ps listing of hundreds of lines every few seconds): taking a packet's
    lines as one list costs one call, where ``async for`` costs a call per line.
    """

    def take_lines(self) -> list[str]:
        """The lines received and not yet read, oldest first (maybe none); they count as read."""
        ...


class CommandRunner(Protocol):
    """Runs commands on one host. Every method may raise TransportError when the host is down."""

    #: The host's name in the config (for messages).
    name: str
    #: True for this machine (no SSH).
    is_local: bool

    async def wait_up(self, timeout: float | None = None) -> None:
        """Return when commands can be run (at once for a local host)."""
        ...

    def stream(self, argv: Sequence[str]) -> AbstractAsyncContextManager[LineStream]:
        """A long-running command whose output is read line by line; the command is stopped on exit."""
        ...

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """A short command, its exit status and its output."""
        ...
