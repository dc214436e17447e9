"""Value types shared by every layer: what hosts print, turned into numbers.

Every field that a source may not report is ``Optional``; ``None`` means "unknown" and is never replaced by 0.
These types are plain frozen, slotted dataclasses with no behaviour beyond small derived properties, so the
pure layers (parsers, analysis, state) can build and compare them cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from itertools import repeat
from types import MappingProxyType
from typing import Any, TypeVar

_EMPTY: Mapping[str, float | None] = MappingProxyType({})
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU, from a `dmon` row, a `--query-gpu` row or NVML.

    ``extra`` keeps every other column the source printed, keyed by the source's own column name
    (``enc``, ``dec``, ``rxpci`` ...), so nothing a driver reports is lost.
    """

    gpu: int
    sm_pct: float | None = None
    mem_util_pct: float | None = None
    fb_used_mib: float | None = None
    fb_total_mib: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    gpu_temp_c: float | None = None
    mem_temp_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    uuid: str | None = None
    name: str | None = None
    # Date and time as printed by the source (`dmon -o DT`, query-gpu `timestamp`); None when not printed.
    printed_time: str | None = None
    # A factory, because dataclasses reject an unhashable default (mappingproxy) with ValueError at import.
    extra: Mapping[str, float | None] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ComputeApp:
    """One row of `nvidia-smi --query-compute-apps`: a process holding memory on a GPU."""

    pid: int
    gpu_uuid: str | None = None
    gpu_index: int | None = None
    process_name: str | None = None
    used_memory_mib: float | None = None


class ProcState(StrEnum):
    """The first letter of ps STAT/S, named."""

    RUNNING = "R"
    SLEEPING = "S"
    DISK_SLEEP = "D"
    STOPPED = "T"
    TRACED = "t"
    ZOMBIE = "Z"
    DEAD = "X"
    IDLE = "I"
    UNKNOWN = "?"


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process from `ps`."""

    pid: int
    ppid: int | None
    state: ProcState
    elapsed_s: int | None
    cpu_pct: float | None
    rss_kib: int | None
    command: str
    # The full STAT text (e.g. "Sl", "Z+"), as printed.
    stat: str = ""

    @property
    def defunct(self) -> bool:
        """A zombie: exited but not reaped; its parent (often the launcher) is stuck or gone."""
        return self.state is ProcState.ZOMBIE or "<defunct>" in self.command

    @property
    def rss_mib(self) -> float | None:
        return None if self.rss_kib is None else self.rss_kib / 1024.0


class EventKind(StrEnum):
    """Things in a log that a person must see, whatever the metrics say."""

    OOM = "oom"
    NCCL_TIMEOUT = "nccl_timeout"
    NCCL_ERROR = "nccl_error"
    NAN = "nan"
    TRACEBACK = "traceback"
    CHILD_FAILED = "child_failed"
    KILLED = "killed"
    XID = "xid"
    SMI_FAILED = "smi_failed"


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A notable line in a log. ``line`` is 1-based in the file as read; ``text`` is sanitised."""

    line: int
    rank: int | None
    kind: EventKind
    text: str


@dataclass(frozen=True, slots=True)
class LogRecord:
    """What one log line says about training progress and metrics.

    Canonical metric names: ``loss`` (training), ``val_loss``, ``lr``, ``grad_norm``; every other metric keeps
    its own name in snake_case. ``epoch`` is the 1-based number of the epoch in progress for logs that count
    whole epochs ("Epoch 3/10" -> 3; frameworks that print 0-based epochs are shifted by one), and the
    fraction of epochs done, as printed, for logs that report it that way (HF Trainer ``'epoch': 0.53``).
    ``timestamp`` is seconds since the epoch (UTC unless the log said otherwise) when the line carried a date
    and time, else None.
    """

    line: int
    rank: int | None = None
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    total_epochs: int | None = None
    batch: int | None = None
    batches_per_epoch: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    timestamp: float | None = None


def slot_writer(cls: type[_T]) -> Callable[[tuple[Any, ...]], _T]:
    """A maker of ``cls(*values)`` for a frozen, slotted dataclass, every field given, in field order.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; parsers that make one
    value per line of a busy host (dmon rows, ps processes) write the slots directly instead, with one
    C-level ``map`` over the slot descriptors. No default, conversion or ``__post_init__`` runs.
    """
    slots = tuple(cls.__dict__[item.name] for item in fields(cls))  # type: ignore[arg-type]
    set_slot = type(slots[0]).__set__
    new_object = object.__new__

    def make(values: tuple[Any, ...]) -> _T:
        made: _T = new_object(cls)
        # Every __set__ returns None, so any() runs the map to its end.
        any(map(set_slot, slots, repeat(made), values))
        return made

    return make
