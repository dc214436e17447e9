"""What a simulated host answers to each command the collectors send, in the real programs' output formats.

No shell runs anywhere: :meth:`HostCommands.answer` recognises the argv (already taken out of the lifeline
wrapper) and returns either a :class:`Reply` (a short command's exit status and output) or a :class:`Stream`
(a long-running command: first output at start, more on every tick until stdin ends or it finishes).

Recognised, in the formats of the real tools (checked against the samples in the shared corpus):

- ``nvidia-smi dmon [-s GROUPS] [-o D|T|DT] [-c COUNT] [-d SECONDS] [-i IDS]``: the header for the groups
  asked for (7-character columns of current drivers, a trailing space on every line), then one row per GPU
  every interval.
- ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` and ``--query-compute-apps=...``;
  an unknown field gets nvidia-smi's own "is not a valid field to query" and exit status 2. ``nvidia-smi -L``.
- ``ps -eww -o pid=,ppid=,stat=,etime=,pcpu=,rss=,args=``: procps' column widths, our own ps included.
- the process collector's listing loop (``sh -c PS_LOOP_SCRIPT trainmon-ps SECONDS``): that listing (with the
  loop's own shell and ps in it) and the end-of-listing line, every SECONDS real seconds until the channel
  closes.
- ``grep -a -s -z -H -E PATTERN -- /proc/PID/environ ...``: the rank variables, NUL-terminated, grep's exit
  status (0 found, 1 nothing, 2 a file missing).
- the log collector's listing script (``sh -c LIST_SCRIPT trainmon-ls PATTERN...``): its ``F``/``M`` records.
- ``tail -n N [-F|-f] [--] PATH...``: the last N lines, ``==> PATH <==`` headers when there are several
  files, then new lines as the ranks write them.

Anything else exits with 127 and a "command not found" message, as a shell would.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from trainmon_tui.demo.cluster import (
    DEMO_HOME,
    DRIVER_VERSION,
    GpuReading,
    GpuSpec,
    Phase,
    ProcessSpec,
    SimHost,
    Simulation,
)
from trainmon_tui.demo.logs import FileGrowth, LogCursor, RankLog, last_lines, logs_of, read_due
from trainmon_tui.demo.noise import uniform
from trainmon_tui.parsers.ps import PS_ARGV
from trainmon_tui.transport.log_collector import HEAD_BYTES, LIST_SCRIPT, LIST_SCRIPT_NAME
from trainmon_tui.transport.proc_collector import LISTING_END, PS_LOOP_NAME, PS_LOOP_SCRIPT
from trainmon_tui.transport.remote import WRAPPER_NAME, WRAPPER_SCRIPT

#: How often a ``tail -F`` looks for new lines (real seconds).
TAIL_TICK_S: Final = 0.25
#: The exit status of a command killed by SIGTERM, which is what the lifeline wrapper does when stdin ends.
TERMINATED: Final = 143
_NOT_FOUND: Final = 127
_SMI_USAGE: Final = 2
# stat(1)'s device number of the disk the logs are on (/dev/nvme0n1p2 is 259:2 = 66306).
_LOG_DEVICE: Final = 66306
_K_INODE: Final = 31
_K_STAT: Final = 32
_OWN_PID_BASE: Final = 70_000
# The pid of sshd's listener in the simulated process table.
_SSHD_PID: Final = 1043


@dataclass(frozen=True, slots=True)
class Reply:
    """A short command's result."""

    exit_status: int
    stdout: bytes = b""
    stderr: bytes = b""


class Stream(Protocol):
    """A long-running command: ``start`` once, then ``more`` every ``interval_s`` until ``finished``."""

    interval_s: float

    @property
    def finished(self) -> bool: ...

    def start(self, t: float) -> Reply:
        """The first output (stdout, stderr); ``exit_status`` counts only once ``finished``."""
        ...

    def more(self, t: float) -> bytes: ...


def _usage() -> Reply:
    return Reply(
        _SMI_USAGE, b"Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"
    )


def not_found(program: str) -> Reply:
    return Reply(_NOT_FOUND, stderr=f"bash: line 1: {program}: command not found\n".encode())


