"""SVG snapshots of the dashboard, the host screen and a rank's log on the scenario cluster at 80x24 and
160x48 (pytest-textual-snapshot).

Deterministic: the store is filled on a fake clock, the wall clock is fixed (tests/ui/scenario.py) and the
age refresh is off, so the same build draws the same screen. Update after a deliberate change of the look
with ``pytest tests/ui/test_snapshots.py --snapshot-update`` and review the SVGs in the diff.
"""

from __future__ import annotations

from typing import Any

from tests.ui import scenario as sc
from tests.ui.test_drilldown import scenario_with_logs
from trainmon_tui.ui.app import TrainmonApp


def _app() -> TrainmonApp:
    scenario = sc.build_scenario()
    return TrainmonApp(scenario.source, title="scenario", clock=scenario.wall_clock, age_refresh_s=None)


def test_dashboard_80x24(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=(80, 24))


def test_dashboard_160x48(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=(160, 48))


def test_dashboard_80x24_chart(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=(80, 24), press=["g"])


def test_help_160x48(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=(160, 48), press=["question_mark"])


def _drill_app() -> TrainmonApp:
    # The scenario with real log text in every llama-7b rank's log (rank 3's ends in a CUDA OOM traceback).
    scenario, _ = scenario_with_logs()
    return TrainmonApp(scenario.source, title="scenario", clock=scenario.wall_clock, age_refresh_s=None)


# Enter on the first host; then down to rank 3's process and Enter: its log, following at the end.
_TO_HOST = ["enter"]
_TO_RANK3_LOG = ["enter", "j", "j", "j", "enter"]


def test_host_80x24(snap_compare: Any) -> None:
    assert snap_compare(_drill_app(), terminal_size=(80, 24), press=_TO_HOST)


def test_host_160x48(snap_compare: Any) -> None:
    assert snap_compare(_drill_app(), terminal_size=(160, 48), press=_TO_HOST)


def test_log_80x24(snap_compare: Any) -> None:
    assert snap_compare(_drill_app(), terminal_size=(80, 24), press=_TO_RANK3_LOG)


def test_log_160x48(snap_compare: Any) -> None:
    assert snap_compare(_drill_app(), terminal_size=(160, 48), press=_TO_RANK3_LOG)
