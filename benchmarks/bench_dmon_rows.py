"""Measure the CPU one `nvidia-smi dmon` row costs the dashboard: parsed, then stored.

Run from the repository root: ``.venv/bin/python benchmarks/bench_dmon_rows.py [--rows N] [--rounds R]``.

The input is a real 8-GPU dmon capture from ``tests/fixtures/dmon/`` (``--capture``), its rows repeated into
bursts of 8 lines (``--burst``), one burst per "second", as a host's dmon output arrives in one packet a
second; ``--header-every K`` puts the capture's two header lines at the start of every K-th burst, as dmon
prints them again now and then. Two paths are timed over the same input, each round with a fresh parser and
a fresh store:

* per line: ``DmonParser.feed`` on each line, ``Store.apply_gpu`` on each sample (what the collector does
  for a stream that cannot hand over what it holds);
* per burst: ``DmonParser.feed_lines`` on each burst, ``Store.apply_gpu`` on each of its samples (what it
  does for the SSH and local streams, which can).

Parsing alone, both ways, and storing alone are timed too, to tell where the time goes. Rounds are
interleaved (so a change of the machine's load hits every path alike), each run with the cyclic garbage
collector off (as timeit does), and the median CPU time of this process (``time.process_time``) is reported,
in microseconds per row. With ``--before DIR`` (a copy of the
package at an earlier commit: ``git archive REV trainmon_tui | tar -x -C DIR``), that copy's per-line path and
its parser alone run interleaved with the others as well. The load average is printed before and after: the
box is shared.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTURE = REPO / "tests" / "fixtures" / "dmon" / "dmon_gpm_metrics_8gpu_h800.txt"
HOST = "gpu-host"

Bursts = list[list[str]]


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def make_bursts(capture: Path, rows: int, burst: int, header_every: int) -> tuple[list[str], Bursts]:
    """The capture's header lines, and its rows repeated into ``rows // burst`` bursts of ``burst`` lines."""
    lines = capture.read_text(encoding="utf-8").splitlines()
    headers = [line for line in lines if line.lstrip().startswith("#")]
    data = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    bursts: Bursts = []
    at = 0
    for number in range(rows // burst):
        chunk = [data[(at + i) % len(data)] for i in range(burst)]
        at += burst
        if header_every and number % header_every == header_every - 1:
            chunk = headers + chunk
        bursts.append(chunk)
    return headers, bursts


def _load_package(root: Path) -> tuple[ModuleType, ModuleType]:
    """The dmon parser and store modules of the trainmon_tui package under ``root``, imported afresh (modules
    already imported keep working: their functions hold their own globals)."""
    for name in [name for name in sys.modules if name == "trainmon_tui" or name.startswith("trainmon_tui.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        dmon = importlib.import_module("trainmon_tui.parsers.dmon")
        store = importlib.import_module("trainmon_tui.state.store")
    finally:
        sys.path.remove(str(root))
    return dmon, store


Run = Callable[[], int]


def paths_of(
    dmon: ModuleType, store_module: ModuleType, headers: list[str], bursts: Bursts, *, burst_paths: bool
) -> dict[str, Run]:
    """The timed paths of one copy of the package over this input; each returns how many samples it read."""
    # For the store alone: each burst's samples, parsed once, outside the timing.
    reader: Any = dmon.DmonParser()
    for line in headers:
        reader.feed(line)
    samples_of = [[s for line in lines if (s := reader.feed(line)) is not None] for lines in bursts]

    def per_line() -> int:
        parser: Any = dmon.DmonParser()
        store: Any = store_module.Store()
        feed, apply_gpu = parser.feed, store.apply_gpu
        for line in headers:
            feed(line)
        count = 0
        for now, lines in enumerate(bursts):
            for line in lines:
                sample = feed(line)
                if sample is not None:
                    apply_gpu(HOST, sample, float(now))
                    count += 1
        return count

    def per_burst() -> int:
        parser: Any = dmon.DmonParser()
        store: Any = store_module.Store()
        feed_lines, apply_gpu = parser.feed_lines, store.apply_gpu
        feed_lines(headers)
        count = 0
        for now, lines in enumerate(bursts):
            samples = feed_lines(lines)
            for sample in samples:
                apply_gpu(HOST, sample, float(now))
            count += len(samples)
        return count

    def parse_per_line() -> int:
        parser: Any = dmon.DmonParser()
        feed = parser.feed
        for line in headers:
            feed(line)
        return sum(feed(line) is not None for lines in bursts for line in lines)

    def parse_per_burst() -> int:
        parser: Any = dmon.DmonParser()
        parser.feed_lines(headers)
        return sum(len(parser.feed_lines(lines)) for lines in bursts)

    def store_per_sample() -> int:
        store: Any = store_module.Store()
        apply_gpu = store.apply_gpu
        for now, samples in enumerate(samples_of):
            for sample in samples:
                apply_gpu(HOST, sample, float(now))
        return sum(map(len, samples_of))

    if not burst_paths:
        return {"per line": per_line, "parse: feed per line": parse_per_line}
    return {
        "per line": per_line,
        "per burst": per_burst,
        "parse: feed per line": parse_per_line,
        "parse: feed_lines per burst": parse_per_burst,
        "store alone: apply_gpu per sample": store_per_sample,
    }


def time_paths(paths: dict[str, Run], rounds: int) -> tuple[dict[str, list[float]], int]:
    """CPU seconds of each path in each round, the paths interleaved; and how many samples each read."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        for name, run in paths.items():
            # As timeit does: the cyclic collector off while timing (it would walk the input's objects at
            # moments that differ from run to run), and a clean start for each run.
            gc.collect()
            gc.disable()
            try:
                started = time.process_time()
                counts[name] = run()
                times[name].append(time.process_time() - started)
            finally:
                gc.enable()
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the paths read different numbers of samples: {counts}")
    return times, next(iter(counts.values()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE, help="a dmon capture to repeat")
    parser.add_argument("--rows", type=int, default=20_000, help="rows in all (default 20000)")
    parser.add_argument("--burst", type=int, default=8, help="lines per burst (default 8: one per GPU)")
    parser.add_argument("--header-every", type=int, default=0, help="headers before every K-th burst")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--before", type=Path, help="a copy of the package at an earlier commit")
    args = parser.parse_args(argv)

    headers, bursts = make_bursts(args.capture, args.rows, args.burst, args.header_every)
    rows = sum(len(lines) for lines in bursts)
    paths: dict[str, Run] = {}
    if args.before is not None:
        old_dmon, old_store = _load_package(args.before.resolve())
        paths.update(
            {
                f"before: {name}": run
                for name, run in paths_of(old_dmon, old_store, headers, bursts, burst_paths=False).items()
            }
        )
        # The working tree's modules again, imported afresh after the old copy's.
        for name in [name for name in sys.modules if name.startswith("trainmon_tui")]:
            del sys.modules[name]
    dmon = importlib.import_module("trainmon_tui.parsers.dmon")
    store = importlib.import_module("trainmon_tui.state.store")
    paths.update(paths_of(dmon, store, headers, bursts, burst_paths=True))

    print(f"capture: {args.capture.name}; {len(bursts)} bursts of {args.burst} rows", end="")
    print(f" (headers before every {args.header_every}th)" if args.header_every else "", end="")
    print(f"; {rows} lines; {args.rounds} rounds interleaved; Python {sys.version.split()[0]}")
    print(f"load average before: {_load()}")
    times, samples = time_paths(paths, args.rounds)
    print(f"load average after:  {_load()}")
    print("\n| path | median CPU s | us/row | min-max us/row |\n|---|---:|---:|---:|")
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        low, high = min(values) / samples * 1e6, max(values) / samples * 1e6
        print(f"| {name} | {median[name]:.3f} | {median[name] / samples * 1e6:.2f} | {low:.2f}-{high:.2f} |")
    print()
    pairs = [("per line", "per burst"), ("parse: feed per line", "parse: feed_lines per burst")]
    if args.before is not None:
        pairs[:0] = [
            ("before: per line", "per burst"),
            ("before: parse: feed per line", "parse: feed_lines per burst"),
        ]
    for old, new in pairs:
        print(f"{old} / {new}: {median[old] / median[new]:.2f}x")


if __name__ == "__main__":
    main()
