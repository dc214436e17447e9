"""Alerts in the status report: JSON carries them with their subject and start, Markdown lists them first."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from trainmon_tui.analysis.alerts import AlertKind
from trainmon_tui.model import ProcState
from trainmon_tui.report import ReportOptions, build_report, render_markdown
from trainmon_tui.report_cmd import report_options

from .test_health import Sim, two_rank_cluster

GENERATED = datetime(2026, 2, 24, 20, 0, 0, tzinfo=UTC)


def stalled_cluster() -> tuple[Sim, float]:
    sim = Sim()
    for index in range(20):
        t = 2.0 * index
        two_rank_cluster(sim, t)
        sim.gpu("node-0", 0, t, 100.0)
        sim.step("node-0", 0, t, index + 1)
        sim.step("node-1", 1, t, index + 1)
        sim.check(t)
    for second in range(40, 400, 2):
        two_rank_cluster(sim, float(second))
        sim.gpu("node-0", 0, float(second), 0.0)
        sim.check(float(second))
    return sim, 400.0


def test_json_alerts_carry_subject_severity_and_start() -> None:
    sim, now = stalled_cluster()
    two_rank_cluster(sim, now)
    alerts = sim.check(now)
    snapshot = sim.store.snapshot(now)
    options = report_options(sim.config, 10.0, GENERATED, alerts)
    report = json.loads(json.dumps(build_report(snapshot, options), allow_nan=False))
    by_kind = {alert["kind"]: alert for alert in report["alerts"]}
    assert set(by_kind) == {AlertKind.STALL.value, AlertKind.GPU_IDLE.value}
    stall = by_kind["stall"]
    # Both ranks stopped together: the alert names both, and no single rank as its subject.
    assert stall["severity"] == "critical" and stall["run"] == "llama" and stall["rank"] is None
    assert "stopped first: rank 0, rank 1" in stall["message"]
    # Stopped at t=38 s, 362 s before the snapshot: the wall-clock start counts back from generated_at.
    assert stall["age_s"] == 362.0 and stall["since"] == "2026-02-24T19:53:58+00:00"
    assert stall["resolved_age_s"] is None
    idle = by_kind["gpu_idle"]
    assert (idle["host"], idle["gpu"], idle["severity"]) == ("node-0", 0, "warning")
    # The duty cycle of that GPU: 0 % of the last 10 minutes at >= 50 % SM... but for the first 40 s.
    gpu = report["hosts"][0]["gpus"][0]
    assert gpu["duty_cycle"] == 20 / 200


def test_markdown_lists_alerts_first_with_evidence() -> None:
    sim, now = stalled_cluster()
    two_rank_cluster(sim, now)
    alerts = sim.check(now)
    options = ReportOptions(window_s=10.0, generated_at=GENERATED, alerts=alerts)
    text = render_markdown(build_report(sim.store.snapshot(now), options), options)
    assert text.index("## Alerts") < text.index("## Problems") < text.index("## Hosts")
    assert "- **CRITICAL** stall (run llama): `run llama: no progress for 6m 02s" in text
    assert "since 2026-02-24T19:53:58+00:00, 6m 02s ago" in text
    assert "  - `rank 0 on node-0: step 20" in text


def test_resolved_alerts_are_listed_apart_and_no_alerts_is_said() -> None:
    sim, now = stalled_cluster()
    two_rank_cluster(sim, now)
    sim.check(now)
    sim.ps("node-0", now + 1, [(101, 0, 0, ProcState.RUNNING)])
    sim.step("node-0", 0, now + 1, 21)
    sim.step("node-1", 1, now + 1, 21)
    sim.gpu("node-0", 0, now + 1, 99.0)
    alerts = sim.check(now + 1)
    options = ReportOptions(alerts=alerts)
    report = build_report(sim.store.snapshot(now + 2), options)
    assert [alert["resolved_age_s"] for alert in report["alerts"]] == [1.0, 1.0]
    assert all(alert["since"] is None for alert in report["alerts"])
    text = render_markdown(report, options)
    assert "None active." in text and "Resolved recently:" in text and "resolved 1 s ago" in text
    empty = render_markdown(build_report(sim.store.snapshot(now + 2)))
    assert "## Alerts\n\nNone active.\n" in empty
