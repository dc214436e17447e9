"""Turn `nvidia-smi dmon` output, one line at a time, into GpuSample values.

dmon prints a `# gpu ...` header naming its columns, a `# Idx ...` units line, then one row per GPU per
interval. Which columns appear depends on the driver and on the `-s` groups and `-o D/T` options, so nothing
here assumes a layout: the latest header decides which token goes where. A line that does not fit the current
header (blank, foreign program output, a truncated row) yields None and never raises.

A collector feeds every GPU of every host through here once a second, so a row costs one split, one float()
per numeric cell and one GpuSample: the header is compiled into token positions once (and a header printed
again, as dmon does, is recognised by its text), and the memory total, UUID, name and power limit that dmon
does not print are filled in while the sample is built rather than by copying it afterwards.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from itertools import repeat
from types import MappingProxyType

from trainmon_tui.model import GpuSample

#: The dmon invocation the collector runs: power/temperature, utilisation, clocks and framebuffer memory,
#: with the date and time printed on every row.
DMON_ARGV: tuple[str, ...] = ("nvidia-smi", "dmon", "-s", "pucm", "-o", "DT")

# GpuSample field for each dmon column that has a dedicated field; every other numeric column goes to `extra`.
# Pre-2019 drivers print a single `temp` column, which is the GPU (not memory) temperature.
_FIELD_BY_COLUMN: Mapping[str, str] = MappingProxyType(
    {
        "sm": "sm_pct",
        "mem": "mem_util_pct",
        "fb": "fb_used_mib",
        "pwr": "power_w",
        "gtemp": "gpu_temp_c",
        "temp": "gpu_temp_c",
        "mtemp": "mem_temp_c",
        "pclk": "sm_clock_mhz",
        "mclk": "mem_clock_mhz",
    }
)
_SAMPLE_FIELDS: tuple[str, ...] = (
    "sm_pct",
    "mem_util_pct",
    "fb_used_mib",
    "power_w",
    "gpu_temp_c",
    "mem_temp_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
)
_GPU_COLUMN = "gpu"
_DATE_COLUMN = "date"
_TIME_COLUMN = "time"
_UNITS_MARKER = "idx"
# `nvidia-smi pmon` headers also start with `# gpu`, but its rows are processes, not GPUs.
_PMON_MARKER = "pid"
_UNKNOWN_VALUES = frozenset({"-", "N/A"})
_EMPTY_EXTRA: Mapping[str, float | None] = MappingProxyType({})
# On the plain float() path the only non-finite values left are overflows ("1e999", or 400 digits).
_INFINITIES = (math.inf, -math.inf)
# Distinct comment lines (headers, units lines) remembered once read; dmon repeats the same two.
_MAX_REMEMBERED_COMMENTS = 16
# Distinct cell texts remembered with their value: dmon values repeat (0 %, a clock, a temperature).
_MAX_REMEMBERED_VALUES = 1024
_NOT_KNOWN: tuple[None, None, None, None] = (None, None, None, None)

_TOKEN = re.compile(r"\S+")
_PCI_BUS_ID = re.compile(r"(?:([0-9A-Fa-f]{1,8}):)?([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})\.([0-7])")


def normalise_pci_bus_id(text: str) -> str | None:
    """Spell a PCI bus id the way `nvidia-smi --query-gpu=pci.bus_id` does (`00000000:C1:00.0`).

    dmesg and some tools print a 4-digit domain or none at all; None when `text` is not a bus id.
    """
    match = _PCI_BUS_ID.fullmatch(text.strip())
    if match is None:
        return None
    domain, bus, device, function = match.groups()
    return f"{int(domain or '0', 16):08X}:{int(bus, 16):02X}:{int(device, 16):02X}.{function}"


def _number(token: str) -> float | None:
    """A dmon cell as a number; `-` is unknown. Raises ValueError for text that is not a dmon value."""
    if token in _UNKNOWN_VALUES:
        return None
    value = float(token)
    # float() also accepts "nan", "inf" and "1_000", none of which dmon prints: such a line is foreign.
    if not math.isfinite(value) or "_" in token:
        raise ValueError(token)
    return value


class _CellValues(dict[str, float | None]):
    """Cell text -> value for rows on the plain float() path, computed once per distinct text.

    Looked up with ``map(values.__getitem__, cells)``, so a known text costs a C-level dict lookup; a new
    one goes through float() (ValueError for text that is not a number, as before).
    """

    def __missing__(self, cell: str) -> float | None:
        if len(self) >= _MAX_REMEMBERED_VALUES:
            self.clear()
            self["-"] = None
        value = self[cell] = float(cell)
        return value


def _is_date(token: str) -> bool:
    return len(token) == 8 and token.isascii() and token.isdigit()


def _is_time(token: str) -> bool:
    digits = token.replace(":", "")
    return len(token) == 8 and token[2] == ":" and token[5] == ":" and digits.isascii() and digits.isdigit()


def _getter(positions: Sequence[int]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """The items at ``positions`` as one tuple, picked in C (itemgetter returns a bare item for one)."""
    if not positions:
        return lambda _: ()
    if len(positions) == 1:
        only = positions[0]
        return lambda items: (items[only],)
    getter: Callable[[Sequence[str]], tuple[str, ...]] = operator.itemgetter(*positions)
    return getter


@dataclass(frozen=True, slots=True)
class _Layout:
    """One dmon header compiled into token positions, so each row costs a split and a few lookups."""

    names: tuple[str, ...]
    gpu_at: int
    date_at: int | None
    time_at: int | None
    has_time: bool
    # The numeric cells of a row, in reading order: the GpuSample fields the header has, then the extras.
    numeric_cells: Callable[[Sequence[str]], tuple[str, ...]]
    # The eight GpuSample fields (_SAMPLE_FIELDS order) out of the numeric values with a None appended:
    # a field the header lacks points at that None.
    sample_fields: Callable[[Sequence[float | None]], tuple[float | None, ...]]
    extra_names: tuple[str, ...]
    # Where the extras start among the numeric values.
    extras_from: int
    # Column right edges (character offsets), for rows whose values touch and so do not split on spaces.
    right_edges: tuple[int, ...]

    @property
    def width(self) -> int:
        return len(self.names)

    @classmethod
    def from_header(cls, names: tuple[str, ...], right_edges: tuple[int, ...]) -> _Layout | None:
        # dmon headers always open with the GPU column, after the date/time columns of `-o D/T`; a comment
        # that merely mentions "gpu" must not replace the header in force.
        leading = 0
        while leading < len(names) and names[leading] in (_DATE_COLUMN, _TIME_COLUMN):
            leading += 1
        if leading == len(names) or names[leading] != _GPU_COLUMN or names.count(_GPU_COLUMN) != 1:
            return None
        field_at: dict[str, int] = {}
        extra_at: list[tuple[str, int]] = []
        for at, name in enumerate(names):
            field = _FIELD_BY_COLUMN.get(name)
            if field is not None:
                # Of two columns for one field (`temp` and `gtemp`) the rightmost is read.
                field_at[field] = at
            elif name not in (_GPU_COLUMN, _DATE_COLUMN, _TIME_COLUMN):
                # A repeated extra name is read twice and its rightmost value kept.
                extra_at.append((name, at))
        present = [field for field in _SAMPLE_FIELDS if field in field_at]
        numeric_at = [field_at[field] for field in present] + [at for _, at in extra_at]
        unknown = len(numeric_at)  # the None appended after the numeric values
        return cls(
            names=names,
            gpu_at=names.index(_GPU_COLUMN),
            date_at=names.index(_DATE_COLUMN) if _DATE_COLUMN in names else None,
            time_at=names.index(_TIME_COLUMN) if _TIME_COLUMN in names else None,
            has_time=_DATE_COLUMN in names or _TIME_COLUMN in names,
            numeric_cells=_getter(numeric_at),
            sample_fields=operator.itemgetter(
                *(present.index(field) if field in field_at else unknown for field in _SAMPLE_FIELDS)
            ),
            extra_names=tuple(name for name, _ in extra_at),
            extras_from=len(present),
            right_edges=right_edges,
        )

    def widened(self, unit_edges: tuple[int, ...]) -> _Layout:
        """Take the units line into account: left-aligned columns (`#Date` over `20240104`) end under it."""
        edges = tuple(max(mine, theirs) for mine, theirs in zip(self.right_edges, unit_edges, strict=True))
        return replace(self, right_edges=edges)

    def cut_touching(self, line: str) -> list[str] | None:
        """Cut a row at the header's column edges; None unless every value ends exactly at its edge.

        dmon right-aligns fixed-width columns, so a value as wide as its column touches its left neighbour
        (`0111651`). Requiring each value to end at its edge rejects rows that were shifted by a wider value,
        so a misaligned row is dropped rather than misread.
        """
        if len(line.rstrip()) != self.right_edges[-1]:
            return None
        tokens: list[str] = []
        start = 0
        for end in self.right_edges:
            cell = line[start:end]
            value = cell.strip()
            if not value or cell[-1].isspace() or len(value.split()) != 1:
                return None
            tokens.append(value)
            start = end
        return tokens


def _header_tokens(line: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Names (lower-cased, `#` removed, also when glued as in `#Date`) and where each one ends."""
    names: list[str] = []
    edges: list[int] = []
    for match in _TOKEN.finditer(line):
        name = match.group().lstrip("#")
        if name:
            names.append(name.lower())
            edges.append(match.end())
    return tuple(names), tuple(edges)


