"""Turn `nvidia-smi dmon` output, one line at a time or a packet's lines at once, into GpuSample values.

dmon prints a `# gpu ...` header naming its columns, a `# Idx ...` units line, then one row per GPU per
interval. Which columns appear depends on the driver and on the `-s` groups and `-o D/T` options, so nothing
here assumes a layout: the latest header decides which token goes where. A line that does not fit the current
header (blank, foreign program output, a truncated row) yields None and never raises.

A collector feeds every GPU of every host through here once a second, so a row costs one split, one float()
per numeric cell and one GpuSample: the header is compiled into token positions once (and a header printed
again, as dmon does, is recognised by its text), and the memory total, UUID, name and power limit that dmon
does not print are filled in while the sample is built rather than by copying it afterwards. A host's rows
arrive together (one packet a second): :meth:`DmonParser.feed_lines` reads such a burst column by column, a
C-level call per step for all its rows, and falls back to :meth:`DmonParser.feed` for whatever is unusual.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from itertools import chain, repeat
from types import MappingProxyType
from typing import cast

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
# Every printed date/time of a burst at once, joined by newlines (no token holds one); stricter than
# _is_date/_is_time, which also take a time such as `12:34::5`: a burst that fails goes line by line.
_DATE_TEXT = "[0-9]{8}"
_TIME_TEXT = "[0-9]{2}:[0-9]{2}:[0-9]{2}"
_EVERY_DATE = re.compile(f"{_DATE_TEXT}(?:\n{_DATE_TEXT})*")
_EVERY_TIME = re.compile(f"{_TIME_TEXT}(?:\n{_TIME_TEXT})*")
_EVERY_DATE_TIME = re.compile(f"{_DATE_TEXT} {_TIME_TEXT}(?:\n{_DATE_TEXT} {_TIME_TEXT})*")
# Rows fewer than this are read line by line: reading rows together costs a few dozen C calls whatever their
# number (about two rows' worth by feed()), and is cheaper from about 4 rows on.
_MIN_BURST_ROWS = 4
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
    one goes through float() (ValueError for text that is not a finite number).
    """

    def __missing__(self, cell: str) -> float | None:
        value = float(cell)
        # An overflow ("1e999", 400 digits) makes the row foreign, as _number() does; refused here, the
        # values of a whole burst need no second look.
        if value in _INFINITIES:
            raise ValueError(cell)
        if len(self) >= _MAX_REMEMBERED_VALUES:
            self.clear()
            self["-"] = None
        self[cell] = value
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
    # For a burst of rows, each given one more token (`-`, unknown) after its last: the GPU token, the
    # numeric cells followed by that token, and where each of the eight GpuSample fields sits among them
    # as a slice over a whole burst's values (a field the header lacks reads the appended unknowns).
    gpu_cell: Callable[[Sequence[str]], str]
    padded_cells: Callable[[Sequence[str]], tuple[str, ...]]
    field_columns: tuple[slice, ...]

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
        stride = unknown + 1
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
            gpu_cell=operator.itemgetter(names.index(_GPU_COLUMN)),
            padded_cells=_getter([*numeric_at, len(names)]),
            field_columns=tuple(
                slice(present.index(field) if field in field_at else unknown, None, stride)
                for field in _SAMPLE_FIELDS
            ),
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
        # ``values`` holds this row's values from ``at`` on (the rows of a burst share one list); nobody
        # changes them once the row is read.
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

    def feed_lines(self, lines: Sequence[str], foreign: list[str] | None = None) -> list[GpuSample]:
        """Read a burst of lines (one packet of dmon output): the samples :meth:`feed` gives for them, in
        order, leaving the parser as :meth:`feed` would.

        Lines that are neither GPU rows nor comments nor blank are appended to ``foreign`` when given.
        Between comment lines, rows of the layout in force holding plain numbers are read together: each
        step is one C-level call over the whole burst (a split per line, the cells of every row, their
        values, the samples' slots); anything else goes through :meth:`feed` line by line.
        """
        samples: list[GpuSample] = []
        text = "".join(lines)
        if "#" not in text:
            self._feed_rows(lines, text, samples, foreign)
            return samples
        start = 0
        for at, line in enumerate(lines):
            # feed()'s test for a comment: the first character that is not white space is `#`.
            if line.lstrip()[:1] == "#":
                if at > start:
                    rows = lines[start:at]
                    self._feed_rows(rows, "".join(rows), samples, foreign)
                self._read_comment(line)
                start = at + 1
        if start < len(lines):
            rows = lines[start:]
            self._feed_rows(rows, "".join(rows), samples, foreign)
        return samples

    def _feed_rows(
        self, lines: Sequence[str], text: str, samples: list[GpuSample], foreign: list[str] | None
    ) -> None:
        """Read lines none of which is a comment (``text``: them joined) into ``samples``."""
        layout = self._layout
        if layout is not None and len(lines) >= _MIN_BURST_ROWS:
            burst = self._burst(layout, lines, text)
            if burst is not None:
                samples += burst
                return
        for line in lines:
            sample = self.feed(line)
            if sample is not None:
                samples.append(sample)
            elif foreign is not None and line.strip():
                foreign.append(line)

    def _burst(self, layout: _Layout, lines: Sequence[str], text: str) -> list[GpuSample] | None:
        """The samples of lines that are all rows of ``layout`` with plain numbers; None when one is not
        (or might not be): then they are read line by line, which drops or reads each as it must."""
        # feed() reads a row holding these through _number(); rows without them go through float() alone.
        if "n" in text or "N" in text or "_" in text:
            return None
        rows = list(map(str.split, lines))
        width = len(layout.names)
        if set(map(len, rows)) != {width}:
            # Blank lines, rows of another layout, touching columns.
            return None
        count = len(rows)
        gpu_cells = list(map(layout.gpu_cell, rows))
        gpu_text = "".join(gpu_cells)
        if not (gpu_text.isdigit() and gpu_text.isascii()):
            # PCI bus ids (or junk) in the GPU column.
            return None
        nones = (None,) * count
        printed: Sequence[str | None] = nones
        if layout.has_time:
            times = self._printed_times(layout, rows)
            if times is None:
                return None
            printed = times
        # Each row gets an unknown token after its last, read as None: the value of every field the header
        # lacks, and the None feed() appends to each row's values.
        any(map(list.append, rows, repeat("-")))
        try:
            # int() refuses a GPU index of thousands of digits, float() a cell that is not a number.
            gpus = list(map(int, gpu_cells))
            values = list(map(self._values.__getitem__, chain.from_iterable(map(layout.padded_cells, rows))))
        except ValueError:
            return None
        stride = len(values) // count
        extra_names = layout.extra_names
        extras: Iterable[Mapping[str, float | None]] = (
            map(
                _RowExtras,
                repeat(extra_names),
                repeat(values),
                range(layout.extras_from, len(values), stride),
            )
            if extra_names
            else repeat(_EMPTY_EXTRA)
        )
        sm, mem, fb, pwr, gtemp, mtemp, pclk, mclk = map(values.__getitem__, layout.field_columns)
        fb_total: Sequence[object] = nones
        power_limit: Sequence[object] = nones
        uuid: Sequence[object] = nones
        name: Sequence[object] = nones
        if self._inventory:
            fb_total, power_limit, uuid, name = zip(
                *map(self._inventory.get, gpus, repeat(_NOT_KNOWN)), strict=True
            )
        # GpuSample's field order (tests/unit/test_dmon.py checks every field by name).
        return _gpu_samples(
            gpus,
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
            extras,
        )

    @staticmethod
    def _printed_times(layout: _Layout, rows: list[list[str]]) -> list[str] | None:
        """Every row's date and/or time as printed, or None unless each is plainly a date and a time."""
        date_at, time_at = layout.date_at, layout.time_at
        if date_at is not None and time_at is not None:
            printed = list(
                map(
                    " ".join,
                    zip(
                        map(operator.itemgetter(date_at), rows),
                        map(operator.itemgetter(time_at), rows),
                        strict=True,
                    ),
                )
            )
            every = _EVERY_DATE_TIME
        elif date_at is not None:
            printed = list(map(operator.itemgetter(date_at), rows))
            every = _EVERY_DATE
        else:
            assert time_at is not None  # has_time
            printed = list(map(operator.itemgetter(time_at), rows))
            every = _EVERY_TIME
        return printed if every.fullmatch("\n".join(printed)) is not None else None

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


