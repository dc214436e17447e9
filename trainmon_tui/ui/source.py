"""What the dashboard reads from: a source of state snapshots, and the protocol screens use to receive them.

The UI never talks to hosts. Whoever starts the dashboard (``dashboard_cmd``) builds the collection (a
:class:`~trainmon_tui.transport.fleet.Fleet` feeding a :class:`~trainmon_tui.state.store.Store`) and hands
the app a :class:`SnapshotSource`; tests hand it a store they fill by hand with a fake clock. Snapshots are
frozen: the app takes one on its own timer (at most 2 Hz) when the store's version moved, and gives it to the
screen on top, so the rate hosts write at never sets the rate the terminal repaints at.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from trainmon_tui.state.store import StoreSnapshot


class SnapshotSource(Protocol):
    """The running collection, as the dashboard sees it."""

    @property
    def version(self) -> int:
        """Grows whenever the state changed; equal versions mean an identical snapshot."""
        ...

    def snapshot(self) -> StoreSnapshot:
        """The state as of now (the source owns the clock)."""
        ...

    async def start(self) -> None:
        """Begin collecting; returns at once (connections come up in the background)."""
        ...

    async def stop(self) -> None:
        """Stop collecting and close every connection, within a bounded time."""
        ...


@runtime_checkable
class SnapshotConsumer(Protocol):
    """A screen or widget that redraws itself from a snapshot."""

    def show_snapshot(self, snapshot: StoreSnapshot) -> None:
        """Redraw from ``snapshot``; called on the UI thread, never more often than the repaint rate."""
        ...
