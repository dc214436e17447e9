"""Nothing we start on a host survives us: the remote process group dies within 5 s on every way out.

The remote command is deliberately hard to kill: it ignores HUP, TERM and PIPE and keeps a background
sleeper and a pipeline. Every process it starts carries a mark in its environment, so the tests find them
in /proc without confusing them with anything else on the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.sshd_harness import (
    FakeHost,
    SshdHarness,
    serving_sshd,
    stubborn_argv,
    wait_for_marked,
    wait_until_gone,
)
from trainmon_tui.transport.session import Backoff, HostSession
from trainmon_tui.transport.streams import StreamLostError, open_stream, run

pytestmark = pytest.mark.integration

CLEANUP_LIMIT_S = 5.0
REPO_ROOT = Path(__file__).resolve().parents[2]
# The shell, the background sleeper, both ends of the pipeline; the loop's own `sleep 0.1` comes and goes.
STUBBORN_PROCESSES = 4

# A client in its own interpreter, so the test can SIGKILL it: connects, streams, prints, never exits.
CLIENT_SCRIPT = """
import asyncio, json, sys
from trainmon_tui.transport.session import ConnectParams, HostSession
from trainmon_tui.transport.streams import open_stream

async def main() -> None:
    fields = json.loads(sys.argv[1])
    fields["identity_files"] = tuple(fields["identity_files"])
    fields["ssh_config"] = tuple(fields["ssh_config"])
    async with HostSession(ConnectParams(**fields)) as session:
        async with open_stream(session, json.loads(sys.argv[2])) as stream:
            async for line in stream:
                print(line, flush=True)

asyncio.run(main())
"""


def new_mark() -> str:
    return uuid.uuid4().hex


def assert_all_gone(mark: str, since: float) -> None:
    _, left = wait_until_gone(mark, CLEANUP_LIMIT_S)
    elapsed = time.monotonic() - since
    assert left == [], f"still running {elapsed:.1f} s later: {left}"
    assert elapsed < CLEANUP_LIMIT_S


async def start_stubborn_stream_and_close(session: HostSession, mark: str) -> float:
    """Open the stubborn command, check it runs, leave the stream; returns when the close began."""
    async with open_stream(session, stubborn_argv(mark)) as stream:
        async for line in stream:
            assert line == "tick"
            break
        assert len(wait_for_marked(mark, STUBBORN_PROCESSES)) >= STUBBORN_PROCESSES
        closing_at = time.monotonic()
    return closing_at


async def test_closing_the_stream_kills_the_remote_group(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    mark = new_mark()
    async with HostSession(sshd_harness.params(fake_host)) as session:
        closing_at = await start_stubborn_stream_and_close(session, mark)
        assert session.channels_in_use == 0
        assert_all_gone(mark, closing_at)
        # The connection itself stays usable.
        assert (await run(session, ["echo", "still here"], timeout=10)).stdout == "still here\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="a root login needs the sshd to run as root")
async def test_closing_the_stream_kills_the_remote_group_of_a_root_login(sshd_harness: SshdHarness) -> None:
    # Root logins are the case where sshd refuses signal requests; the wrapper does not need them.
    host = sshd_harness.start_host("127.0.0.2", extra_users=("root",))
    try:
        mark = new_mark()
        async with HostSession(sshd_harness.params(host, user="root")) as session:
            assert (await run(session, ["id", "-u"], timeout=10)).stdout == "0\n"
            closing_at = await start_stubborn_stream_and_close(session, mark)
            assert_all_gone(mark, closing_at)
    finally:
        host.stop()


async def test_killed_sshd_child_kills_the_remote_group(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    mark = new_mark()
    async with (
        HostSession(sshd_harness.params(fake_host), backoff=Backoff(0.05, 0.2)) as session,
        open_stream(session, stubborn_argv(mark)) as stream,
    ):
        running = wait_for_marked(mark, STUBBORN_PROCESSES)
        carrier = serving_sshd(running[0])
        assert carrier is not None
        os.kill(carrier, signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(StreamLostError):
            async for _line in stream:
                pass
        assert_all_gone(mark, killed_at)


async def test_aborted_connection_kills_the_remote_group(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    mark = new_mark()
    async with HostSession(sshd_harness.params(fake_host), backoff=Backoff(0.05, 0.2)) as session:
        conn = await session.wait_up(timeout=10)
        async with open_stream(session, stubborn_argv(mark)) as stream:
            assert len(wait_for_marked(mark, STUBBORN_PROCESSES)) >= STUBBORN_PROCESSES
            conn.abort()
            aborted_at = time.monotonic()
            with pytest.raises(StreamLostError):
                async for _line in stream:
                    pass
        assert_all_gone(mark, aborted_at)


def test_sigkilled_client_leaves_nothing_behind(sshd_harness: SshdHarness, fake_host: FakeHost) -> None:
    mark = new_mark()
    fields = dataclasses.asdict(sshd_harness.params(fake_host))
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, json.dumps(fields), json.dumps(stubborn_argv(mark))],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        running = wait_for_marked(mark, STUBBORN_PROCESSES, timeout=20)
        if len(running) < STUBBORN_PROCESSES and client.poll() is not None and client.stderr is not None:
            pytest.fail(f"client died: {client.stderr.read().decode()}")
        assert len(running) >= STUBBORN_PROCESSES
        client.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        client.wait(timeout=5)
        assert_all_gone(mark, killed_at)
    finally:
        client.kill()
        client.wait()
        if client.stderr is not None:
            client.stderr.close()


async def test_run_timeout_kills_the_command(sshd_harness: SshdHarness, fake_host: FakeHost) -> None:
    mark = new_mark()
    async with HostSession(sshd_harness.params(fake_host)) as session:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await run(session, stubborn_argv(mark), timeout=1.0)
        assert time.monotonic() - started < 1.0 + 2.5
        assert session.channels_in_use == 0
        assert_all_gone(mark, started + 1.0)


async def test_cancelled_reader_closes_its_channel(sshd_harness: SshdHarness, fake_host: FakeHost) -> None:
    mark = new_mark()
    seen: list[str] = []

    async def follow(session: HostSession) -> None:
        async with open_stream(session, stubborn_argv(mark)) as stream:
            async for line in stream:
                seen.append(line)

    async with HostSession(sshd_harness.params(fake_host)) as session:
        reader = asyncio.create_task(follow(session))
        while not seen:
            await asyncio.sleep(0.02)
        assert len(wait_for_marked(mark, STUBBORN_PROCESSES)) >= STUBBORN_PROCESSES
        reader.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert session.channels_in_use == 0
        assert_all_gone(mark, cancelled_at)