# ---------------------------------------------------------------------------------------------------- dmon

# dmon's groups (-s letters) and their columns (name, unit) on a current driver, for an H100.
_DMON_GROUPS: Final = {
    "p": (("pwr", "W"), ("gtemp", "C"), ("mtemp", "C")),
    "u": (("sm", "%"), ("mem", "%"), ("enc", "%"), ("dec", "%"), ("jpg", "%"), ("ofa", "%")),
    "c": (("mclk", "MHz"), ("pclk", "MHz")),
    "v": (("pviol", "%"), ("tviol", "bool")),
    "m": (("fb", "MB"), ("bar1", "MB"), ("ccpm", "MB")),
    "e": (("sbecc", "errs"), ("dbecc", "errs"), ("pci", "errs")),
    "t": (("rxpci", "MB/s"), ("txpci", "MB/s")),
}
_DMON_DEFAULT_GROUPS: Final = "puc"
_DMON_WIDTH: Final = 7


def _dmon_value(column: str, reading: GpuReading) -> str:
    values: dict[str, int] = {
        "pwr": round(reading.power_w),
        "gtemp": reading.gpu_temp_c,
        "mtemp": reading.mem_temp_c,
        "sm": reading.sm_pct,
        "mem": reading.mem_pct,
        "mclk": reading.mem_clock_mhz,
        "pclk": reading.sm_clock_mhz,
        "fb": reading.fb_used_mib,
        "bar1": reading.bar1_mib,
        "rxpci": reading.sm_pct * 3,
        "txpci": reading.sm_pct * 2,
    }
    return str(values.get(column, 0))


class DmonStream:
    """``nvidia-smi dmon``: a header, then a row per GPU every ``interval_s``, ``count`` times (-1: ever)."""

    def __init__(
        self,
        readings: Callable[[float], Sequence[GpuReading]],
        wall_epoch: float,
        *,
        columns: Sequence[tuple[str, str]],
        date: bool,
        clock: bool,
        count: int,
        interval_s: float,
        gpus: frozenset[int] | None,
    ) -> None:
        self._readings = readings
        self._wall_epoch = wall_epoch
        self._columns = tuple(columns)
        self._date = date
        self._clock = clock
        self._left = count
        self.interval_s = interval_s
        self._gpus = gpus

    @property
    def finished(self) -> bool:
        return self._left == 0

    def header(self) -> str:
        names = "".join(f"{name:>{_DMON_WIDTH}}" for name, _ in self._columns)
        units = "".join(f"{unit:>{_DMON_WIDTH}}" for _, unit in self._columns)
        # The date and time columns, as in the corpus samples: the first header word carries the '#'.
        name_prefix = unit_prefix = ""
        if self._date:
            name_prefix, unit_prefix = "#Date       ", "#YYYYMMDD   "
        if self._clock:
            name_prefix += "Time    " if self._date else "#Time    "
            unit_prefix += "HH:MM:SS" if self._date else "#HH:MM:SS"
        if name_prefix:
            return f"{name_prefix}    gpu{names} \n{unit_prefix}    Idx{units} \n"
        return f"# gpu{names} \n# Idx{units} \n"

    def rows(self, t: float) -> str:
        # dmon prints the host's local time.
        moment = time.localtime(self._wall_epoch + t)
        prefix = ""
        if self._date:
            prefix = " " + time.strftime("%Y%m%d", moment) + "   "
        if self._clock:
            prefix += ("" if self._date else " ") + time.strftime("%H:%M:%S", moment)
        width = _DMON_WIDTH if prefix else 5
        lines = []
        for reading in self._readings(t):
            if self._gpus is not None and reading.index not in self._gpus:
                continue
            cells = "".join(f"{_dmon_value(name, reading):>{_DMON_WIDTH}}" for name, _ in self._columns)
            lines.append(f"{prefix}{reading.index:>{width}}{cells} \n")
        return "".join(lines)

    def start(self, t: float) -> Reply:
        return Reply(0, (self.header() + self._sample(t)).encode())

    def more(self, t: float) -> bytes:
        return self._sample(t).encode()

    def _sample(self, t: float) -> str:
        if self._left == 0:
            return ""
        if self._left > 0:
            self._left -= 1
        return self.rows(t)


