"""Turn `nvidia-smi --query-gpu` and `--query-compute-apps` CSV output into GpuSample and ComputeApp values.

The same query comes back in several shapes: with or without a header (`noheader`), with units in the header
(`memory.used [MiB]`) or in every value (`1234 MiB`) or nowhere (`nounits`), and now and then piped through
`column -t` so that runs of spaces replace the commas. nvidia-smi also echoes some fields under another name
than the one asked for (`clocks.gr` comes back as `clocks.current.graphics`). Cells that say N/A, `[N/A]`,
`[Not Supported]` or any other bracketed status are unknown (None). Rows that do not fit are skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from trainmon_tui.model import ComputeApp, GpuSample

#: The GPU fields the collector asks for, in this order, with `--format=csv,noheader,nounits`.
QUERY_GPU_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "power.draw",
    "power.limit",
    "temperature.gpu",
    "temperature.memory",
    "clocks.sm",
    "clocks.mem",
)
#: The per-process fields the collector asks for, in this order, with `--format=csv,noheader,nounits`.
QUERY_APPS_FIELDS: tuple[str, ...] = ("gpu_uuid", "pid", "process_name", "used_memory")
CSV_FORMAT = "csv,noheader,nounits"
QUERY_GPU_ARGV: tuple[str, ...] = (
    "nvidia-smi",
    "--query-gpu=" + ",".join(QUERY_GPU_FIELDS),
    "--format=" + CSV_FORMAT,
)
QUERY_APPS_ARGV: tuple[str, ...] = (
    "nvidia-smi",
    "--query-compute-apps=" + ",".join(QUERY_APPS_FIELDS),
    "--format=" + CSV_FORMAT,
)

#: `--query-gpu` names as nvidia-smi echoes them in its header -> the names one asks for.
GPU_FIELD_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "gpu_name": "name",
        "gpu_uuid": "uuid",
        "gpu_bus_id": "pci.bus_id",
        "gpu_serial": "serial",
        "clocks.current.graphics": "clocks.gr",
        "clocks.current.sm": "clocks.sm",
        "clocks.current.memory": "clocks.mem",
        "clocks.current.video": "clocks.video",
        "clocks.max.graphics": "clocks.max.gr",
        "clocks.max.memory": "clocks.max.mem",
        "clocks.applications.graphics": "clocks.applications.gr",
        "clocks.applications.memory": "clocks.applications.mem",
        "clocks.default_applications.graphics": "clocks.default_applications.gr",
        "clocks.default_applications.memory": "clocks.default_applications.mem",
    }
)
#: `--query-compute-apps` names as nvidia-smi echoes them in its header -> the names one asks for.
APP_FIELD_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "name": "process_name",
        "used_gpu_memory": "used_memory",
    }
)

# Query-gpu fields with a dedicated GpuSample attribute; every other numeric field goes to `extra`.
_GPU_TEXT_FIELDS = frozenset({"index", "uuid", "name", "timestamp"})
_GPU_NUMBER_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "utilization.gpu": "sm_pct",
        "utilization.memory": "mem_util_pct",
        "memory.used": "fb_used_mib",
        "memory.total": "fb_total_mib",
        "power.draw": "power_w",
        "power.limit": "power_limit_w",
        "temperature.gpu": "gpu_temp_c",
        "temperature.memory": "mem_temp_c",
        "clocks.sm": "sm_clock_mhz",
        "clocks.mem": "mem_clock_mhz",
    }
)
# Fields whose values are free text that may itself contain the separator.
_FREE_TEXT_FIELDS = frozenset({"name", "process_name", "gpu_name"})
_UNKNOWN_CELLS = frozenset({"", "N/A", "Not Supported", "Unknown Error", "ERR!"})
_EMPTY_EXTRA: Mapping[str, float | None] = MappingProxyType({})

_HEADER_CELL = re.compile(r"([A-Za-z_][\w.]*)\s*(?:\[([^\]]*)\])?")
# `column -t` pads with two spaces or more; values ("131.17 W", "GeForce GTX 1080") hold single ones.
_COLUMN_GAP = re.compile(r"\s{2,}")


@dataclass(frozen=True, slots=True)
class QueryTable:
    """A query's cells by field. ``fields`` are canonical names; a cell is None when nvidia-smi said N/A."""

    fields: tuple[str, ...]
    #: The unit each header named (`MiB` for `memory.used [MiB]`); None without a header or unit.
    units: tuple[str | None, ...]
    rows: tuple[tuple[str | None, ...], ...]

    def records(self) -> list[dict[str, str | None]]:
        return [dict(zip(self.fields, row, strict=True)) for row in self.rows]


def _split_cells(line: str) -> list[str]:
    if "," in line:
        return [cell.strip() for cell in line.split(",")]
    return _COLUMN_GAP.split(line.strip())


def _read_header(cells: list[str], aliases: Mapping[str, str]) -> tuple[list[str], list[str | None]] | None:
    """Canonical names and units if every cell looks like a field name, else None (a data row)."""
    names: list[str] = []
    units: list[str | None] = []
    for cell in cells:
        match = _HEADER_CELL.fullmatch(cell)
        if match is None:
            return None
        name, unit = match.groups()
        names.append(aliases.get(name, name))
        units.append(unit)
    return names, units


def _known(cell: str) -> str | None:
    # nvidia-smi brackets every status that stands in for a value: [N/A], [Not Supported], [GPU is lost] ...
    if cell in _UNKNOWN_CELLS or (cell.startswith("[") and cell.endswith("]")):
        return None
    return cell