# GpuSample is a frozen dataclass: its __init__ sets each of its 15 fields through object.__setattr__ (about
# 4 us a sample on the development box, half the cost of reading a row), and even writing each slot through
# its descriptor costs about 3.5 us. A row's sample is built as a _GpuSampleBuilder instead, whose plain
# attribute stores cost about 0.9 us in all (equal to GpuSample(*values); tests/unit/test_dmon.py checks it).


class _GpuSampleBuilder:
    """A GpuSample built with plain slot stores, which becomes a real GpuSample at the end of __init__.

    Its slots are GpuSample's, in the same order (checked below), so the instance has GpuSample's memory
    layout and Python allows the class change. A burst of rows is built by ``map(_GpuSampleBuilder,
    *columns)``, one row by ``_GpuSampleBuilder(*values)``.
    """

    __slots__ = tuple(field.name for field in dataclass_fields(GpuSample))

    def __init__(  # noqa: PLR0917 - mapped over the columns of a burst, positionally
        self,
        gpu: int,
        sm_pct: float | None,
        mem_util_pct: float | None,
        fb_used_mib: float | None,
        fb_total_mib: float | None,
        power_w: float | None,
        power_limit_w: float | None,
        gpu_temp_c: float | None,
        mem_temp_c: float | None,
        sm_clock_mhz: float | None,
        mem_clock_mhz: float | None,
        uuid: str | None,
        name: str | None,
        printed_time: str | None,
        extra: Mapping[str, float | None],
    ) -> None:
        self.gpu = gpu
        self.sm_pct = sm_pct
        self.mem_util_pct = mem_util_pct
        self.fb_used_mib = fb_used_mib
        self.fb_total_mib = fb_total_mib
        self.power_w = power_w
        self.power_limit_w = power_limit_w
        self.gpu_temp_c = gpu_temp_c
        self.mem_temp_c = mem_temp_c
        self.sm_clock_mhz = sm_clock_mhz
        self.mem_clock_mhz = mem_clock_mhz
        self.uuid = uuid
        self.name = name
        self.printed_time = printed_time
        self.extra = extra
        # The class change a layout-compatible object allows (object's own __class__, not a slot).
        self.__class__ = GpuSample  # type: ignore[assignment]


# __init__ takes GpuSample's fields in GpuSample's order (tests/unit/test_dmon.py checks it by name); the
# slots of both must be the same, in the same order, for the class change to be allowed and to be right.
if _GpuSampleBuilder.__slots__ != GpuSample.__slots__:
    raise TypeError("_GpuSampleBuilder must have GpuSample's slots, in GpuSample's order")


def _gpu_samples(*columns: Iterable[object]) -> list[GpuSample]:
    """``[GpuSample(*values) for values in zip(*columns)]`` (each column gives one field, in GpuSample's
    order), built by C-level iteration and slot stores."""
    return cast(list[GpuSample], list(map(_GpuSampleBuilder, *columns)))


def _gpu_sample(values: tuple[object, ...]) -> GpuSample:
    """``GpuSample(*values)`` with every field given, without the frozen dataclass's per-field setattr."""
    return cast(GpuSample, _GpuSampleBuilder(*values))  # type: ignore[arg-type]


def parse_dmon(text: str) -> list[GpuSample]:
    """Every GPU row of a whole dmon capture, in order."""
    parser = DmonParser()
    samples: list[GpuSample] = []
    for line in text.splitlines():
        sample = parser.feed(line)
        if sample is not None:
            samples.append(sample)
    return samples
