"""The event loop's shared wake-up grid: stream readers woken together, connections' sockets read together.

Each wake-up of an idle process costs far more than the work it does. On the 2-core test box, a bare asyncio
loop reading 64 small packets a second from 32 sockets spends about 150 us of CPU per packet, nearly all
of it in waking up (benchmarks/bench_collect.py); a fleet's hosts send unsynchronised, so without a grid
every packet of every host is its own wake-up. Two things therefore happen only on a grid of
``interval_s``:

* **Delivery** (:meth:`DeliveryTicks.call_at_next_tick`): a stream reader with new lines is woken at the
  next multiple of the interval, together with every other reader that has lines by then.
* **Reading** (:meth:`DeliveryTicks.poll_reads`): a polled connection's socket is left out of the event
  loop's selector. At each tick one non-blocking ``select`` over all polled sockets finds those with data,
  and the tick reads each of them once itself, through the transport's own read handler, so the protocol
  sees exactly what a read by the loop would have given it; the lines they brought are delivered in the
  same turn. A packet thus waits at most one interval in the kernel's buffer, and everything that arrived
  meanwhile costs one wake-up. Where the transport has no such handler (another event loop
  implementation), the socket is handed back to the loop for its next turn instead and taken out again
  once drained: the same effect, with the selector's bookkeeping added (about 7 % more CPU in the
  collection benchmark).

A socket is taken out only after a check finds it drained, so whatever order the loop runs things in, no
data is left unread past the next tick. A connection whose caller waits for an answer (a short command, a
channel being opened) is read at once while it holds :meth:`ReadPoll.at_once`: round trips are not
stretched to the grid. A socket still readable after the loop's read stays in the loop until a tick finds
it drained, so a polled connection moves at least its kernel receive buffer per interval (128 KiB or more
on Linux, over 250 KiB/s at 0.5 s): far above what dmon, ``ps`` and training logs send.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import weakref
from collections.abc import Callable, Iterator

#: How often, at most, a stream's reader is woken for new lines and a polled socket is read (0: at once).
#: Twice a second, the dashboard's highest repaint rate: what arrives is on screen by the next repaint. On
#: the collection benchmark 0.5 s took 0.92x the CPU of 0.25 s (paired run).
DEFAULT_DELIVERY_TICK_S = 0.5


class ReadPoll:
    """One transport read on a grid: out of the loop's selector between ticks unless held."""

    __slots__ = ("_fd", "_grid", "_holds", "_read_once", "_transport", "closed")

    def __init__(
        self, grid: DeliveryTicks, transport: asyncio.Transport, fd: int, *, read_directly: bool
    ) -> None:
        self._grid = grid
        self._transport = transport
        self._fd = fd
        self._holds = 0
        self.closed = False
        # asyncio's selector transports read through this handler when the selector reports the socket;
        # it is internal to them, hence looked up rather than assumed (module docstring).
        handler = getattr(transport, "_read_ready", None) if read_directly else None
        self._read_once: Callable[[], object] | None = handler if callable(handler) else None

    @property
    def reads_directly(self) -> bool:
        """Whether ticks read the socket themselves (else they hand it back to the loop)."""
        return self._read_once is not None

    @property
    def reading(self) -> bool:
        """Whether the loop watches the socket right now."""
        return self._transport.is_reading()

    @contextlib.contextmanager
    def at_once(self) -> Iterator[None]:
        """Read as data arrives while inside: someone waits for an answer."""
        self._holds += 1
        self._resume()
        try:
            yield
        finally:
            # Taken out again at the next tick that finds it drained.
            self._holds -= 1

    def close(self) -> None:
        """Stop polling (the connection ended); idempotent."""
        if not self.closed:
            self.closed = True
            self._grid._forget(self._fd, self)

    def _read_at_tick(self) -> bool:
        """The socket has data: read it once now (True), or have the loop read it (False)."""
        transport = self._transport
        if self.closed or transport.is_closing():
            return False
        read_once = self._read_once
        if read_once is None or transport.is_reading():
            self._resume()
            return False
        read_once()
        return True

    def _resume(self) -> bool:
        transport = self._transport
        if self.closed or transport.is_closing():
            return False
        if not transport.is_reading():
            transport.resume_reading()
        return True

    def _pause_if_idle(self, still_readable: set[int]) -> None:
        transport = self._transport
        if (
            self._holds == 0
            and self._fd not in still_readable
            and not self.closed
            and not transport.is_closing()
            and transport.is_reading()
        ):
            transport.pause_reading()


