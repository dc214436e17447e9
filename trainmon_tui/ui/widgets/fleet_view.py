"""The fleet panel: one row per host (status badge, GPU heat strip, totals) and, under it, one row per GPU.

A GPU row shows SM% as a number, a bar and a sparkline of its recent history, memory used/total,
temperature, power and the rank(s) running on it. A GPU whose newest sample is older than the stale limit is
drawn dim with its age; a value nobody reported is "-", never 0.

How 64 hosts x 8 GPUs stay navigable: hosts collapse (``h``/``l``, space, ``z`` for all) to a single row whose
heat strip still shows every GPU's SM% as one cell, so a collapsed 512-GPU fleet is 64 rows and an idle or
stale GPU still stands out. A fleet too big to fit (more than :data:`AUTO_COLLAPSE_ROWS` rows) starts
collapsed. Rows are drawn only when visible (:class:`~trainmon_tui.ui.widgets.row_list.RowList`), so the
cost of a repaint follows the panel's height, not the fleet's size.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType

from trainmon_tui.report import DEFAULT_GPU_STALE_S
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import GpuSnapshot, HostSnapshot, HostState, StoreSnapshot
from trainmon_tui.ui.format import (
    UNKNOWN,
    bar,
    fmt_memory,
    fmt_pct,
    fmt_power,
    fmt_temp,
    level_char,
    shorten,
    sparkline,
)
from trainmon_tui.ui.widgets.row_list import RowList

#: A fleet with more rows than this when first seen starts with every host collapsed.
AUTO_COLLAPSE_ROWS = 64
#: SM% under which a GPU that holds a rank is drawn as under-used.
LOW_SM_PCT = 30.0
_BAR_CELLS = 10
_MAX_SPARK_CELLS = 60
#: Seconds of history per sparkline cell: 26 cells (an 80-column terminal) show the last ~2 minutes.
SPARK_SECONDS_PER_CELL = 5.0
# GPU row, without the sparkline: indent+index 5, SM 4, bar 10, memory 11, temperature 5, power 5, rank 9,
# separators 7.
_GPU_ROW_FIXED = 5 + 4 + _BAR_CELLS + 11 + 5 + 5 + 9 + 7
_NAME_CELLS = 14
# GPU model names kept made-inert (a fleet has a handful; the bound only guards against a host that lies).
_MAX_MODELS = 64
_STALE_NOTE_CELLS = 12
# Host rows kept to compare with (a bound in case hosts come and go by the thousand).
_MAX_KEPT_HOST_ROWS = 4096


@dataclass(frozen=True, slots=True)
class HostBadge:
    """What the status badge says and which state it shows (a CSS-like state name)."""

    text: str
    state: str  # "connecting" | "up" | "stale" | "down"


def host_badge(host: HostSnapshot, now: float, stale_s: float = DEFAULT_GPU_STALE_S) -> HostBadge:
    """connecting / up / stale Ns / down: reason."""
    status = host.status
    if status.state is HostState.CONNECTING:
        return HostBadge("connecting", "connecting")
    if status.state in (HostState.DOWN, HostState.ERROR):
        reason = clean_remote_text(status.reason) if status.reason else status.state.value
        return HostBadge(f"down: {reason}", "down")
    if host.last_data_t is not None and now - host.last_data_t > stale_s:
        return HostBadge(f"stale {now - host.last_data_t:.0f}s", "stale")
    return HostBadge("up", "up")


def ranks_by_gpu(host: HostSnapshot) -> dict[int, list[str]]:
    """GPU index -> labels of what runs on it: ``r3`` for a known rank, ``p4242`` for a process of no rank."""
    labels: dict[int, list[str]] = {}
    for pid, gpus in host.gpu_of_pid.items():
        rank = host.rank_of_pid.get(pid)
        label = f"p{pid}" if rank is None else f"r{rank}"
        for index in gpus:
            labels.setdefault(index, []).append(label)
    for held in labels.values():
        held.sort(key=lambda label: (label[0] != "r", int(label[1:])))
    return labels


def gpu_is_stale(gpu: GpuSnapshot, now: float, stale_s: float = DEFAULT_GPU_STALE_S) -> bool:
    return gpu.age_s(now) > stale_s


class FleetView(RowList):
    """Hosts and their GPUs; Enter on either opens the host (the dashboard does the opening)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left,h", "collapse", "Collapse host", show=False),
        Binding("right,l", "expand", "Expand host", show=False),
        Binding("space", "toggle_row", "Collapse/expand host", show=False),
        Binding("z", "toggle_all", "Collapse/expand all hosts", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "fleet-view--host",
        "fleet-view--up",
        "fleet-view--connecting",
        "fleet-view--stale",
        "fleet-view--down",
        "fleet-view--bar",
        "fleet-view--bar-low",
        "fleet-view--spark",
        "fleet-view--dim",
    }

    def __init__(
        self,
        *,
        stale_s: float = DEFAULT_GPU_STALE_S,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ):
        super().__init__(name=name, id=id, classes=classes)
        self.stale_s = stale_s
        self.snapshot: StoreSnapshot | None = None
        self.collapsed: set[str] = set()
        self.name_filter = ""
        self._auto_collapse_done = False
        self._ranks: dict[str, dict[int, list[str]]] = {}
        self._hosts: Mapping[str, HostSnapshot] = {}
        self._models: dict[str, str] = {}
        # Host name -> (the pieces of its row, the row made of them), see _host_row.
        self._host_texts: dict[str, tuple[tuple[tuple[str, Style | None], ...], Text]] = {}

    # ----------------------------------------------------------------------------------------- data

    def show_snapshot(self, snapshot: StoreSnapshot) -> None:
        self.snapshot = snapshot
        if self._hosts is not snapshot.hosts:
            self._ranks.clear()
        self._hosts = snapshot.hosts
        if not self._auto_collapse_done:
            # Hosts are known from the config before any GPU is: the fleet's size shows only as GPUs come
            # in, so the decision waits for the first snapshot with more rows than fit (or a key press).
            rows = sum(1 + len(host.gpus) for host in snapshot.hosts.values())
            if rows > AUTO_COLLAPSE_ROWS:
                self.collapsed = set(snapshot.hosts)
                self._auto_collapse_done = True
        self._rebuild()

    def set_filter(self, text: str) -> None:
        """Show only hosts whose name contains ``text`` (any case); empty shows all."""
        self.name_filter = text.strip().lower()
        self._rebuild()

    def _visible_hosts(self) -> list[HostSnapshot]:
        hosts = list(self._hosts.values())
        if self.name_filter:
            hosts = [host for host in hosts if self.name_filter in host.name.lower()]
        return hosts

    def _rebuild(self) -> None:
        keys: list[Hashable] = []
        for host in self._visible_hosts():
            keys.append(("host", host.name))
            if host.name not in self.collapsed:
                keys.extend(("gpu", host.name, gpu.gpu) for gpu in host.gpus)
        self.set_rows(keys)

    def host_of_cursor(self) -> str | None:
        key = self.cursor_key
        if not isinstance(key, tuple):
            return None
        host = key[1]
        return host if isinstance(host, str) else None

    # -------------------------------------------------------------------------------------- collapsing

    def action_collapse(self) -> None:
        self._auto_collapse_done = True
        host = self.host_of_cursor()
        if host is not None:
            self.collapsed.add(host)
            self._rebuild()
            self.move_cursor_to(("host", host))

    def action_expand(self) -> None:
        self._auto_collapse_done = True
        host = self.host_of_cursor()
        if host is not None and host in self.collapsed:
            self.collapsed.discard(host)
            self._rebuild()

    def action_toggle_row(self) -> None:
        host = self.host_of_cursor()
        if host is None:
            return
        if host in self.collapsed:
            self.action_expand()
        else:
            self.action_collapse()

    def action_toggle_all(self) -> None:
        self._auto_collapse_done = True
        host = self.host_of_cursor()
        self.collapsed = set() if self.collapsed else set(self._hosts)
        self._rebuild()
        if host is not None:
            self.move_cursor_to(("host", host))

    # ----------------------------------------------------------------------------------------- drawing

    def _style(self, name: str) -> Style:
        return self.component_style(f"fleet-view--{name}")

    def render_row(self, key: Hashable, width: int) -> Text:
        assert isinstance(key, tuple)
        host = self._hosts.get(key[1])
        if host is None or self.snapshot is None:
            return Text()
        if key[0] == "host":
            return self._host_row(host, width)
        gpu = host.gpu(key[2])
        if gpu is None:
            return Text()
        return self._gpu_row(host, gpu, width)

    def _host_row(self, host: HostSnapshot, width: int) -> Text:
        """The host's row; the one made last time when its pieces are the same (see :meth:`_host_pieces`)."""
        pieces = self._host_pieces(host, width)
        kept = self._host_texts.get(host.name)
        if kept is not None and kept[0] == pieces:
            return kept[1]
        text = Text(no_wrap=True)
        for piece, style in pieces:
            text.append(piece, style)
        if len(self._host_texts) >= _MAX_KEPT_HOST_ROWS:
            self._host_texts.clear()
        self._host_texts[host.name] = (pieces, text)
        return text

    def _host_pieces(self, host: HostSnapshot, width: int) -> tuple[tuple[str, Style | None], ...]:
        """The host row as (text, style) pieces, in order.

        Every host row is looked at every second, and most of them read the same as a second ago (rounded
        numbers, a heat strip of a few levels): comparing pieces costs a third of making the row's Text.
        """
        assert self.snapshot is not None
        now = self.snapshot.now
        badge = host_badge(host, now, self.stale_s)
        dim = self._style("dim")
        pieces: list[tuple[str, Style | None]] = [
            ("▸ " if host.name in self.collapsed else "▾ ", dim),
            (shorten(host.name, _NAME_CELLS).ljust(_NAME_CELLS), self._style("host")),
            (" ", None),
            (shorten(badge.text, 30), self._style(badge.state)),
        ]
        if host.gpu_status is not None:
            down = self._style("down")
            pieces += [("  GPUs unreadable: ", down), (clean_remote_text(host.gpu_status.reason), down)]
            return tuple(pieces)
        if not host.gpus:
            return tuple(pieces)
        pieces.append(("  ", None))
        # The heat strip, one cell per GPU; neighbours drawn alike make one piece.
        stale_style = self._style("stale")
        fresh: list[GpuSnapshot] = []
        cells: list[str] = []
        cells_style: Style | None = None
        for gpu in host.gpus:
            if gpu_is_stale(gpu, now, self.stale_s):
                cell, style = "·", stale_style
            else:
                fresh.append(gpu)
                cell, style = level_char(gpu.latest.sm_pct), self._sm_style(gpu.latest.sm_pct)
            if style != cells_style and cells:
                pieces.append(("".join(cells), cells_style))
                cells = []
            cells.append(cell)
            cells_style = style
        pieces.append(("".join(cells), cells_style))
        sm_values = [gpu.latest.sm_pct for gpu in fresh if gpu.latest.sm_pct is not None]
        mean_sm = sum(sm_values) / len(sm_values) if sm_values else None
        used = [gpu.latest.fb_used_mib for gpu in fresh]
        totals = [gpu.latest.fb_total_mib for gpu in host.gpus]
        used_sum = None if not used or None in used else sum(u for u in used if u is not None)
        total_sum = None if None in totals else sum(t for t in totals if t is not None)
        temps = [gpu.latest.gpu_temp_c for gpu in fresh if gpu.latest.gpu_temp_c is not None]
        pieces.append(
            (
                f"  {len(host.gpus)} GPU  SM {fmt_pct(mean_sm)}  {fmt_memory(used_sum, total_sum)}"
                f"  max {fmt_temp(max(temps) if temps else None)}",
                dim,
            )
        )
        model = host.gpus[0].latest.name
        if model and width - sum(cell_len(piece) for piece, _ in pieces) > len(model) + 2:
            pieces.append((f"  {self._clean_model(model)}", dim))
        return tuple(pieces)

    def _clean_model(self, model: str) -> str:
        """The GPU model as shown (made inert), worked out once per model name: every host row shows it."""
        cleaned = self._models.get(model)
        if cleaned is None:
            if len(self._models) >= _MAX_MODELS:
                self._models.clear()
            cleaned = self._models[model] = clean_remote_text(model)
        return cleaned

    def _sm_style(self, sm_pct: float | None) -> Style:
        if sm_pct is None:
            return self._style("dim")
        return self._style("bar-low") if sm_pct < LOW_SM_PCT else self._style("bar")

    def _gpu_row(self, host: HostSnapshot, gpu: GpuSnapshot, width: int) -> Text:
        assert self.snapshot is not None
        now = self.snapshot.now
        sample = gpu.latest
        stale = gpu_is_stale(gpu, now, self.stale_s) or host.status.state is not HostState.UP
        ranks = self._ranks.get(host.name)
        if ranks is None:
            ranks = self._ranks[host.name] = ranks_by_gpu(host)
        # A stale row gives up sparkline cells for its "stale 42s" note.
        room = width - _GPU_ROW_FIXED - (_STALE_NOTE_CELLS if stale else 0)
        spark_cells = min(max(room, 0), _MAX_SPARK_CELLS)
        text = Text(no_wrap=True)
        text.append(f"  {gpu.gpu:>2} ", self._style("dim"))
        text.append(f"{fmt_pct(sample.sm_pct):>4} ", self._sm_style(sample.sm_pct))
        fraction = None if sample.sm_pct is None else sample.sm_pct / 100.0
        text.append(bar(fraction, _BAR_CELLS), self._sm_style(sample.sm_pct))
        if spark_cells:
            text.append(" ")
            text.append(self._spark(gpu, spark_cells), self._style("spark"))
        text.append(f" {fmt_memory(sample.fb_used_mib, sample.fb_total_mib):>11}")
        text.append(f" {fmt_temp(sample.gpu_temp_c):>5}")
        text.append(f" {fmt_power(sample.power_w):>5}")
        labels = ranks.get(gpu.gpu)
        text.append(f" {shorten(','.join(labels), 9) if labels else UNKNOWN}")
        if stale:
            text.stylize(self._style("stale"))
            text.append(f"  stale {gpu.age_s(now):.0f}s", self._style("stale"))
        return text

    def _spark(self, gpu: GpuSnapshot, cells: int) -> str:
        """SM% over the last ``cells`` x :data:`SPARK_SECONDS_PER_CELL` seconds, one cell per time slot.

        Points are placed by their time, not their order, so a GPU that stopped reporting shows blank cells
        up to now instead of its old history slid to the right edge.
        """
        assert self.snapshot is not None
        now = self.snapshot.now
        since = now - cells * SPARK_SECONDS_PER_CELL
        points = gpu.history.points("sm_pct", since=since, until=now, max_points=4 * cells).points
        sums = [0.0] * cells
        counts = [0] * cells
        for point in points:
            if point.mean is None:
                continue
            # Counted back from now, so samples taken on the slot period land one per slot.
            slot = cells - 1 - round((now - point.t) / SPARK_SECONDS_PER_CELL)
            if 0 <= slot < cells:
                sums[slot] += point.mean
                counts[slot] += 1
        slots = [total / count if count else None for total, count in zip(sums, counts, strict=True)]
        return sparkline(slots, cells)
