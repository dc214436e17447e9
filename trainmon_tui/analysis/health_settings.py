"""The thresholds of the health rules, as frozen values: built-in defaults, overridden per run in hosts.yaml.

Pure data (standard library only): :mod:`trainmon_tui.config` builds these from YAML and
:mod:`trainmon_tui.analysis.health` reads them, so the analysis layer never needs YAML. Each default is
chosen so that a healthy run raises nothing (see ``tests/unit/test_health*.py``) and is explained here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from trainmon_tui.analysis.alerts import Severity

# A run whose step has not moved for 5 minutes is stalled even if it used to print rarely; a run that prints
# every 90 s needs 10 x 90 s = 15 min of silence first. Checkpoint and eval pauses of a few minutes pass.
DEFAULT_STALL_MIN_S = 300.0
DEFAULT_STALL_FACTOR = 10.0
# "Idle" is at most 5 % SM for more than 2 minutes: shorter dips are eval, data loading or graph building.
DEFAULT_IDLE_SM_PCT = 5.0
DEFAULT_IDLE_AFTER_S = 120.0
# Duty cycle: the share of the last 10 minutes a GPU spent at 50 % SM or more.
DEFAULT_BUSY_SM_PCT = 50.0
DEFAULT_DUTY_WINDOW_S = 600.0
# A rank progressing 20 % slower than the run's median rank.
DEFAULT_STRAGGLER_PCT = 20.0
# A loss value is a spike when it is both 1.5 x its smoothed trend and 6 robust standard deviations above it:
# the first keeps a very smooth loss from alerting on a tiny wiggle, the second keeps a noisy one quiet.
DEFAULT_SPIKE_FACTOR = 1.5
DEFAULT_SPIKE_SIGMAS = 6.0
# GPU memory of a run's ranks more than 20 % apart (min vs max).
DEFAULT_MEMORY_IMBALANCE_PCT = 20.0
# A host that is up but sent nothing for 30 s (ps every 2 s, GPUs every second) is stale.
DEFAULT_STALE_AFTER_S = 30.0
# Throughput is judged on the median of the last 5 minutes, so an eval pause does not count as slow.
DEFAULT_THROUGHPUT_WINDOW_S = 300.0


class PlateauMode(StrEnum):
    """Which way is better for a plateau metric: ``min`` (a loss) or ``max`` (an accuracy, a correlation)."""

    MIN = "min"
    MAX = "max"


@dataclass(frozen=True, slots=True)
class PlateauSpec:
    """The metric whose improvement matters. ``window_s`` None: the last quarter of the metric's history.
    An improvement counts when it is more than ``min_delta`` and more than twice the metric's own noise."""

    metric: str = "val_loss"
    mode: PlateauMode = PlateauMode.MIN
    window_s: float | None = None
    min_delta: float = 0.0


@dataclass(frozen=True, slots=True)
class PatternRule:
    """A user alert: a line matching ``pattern`` raises ``name``; with ``max_per_epoch``, only more matches
    than that within one epoch of one rank do."""

    name: str
    pattern: re.Pattern[str]
    severity: Severity = Severity.WARNING
    max_per_epoch: int | None = None


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Every rule threshold for one run (the defaults above unless hosts.yaml says otherwise)."""

    stall_min_s: float = DEFAULT_STALL_MIN_S
    stall_factor: float = DEFAULT_STALL_FACTOR
    idle_sm_pct: float = DEFAULT_IDLE_SM_PCT
    idle_after_s: float = DEFAULT_IDLE_AFTER_S
    busy_sm_pct: float = DEFAULT_BUSY_SM_PCT
    duty_window_s: float = DEFAULT_DUTY_WINDOW_S
    straggler_pct: float = DEFAULT_STRAGGLER_PCT
    spike_factor: float = DEFAULT_SPIKE_FACTOR
    spike_sigmas: float = DEFAULT_SPIKE_SIGMAS
    memory_imbalance_pct: float = DEFAULT_MEMORY_IMBALANCE_PCT
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    # Below this many units per second (the log's steps, or ``throughput_metric``'s own unit): None, no rule.
    target_throughput: float | None = None
    throughput_metric: str | None = None
    throughput_window_s: float = DEFAULT_THROUGHPUT_WINDOW_S
    plateau: PlateauSpec = field(default_factory=PlateauSpec)
    patterns: tuple[PatternRule, ...] = ()
    # Alert kinds (AlertKind values) switched off for this run.
    disabled: frozenset[str] = frozenset()

    def enabled(self, kind: str) -> bool:
        return kind not in self.disabled


DEFAULT_SETTINGS = HealthSettings()
