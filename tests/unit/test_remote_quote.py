"""The remote command line: arguments survive the remote shell, and the lifeline wrapper kills what it ran.

The wrapper is run here through the local dash and bash exactly as a remote login shell would run it
(``SHELL -c LINE``), with a pipe standing in for the SSH channel's stdin.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.transport.remote import WRAPPER_NAME, WRAPPER_SCRIPT, quote_argv, remote_command_line

SHELLS = [path for path in (shutil.which("dash"), shutil.which("bash")) if path is not None]
# Text an exec request can carry: anything but NUL, and no lone surrogates (they cannot be encoded).
ARGUMENT = st.text(st.characters(codec="utf-8", exclude_characters="\0"))


def live_group_members(group: int) -> list[int]:
    """Live processes in process group ``group``; zombies do not count (orphans may never be reaped here)."""
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state != "Z":
            members.append(int(entry))
    return members


def wait_for_group_gone(group: int, timeout: float) -> tuple[float, list[int]]:
    started = time.monotonic()
    while True:
        left = live_group_members(group)
        elapsed = time.monotonic() - started
        if not left or elapsed > timeout:
            return elapsed, left
        time.sleep(0.02)


def start_wrapped(shell: str, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [shell, "-c", remote_command_line(argv)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish_with_lifeline_open(process: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    """Read everything and wait, keeping stdin open: closing it (as communicate() does) kills the command."""
    assert process.stdout is not None and process.stderr is not None and process.stdin is not None
    out = process.stdout.read()
    err = process.stderr.read()
    status = process.wait(timeout=10)
    process.stdin.close()
    process.stdout.close()
    process.stderr.close()
    return status, out, err


def test_quote_argv_quotes_only_what_needs_it() -> None:
    assert quote_argv(["nvidia-smi", "dmon", "-s", "pucm"]) == "nvidia-smi dmon -s pucm"
    assert quote_argv(["tail", "-F", "/runs/my run/log.txt"]) == "tail -F '/runs/my run/log.txt'"
    assert quote_argv(["echo", "it's", ""]) == "echo 'it'\"'\"'s' ''"


def test_quote_argv_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="at least one"):
        quote_argv([])
    with pytest.raises(ValueError, match="NUL"):
        quote_argv(["echo", "a\0b"])


def test_command_line_is_the_wrapper_then_the_arguments() -> None:
    line = remote_command_line(["tail", "-F", "log file"])
    assert shlex.split(line) == ["exec", "sh", "-c", WRAPPER_SCRIPT, WRAPPER_NAME, "tail", "-F", "log file"]
    # One line, no single quotes inside: csh-family login shells reject newlines within quotes.
    assert "\n" not in WRAPPER_SCRIPT
    assert "'" not in WRAPPER_SCRIPT


@given(st.lists(ARGUMENT, min_size=1, max_size=6))
def test_any_arguments_split_back_unchanged(argv: list[str]) -> None:
    assert shlex.split(remote_command_line(argv))[5:] == argv


@pytest.mark.parametrize("shell", SHELLS, ids=os.path.basename)
def test_arguments_and_exit_status_survive_a_real_shell(shell: str) -> None:
    awkward = ["a b", "it's", "$HOME", "*", "", "x;y", "`id`", 'q"q', "new\nline", "ünï"]
    process = start_wrapped(shell, ["sh", "-c", 'printf "[%s]" "$@"; echo oops >&2; exit 7', "sh", *awkward])
    status, out, err = finish_with_lifeline_open(process)
    assert status == 7
    assert out.decode() == "".join(f"[{argument}]" for argument in awkward)
    assert err.decode() == "oops\n"


@pytest.mark.parametrize("shell", SHELLS, ids=os.path.basename)
def test_the_command_cannot_read_the_lifeline(shell: str) -> None:
    # `cat` gets /dev/null, so it ends at once although the wrapper's stdin stays open.
    status, out, _ = finish_with_lifeline_open(start_wrapped(shell, ["cat"]))
    assert (status, out) == (0, b"")


@pytest.mark.parametrize("shell", SHELLS, ids=os.path.basename)
def test_end_of_stdin_kills_the_whole_group_even_if_it_ignores_term(shell: str) -> None:
    script = 'echo $$; trap "" HUP TERM PIPE; sleep 600 & sleep 601 | cat & while :; do sleep 0.1; done'
    process = start_wrapped(shell, ["sh", "-c", script])
    assert process.stdout is not None and process.stdin is not None
    group = int(process.stdout.readline())
    deadline = time.monotonic() + 5
    while len(live_group_members(group)) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(live_group_members(group)) >= 4
    process.stdin.close()
    elapsed, left = wait_for_group_gone(group, 5)
    assert left == []
    # TERM is ignored, so it takes the KILL one second later.
    assert 0.8 < elapsed < 3.0
    assert process.wait(timeout=5) == 128 + 9


@pytest.mark.parametrize("shell", SHELLS, ids=os.path.basename)
def test_children_left_behind_are_killed_when_the_command_exits(shell: str) -> None:
    process = start_wrapped(shell, ["sh", "-c", "echo $$; sleep 600 & exit 0"])
    assert process.stdout is not None
    group = int(process.stdout.readline())
    assert process.wait(timeout=10) == 0
    assert wait_for_group_gone(group, 3)[1] == []


@pytest.mark.parametrize("shell", SHELLS, ids=os.path.basename)
def test_without_setsid_the_command_itself_is_still_killed(shell: str, tmp_path: Path) -> None:
    # A host without setsid: only the shell's builtins and a few tools on PATH.
    for tool in ("sh", "sleep"):
        found = shutil.which(tool)
        assert found is not None
        (tmp_path / tool).symlink_to(found)
    process = subprocess.Popen(
        [shell, "-c", remote_command_line(["sh", "-c", "echo $$; exec sleep 600"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"PATH": str(tmp_path)},
    )
    assert process.stdout is not None and process.stdin is not None
    pid = int(process.stdout.readline())
    process.stdin.close()
    assert process.wait(timeout=5) == 128 + 15
    assert not Path(f"/proc/{pid}/cmdline").exists() or Path(f"/proc/{pid}/cmdline").read_bytes() == b""
