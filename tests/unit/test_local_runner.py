"""LocalRunner: real subprocesses, each in its own process group, and nothing they start outlives them.

Every command a test starts carries a mark in its environment (``env MARK=...``), so the test finds it and
all its children in /proc without confusing them with anybody else's processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.sshd_harness import marked_argv, wait_for_marked, wait_until_gone
from trainmon_tui.transport.local_runner import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    LocalRunner,
    LocalStream,
)
from trainmon_tui.transport.runner import CommandRunner
from trainmon_tui.transport.streams import OutputTooLargeError

GRACE_S = 0.3
CLEANUP_LIMIT_S = 3.0
# Ignores HUP, TERM and PIPE, keeps a background sleeper and a pipeline, and ticks every 0.05 s: closing
# its pipes or sending TERM alone never stops it.
STUBBORN_SCRIPT = (
    'trap "" HUP TERM PIPE; sleep 600 & sleep 601 | cat & while :; do echo tick; sleep 0.05; done'
)
# The shell, the sleeper and both ends of the pipeline (the loop's own sleep comes and goes).
STUBBORN_PROCESSES = 4


def new_mark() -> str:
    return uuid.uuid4().hex


def assert_all_gone(mark: str) -> None:
    elapsed, left = wait_until_gone(mark, CLEANUP_LIMIT_S)
    assert left == [], f"still running {elapsed:.1f} s later: {left}"


def process_group_of(pid: int) -> int:
    return os.getpgid(pid)


@pytest.fixture
def runner() -> LocalRunner:
    return LocalRunner(term_grace_s=GRACE_S)


def test_is_a_command_runner(runner: LocalRunner) -> None:
    as_protocol: CommandRunner = runner
    assert as_protocol.is_local is True
    assert as_protocol.name == "local"


async def test_wait_up_returns_at_once(runner: LocalRunner) -> None:
    async with asyncio.timeout(0.5):
        await runner.wait_up(timeout=0.1)


async def test_stream_yields_lines_then_exit_status_and_stderr(runner: LocalRunner) -> None:
    argv = ["sh", "-c", "printf 'one\\ntwo\\r\\nthree'; echo oops >&2; exit 3"]
    async with runner.stream(argv) as stream:
        lines = [line async for line in stream]
    assert lines == ["one", "two", "three"]
    assert stream.exit_status == 3
    assert stream.stderr_tail == "oops\n"


async def test_stream_of_a_missing_command_reads_like_a_shell(runner: LocalRunner) -> None:
    async with runner.stream(["trainmon-no-such-command-xyz", "dmon"]) as stream:
        lines = [line async for line in stream]
    assert lines == []
    assert stream.exit_status == EXIT_NOT_FOUND
    assert stream.stderr_tail == "trainmon-no-such-command-xyz: command not found\n"


async def test_stream_runs_in_its_own_process_group(runner: LocalRunner) -> None:
    mark = new_mark()
    async with runner.stream(marked_argv(mark, ["sh", "-c", "echo ready; sleep 600"])) as stream:
        assert isinstance(stream, LocalStream)
        async for line in stream:
            assert line == "ready"
            break
        assert stream.pid is not None
        assert process_group_of(stream.pid) == stream.pid
        assert process_group_of(stream.pid) != os.getpgrp()
    assert_all_gone(mark)


async def test_leaving_a_stream_kills_a_stubborn_group(runner: LocalRunner) -> None:
    mark = new_mark()
    async with runner.stream(marked_argv(mark, ["sh", "-c", STUBBORN_SCRIPT])) as stream:
        async for line in stream:
            assert line == "tick"
            break
        assert len(wait_for_marked(mark, STUBBORN_PROCESSES)) >= STUBBORN_PROCESSES
        closing = time.monotonic()
    # TERM is ignored, so KILL after the grace period did it.
    assert time.monotonic() - closing >= GRACE_S * 0.9
    assert_all_gone(mark)


async def test_cancelling_the_reader_kills_the_group(runner: LocalRunner) -> None:
    mark = new_mark()
    started = asyncio.Event()

    async def read_forever() -> None:
        async with runner.stream(marked_argv(mark, ["sh", "-c", STUBBORN_SCRIPT])) as stream:
            async for _ in stream:
                started.set()

    task = asyncio.get_running_loop().create_task(read_forever())
    async with asyncio.timeout(5):
        await started.wait()
    assert len(wait_for_marked(mark, STUBBORN_PROCESSES)) >= STUBBORN_PROCESSES
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
    assert_all_gone(mark)


async def test_leftovers_of_an_ended_command_do_not_hold_the_stream(runner: LocalRunner) -> None:
    mark = new_mark()
    # The command ends at once, but a child in its group keeps stdout open.
    argv = marked_argv(mark, ["sh", "-c", "sleep 600 & echo done"])
    async with asyncio.timeout(CLEANUP_LIMIT_S), runner.stream(argv) as stream:
        lines = [line async for line in stream]
    assert lines == ["done"]
    assert stream.exit_status == 0
    assert_all_gone(mark)


async def test_run_returns_status_and_output(runner: LocalRunner) -> None:
    status, out, err = await runner.run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=5)
    assert (status, out, err) == (7, "out\n", "err\n")


async def test_run_reports_death_by_signal_like_a_shell(runner: LocalRunner) -> None:
    result = await runner.run(["sh", "-c", "kill -KILL $$"], timeout=5)
    assert result.exit_status == 128 + signal.SIGKILL


async def test_run_of_missing_and_unexecutable_commands(runner: LocalRunner, tmp_path: Path) -> None:
    missing = await runner.run(["trainmon-no-such-command-xyz"], timeout=5)
    assert missing == (EXIT_NOT_FOUND, "", "trainmon-no-such-command-xyz: command not found\n")
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\necho hi\n")
    not_executable.chmod(0o644)
    result = await runner.run([str(not_executable)], timeout=5)
    assert result.exit_status == EXIT_NOT_EXECUTABLE
    assert result.stdout == ""
    assert "Permission denied" in result.stderr


async def test_run_timeout_kills_the_group(runner: LocalRunner) -> None:
    mark = new_mark()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await runner.run(marked_argv(mark, ["sh", "-c", STUBBORN_SCRIPT]), timeout=0.3)
    assert time.monotonic() - started < 0.3 + GRACE_S + 1.0
    assert_all_gone(mark)


async def test_run_kills_what_the_command_left_behind(runner: LocalRunner) -> None:
    mark = new_mark()
    result = await runner.run(marked_argv(mark, ["sh", "-c", "sleep 600 & echo started"]), timeout=5)
    assert result == (0, "started\n", "")
    assert_all_gone(mark)


async def test_run_output_cap() -> None:
    capped = LocalRunner(term_grace_s=GRACE_S, max_output_bytes=1000)
    mark = new_mark()
    with pytest.raises(OutputTooLargeError):
        await capped.run(marked_argv(mark, ["sh", "-c", "while :; do echo 0123456789; done"]), timeout=5)
    assert_all_gone(mark)
