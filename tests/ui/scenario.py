"""A realistic, deterministic cluster for UI tests: a Store filled by hand on a fake clock, as a source.

Shared by the dashboard tests and the drill-down tests; keep what it builds stable (tests assert on it).
What :func:`build_scenario` puts in the store, over 30 minutes of store time (``T0`` .. ``T_END``):

* ``gpu-node-01`` (up): 8 x H100, GPU ``i`` runs rank ``i`` of ``llama-7b``; GPU 3 stopped reporting 40 s
  before the end (the **stale GPU**: its host is still up). Every 5 minutes a 30 s eval phase dips SM% to ~35.
* ``gpu-node-02`` (up): 8 x H100, GPUs 0-6 run ranks 0-6 of ``vit-base``; GPU 7 holds no process and reads
  0 % SM (the **idle GPU**).
* ``gpu-node-03`` (**down**: "connection refused" since 120 s before the end): its GPUs reported until then
  and it runs nothing.
* Run ``llama-7b``: 8 ranks, steps (total 5000), 1 step/s; **rank 5 lags** (0.97 step/s); rank 0 logs a
  noisy falling ``loss`` and ``lr`` every 10 s, and ``val_loss`` every 5 minutes; a NaN ``grad_norm`` event
  (``nan``) from rank 5 and an NCCL timeout warning line.
* Run ``vit-base``: 7 ranks counting epochs and batches (Lightning style, 500 batches per epoch, 10 epochs);
  rank 0 logs ``loss`` and ``acc``; rank 2 hit a CUDA OOM (an ``oom`` event at log line 1234).

Ranks' log lines carry no timestamps, so progress is timed by arrival (the fake clock). Noise comes from a
seeded random generator, so every build is identical.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from trainmon_tui.model import ComputeApp, EventKind, GpuSample, LogEvent, LogRecord, ProcInfo, ProcState
from trainmon_tui.state.store import HostState, Store, StoreSnapshot
from trainmon_tui.ui.format import WallClock

T0 = 1_000.0
DURATION_S = 1_800.0
T_END = T0 + DURATION_S
GPU_PERIOD_S = 5.0
LOG_PERIOD_S = 10.0
#: The wall clock every UI test pretends it is at T_END (a Friday, UTC).
WALL_AT_END = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC).timestamp()

HOSTS = ("gpu-node-01", "gpu-node-02", "gpu-node-03")
UP_HOST, OTHER_UP_HOST, DOWN_HOST = HOSTS
DOWN_REASON = "connection refused"
DOWN_SINCE = T_END - 120.0
STALE_GPU = (UP_HOST, 3)
STALE_SINCE = T_END - 40.0
IDLE_GPU = (OTHER_UP_HOST, 7)
GPU_MODEL = "NVIDIA H100 80GB HBM3"
FB_TOTAL_MIB = 81_559.0

LLAMA = "llama-7b"
LLAMA_RANKS = 8
LLAMA_TOTAL_STEPS = 5_000
LLAMA_FIRST_STEP = 1_000
LAGGING_RANK = 5
VIT = "vit-base"
VIT_RANKS = 7
VIT_BATCHES_PER_EPOCH = 500
VIT_EPOCHS = 10
OOM_RANK = 2
OOM_LINE = 1_234
OOM_TEXT = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 2; 79.10 GiB total)"
NCCL_TEXT = "[Rank 5] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=88231, OpType=ALLREDUCE)"
NAN_TEXT = "step 2731: grad_norm is nan, skipping update"


@dataclass
class FakeClock:
    """Monotonic store time, moved only by the test."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ScenarioSource:
    """A SnapshotSource over a store a test fills: snapshots at the fake clock's time; start/stop counted."""

    store: Store
    clock: FakeClock
    starts: int = 0
    stops: int = 0
    snapshots: int = 0

    @property
    def version(self) -> int:
        return self.store.version

    def snapshot(self) -> StoreSnapshot:
        self.snapshots += 1
        return self.store.snapshot(self.clock())

    async def start(self) -> None:
        self.starts += 1

    async def stop(self) -> None:
        self.stops += 1


@dataclass
class Scenario:
    store: Store
    clock: FakeClock
    source: ScenarioSource
    wall_clock: WallClock = field(default_factory=lambda: WallClock(now=lambda: WALL_AT_END, tz=UTC))


def _pid(host_index: int, rank: int) -> int:
    return 40_000 + host_index * 1_000 + rank


def _gpu_sample(index: int, sm: float | None, used_mib: float | None, rng: random.Random) -> GpuSample:
    busy = sm is not None and sm > 1
    return GpuSample(
        gpu=index,
        sm_pct=sm,
        mem_util_pct=None if sm is None else round(sm * 0.6),
        fb_used_mib=used_mib,
        fb_total_mib=FB_TOTAL_MIB,
        power_w=round(rng.uniform(560, 690) if busy else rng.uniform(68, 72)),
        power_limit_w=700.0,
        gpu_temp_c=round(rng.uniform(64, 74) if busy else 31.0),
        mem_temp_c=None,
        uuid=f"GPU-{index:02d}",
        name=GPU_MODEL,
    )


def _busy_sm(t: float, rng: random.Random) -> float:
    in_eval = (t - T0) % 300.0 >= 270.0
    base = 35.0 if in_eval else 96.0
    return float(round(min(100.0, max(0.0, base + rng.gauss(0, 2.5)))))


