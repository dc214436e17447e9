"""The shared grid: sockets read on ticks, nothing left unread, held ones read at once, delivery in the tick.

Real sockets (a socket pair) under the running event loop's own transports; the bounds checked are the
grid's promises (nothing read before the tick it was due at; everything read), never a speed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.transport.ticks import DeliveryTicks, on_grid, sleep_until

INTERVAL = 0.2


@dataclass
class _Recorder(asyncio.Protocol):
    received: list[tuple[float, bytes]] = field(default_factory=list)
    on_data: Callable[[bytes], None] | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    def data_received(self, data: bytes) -> None:
        self.received.append((asyncio.get_running_loop().time(), data))
        if self.on_data is not None:
            self.on_data(data)

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.received)


@dataclass
class _Pair:
    transport: asyncio.Transport
    protocol: _Recorder
    peer: socket.socket


@pytest.fixture(params=[True, False], ids=["read-by-tick", "read-by-loop"])
def read_directly(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def pair() -> AsyncIterator[_Pair]:
    ours, peer = socket.socketpair()
    transport, protocol = await asyncio.get_running_loop().connect_accepted_socket(_Recorder, ours)
    assert isinstance(transport, asyncio.Transport)
    yield _Pair(transport, protocol, peer)
    transport.close()
    peer.close()


async def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def _just_after_a_tick(interval: float) -> float:
    """Sleep until just past a grid point; returns the next one."""
    loop = asyncio.get_running_loop()
    tick = (loop.time() // interval + 1.0) * interval
    await asyncio.sleep(tick - loop.time() + 0.01)
    return tick + interval


async def test_a_polled_socket_is_read_at_the_tick_after_its_data(pair: _Pair, read_directly: bool) -> None:
    grid = DeliveryTicks(INTERVAL)
    poll = grid.poll_reads(pair.transport, read_directly=read_directly)
    assert poll is not None and grid.polled == 1
    # The event loop's own socket transports are read by the tick itself.
    assert poll.reads_directly is read_directly
    assert not pair.transport.is_reading()
    next_tick = await _just_after_a_tick(INTERVAL)
    pair.peer.send(b"first")
    await asyncio.sleep(INTERVAL / 4)
    pair.peer.send(b" second")
    await _wait_for(lambda: pair.protocol.data == b"first second")
    # Both packets waited for the grid point and came in one read.
    assert len(pair.protocol.received) == 1
    assert pair.protocol.received[0][0] >= next_tick
    # Drained: out of the loop again until the next tick finds data.
    await _wait_for(lambda: not pair.transport.is_reading())
    poll.close()
    assert grid.polled == 0


async def test_a_backlog_larger_than_a_read_is_read_whole(pair: _Pair, read_directly: bool) -> None:
    grid = DeliveryTicks(INTERVAL)
    assert grid.poll_reads(pair.transport, read_directly=read_directly) is not None
    pair.peer.setblocking(False)
    payload = bytes(range(256)) * (1024 * 1024 // 256)
    view = memoryview(payload)
    sent = 0
    async with asyncio.timeout(30):
        while sent < len(payload):
            try:
                sent += pair.peer.send(view[sent:])
            except BlockingIOError:
                await asyncio.sleep(0.01)
        await _wait_for(lambda: len(pair.protocol.data) == len(payload), timeout=30)
    assert pair.protocol.data == payload


async def test_a_held_socket_is_read_at_once_and_polled_again_after(pair: _Pair, read_directly: bool) -> None:
    interval = 1.0
    grid = DeliveryTicks(interval)
    poll = grid.poll_reads(pair.transport, read_directly=read_directly)
    assert poll is not None
    next_tick = await _just_after_a_tick(interval)
    with poll.at_once():
        assert pair.transport.is_reading()
        pair.peer.send(b"answer")
        await _wait_for(lambda: pair.protocol.data == b"answer", timeout=interval / 2)
    assert pair.protocol.received[0][0] < next_tick
    # Released: the next tick takes the drained socket out of the loop.
    await _wait_for(lambda: not pair.transport.is_reading(), timeout=3 * interval)


async def test_lines_a_read_brings_are_delivered_in_the_same_tick(pair: _Pair, read_directly: bool) -> None:
    grid = DeliveryTicks(INTERVAL)
    loop = asyncio.get_running_loop()
    delivered: list[float] = []
    pair.protocol.on_data = lambda _: grid.call_at_next_tick(lambda: delivered.append(loop.time()))
    assert grid.poll_reads(pair.transport, read_directly=read_directly) is not None
    await _just_after_a_tick(INTERVAL)
    pair.peer.send(b"line\n")
    await _wait_for(lambda: bool(delivered))
    read_at = pair.protocol.received[0][0]
    # Delivered in the turn that read it, not a whole interval later.
    assert delivered[0] - read_at < INTERVAL / 2


async def test_a_closed_peer_is_noticed_on_the_grid(pair: _Pair, read_directly: bool) -> None:
    grid = DeliveryTicks(INTERVAL)
    assert grid.poll_reads(pair.transport, read_directly=read_directly) is not None
    pair.peer.close()
    async with asyncio.timeout(5):
        await pair.protocol.lost.wait()


async def test_a_reused_descriptor_replaces_the_stale_poll(pair: _Pair, read_directly: bool) -> None:
    grid = DeliveryTicks(INTERVAL)
    stale = grid.poll_reads(pair.transport, read_directly=read_directly)
    fresh = grid.poll_reads(pair.transport, read_directly=read_directly)
    assert stale is not None and fresh is not None
    assert stale.closed and not fresh.closed and grid.polled == 1
    stale.close()  # closing the stale one later must not drop the fresh one
    assert grid.polled == 1
    pair.peer.send(b"still read")
    await _wait_for(lambda: pair.protocol.data == b"still read")


async def test_a_transport_without_a_socket_is_read_at_once() -> None:
    class _NoSocket(asyncio.Transport):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

    assert DeliveryTicks(INTERVAL).poll_reads(_NoSocket()) is None


def test_the_grid_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        DeliveryTicks(0)


def test_on_grid_rounds_up_to_the_next_grid_point() -> None:
    assert on_grid(1.0, 0.25) == 1.0
    assert on_grid(1.01, 0.25) == 1.25
    assert on_grid(1.2499, 0.25) == 1.25
    assert on_grid(7.3, 0.0) == 7.3


@given(
    st.floats(min_value=0.0, max_value=1e7, allow_nan=False),
    st.sampled_from([0.05, 0.1, 0.25, 0.5, 1.0]),
)
def test_on_grid_lands_where_the_tick_timer_does(when: float, interval: float) -> None:
    point = on_grid(when, interval)
    assert when <= point < when + interval + 1e-9
    # The very float DeliveryTicks computes for its timer, so both fire in one turn of the loop.
    if point != when:
        assert point == (when // interval + 1.0) * interval


async def test_sleep_until_wakes_on_the_grid() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await sleep_until(start + 0.05, 0.1)
    assert loop.time() >= on_grid(start + 0.05, 0.1)
    before = loop.time()
    await sleep_until(before - 1.0, 0.1)  # a time already past: no wait beyond the next grid point
    assert loop.time() - before < 1.0
