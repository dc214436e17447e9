"""Benchmark: CPU cost of collecting from a fleet over SSH, trainmon's way against `ssh` spawned every second.

A separate *server* process (this script with ``--serve``) starts 32 real OpenSSH servers on loopback
(127.0.1.1 ...) with the integration tests' harness. Each fake host has 8 GPUs: its stand-in ``nvidia-smi``
prints a recorded 8-GPU ``dmon`` capture once a second, and a writer appends one line of a recorded Megatron
log per second to each host's log file (its "iteration" lines in turn; 16 of those 18 lines carry a
training record, so 32 lines/s make about 28.4 records/s). Only the *collecting* process is measured, with
``time.process_time()`` (plus ``RUSAGE_CHILDREN`` for the `ssh` clients the naive approach spawns), in windows
of wall time after a warm-up; the servers' CPU is someone else's.

Approaches, one after the other in the same run against the same servers:

* **streams only** - the same two streams per host (``dmon``, ``tail -F``) read and thrown away unparsed: the
  floor that SSH transport alone costs, to tell it apart from parsing and storing;
* **trainmon, GPU + logs** - the fleet with the GPU collector (one long-running ``dmon`` per host, every row
  parsed and stored, plus the ``--query-gpu`` inventory every 5 min) and the log collector (``tail -F``, every
  line parsed and stored, plus its file listing every 30 s, backing off to every 2 min while it stays the
  same) per host: exactly the brief's workload;
* **trainmon, all collectors** - the default plan, which also lists processes with ``ps`` every 5 s per host
  (one long-running ``sh`` loop per host, read as a stream) and
  ``--query-compute-apps`` when the processes that matter change or every 15 s (on loopback every fake
  host lists the whole machine's processes, several hundred).
  Every line of each listing is split to find the processes that matter (a run's pattern, GPU holders, their
  parents and children); only those are parsed, cleaned and stored. The runs here name no ``process``
  pattern, so little beyond GPU holders is parsed: a fleet whose runs do pays for a few dozen more lines;
* **naive** - what a script does: per host, ``ssh host nvidia-smi --query-gpu=... --format=csv`` every
  second with the real OpenSSH client (a fresh connection each time), output parsed.

Every approach uses the transport as the app does: AES-GCM where the server offers it, output taken from
the channel callbacks, sockets read and stream readers woken for new lines together on a 0.5 s grid (a
line waits at most that long; trainmon_tui/transport/ticks.py), periodic waits rounded up to that grid;
the CPU a stream costs depends much on how many separate wake-ups it causes.

Prints a Markdown table (median CPU of the windows, min-max, CPU per host per second, work done, how long
the fleet took to stop) and the ratios. The naive script cannot keep up (each call is a full SSH handshake),
so it is compared by CPU per host served per second, not by its total. Targets: trainmon <= 2 % of one core,
>= 20x cheaper than naive.

Run: ``.venv/bin/python benchmarks/bench_collect.py`` (as root, with openssh-server installed; about 5
minutes); ``--hosts 8 --windows 2 --window-s 10`` for a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # The harness lives with the integration tests; the benchmark runs as a plain script.
    sys.path.insert(0, str(REPO))

from tests.integration.sshd_harness import (  # noqa: E402
    FLEET_DMON_8GPU,
    FLEET_TRAINING_LOG,
    SshdHarness,
    fleet_hosts_yaml,
    make_fake_gpu_tools,
    sshd_path,
)
from trainmon_tui.config import Config, load_config  # noqa: E402
from trainmon_tui.model import GpuSample, LogRecord  # noqa: E402
from trainmon_tui.parsers.dmon import DMON_ARGV  # noqa: E402
from trainmon_tui.parsers.smi_csv import parse_query_gpu  # noqa: E402
from trainmon_tui.state.store import Store  # noqa: E402
from trainmon_tui.transport.fleet import (  # noqa: E402
    CollectorSpec,
    Fleet,
    HostPlanContext,
    default_plan,
)
from trainmon_tui.transport.runner import CommandRunner  # noqa: E402
from trainmon_tui.transport.ticks import DEFAULT_DELIVERY_TICK_S  # noqa: E402

GPUS_PER_HOST = 8
TARGET_CPU_PCT = 2.0
TARGET_RATIO = 20.0
NAIVE_FIELDS = ("index", "utilization.gpu", "memory.used", "memory.total", "temperature.gpu", "power.draw")


# ---------------------------------------------------------------------------------------------- the servers


def _log_writer(paths: Sequence[Path], lines: Sequence[str], stop: threading.Event) -> None:
    """One line a second into every host's log, cycling through the recorded iteration lines."""
    index = 0
    outputs = [path.open("a", encoding="utf-8") for path in paths]
    try:
        while not stop.wait(1.0):
            line = lines[index % len(lines)]
            index += 1
            for output in outputs:
                output.write(line + "\n")
                output.flush()
    finally:
        for output in outputs:
            output.close()