def _fill_gpus(store: Store, rng: random.Random) -> None:
    t = T0
    while t <= T_END:
        for host_index, host in enumerate(HOSTS):
            if host == DOWN_HOST and t >= DOWN_SINCE:
                continue
            for index in range(8):
                if (host, index) == STALE_GPU and t >= STALE_SINCE:
                    continue
                if (host, index) == IDLE_GPU or host == DOWN_HOST:
                    sample = _gpu_sample(index, 0.0, 4.0, rng)
                else:
                    used = 61_000.0 + 1_000.0 * host_index + 37.0 * index
                    sample = _gpu_sample(index, _busy_sm(t, rng), used, rng)
                store.apply_gpu(host, sample, t)
        t += GPU_PERIOD_S


def _fill_processes(store: Store) -> None:
    now = T_END - 1.0
    for host_index, (host, run, ranks) in enumerate(
        ((UP_HOST, LLAMA, LLAMA_RANKS), (OTHER_UP_HOST, VIT, VIT_RANKS))
    ):
        launcher = _pid(host_index, 999)
        processes = [
            ProcInfo(
                launcher,
                1,
                ProcState.SLEEPING,
                1_900,
                0.1,
                30_000,
                f"torchrun --nproc_per_node {ranks} train.py",
                "Ss",
            )
        ]
        apps = []
        for rank in range(ranks):
            pid = _pid(host_index, rank)
            command = f"/usr/bin/python3 -u train.py --run {run} --local_rank={rank}"
            processes.append(
                ProcInfo(pid, launcher, ProcState.RUNNING, 1_890, 98.5, 12_582_912, command, "Rl")
            )
            apps.append(ComputeApp(pid, gpu_index=rank, used_memory_mib=60_000.0))
        rank_of_pid = {_pid(host_index, rank): rank for rank in range(ranks)}
        store.apply_processes(host, processes, now, rank_of_pid=rank_of_pid)
        store.apply_compute_apps(host, apps, now)


def _loss(t: float, rng: random.Random, start: float, floor: float) -> float:
    progress = (t - T0) / DURATION_S
    return floor + (start - floor) * math.exp(-2.5 * progress) + rng.gauss(0, 0.04)


def _fill_logs(store: Store, rng: random.Random) -> None:
    line = 100
    t = T0
    while t <= T_END:
        elapsed = t - T0
        for rank in range(LLAMA_RANKS):
            rate = 0.97 if rank == LAGGING_RANK else 1.0
            step = LLAMA_FIRST_STEP + int(elapsed * rate)
            metrics: dict[str, float] = {}
            if rank == 0:
                metrics = {"loss": round(_loss(t, rng, 3.2, 1.9), 4), "lr": 3e-4}
                if elapsed > 0 and elapsed % 300.0 == 0:
                    metrics["val_loss"] = round(_loss(t, rng, 3.3, 2.05), 4)
            host = UP_HOST
            store.apply_record(
                LLAMA, host, LogRecord(line, rank, step, LLAMA_TOTAL_STEPS, metrics=metrics), t
            )
            line += 1
        for rank in range(VIT_RANKS):
            done = int(elapsed * 2.0) + 1_200  # batches done since the start of epoch 1 (0-based epochs)
            epoch, batch = divmod(done, VIT_BATCHES_PER_EPOCH)
            vit_metrics: dict[str, float] = {}
            if rank == 0:
                vit_metrics = {
                    "loss": round(_loss(t, rng, 1.4, 0.6), 4),
                    "acc": round(0.5 + elapsed / 6000, 4),
                }
            record = LogRecord(
                line,
                rank,
                epoch=float(epoch),
                total_epochs=VIT_EPOCHS,
                batch=batch,
                batches_per_epoch=VIT_BATCHES_PER_EPOCH,
                metrics=vit_metrics,
            )
            store.apply_record(VIT, OTHER_UP_HOST, record, t)
            line += 1
        t += LOG_PERIOD_S


def _fill_events(store: Store) -> None:
    store.apply_event(LLAMA, UP_HOST, LogEvent(2_731, LAGGING_RANK, EventKind.NAN, NAN_TEXT), T_END - 600.0)
    store.apply_event(
        LLAMA, UP_HOST, LogEvent(2_950, LAGGING_RANK, EventKind.NCCL_TIMEOUT, NCCL_TEXT), T_END - 300.0
    )
    store.apply_event(VIT, OTHER_UP_HOST, LogEvent(OOM_LINE, OOM_RANK, EventKind.OOM, OOM_TEXT), T_END - 90.0)


def build_scenario() -> Scenario:
    """The cluster described in the module docstring, as of ``T_END``."""
    rng = random.Random(20250314)
    clock = FakeClock(T0)
    store = Store()
    for host in HOSTS:
        store.set_host_status(host, HostState.CONNECTING, T0 - 5.0)
        store.set_host_status(host, HostState.UP, T0)
    _fill_gpus(store, rng)
    _fill_logs(store, rng)
    _fill_processes(store)
    _fill_events(store)
    store.set_host_status(DOWN_HOST, HostState.DOWN, DOWN_SINCE, DOWN_REASON)
    clock.now = T_END
    return Scenario(store, clock, ScenarioSource(store, clock))