# -------------------------------------------------------------------------------------------- query CSV

_Value = Callable[[GpuSpec, GpuReading], str]


def _pstate(_: GpuSpec, reading: GpuReading) -> str:
    return "P0" if reading.sm_pct > 0 or reading.fb_used_mib > 0 else "P5"


# --query-gpu fields: name -> (name nvidia-smi echoes in the header, unit, value).
_GPU_FIELDS: Final[dict[str, tuple[str, str, _Value]]] = {
    "index": ("index", "", lambda spec, _: str(spec.index)),
    "uuid": ("uuid", "", lambda spec, _: spec.uuid),
    "gpu_uuid": ("uuid", "", lambda spec, _: spec.uuid),
    "name": ("name", "", lambda spec, _: spec.name),
    "gpu_name": ("name", "", lambda spec, _: spec.name),
    "pci.bus_id": ("pci.bus_id", "", lambda spec, _: spec.bus_id),
    "gpu_bus_id": ("pci.bus_id", "", lambda spec, _: spec.bus_id),
    "driver_version": ("driver_version", "", lambda _, __: DRIVER_VERSION),
    "pstate": ("pstate", "", _pstate),
    "fan.speed": ("fan.speed", "%", lambda _, __: "[N/A]"),
    "utilization.gpu": ("utilization.gpu", "%", lambda _, reading: str(reading.sm_pct)),
    "utilization.memory": ("utilization.memory", "%", lambda _, reading: str(reading.mem_pct)),
    "memory.used": ("memory.used", "MiB", lambda _, reading: str(reading.fb_used_mib)),
    "memory.total": ("memory.total", "MiB", lambda spec, _: str(spec.total_mib)),
    "memory.free": (
        "memory.free",
        "MiB",
        lambda spec, reading: str(spec.total_mib - reading.fb_used_mib - 512),
    ),
    "power.draw": ("power.draw", "W", lambda _, reading: f"{reading.power_w:.2f}"),
    "power.limit": ("power.limit", "W", lambda spec, _: f"{spec.power_limit_w:.2f}"),
    "temperature.gpu": ("temperature.gpu", "", lambda _, reading: str(reading.gpu_temp_c)),
    "temperature.memory": ("temperature.memory", "", lambda _, reading: str(reading.mem_temp_c)),
    "clocks.sm": ("clocks.current.sm", "MHz", lambda _, reading: str(reading.sm_clock_mhz)),
    "clocks.gr": ("clocks.current.graphics", "MHz", lambda _, reading: str(reading.sm_clock_mhz)),
    "clocks.mem": ("clocks.current.memory", "MHz", lambda _, reading: str(reading.mem_clock_mhz)),
}

_AppValue = Callable[[GpuSpec, ProcessSpec], str]
_APP_FIELDS: Final[dict[str, tuple[str, str, _AppValue]]] = {
    "gpu_uuid": ("gpu_uuid", "", lambda spec, _: spec.uuid),
    "gpu_bus_id": ("gpu_bus_id", "", lambda spec, _: spec.bus_id),
    "gpu_name": ("gpu_name", "", lambda spec, _: spec.name),
    "pid": ("pid", "", lambda _, process: str(process.pid)),
    "process_name": ("process_name", "", lambda _, process: process.args.split(" ", 1)[0]),
    "name": ("process_name", "", lambda _, process: process.args.split(" ", 1)[0]),
    "used_memory": ("used_gpu_memory", "MiB", lambda _, process: str(process.gpu_mib)),
    "used_gpu_memory": ("used_gpu_memory", "MiB", lambda _, process: str(process.gpu_mib)),
}


def _invalid_field(field: str) -> Reply:
    return Reply(_SMI_USAGE, f'Field "{field}" is not a valid field to query.\n\n'.encode())


def _csv_header(fields: Sequence[str], table: Mapping[str, tuple[str, str, object]], units: bool) -> str:
    names = []
    for field in fields:
        echoed, unit, _ = table[field]
        names.append(f"{echoed} [{unit}]" if units and unit else echoed)
    return ", ".join(names) + "\n"


