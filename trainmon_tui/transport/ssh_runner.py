"""Run a host's commands over its SSH session: the :class:`~trainmon_tui.transport.runner.CommandRunner` for
remote hosts.

A thin adapter: every command goes through :mod:`trainmon_tui.transport.streams`, so it runs under the
self-cleaning wrapper, holds one of the session's channel slots and is killed when its stream is left.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainmon_tui.transport.session import HostSession
from trainmon_tui.transport.streams import CommandResult, RemoteStream, open_stream, run

#: How long opening a stream may wait for the connection and a channel slot before HostDownError.
DEFAULT_OPEN_TIMEOUT_S = 30.0
#: For this long after a connection comes up, commands' answers are read as they arrive: the first
#: readings of a host (its GPU inventory, processes, log files) reach the screen without waiting for the grid.
FRESH_CONNECTION_S = 10.0


class SshRunner:
    """Commands on one remote host, over ``session`` (which reconnects by itself)."""

    is_local = False

    def __init__(
        self, session: HostSession, name: str, *, open_timeout_s: float | None = DEFAULT_OPEN_TIMEOUT_S
    ) -> None:
        self.name = name
        self.session = session
        self._open_timeout_s = open_timeout_s

    async def wait_up(self, timeout: float | None = None) -> None:
        """Return once the session is connected; HostDownError when ``timeout`` passes first."""
        await self.session.wait_up(timeout)

    def stream(self, argv: Sequence[str]) -> RemoteStream:
        return open_stream(self.session, argv, open_timeout=self._open_timeout_s)

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        # Every caller is a collector's poll: once the connection has settled, its answers can wait for the
        # session's read grid (streams.run).
        up_for_s = self.session.up_for_s()
        at_once = up_for_s is None or up_for_s < FRESH_CONNECTION_S
        return await run(self.session, argv, timeout=timeout, at_once=at_once)
