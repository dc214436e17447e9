"""A host's processes as a table (PID, rank, GPU, CPU%, RSS, elapsed, state, command), and the keyed table
it is built on.

:class:`KeyedTable` is a :class:`~textual.widgets.DataTable` whose rows have stable keys and are replaced
from a list at each snapshot: cells of rows that stay are updated in place, so the cursor stays on the same
process (not the same row number) while processes come and go. :class:`ProcessTable` fills one from a
:class:`~trainmon_tui.state.store.HostSnapshot`: ranked processes first in rank order, then the rest by pid;
unknown values are "-", a zombie says so in red, and command lines are cleaned of terminal control and
secrets again before they are drawn (they come from the host).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from trainmon_tui.model import ProcInfo, ProcState
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import HostSnapshot
from trainmon_tui.ui.format import UNKNOWN, fmt_duration, fmt_number, shorten

#: A command line is cut to this many characters in the table (the full one is rarely needed to tell ranks
#: apart, and a 4 kB argv would make every row that wide).
COMMAND_CHARS = 160

Cell = str | Text


class KeyedTable(DataTable[Cell]):
    """A row-cursor table replaced row by row from ``(key, cells)`` lists; see the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "First row", show=False),
        Binding("G", "scroll_bottom", "Last row", show=False),
    ]

    def __init__(self, columns: Sequence[tuple[str, str]], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._column_spec = tuple(columns)
        self._row_keys: list[str] = []

    def on_mount(self) -> None:
        self._ensure_columns()

    def _ensure_columns(self) -> None:
        if not self.columns:
            for key, label in self._column_spec:
                self.add_column(label, key=key)

    @property
    def row_keys(self) -> tuple[str, ...]:
        return tuple(self._row_keys)

    def key_of_cursor(self) -> str | None:
        if not self._row_keys or not 0 <= self.cursor_row < len(self._row_keys):
            return None
        return self._row_keys[self.cursor_row]

    def show_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        self._ensure_columns()
        keys = [key for key, _ in rows]
        if keys != self._row_keys:
            # Rows came, went or moved: rebuild, then put the cursor back on the row it was on.
            current = self.key_of_cursor()
            self.clear()
            for key, cells in rows:
                self.add_row(*cells, key=key)
            self._row_keys = keys
            if current in keys:
                self.move_cursor(row=keys.index(current), animate=False)
            return
        columns = [key for key, _ in self._column_spec]
        for key, cells in rows:
            for column, cell in zip(columns, cells, strict=True):
                if self.get_cell(key, column) != cell:
                    self.update_cell(key, column, cell)


def state_text(process: ProcInfo) -> Text:
    """``running (Rl)``; a zombie in bold red, a process stuck in the kernel (D) in yellow."""
    name = process.state.name.lower().replace("_", " ")
    label = f"{name} ({process.stat})" if process.stat else name
    if process.defunct:
        return Text(f"zombie ({process.stat})" if process.stat else "zombie", style="bold #ff5f5f")
    if process.state is ProcState.DISK_SLEEP:
        return Text(label, style="#ffd75f")
    return Text(label)


def _rss(process: ProcInfo) -> str:
    mib = process.rss_mib
    if mib is None:
        return UNKNOWN
    return f"{mib / 1024.0:.1f}G" if mib >= 1024.0 else f"{mib:.0f}M"


def process_order(host: HostSnapshot) -> list[ProcInfo]:
    """Ranked processes by rank, then the others by pid."""
    ranks = host.rank_of_pid
    return sorted(
        host.processes,
        key=lambda process: (
            (0, ranks[process.pid], process.pid) if process.pid in ranks else (1, 0, process.pid)
        ),
    )


class ProcessTable(KeyedTable):
    """The processes of one host; row keys are pids (as text)."""

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("pid", "PID"),
        ("rank", "Rank"),
        ("gpu", "GPU"),
        ("cpu", "CPU%"),
        ("rss", "RSS"),
        ("elapsed", "Elapsed"),
        ("state", "State"),
        ("command", "Command"),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.COLUMNS, id=id)

    def show(self, host: HostSnapshot) -> None:
        rows: list[tuple[str, Sequence[Cell]]] = []
        for process in process_order(host):
            rank = host.rank_of_pid.get(process.pid)
            gpus = host.gpu_of_pid.get(process.pid, ())
            rows.append(
                (
                    str(process.pid),
                    (
                        str(process.pid),
                        UNKNOWN if rank is None else str(rank),
                        ",".join(str(gpu) for gpu in gpus) if gpus else UNKNOWN,
                        fmt_number(process.cpu_pct, 1),
                        _rss(process),
                        fmt_duration(process.elapsed_s),
                        state_text(process),
                        shorten(clean_remote_text(process.command), COMMAND_CHARS),
                    ),
                )
            )
        self.show_rows(rows)

    def pid_of_cursor(self) -> int | None:
        key = self.key_of_cursor()
        return None if key is None else int(key)
