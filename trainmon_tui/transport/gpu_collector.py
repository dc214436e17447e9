"""Keep one host's GPU readings flowing into the store, and say why when there are none.

``nvidia-smi dmon`` is streamed while it delivers: one process, a row per GPU per second. Where it does not -
missing, exits at once, prints only headers, or goes quiet for ``dmon_silence_s`` (old drivers, MIG,
permissions, a stalled GPU) - ``--query-gpu`` is polled every ``query_interval_s`` instead, and dmon is tried
again every ``dmon_retry_s`` in case the trouble was passing. dmon rows lack memory totals, UUIDs, names and
power limits, so ``--query-gpu`` also runs at start and every ``inventory_interval_s``, and what it learns is
merged into the dmon samples. Nothing assumes dmon flushes each line when piped: rows arriving in bursts
count like any others, and a burst that comes later than ``dmon_silence_s`` reads as silence.

``--query-gpu`` is the judge of whether the GPUs can be read at all: when it fails (driver not loaded,
nvidia-smi not installed, no devices, no permission, no answer) the reason becomes the host's GPU status,
stored once until it changes, and the query is retried every ``failure_retry_s``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import Final

from trainmon_tui.model import GpuSample
from trainmon_tui.parsers.dmon import DMON_ARGV, DmonParser
from trainmon_tui.parsers.smi_csv import CSV_FORMAT, QUERY_GPU_FIELDS, parse_query_gpu
from trainmon_tui.parsers.smi_status import (
    INVALID_QUERY,
    NO_DEVICES,
    NO_PERMISSION,
    NOT_INSTALLED,
    classify_smi_failure,
)
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import Store
from trainmon_tui.transport.runner import CommandRunner, LineStream
from trainmon_tui.transport.session import TransportError
from trainmon_tui.transport.streams import ChannelRefusedError, CommandResult, OutputTooLargeError

_log = logging.getLogger(__name__)

#: GPU status when ``--query-gpu`` gave no answer in time: a hung driver or GPU looks like this.
NOT_RESPONDING: Final = "nvidia-smi not responding"
#: GPU status when ``--query-gpu`` printed more than anybody would read.
OUTPUT_TOO_LARGE: Final = "nvidia-smi output too large"

# What a shell answers for a command it cannot find / cannot execute.
_EXIT_NOT_FOUND = 127
_EXIT_NOT_EXECUTABLE = 126
_INVALID_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
_MAX_DETAIL_CHARS = 160
# GpuSample fields dmon does not print and --query-gpu does.
_INVENTORY_FIELDS: tuple[str, ...] = ("fb_total_mib", "uuid", "name", "power_limit_w")
# Lines buffered between the dmon reader and the collector: a few minutes of a large host's rows.
_LINE_QUEUE_SIZE = 4096
# dmon lines other than GPU rows and headers, kept to say why dmon was given up.
_KEPT_FOREIGN_LINES = 3


class GpuSource(StrEnum):
    """Where the host's GPU readings come from right now."""

    STARTING = "starting"
    DMON = "dmon"
    QUERY = "query"
    FAILED = "failed"
    HOST_DOWN = "host down"


def query_gpu_argv(fields: Sequence[str]) -> tuple[str, ...]:
    """``nvidia-smi --query-gpu=...`` for these fields, in the CSV format :func:`parse_query_gpu` reads."""
    return ("nvidia-smi", "--query-gpu=" + ",".join(fields), "--format=" + CSV_FORMAT)


def failure_reason(exit_status: int, stdout: str, stderr: str) -> str:
    """The GPU status for an nvidia-smi run that gave no readings: a known reason, else its first line."""
    known = classify_smi_failure(f"{stdout}\n{stderr}")
    if known is not None:
        return known
    if exit_status == _EXIT_NOT_FOUND:
        return NOT_INSTALLED
    if exit_status == _EXIT_NOT_EXECUTABLE:
        return NO_PERMISSION
    if exit_status == 0:
        # It ran and listed nothing.
        return NO_DEVICES
    first_line = next((line.strip() for line in f"{stderr}\n{stdout}".splitlines() if line.strip()), "")
    # One line for a badge: tabs and runs of spaces become single spaces.
    detail = " ".join(clean_remote_text(first_line).split())[:_MAX_DETAIL_CHARS]
    return f"nvidia-smi failed (exit {exit_status})" + (f": {detail}" if detail else "")


def merge_inventory(sample: GpuSample, known: GpuSample | None) -> GpuSample:
    """``sample`` with what it lacks of memory total, UUID, name and power limit taken from ``known``."""
    if known is None:
        return sample
    missing = {
        name: value
        for name in _INVENTORY_FIELDS
        if getattr(sample, name) is None and (value := getattr(known, name)) is not None
    }
    return replace(sample, **missing) if missing else sample


