"""Benchmark of the dashboard process: CPU while it shows a big fleet, and time to first paint.

The workload of issue 4: 64 hosts x 8 GPUs sampled at 1 Hz, served by the demo simulator in a separate process
(``python -m trainmon_tui.demo serve --no-drop``: in-process SSH servers on loopback; a ``ps`` table of every
rank per host; on a cluster this big one log per host, written by the node's local rank 0 at about a line per
second, as issue 3 defines the collection workload: about 60 lines/s in all), watched by a real
``trainmon-tui --hosts FILE`` running in a pseudo-terminal of 200x60 whose output this script drains (as a
terminal emulator would). The dashboard collects over SSH and repaints at its normal rate.

Measured, per approach, in the same run against the same simulator, in rounds (``--rounds``) that take the
approaches in turn, so a change in the box's load hits all of them alike:

* **first paint** - from starting the process to the first frame on the terminal (the alternate screen is
  entered and a frame's worth of text follows: the process imports, builds the app and paints once); the
  median of ``--paint-starts`` starts per app, taken in turn before the CPU rounds, after one unmeasured
  start each (byte code of files edited since the last run is compiled then, not in a measured start);
* **hosts up** - when the dashboard's status line first says every host is up (``│ 64 up``), read from the
  terminal output; CPU windows start once the process's CPU has settled after that (:func:`settle`: the
  logs every host replays on connect are parsed then, for tens of seconds on a big fleet);
* **CPU** - user + system time of the dashboard process (``/proc/PID/stat``) over windows of wall time, as a
  percentage of one core; the median of every window of every round. The simulator's CPU and the load
  average over the same windows are reported beside it.

Approaches:

* **bare Textual app** - an app with one static line and nothing to do, in the same terminal: the floor that
  the framework itself costs when idle (the baseline the ratios are taken to);
* **collection only** - ``trainmon-tui report --seconds N`` against the same hosts: the SSH collection and the
  store without any UI, to tell collection from rendering (its own work: a snapshot and the health rules
  once a second);
* **dashboard** - the product at its normal repaint rate (1 Hz);
* **dashboard at 2 Hz** - the same with ``trainmon_tui.ui.app.DEFAULT_REFRESH_HZ`` set to the 2 Hz maximum;
* **dashboard before** - a copy of the working tree whose drawing and health files (:data:`COMPARED_FILES`:
  the row lists, the fleet view, the loss chart, the health rules) are those of git revision ``--base``
  (default HEAD), run the same way against the same simulator; ``--base none`` skips it.

Besides, the import cost of the dashboard command (``import trainmon_tui.dashboard_cmd`` in a fresh
interpreter, median of ``--import-repeats``), the part of first paint that is not Textual's.

Run: ``.venv/bin/python benchmarks/bench_dashboard.py`` (about 12 minutes with the defaults); ``--rounds 1
--windows 2 --window-s 10 --base none`` for a quick look. Targets: dashboard <= 8 % of one core, first paint
<= 1 s.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_CPU_PCT = 8.0
TARGET_FIRST_PAINT_S = 1.0
COLUMNS, ROWS = 200, 60
# Entering the alternate screen is the first thing a Textual app writes once it starts drawing.
ALT_SCREEN = b"\x1b[?1049h"
# The dashboard's status line: "hosts.yaml │ 63 up · 1 connecting │ 512 GPUs │ ...".
HOSTS_UP = re.compile(rb"\xe2\x94\x82 (\d+) up\b")
# Output kept to look for the status line in (a whole 200x60 frame is well under this).
_KEEP_BYTES = 256 * 1024
BARE_APP = textwrap.dedent(
    """
    from textual.app import App, ComposeResult
    from textual.widgets import Static

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield Static("bare textual app")

    Bare().run()
    """
)
# The files of the dashboard's own work per repaint (drawing, health rules); "before" is the working tree with
# these as of --base, so other work in progress in the tree is in both and the comparison isolates them.
COMPARED_FILES = (
    "trainmon_tui/ui/widgets/row_list.py",
    "trainmon_tui/ui/widgets/fleet_view.py",
    "trainmon_tui/ui/widgets/loss_chart.py",
    "trainmon_tui/analysis/health.py",
    "trainmon_tui/analysis/health_rules.py",
)
# The dashboard with another default repaint rate: the module constant is read when the app is built.
RATE_HARNESS = textwrap.dedent(
    """
    import sys
    import trainmon_tui.ui.app as app
    app.DEFAULT_REFRESH_HZ = float(sys.argv[1])
    from trainmon_tui.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


