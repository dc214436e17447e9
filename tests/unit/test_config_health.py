"""hosts.yaml health keys: per-run rule overrides, plateau, throughput target and user alerts, each mistake
reported as one `file:line: message`."""

from __future__ import annotations

import pytest

from trainmon_tui.analysis.alerts import Severity
from trainmon_tui.analysis.health_settings import DEFAULT_SETTINGS, HealthSettings, PlateauMode
from trainmon_tui.config import ConfigError, parse_config

HEAD = "hosts: [{name: a}]\nruns:\n  - name: r\n    logs: [x]\n"


def run_health(extra: str) -> HealthSettings:
    return parse_config(HEAD + extra, "hosts.yaml").runs[0].health


def error_of(extra: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + extra, "hosts.yaml")
    return str(caught.value)


def test_a_run_without_health_keys_gets_the_defaults() -> None:
    assert run_health("") == DEFAULT_SETTINGS


def test_every_override_is_read() -> None:
    settings = run_health(
        "    target_throughput: 400000\n"
        "    throughput_metric: tps\n"
        "    plateau: {metric: val_acc, mode: max, window: 1800, min_delta: 0.001}\n"
        "    alerts:\n"
        "      - {name: resets, pattern: 'DEGENERACY-GUARD.*reset applied', max_per_epoch: 10}\n"
        "      - {name: wandb, pattern: wandb, severity: info}\n"
        "    health: {stall_after: 600, stall_factor: 20, idle_sm_pct: 2, idle_after: 300, busy_sm_pct: 60,\n"
        "             duty_window: 900, straggler_pct: 30, spike_factor: 2, spike_sigmas: 8,\n"
        "             memory_imbalance_pct: 25, stale_after: 60, throughput_window: 120,\n"
        "             disable: [plateau, straggler]}\n"
    )
    assert (settings.target_throughput, settings.throughput_metric) == (400_000.0, "tps")
    assert (settings.plateau.metric, settings.plateau.mode) == ("val_acc", PlateauMode.MAX)
    assert (settings.plateau.window_s, settings.plateau.min_delta) == (1800.0, 0.001)
    [resets, wandb] = settings.patterns
    assert resets.pattern.search("[DEGENERACY-GUARD] head reset applied") is not None
    assert (resets.max_per_epoch, resets.severity) == (10, Severity.WARNING)
    assert (wandb.max_per_epoch, wandb.severity) == (None, Severity.INFO)
    assert (settings.stall_min_s, settings.stall_factor, settings.idle_sm_pct) == (600.0, 20.0, 2.0)
    assert (settings.idle_after_s, settings.busy_sm_pct, settings.duty_window_s) == (300.0, 60.0, 900.0)
    assert (settings.straggler_pct, settings.spike_factor, settings.spike_sigmas) == (30.0, 2.0, 8.0)
    assert (settings.memory_imbalance_pct, settings.stale_after_s, settings.throughput_window_s) == (
        25.0,
        60.0,
        120.0,
    )
    assert settings.disabled == frozenset({"plateau", "straggler"})
    assert not settings.enabled("plateau") and settings.enabled("stall")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "    health: {disable: [stal]}\n",
            "hosts.yaml:5: run 'r': `health`: `disable[0]` must be one of stall, gpu_idle,",
        ),
        (
            "    health: {idle_sm_pct: 101}\n",
            "hosts.yaml:5: run 'r': `health`: `idle_sm_pct` must be 100 or less, got 101",
        ),
        (
            "    health: {straggler: 3}\n",
            "hosts.yaml:5: run 'r': `health`: unknown key `straggler` (did you mean `straggler_pct`?)",
        ),
        (
            "    health: {spike_factor: 0.5}\n",
            "hosts.yaml:5: run 'r': `health`: `spike_factor` must be 1 or more, got 0.5",
        ),
        (
            "    health: {stall_after: -1}\n",
            "hosts.yaml:5: run 'r': `health`: `stall_after` must be more than 0 seconds",
        ),
        (
            "    plateau: {metric: x}\n",
            "hosts.yaml:5: run 'r': `plateau`: missing required key `mode`: min (lower is better) or max",
        ),
        (
            "    plateau: {metric: x, mode: up}\n",
            "hosts.yaml:5: run 'r': `plateau`: `mode` must be one of min, max, got 'up'",
        ),
        (
            "    throughput_metric: tps\n",
            "hosts.yaml:5: run 'r': `throughput_metric` without `target_throughput`",
        ),
        (
            "    target_throughput: 0\n",
            "hosts.yaml:5: run 'r': `target_throughput` must be more than 0, got 0",
        ),
        (
            "    target_throughput: .nan\n",
            "hosts.yaml:5: run 'r': `target_throughput` must be a finite number",
        ),
        (
            "    alerts:\n      - {name: a, pattern: '('}\n",
            "hosts.yaml:6: run 'r': alert 'a': `pattern` is not a valid regular expression",
        ),
        (
            "    alerts:\n      - {name: a, pattern: x}\n      - {name: a, pattern: y}\n",
            "hosts.yaml:7: run 'r': alert name 'a' is used twice (first at line 6)",
        ),
        (
            "    alerts:\n      - {name: a, pattern: x, severity: loud}\n",
            "hosts.yaml:6: run 'r': alert 'a': `severity` must be one of critical, warning, info, got 'loud'",
        ),
        (
            "    alerts:\n      - {name: a, pattern: x, max_per_epoch: -1}\n",
            "hosts.yaml:6: run 'r': alert 'a': `max_per_epoch` must be 0 or more, got -1",
        ),
    ],
)
def test_mistakes_name_the_line(extra: str, message: str) -> None:
    assert error_of(extra).startswith(message)
