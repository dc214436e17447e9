"""The program's entry point settles the garbage collector; code that tests call keeps CPython's defaults."""

from __future__ import annotations

import gc
import io
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

from trainmon_tui import cli, gc_policy

LOG = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "logs"
    / "nanogpt"
    / "nanogpt_iter_loss_mfu_nan_after_ckpt_quoted.txt"
)


def test_the_entry_point_raises_the_thresholds_and_freezes_what_is_loaded() -> None:
    probe = (
        "import gc, io, sys, contextlib\n"
        "from trainmon_tui import cli\n"
        f"sys.argv = ['trainmon-tui', 'parse-log', {str(LOG)!r}]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    status = cli.entry()\n"
        "print(status, gc.get_threshold(), gc.get_freeze_count())\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split(maxsplit=1)
    status, rest = int(shown[0]), shown[1]
    thresholds, frozen = rest.rsplit(" ", 1)
    assert status == 0
    assert thresholds == str((gc_policy.YOUNG_THRESHOLD, gc_policy.MIDDLE_THRESHOLD, gc_policy.OLD_THRESHOLD))
    # Every module, class and function loaded for the command: thousands of objects.
    assert int(frozen) > 10_000


def test_main_called_from_code_leaves_the_collector_alone() -> None:
    before = (gc.get_threshold(), gc.get_freeze_count())
    with redirect_stdout(io.StringIO()):
        assert cli.main(["parse-log", str(LOG)]) == 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