class _StreamEnd:
    """Queued by the dmon reader when the command's output ended."""


_END: Final = _StreamEnd()


async def _pump_lines(stream: LineStream, queue: asyncio.Queue[str | _StreamEnd | Exception]) -> None:
    """Move the stream's lines into ``queue``, then the end marker or the error that ended it."""
    try:
        async for line in stream:
            await queue.put(line)
    except Exception as error:  # handed to the collector, which raises it there
        await queue.put(error)
    else:
        await queue.put(_END)


class GpuCollector:
    """Feeds one host's GPU samples and GPU status into ``store``; ``await run()`` until cancelled."""

    def __init__(
        self,
        runner: CommandRunner,
        store: Store,
        host: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        query_interval_s: float = 2.0,
        dmon_silence_s: float = 10.0,
        inventory_interval_s: float = 60.0,
        dmon_retry_s: float = 300.0,
        dmon_min_run_s: float = 30.0,
        failure_retry_s: float = 30.0,
        command_timeout_s: float = 15.0,
        down_retry_s: float = 2.0,
    ) -> None:
        """``dmon_min_run_s``: a dmon that delivered for at least this long and then exited is restarted at
        once; one that gave up sooner counts as not working. ``down_retry_s``: pause after the host was lost,
        before waiting for it to come back (the session does the reconnecting)."""
        self._runner = runner
        self._store = store
        self.host = host
        self._clock = clock
        self._query_interval_s = query_interval_s
        self._dmon_silence_s = dmon_silence_s
        self._inventory_interval_s = inventory_interval_s
        self._dmon_retry_s = dmon_retry_s
        self._dmon_min_run_s = dmon_min_run_s
        self._failure_retry_s = failure_retry_s
        self._command_timeout_s = command_timeout_s
        self._down_retry_s = down_retry_s
        self._query_fields: tuple[str, ...] = QUERY_GPU_FIELDS
        self._inventory: Mapping[int, GpuSample] = {}
        self._gpu_status: str | None = None
        # The store may hold a status from an earlier collector of this host: the first one always goes there.
        self._gpu_status_stored = False
        self._dmon_due = 0.0
        self.source = GpuSource.STARTING

    @property
    def gpu_status(self) -> str | None:
        """The reason the GPUs cannot be read, as last stored; None while they can."""
        return self._gpu_status

    @property
    def query_fields(self) -> tuple[str, ...]:
        """The ``--query-gpu`` fields in use: the standard ones less any this driver rejected."""
        return self._query_fields

    async def run(self) -> None:
        """Collect until cancelled, waiting out every time the host goes down."""
        while True:
            await self._runner.wait_up()
            try:
                await self._collect()
            except TransportError as error:
                self._set_source(GpuSource.HOST_DOWN, str(error))
            except ChannelRefusedError as error:
                # The host is up but refused a channel (session limit, policy): try again later.
                self._set_source(GpuSource.HOST_DOWN, f"channel refused: {error}")
            await asyncio.sleep(self._down_retry_s)

    # ------------------------------------------------------------------------------------------- phases

    async def _collect(self) -> None:
        """While the host is up: dmon when it works, queries when it does not. Raises TransportError."""
        loop = asyncio.get_running_loop()
        # A new connection may reach a host whose trouble is over: try dmon first.
        self._dmon_due = loop.time()
        next_query = loop.time()
        while True:
            await asyncio.sleep(max(0.0, next_query - loop.time()))
            started = loop.time()
            if await self._query(apply=True) is None:
                self._set_source(GpuSource.FAILED, self._gpu_status or "")
                next_query = started + self._failure_retry_s
                # Whatever failed may have been fixed by the time it works again; dmon first then.
                self._dmon_due = started
                continue
            if loop.time() >= self._dmon_due:
                await self._stream_dmon()
                # Right after dmon: fresh readings, and the query tells whether the GPUs are still there.
                next_query = loop.time()
            else:
                self._set_source(GpuSource.QUERY, "")
                next_query = started + self._query_interval_s

    async def _query(self, *, apply: bool) -> list[GpuSample] | None:
        """Run ``--query-gpu``, learn the inventory, set the GPU status; the samples, or None on failure.

        A field the driver rejects ("is not a valid field to query", older drivers) is dropped from the
        query and the query run again at once.
        """
        while True:
            try:
                result = await self._runner.run(query_gpu_argv(self._query_fields), self._command_timeout_s)
            except TimeoutError:
                self._set_gpu_status(NOT_RESPONDING)
                return None
            except OutputTooLargeError:
                self._set_gpu_status(OUTPUT_TOO_LARGE)
                return None
            samples = parse_query_gpu(result.stdout, self._query_fields) if result.exit_status == 0 else []
            if samples:
                break
            if not self._drop_rejected_field(result):
                self._set_gpu_status(failure_reason(result.exit_status, result.stdout, result.stderr))
                return None
        self._set_gpu_status(None)
        self._inventory = {sample.gpu: sample for sample in samples}
        if apply:
            now = self._clock()
            for sample in samples:
                self._store.apply_gpu(self.host, sample, now)
        return samples

    def _drop_rejected_field(self, result: CommandResult) -> bool:
        text = f"{result.stdout}\n{result.stderr}"
        if classify_smi_failure(text) != INVALID_QUERY:
            return False
        match = _INVALID_FIELD.search(text)
        if match is None or match.group(1) == "index" or match.group(1) not in self._query_fields:
            return False
        field = match.group(1)
        self._query_fields = tuple(name for name in self._query_fields if name != field)
        _log.info("%s: nvidia-smi does not know %s; querying without it", self.host, field)
        return True

    async def _stream_dmon(self) -> None:
        """Stream dmon into the store for as long as it delivers; queries fill in until its first row.

        Returns when dmon exits or stays silent for ``dmon_silence_s``, having set when to try it again.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        parser = DmonParser()
        delivered = silent = False
        foreign: list[str] = []
        queue: asyncio.Queue[str | _StreamEnd | Exception] = asyncio.Queue(_LINE_QUEUE_SIZE)
        async with self._runner.stream(DMON_ARGV) as stream:
            pump = loop.create_task(_pump_lines(stream, queue))
            try:
                silence_ends = loop.time() + self._dmon_silence_s
                next_query = loop.time() + self._query_interval_s
                next_inventory = loop.time() + self._inventory_interval_s
                while True:
                    wake = min(silence_ends, next_inventory if delivered else next_query)
                    try:
                        async with asyncio.timeout_at(wake):
                            item = await queue.get()
                    except TimeoutError:
                        if loop.time() >= silence_ends:
                            silent = True
                            break
                        # Until dmon delivers the readings come from queries; afterwards only the inventory.
                        await self._query(apply=not delivered)
                        if delivered:
                            next_inventory = loop.time() + self._inventory_interval_s
                        else:
                            next_query = loop.time() + self._query_interval_s
                        continue
                    if isinstance(item, _StreamEnd):
                        break
                    if isinstance(item, Exception):
                        raise item
                    sample = parser.feed(item)
                    if sample is None:
                        if (
                            len(foreign) < _KEPT_FOREIGN_LINES
                            and item.strip()
                            and not item.lstrip().startswith("#")
                        ):
                            foreign.append(item.strip())
                        continue
                    if not delivered:
                        delivered = True
                        self._set_source(GpuSource.DMON, "")
                    silence_ends = loop.time() + self._dmon_silence_s
                    merged = merge_inventory(sample, self._inventory.get(sample.gpu))
                    self._store.apply_gpu(self.host, merged, self._clock())
            finally:
                pump.cancel()
                await asyncio.wait({pump})
        ran_s = loop.time() - started
        if delivered and not silent and ran_s >= self._dmon_min_run_s:
            self._dmon_due = loop.time()
            return
        self._dmon_due = loop.time() + self._dmon_retry_s
        self._set_source(GpuSource.QUERY, self._why_dmon_stopped(stream, delivered, silent, ran_s, foreign))

    def _why_dmon_stopped(
        self, stream: LineStream, delivered: bool, silent: bool, ran_s: float, foreign: list[str]
    ) -> str:
        if silent:
            what = "stalled" if delivered else "printed no GPU rows"
            why = f"dmon {what} for {self._dmon_silence_s:g} s"
        else:
            why = f"dmon exited with status {stream.exit_status} after {ran_s:.1f} s"
            if not delivered:
                why += " without GPU rows"
        said = " / ".join([*foreign, *stream.stderr_tail.strip().splitlines()[-1:]])
        if said:
            why += ": " + clean_remote_text(said)[:_MAX_DETAIL_CHARS]
        return why

    # ----------------------------------------------------------------------------------- transitions

    def _set_gpu_status(self, reason: str | None) -> None:
        changed = reason != self._gpu_status
        if self._gpu_status_stored and not changed:
            return
        if changed and reason is None:
            _log.info("%s: GPUs readable again (was: %s)", self.host, self._gpu_status)
        elif changed:
            _log.warning("%s: GPUs cannot be read: %s", self.host, reason)
        self._gpu_status = reason
        self._gpu_status_stored = True
        self._store.set_gpu_status(self.host, reason, self._clock())

    def _set_source(self, source: GpuSource, why: str) -> None:
        if source is self.source:
            return
        self.source = source
        _log.info("%s: GPU source now %s%s", self.host, source, f" ({why})" if why else "")