@dataclass(frozen=True, slots=True)
class _Comment:
    """What one comment line does to the layout, worked out once per distinct line."""

    is_header: bool
    # The layout a header puts in force; None for a pmon header, which ends the dmon table.
    header: _Layout | None
    # A units line (`# Idx W C ...`) and where its names end: it widens a header of as many columns.
    is_units: bool
    edges: tuple[int, ...]

    @classmethod
    def of(cls, line: str) -> _Comment:
        names, edges = _header_tokens(line)
        header = _Layout.from_header(names, edges)
        if header is not None:
            return cls(True, None if _PMON_MARKER in names else header, False, edges)
        return cls(False, None, _UNITS_MARKER in names, edges)


class _RowExtras(Mapping[str, float | None]):
    """A row's columns beyond the GpuSample fields, as a read-only mapping built on first use.

    Every row has them, few readers ever look (the store keeps the GpuSample fields only), and a dict per
    row of a wide ``-s`` selection cost more than the rest of the row's parsing.
    """

    __slots__ = ("_at", "_mapping", "_names", "_values")

    def __init__(self, names: tuple[str, ...], values: list[float | None], at: int) -> None:
        # ``values`` belongs to this row alone; the parser only appends after the extras' slots.
        self._names = names
        self._values = values
        self._at = at
        self._mapping: dict[str, float | None] | None = None

    def _read(self) -> dict[str, float | None]:
        mapping = self._mapping
        if mapping is None:
            at = self._at
            mapping = self._mapping = dict(
                zip(self._names, self._values[at : at + len(self._names)], strict=True)
            )
        return mapping

    def __getitem__(self, name: str) -> float | None:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._read() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._read())


