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
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from trainmon_tui.transport.runner import BufferedLineStream, CommandRunner, LineStream
from trainmon_tui.transport.session import TransportError
from trainmon_tui.transport.streams import ChannelRefusedError, CommandResult, OutputTooLargeError
from trainmon_tui.transport.ticks import DEFAULT_DELIVERY_TICK_S, on_grid, sleep_until

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


@dataclass(slots=True)
class _DmonRun:
    """What the task reading one dmon stream tells the task watching it."""

    # loop.time() of the latest GPU row (of the start, until the first one).
    last_row_t: float
    delivered: bool = False
    # dmon lines other than GPU rows and headers, kept to say why dmon was given up.
    foreign: list[str] = field(default_factory=list)


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
        # What the inventory adds to dmon rows (memory total, UUID, name, power limit) changes only when
        # someone reconfigures the GPU; each query is a process on the host and a channel here.
        inventory_interval_s: float = 300.0,
        dmon_retry_s: float = 300.0,
        dmon_min_run_s: float = 30.0,
        failure_retry_s: float = 30.0,
        command_timeout_s: float = 15.0,
        down_retry_s: float = 2.0,
        wake_grid_s: float = DEFAULT_DELIVERY_TICK_S,
    ) -> None:
        """``dmon_min_run_s``: a dmon that delivered for at least this long and then exited is restarted at
        once; one that gave up sooner counts as not working. ``down_retry_s``: pause after the host was lost,
        before waiting for it to come back (the session does the reconnecting). Periodic wake-ups (queries,
        the silence watch) are rounded up to the shared grid of ``wake_grid_s`` (:func:`.ticks.on_grid`;
        0: exact)."""
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
        self._wake_grid_s = wake_grid_s
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
            await sleep_until(next_query, self._wake_grid_s)
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
            self._apply_all(samples)
        return samples

    def _apply_all(self, samples: Sequence[GpuSample]) -> None:
        now = self._clock()
        for sample in samples:
            self._store.apply_gpu(self.host, sample, now)

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
        One task reads the stream and stores each row as it comes, with no timer per line (at 8 GPUs a
        second per host, per-line timeouts and a queue cost more than parsing); this one wakes only for the
        queries and to look at how long ago the latest row came.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        run = _DmonRun(last_row_t=started)
        silent = False
        async with self._runner.stream(DMON_ARGV) as stream:
            reader = loop.create_task(self._read_dmon(stream, run))
            try:
                silent = await self._watch_dmon(reader, run)
            finally:
                reader.cancel()
                await asyncio.wait({reader})
                # Taken even when leaving by another error, so asyncio never reports it as lost.
                failure = None if reader.cancelled() else reader.exception()
            if failure is not None and not silent:
                raise failure
        ran_s = loop.time() - started
        if run.delivered and not silent and ran_s >= self._dmon_min_run_s:
            self._dmon_due = loop.time()
            return
        self._dmon_due = loop.time() + self._dmon_retry_s
        self._set_source(
            GpuSource.QUERY, self._why_dmon_stopped(stream, run.delivered, silent, ran_s, run.foreign)
        )

    async def _read_dmon(self, stream: LineStream, run: _DmonRun) -> None:
        """Parse every dmon line into the store until the output ends; raises what ended it otherwise.

        A stream that hands over every line it holds (:class:`BufferedLineStream`: the SSH and local ones)
        is read a packet at a time - a host's 8 GPU rows, maybe headers - parsed together; another stream a
        line at a time (``feed_lines`` reads a lone line as ``feed`` does). Nothing else runs between the
        lines of a packet (the stream hands them out without waiting), so reading them together changes
        nothing another task could see.
        """
        loop = asyncio.get_running_loop()
        parser = DmonParser(inventory=self._inventory)
        inventory = self._inventory
        store, host, clock = self._store, self.host, self._clock
        take_lines = stream.take_lines if isinstance(stream, BufferedLineStream) else None
        async for line in stream:
            if self._inventory is not inventory:
                # A query learnt the inventory again (a power limit may have changed): rows carry the news.
                inventory = self._inventory
                parser.set_inventory(inventory)
            lines = [line]
            if take_lines is not None:
                lines += take_lines()
            foreign: list[str] | None = [] if len(run.foreign) < _KEPT_FOREIGN_LINES else None
            samples = parser.feed_lines(lines, foreign)
            if foreign:
                run.foreign += [text.strip() for text in foreign[: _KEPT_FOREIGN_LINES - len(run.foreign)]]
            if not samples:
                continue
            run.last_row_t = loop.time()
            if not run.delivered:
                run.delivered = True
                self._set_source(GpuSource.DMON, "")
            # One call per sample: a Store.apply_gpus for the burst saved nothing measurable (the cost is
            # in each GPU's history, not in the call).
            for sample in samples:
                store.apply_gpu(host, sample, clock())

    async def _watch_dmon(self, reader: asyncio.Task[None], run: _DmonRun) -> bool:
        """Run the queries dmon needs while ``reader`` reads it; True once dmon stayed silent too long,
        False when the reader ended (output over, or an error)."""
        loop = asyncio.get_running_loop()
        next_query = loop.time() + self._query_interval_s
        next_inventory = loop.time() + self._inventory_interval_s
        while True:
            silence_ends = run.last_row_t + self._dmon_silence_s
            wake = min(silence_ends, next_inventory if run.delivered else next_query)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(on_grid(wake, self._wake_grid_s)):
                    await asyncio.wait({reader})
            if reader.done():
                return False
            now = loop.time()
            if now >= run.last_row_t + self._dmon_silence_s:
                return True
            if run.delivered:
                if now >= next_inventory:
                    await self._query(apply=False)
                    next_inventory = loop.time() + self._inventory_interval_s
            elif now >= next_query:
                # Until dmon delivers the readings come from queries; a row that came meanwhile is newer.
                samples = await self._query(apply=False)
                if samples is not None and not run.delivered:
                    self._apply_all(samples)
                next_query = loop.time() + self._query_interval_s

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
