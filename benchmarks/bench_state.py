"""Benchmark of the run-state store: memory after a day at 1 Hz, snapshot latency, ingest rate, vs baselines.

Fills a :class:`~trainmon_tui.state.store.Store` through its real ``apply_*`` methods with 512 GPUs (64 hosts
x 8) and one run of 64 ranks x 5 metrics, one sample per GPU and one log line per rank every simulated second
for 24 h, then reports:

* memory: process RSS growth over the fill, the bytes in the history buffers, and a tracemalloc count of one
  host's share (8 GPUs, 8 ranks) filled the same way, times 64;
* ``snapshot()`` latency after each simulated second of the final 10 minutes (every ring full), median / p95;
* ``apply_gpu`` / ``apply_record`` cost per call, and chart reads (``points`` / ``stats``);
* baselines measured in the same run: a naive history (a list of tuples per GPU and per metric) filled for 1 h
  on one host under tracemalloc and extrapolated to 512 GPUs x 24 h; a plain-dict snapshot of the latest
  values; a snapshot that copies the last hour of the naive history.

Run: ``.venv/bin/python benchmarks/bench_state.py`` (about 10 minutes on one core); ``--hours 1`` for a quick
look. Budgets: store memory <= 150 MB, snapshot() <= 5 ms.
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainmon_tui.model import GpuSample, LogRecord, ProcInfo, ProcState
from trainmon_tui.state.store import GPU_FIELDS, Store

METRICS = ("loss", "lr", "grad_norm", "tokens_per_s", "mfu")
VARIANTS = 16
START = 10_000.0
MB = 1e6


@dataclass(frozen=True, slots=True)
class Shape:
    hosts: int
    gpus_per_host: int
    ranks: int
    seconds: int

    @property
    def gpus(self) -> int:
        return self.hosts * self.gpus_per_host


def _host_name(index: int) -> str:
    return f"node{index:03d}"


def _gpu_samples(shape: Shape) -> list[list[list[GpuSample]]]:
    """Per host, per GPU, VARIANTS readings that the fill cycles through (built once, outside the timing)."""
    hosts = []
    for h in range(shape.hosts):
        gpus = []
        for g in range(shape.gpus_per_host):
            readings = []
            for k in range(VARIANTS):
                readings.append(
                    GpuSample(
                        gpu=g,
                        sm_pct=0.0 if k == 7 else 95.0 + (h + g + k) % 5,
                        mem_util_pct=35.0 + k,
                        fb_used_mib=70_000.0 + 16 * k,
                        fb_total_mib=81_559.0,
                        power_w=300.0 + 7 * k,
                        power_limit_w=700.0,
                        gpu_temp_c=60.0 + k % 4,
                        mem_temp_c=70.0 + k % 3,
                        sm_clock_mhz=1980.0 - 15 * (k % 2),
                        mem_clock_mhz=2619.0,
                        uuid=f"GPU-{h:03d}-{g}",
                    )
                )
            gpus.append(readings)
        hosts.append(gpus)
    return hosts


def _metric_values() -> list[dict[str, float]]:
    return [
        {
            "loss": 2.5 - 0.01 * k,
            "lr": 3e-4,
            "grad_norm": 0.8 + 0.05 * k,
            "tokens_per_s": 11_800.0 + k,
            "mfu": 0.41,
        }
        for k in range(VARIANTS)
    ]


def _processes(shape: Shape) -> list[ProcInfo]:
    return [
        ProcInfo(
            1000 + r, 1, ProcState.RUNNING, 3600, 99.0, 30_000_000, f"python train.py --local_rank {r}", "Rl"
        )
        for r in range(shape.gpus_per_host)
    ]


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass(slots=True)
class FillResult:
    store: Store
    gpu_seconds: float
    record_seconds: float
    # Wall-clock and process CPU time of each timed snapshot(): on a shared machine the two differ by the
    # time other processes took the core.
    snapshot_ms: list[float]
    snapshot_cpu_ms: list[float]


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything the fill feeds in, built before it so that building it is not measured."""

    samples: list[list[list[GpuSample]]]
    metric_values: list[dict[str, float]]
    processes: list[ProcInfo]


