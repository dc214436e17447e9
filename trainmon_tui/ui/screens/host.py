"""One host up close: its connection status, a table of its GPUs and a table of its processes.

Reached with Enter on a host in the fleet. The GPU table shows index, SM%, the duty cycle (share of
the last 10 minutes at >= 50 % SM, :func:`~trainmon_tui.analysis.health_rules.duty_cycle`: what a one-off
SM% reading cannot tell), memory used/total, temperature, power, the rank(s) and pids holding memory on
each GPU, how old its newest reading is (in yellow past :data:`GPU_STALE_S`), clocks and model; the process
table is :class:`ProcessTable`. Enter on a process or a GPU that has a rank opens that rank's log
(:class:`~trainmon_tui.ui.screens.log.LogScreen`); Esc goes back. Unknown values are "-", never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from trainmon_tui.analysis.health_rules import duty_cycle
from trainmon_tui.analysis.health_settings import DEFAULT_BUSY_SM_PCT, DEFAULT_DUTY_WINDOW_S
from trainmon_tui.state.store import GpuSnapshot, HostSnapshot, HostState, StoreSnapshot
from trainmon_tui.ui.format import (
    UNKNOWN,
    fmt_duration,
    fmt_memory,
    fmt_number,
    fmt_pct,
    fmt_power,
    fmt_temp,
    shorten,
)
from trainmon_tui.ui.screens.log import LogScreen, run_of_rank
from trainmon_tui.ui.widgets.process_table import Cell, KeyedTable, ProcessTable

#: A GPU whose newest reading is older than this is drawn as stale (dmon prints every second).
GPU_STALE_S = 15.0
#: The duty cycle column: share of the last DUTY_WINDOW_S seconds at BUSY_SM_PCT % SM or more.
DUTY_WINDOW_S = DEFAULT_DUTY_WINDOW_S
BUSY_SM_PCT = DEFAULT_BUSY_SM_PCT
DUTY_TITLE = f"GPUs · duty: share of the last {DUTY_WINDOW_S / 60:g} min at >= {BUSY_SM_PCT:g}% SM"
_STALE_STYLE = "#ffd75f"
_DOWN_STYLE = "bold #ff5f5f"


def host_status_text(host: HostSnapshot | None, name: str, now: float) -> Text:
    """``gpu-node-01  up for 30m00s · 8 GPUs · 9 processes (read 1s ago)``, with why when down."""
    line = Text(f"{name}  ", style="bold")
    if host is None:
        line.append("no data from this host yet", style=_STALE_STYLE)
        return line
    status = host.status
    state_style = {HostState.UP: "bold #87d787", HostState.CONNECTING: _STALE_STYLE}.get(
        status.state, _DOWN_STYLE
    )
    line.append(f"{status.state.value} for {fmt_duration(now - status.since)}", style=state_style)
    if status.reason:
        line.append(f": {status.reason}", style=state_style)
    line.append(f" · {len(host.gpus)} GPUs · {len(host.processes)} processes")
    if host.processes_t is not None:
        line.append(f" (read {fmt_duration(now - host.processes_t)} ago)")
    if host.gpu_status is not None:
        line.append(f" · GPUs unreadable: {host.gpu_status.reason}", style=_DOWN_STYLE)
    return line


def _clocks(gpu: GpuSnapshot) -> str:
    sm, mem = gpu.latest.sm_clock_mhz, gpu.latest.mem_clock_mhz
    if sm is None and mem is None:
        return UNKNOWN
    return f"{fmt_number(sm)}/{fmt_number(mem)}"


def _power(gpu: GpuSnapshot) -> str:
    draw, limit = gpu.latest.power_w, gpu.latest.power_limit_w
    return fmt_power(draw) if limit is None else f"{fmt_power(draw)}/{fmt_power(limit)}"


def pids_by_gpu(host: HostSnapshot) -> dict[int, list[int]]:
    """GPU index -> the pids holding memory on it, lowest first."""
    holders: dict[int, list[int]] = {}
    for pid, gpus in host.gpu_of_pid.items():
        for gpu in gpus:
            holders.setdefault(gpu, []).append(pid)
    for pids in holders.values():
        pids.sort()
    return holders


def ranks_on_gpu(host: HostSnapshot, gpu: int) -> list[int]:
    """The ranks of the processes holding memory on ``gpu``, in order."""
    return sorted(
        {
            host.rank_of_pid[pid]
            for pid, gpus in host.gpu_of_pid.items()
            if gpu in gpus and pid in host.rank_of_pid
        }
    )


class GpuTable(KeyedTable):
    """The GPUs of one host; row keys are GPU indexes (as text)."""

    # What tells GPUs apart and what they do first, the model name last: at 80 columns the columns past the
    # right edge are a scroll away, and every GPU of a host is usually the same model.
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("gpu", "GPU"),
        ("sm", "SM%"),
        ("duty", "Duty"),
        ("memory", "Memory"),
        ("temp", "Temp"),
        ("power", "Power"),
        ("ranks", "Rank"),
        ("pids", "PIDs"),
        ("age", "Age"),
        ("clocks", "Clocks MHz"),
        ("name", "Name"),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.COLUMNS, id=id)

    def show(self, host: HostSnapshot, now: float) -> None:
        holders = pids_by_gpu(host)
        host_up = host.status.state is HostState.UP
        rows: list[tuple[str, Sequence[Cell]]] = []
        for gpu in host.gpus:
            sample = gpu.latest
            age = gpu.age_s(now)
            stale = age > GPU_STALE_S or not host_up
            ranks = ranks_on_gpu(host, gpu.gpu)
            duty = duty_cycle(gpu.history, now, DUTY_WINDOW_S, BUSY_SM_PCT)
            age_cell: Cell = (
                Text(f"stale {fmt_duration(age)}", style=_STALE_STYLE) if stale else fmt_duration(age)
            )
            rows.append(
                (
                    str(gpu.gpu),
                    (
                        str(gpu.gpu),
                        fmt_pct(sample.sm_pct),
                        fmt_pct(None if duty is None else 100.0 * duty),
                        fmt_memory(sample.fb_used_mib, sample.fb_total_mib),
                        fmt_temp(sample.gpu_temp_c),
                        _power(gpu),
                        ",".join(map(str, ranks)) if ranks else UNKNOWN,
                        ",".join(map(str, holders.get(gpu.gpu, []))) or UNKNOWN,
                        age_cell,
                        _clocks(gpu),
                        shorten(sample.name or UNKNOWN, 24),
                    ),
                )
            )
        self.show_rows(rows)


class HostScreen(Screen[None]):
    """One host's GPUs and processes; see the module docstring."""

    DEFAULT_CSS = """
    HostScreen #gpus {
        height: auto;
        max-height: 50%;
    }
    HostScreen #processes {
        height: 1fr;
    }
    HostScreen .table-title {
        height: 1;
        padding: 0 1;
        color: $foreground-muted;
        text-style: bold;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", show=True),
        Binding("tab", "focus_next", "Next table", show=True),
        Binding("enter", "open_log", "Rank's log", show=True),
    ]

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host
        self.snapshot: StoreSnapshot | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(self.host), id="status")
        yield Static(DUTY_TITLE, classes="table-title")
        yield GpuTable(id="gpus")
        yield Static("Processes", classes="table-title")
        yield ProcessTable(id="processes")
        yield Footer()

    @property
    def gpu_table(self) -> GpuTable:
        return self.query_one("#gpus", GpuTable)

    @property
    def process_table(self) -> ProcessTable:
        return self.query_one("#processes", ProcessTable)

    def on_mount(self) -> None:
        self.process_table.focus()
        snapshot = getattr(self.app, "latest_snapshot", None)
        if isinstance(snapshot, StoreSnapshot):
            self.show_snapshot(snapshot)

    def show_snapshot(self, snapshot: StoreSnapshot) -> None:
        self.snapshot = snapshot
        host = snapshot.hosts.get(self.host)
        self.query_one("#status", Static).update(host_status_text(host, self.host, snapshot.now))
        if host is None:
            return
        self.gpu_table.show(host, snapshot.now)
        self.process_table.show(host)

    # ------------------------------------------------------------------------------------------ drilling

    def action_back(self) -> None:
        self.app.pop_screen()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.open_log_of(event.data_table)

    def action_open_log(self) -> None:
        focused = self.focused
        if isinstance(focused, DataTable):
            self.open_log_of(focused)

    def open_log_of(self, table: DataTable[Cell]) -> None:
        """Open the log of the rank under the cursor of ``table`` (a process, or a GPU with one rank)."""
        snapshot = self.snapshot
        host = None if snapshot is None else snapshot.hosts.get(self.host)
        if snapshot is None or host is None:
            return
        rank: int | None = None
        if table is self.process_table:
            pid = self.process_table.pid_of_cursor()
            rank = None if pid is None else host.rank_of_pid.get(pid)
            if rank is None:
                self.notify(f"process {pid} has no rank", severity="warning")
                return
        elif table is self.gpu_table:
            key = self.gpu_table.key_of_cursor()
            ranks = [] if key is None else ranks_on_gpu(host, int(key))
            if not ranks:
                self.notify(f"no rank runs on GPU {key}", severity="warning")
                return
            rank = ranks[0]
        else:
            return
        run = run_of_rank(snapshot, self.host, rank)
        if run is None:
            self.notify(f"no run's log names rank {rank} on {self.host}", severity="warning")
            return
        self.app.push_screen(LogScreen(run=run, host=self.host, rank=rank, path=None, line=None))