def _with_unit(text: str, unit: str, units: bool) -> str:
    if not units or not unit or text.startswith("["):
        return text
    return f"{text} {unit}" if unit != "%" else f"{text} %"


# ---------------------------------------------------------------------------------------------------- ps


def format_etime(seconds: float) -> str:
    """ps's ``etime``: [[DD-]HH:]MM:SS."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


def _ps_line(pid: int, ppid: int, stat: str, etime: str, *, cpu: float, rss: int, args: str) -> str:
    # procps' widths for these columns; a value wider than its column pushes the rest right, as in ps.
    return f"{pid:>7} {ppid:>7} {stat:<4} {etime:>11} {cpu:>4.1f} {rss:>5} {args}\n"


class PsLoopStream:
    """The process collector's listing loop: a ps listing and :data:`LISTING_END` at start and then every
    ``interval_s`` (real seconds, as its ``sleep``), until the channel closes."""

    finished = False

    def __init__(self, listing: Callable[[float], str], interval_s: float) -> None:
        self._listing = listing
        self.interval_s = interval_s

    def start(self, t: float) -> Reply:
        return Reply(0, self.more(t))

    def more(self, t: float) -> bytes:
        return f"{self._listing(t)}{LISTING_END}\n".encode()


# -------------------------------------------------------------------------------------------------- tail


class TailStream:
    """``tail -n N [-F] -- PATH...``: the last lines of each file, then what the ranks write next."""

    interval_s = TAIL_TICK_S

    def __init__(self, logs: Sequence[tuple[str, RankLog | None]], count: int, follow: bool) -> None:
        self._logs = tuple(logs)
        self._count = count
        self._follow = follow
        self._cursors: dict[int, LogCursor] = {}
        self._headers = len(self._logs) > 1
        self._current: int | None = None
        self._started = False

    @property
    def finished(self) -> bool:
        return self._started and not self._follow

    def start(self, t: float) -> Reply:
        self._started = True
        out: list[str] = []
        errors: list[str] = []
        for number, (path, log) in enumerate(self._logs):
            if log is None or not log.exists(t):
                errors.append(f"tail: cannot open '{path}' for reading: No such file or directory\n")
                continue
            lines, cursor = last_lines(log, t, self._count)
            self._cursors[number] = cursor
            if self._headers:
                out.append(f"{'' if self._current is None else chr(10)}==> {path} <==\n")
                self._current = number
            out.extend(line + "\n" for line in lines)
        status = 1 if errors and not self._follow else 0
        return Reply(status, "".join(out).encode(), "".join(errors).encode())

    def more(self, t: float) -> bytes:
        if not self._follow:
            return b""
        out: list[str] = []
        for number, cursor in self._cursors.items():
            log = self._logs[number][1]
            if log is None:
                continue
            lines = read_due(log, cursor, t)
            if not lines:
                continue
            if self._headers and self._current != number:
                out.append(f"\n==> {self._logs[number][0]} <==\n")
                self._current = number
            out.extend(line + "\n" for line in lines)
        return "".join(out).encode()


# ------------------------------------------------------------------------------------------ the listing


def posix_cksum(data: bytes) -> int:
    """The CRC ``cksum`` prints (POSIX: CRC-32 over the data and then its length, complemented)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CKSUM_TABLE[((crc >> 24) ^ byte) & 0xFF]
    length = len(data)
    while length:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CKSUM_TABLE[((crc >> 24) ^ (length & 0xFF)) & 0xFF]
        length >>= 8
    return ~crc & 0xFFFFFFFF


def _cksum_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        value = index << 24
        for _ in range(8):
            value = ((value << 1) ^ 0x04C11DB7) if value & 0x80000000 else value << 1
        table.append(value & 0xFFFFFFFF)
    return tuple(table)


_CKSUM_TABLE: Final = _cksum_table()


def glob_matches(pattern: str, path: str) -> bool:
    """Whether a shell glob matches a path, component by component (``*`` never crosses a ``/``)."""
    pattern_parts = pattern.split("/")
    path_parts = path.split("/")
    if len(pattern_parts) != len(path_parts):
        return False
    return all(fnmatch.fnmatchcase(part, glob) for part, glob in zip(path_parts, pattern_parts, strict=True))


