"""Health rules, one scenario each: real log text through the real LogParser into a Store, simulated GPU
series and ps listings on a fake clock, and the alerts a HealthMonitor draws from the snapshots."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from trainmon_tui.analysis.alerts import Alert, AlertKind, Severity
from trainmon_tui.analysis.health import DEATH_CONFIRM_S, STRAGGLER_CONFIRM_S, HealthMonitor
from trainmon_tui.analysis.health_rules import SM_FIELD, busy_at_newest_reading, duty_cycle, idle_since
from trainmon_tui.config import parse_config
from trainmon_tui.model import ComputeApp, GpuSample, LogRecord, ProcInfo, ProcState
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.state.series import SeriesView
from trainmon_tui.state.store import HostState, Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "health"
TITAN_TEMPLATE = (
    (FIXTURES / "torchtitan_step_loss_memory_tps_mfu_duplicated_ranks.txt").read_text().splitlines()[0]
)
LOG_EPOCH = datetime(2026, 2, 24, 19, 0, tzinfo=UTC)
RUN = "llama"

BASE_CONFIG = """\
hosts:
  - {name: node-0, address: 10.0.0.10}
  - {name: node-1, address: 10.0.0.11}
runs:
  - name: llama
    hosts: [node-0, node-1]
    logs: ["/data/run/rank*.log"]
    process: "train\\\\.py"
"""


def titan_line(t: float, step: int, loss: float, tps: int = 10_050) -> str:
    """The fixture's torchtitan line with this step, loss, throughput and a log time of ``t``."""
    stamp = (LOG_EPOCH + timedelta(seconds=t)).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    line = re.sub(r"^\[titan\] \S+ \S+", f"[titan] {stamp}", TITAN_TEMPLATE)
    line = re.sub(r"step:\s+\d+", f"step: {step:>2}", line)
    line = re.sub(r"loss:\s+[0-9.]+", f"loss: {loss:8.5f}", line)
    return re.sub(r"tps: [0-9,]+", f"tps: {tps:,}", line)


class Sim:
    """A store, a monitor and the feeds of one simulated cluster, all on one fake clock."""

    def __init__(self, extra: str = "") -> None:
        self.config = parse_config(BASE_CONFIG + extra, "hosts.yaml")
        self.store = Store()
        self.monitor = HealthMonitor(self.config)
        self.parsers: dict[tuple[str, int | None], LogParser] = {}
        self.line_numbers: dict[tuple[str, int | None], int] = {}

    def log(self, host: str, rank: int | None, lines: Iterable[str], t: float) -> None:
        parser = self.parsers.setdefault((host, rank), LogParser(default_rank=rank))
        for line in lines:
            number = self.line_numbers.get((host, rank), 0) + 1
            self.line_numbers[(host, rank)] = number
            records, events = parser.feed(line)
            for record in records:
                self.store.apply_record(RUN, host, record, t)
            for event in events:
                self.store.apply_event(RUN, host, event, t)
            self.monitor.observe_line(RUN, host, line, t=t, rank=rank, line_no=number)

    def finish(self, host: str, rank: int | None, t: float) -> None:
        records, events = self.parsers[(host, rank)].finish()
        for record in records:
            self.store.apply_record(RUN, host, record, t)
        for event in events:
            self.store.apply_event(RUN, host, event, t)

    def step(
        self, host: str, rank: int, t: float, step: int, *, loss: float = 2.0, tps: int = 10_050
    ) -> None:
        self.log(host, rank, [titan_line(t, step, loss, tps)], t)

    def gpu(self, host: str, gpu: int, t: float, sm: float | None, memory: float = 60_000.0) -> None:
        sample = GpuSample(gpu=gpu, sm_pct=sm, fb_used_mib=memory, fb_total_mib=81_559.0)
        self.store.apply_gpu(host, sample, t)

    def ps(self, host: str, t: float, ranks: Sequence[tuple[int, int, int, ProcState]]) -> None:
        """``ranks``: (pid, rank, gpu, state) of each rank process on the host, under a torchrun launcher."""
        launcher = ProcInfo(
            10, 1, ProcState.SLEEPING, 3600, 0.0, 1000, "torchrun --nproc_per_node 2 train.py"
        )
        processes = [launcher]
        for pid, _, _, state in ranks:
            command = (
                "[python] <defunct>" if state is ProcState.ZOMBIE else "python -u train.py --config c.yaml"
            )
            processes.append(ProcInfo(pid, 10, state, 3600, 99.0, 4_000_000, command))
        self.store.apply_processes(host, processes, t, rank_of_pid={pid: rank for pid, rank, _, _ in ranks})
        apps = [
            ComputeApp(pid, gpu_index=gpu) for pid, _, gpu, state in ranks if state is not ProcState.ZOMBIE
        ]
        self.store.apply_compute_apps(host, apps, t)

    def check(self, t: float) -> tuple[Alert, ...]:
        return self.monitor.update(self.store.snapshot(t))