@dataclass(slots=True)
class Measured:
    """Everything measured for one approach, over all rounds."""

    name: str
    first_paint_s: list[float] = field(default_factory=list)
    up_after_s: list[float | None] = field(default_factory=list)
    hosts_up: list[int | None] = field(default_factory=list)
    settled_after_s: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)
    simulator_pct: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    output_bytes_per_s: list[float] = field(default_factory=list)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (not its children), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class PtyProcess:
    """A child process on its own pseudo-terminal, whose output is drained, counted and searched."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        self.started = time.monotonic()
        pid, fd = pty.fork()
        if pid == 0:  # the child
            os.chdir(cwd)
            os.execvpe(argv[0], list(argv), env)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.received = 0
        self.recent = b""
        self.alive = True

    def drain(self, seconds: float, until: bytes | None = None) -> bool:
        """Read output for up to ``seconds``; True as soon as ``until`` appeared (when given)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and self.alive:
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.05))
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.alive = False  # the child is gone
                break
            self.received += len(chunk)
            # What ``until`` may straddle: the end of the output before this chunk, and the chunk.
            window = self.recent[-len(until) :] + chunk if until else b""
            self.recent = (self.recent + chunk)[-_KEEP_BYTES:]
            if until is not None and until in window:
                return True
        return False

    def first_paint(self, limit_s: float = 30.0) -> float | None:
        """Seconds from start until the alternate screen was entered and a frame with text followed."""
        if not self.drain(limit_s, ALT_SCREEN):
            return None
        # The first frame follows the mode switch in the same burst or the next one.
        before = self.received
        deadline = time.monotonic() + limit_s
        while self.received - before < 200 and time.monotonic() < deadline and self.alive:
            self.drain(0.01)
        return time.monotonic() - self.started

    def hosts_up(self) -> int | None:
        """How many hosts the status line said were up, the last time it was drawn."""
        found = HOSTS_UP.findall(self.recent)
        return int(found[-1]) if found else None

    def wait_for_hosts(self, hosts: int, limit_s: float) -> float | None:
        """Seconds from start until every host was up (None: not within ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and self.alive:
            self.drain(0.5)
            if self.hosts_up() == hosts:
                return time.monotonic() - self.started
        return None

    def stop(self) -> None:
        try:
            os.write(self.fd, b"q")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                self.drain(0.1)
                done, _ = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    break
            else:
                os.kill(self.pid, signal.SIGTERM)
                os.waitpid(self.pid, 0)
        except (OSError, ChildProcessError):
            pass
        finally:
            os.close(self.fd)


def _env(pythonpath: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(ROWS), COLORTERM="")
    env.pop("TEXTUAL", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def settle(process: PtyProcess, args: argparse.Namespace) -> float:
    """Drain for at least ``args.settle_s``, then until the process's CPU settled (two 5 s windows within
    15 % of each other, below 90 % of a core) or ``args.settle_max_s`` passed; returns seconds since the
    process started.

    Hosts are "up" once connected; the logs each host replays (``tail -n 500`` of every rank's log) are
    parsed after that, for tens of seconds on a big fleet, with the process using all the core it gets:
    windows taken then would measure the replay.
    """
    began = time.monotonic()
    previous: float | None = None
    while time.monotonic() - began < args.settle_max_s and process.alive:
        wall, cpu = time.monotonic(), _cpu_seconds(process.pid)
        process.drain(5.0)
        rate = (_cpu_seconds(process.pid) - cpu) / (time.monotonic() - wall)
        steady = previous is not None and rate < 0.9 and abs(rate - previous) <= 0.15 * previous
        if steady and time.monotonic() - began >= args.settle_s:
            break
        previous = rate
    return time.monotonic() - process.started


def cpu_windows(
    pid: int, simulator: int, args: argparse.Namespace, drain: PtyProcess | None, into: Measured
) -> None:
    """Measure ``args.windows`` windows of the process's CPU (and the simulator's), draining its terminal."""
    received_at_start = drain.received if drain is not None else 0
    started = time.monotonic()
    for _ in range(args.windows):
        wall, cpu, sim = time.monotonic(), _cpu_seconds(pid), _cpu_seconds(simulator)
        if drain is not None:
            drain.drain(args.window_s)
        else:
            time.sleep(args.window_s)
        took = time.monotonic() - wall
        into.cpu_pct.append(100.0 * (_cpu_seconds(pid) - cpu) / took)
        into.simulator_pct.append(100.0 * (_cpu_seconds(simulator) - sim) / took)
        into.loads.append(_load())
    if drain is not None:
        into.output_bytes_per_s.append((drain.received - received_at_start) / (time.monotonic() - started))


def measure_tui(
    into: Measured,
    argv: Sequence[str],
    args: argparse.Namespace,
    simulator: int,
    *,
    wait_hosts: bool,
    cwd: Path = ROOT,
    pythonpath: Path | None = None,
) -> float | None:
    """One round of one terminal app; returns when its hosts were all up (None: not, or not asked)."""
    process = PtyProcess(argv, _env(pythonpath), cwd)
    up_after = None
    try:
        process.first_paint()
        if wait_hosts:
            up_after = process.wait_for_hosts(args.hosts, args.up_timeout_s)
            into.up_after_s.append(up_after)
        into.settled_after_s.append(settle(process, args))
        if wait_hosts:
            into.hosts_up.append(process.hosts_up())
        cpu_windows(process.pid, simulator, args, process, into)
        if wait_hosts:
            # The count at the end of the windows: a host that fell over meanwhile would show here.
            into.hosts_up[-1] = process.hosts_up()
    finally:
        process.stop()
    return up_after


def measure_collection(
    into: Measured, hosts_file: Path, args: argparse.Namespace, simulator: int, warmup_s: float
) -> None:
    """``report`` collecting for the length of the warm-up and the windows; CPU of the windows only."""
    seconds = warmup_s + args.windows * args.window_s + 5
    command = [sys.executable, "-m", "trainmon_tui", "report", "--hosts", str(hosts_file)]
    process = subprocess.Popen(
        [*command, "--seconds", f"{seconds:g}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        time.sleep(warmup_s)
        cpu_windows(process.pid, simulator, args, None, into)
    finally:
        process.wait(timeout=seconds + 120)


def first_paints(
    approaches: Sequence[tuple[Measured, Sequence[str], Path, Path | None]], starts: int
) -> None:
    """Start each app ``starts`` times in turn, only to time its first paint (it quits right after). One
    unmeasured start of each comes first: it compiles what changed since the last run (byte code of files
    edited meanwhile), which a measured start must not pay for."""
    for number in range(starts + 1):
        for into, argv, cwd, pythonpath in approaches:
            process = PtyProcess(argv, _env(pythonpath), cwd)
            try:
                paint = process.first_paint()
            finally:
                process.stop()
            if number and paint is not None:
                into.first_paint_s.append(paint)


def import_seconds(repeats: int) -> list[float]:
    """Wall seconds of ``import trainmon_tui.dashboard_cmd`` in a fresh interpreter, and of bare textual."""
    took = []
    for module in ("textual.app", "trainmon_tui.dashboard_cmd"):
        runs = []
        for _ in range(repeats):
            began = time.monotonic()
            subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True)
            runs.append(time.monotonic() - began)
        took.append(statistics.median(runs))
    return took


def start_simulator(hosts: int, gpus: int, config_out: Path) -> subprocess.Popen[bytes]:
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainmon_tui.demo",
            "serve",
            "--no-drop",
            "--hosts",
            str(hosts),
            "--gpus",
            str(gpus),
            "--config-out",
            str(config_out),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    # The simulator writes the file whole (and renames it) once every server listens.
    while not config_out.exists():
        if simulator.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the demo simulator did not start (python -m trainmon_tui.demo serve)")
        time.sleep(0.1)
    return simulator


def export_tree(revision: str, into: Path) -> str:
    """A copy of the working tree's package under ``into``, :data:`COMPARED_FILES` as of ``revision`` (read
    with read-only git commands); returns the revision's short commit id."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    shutil.copytree(
        ROOT / "trainmon_tui", into / "trainmon_tui", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in COMPARED_FILES:
        text = subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        (into / path).write_bytes(text)
    return commit


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def report(
    results: Sequence[Measured], args: argparse.Namespace, load: float, imports: Sequence[float]
) -> str:
    floor = _median(results[0].cpu_pct) or 0.0
    lines = [
        f"## Dashboard: {args.hosts} hosts x {args.gpus} GPUs at 1 Hz, {COLUMNS}x{ROWS} terminal",
        "",
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load:.2f} at the start; simulator in a separate process. {args.rounds} round(s); per round and "
        f"approach {args.windows} windows of {args.window_s:g} s once the CPU settled after every host "
        f"was up; first paint: median of {args.paint_starts} starts. CPU of the measured process only, "
        "median of all its windows.",
        "",
        "| approach | first paint (median) | all hosts up after | CPU settled after | CPU % of one core "
        "(median) | min - max | x floor | simulator CPU % | load avg | terminal output |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        cpu = _median(result.cpu_pct)
        ups = [value for value in result.up_after_s if value is not None]
        up_text = "-"
        if result.up_after_s:
            counts = "/".join("?" if count is None else str(count) for count in result.hosts_up)
            up_text = f"{_fmt(_median(ups), '.1f', ' s')} ({counts} up)"
            if len(ups) < len(result.up_after_s):
                up_text += f", {len(result.up_after_s) - len(ups)} round(s) never all up"
        lines.append(
            f"| {result.name} | {_fmt(_median(result.first_paint_s), '.2f', ' s')} | {up_text} | "
            f"{_fmt(_median(result.settled_after_s) if result.up_after_s else None, '.0f', ' s')} | "
            f"{_fmt(cpu, '.2f')} | {min(result.cpu_pct):.2f} - {max(result.cpu_pct):.2f} | "
            f"{_fmt(None if cpu is None or not floor else cpu / floor, '.0f', 'x')} | "
            f"{_fmt(_median(result.simulator_pct), '.1f')} | "
            f"{min(result.loads):.2f} - {max(result.loads):.2f} | "
            f"{_fmt(_median(result.output_bytes_per_s), '.1f') if result.output_bytes_per_s else '-'}"
            f"{' B/s' if result.output_bytes_per_s else ''} |"
        )
    dashboard = results[2]
    cpu = _median(dashboard.cpu_pct) or 0.0
    paint = _median(dashboard.first_paint_s)
    textual_s, dashboard_s = imports
    lines += [
        "",
        f"- import in a fresh interpreter (median of {args.import_repeats}): `textual.app` "
        f"{textual_s:.2f} s, `trainmon_tui.dashboard_cmd` {dashboard_s:.2f} s",
        f"- targets: CPU <= {TARGET_CPU_PCT:g} % -> {'met' if cpu <= TARGET_CPU_PCT else 'NOT met'} "
        f"({cpu:.2f}); first paint <= {TARGET_FIRST_PAINT_S:g} s -> "
        f"{'met' if paint is not None and paint <= TARGET_FIRST_PAINT_S else 'NOT met'} "
        f"({_fmt(paint, '.2f', ' s')})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="times every approach is measured, in turn")
    parser.add_argument("--windows", type=int, default=3, help="CPU windows per approach and round")
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--settle-s", type=float, default=10.0, help="least wait after every host is up")
    parser.add_argument("--settle-max-s", type=float, default=90.0, help="most wait for the CPU to settle")
    parser.add_argument("--up-timeout-s", type=float, default=120.0, help="give up waiting for hosts after")
    parser.add_argument("--base", default="HEAD", help="git revision to compare with ('none' skips it)")
    parser.add_argument("--import-repeats", type=int, default=5)
    parser.add_argument("--paint-starts", type=int, default=5, help="measured starts per app for first paint")
    args = parser.parse_args(argv)
    load = _load()
    imports = import_seconds(args.import_repeats)
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch_dir:
        scratch = Path(scratch_dir)
        hosts_file = scratch / "hosts.yaml"
        bare = scratch / "bare_app.py"
        bare.write_text(BARE_APP)
        harness = scratch / "rate_harness.py"
        harness.write_text(RATE_HARNESS)
        results = [
            Measured("bare Textual app (floor)"),
            Measured("collection only (`report`, no UI)"),
            Measured("trainmon-tui dashboard, 1 Hz (normal)"),
            Measured("trainmon-tui dashboard at 2 Hz"),
        ]
        base_tree: Path | None = None
        if args.base != "none":
            base_tree = scratch / "base"
            commit = export_tree(args.base, base_tree)
            results.append(Measured(f"dashboard with the drawing and health files of {commit} (before)"))
        dashboard = [sys.executable, "-m", "trainmon_tui", "--hosts", str(hosts_file)]
        bare_argv = [sys.executable, str(bare)]
        rate = [sys.executable, str(harness), "2", "--hosts", str(hosts_file)]
        simulator = start_simulator(args.hosts, args.gpus, hosts_file)
        try:
            painted: list[tuple[Measured, Sequence[str], Path, Path | None]] = [
                (results[0], bare_argv, ROOT, None),
                (results[2], dashboard, ROOT, None),
            ]
            if base_tree is not None:
                painted.append((results[4], dashboard, base_tree, base_tree))
            first_paints(painted, args.paint_starts)
            for round_number in range(args.rounds):
                measure_tui(results[0], bare_argv, args, simulator.pid, wait_hosts=False)
                up_after = measure_tui(results[2], dashboard, args, simulator.pid, wait_hosts=True)
                warmup = (up_after or args.up_timeout_s) + args.settle_s
                measure_collection(results[1], hosts_file, args, simulator.pid, warmup)
                measure_tui(results[3], rate, args, simulator.pid, wait_hosts=True)
                if base_tree is not None:
                    measure_tui(
                        results[4],
                        dashboard,
                        args,
                        simulator.pid,
                        wait_hosts=True,
                        cwd=base_tree,
                        pythonpath=base_tree,
                    )
                print(f"round {round_number + 1} done", file=sys.stderr, flush=True)
                for result in results:
                    print(result, file=sys.stderr, flush=True)
        finally:
            simulator.send_signal(signal.SIGINT)
            try:
                simulator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                simulator.kill()
    print(report(results, args, load, imports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