# ---------------------------------------------------------------------------------------------- the host


class HostCommands:
    """Answers the commands run on one simulated host. Holds the growth of its log files (for listings) and
    a counter for the pids of our own commands; everything else comes from the simulation."""

    def __init__(self, simulation: Simulation, host: SimHost, wall_epoch: float) -> None:
        self.simulation = simulation
        self.host = host
        self.wall_epoch = wall_epoch
        self.logs = logs_of(host, wall_epoch)
        self._growth = {path: FileGrowth(log, HEAD_BYTES) for path, log in self.logs.items()}
        self._inodes = {
            path: 1_310_720 + int(uniform(simulation.seed, _K_INODE, host.index, number) * 4_000_000)
            for number, path in enumerate(self.logs)
        }
        self._calls = 0

    def answer(self, argv: Sequence[str], t: float) -> Reply | Stream:
        """What ``argv`` gives at simulated time ``t``."""
        self._calls += 1
        if not argv:
            return Reply(0)
        program = argv[0]
        if program == "nvidia-smi":
            return self._nvidia_smi(argv[1:], t)
        if tuple(argv) == PS_ARGV:
            return self._ps(t)
        if program == "grep":
            return self._grep(argv[1:], t)
        if program == "tail":
            return self._tail(argv[1:])
        if program == "sh" and list(argv[:4]) == ["sh", "-c", LIST_SCRIPT, LIST_SCRIPT_NAME]:
            return self._list(argv[4:], t)
        if len(argv) == 5 and list(argv[:4]) == ["sh", "-c", PS_LOOP_SCRIPT, PS_LOOP_NAME]:
            return self._ps_loop(argv, t)
        return not_found(program)

    # ------------------------------------------------------------------------------------- nvidia-smi

    def readings(self, t: float) -> tuple[GpuReading, ...]:
        return self.simulation.gpu_readings(self.host, t)

    def _nvidia_smi(self, args: Sequence[str], t: float) -> Reply | Stream:
        if args and args[0] == "dmon":
            return self._dmon(args[1:])
        if tuple(args) == ("-L",):
            lines = [f"GPU {gpu.index}: {gpu.name} (UUID: {gpu.uuid})\n" for gpu in self.host.gpus]
            return Reply(0, "".join(lines).encode())
        query = next((arg for arg in args if arg.startswith("--query-")), None)
        formats = next((arg for arg in args if arg.startswith("--format=")), None)
        if query is None or formats is None:
            return _usage()
        kind, _, field_text = query.partition("=")
        fields = [field.strip() for field in field_text.split(",") if field.strip()]
        options = set(formats.partition("=")[2].split(","))
        if "csv" not in options:
            return _usage()
        header, units = "noheader" not in options, "nounits" not in options
        if kind == "--query-gpu":
            return self._query_gpu(fields, header, units, t)
        if kind == "--query-compute-apps":
            return self._query_apps(fields, header, units, t)
        return Reply(_SMI_USAGE, f"Unknown option {kind}\n".encode())

    def _query_gpu(self, fields: list[str], header: bool, units: bool, t: float) -> Reply:
        unknown = next((field for field in fields if field not in _GPU_FIELDS), None)
        if unknown is not None:
            return _invalid_field(unknown)
        out = [_csv_header(fields, _GPU_FIELDS, units)] if header else []
        for spec, reading in zip(self.host.gpus, self.readings(t), strict=True):
            cells = []
            for field in fields:
                _, unit, value = _GPU_FIELDS[field]
                cells.append(_with_unit(value(spec, reading), unit, units))
            out.append(", ".join(cells) + "\n")
        return Reply(0, "".join(out).encode())

    def _query_apps(self, fields: list[str], header: bool, units: bool, t: float) -> Reply:
        unknown = next((field for field in fields if field not in _APP_FIELDS), None)
        if unknown is not None:
            return _invalid_field(unknown)
        out = [_csv_header(fields, _APP_FIELDS, units)] if header else []
        for process in self.simulation.live_processes(self.host, t):
            if process.gpu is None or not self._holds_gpu(process, t):
                continue
            spec = self.host.gpus[process.gpu]
            # A rank holds what its GPU shows, less the driver's own context.
            memory = process.gpu_mib or self.readings_of(process.gpu, t).fb_used_mib - 512
            held = replace(process, gpu_mib=max(memory, 0))
            cells = []
            for field in fields:
                _, unit, value = _APP_FIELDS[field]
                cells.append(_with_unit(value(spec, held), unit, units))
            out.append(", ".join(cells) + "\n")
        return Reply(0, "".join(out).encode())

    def readings_of(self, gpu: int, t: float) -> GpuReading:
        return self.simulation.gpu_reading(self.host, gpu, t)

    def _holds_gpu(self, process: ProcessSpec, t: float) -> bool:
        rank = process.rank
        return rank is None or rank.phase(t) in (Phase.TRAIN, Phase.EVAL, Phase.LOADING)

    def _dmon(self, args: Sequence[str]) -> Reply | DmonStream:
        groups, options, count, delay = _DMON_DEFAULT_GROUPS, "", -1, 1.0
        gpus: frozenset[int] | None = None
        words = list(args)
        try:
            while words:
                flag = words.pop(0)
                if flag not in ("-s", "-o", "-c", "-d", "-i") or not words:
                    raise ValueError(flag)
                value = words.pop(0)
                if flag == "-s":
                    groups = value
                elif flag == "-o":
                    options = value
                elif flag == "-c":
                    count = int(value)
                elif flag == "-d":
                    delay = float(value)
                else:
                    gpus = frozenset(int(item) for item in value.split(","))
        except ValueError:
            return _usage()
        columns = [column for letter in groups for column in _DMON_GROUPS.get(letter, ())]
        if not columns or delay <= 0 or count == 0:
            return _usage()
        return DmonStream(
            self.readings,
            self.wall_epoch,
            columns=columns,
            date="D" in options,
            clock="T" in options,
            count=count,
            interval_s=delay,
            gpus=gpus,
        )

    # --------------------------------------------------------------------------------------------- ps

    def _ps(self, t: float) -> Reply:
        # Our own ps, under its wrapper shell, under the SSH session that runs it: as on a real host.
        own = self._own_pid()
        command = " ".join(PS_ARGV)
        wrapper = f"sh -c {WRAPPER_SCRIPT} {WRAPPER_NAME} {command}"
        lines = [
            *self._process_lines(t),
            _ps_line(own, _SSHD_PID, "Ss", "00:00", cpu=0.0, rss=6_912, args="sshd: demo@notty"),
            _ps_line(own + 1, own, "S", "00:00", cpu=0.0, rss=1_676, args=wrapper),
            _ps_line(own + 2, own + 1, "R", "00:00", cpu=0.0, rss=4_128, args=command),
        ]
        return Reply(0, "".join(lines).encode())

    def _ps_loop(self, argv: Sequence[str], t: float) -> Reply | PsLoopStream:
        seconds = argv[-1]
        try:
            interval_s = float(seconds)
        except ValueError:
            interval_s = math.nan
        started_t = t
        own = self._own_pid()
        loop = " ".join(argv)
        wrapper = f"sh -c {WRAPPER_SCRIPT} {WRAPPER_NAME} {loop}"
        # Each listing is a new ps under the same loop shell.
        listings = itertools.count()

        def listing(now: float) -> str:
            # The loop shell, under its wrapper shell, under the SSH session that runs it: as on a real host.
            etime = format_etime(now - started_t)
            ps_pid = own + 3 + next(listings) % 5_000
            lines = [
                *self._process_lines(now),
                _ps_line(own, _SSHD_PID, "Ss", etime, cpu=0.0, rss=6_912, args="sshd: demo@notty"),
                _ps_line(own + 1, own, "S", etime, cpu=0.0, rss=1_676, args=wrapper),
                _ps_line(own + 2, own + 1, "S", etime, cpu=0.0, rss=1_604, args=loop),
                _ps_line(ps_pid, own + 2, "R", "00:00", cpu=0.0, rss=4_128, args=" ".join(PS_ARGV)),
            ]
            return "".join(lines)

        if not 0.0 < interval_s < math.inf:
            # The first listing, then sleep refuses the interval and the loop ends with its status. (Real
            # sleep takes 0 too; here it would spin the server.)
            return Reply(
                1,
                f"{listing(t)}{LISTING_END}\n".encode(),
                f"sleep: invalid time interval '{seconds}'\n".encode(),
            )
        return PsLoopStream(listing, interval_s)

    def _own_pid(self) -> int:
        """A pid for our own command's processes (it and the next few), new with each command."""
        return _OWN_PID_BASE + self._calls % 20_000 * 3

    def _process_lines(self, t: float) -> list[str]:
        lines = []
        for process in self.simulation.live_processes(self.host, t):
            stat = process.stat
            if process.rank is not None and process.rank.phase(t) in (Phase.TRAIN, Phase.EVAL):
                # A rank is mostly waiting on its GPU (S), sometimes caught running (R).
                running = uniform(self.simulation.seed, _K_STAT, process.pid, int(t // 3)) < 0.3
                stat = "Rl" if running else "Sl"
            lines.append(
                _ps_line(
                    process.pid,
                    process.ppid,
                    stat,
                    format_etime(t - process.started_t),
                    cpu=process.cpu_pct,
                    rss=process.rss_kib,
                    args=process.args,
                )
            )
        return lines

    # -------------------------------------------------------------------------------------------- grep

    def _grep(self, args: Sequence[str], t: float) -> Reply:
        words = list(args)
        if "--" not in words or "-E" not in words:
            return Reply(2, b"grep: this demo host only reads rank variables from /proc/PID/environ\n")
        pattern_at = words.index("-E") + 1
        try:
            pattern = re.compile(words[pattern_at])
        except (IndexError, re.error):
            return Reply(2, b"grep: invalid pattern\n")
        paths = words[words.index("--") + 1 :]
        alive = {process.pid: process for process in self.simulation.live_processes(self.host, t)}
        out: list[str] = []
        missing = False
        for path in paths:
            match = re.fullmatch(r"/proc/(\d+)/environ", path)
            process = alive.get(int(match[1])) if match else None
            if process is None:
                missing = True
                continue
            for name, value in process.rank_env:
                entry = f"{name}={value}"
                if pattern.search(entry):
                    out.append(f"{path}:{entry}\0")
        status = 2 if missing else (0 if out else 1)
        return Reply(status, "".join(out).encode())

    # ----------------------------------------------------------------------------------------- listing

    def _list(self, patterns: Sequence[str], t: float) -> Reply:
        records = ["\0"]
        for number, raw in enumerate(patterns, start=1):
            pattern = DEMO_HOME + raw[1:] if raw == "~" or raw.startswith("~/") else raw
            matched = [
                path for path, log in self.logs.items() if glob_matches(pattern, path) and log.exists(t)
            ]
            for path in sorted(matched):
                growth = self._growth[path]
                growth.advance(t)
                head = growth.head
                records.append(
                    f"F {number} {_LOG_DEVICE} {self._inodes[path]} {growth.size} "
                    f"{posix_cksum(head)} {len(head)} {path}\0"
                )
            if not matched:
                records.append(f"M {number}\0")
        return Reply(0, "".join(records).encode())

    # -------------------------------------------------------------------------------------------- tail

    def _tail(self, args: Sequence[str]) -> Reply | TailStream:
        words = list(args)
        count, follow, paths = 10, False, []
        try:
            while words:
                word = words.pop(0)
                if word == "--":
                    paths.extend(words)
                    break
                if word == "-n":
                    count = int(words.pop(0))
                elif word in ("-F", "-f", "--follow=name", "--retry"):
                    follow = True
                elif word.startswith("-"):
                    raise ValueError(word)
                else:
                    paths.append(word)
        except (ValueError, IndexError):
            return Reply(1, b"tail: invalid option\nTry 'tail --help' for more information.\n")
        if not paths:
            return Reply(1, b"tail: no file given (this demo host has no stdin to follow)\n")
        return TailStream([(path, self.logs.get(path)) for path in paths], count, follow)
