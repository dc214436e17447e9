"""The real program in a real terminal: `trainmon-tui --demo` in a detached tmux session at 120x40.

Captures the pane once the dashboard is up and checks what a person would see (the fleet with its hosts and
GPUs, the runs, the alerts panel, the footer), that no host text drove the terminal (the pane title is
untouched), then presses `q` and checks the program exits with status 0. Without the demo module it runs on
this machine (no --hosts) and checks the local host instead. Skipped where tmux is not installed.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")
PROGRAM = Path(sys.executable).parent / "trainmon-tui"
HAS_DEMO = importlib.util.find_spec("trainmon_tui.demo") is not None


def _tmux(*args: str) -> str:
    assert TMUX is not None
    return subprocess.run([TMUX, *args], check=True, capture_output=True, text=True).stdout


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


@pytest.mark.timeout(120)
def test_dashboard_in_tmux_shows_the_fleet_and_quits_on_q(tmp_path: Path) -> None:
    session = f"trainmon-test-{uuid.uuid4().hex[:8]}"
    status_file = tmp_path / "status"
    mode = "--demo" if HAS_DEMO else ""
    # COLUMNS/LINES inherited from the test runner would override the pane's real size.
    command = (
        f"env -u COLUMNS -u LINES XDG_STATE_HOME={tmp_path / 'state'} TERM=tmux-256color "
        f"{PROGRAM} {mode}; echo $? > {status_file}"
    )
    _tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)
    try:

        def screen() -> str:
            return _tmux("capture-pane", "-p", "-t", session)

        expected_host = "node-0" if HAS_DEMO else "local"
        assert _wait_for(lambda: expected_host in screen() and " GPUs" in screen(), 60), screen()
        if HAS_DEMO:
            assert _wait_for(lambda: " up " in screen() and "step/s" in screen(), 30), screen()
        text = screen()
        lines = text.splitlines()
        assert len(lines) == 40 and max(len(line) for line in lines) <= 120
        assert "─Fleet" in text and "─Runs" in text and "─Alerts" in text
        assert "q Quit" in text and "? Help" in text
        assert "\x1b" not in text
        if HAS_DEMO:
            assert "▾ node-0" in text and "°C" in text and "loss" in text
        # The wide layout (two columns) is in use: the runs panel starts right of the fleet.
        assert "─Fleet" in lines[1] and "Runs" in lines[1]
        _tmux("send-keys", "-t", session, "q")
        assert _wait_for(status_file.exists, 20), screen()
        assert status_file.read_text().strip() == "0"
    finally:
        subprocess.run([TMUX or "tmux", "kill-session", "-t", session], capture_output=True, check=False)