def serve(hosts: int) -> None:
    """Start the fake hosts, print where their config is, serve until stdin closes, then tear it all down."""
    sshd = sshd_path()
    if sshd is None:
        raise SystemExit("sshd is not installed (apt-get install openssh-server)")
    harness = SshdHarness.create(sshd)
    stop = threading.Event()
    writer: threading.Thread | None = None
    try:
        fake_hosts = {}
        log_paths = []
        for number in range(1, hosts + 1):
            name = f"bench-{number:02d}"
            tools = make_fake_gpu_tools(harness, name, interval_s=1.0, dmon=FLEET_DMON_8GPU)
            fake_hosts[name] = harness.start_host_with_bin(f"127.0.1.{number}", tools.bin_dir)
            log_dir = harness.root / f"{name}-logs"
            log_dir.mkdir(mode=0o755)
            # One file per host (its own name, so each host's collector follows its own log).
            log_paths.append(log_dir / f"{name}-rank0.log")
            log_paths[-1].touch(mode=0o644)
        iteration_lines = [
            line for line in FLEET_TRAINING_LOG.read_text().splitlines() if "iteration" in line
        ]
        runs = "runs:\n" + "".join(
            f"  - name: {name}\n    hosts: [{name}]\n    logs: ['{path}']\n"
            for name, path in zip(fake_hosts, log_paths, strict=True)
        )
        config = harness.root / "hosts.yaml"
        config.write_text(fleet_hosts_yaml(harness, fake_hosts, runs, keepalive_interval_s=5.0))
        writer = threading.Thread(target=_log_writer, args=(log_paths, iteration_lines, stop), daemon=True)
        writer.start()
        info = {
            "config": str(config),
            "user": harness.user,
            "key": str(harness.client_key),
            "known_hosts": str(harness.known_hosts),
            "hosts": [[host.address, host.port] for host in fake_hosts.values()],
        }
        print(json.dumps(info), flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin
    finally:
        stop.set()
        if writer is not None:
            writer.join()
        harness.close()


# ------------------------------------------------------------------------------------------- measurement


@dataclass(frozen=True, slots=True)
class Window:
    wall_s: float
    cpu_s: float
    gpu_rows: int
    log_records: int
    calls: int
    lines: int

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    windows: tuple[Window, ...]
    counters: Counters

    def median(self, field: Callable[[Window], float]) -> float:
        return statistics.median(field(window) for window in self.windows)


class Counters:
    gpu_rows = 0
    log_records = 0
    calls = 0
    lines = 0
    stop_s = 0.0


class CountingStore(Store):
    """The real store, counting what arrives (two integer increments per call: noise next to the rest)."""

    def __init__(self, counters: Counters) -> None:
        super().__init__()
        self.counters = counters

    def apply_gpu(self, host: str, sample: GpuSample, now: float) -> None:
        self.counters.gpu_rows += 1
        super().apply_gpu(host, sample, now)

    def apply_record(self, run: str, host: str, record: LogRecord, now: float) -> None:
        self.counters.log_records += 1
        super().apply_record(run, host, record, now)


def _cpu_seconds() -> float:
    """This process's CPU time plus that of its children that have ended (the naive approach's ssh)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


async def _measure(name: str, counters: Counters, warmup_s: float, windows: int, window_s: float) -> Result:
    await asyncio.sleep(warmup_s)
    measured: list[Window] = []
    for _ in range(windows):
        wall, cpu = time.monotonic(), _cpu_seconds()
        rows, records, calls, lines = counters.gpu_rows, counters.log_records, counters.calls, counters.lines
        await asyncio.sleep(window_s)
        measured.append(
            Window(
                time.monotonic() - wall,
                _cpu_seconds() - cpu,
                counters.gpu_rows - rows,
                counters.log_records - records,
                counters.calls - calls,
                counters.lines - lines,
            )
        )
    return Result(name, tuple(measured), counters)


def gpu_and_logs_plan(context: HostPlanContext) -> list[CollectorSpec]:
    """The default collectors less the process poller: the GPU stream and the log tail of each host."""
    return [spec for spec in default_plan(context) if spec.name != "processes"]


class _Discard:
    """Reads one remote command's output and throws it away: what the streams cost before any parsing."""

    def __init__(self, runner: CommandRunner, argv: Sequence[str], counters: Counters) -> None:
        self._runner = runner
        self._argv = tuple(argv)
        self._counters = counters

    async def run(self) -> None:
        await self._runner.wait_up()
        async with self._runner.stream(self._argv) as stream:
            async for _ in stream:
                self._counters.lines += 1
        await asyncio.Event().wait()


def transport_plan(counters: Counters) -> Callable[[HostPlanContext], list[CollectorSpec]]:
    """The same two streams per host (dmon, ``tail -F`` of the log), lines read and dropped unparsed."""

    def plan(context: HostPlanContext) -> list[CollectorSpec]:
        runner = context.runner
        logs = [path for run in context.runs for path in run.logs]
        return [
            CollectorSpec("dmon", lambda: _Discard(runner, DMON_ARGV, counters)),
            CollectorSpec("tail", lambda: _Discard(runner, ["tail", "-n", "0", "-F", "--", *logs], counters)),
        ]

    return plan


async def run_trainmon(
    name: str,
    config: Config,
    *,
    plan: Callable[[HostPlanContext], Sequence[CollectorSpec]],
    warmup_s: float,
    windows: int,
    window_s: float,
    counters: Counters | None = None,
) -> Result:
    counters = counters or Counters()
    store = CountingStore(counters)
    fleet = Fleet(config, store, plan=plan)
    await fleet.start()
    try:
        return await _measure(name, counters, warmup_s, windows, window_s)
    finally:
        stopping = time.monotonic()
        await fleet.stop(timeout=30.0)
        counters.stop_s = time.monotonic() - stopping


async def _naive_host(argv: list[str], counters: Counters, stop: asyncio.Event) -> None:
    """`while true; do ssh host nvidia-smi --query-gpu=...; sleep 1; done`, ticking on the second: a call
    still running when the next second starts makes that second's call wait (the script falls behind)."""
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    while not stop.is_set():
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        stdout, _ = await process.communicate()
        if parse_query_gpu(stdout.decode(errors="replace"), NAIVE_FIELDS):
            counters.calls += 1
        next_tick = max(next_tick + 1.0, loop.time())
        await asyncio.sleep(next_tick - loop.time())


async def run_naive(info: dict[str, object], warmup_s: float, windows: int, window_s: float) -> Result:
    counters = Counters()
    stop = asyncio.Event()
    query = ["nvidia-smi", "--query-gpu=" + ",".join(NAIVE_FIELDS), "--format=csv,noheader,nounits"]
    hosts = info["hosts"]
    assert isinstance(hosts, list)
    tasks = []
    for address, port in hosts:
        argv = [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(port),
            "-i",
            str(info["key"]),
            "-o",
            f"UserKnownHostsFile={info['known_hosts']}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            f"{info['user']}@{address}",
            *query,
        ]
        tasks.append(asyncio.create_task(_naive_host(argv, counters, stop)))
    try:
        name = "naive: `ssh host nvidia-smi --query-gpu` every second per host"
        return await _measure(name, counters, warmup_s, windows, window_s)
    finally:
        stop.set()
        await asyncio.wait(tasks)


# ---------------------------------------------------------------------------------------------- reporting


def _load() -> str:
    """The 1-minute load average: other work on the machine slows this process's own work too."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def _cpu_pct(result: Result) -> float:
    return result.median(lambda w: w.cpu_pct)


def _work(result: Result, hosts: int) -> str:
    if result.median(lambda w: w.calls):
        calls = result.median(lambda w: w.calls / w.wall_s)
        return (
            f"{calls:.1f} of {hosts} queries/s answered (falls behind)"
            if calls < 0.9 * hosts
            else (f"{calls:.1f} of {hosts} queries/s answered")
        )
    if result.median(lambda w: w.lines):
        return f"{result.median(lambda w: w.lines / w.wall_s):.0f} lines/s read, not parsed"
    rows = result.median(lambda w: w.gpu_rows / w.wall_s)
    records = result.median(lambda w: w.log_records / w.wall_s)
    return f"{rows:.0f} GPU rows/s, {records:.1f} log records/s"


def _host_seconds(result: Result, hosts: int) -> float:
    """Hosts served per second of wall time: every host for trainmon, the answered queries for naive."""
    if result.median(lambda w: w.calls):
        return result.median(lambda w: w.calls / w.wall_s)
    return float(hosts)


def _ms_per_host_second(result: Result, hosts: int) -> float:
    return 10.0 * _cpu_pct(result) / _host_seconds(result, hosts)


def _row(result: Result, hosts: int) -> str:
    cpu = [window.cpu_pct for window in result.windows]
    stop = f"{result.counters.stop_s:.2f} s" if result.counters.stop_s else "-"
    return (
        f"| {result.name} | {statistics.median(cpu):.2f} | {min(cpu):.2f} - {max(cpu):.2f} | "
        f"{_ms_per_host_second(result, hosts):.2f} | {_work(result, hosts)} | {stop} |"
    )


def report(results: Sequence[Result], naive: Result, hosts: int, args: argparse.Namespace) -> str:
    lines = [
        f"## Collection CPU: {hosts} hosts x {GPUS_PER_HOST} GPUs at 1 Hz + 1 log line/s/host",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, servers on "
        f"loopback in another process, load average {args.load_at_start} at the start. CPU of the "
        f"collecting process only (for naive, with its ssh children): median of {args.windows} windows of "
        f"{args.window_s:g} s "
        f"after {args.warmup_s:g} s of warm-up (naive: {args.naive_windows} x {args.naive_window_s:g} s). "
        f"Stream readers are woken every {DEFAULT_DELIVERY_TICK_S:g} s at most; ps listings are scanned "
        f"whole and only the processes that matter parsed (the runs here name no process pattern).",
        "",
        "| approach | CPU % of one core | min - max | CPU ms per host per second | work done | fleet stop |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_row(result, hosts) for result in (*results, naive)]
    naive_cost = _ms_per_host_second(naive, hosts)
    lines += [
        "",
        f"Naive needs {naive_cost:.1f} ms of CPU per host per second, so "
        f"{naive_cost * hosts / 10:.0f} % of a core to keep up with {hosts} hosts (here it answered "
        f"{_host_seconds(naive, hosts):.1f} queries/s). Ratios compare CPU per host per second:",
        "",
    ]
    for result in results:
        cpu = _cpu_pct(result)
        ratio = naive_cost / _ms_per_host_second(result, hosts)
        verdict = "meets" if cpu <= TARGET_CPU_PCT and ratio >= TARGET_RATIO else "misses"
        lines.append(
            f"- {result.name}: {cpu:.2f} % of a core, {ratio:.0f}x cheaper than naive; {verdict} the targets "
            f"(<= {TARGET_CPU_PCT:g} % of a core and >= {TARGET_RATIO:g}x)"
        )
    return "\n".join(lines)


async def bench(info: dict[str, object], args: argparse.Namespace) -> str:
    config = load_config(str(info["config"]))
    hosts = len(config.hosts)
    floor = Counters()
    plans: list[tuple[str, Callable[[HostPlanContext], Sequence[CollectorSpec]], Counters]] = [
        ("streams only: dmon + tail -F read, not parsed (floor)", transport_plan(floor), floor),
        ("trainmon, GPU + logs (dmon + tail -F per host)", gpu_and_logs_plan, Counters()),
        ("trainmon, all collectors (+ ps every 5 s, compute apps on change)", default_plan, Counters()),
    ]
    results = []
    for name, plan, counters in plans:
        results.append(
            await run_trainmon(
                name,
                config,
                plan=plan,
                warmup_s=args.warmup_s,
                windows=args.windows,
                window_s=args.window_s,
                counters=counters,
            )
        )
        print(_row(results[-1], hosts), file=sys.stderr, flush=True)
    naive = await run_naive(info, args.warmup_s / 2, args.naive_windows, args.naive_window_s)
    print(_row(naive, hosts), file=sys.stderr, flush=True)
    return report(results, naive, hosts, args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=32)
    parser.add_argument("--windows", type=int, default=3, help="measured windows per trainmon approach")
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--naive-windows", type=int, default=3)
    parser.add_argument("--naive-window-s", type=float, default=10.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.load_at_start = _load()
    if args.serve:
        serve(args.hosts)
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--hosts", str(args.hosts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        print(asyncio.run(bench(info, args)))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