def make_inputs(shape: Shape) -> Inputs:
    return Inputs(_gpu_samples(shape), _metric_values(), _processes(shape))


def fill(shape: Shape, inputs: Inputs, *, snapshot_tail: int = 0, progress: bool = False) -> FillResult:
    """Push ``shape.seconds`` of 1 Hz samples through the real apply methods."""
    samples = inputs.samples
    metric_values = inputs.metric_values
    processes = inputs.processes
    host_names = [_host_name(h) for h in range(shape.hosts)]
    rank_hosts = [host_names[(r * shape.hosts) // shape.ranks] for r in range(shape.ranks)]
    store = Store()
    apply_gpu = store.apply_gpu
    apply_record = store.apply_record
    gpu_seconds = 0.0
    record_seconds = 0.0
    snapshot_ms: list[float] = []
    snapshot_cpu_ms: list[float] = []
    clock = time.perf_counter
    cpu_clock = time.process_time
    plan = list(zip(host_names, samples, strict=True))
    for second in range(shape.seconds):
        now = START + second
        variant = second % VARIANTS
        started = clock()
        for host, gpus in plan:
            for readings in gpus:
                apply_gpu(host, readings[variant], now)
        middle = clock()
        metrics = metric_values[variant]
        for rank, host in enumerate(rank_hosts):
            record = LogRecord(
                line=second, rank=rank, step=second, total_steps=shape.seconds * 2, metrics=metrics
            )
            apply_record("run", host, record, now)
        ended = clock()
        gpu_seconds += middle - started
        record_seconds += ended - middle
        if second % 60 == 0:
            for host in host_names:
                store.apply_processes(host, processes, now)
        if second >= shape.seconds - snapshot_tail:
            cpu_before = cpu_clock()
            before = clock()
            store.snapshot(now)
            snapshot_ms.append((clock() - before) * 1e3)
            snapshot_cpu_ms.append((cpu_clock() - cpu_before) * 1e3)
        if progress and second % 3600 == 3599:
            print(f"  simulated {(second + 1) // 3600} h", file=sys.stderr, flush=True)
    return FillResult(store, gpu_seconds, record_seconds, snapshot_ms, snapshot_cpu_ms)


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        before = time.perf_counter()
        action()
        times.append((time.perf_counter() - before) * 1e3)
    return statistics.median(times)


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclass(slots=True)
class Naive:
    """The obvious alternative: a growing list of tuples per GPU and per metric series."""

    gpu_history: dict[tuple[str, int], list[tuple[float, ...]]]
    metric_history: dict[tuple[int, str], list[tuple[float, float]]]
    append_us: float


def naive_fill(shape: Shape, inputs: Inputs) -> Naive:
    samples = inputs.samples
    metric_values = inputs.metric_values
    values_of = operator.attrgetter(*GPU_FIELDS)
    gpu_history: dict[tuple[str, int], list[tuple[float, ...]]] = {
        (_host_name(h), g): [] for h in range(shape.hosts) for g in range(shape.gpus_per_host)
    }
    metric_history: dict[tuple[int, str], list[tuple[float, float]]] = {
        (rank, name): [] for rank in range(shape.ranks) for name in METRICS
    }
    plan = [
        (gpu_history[(_host_name(h), g)], readings)
        for h, gpus in enumerate(samples)
        for g, readings in enumerate(gpus)
    ]
    spent = 0.0
    for second in range(shape.seconds):
        now = START + second
        variant = second % VARIANTS
        before = time.perf_counter()
        for history, readings in plan:
            history.append((now, *values_of(readings[variant])))
        spent += time.perf_counter() - before
        for rank in range(shape.ranks):
            for name, value in metric_values[variant].items():
                metric_history[(rank, name)].append((now, value))
    return Naive(gpu_history, metric_history, spent / (len(plan) * shape.seconds) * 1e6)


def traced_bytes(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated by ``build``'s result (tracemalloc), and the result itself."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--gpus-per-host", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--tail", type=int, default=600, help="snapshots timed in the final N seconds")
    args = parser.parse_args(argv)
    seconds = round(args.hours * 3600)
    shape = Shape(args.hosts, args.gpus_per_host, args.ranks, seconds)
    slice_shape = Shape(1, args.gpus_per_host, max(1, args.ranks // args.hosts), seconds)
    share = shape.hosts

    scale = f"{shape.gpus} GPUs, {shape.ranks} ranks x {len(METRICS)} metrics, {args.hours:g} h at 1 Hz"
    print(f"# bench_state: {scale}")
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")

    # One host's share under tracemalloc (the full fill is too slow to trace), extrapolated.
    slice_inputs = make_inputs(slice_shape)
    slice_bytes, _ = traced_bytes(lambda: fill(slice_shape, slice_inputs).store)

    inputs = make_inputs(shape)
    # The inputs live as long as the fill: keep the collector from rescanning them (they are the bench's,
    # not the store's), so GC pauses seen by snapshot() come from the store's own objects.
    gc.collect()
    gc.freeze()
    load_before = os.getloadavg()[0]
    rss_before = _rss_bytes()
    started = time.perf_counter()
    result = fill(shape, inputs, snapshot_tail=args.tail, progress=True)
    fill_s = time.perf_counter() - started
    gc.collect()
    rss_growth = _rss_bytes() - rss_before
    store = result.store
    buffers = store.history_nbytes()
    gpu_calls = shape.gpus * seconds
    record_calls = shape.ranks * seconds
    gpu_us = result.gpu_seconds / gpu_calls * 1e6
    record_us = result.record_seconds / record_calls * 1e6
    snap_median = statistics.median(result.snapshot_ms)
    snap_p95 = _p95(result.snapshot_ms)
    cpu_median = statistics.median(result.snapshot_cpu_ms)
    cpu_p95 = _p95(result.snapshot_cpu_ms)
    load_after = os.getloadavg()[0]
    tracked = len(gc.get_objects())
    full_gc_ms = _median_ms(gc.collect, 5)

    now = START + seconds - 1
    snapshot = store.snapshot(now)
    gpu = snapshot.hosts[_host_name(0)].gpus[0]
    loss = snapshot.runs["run"].metric("loss", rank=0)
    assert loss is not None
    reads = {
        "points sm_pct, last 10 min, <=300": lambda: gpu.history.points("sm_pct", now - 600, now, 300),
        "points sm_pct, last 1 h, <=300": lambda: gpu.history.points("sm_pct", now - 3600, now, 300),
        "points sm_pct, all, <=300": lambda: gpu.history.points("sm_pct", None, now, 300),
        "points loss, all, <=300": lambda: loss.history.points("loss", None, now, 300),
        "stats sm_pct, last 1 h": lambda: gpu.history.stats("sm_pct", now - 3600, now),
        "stats sm_pct, all": lambda: gpu.history.stats("sm_pct"),
    }
    read_ms = {name: _median_ms(action, 200) for name, action in reads.items()}

    # Baseline 1: naive history for 1 h on one host, traced, extrapolated to every GPU and the whole duration.
    naive_shape = Shape(1, args.gpus_per_host, max(1, args.ranks // args.hosts), min(3600, seconds))
    naive_inputs = make_inputs(naive_shape)
    naive_bytes, naive_obj = traced_bytes(lambda: naive_fill(naive_shape, naive_inputs))
    assert isinstance(naive_obj, Naive)
    naive_total = naive_bytes * share * seconds / naive_shape.seconds

    # Baseline 2: a plain-dict snapshot of the latest values, built from the same store.
    def dict_snapshot() -> dict[str, object]:
        hosts = {
            name: {g.gpu: {f: getattr(g.latest, f) for f in GPU_FIELDS} for g in host.gpus}
            for name, host in snapshot.hosts.items()
        }
        metrics = {key: m.last for run in snapshot.runs.values() for key, m in run.metrics.items()}
        return {"hosts": hosts, "metrics": metrics}

    dict_ms = _median_ms(dict_snapshot, 50)

    # Baseline 3: a snapshot that copies the last hour of naive history (one host, extrapolated).
    def copy_history() -> int:
        copied = [list(h) for h in naive_obj.gpu_history.values()]
        copied += [list(h) for h in naive_obj.metric_history.values()]
        return len(copied)

    copy_ms = _median_ms(copy_history, 20) * share

    # Steady-state snapshot cost when nothing changed since the last one.
    cached_ms = _median_ms(lambda: store.snapshot(now + 1.0), 200)

    print(f"\nfill: {fill_s:.0f} s wall for {gpu_calls + record_calls:,} apply calls")
    loads = f"{load_before:.2f} / {load_after:.2f}"
    print(f"load average (1 min) before / after the fill: {loads} on {os.cpu_count()} CPUs")
    metric_series = shape.ranks * len(METRICS)
    print(f"store series: {shape.gpus} GPU series x {len(GPU_FIELDS)} fields, {metric_series} metric series")
    print()
    print("| measure | trainmon store | baseline | store / baseline |")
    print("|---|---|---|---|")
    print(
        f"| memory after {args.hours:g} h (RSS growth) | {rss_growth / MB:.1f} MB "
        f"| naive list-of-tuples history, extrapolated: {naive_total / MB:.0f} MB "
        f"| {rss_growth / naive_total:.3f} |"
    )
    print(
        f"| memory (tracemalloc, 1 host x {share}) | {slice_bytes * share / MB:.1f} MB "
        f"| same naive history | {slice_bytes * share / naive_total:.3f} |"
    )
    print(f"| history buffers (array bytes) | {buffers / MB:.1f} MB | - | - |")
    print(
        f"| snapshot() median, all changed | {snap_median:.2f} ms "
        f"| plain dict of latest values: {dict_ms:.2f} ms | {snap_median / dict_ms:.2f} |"
    )
    print(
        f"| snapshot() p95, all changed | {snap_p95:.2f} ms "
        f"| copy of last hour's history: {copy_ms:.1f} ms | {snap_p95 / copy_ms:.4f} |"
    )
    print(f"| snapshot() CPU time median / p95, all changed | {cpu_median:.2f} / {cpu_p95:.2f} ms | - | - |")
    print(f"| snapshot() median, nothing changed | {cached_ms * 1e3:.1f} us | - | - |")
    print(f"| full gc.collect() ({tracked:,} tracked objects; inputs frozen) | {full_gc_ms:.1f} ms | - | - |")
    print(
        f"| apply_gpu per call | {gpu_us:.2f} us ({1e6 / gpu_us:,.0f}/s) "
        f"| naive tuple append: {naive_obj.append_us:.2f} us | {gpu_us / naive_obj.append_us:.2f} |"
    )
    print(f"| apply_record per call (5 metrics) | {record_us:.2f} us ({1e6 / record_us:,.0f}/s) | - | - |")
    for name, ms in read_ms.items():
        print(f"| {name} | {ms * 1e3:.0f} us | - | - |")
    print()
    verdict_memory = "ok" if rss_growth <= 150 * MB else "OVER"
    verdict_snapshot = "ok" if snap_median <= 5.0 and snap_p95 <= 5.0 else "OVER"
    print(
        f"budget: memory <= 150 MB: {verdict_memory}; snapshot() median and p95 <= 5 ms: {verdict_snapshot}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