class DmonParser:
    """Streaming `nvidia-smi dmon` reader: feed it lines, get a GpuSample for each GPU row.

    It remembers the latest header, so it follows repeated headers and a change of layout mid-stream.
    dmon normally prints the GPU index in the `gpu` column; where it prints a PCI bus id instead, the id is
    looked up in `gpu_index_by_bus_id` when given (ids not in it are dropped), else GPUs are numbered in
    the order their ids first appear, which is index order when dmon watches every GPU.

    dmon prints no memory total, UUID, name or power limit: `inventory` (GPU index -> a reading that has
    them, such as a `--query-gpu` row) supplies them to that GPU's samples; :meth:`set_inventory` replaces it.
    """

    __slots__ = (
        "_bus_order",
        "_comments",
        "_gpu_index_by_bus_id",
        "_inventory",
        "_layout",
        "_values",
        "_widened",
    )

    def __init__(
        self,
        gpu_index_by_bus_id: Mapping[str, int] | None = None,
        inventory: Mapping[int, GpuSample] | None = None,
    ) -> None:
        self._layout: _Layout | None = None
        self._gpu_index_by_bus_id: dict[str, int] | None = None
        if gpu_index_by_bus_id is not None:
            self._gpu_index_by_bus_id = {}
            for bus_id, index in gpu_index_by_bus_id.items():
                normalised = normalise_pci_bus_id(bus_id)
                if normalised is not None:
                    self._gpu_index_by_bus_id[normalised] = index
        self._bus_order: dict[str, int] = {}
        self._comments: dict[str, _Comment] = {}
        # The latest units line applied: (layout before it, the line, layout after it).
        self._widened: tuple[_Layout, str, _Layout] | None = None
        self._values = _CellValues({"-": None})
        self._inventory: dict[int, tuple[float | None, float | None, str | None, str | None]] = {}
        if inventory is not None:
            self.set_inventory(inventory)

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The column names of the header in force (lower-case, as printed), or None before any header."""
        return None if self._layout is None else self._layout.names

    def set_inventory(self, inventory: Mapping[int, GpuSample]) -> None:
        """From now on, fill each GPU's memory total, UUID, name and power limit from ``inventory``."""
        known: dict[int, tuple[float | None, float | None, str | None, str | None]] = {}
        for index, sample in inventory.items():
            fields = (sample.fb_total_mib, sample.power_limit_w, sample.uuid, sample.name)
            if fields != _NOT_KNOWN:
                known[index] = fields
        self._inventory = known

    def feed(self, line: str) -> GpuSample | None:
        """Read one line of dmon output; a GpuSample for a GPU row, None for anything else."""
        if line[:1] == "#":
            # dmon's own header lines start in the first column; a repeated one is known by its text.
            self._read_comment(line)
            return None
        tokens = line.split()
        if not tokens:
            return None
        if tokens[0][0] == "#":
            self._read_comment(line)
            return None
        layout = self._layout
        if layout is None:
            return None
        if len(tokens) != len(layout.names):
            if len(tokens) > len(layout.names):
                return None
            touching = layout.cut_touching(line.rstrip("\r\n"))
            if touching is None:
                return None
            tokens = touching
        try:
            return self._sample(layout, tokens, line)
        except ValueError:
            return None

    def _read_comment(self, line: str) -> None:
        comment = self._comments.get(line)
        if comment is None:
            comment = _Comment.of(line)
            if len(self._comments) >= _MAX_REMEMBERED_COMMENTS:
                self._comments.clear()
            self._comments[line] = comment
        if comment.is_header:
            self._layout = comment.header
            return
        before = self._layout
        if comment.is_units and before is not None and len(comment.edges) == len(before.names):
            widened = self._widened
            if widened is not None and widened[0] is before and widened[1] == line:
                self._layout = widened[2]
            else:
                self._layout = before.widened(comment.edges)
                self._widened = (before, line, self._layout)

    def _gpu_index(self, token: str) -> int | None:
        if token.isascii() and token.isdigit():
            return int(token)
        bus_id = normalise_pci_bus_id(token)
        if bus_id is None:
            return None
        if self._gpu_index_by_bus_id is not None:
            return self._gpu_index_by_bus_id.get(bus_id)
        return self._bus_order.setdefault(bus_id, len(self._bus_order))

    def _sample(self, layout: _Layout, tokens: list[str], line: str) -> GpuSample | None:
        token = tokens[layout.gpu_at]
        gpu = int(token) if token.isdigit() and token.isascii() else self._gpu_index(token)
        if gpu is None:
            return None
        printed: str | None = None
        if layout.has_time:
            printed = self._printed_time(layout, tokens)
            if printed is None:
                return None
        cells = layout.numeric_cells(tokens)
        values: list[float | None]
        # float() reads "nan", "inf", "infinity" (any case) and "1_000", none of which dmon prints, and
        # "N/A" needs its own reading: a row without these characters takes the plain float() path.
        if "n" in line or "N" in line or "_" in line:
            values = [_number(cell) for cell in cells]
        else:
            values = list(map(self._values.__getitem__, cells))
            if _INFINITIES[0] in values or _INFINITIES[1] in values:
                return None
        extra_names = layout.extra_names
        extra = _RowExtras(extra_names, values, layout.extras_from) if extra_names else _EMPTY_EXTRA
        values.append(None)
        sm, mem, fb, pwr, gtemp, mtemp, pclk, mclk = layout.sample_fields(values)
        fb_total, power_limit, uuid, name = self._inventory.get(gpu, _NOT_KNOWN)
        # The order is GpuSample's field order (tests/unit/test_dmon.py checks every field by name).
        return _gpu_sample(
            (
                gpu,
                sm,
                mem,
                fb,
                fb_total,
                pwr,
                power_limit,
                gtemp,
                mtemp,
                pclk,
                mclk,
                uuid,
                name,
                printed,
                extra,
            )
        )

    @staticmethod
    def _printed_time(layout: _Layout, tokens: list[str]) -> str | None:
        """The row's date and/or time as printed, or None when they are not a date and a time."""
        printed: list[str] = []
        if layout.date_at is not None:
            if not _is_date(tokens[layout.date_at]):
                return None
            printed.append(tokens[layout.date_at])
        if layout.time_at is not None:
            if not _is_time(tokens[layout.time_at]):
                return None
            printed.append(tokens[layout.time_at])
        return " ".join(printed)


# GpuSample is a frozen dataclass: its __init__ sets each of its 15 fields through object.__setattr__, which
# is half the cost of reading a dmon row. A row's sample is built by writing its slots directly instead, with
# one C-level map over the slot descriptors (equal to GpuSample(*values); tests/unit/test_dmon.py checks it).
_GPU_SAMPLE_SLOTS = tuple(GpuSample.__dict__[field.name] for field in dataclass_fields(GpuSample))
_SET_SLOT = type(_GPU_SAMPLE_SLOTS[0]).__set__
_new_object = object.__new__


def _gpu_sample(values: tuple[object, ...]) -> GpuSample:
    """``GpuSample(*values)`` with every field given, without the frozen dataclass's per-field setattr."""
    sample: GpuSample = _new_object(GpuSample)
    # Every __set__ returns None, so any() runs the map to its end.
    any(map(_SET_SLOT, _GPU_SAMPLE_SLOTS, repeat(sample), values))
    return sample


def parse_dmon(text: str) -> list[GpuSample]:
    """Every GPU row of a whole dmon capture, in order."""
    parser = DmonParser()
    samples: list[GpuSample] = []
    for line in text.splitlines():
        sample = parser.feed(line)
        if sample is not None:
            samples.append(sample)
    return samples
