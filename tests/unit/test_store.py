"""The store: explicit mutations, version counter, frozen and cheap snapshots, progress and ETA per rank."""

from __future__ import annotations

import dataclasses
import math

import pytest

from trainmon_tui.model import ComputeApp, EventKind, GpuSample, LogEvent, LogRecord, ProcInfo, ProcState
from trainmon_tui.state.store import GPU_FIELDS, GpuStatus, HostState, HostStatus, ProgressUnit, Store


def _gpu(index: int, sm: float | None, **extra: float | str | None) -> GpuSample:
    values: dict[str, float | str | None] = {
        "sm_pct": sm,
        "mem_util_pct": 40.0,
        "fb_used_mib": 70000.0,
        "fb_total_mib": 81559.0,
        "power_w": 350.0,
        "gpu_temp_c": 66.0,
        "mem_temp_c": None,
        "sm_clock_mhz": 1980.0,
        "mem_clock_mhz": 2619.0,
    }
    values.update(extra)
    return GpuSample(index, **values)  # type: ignore[arg-type]


def test_gpu_samples_become_latest_value_and_history() -> None:
    store = Store()
    for t in range(120):
        store.apply_gpu("node1", _gpu(0, 0.0 if t == 40 else 98.0), 1000.0 + t)
    snap = store.snapshot(1125.0)
    host = snap.hosts["node1"]
    assert host.status == HostStatus(HostState.UP, 1000.0)
    gpu = host.gpu(0)
    assert gpu is not None
    assert gpu.latest.fb_total_mib == 81559.0
    assert gpu.last_t == 1119.0
    assert gpu.age_s(snap.now) == 6.0
    history = gpu.history
    assert history.fields == GPU_FIELDS
    assert history.last("sm_pct") == (1119.0, 98.0)
    minute = history.stats("sm_pct", since=1060.0, until=snap.now)
    assert (minute.count, minute.low, minute.high) == (60, 98.0, 98.0)
    # The single 0 % reading is still there, one minute and many buckets later.
    whole = history.stats("sm_pct")
    assert (whole.count, whole.low) == (120, 0.0)
    # mem_temp was '-' on every row: unknown, not 0.
    assert history.stats("mem_temp_c").count == 0
    assert history.last("mem_temp_c") is None


def test_version_counts_changes_and_snapshots_are_reused_until_one() -> None:
    store = Store()
    assert store.version == 0
    store.apply_gpu("a", _gpu(0, 50.0), 1.0)
    store.apply_gpu("b", _gpu(0, 50.0), 1.0)
    assert store.version == 2
    first = store.snapshot(2.0)
    same = store.snapshot(2.0)
    assert same is first
    later = store.snapshot(3.0)
    assert later.now == 3.0
    assert later.hosts is first.hosts
    store.apply_gpu("a", _gpu(0, 60.0), 4.0)
    changed = store.snapshot(4.0)
    assert changed.version == 3
    # Host b did not change: its snapshot piece is shared, and histories are references, never copies.
    assert changed.hosts["b"] is first.hosts["b"]
    assert changed.hosts["a"] is not first.hosts["a"]
    gpu_before = first.hosts["a"].gpus[0]
    gpu_after = changed.hosts["a"].gpus[0]
    assert gpu_after.history is gpu_before.history
    assert gpu_before.latest.sm_pct == 50.0
    assert gpu_after.latest.sm_pct == 60.0


