"""`trainmon-tui report`: collect from every configured host for a while, then print one status report.

Exit status: 0 when every host was up at the end, 1 when any was not (down, failing or still connecting),
2 when the hosts file is wrong (one ``file:line: problem`` line on stderr, no traceback). The command ends
on time whatever the hosts do: collection lasts ``seconds``, the report is printed at once, and shutting
the connections down is bounded. If a connection still has not closed by then, the process exits anyway:
its SSH connections die with it, and the remote wrapper kills every command we started when they do.

Health alerts: a :class:`~trainmon_tui.analysis.health.HealthMonitor` judges a snapshot every
:data:`TICK_S` seconds of the window and the final one, so rules that need a history (idle GPUs, stalls,
loss spikes) see it as it happened; the report lists what it concluded first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from trainmon_tui.analysis.alerts import Alert
from trainmon_tui.analysis.health import HealthMonitor
from trainmon_tui.config import Config, ConfigError, load_config
from trainmon_tui.report import ReportOptions, RunHints, build_report, hosts_not_up, render_markdown
from trainmon_tui.state.store import Store, StoreSnapshot
from trainmon_tui.transport.fleet import DEFAULT_STOP_TIMEOUT_S, Fleet

DEFAULT_SECONDS = 10.0
FORMATS = ("markdown", "json")
EXIT_OK = 0
EXIT_HOSTS_NOT_UP = 1
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
# How often the health monitor is shown a snapshot while collecting.
TICK_S = 1.0
_LOG_FORMAT = "trainmon-tui: %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True, slots=True)
class Collected:
    """What a collection window produced, and whether everything shut down in time afterwards."""

    snapshot: StoreSnapshot
    stopped_cleanly: bool


def report_options(
    config: Config, seconds: float, generated_at: datetime | None, alerts: Sequence[Alert] = ()
) -> ReportOptions:
    """Statistics over the collection window, what the config knows about each run, and the alerts."""
    hints = {run.name: RunHints(process=run.process, total_steps=run.total_steps) for run in config.runs}
    return ReportOptions(window_s=seconds, generated_at=generated_at, runs=hints, alerts=tuple(alerts))


def render(snapshot: StoreSnapshot, options: ReportOptions, output_format: str) -> str:
    report = build_report(snapshot, options)
    if output_format == "json":
        return json.dumps(report, indent=2, allow_nan=False) + "\n"
    return render_markdown(report, options)


async def collect(
    config: Config,
    seconds: float,
    *,
    on_snapshot: Callable[[StoreSnapshot], None],
    on_tick: Callable[[StoreSnapshot], object] | None = None,
    tick_s: float = TICK_S,
    clock: Callable[[], float] = time.monotonic,
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
) -> Collected:
    """Run the fleet for ``seconds`` (showing ``on_tick`` a snapshot every ``tick_s``), hand the final
    snapshot to ``on_snapshot`` at once, then stop the fleet."""
    store = Store()
    fleet = Fleet(config, store, clock=clock)
    await fleet.start()
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            await asyncio.sleep(min(tick_s, left))
            if on_tick is not None and loop.time() < end:
                on_tick(store.snapshot(clock()))
        snapshot = store.snapshot(clock())
        on_snapshot(snapshot)
    finally:
        stopped = await fleet.stop(stop_timeout_s)
    return Collected(snapshot, stopped)


def run_report(
    hosts_file: str,
    *,
    seconds: float = DEFAULT_SECONDS,
    output_format: str = "markdown",
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """The whole command: load the config, collect, print the report; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if output_format not in FORMATS:
        raise ValueError(f"unknown format {output_format!r}")
    try:
        config = load_config(hosts_file)
    except ConfigError as error:
        print(f"trainmon-tui report: {error}", file=err)
        return EXIT_CONFIG_ERROR
    _configure_logging(err)
    monitor = HealthMonitor(config)

    def print_report(snapshot: StoreSnapshot) -> None:
        alerts = monitor.update(snapshot)
        generated_at = datetime.now().astimezone().replace(microsecond=0)
        options = report_options(config, seconds, generated_at, alerts)
        out.write(render(snapshot, options, output_format))
        out.flush()

    try:
        collected = asyncio.run(collect(config, seconds, on_snapshot=print_report, on_tick=monitor.update))
    except KeyboardInterrupt:
        print("trainmon-tui report: interrupted", file=err)
        return EXIT_INTERRUPTED
    status = EXIT_HOSTS_NOT_UP if hosts_not_up(collected.snapshot) else EXIT_OK
    if not collected.stopped_cleanly:
        # Something still waits on a host that stopped answering; the report is out, so do not wait for it.
        err.flush()
        os._exit(status)
    return status


def _configure_logging(err: IO[str]) -> None:
    """Warnings and errors (a host going down, a collector failing) go to stderr, one line each."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(err)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