class DeliveryTicks:
    """One event loop's grid of wake-up times: everything due wakes in one turn."""

    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._due: list[Callable[[], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._polls: dict[int, ReadPoll] = {}
        self._selector: selectors.BaseSelector | None = None

    def call_at_next_tick(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` at the next multiple of the interval (one timer however many are due)."""
        self._due.append(callback)
        self._arm()

    def poll_reads(self, transport: asyncio.BaseTransport, *, read_directly: bool = True) -> ReadPoll | None:
        """Read ``transport``'s socket on this grid from now on; None (read at once) if it has no socket.

        Only a transport of the loop's own over a socket qualifies: a connection tunnelled through another
        SSH connection or a proxy command has none, and is read as data arrives. ``read_directly=False``
        always hands a socket with data back to the loop (module docstring).
        """
        sock = transport.get_extra_info("socket")
        if not isinstance(transport, asyncio.Transport) or sock is None or transport.is_closing():
            return None
        fd = sock.fileno()
        if fd < 0:
            return None
        selector = self._selector
        if selector is None:
            selector = self._selector = selectors.DefaultSelector()
        stale = self._polls.pop(fd, None)
        if stale is not None:
            # The descriptor was closed and reused before its poll was closed.
            stale.closed = True
            selector.unregister(fd)
        poll = self._polls[fd] = ReadPoll(self, transport, fd, read_directly=read_directly)
        selector.register(fd, selectors.EVENT_READ)
        if transport.is_reading():
            transport.pause_reading()
        self._arm()
        return poll

    @property
    def polled(self) -> int:
        """How many sockets are read on this grid."""
        return len(self._polls)

    def _forget(self, fd: int, poll: ReadPoll) -> None:
        if self._polls.get(fd) is poll:
            del self._polls[fd]
            if self._selector is not None:
                # The descriptor may be closed already; the selector forgets it all the same.
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(fd)

    def _arm(self) -> None:
        if self._timer is None and (self._due or self._polls):
            loop = asyncio.get_running_loop()
            tick = (loop.time() // self.interval_s + 1.0) * self.interval_s
            self._timer = loop.call_at(tick, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        if self._polls and self._read_sockets_with_data():
            # The loop reads those sockets in its next turn, before a callback scheduled from that turn's
            # callbacks: taking them out and delivering then sees everything this tick brought.
            loop.call_soon(loop.call_soon, self._after_reads)
        else:
            self._deliver()
        self._arm()

    def _readable(self) -> set[int]:
        assert self._selector is not None
        return {key.fd for key, _ in self._selector.select(0)}

    def _read_sockets_with_data(self) -> bool:
        """Read or resume every polled socket with data; True when any socket is now watched by the loop."""
        polls = self._polls
        read_here = False
        for fd in self._readable():
            poll = polls.get(fd)
            if poll is not None and poll._read_at_tick():
                read_here = True
        if read_here:
            # More than one read's worth waiting (a backlog): the loop reads the rest as it comes.
            for fd in self._readable():
                poll = polls.get(fd)
                if poll is not None:
                    poll._resume()
        # A socket left watched (held a moment ago, or not drained at the last tick) is checked again too.
        return any(poll.reading for poll in polls.values())

    def _after_reads(self) -> None:
        if self._polls:
            still_readable = self._readable()
            for poll in list(self._polls.values()):
                poll._pause_if_idle(still_readable)
        self._deliver()

    def _deliver(self) -> None:
        due, self._due = self._due, []
        for callback in due:
            callback()


def on_grid(when: float, interval_s: float = DEFAULT_DELIVERY_TICK_S) -> float:
    """The first grid point at or after loop time ``when``: a timer set there fires with the tick.

    A periodic wait of a collector (a keepalive check, a poll, a silence watch) rounded up to the grid
    shares the tick's wake-up instead of costing one of its own; it is late by less than one interval.
    An interval of 0 means no grid: ``when`` itself.
    """
    if interval_s <= 0:
        return when
    ticks = when // interval_s
    if ticks * interval_s < when:
        ticks += 1.0
    return ticks * interval_s


async def sleep_until(when: float, interval_s: float = DEFAULT_DELIVERY_TICK_S) -> None:
    """Sleep until :func:`on_grid` of loop time ``when`` (at once if that has passed)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_at(on_grid(when, interval_s), _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_grids: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, DeliveryTicks]] = (
    weakref.WeakKeyDictionary()
)


def shared_delivery_ticks(interval_s: float) -> DeliveryTicks:
    """The running loop's grid of this interval, shared by every stream and connection that uses it."""
    by_interval = _grids.setdefault(asyncio.get_running_loop(), {})
    grid = by_interval.get(interval_s)
    if grid is None:
        grid = by_interval[interval_s] = DeliveryTicks(interval_s)
    return grid