def _fit_row(cells: list[str], fields: Sequence[str], comma_separated: bool) -> list[str] | None:
    """Cells lined up with fields; a surplus from commas inside one free-text value is joined back."""
    surplus = len(cells) - len(fields)
    if surplus == 0:
        return cells
    if surplus < 0 or not comma_separated:
        return None
    free_text = [at for at, name in enumerate(fields) if name in _FREE_TEXT_FIELDS]
    if len(free_text) != 1:
        return None
    at = free_text[0]
    # nvidia-smi separates with ", ", so the pieces were split at "," and stripped: rejoin with ", ".
    return [*cells[:at], ", ".join(cells[at : at + surplus + 1]), *cells[at + surplus + 1 :]]


def read_query_table(
    text: str,
    fields: Sequence[str] | None = None,
    aliases: Mapping[str, str] = GPU_FIELD_ALIASES,
) -> QueryTable:
    """Split query output into cells. A header line, when present, names the fields; otherwise ``fields``
    (the list that was asked for) does. With neither, the table is empty.
    """
    expected = None if fields is None else [aliases.get(name, name) for name in fields]
    names: list[str] | None = expected
    units: list[str | None] = [None] * len(expected or ())
    rows: list[tuple[str | None, ...]] = []
    first = True
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = _split_cells(line)
        if first:
            first = False
            header = _read_header(cells, aliases)
            # With a field list, only a line that names those very fields is a header: a data row of
            # word-like values ("P8", "Disabled") must not be mistaken for one.
            if header is not None and (expected is None or header[0] == expected):
                names, units = header
                continue
        if names is None:
            break
        fitted = _fit_row(cells, names, "," in line)
        if fitted is not None:
            rows.append(tuple(_known(cell) for cell in fitted))
    if names is None:
        return QueryTable(fields=(), units=(), rows=())
    return QueryTable(fields=tuple(names), units=tuple(units), rows=tuple(rows))


def parse_number(cell: str | None) -> float | None:
    """The number at the start of a cell (`106.56 W` -> 106.56, `0x04` -> 4.0); None when there is none."""
    if cell is None:
        return None
    head = cell.split(" ", 1)[0]
    try:
        value = float(int(head, 16)) if head[:2].lower() == "0x" else float(head)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(value) or "_" in head:
        return None
    return value


def _index(cell: str | None) -> int | None:
    # Indexes and pids are small: a length cap also keeps int() clear of its digit limit (ValueError).
    if cell is None or len(cell) > 18 or not (cell.isascii() and cell.isdigit()):
        return None
    return int(cell)


def parse_query_gpu(text: str, fields: Sequence[str] | None = None) -> list[GpuSample]:
    """One GpuSample per row of `--query-gpu` output.

    The GPU is the `index` field. Without it, GPUs are numbered by the order their `uuid` first appears,
    and without that by row position (so a `-l` loop over several GPUs needs `index` or `uuid`).
    Numeric fields without a dedicated attribute go to `extra` (None where N/A); text fields such as
    `pstate` or `driver_version` are left out.
    """
    table = read_query_table(text, fields, GPU_FIELD_ALIASES)
    samples: list[GpuSample] = []
    gpu_by_uuid: dict[str, int] = {}
    for position, record in enumerate(table.records()):
        uuid = record.get("uuid")
        if "index" in record:
            gpu = _index(record["index"])
            if gpu is None:
                continue
        elif uuid is not None:
            gpu = gpu_by_uuid.setdefault(uuid, len(gpu_by_uuid))
        else:
            gpu = position
        numbers = {
            attribute: parse_number(record.get(field)) for field, attribute in _GPU_NUMBER_FIELDS.items()
        }
        extra: dict[str, float | None] = {}
        for field, cell in record.items():
            if field in _GPU_NUMBER_FIELDS or field in _GPU_TEXT_FIELDS:
                continue
            value = parse_number(cell)
            if value is not None or cell is None:
                extra[field] = value
        samples.append(
            GpuSample(
                gpu=gpu,
                sm_pct=numbers["sm_pct"],
                mem_util_pct=numbers["mem_util_pct"],
                fb_used_mib=numbers["fb_used_mib"],
                fb_total_mib=numbers["fb_total_mib"],
                power_w=numbers["power_w"],
                power_limit_w=numbers["power_limit_w"],
                gpu_temp_c=numbers["gpu_temp_c"],
                mem_temp_c=numbers["mem_temp_c"],
                sm_clock_mhz=numbers["sm_clock_mhz"],
                mem_clock_mhz=numbers["mem_clock_mhz"],
                uuid=uuid,
                name=record.get("name"),
                printed_time=record.get("timestamp"),
                extra=MappingProxyType(extra) if extra else _EMPTY_EXTRA,
            )
        )
    return samples


def parse_compute_apps(text: str, fields: Sequence[str] | None = None) -> list[ComputeApp]:
    """One ComputeApp per row of `--query-compute-apps` output; rows without a readable `pid` are skipped
    (so a query that did not ask for `pid` yields nothing).
    """
    table = read_query_table(text, fields, APP_FIELD_ALIASES)
    apps: list[ComputeApp] = []
    for record in table.records():
        pid = _index(record.get("pid"))
        if pid is None:
            continue
        apps.append(
            ComputeApp(
                pid=pid,
                gpu_uuid=record.get("gpu_uuid"),
                process_name=record.get("process_name"),
                used_memory_mib=parse_number(record.get("used_memory")),
            )
        )
    return apps