def active(alerts: Iterable[Alert], kind: AlertKind | None = None) -> list[Alert]:
    return [alert for alert in alerts if alert.active and (kind is None or alert.kind == kind)]


def two_rank_cluster(sim: Sim, t: float) -> None:
    sim.ps("node-0", t, [(101, 0, 0, ProcState.RUNNING)])
    sim.ps("node-1", t, [(201, 1, 0, ProcState.RUNNING)])


# ------------------------------------------------------------------------------------------------- stall


def test_a_stall_is_noticed_on_time_and_names_the_rank_that_stopped_first() -> None:
    """Seed 003 checks by hand that "the log was modified less than 5 minutes ago"; this says it on time."""
    sim = Sim()
    step = {0: 0, 1: 0}
    t = 0.0
    while t <= 130.0:
        two_rank_cluster(sim, t)
        for rank, host in ((0, "node-0"), (1, "node-1")):
            # Rank 1 hangs at t=100; rank 0 blocks in the next all-reduce 30 s later.
            if rank == 0 or t <= 100.0:
                step[rank] += 1
                sim.step(host, rank, t, step[rank])
        assert not active(sim.check(t))
        t += 2.0
    for now in range(132, 400, 10):
        two_rank_cluster(sim, float(now))
        assert not active(sim.check(float(now)), AlertKind.STALL), now
    two_rank_cluster(sim, 401.0)
    [stall] = active(sim.check(401.0), AlertKind.STALL)
    assert stall.severity is Severity.CRITICAL
    assert (stall.run, stall.rank, stall.host) == (RUN, 1, "node-1")
    assert stall.since == 100.0
    assert "no progress for 5m 01s" in stall.message and "stopped first: rank 1" in stall.message
    assert "median print interval 2 s" in stall.message
    assert any("rank 1 on node-1: step 51" in line for line in stall.evidence)
    # Both ranks stalled now: still one alert, same key and start, rank 1 still first.
    two_rank_cluster(sim, 460.0)
    [later] = active(sim.check(460.0), AlertKind.STALL)
    assert (later.key, later.since, later.rank) == (stall.key, 100.0, 1)
    assert len([line for line in later.evidence if "last progress" in line]) == 2
    # Training resumes: resolved, and listed as such.
    sim.step("node-0", 0, 470.0, step[0] + 1)
    sim.step("node-1", 1, 470.0, step[1] + 1)
    alerts = sim.check(470.0)
    assert not active(alerts, AlertKind.STALL)
    [resolved] = [alert for alert in alerts if alert.key == stall.key]
    assert resolved.resolved_at == 470.0


def test_a_rank_that_prints_rarely_gets_a_longer_limit() -> None:
    sim = Sim()
    for index in range(6):
        sim.step("node-0", 0, 90.0 * index, index + 1)
        sim.check(90.0 * index)
    # Median interval 90 s: limit max(300, 900) s after the last step at 450 s.
    assert not active(sim.check(450.0 + 899.0), AlertKind.STALL)
    [stall] = active(sim.check(450.0 + 901.0), AlertKind.STALL)
    assert "limit 15m 00s" in stall.message


# --------------------------------------------------------------------------------------------------- GPUs


