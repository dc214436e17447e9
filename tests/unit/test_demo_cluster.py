"""The demo simulation: deterministic from its seed, and it plays every behaviour the dashboard must show.

Times are simulated seconds (0 = demo start); nothing here waits or reads a clock.
"""

from __future__ import annotations

import itertools
import statistics

import pytest

from trainmon_tui.demo.cluster import (
    _K_GRAD,
    _K_LOSS,
    BIG_CLUSTER_HOSTS,
    DropSchedule,
    Phase,
    Rank,
    Simulation,
)
from trainmon_tui.demo.logs import FileGrowth, LogCursor, RankLog, last_lines, read_due
from trainmon_tui.demo.noise import normal
from trainmon_tui.model import EventKind
from trainmon_tui.parsers.trainlog.engine import parse_lines

WALL_EPOCH = 1_750_000_000.0


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return Simulation(seed=7)


def _first_eval_step_after(sim: Simulation, run_name: str, rank: int, t: float) -> int:
    entry = sim.rank(run_name, rank)
    every = entry.run.eval_every
    return (entry.steps_done(t) // every + 1) * every


def test_topology_is_three_hosts_of_eight_gpus_with_two_runs(sim: Simulation) -> None:
    assert [host.name for host in sim.hosts] == ["node-0", "node-1", "node-2"]
    assert all(len(host.gpus) == 8 for host in sim.hosts)
    llama, vit = sim.runs
    assert (llama.name, llama.world_size, llama.host_indexes) == ("llama-7b", 16, (0, 1))
    assert (vit.name, vit.world_size, vit.host_indexes) == ("vit-sweep", 7, (2,))
    assert len({gpu.uuid for host in sim.hosts for gpu in host.gpus}) == 24


def test_more_hosts_add_ranks_to_the_first_run() -> None:
    big = Simulation(64, 8, seed=1)
    assert big.hosts[0].name == "node-00" and big.hosts[-1].name == "node-63"
    assert big.runs[0].world_size == 63 * 8
    assert [host.name for host in big.hosts if host.drops] == ["node-63"]


def test_same_seed_same_cluster_other_seed_other_cluster(sim: Simulation) -> None:
    again = Simulation(seed=7)
    other = Simulation(seed=8)
    for t in (0.0, 37.5, 1234.0):
        for host in (0, 2):
            assert sim.gpu_readings(sim.hosts[host], t) == again.gpu_readings(again.hosts[host], t)
    assert [p.pid for p in sim.hosts[1].processes] == [p.pid for p in again.hosts[1].processes]
    rank, twin = sim.rank("llama-7b", 3), again.rank("llama-7b", 3)
    assert [rank.loss(step) for step in range(1001, 1050)] == [twin.loss(step) for step in range(1001, 1050)]
    assert sim.gpu_readings(sim.hosts[0], 10.0) != other.gpu_readings(other.hosts[0], 10.0)
    assert [p.pid for p in sim.hosts[1].processes] != [p.pid for p in other.hosts[1].processes]


@pytest.mark.parametrize(("run", "early", "late"), [("llama-7b", 1001, 2500), ("vit-sweep", 1, 3000)])
def test_loss_falls_with_noise(sim: Simulation, run: str, early: int, late: int) -> None:
    rank = sim.rank(run, 0)
    first = [rank.loss(step) for step in range(early, early + 100)]
    later = [rank.loss(step) for step in range(late, late + 100)]
    assert statistics.mean(later) < statistics.mean(first) * 0.95
    # Noisy: it goes up from one step to the next often, not a smooth curve.
    rises = sum(1 for before, after in itertools.pairwise(first) if after > before)
    assert 25 < rises < 75
    assert rank.val_loss(late) < statistics.mean(later)


def test_an_evaluation_dips_sm_and_power_then_training_resumes(sim: Simulation) -> None:
    rank = sim.rank("llama-7b", 2)
    host = sim.hosts[rank.host]
    step = _first_eval_step_after(sim, "llama-7b", 2, 0.0)
    eval_t = rank.step_end(step) + rank.run.eval_s / 2
    train_t = rank.step_end(step + 10)
    assert rank.phase(eval_t) is Phase.EVAL
    assert rank.phase(train_t) is Phase.TRAIN
    during, after = sim.gpu_reading(host, rank.gpu, eval_t), sim.gpu_reading(host, rank.gpu, train_t)
    assert during.sm_pct < 50
    assert after.sm_pct > 85
    assert during.power_w < after.power_w - 200
    assert during.mem_pct < after.mem_pct
    # Evaluations come every few minutes.
    next_step = step + rank.run.eval_every
    assert 180 < rank.step_end(next_step) - rank.step_end(step) < 300


def test_the_idle_gpu_has_memory_and_no_rank(sim: Simulation) -> None:
    host = sim.hosts[2]
    assert host.idle_gpu == 7
    assert 7 not in host.rank_of_gpu
    holders = [process for process in host.processes if process.gpu == 7]
    assert len(holders) == 1 and "ipykernel_launcher" in holders[0].args and holders[0].rank is None
    for t in (0.0, 100.0, 1000.0):
        reading = sim.gpu_reading(host, 7, t)
        assert reading.sm_pct == 0 and reading.mem_pct == 0
        assert reading.fb_used_mib == 7612
        assert reading.power_w < 80 and reading.sm_clock_mhz == 345


def test_the_slow_rank_lags_more_and_more_and_runs_hot(sim: Simulation) -> None:
    slow = sim.rank("llama-7b", sim.slow_rank)
    assert slow.slow and slow.host == 1 and slow.gpu == 3
    others = [rank for rank in sim.ranks if rank.run.name == "llama-7b" and not rank.slow]
    gaps = []
    for t in (0.0, 600.0, 3600.0):
        fastest_behind = min(rank.steps_done(t) for rank in others)
        gaps.append(fastest_behind - slow.steps_done(t))
    assert 10 < gaps[0] < gaps[1] < gaps[2]
    host = sim.hosts[1]
    hot, normal = sim.gpu_reading(host, 3, 100.0), sim.gpu_reading(host, 2, 100.0)
    assert hot.gpu_temp_c > normal.gpu_temp_c + 10
    assert hot.sm_clock_mhz < normal.sm_clock_mhz - 400


def test_power_temperature_and_clocks_follow_the_load(sim: Simulation) -> None:
    host = sim.hosts[0]
    busy = [sim.gpu_reading(host, gpu, 50.0) for gpu in range(8)]
    idle = sim.gpu_reading(sim.hosts[2], 7, 50.0)
    for reading in busy:
        assert reading.sm_pct >= 85 or reading.sm_pct < 50  # training, or an evaluation
        assert reading.power_w > idle.power_w + 100
        assert reading.gpu_temp_c > idle.gpu_temp_c + 20
        assert reading.mem_temp_c > reading.gpu_temp_c
        assert reading.sm_clock_mhz > idle.sm_clock_mhz
        assert 60_000 < reading.fb_used_mib < 81_559


def test_drop_schedule() -> None:
    schedule = DropSchedule(first_at_s=90.0, every_s=300.0, down_s=30.0)
    assert [schedule.is_down(t) for t in (0.0, 89.9, 90.0, 119.9, 120.0, 389.9, 390.0, 419.0)] == [
        False, False, True, True, False, False, True, True,
    ]  # fmt: skip
    assert schedule.next_change(0.0) == 90.0
    assert schedule.next_change(100.0) == 120.0
    assert schedule.next_change(200.0) == 390.0
    with pytest.raises(ValueError):
        DropSchedule(first_at_s=0.0, every_s=10.0, down_s=10.0)


def test_only_the_last_host_drops_and_only_with_a_schedule(sim: Simulation) -> None:
    assert sim.dropping_host is sim.hosts[2]
    assert sim.is_down(sim.hosts[2], 100.0) and not sim.is_down(sim.hosts[2], 10.0)
    assert not any(sim.is_down(sim.hosts[index], 100.0) for index in (0, 1))
    steady = Simulation(seed=7, drop=None)
    assert not any(steady.is_down(steady.hosts[2], t) for t in (100.0, 400.0, 700.0))


def test_step_timeline_is_monotonic_and_inverts(sim: Simulation) -> None:
    rank = sim.rank("vit-sweep", 4)
    ends = [rank.step_end(step) for step in range(1, 3000)]
    assert all(later > earlier for earlier, later in itertools.pairwise(ends))
    for step in (1, 999, 1000, 1001, 2500):
        ended = rank.step_end(step)
        assert rank.steps_done(ended) == step
        assert rank.steps_done(ended - 1e-6) == step - 1


def _steps_done_by_bisection(rank: Rank, t: float) -> int:
    """The definition of steps_done, searched the slow way: the last step whose end is at most t."""
    low, high = rank.run.first_step, rank.run.total_steps
    if t < rank.step_end(low + 1):
        return low
    if t >= rank.step_end(high):
        return high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if rank.step_end(middle) <= t else (low, middle)
    return low


def test_steps_done_agrees_with_a_bisection_of_the_step_ends_around_every_step_and_evaluation() -> None:
    simulation = Simulation(seed=11)
    slow = simulation.rank("llama-7b", simulation.slow_rank)
    for rank in (slow, simulation.rank("llama-7b", 0), simulation.rank("vit-sweep", 2)):
        first = rank.run.first_step
        # Just before, at and after the end of each of the first 1,300 steps (six evaluations among them),
        # then a spread of times up to past the end of the run.
        ends = [rank.step_end(step) for step in range(first, first + 1300)]
        times = [end + delta for end in ends for delta in (-1e-7, 0.0, 1e-7, 0.4 * rank.step_s)]
        times += [-2000.0 + 37.3 * index for index in range(3000)]
        for t in times:
            assert rank.steps_done(t) == _steps_done_by_bisection(rank, t), (rank.rank, t)


def test_loss_and_grad_noise_are_the_draws_of_the_full_keys(sim: Simulation) -> None:
    rank = sim.rank("llama-7b", 9)
    for step in (1001, 1450, 20_000):
        noise = normal(sim.seed, _K_LOSS, rank.run.index, rank.rank, step)
        assert rank.loss(step) == pytest.approx(rank.run.loss.at(step) * (1.0 + noise * rank.run.loss.noise))
        grad_noise = normal(sim.seed, _K_GRAD, rank.run.index, rank.rank, step)
        assert rank.grad_norm(step) == pytest.approx(
            (0.35 + 2.5 * (1.0 + step / 400.0) ** -0.7) * (1.0 + 0.15 * grad_noise)
        )


def test_a_big_cluster_starts_with_less_log_history_to_replay() -> None:
    small = Simulation(BIG_CLUSTER_HOSTS, 8, seed=7)
    big = Simulation(BIG_CLUSTER_HOSTS + 1, 8, seed=7)
    small_rank, big_rank = small.rank("llama-7b", 0), big.rank("llama-7b", 0)
    small_lines = read_due(RankLog(small_rank, small.hosts[0], WALL_EPOCH), LogCursor(1000), 0.0)
    big_lines = read_due(RankLog(big_rank, big.hosts[0], WALL_EPOCH), LogCursor(1000), 0.0)
    assert len(small_lines) > 500 and 100 < len(big_lines) < 150
    # Still a running job with a rate to show: training began before the demo did.
    assert big_rank.phase(0.0) is Phase.TRAIN and big_rank.steps_done(0.0) > 1100
    # The other run, on the last host, is the same on both.
    assert small.rank("vit-sweep", 3).steps_done(0.0) == big.rank("vit-sweep", 3).steps_done(0.0)


# ------------------------------------------------------------------------------------------------------ logs


def test_log_reads_in_pieces_equal_the_whole_and_tail_continues_where_it_ends(sim: Simulation) -> None:
    rank = sim.rank("llama-7b", 9)
    log = RankLog(rank, sim.hosts[rank.host], WALL_EPOCH)
    whole = read_due(log, LogCursor(log.first_block), 300.0)
    pieces: list[str] = []
    cursor = LogCursor(log.first_block)
    for t in (-700.0, -600.0, -100.0, 0.0, 0.5, 150.0, 300.0):
        pieces += read_due(log, cursor, t)
    assert pieces == whole
    tail, after = last_lines(log, 100.0, 50)
    upto = read_due(log, LogCursor(log.first_block), 100.0)
    assert tail == upto[-50:]
    assert upto + read_due(log, after, 300.0) == whole


def test_file_growth_counts_every_byte_written(sim: Simulation) -> None:
    rank = sim.rank("vit-sweep", 1)
    log = RankLog(rank, sim.hosts[rank.host], WALL_EPOCH)
    growth = FileGrowth(log, 1024)
    growth.advance(-10.0)
    growth.advance(42.0)
    text = "".join(line + "\n" for line in read_due(log, LogCursor(log.first_block), 42.0)).encode()
    assert growth.size == len(text)
    assert growth.head == text[:1024]


def test_megatron_log_parses_with_progress_loss_validation_and_a_nan_event(sim: Simulation) -> None:
    rank = sim.rank("llama-7b", sim.runs[0].fault_rank)
    log = RankLog(rank, sim.hosts[rank.host], WALL_EPOCH)
    lines = read_due(log, LogCursor(log.first_block), 0.0)
    records, events, detected = parse_lines(lines, default_rank=rank.rank)
    assert detected == "megatron"
    steps = [record.step for record in records if record.step is not None]
    assert steps[0] == 1001 and steps[-1] == rank.steps_done(0.0)
    iterations = [record for record in records if "lr" in record.metrics]
    assert {record.total_steps for record in iterations} == {50_000}
    losses = [record.metrics["loss"] for record in records if "loss" in record.metrics]
    assert losses[0] == pytest.approx(rank.loss(1001), rel=1e-6)
    vals = [record for record in records if "val_loss" in record.metrics]
    assert [record.step for record in vals] == [1200, 1400]
    assert vals[0].metrics["val_loss"] == pytest.approx(rank.val_loss(1200), rel=1e-6)
    assert all(record.timestamp is not None for record in iterations)
    assert [(event.kind, event.rank) for event in events] == [(EventKind.NAN, rank.rank)]
    assert "iteration     1450/" in events[0].text


def test_hf_trainer_log_parses_with_bars_loss_dicts_eval_and_an_nccl_warning(sim: Simulation) -> None:
    rank = sim.rank("vit-sweep", sim.runs[1].fault_rank)
    log = RankLog(rank, sim.hosts[rank.host], WALL_EPOCH)
    lines = read_due(log, LogCursor(log.first_block), 0.0)
    records, events, detected = parse_lines(lines, default_rank=rank.rank)
    assert detected == "hf_trainer"
    steps = [record.step for record in records if record.step is not None]
    assert steps[-1] == rank.steps_done(0.0)
    assert {record.total_steps for record in records if record.step is not None} == {34_320}
    losses = [record.metrics["loss"] for record in records if "loss" in record.metrics]
    assert len(losses) == rank.steps_done(0.0) // 20
    assert losses[0] == pytest.approx(rank.loss(20), abs=5e-5)
    evals = [record.metrics["val_loss"] for record in records if "val_loss" in record.metrics]
    assert evals == pytest.approx([rank.val_loss(1000), rank.val_loss(2000)], abs=5e-5)
    assert [event.kind for event in events] == [EventKind.NCCL_ERROR, EventKind.NCCL_ERROR]
    assert all(event.rank == rank.rank for event in events)