def test_snapshots_are_frozen() -> None:
    store = Store()
    store.apply_gpu("a", _gpu(0, 50.0), 1.0)
    store.apply_record("run", "a", LogRecord(line=1, step=1, metrics={"loss": 2.0}), 1.0)
    snap = store.snapshot(2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.now = 3.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        snap.hosts["a"].gpus[0].last_t = 0.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        snap.runs["run"].metrics[(None, "loss")].last = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.hosts["x"] = snap.hosts["a"]  # type: ignore[index]
    with pytest.raises(TypeError):
        snap.runs["run"].metrics[(None, "x")] = snap.runs["run"].metrics[(None, "loss")]  # type: ignore[index]


def test_host_status_since_moves_only_with_the_state() -> None:
    store = Store()
    store.set_host_status("h", HostState.CONNECTING, 10.0)
    store.set_host_status("h", HostState.DOWN, 20.0, "connection refused")
    version = store.version
    store.set_host_status("h", HostState.DOWN, 30.0, "connection refused")
    assert store.version == version
    store.set_host_status("h", HostState.DOWN, 40.0, "host unreachable")
    assert store.snapshot(41.0).hosts["h"].status == HostStatus(HostState.DOWN, 20.0, "host unreachable")
    store.set_host_status("h", HostState.UP, 50.0)
    assert store.snapshot(51.0).hosts["h"].status == HostStatus(HostState.UP, 50.0, None)


def test_gpu_read_failures_are_recorded_once_and_cleared() -> None:
    store = Store()
    reason = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    store.set_gpu_status("h", reason, 5.0)
    version = store.version
    store.set_gpu_status("h", reason, 6.0)
    assert store.version == version
    assert store.snapshot(7.0).hosts["h"].gpu_status == GpuStatus(reason, 5.0)
    store.set_gpu_status("h", None, 8.0)
    assert store.snapshot(9.0).hosts["h"].gpu_status is None


def test_processes_and_their_gpus() -> None:
    store = Store()
    store.apply_gpu("h", _gpu(0, 90.0, uuid="GPU-aaa"), 1.0)
    store.apply_gpu("h", _gpu(1, 90.0, uuid="GPU-bbb"), 1.0)
    procs = [
        ProcInfo(4242, 1, ProcState.RUNNING, 600, 99.0, 2_000_000, "python train.py --rank 0", "Rl"),
        ProcInfo(4243, 1, ProcState.ZOMBIE, 600, 0.0, 0, "[python] <defunct>", "Z"),
    ]
    store.apply_processes("h", procs, 2.0, rank_of_pid={4242: 0})
    store.apply_compute_apps(
        "h",
        [
            ComputeApp(4242, gpu_uuid="GPU-bbb", used_memory_mib=70000.0),
            ComputeApp(4242, gpu_index=0),
            ComputeApp(9999, gpu_uuid="GPU-unknown"),
        ],
        3.0,
    )
    host = store.snapshot(4.0).hosts["h"]
    assert [p.pid for p in host.processes] == [4242, 4243]
    assert host.processes[1].defunct
    assert host.processes_t == 2.0
    assert dict(host.gpu_of_pid) == {4242: (0, 1)}
    assert dict(host.rank_of_pid) == {4242: 0}
    assert host.last_data_t == 3.0


def test_records_feed_progress_metrics_and_a_visible_nan() -> None:
    store = Store()
    for step in range(1, 11):
        loss = math.nan if step == 10 else 3.0 - 0.1 * step
        record = LogRecord(
            line=step, rank=0, step=step, total_steps=100 if step == 1 else None, metrics={"loss": loss}
        )
        store.apply_record("run", "h", record, 100.0 + 2.0 * step)
    run = store.snapshot(121.0).runs["run"]
    rank = run.rank(0)
    assert rank is not None
    # total_steps was printed once; later lines without it keep it.
    assert (rank.progress.step, rank.progress.total_steps, rank.progress.last_line_t) == (10, 100, 120.0)
    assert rank.unit is ProgressUnit.STEP
    metric = run.metric("loss", rank=0)
    assert metric is not None
    assert metric.samples == 10
    assert metric.last is not None and math.isnan(metric.last)
    assert metric.last_t == 120.0
    stats = metric.stats()
    assert stats.count == 10
    assert stats.mean is not None and math.isnan(stats.mean)
    assert stats.low == pytest.approx(2.1)
    assert run.metric("loss") is None
    eta = run.eta
    assert eta.steps_per_s == 0.5
    assert eta.remaining_steps == 90.0
    assert eta.eta_s == 180.0


def test_log_timestamps_are_the_eta_clock_when_present() -> None:
    store = Store()
    for step in range(5):
        # Lines arrive in one burst (same arrival time) but were printed 3 s apart.
        store.apply_record(
            "r", "h", LogRecord(line=step, step=step, total_steps=10, timestamp=1.7e9 + 3.0 * step), 50.0
        )
    eta = store.snapshot(51.0).runs["r"].eta
    assert eta.steps_per_s == pytest.approx(1 / 3)
    assert eta.eta_s == pytest.approx(18.0)


def test_a_replayed_backlog_without_timestamps_is_not_read_as_a_burst_of_speed() -> None:
    store = Store()
    # The tail replayed on connect: 500 steps arriving within a few milliseconds, in network chunks ...
    for step in range(1, 501):
        store.apply_record("r", "h", LogRecord(line=step, step=step, total_steps=2000), 100.0 + step * 1e-5)
    # ... then the run goes on at 2 steps a second, the two lines of each second delivered together.
    for second in range(1, 11):
        for step in (500 + 2 * second - 1, 500 + 2 * second):
            store.apply_record("r", "h", LogRecord(line=step, step=step, total_steps=2000), 100.0 + second)
    eta = store.snapshot(110.0).runs["r"].eta
    assert eta.steps_per_s == pytest.approx(2.0, rel=0.05)
    assert eta.eta_s == pytest.approx((2000 - 520) / 2.0, rel=0.05)


def test_a_burst_of_timestamped_lines_is_spread_over_the_time_it_was_printed() -> None:
    store = Store()
    # Ten iterations printed 10 s apart reach us in one burst at t = 500 (the tail replayed on connect).
    for step in range(10):
        record = LogRecord(line=step, step=step, metrics={"loss": 10.0 - step}, timestamp=1.7e9 + 10.0 * step)
        store.apply_record("r", "h", record, 500.0 + step * 1e-4)
    # Then one live line, printed 10 s after the last and arriving 10 s later.
    store.apply_record(
        "r", "h", LogRecord(line=10, step=10, metrics={"loss": 0.5}, timestamp=1.7e9 + 100), 510.0
    )
    loss = store.snapshot(511.0).runs["r"].metric("loss")
    assert loss is not None
    points = loss.history.points("loss").points
    # The newest line of the burst stays at its arrival; the others go back by their printed distance.
    assert [(round(p.t, 3), p.last) for p in points] == [
        (410.001, 10.0),
        (420.001, 9.0),
        (430.001, 8.0),
        (440.001, 7.0),
        (450.001, 6.0),
        (460.001, 5.0),
        (470.001, 4.0),
        (480.001, 3.0),
        (490.001, 2.0),
        (500.001, 1.0),
        (510.0, 0.5),
    ]
    assert (loss.last, loss.last_t) == (0.5, 510.0)


def test_a_burst_never_writes_before_what_a_series_already_has() -> None:
    store = Store()
    store.apply_record("r", "h", LogRecord(line=1, metrics={"loss": 3.0}, timestamp=1.7e9), 100.0)
    store.snapshot(100.0)
    # A later burst whose log times reach back before that sample (a clock step, a restarted log) and a
    # garbled date far in the past: written at the series' newest time, never earlier.
    store.apply_record("r", "h", LogRecord(line=2, metrics={"loss": 2.0}, timestamp=1.0), 200.0)
    store.apply_record("r", "h", LogRecord(line=3, metrics={"loss": 1.0}, timestamp=1.7e9 + 50), 200.0)
    loss = store.snapshot(201.0).runs["r"].metric("loss")
    assert loss is not None
    assert [(p.t, p.last) for p in loss.history.points("loss").points] == [
        (100.0, 3.0),
        (100.0, 2.0),
        (200.0, 1.0),
    ]


def test_keras_style_one_based_epochs_and_batches() -> None:
    store = Store()
    store.apply_record("k", "h", LogRecord(line=1, epoch=1, total_epochs=3), 0.0)
    for batch in range(1, 101):
        store.apply_record(
            "k", "h", LogRecord(line=1 + batch, batch=batch, batches_per_epoch=100), 0.5 * batch
        )
    rank = store.snapshot(60.0).runs["k"].rank(None)
    assert rank is not None
    assert rank.unit is ProgressUnit.BATCH
    assert rank.total == 300.0
    assert rank.fraction_done() == pytest.approx(100 / 300)
    eta = rank.eta()
    assert eta.steps_per_s == 2.0
    assert eta.eta_s == pytest.approx(100.0)


def test_zero_based_epochs_as_generic_logs_print_them() -> None:
    store = Store()
    for batch in range(1, 51):
        record = LogRecord(line=batch, epoch=2, total_epochs=4, batch=batch, batches_per_epoch=50)
        store.apply_record("l", "h", record, float(batch))
    # Epoch 2 looks 1-based until the log shows an epoch 0 ...
    assert store.snapshot(60.0).runs["l"].eta.remaining_steps == 4 * 50 - (50 + 50)
    restart = LogRecord(line=100, epoch=0, total_epochs=4, batch=1, batches_per_epoch=50)
    store.apply_record("l", "h", restart, 100.0)
    store.apply_record("l", "h", dataclasses.replace(restart, line=101, batch=2), 101.0)
    eta = store.snapshot(102.0).runs["l"].eta
    assert eta.remaining_steps == 4 * 50 - 2
    assert eta.steps_per_s == 1.0


def test_fractional_epochs_count_from_zero_even_when_first_read_mid_run() -> None:
    store = Store()
    # An HF Trainer log read from its middle: 'epoch': 1.5 means one and a half epochs of 3 are done.
    for index, epoch in enumerate((1.5, 1.75, 2.0, 2.25)):
        store.apply_record("hf", "h", LogRecord(line=index, epoch=epoch, total_epochs=3), 10.0 * index)
    rank = store.snapshot(40.0).runs["hf"].rank(None)
    assert rank is not None and rank.unit is ProgressUnit.EPOCH
    assert rank.fraction_done() == pytest.approx(2.25 / 3)
    assert rank.eta().eta_s == pytest.approx(0.75 / 0.025)


def test_steps_win_over_epochs_from_the_same_log() -> None:
    # HF Trainer: tqdm lines carry step/total, metric dicts carry a fractional epoch.
    store = Store()
    for step in range(1, 21):
        store.apply_record("hf", "h", LogRecord(line=step, step=step, total_steps=200), float(step))
        if step % 5 == 0:
            store.apply_record(
                "hf", "h", LogRecord(line=step, epoch=step / 200, metrics={"loss": 1.0}), float(step)
            )
    rank = store.snapshot(30.0).runs["hf"].rank(None)
    assert rank is not None
    assert rank.unit is ProgressUnit.STEP
    assert len(rank.observations) == 20
    assert rank.eta().eta_s == 180.0


def test_run_eta_follows_the_rank_furthest_behind() -> None:
    store = Store()
    for step in range(11):
        store.apply_record("ddp", "h", LogRecord(line=step, rank=0, step=step, total_steps=100), float(step))
        store.apply_record(
            "ddp", "h", LogRecord(line=step, rank=1, step=step // 2, total_steps=100), float(step)
        )
    run = store.snapshot(11.0).runs["ddp"]
    assert [r.rank for r in run.ranks] == [0, 1]
    assert run.eta == run.ranks[1].eta()
    assert run.eta.remaining_steps == 95.0


def test_events_are_bounded_and_newest_kept() -> None:
    store = Store(events_per_run=3)
    for line in range(5):
        store.apply_event(
            "r", "h", LogEvent(line, 0, EventKind.NAN, f"loss is nan at line {line}"), float(line)
        )
    events = store.snapshot(10.0).runs["r"].events
    assert [e.event.line for e in events] == [2, 3, 4]
    assert events[-1].t == 4.0
    assert events[-1].host == "h"


def test_history_memory_is_bounded_per_gpu() -> None:
    store = Store()
    for t in range(0, 3 * 86400, 30):
        store.apply_gpu("h", _gpu(0, 50.0), float(t))
    per_gpu = store.history_nbytes()
    for t in range(3 * 86400, 6 * 86400, 30):
        store.apply_gpu("h", _gpu(0, 50.0), float(t))
    assert store.history_nbytes() <= per_gpu * 1.01
    assert store.history_nbytes() < 200_000


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        Store(gpu_fields=("sm_pct", "uuid"))
    with pytest.raises(ValueError):
        Store(events_per_run=0)
