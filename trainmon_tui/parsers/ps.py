"""Turn `ps` listings into ProcInfo values, and ps elapsed times (`etime`) into seconds.

The collector runs :data:`PS_ARGV`: no header, one process per line, full command lines last. Listings that
carry a header line (`ps -o ...` with named columns, `ps aux`, even `top`) are read by that header instead,
so any column order works as long as the command comes last. Lines that do not fit are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from trainmon_tui.model import ProcInfo, ProcState, slot_writer

#: The columns the collector asks ps for, in order.
PS_COLUMNS: tuple[str, ...] = ("pid", "ppid", "stat", "etime", "pcpu", "rss", "args")
#: The ps invocation the collector runs: every process, no width limit (`ww`), no header (`name=`).
#: `etime` rather than `etimes` because BusyBox and BSD/macOS ps know only the former.
PS_ARGV: tuple[str, ...] = ("ps", "-eww", "-o", ",".join(f"{column}=" for column in PS_COLUMNS))
#: The columns of `ps aux` / `ps -aux`, for listings pasted or grepped without their header.
PS_AUX_COLUMNS: tuple[str, ...] = (
    "user",
    "pid",
    "pcpu",
    "pmem",
    "vsz",
    "rss",
    "tty",
    "stat",
    "start",
    "time",
    "args",
)

# Header words printed by procps, BSD ps and top -> the column they head. COMMAND heads both `comm` and
# `args`; only the last column (the command line, which may contain spaces) matters, and it always is `args`.
_COLUMN_BY_HEADER: Mapping[str, str] = MappingProxyType(
    {
        "PID": "pid",
        "PPID": "ppid",
        "STAT": "stat",
        "S": "stat",
        "ELAPSED": "etime",
        "ETIME": "etime",
        "ETIMES": "etime",
        "%CPU": "pcpu",
        "CPU%": "pcpu",
        "RSS": "rss",
        "RSZ": "rss",
        "COMMAND": "args",
        "CMD": "args",
        "ARGS": "args",
    }
)
_PID_HEADER = "PID"

# Days come only together with hours ("1-02:03" is not an elapsed time); ps prints days after 24 hours.
_ETIME = re.compile(r"(?:(?:(\d{1,9})-)?(\d{1,2}):)?(\d{1,2}):(\d{2})")
_STATES = frozenset(state.value for state in ProcState)
# Pids and sizes are small; capping their length keeps int() clear of its digit limit (ValueError).
_MAX_DIGITS = 18


def parse_etime(text: str) -> int | None:
    """Seconds from a ps elapsed time: `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS` or plain seconds (`etimes`)."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        return int(text) if len(text) <= _MAX_DIGITS else None
    match = _ETIME.fullmatch(text)
    if match is None:
        return None
    days, hours, minutes, seconds = match.groups()
    if int(seconds) > 59 or int(minutes) > 59 or (hours is not None and days is not None and int(hours) > 23):
        return None
    return ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes)) * 60 + int(seconds)


def _integer(token: str) -> int | None:
    if len(token) > _MAX_DIGITS or not (token.isascii() and token.isdigit()):
        return None
    return int(token)


def _percent(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if 0.0 <= value < float("inf") and "_" not in token else None


def _read_header(line: str) -> tuple[str, ...] | None:
    """The columns a ps/top header line names, or None if the line is not a header."""
    words = line.split()
    if _PID_HEADER not in words or any(word.isdigit() for word in words):
        return None
    return tuple(_COLUMN_BY_HEADER.get(word, word.lower()) for word in words)


def _read_row(line: str, columns: Sequence[str]) -> ProcInfo | None:
    width = len(columns)
    tokens = line.split(None, width - 1)
    if len(tokens) == width - 1 and columns[-1] == "args":
        tokens.append("")
    if len(tokens) != width:
        return None
    cell = dict(zip(columns, tokens, strict=True))
    pid = _integer(cell["pid"])
    if pid is None:
        return None
    stat = cell.get("stat", "")
    if stat and stat[0] not in _STATES:
        return None
    ppid = _integer(cell["ppid"]) if "ppid" in cell else None
    if "ppid" in cell and ppid is None:
        return None
    elapsed = parse_etime(cell["etime"]) if "etime" in cell else None
    cpu = _percent(cell["pcpu"]) if "pcpu" in cell else None
    rss = _integer(cell["rss"]) if "rss" in cell else None
    command = cell[columns[-1]] if columns[-1] == "args" else cell.get("args", "")
    return ProcInfo(
        pid=pid,
        ppid=ppid,
        state=ProcState(stat[0]) if stat else ProcState.UNKNOWN,
        elapsed_s=elapsed,
        cpu_pct=cpu,
        rss_kib=rss,
        command=command.rstrip(),
        stat=stat,
    )


# The collector's own format, read by position (a listing per host every few seconds, most of its rows kept).
_COLLECTOR_WIDTH = len(PS_COLUMNS)
_STATE_OF: Mapping[str, ProcState] = MappingProxyType({state.value: state for state in ProcState})
_make_proc_info = slot_writer(ProcInfo)
# Elapsed-time text -> seconds: ranks started together print the same text, listing after listing.
_elapsed_of: dict[str, int | None] = {}
_MAX_REMEMBERED_ELAPSED = 4096


def _read_collector_row(line: str) -> ProcInfo | None:
    """:func:`_read_row` for the :data:`PS_COLUMNS` format, the same result for every line, cheaper."""
    tokens = line.split(None, _COLLECTOR_WIDTH - 1)
    if len(tokens) != _COLLECTOR_WIDTH:
        if len(tokens) != _COLLECTOR_WIDTH - 1:
            return None
        tokens.append("")
    pid_text, ppid_text, stat, etime, pcpu, rss_text, command = tokens
    pid = _integer(pid_text)
    state = _STATE_OF.get(stat[0])
    if pid is None or state is None:
        return None
    ppid = _integer(ppid_text)
    if ppid is None:
        return None
    elapsed = _elapsed_of.get(etime, -1)
    if elapsed == -1:
        if len(_elapsed_of) >= _MAX_REMEMBERED_ELAPSED:
            _elapsed_of.clear()
        elapsed = _elapsed_of[etime] = parse_etime(etime)
    # ProcInfo's field order (tests/unit/test_ps.py compares this with _read_row on all kinds of lines).
    return _make_proc_info(
        (pid, ppid, state, elapsed, _percent(pcpu), _integer(rss_text), command.rstrip(), stat)
    )


def parse_ps(text: str, columns: Sequence[str] = PS_COLUMNS) -> list[ProcInfo]:
    """Every process in a ps listing, in order.

    ``columns`` names the columns of header-less lines (by default the :data:`PS_ARGV` format); a header
    line, wherever it appears, replaces them for the lines after it. Needs a `pid` column.
    """
    current: Sequence[str] = columns
    processes: list[ProcInfo] = []
    for line in text.splitlines():
        first = line.split(None, 1)[:1]
        if not first:
            continue
        # A process row starts with its pid (or, in `ps aux`, a user name); reading a row as a possible
        # header would split its whole command line.
        header = None if first[0].isdigit() else _read_header(line)
        if header is not None:
            current = header
            continue
        if "pid" not in current:
            continue
        process = _read_collector_row(line) if current is PS_COLUMNS else _read_row(line, current)
        if process is not None:
            processes.append(process)
    return processes


def parse_ps_aux(text: str) -> list[ProcInfo]:
    """Every process in `ps aux` output, also when grepped without its header. It has no elapsed time or
    parent pid, so those are None.
    """
    return parse_ps(text, PS_AUX_COLUMNS)