def _idle_since_from_every_point(
    history: SeriesView, now: float, idle_pct: float, lookback_s: float
) -> float | None:
    """The definition of idle_since, read the slow way: every point of the lookback, newest last."""
    points = [
        point
        for point in history.points(SM_FIELD, now - lookback_s, now, max_points=1200).points
        if point.samples and point.high is not None
    ]
    if not points or points[-1].high is None or points[-1].high > idle_pct:
        return None
    start = points[0].t
    for earlier, later in pairwise(points):
        if earlier.high is not None and earlier.high > idle_pct:
            start = later.t
    return max(start, now - lookback_s)


@pytest.mark.parametrize("interval_s", [0.2, 1.0, 3.0])
def test_a_gpu_busy_at_its_newest_reading_is_one_idle_since_finds_busy(interval_s: float) -> None:
    """The shortcut the monitor takes before idle_since, against reading every point of the lookback: busy,
    idle, flickering and unreadable stretches, readings a hair above the line (the series keeps single
    precision), sampled sparsely and densely (5 Hz: more samples than the raw points asked for, so the
    window is read as buckets), judged at many moments."""
    rng = random.Random(int(interval_s * 10))
    store = Store()
    t = 0.0
    verdicts: list[float | None] = []
    shortcuts = 0
    while t < 1500.0:
        t += interval_s
        phase = int(t // 97) % 4
        if phase == 0:
            sm: float | None = 90.0 + rng.random() * 10
        elif phase == 1:
            sm = rng.choice([0.0, 1.0, 4.0])
        elif phase == 2:
            sm = rng.choice([0.0, 5.0, 5.0 + 1e-9, 5.5, 60.0])
        else:
            sm = rng.choice([None, 2.0, 80.0])
        store.apply_gpu("node-0", GpuSample(gpu=0, sm_pct=sm), t)
        # About 200 moments judged, whatever the sampling interval.
        if rng.random() < 0.13 * interval_s:
            gpu = store.snapshot(t).hosts["node-0"].gpus[0]
            for now in (t, t + 0.5 * interval_s, t + 7.0):
                for lookback_s in (60.0, 600.0):
                    expected = _idle_since_from_every_point(gpu.history, now, 5.0, lookback_s)
                    busy = busy_at_newest_reading(gpu, now, 5.0, lookback_s)
                    if busy:
                        shortcuts += 1
                        assert expected is None, (t, now, lookback_s)
                    assert idle_since(gpu.history, now, 5.0, lookback_s) == expected, (t, now, lookback_s)
                    verdicts.append(expected)
    # Busy and idle moments both came up often, and the shortcut was taken for most busy ones.
    assert sum(verdict is None for verdict in verdicts) > 50
    assert sum(verdict is not None for verdict in verdicts) > 50
    assert shortcuts > sum(verdict is None for verdict in verdicts) / 2


def test_a_short_zero_reading_is_no_idle_alert_but_sustained_zero_is() -> None:
    """Seed 002 explained a 0 % nvidia-smi reading away; a dip is not an alert, 2+ minutes of 0 % are."""
    sim = Sim()
    for second in range(0, 560):
        sm = 0.0 if 300 <= second < 360 else 100.0
        sim.gpu("node-0", 0, float(second), sm)
        if second % 2 == 0:
            two_rank_cluster(sim, float(second))
            assert not active(sim.check(float(second)), AlertKind.GPU_IDLE)
    snapshot = sim.store.snapshot(559.0)
    duty = duty_cycle(snapshot.hosts["node-0"].gpu(0).history, 559.0, 600.0, 50.0)  # type: ignore[union-attr]
    assert duty == pytest.approx(500 / 560)
    for second in range(560, 800):
        sim.gpu("node-0", 0, float(second), 0.0)
        two_rank_cluster(sim, float(second))
        alerts = active(sim.check(float(second)), AlertKind.GPU_IDLE)
        if second <= 680:
            assert not alerts, second
    [idle] = alerts
    assert (idle.host, idle.gpu, idle.rank, idle.run) == ("node-0", 0, 0, RUN)
    assert idle.severity is Severity.WARNING
    assert idle.since == 560.0
    assert "at <= 5 % SM for 3m 59s" in idle.message and "pid 101, rank 0 of llama" in idle.message
    assert any("over the last 10m 00s" in line for line in idle.evidence)
    sim.gpu("node-0", 0, 800.0, 97.0)
    assert not active(sim.check(800.0), AlertKind.GPU_IDLE)


def test_an_idle_gpu_without_a_training_process_is_not_an_alert() -> None:
    sim = Sim()
    for second in range(0, 400, 2):
        sim.gpu("node-0", 3, float(second), 0.0, memory=0.0)
        two_rank_cluster(sim, float(second))
        assert not active(sim.check(float(second)), AlertKind.GPU_IDLE)


def test_memory_imbalance_across_a_runs_ranks() -> None:
    sim = Sim()
    for second in range(0, 120, 2):
        two_rank_cluster(sim, float(second))
        # Seed 000's two GPUs (8543 vs 8529 MiB) are balanced.
        sim.gpu("node-0", 0, float(second), 100.0, memory=8543.0)
        sim.gpu("node-1", 0, float(second), 100.0, memory=8529.0)
        assert not active(sim.check(float(second)), AlertKind.MEMORY_IMBALANCE)
    for second in range(120, 240, 2):
        two_rank_cluster(sim, float(second))
        sim.gpu("node-0", 0, float(second), 100.0, memory=8543.0)
        sim.gpu("node-1", 0, float(second), 100.0, memory=17_400.0)
        sim.check(float(second))
    [imbalance] = active(sim.check(240.0), AlertKind.MEMORY_IMBALANCE)
    assert imbalance.run == RUN and imbalance.severity is Severity.WARNING
    assert "51 % apart" in imbalance.message and "8543 MiB on node-0 GPU 0" in imbalance.message
    # Judged on each GPU's mean over the last minute: at t=134 node-1's mean (8 of 31 samples at 17400 MiB)
    # is 10818 MiB, 21 % above node-0's - the first time the gap passes 20 %. Means are taken again every
    # 10 s (first at t=0), so the first judgement to see it is t=140.
    assert imbalance.since == 140.0


# ---------------------------------------------------------------------------------------------- processes


def test_a_rank_process_that_dies_while_the_run_goes_on() -> None:
    sim = Sim()
    for second in range(0, 20, 2):
        two_rank_cluster(sim, float(second))
        sim.check(float(second))
    # Rank 1 becomes a zombie; rank 0 lives on.
    for second in range(20, 20 + int(DEATH_CONFIRM_S), 2):
        sim.ps("node-0", float(second), [(101, 0, 0, ProcState.RUNNING)])
        sim.ps("node-1", float(second), [(201, 1, 0, ProcState.ZOMBIE)])
        assert not active(sim.check(float(second)), AlertKind.PROCESS_DIED)
    sim.ps("node-0", 52.0, [(101, 0, 0, ProcState.RUNNING)])
    sim.ps("node-1", 52.0, [])
    [died] = active(sim.check(52.0), AlertKind.PROCESS_DIED)
    assert (died.host, died.rank, died.run, died.gpu) == ("node-1", 1, RUN, 0)
    assert died.severity is Severity.CRITICAL and died.since == 20.0
    assert "pid 201" in died.message and "defunct" in died.message
    # Restarted: a new process holds rank 1 again.
    sim.ps("node-1", 60.0, [(202, 1, 0, ProcState.RUNNING)])
    assert not active(sim.check(60.0), AlertKind.PROCESS_DIED)


def test_all_ranks_ending_together_is_no_death() -> None:
    sim = Sim()
    two_rank_cluster(sim, 0.0)
    sim.check(0.0)
    for second in range(2, 80, 2):
        sim.ps("node-0", float(second), [])
        sim.ps("node-1", float(second), [])
        assert not active(sim.check(float(second)))


# --------------------------------------------------------------------------------------------- stragglers


def test_a_rank_20_percent_slower_than_the_median_is_a_straggler() -> None:
    sim = Sim()
    periods = {0: 1.0, 1: 1.0, 2: 1.5}
    for rank, period in periods.items():
        for index in range(30):
            t = index * period
            sim.step("node-0" if rank < 2 else "node-1", rank, t, index + 1)
    # Slower, but not yet for STRAGGLER_CONFIRM_S: rates swing while a rank starts or a backlog is read.
    assert not active(sim.check(45.0), AlertKind.STRAGGLER)
    assert not active(sim.check(45.0 + STRAGGLER_CONFIRM_S - 1.0), AlertKind.STRAGGLER)
    [straggler] = active(sim.check(45.0 + STRAGGLER_CONFIRM_S), AlertKind.STRAGGLER)
    assert (straggler.rank, straggler.host, straggler.severity) == (2, "node-1", Severity.WARNING)
    assert straggler.since == 45.0
    assert "33 % slower than the median rank (0.6667 vs 1 steps/s" in straggler.message


def test_a_backlog_arriving_in_chunks_is_no_straggler() -> None:
    """Lines without timestamps are timed by arrival. At start ``tail -n`` replays each rank's backlog,
    which comes in network chunks a millisecond apart: rank 0's in one chunk, the others' in forty. Read as
    print intervals those chunks are thousands of steps per second, and rank 0 looked 99 % slower (seen in
    the demo)."""
    sim = Sim()
    line = 0
    for rank in range(4):
        chunks = 1 if rank == 0 else 40
        for step in range(1, 201):
            line += 1
            arrival = 0.001 * ((step - 1) * chunks // 200)
            sim.store.apply_record(RUN, "node-0", LogRecord(line, rank, step, 10_000), arrival)
    for second in range(1, 31):
        for rank in range(4):
            line += 1
            sim.store.apply_record(RUN, "node-0", LogRecord(line, rank, 200 + second, 10_000), float(second))
        assert not active(sim.check(float(second)), AlertKind.STRAGGLER), second
    # The rule still sees a real straggler: rank 3 at 0.7 step/s from here on.
    for second in range(31, 121):
        for rank in range(3):
            line += 1
            sim.store.apply_record(RUN, "node-0", LogRecord(line, rank, 200 + second, 10_000), float(second))
    for printed in range(1, 63):
        line += 1
        sim.store.apply_record(RUN, "node-0", LogRecord(line, 3, 230 + printed, 10_000), 30.0 + printed / 0.7)
    assert not active(sim.check(120.0), AlertKind.STRAGGLER)
    [straggler] = active(sim.check(120.0 + STRAGGLER_CONFIRM_S), AlertKind.STRAGGLER)
    assert straggler.rank == 3 and "% slower than the median rank (0.7" in straggler.message


# -------------------------------------------------------------------------------------------- log events

EVENT_CASES = [
    ("nccl_watchdog_timeout_rankN_prefix_glog_pt25.txt", AlertKind.NCCL_TIMEOUT, 1, 1, "Watchdog caught"),
    ("cuda_oom_pt22_expandable_segments_hint.txt", AlertKind.OOM, None, 1, "CUDA out of memory"),
    ("childfailederror_glog_E_prefix_py312_exitcode9.txt", AlertKind.CHILD_FAILED, None, 1, "exitcode: -9"),
    ("childfailederror_glog_E_prefix_py312_exitcode9.txt", AlertKind.KILLED, None, 1, "exitcode: -9"),
    (
        "torchrun_tee3_role_host_rank_prefix_interleaved_traceback.txt",
        AlertKind.TRACEBACK,
        2,
        11,
        "AttributeError",
    ),
    ("nccl_unhandled_system_error_barrier.txt", AlertKind.NCCL_ERROR, None, 2, "NCCL error in"),
    ("nanogpt_iter_loss_mfu_nan_after_ckpt_quoted.txt", AlertKind.NAN, None, 23, "loss nan"),
]


@pytest.mark.parametrize(("fixture", "kind", "rank", "line", "text"), EVENT_CASES)
def test_log_events_alert_on_their_host_and_rank(
    fixture: str, kind: AlertKind, rank: int | None, line: int, text: str
) -> None:
    sim = Sim()
    sim.log("node-1", None, (FIXTURES / fixture).read_text().splitlines(), 50.0)
    sim.finish("node-1", None, 50.0)
    alerts = active(sim.check(55.0), kind)
    [alert] = [alert for alert in alerts if alert.rank == rank]
    assert (alert.host, alert.run, alert.severity) == ("node-1", RUN, Severity.CRITICAL)
    assert alert.since == 50.0 and alert.log_line == line
    assert text in alert.message and text in alert.evidence[0]
    # Raised once: the same alert, same start, on the next look.
    again = [other for other in active(sim.check(60.0), kind) if other.key == alert.key]
    assert [(other.since, other.message) for other in again] == [(50.0, alert.message)]


def test_a_log_event_resolves_when_its_rank_progresses_again() -> None:
    sim = Sim()
    for rank in (0, 1, 2):
        sim.step("node-0", rank, 10.0, 1)
    lines = (FIXTURES / "nccl_watchdog_timeout_rankN_prefix_glog_pt25.txt").read_text().splitlines()
    sim.log("node-0", None, lines, 20.0)
    ranks = sorted(alert.rank or 0 for alert in active(sim.check(20.0), AlertKind.NCCL_TIMEOUT))
    assert ranks == [0, 1, 2]
    sim.step("node-0", 1, 30.0, 2)
    still = sorted(alert.rank or 0 for alert in active(sim.check(30.0), AlertKind.NCCL_TIMEOUT))
    assert still == [0, 2]


def test_an_event_the_rank_got_past_before_the_first_look_is_listed_as_resolved() -> None:
    sim = Sim()
    lines = (FIXTURES / "nccl_watchdog_timeout_rankN_prefix_glog_pt25.txt").read_text().splitlines()
    sim.log("node-0", None, lines, 20.0)
    # Rank 1 went on before anyone looked (a replayed tail, a report that samples once a second): the
    # timeout is history, not a current failure, and it is not hidden either.
    sim.step("node-0", 1, 21.0, 2)
    first = [alert for alert in sim.check(22.0) if alert.kind == AlertKind.NCCL_TIMEOUT and alert.rank == 1]
    assert [(alert.active, alert.since, alert.resolved_at) for alert in first] == [(False, 20.0, 22.0)]
    assert (
        first[0].log_line is not None and "Watchdog caught collective operation timeout" in first[0].message
    )
    later = [alert for alert in sim.check(23.0) if alert.kind == AlertKind.NCCL_TIMEOUT and alert.rank == 1]
    assert later == first


# ------------------------------------------------------------------------------------------ loss and metrics


def test_a_loss_spike_is_raised_once_and_resolved_when_the_loss_is_back() -> None:
    sim = Sim()
    noise = random.Random(5)
    for step in range(1, 200):
        loss = 2.5 * math.exp(-step / 400) * (1.0 + 0.08 * noise.gauss(0.0, 1.0))
        sim.step("node-0", 0, float(step), step, loss=loss)
        assert not active(sim.check(float(step)), AlertKind.LOSS_SPIKE), step
    sim.step("node-0", 0, 200.0, 200, loss=9.5)
    [spike] = active(sim.check(200.0), AlertKind.LOSS_SPIKE)
    assert spike.since == 200.0 and spike.severity is Severity.WARNING and spike.rank == 0
    assert "loss 9.5 jumped to" in spike.message
    sim.step("node-0", 0, 201.0, 201, loss=7.0)
    [same] = active(sim.check(201.0), AlertKind.LOSS_SPIKE)
    assert same.since == 200.0 and "highest since 9.5, latest 7" in same.message
    sim.step("node-0", 0, 202.0, 202, loss=1.5)
    assert not active(sim.check(202.0), AlertKind.LOSS_SPIKE)


def eval_line(corr: float, epoch: int) -> str:
    return f"{{'eval_loss': 566.57, 'eval_fmri_corr': {corr}, 'eval_runtime': 12.1, 'epoch': {epoch}.0}}"


PLATEAU_CORR = "    plateau: {metric: eval_fmri_corr, mode: max}\n"


def test_a_metric_stuck_near_zero_is_a_plateau() -> None:
    """Seed 001: "fMRI correlation near zero (expected for early epochs)" through 29 epochs."""
    sim = Sim(PLATEAU_CORR)
    noise = random.Random(1)
    for epoch in range(1, 30):
        sim.log("node-0", None, [eval_line(round(0.0006 * noise.gauss(0.0, 1.0), 5), epoch)], 240.0 * epoch)
    [plateau] = active(sim.check(240.0 * 29), AlertKind.PLATEAU)
    assert plateau.severity is Severity.INFO and plateau.run == RUN
    assert "eval_fmri_corr has not improved (higher is better)" in plateau.message


def test_an_improving_metric_is_no_plateau() -> None:
    sim = Sim(PLATEAU_CORR)
    noise = random.Random(1)
    for epoch in range(1, 30):
        corr = 0.01 * epoch + 0.002 * noise.gauss(0.0, 1.0)
        sim.log("node-0", None, [eval_line(round(corr, 5), epoch)], 240.0 * epoch)
        assert not active(sim.check(240.0 * epoch), AlertKind.PLATEAU)


def test_throughput_below_target() -> None:
    sim = Sim("    target_throughput: 400000\n    throughput_metric: tps\n")
    for index in range(400):
        sim.step("node-0", 0, float(index), index + 1, tps=10_050 + index % 7)
        alerts = active(sim.check(float(index)), AlertKind.THROUGHPUT_LOW)
        if index < 300:
            assert not alerts
    [slow] = alerts
    assert slow.severity is Severity.WARNING
    assert "throughput 1.005e+04 is 97 % below its target 4e+05 tps" in slow.message


# ------------------------------------------------------------------------------------------------- hosts


def test_host_down_and_stale() -> None:
    sim = Sim()
    sim.store.set_host_status("node-0", HostState.UP, 0.0)
    sim.store.set_host_status("node-1", HostState.UP, 0.0)
    sim.gpu("node-0", 0, 0.0, 100.0)
    sim.gpu("node-1", 0, 0.0, 100.0)
    sim.store.set_host_status("node-1", HostState.DOWN, 5.0, "keepalive timeout")
    for second in range(1, 30):
        sim.gpu("node-0", 0, float(second), 100.0)
    alerts = sim.check(30.0)
    [down] = active(alerts, AlertKind.HOST_DOWN)
    assert (down.host, down.since, down.severity) == ("node-1", 5.0, Severity.CRITICAL)
    assert "keepalive timeout" in down.message
    assert not active(alerts, AlertKind.HOST_STALE)
    [stale] = active(sim.check(61.0), AlertKind.HOST_STALE)
    assert (stale.host, stale.since, stale.severity) == ("node-0", 29.0, Severity.WARNING)
    sim.store.set_host_status("node-1", HostState.UP, 62.0)
    sim.gpu("node-0", 0, 62.0, 100.0)
    sim.gpu("node-1", 0, 62.0, 100.0)
    assert not active(sim.check(62.0))


# ----------------------------------------------------------------------------------------- user patterns

DEGENERACY = (
    "    alerts:\n"
    "      - {name: degeneracy_resets, pattern: 'DEGENERACY-GUARD.*reset applied', max_per_epoch: 10}\n"
)


def guard_line(epoch: int, batch: int) -> str:
    return f"Epoch {epoch}/20 batch {batch}: [DEGENERACY-GUARD] head variance 3.1e-09 < 1e-08, reset applied"


def test_a_user_pattern_over_its_limit_per_epoch() -> None:
    """Seed 003: grep -c "DEGENERACY-GUARD.*reset applied"; expected 1-3 per epoch, a warning above 10."""
    sim = Sim(DEGENERACY)
    sim.log("node-0", 0, ["Epoch 1/20"], 0.0)
    sim.check(0.0)
    for batch in range(3):
        sim.log("node-0", 0, [guard_line(1, batch)], 10.0 + batch)
    assert not active(sim.check(20.0), AlertKind.PATTERN)
    sim.log("node-0", 0, ["Epoch 2/20"], 30.0)
    sim.check(30.0)
    for batch in range(12):
        sim.log("node-0", 0, [guard_line(2, batch)], 40.0 + batch)
    [pattern] = active(sim.check(60.0), AlertKind.PATTERN)
    assert (pattern.host, pattern.rank, pattern.severity, pattern.since) == (
        "node-0",
        0,
        Severity.WARNING,
        50.0,
    )
    assert "degeneracy_resets matched 12 times in epoch 2" in pattern.message
    assert pattern.log_line is not None and "reset applied" in pattern.evidence[-1]
    sim.log("node-0", 0, ["Epoch 3/20"], 70.0)
    assert not active(sim.check(70.0), AlertKind.PATTERN)


def test_an_api_key_in_a_log_line_is_masked_in_the_alert() -> None:
    """Seed 004 pasted a W&B key into a status report; an alert must never carry one."""
    key = "0123456789abcdef0123456789abcdef01234567"
    sim = Sim("    alerts:\n      - {name: wandb_login, pattern: 'wandb', severity: info}\n")
    sim.log(
        "node-0", 0, [f"wandb: Appending key for api.wandb.ai to your netrc file: WANDB_API_KEY={key}"], 5.0
    )
    [alert] = active(sim.check(5.0), AlertKind.PATTERN)
    assert alert.severity is Severity.INFO
    assert key not in alert.message and all(key not in line for line in alert.evidence)
    assert "WANDB_API_KEY=***" in alert.message


def test_control_sequences_in_log_text_are_inert_in_alerts() -> None:
    sim = Sim("    alerts:\n      - {name: boom, pattern: 'boom'}\n")
    sim.log("node-0", 0, ["\x1b]52;c;ZWNobyBoaQ==\x07boom \x1b[31mred\x1b[0m"], 1.0)
    [alert] = active(sim.check(1.0), AlertKind.PATTERN)
    assert "\x1b" not in alert.message and "boom red" in alert.message


# ------------------------------------------------------------------------------------------- false alarms


def test_a_healthy_hour_raises_nothing() -> None:
    """Two ranks on two hosts for an hour, with eval every 10 min (90 s at 20-40 % SM), data pauses (40 s
    at 0 %), checkpoint saves every 20 min (100 s at 0 % and no steps) and a noisy loss."""
    sim = Sim("    plateau: {metric: val_loss, mode: min}\n")
    noise = random.Random(7)
    step = 0
    next_step = 0.0
    raised: list[Alert] = []
    for second in range(0, 3600):
        t = float(second)
        phase = second % 1200
        evaluating = 590 <= second % 600 < 680 and second > 0
        data_pause = 400 <= second % 420 < 440
        checkpoint = 1000 <= phase < 1100
        paused = evaluating or data_pause or checkpoint
        busy = 95.0 + 5.0 * noise.random()
        sm = (30.0 + 10.0 * noise.random() if evaluating else 0.0) if paused else busy
        for host in ("node-0", "node-1"):
            sim.gpu(host, 0, t, sm, memory=60_000.0 + 800.0 * noise.random())
        if not paused and t >= next_step:
            step += 1
            loss = (2.5 * math.exp(-step / 1500) + 0.6) * math.exp(0.12 * noise.gauss(0.0, 1.0))
            sim.step("node-0", 0, t, step, loss=loss)
            sim.step("node-1", 1, t + 0.05 * noise.random(), step, loss=loss)
            next_step = t + 0.9 + 0.2 * noise.random()
        if second % 600 == 680 - 600 and second > 600:
            val = 2.5 * math.exp(-step / 1500) + 0.7
            sim.log("node-0", None, [f"{{'eval_loss': {val:.4f}, 'epoch': {second / 3600:.2f}}}"], t)
        if second % 2 == 0:
            two_rank_cluster(sim, t)
            raised += active(sim.check(t))
    assert step > 1900
    assert raised == []
