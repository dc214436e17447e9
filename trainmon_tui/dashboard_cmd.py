"""`trainmon-tui` (the dashboard): compose config -> Store + Fleet -> snapshot source -> app, and run it.

This is the composition root: the one module that imports both the collection (transport) and the UI, which
never import each other. It loads the hosts file (a mistake is one ``file:line: message`` line on stderr and
exit status 2), or watches this machine when there is none, or starts the simulated demo cluster; it builds
a :class:`StoreSource` (a :class:`~trainmon_tui.state.store.Store` fed by a
:class:`~trainmon_tui.transport.fleet.Fleet`) and runs :class:`~trainmon_tui.ui.app.TrainmonApp` on it in
the same event loop, with a :class:`~trainmon_tui.analysis.health.HealthMonitor` judging each snapshot for the
alerts panel (merged with the log events it no longer counts, see
:class:`~trainmon_tui.ui.widgets.alert_rows.PanelAlerts`).

Logging never writes over the TUI: records go to ``$XDG_STATE_HOME/trainmon-tui/dashboard.log`` (default
``~/.local/state/trainmon-tui/dashboard.log``), or nowhere if that file cannot be opened.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from trainmon_tui.analysis.health import HealthMonitor
from trainmon_tui.config import Config, ConfigError, load_config
from trainmon_tui.report import RunHints
from trainmon_tui.state.store import Store, StoreSnapshot
from trainmon_tui.ui.app import TrainmonApp
from trainmon_tui.ui.widgets.alert_rows import PanelAlerts

if TYPE_CHECKING:
    # The collection side (asyncssh) is imported when collection starts, after the first frame.
    from trainmon_tui.transport.fleet import Fleet

EXIT_OK = 0
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
LOG_FILE_NAME = "dashboard.log"
#: How long stopping may take before the connections are left to die with the process (as Fleet's default).
STOP_TIMEOUT_S = 5.0
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StoreSource:
    """The live collection as the dashboard sees it: a Store that a Fleet fills, read at ``clock()``.

    ``start`` opens the connections in the background and returns at once; ``stop`` stops every collector
    and closes every connection within ``stop_timeout_s`` (idempotent). ``stopped_cleanly`` says whether
    the last stop ended in time.
    """

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
        fleet_factory: Callable[..., Fleet] | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ):
        self.store = store or Store()
        self.clock = clock
        self.config = config
        self._fleet_factory = fleet_factory
        self._fleet: Fleet | None = None
        self.stop_timeout_s = stop_timeout_s
        self.stopped_cleanly = True
        self._started = False

    @property
    def fleet(self) -> Fleet:
        """The collection, built on first use (so importing this module does not import asyncssh)."""
        if self._fleet is None:
            factory = self._fleet_factory
            if factory is None:
                from trainmon_tui.transport.fleet import Fleet  # noqa: PLC0415

                factory = Fleet
            self._fleet = factory(self.config, self.store, clock=self.clock)
        return self._fleet

    @property
    def version(self) -> int:
        return self.store.version

    def snapshot(self) -> StoreSnapshot:
        return self.store.snapshot(self.clock())

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.fleet.start()

    async def stop(self) -> None:
        if self._started:
            self.stopped_cleanly = await self.fleet.stop(self.stop_timeout_s) and self.stopped_cleanly


def log_file_path(environ: dict[str, str] | None = None) -> Path:
    """Where the dashboard logs: ``$XDG_STATE_HOME/trainmon-tui/dashboard.log``, XDG's default otherwise."""
    env = os.environ if environ is None else environ
    state_home = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "trainmon-tui" / LOG_FILE_NAME


def configure_logging(path: Path) -> Path | None:
    """Send warnings and errors to ``path`` (never to the terminal the TUI draws on); None: nowhere."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, logging.StreamHandler) and not isinstance(existing, logging.FileHandler):
            root.removeHandler(existing)
    handler: logging.Handler
    written_to: Path | None = path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        handler, written_to = logging.NullHandler(), None
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    return written_to


def run_hints(config: Config) -> dict[str, RunHints]:
    return {run.name: RunHints(process=run.process, total_steps=run.total_steps) for run in config.runs}


def dashboard_title(config: Config) -> str:
    if config.source.startswith("<"):
        return "this machine" if config.source == "<local default>" else config.source.strip("<>")
    return os.path.basename(config.source)


async def run_app(
    config: Config, *, title: str | None = None, fleet_factory: Callable[..., Fleet] | None = None
) -> tuple[int, bool]:
    """Run the dashboard on ``config`` until the user quits; (exit status, stopped cleanly)."""
    source = StoreSource(config, fleet_factory=fleet_factory)
    app = TrainmonApp(
        source,
        title=title or dashboard_title(config),
        run_hints=run_hints(config),
        alerts_provider=PanelAlerts(HealthMonitor(config)),
    )
    try:
        status = await app.run_async()
    finally:
        # The app stops the source when the user quits; this covers every other way out.
        await source.stop()
    return (EXIT_OK if status is None else status), source.stopped_cleanly


async def run_demo_app() -> tuple[int, bool]:
    """The dashboard on the built-in simulated cluster: in-process SSH servers on loopback, collected by the
    same Fleet as real hosts (sessions that ignore the user's ~/.ssh/config and agent)."""
    from trainmon_tui.demo import DemoCluster  # noqa: PLC0415
    from trainmon_tui.transport.fleet import Fleet  # noqa: PLC0415

    async with DemoCluster() as cluster:
        fleet_factory = functools.partial(Fleet, session_factory=DemoCluster.session_factory)
        return await run_app(cluster.config, title="demo", fleet_factory=fleet_factory)


def run_dashboard(
    config: Config | None = None,
    *,
    hosts_file: str | None = None,
    demo: bool = False,
    err: IO[str] | None = None,
) -> int:
    """The whole command: pick the config (demo, hosts file, or this machine), run the app; exit status."""
    err = err or sys.stderr
    if demo:
        runner = run_demo_app()
    else:
        if config is None:
            try:
                config = load_config(hosts_file) if hosts_file is not None else Config.local_default()
            except ConfigError as error:
                print(f"trainmon-tui: {error}", file=err)
                return EXIT_CONFIG_ERROR
        runner = run_app(config)
    configure_logging(log_file_path())
    try:
        status, clean = asyncio.run(runner)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if not clean:
        # A host that stopped answering still holds a connection: the terminal is back, do not wait for it.
        err.flush()
        os._exit(status)
    return status
