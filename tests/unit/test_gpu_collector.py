"""GpuCollector against a scripted CommandRunner that answers with real nvidia-smi output from the corpus.

The dmon capture and the 23-field ``--query-gpu`` capture come from the same 4-GPU Blackwell host, so a dmon
row merged with what the query knows (memory total, UUID, name, power limit) is a reading that host really
gave. Timings are shortened (tenths of a second) so fallbacks and retries happen within a test.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.model import GpuSample
from trainmon_tui.parsers.dmon import DMON_ARGV, parse_dmon
from trainmon_tui.parsers.smi_csv import QUERY_GPU_ARGV, QUERY_GPU_FIELDS
from trainmon_tui.parsers.smi_status import (
    DRIVER_UNREACHABLE,
    GPU_LOST,
    INVALID_ARGUMENTS,
    NO_DEVICES,
    NO_PERMISSION,
    NOT_INSTALLED,
)
from trainmon_tui.state.store import GpuStatus, HostSnapshot, Store
from trainmon_tui.transport.gpu_collector import (
    NOT_RESPONDING,
    GpuCollector,
    GpuSource,
    failure_reason,
    merge_inventory,
    query_gpu_argv,
)
from trainmon_tui.transport.local_runner import LocalRunner
from trainmon_tui.transport.runner import CommandRunner
from trainmon_tui.transport.session import DownReason
from trainmon_tui.transport.streams import CommandResult, StreamLostError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DMON_BLACKWELL = FIXTURES / "dmon" / "dmon_s_pucm_blackwell_4gpu_driver595.txt"
QUERY_BLACKWELL = FIXTURES / "query_gpu" / "query_gpu_noheader_nounits_23fields_blackwell.txt"
SMI_ERRORS = FIXTURES / "smi_errors"
HOST = "gpu-host"
BLACKWELL_NAME = "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
BLACKWELL_UUIDS = (
    "GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce",
    "GPU-45007176-8a28-3db0-cea5-27903b16107b",
    "GPU-d9a18a51-6b47-71b3-44aa-dfd4448a0e88",
    "GPU-e3bec724-5bbb-759f-fdfd-e690b400593f",
)
#: The field list the 23-field capture was taken with (tests/fixtures/query_gpu/SOURCES.md).
BLACKWELL_QUERY_FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "driver_version",
    "utilization.gpu",
    "utilization.memory",
    "memory.total",
    "memory.used",
    "memory.free",
    "temperature.gpu",
    "temperature.memory",
    "power.draw",
    "power.limit",
    "clocks.gr",
    "clocks.mem",
    "clocks.max.gr",
    "clocks.max.mem",
    "fan.speed",
    "pstate",
    "pcie.link.gen.current",
    "pcie.link.width.current",
    "encoder.stats.sessionCount",
)


def blackwell_query_answer(argv: Sequence[str]) -> str:
    """What the Blackwell host printed for these ``--query-gpu`` fields, cut out of the 23-field capture.

    A field the capture did not record (``clocks.sm``) reads ``[N/A]``, as nvidia-smi prints a field it
    cannot read.
    """
    fields = argv[1].removeprefix("--query-gpu=").split(",")
    rows = []
    for line in QUERY_BLACKWELL.read_text().splitlines():
        cells = dict(zip(BLACKWELL_QUERY_FIELDS, line.split(", "), strict=True))
        rows.append(", ".join(cells.get(field, "[N/A]") for field in fields))
    return "\n".join(rows) + "\n"


def dmon_lines() -> list[str]:
    return DMON_BLACKWELL.read_text().splitlines()


class Clock:
    """A clock the test sets by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingStore(Store):
    """A Store that also lists every GPU sample it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[GpuSample] = []

    def apply_gpu(self, host: str, sample: GpuSample, now: float) -> None:
        self.applied.append(sample)
        super().apply_gpu(host, sample, now)


class ScriptedStream:
    """A dmon stream: bursts of lines after delays, then an exit status, an error, or (None) silence."""

    def __init__(
        self,
        bursts: Iterable[tuple[float, Sequence[str]]],
        *,
        exit_status: int | None = 0,
        stderr: str = "",
        error: Exception | None = None,
        before_error: Callable[[], None] | None = None,
    ) -> None:
        self._bursts = list(bursts)
        self._final_status = exit_status
        self._stderr = stderr
        self._error = error
        self._before_error = before_error
        self.exit_status: int | None = None
        self.entered = False
        self.closed = False

    @property
    def stderr_tail(self) -> str:
        return self._stderr

    async def __aenter__(self) -> ScriptedStream:
        self.entered = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    def buffered(self) -> BufferedScriptedStream:
        """The same script, from a stream that also hands over the lines it holds at once."""
        return BufferedScriptedStream(
            self._bursts,
            exit_status=self._final_status,
            stderr=self._stderr,
            error=self._error,
            before_error=self._before_error,
        )

    def _arrived(self, lines: Sequence[str]) -> Iterator[str]:
        """The lines of a burst as ``async for`` gives them."""
        return iter(lines)

    async def _lines(self) -> AsyncIterator[str]:
        for delay, lines in self._bursts:
            await asyncio.sleep(delay)
            for line in self._arrived(lines):
                yield line
        if self._error is not None:
            if self._before_error is not None:
                self._before_error()
            raise self._error
        if self._final_status is None:
            await asyncio.Event().wait()
        self.exit_status = self._final_status


class BufferedScriptedStream(ScriptedStream):
    """A ScriptedStream that, as the SSH and local streams do (``BufferedLineStream``), holds each burst's
    lines once it arrived: ``async for`` gives them one by one, ``take_lines`` all those not given yet."""

    def __init__(self, bursts: Iterable[tuple[float, Sequence[str]]], **script: Any) -> None:
        super().__init__(bursts, **script)
        self._held: deque[str] = deque()
        # How many lines each take_lines() call handed over.
        self.taken: list[int] = []

    def take_lines(self) -> list[str]:
        lines = list(self._held)
        self._held.clear()
        self.taken.append(len(lines))
        return lines

    def _arrived(self, lines: Sequence[str]) -> Iterator[str]:
        self._held.extend(lines)
        while self._held:
            yield self._held.popleft()


def replay(lines: Sequence[str], *, times: int, every_s: float = 0.02) -> list[tuple[float, Sequence[str]]]:
    """dmon printing a capture ``times`` times, one line per ``every_s``."""
    return [(every_s, [line]) for _ in range(times) for line in lines]


QueryAnswer = Callable[[tuple[str, ...]], CommandResult]


def healthy_query(argv: tuple[str, ...]) -> CommandResult:
    return CommandResult(0, blackwell_query_answer(argv), "")


class FakeRunner:
    """A CommandRunner whose dmon streams and query answers the test scripts."""

    is_local = False
    #: Give the dmon streams as BufferedScriptedStream (set by the ``stream_kind`` fixture).
    buffered_streams = False

    def __init__(self, dmon: Callable[[], ScriptedStream], query: QueryAnswer = healthy_query) -> None:
        self.name = HOST
        self.dmon = dmon
        self.query = query
        self.streams: list[ScriptedStream] = []
        self.queries: list[tuple[str, ...]] = []
        self.up = asyncio.Event()
        self.up.set()

    async def wait_up(self, timeout: float | None = None) -> None:
        await self.up.wait()

    def stream(self, argv: Sequence[str]) -> ScriptedStream:
        assert tuple(argv) == DMON_ARGV
        stream = self.dmon()
        if self.buffered_streams and not isinstance(stream, BufferedScriptedStream):
            stream = stream.buffered()
        self.streams.append(stream)
        return stream

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        assert argv[0] == "nvidia-smi" and argv[1].startswith("--query-gpu=")
        self.queries.append(tuple(argv))
        return self.query(tuple(argv))


@pytest.fixture(autouse=True, params=["line by line", "in bursts"])
def stream_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs against both kinds of dmon stream: one that gives lines one by one, and one that also
    hands over whatever it holds at once (the collector then reads each packet as one burst)."""
    kind = str(request.param)
    monkeypatch.setattr(FakeRunner, "buffered_streams", kind == "in bursts")
    return kind


FAST: dict[str, Any] = {
    "query_interval_s": 0.05,
    "dmon_silence_s": 0.3,
    "inventory_interval_s": 0.2,
    "dmon_retry_s": 0.5,
    "dmon_min_run_s": 0.0,
    "failure_retry_s": 0.05,
    "down_retry_s": 0.02,
    "wake_grid_s": 0.0,
}


def make_collector(
    runner: CommandRunner, store: Store, clock: Clock, host: str = HOST, **overrides: float
) -> GpuCollector:
    return GpuCollector(runner, store, host, clock=clock, **{**FAST, **overrides})


@asynccontextmanager
async def running(collector: GpuCollector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.get_running_loop().create_task(collector.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task})
    assert task.cancelled(), "the collector must end by cancellation only"


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def host_of(store: Store) -> HostSnapshot:
    return store.snapshot(0.0).hosts[HOST]


def latest(store: Store, gpu: int) -> GpuSample:
    entry = host_of(store).gpu(gpu)
    assert entry is not None
    return entry.latest


# --------------------------------------------------------------------------------------- dmon streaming


async def test_dmon_rows_reach_the_store_with_the_query_inventory_merged() -> None:
    runner = FakeRunner(lambda: ScriptedStream(replay(dmon_lines(), times=2), exit_status=None))
    store, clock = RecordingStore(), Clock(1000.0)
    # Polled readings fill in only while dmon has not delivered for query_interval_s: not here.
    collector = make_collector(runner, store, clock, query_interval_s=1.0)
    async with running(collector):
        # The query's 4 samples at start, then the 8 rows of two dmon intervals.
        await eventually(lambda: len(store.applied) == 4 + 8)
        clock.now = 1001.0
        assert collector.source is GpuSource.DMON
        gpu0 = latest(store, 0)
        # dmon's own numbers (the query said 99 % and 299.35 W for this GPU) ...
        assert (gpu0.sm_pct, gpu0.mem_util_pct, gpu0.power_w) == (98, 57, 294)
        assert (gpu0.gpu_temp_c, gpu0.mem_temp_c) == (81, None)
        assert (gpu0.sm_clock_mhz, gpu0.mem_clock_mhz, gpu0.fb_used_mib) == (1897, 13365, 90538)
        # ... and what only the query knows.
        assert (gpu0.fb_total_mib, gpu0.power_limit_w) == (97887, 300.0)
        assert (gpu0.uuid, gpu0.name) == (BLACKWELL_UUIDS[0], BLACKWELL_NAME)
        gpu3 = latest(store, 3)
        assert (gpu3.sm_pct, gpu3.fb_used_mib, gpu3.fb_total_mib, gpu3.uuid) == (
            100,
            48209,
            97887,
            BLACKWELL_UUIDS[3],
        )
        host = host_of(store)
        assert [gpu.gpu for gpu in host.gpus] == [0, 1, 2, 3]
        assert host.gpus[0].last_t == 1000.0
        assert host.gpu_status is None
    # dmon was never given up.
    assert len(runner.streams) == 1 and runner.streams[0].closed
    assert [sample.sm_pct for sample in store.applied[:4]] == [99, 99, 100, 100]
    assert [sample.sm_pct for sample in store.applied[4:]] == [98, 99, 100, 100] * 2


async def test_dmon_rows_in_late_bursts_are_kept() -> None:
    # As if dmon's output were block-buffered: two intervals' rows at a time, 0.2 s apart.
    lines = dmon_lines()
    bursts = [(0.2, lines), (0.2, lines[2:]), (0.2, lines[2:])]
    runner = FakeRunner(lambda: ScriptedStream(bursts, exit_status=None))
    store = RecordingStore()
    collector = make_collector(runner, store, Clock(5.0), query_interval_s=1.0, inventory_interval_s=0.15)
    async with running(collector):
        await eventually(lambda: len(store.applied) == 4 + 12)
        await asyncio.sleep(0.1)
        assert collector.source is GpuSource.DMON
    assert len(runner.streams) == 1
    # 4 query samples at start, then every dmon row; the inventory refreshes in between store nothing.
    assert len(store.applied) == 4 + 12
    assert len(runner.queries) >= 3


async def test_an_inventory_refresh_reaches_the_rows_after_it() -> None:
    # Someone lowers GPU 0's power limit (nvidia-smi -pl 250) while dmon streams: the next inventory query
    # says so, and the dmon rows from then on carry it.
    queries = 0

    def query(argv: tuple[str, ...]) -> CommandResult:
        nonlocal queries
        queries += 1
        answer = blackwell_query_answer(argv)
        # Lowered once dmon rows flow: on a loaded machine the first row can come after the next inventory
        # query (0.1 s), or even after a fill-in query (1 s), and the test is about dmon rows before and
        # after the change.
        if queries > 1 and collector.source is GpuSource.DMON:
            answer = answer.replace("300.00", "250.00", 1)
        return CommandResult(0, answer, "")

    lines = dmon_lines()
    runner = FakeRunner(
        lambda: ScriptedStream(replay(lines, times=40, every_s=0.01), exit_status=None), query
    )
    store = RecordingStore()
    # dmon is never judged silent here: a loaded machine may hold a row back longer than FAST allows.
    collector = make_collector(
        runner, store, Clock(0.0), query_interval_s=1.0, inventory_interval_s=0.1, dmon_silence_s=5.0
    )
    async with running(collector):
        await eventually(lambda: any(sample.power_limit_w == 250.0 for sample in store.applied[4:]))
    gpu0_samples = [sample for sample in store.applied[4:] if sample.gpu == 0]
    # Fill-in queries (SM 99 %) may come before dmon's first row (SM 98 %), never after it.
    gpu0 = gpu0_samples[[sample.sm_pct for sample in gpu0_samples].index(98) :]
    limits = [sample.power_limit_w for sample in gpu0]
    first_new = limits.index(250.0)
    assert first_new > 0 and set(limits[:first_new]) == {300.0}
    assert all(limit == 250.0 for limit in limits[first_new:])
    # Only GPU 0's limit changed; its other fields still come from dmon and the inventory.
    assert {(sample.uuid, sample.sm_pct) for sample in gpu0} == {(BLACKWELL_UUIDS[0], 98)}


async def test_a_packet_of_rows_is_stored_whole(stream_kind: str) -> None:
    # dmon's output arrives as one packet a second: a host's rows of one interval, sometimes with the
    # headers printed again between them. A stream that holds the packet hands it over at once, and every
    # row of it is stored before the stream is read again.
    lines = dmon_lines()
    rows = lines[2:]
    packets = [(0.0, lines), (0.05, [*rows, *lines[:2], *rows])]
    runner = FakeRunner(lambda: ScriptedStream(packets, exit_status=None))
    # For each dmon sample stored: how many times the stream had handed over what it held by then.
    takes: list[int] = []

    class TakeRecordingStore(RecordingStore):
        def apply_gpu(self, host: str, sample: GpuSample, now: float) -> None:
            if "bar1" in sample.extra:  # a dmon row (the query's samples have no dmon columns)
                takes.append(len(getattr(runner.streams[0], "taken", ())))
            super().apply_gpu(host, sample, now)

    store, clock = TakeRecordingStore(), Clock(7.0)
    collector = make_collector(runner, store, clock, query_interval_s=1.0)
    async with running(collector):
        await eventually(lambda: len(takes) == 12)
        assert collector.source is GpuSource.DMON
    if stream_kind == "in bursts":
        stream = runner.streams[0]
        assert isinstance(stream, BufferedScriptedStream) and stream.taken[:2] == [5, 9]
        assert takes == [1] * 4 + [2] * 8
    else:
        assert takes == [0] * 12
    applied = [sample for sample in store.applied if "bar1" in sample.extra]
    # The rows as dmon printed them, with what the query knows about each GPU.
    assert [(s.gpu, s.power_w, s.fb_used_mib) for s in applied] == [
        (s.gpu, s.power_w, s.fb_used_mib) for s in parse_dmon("\n".join(lines)) * 3
    ]
    assert all(s.uuid == BLACKWELL_UUIDS[s.gpu] and s.power_limit_w == 300.0 for s in applied)
    host = host_of(store)
    assert [gpu.gpu for gpu in host.gpus] == [0, 1, 2, 3]
    assert all(gpu.latest is applied[8 + gpu.gpu] and gpu.last_t == 7.0 for gpu in host.gpus)


async def test_lines_dmon_printed_besides_rows_say_why_it_was_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A workload's output in the capture, a row of another layout, a blank line: kept (the first three of
    # them) for the reason dmon was given up, whether they come one by one or in one packet.
    lines = dmon_lines()
    foreign = [
        (FIXTURES / "dmon" / "dmon_s_pucm_rtxpro6000_server_load_with_foreign_line.txt")
        .read_text()
        .splitlines()[0],
        (FIXTURES / "dmon" / "dmon_s_m_8gpu_fb_bar1_ccpm.txt").read_text().splitlines()[2],
        "Failed to process command line.",
        "Not shown: a fourth",
    ]
    packet = [foreign[0], *lines[:2], foreign[1], "   ", foreign[2], "# a comment", foreign[3]]
    runner = FakeRunner(lambda: ScriptedStream([(0.0, packet)], exit_status=6))
    collector = make_collector(runner, RecordingStore(), Clock(0.0))
    with caplog.at_level(logging.INFO, logger="trainmon_tui.transport.gpu_collector"):
        async with running(collector):
            await eventually(lambda: collector.source is GpuSource.QUERY)
    why = next(
        record.getMessage() for record in caplog.records if "GPU source now query" in record.getMessage()
    )
    assert "dmon exited with status 6" in why and "without GPU rows" in why
    assert why.endswith(": " + " / ".join(text.strip() for text in foreign[:3]) + ")")


# --------------------------------------------------------------------------------------------- fallback


async def test_dmon_exiting_with_only_headers_falls_back_to_polling_and_is_retried() -> None:
    headers = dmon_lines()[:2]
    runner = FakeRunner(lambda: ScriptedStream([(0.0, headers)], exit_status=0))
    store, clock = RecordingStore(), Clock(20.0)
    collector = make_collector(runner, store, clock)
    async with running(collector):
        await eventually(lambda: collector.source is GpuSource.QUERY)
        queries_then = len(runner.queries)
        await asyncio.sleep(0.3)
        assert len(runner.streams) == 1
        # Polling every 0.05 s: about 6 queries in 0.3 s.
        assert len(runner.queries) - queries_then >= 4
        gpu0 = latest(store, 0)
        assert (gpu0.sm_pct, gpu0.power_w, gpu0.power_limit_w) == (99, 299.35, 300.0)
        assert (gpu0.fb_used_mib, gpu0.fb_total_mib, gpu0.gpu_temp_c) == (90538, 97887, 81)
        assert (gpu0.mem_temp_c, gpu0.sm_clock_mhz, gpu0.mem_clock_mhz) == (None, None, 13365)
        assert (gpu0.uuid, gpu0.name) == (BLACKWELL_UUIDS[0], BLACKWELL_NAME)
        # dmon is tried again after dmon_retry_s.
        await eventually(lambda: len(runner.streams) >= 2)
    assert all(stream.closed for stream in runner.streams)
    assert host_of(store).gpu_status is None


@pytest.mark.parametrize("rows_first", [False, True], ids=["headers-only", "stalls-after-rows"])
async def test_silent_dmon_is_given_up_after_the_silence(rows_first: bool) -> None:
    lines = dmon_lines() if rows_first else dmon_lines()[:2]
    runner = FakeRunner(lambda: ScriptedStream([(0.0, lines)], exit_status=None))
    store = RecordingStore()
    collector = make_collector(runner, store, Clock(0.0), dmon_silence_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running(collector):
        await eventually(lambda: collector.source is GpuSource.QUERY)
        gave_up_after = loop.time() - started
        assert runner.streams[0].closed
        await asyncio.sleep(0.15)
        assert latest(store, 2).sm_pct == 100
    assert gave_up_after >= 0.3
    if not rows_first:
        # While dmon said nothing the queries kept the readings coming: one at start, then every 0.05 s.
        assert len(store.applied) >= 4 * 5


# --------------------------------------------------------------------------------------------- failures


def fixture_failure(name: str, exit_status: int) -> tuple[Callable[[], ScriptedStream], QueryAnswer]:
    text = (SMI_ERRORS / name).read_text()

    def dmon() -> ScriptedStream:
        return ScriptedStream([(0.0, text.splitlines())], exit_status=exit_status)

    def query(argv: tuple[str, ...]) -> CommandResult:
        return CommandResult(exit_status, text, "")

    return dmon, query


@pytest.mark.parametrize(
    ("fixture", "exit_status", "reason"),
    [
        # nvidia-smi's return values: 9 driver not loaded, 6 nothing found, 15 GPU inaccessible.
        ("smi_failed_couldnt_communicate_single_line.txt", 9, DRIVER_UNREACHABLE),
        ("smi_failed_couldnt_communicate_two_lines_curly_quote.txt", 9, DRIVER_UNREACHABLE),
        ("smi_no_devices_were_found_in_container.txt", 6, NO_DEVICES),
        ("smi_no_devices_were_found_with_nvrm_syslog.txt", 6, NO_DEVICES),
        ("smi_unable_to_determine_device_handle.txt", 15, GPU_LOST),
    ],
)
async def test_nvidia_smi_failure_becomes_the_gpu_status_once(
    fixture: str, exit_status: int, reason: str
) -> None:
    dmon, query = fixture_failure(fixture, exit_status)
    runner = FakeRunner(dmon, query)
    store, clock = Store(), Clock(50.0)
    collector = make_collector(runner, store, clock)
    async with running(collector):
        await eventually(lambda: collector.gpu_status is not None)
        version = store.version
        clock.now = 60.0
        await eventually(lambda: len(runner.queries) >= 5)
        host = host_of(store)
        assert host.gpu_status == GpuStatus(reason, 50.0)
        assert host.gpus == ()
        assert collector.source is GpuSource.FAILED
        # Retried every failure_retry_s, stored once.
        assert store.version == version


async def test_missing_nvidia_smi_on_this_machine_is_stored_once() -> None:
    if shutil.which("nvidia-smi") is not None:
        pytest.skip("this machine has nvidia-smi")

    class CountingLocalRunner(LocalRunner):
        def __init__(self) -> None:
            super().__init__("local")
            self.runs = 0

        async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
            self.runs += 1
            return await super().run(argv, timeout)

    runner = CountingLocalRunner()
    store, clock = Store(), Clock(7.0)
    collector = make_collector(runner, store, clock, host="local")
    async with running(collector):
        await eventually(lambda: runner.runs >= 4)
        clock.now = 8.0
        version = store.version
        await eventually(lambda: runner.runs >= 6)
        snapshot = store.snapshot(9.0).hosts["local"]
        assert snapshot.gpu_status == GpuStatus(NOT_INSTALLED, 7.0)
        assert store.version == version


async def test_recovery_clears_the_status_and_dmon_takes_over() -> None:
    failing_dmon, failing_query = fixture_failure("smi_failed_couldnt_communicate_single_line.txt", 9)
    runner = FakeRunner(failing_dmon, failing_query)
    store, clock = Store(), Clock(100.0)
    collector = make_collector(runner, store, clock)
    async with running(collector):
        await eventually(lambda: collector.gpu_status == DRIVER_UNREACHABLE)
        # The driver is loaded again.
        clock.now = 200.0
        runner.query = healthy_query
        runner.dmon = lambda: ScriptedStream(replay(dmon_lines(), times=1), exit_status=None)
        await eventually(lambda: collector.source is GpuSource.DMON)
        await eventually(lambda: latest(store, 3).sm_clock_mhz == 1200)
        host = host_of(store)
        assert host.gpu_status is None
        assert latest(store, 0).sm_pct == 98
        assert host.gpus[0].last_t == 200.0


async def test_query_without_answer_is_not_responding() -> None:
    def hung(argv: tuple[str, ...]) -> CommandResult:
        raise TimeoutError

    runner = FakeRunner(lambda: ScriptedStream([], exit_status=None), hung)
    store = Store()
    collector = make_collector(runner, store, Clock(3.0))
    async with running(collector):
        await eventually(lambda: len(runner.queries) >= 3)
        assert host_of(store).gpu_status == GpuStatus(NOT_RESPONDING, 3.0)
        # The GPUs cannot be read, so dmon is not started either.
        assert runner.streams == []


async def test_a_field_the_driver_rejects_is_dropped_from_the_query() -> None:
    # The corpus message, naming the field this (older) driver does not know.
    rejection = (
        (SMI_ERRORS / "smi_query_invalid_field.txt").read_text().replace("bogus.field", "temperature.memory")
    )

    def old_driver(argv: tuple[str, ...]) -> CommandResult:
        if "temperature.memory" in argv[1]:
            return CommandResult(2, rejection, "")
        return healthy_query(argv)

    runner = FakeRunner(lambda: ScriptedStream([(0.0, dmon_lines()[:2])], exit_status=0), old_driver)
    store = Store()
    collector = make_collector(runner, store, Clock(0.0))
    async with running(collector):
        await eventually(lambda: len(runner.queries) >= 5)
        assert "temperature.memory" not in collector.query_fields
        assert len(collector.query_fields) == len(QUERY_GPU_FIELDS) - 1
        assert host_of(store).gpu_status is None
        gpu1 = latest(store, 1)
        assert (gpu1.sm_pct, gpu1.fb_used_mib, gpu1.mem_temp_c) == (99, 90536, None)
    rejected = [argv for argv in runner.queries if "temperature.memory" in argv[1]]
    assert rejected == [QUERY_GPU_ARGV]


# ----------------------------------------------------------------------------------- host down, cancel


async def test_host_lost_under_dmon_then_back() -> None:
    runner: FakeRunner

    def first_dmon() -> ScriptedStream:
        # The connection drops under dmon: the session notices and is not up until it reconnects.
        return ScriptedStream(
            replay(dmon_lines(), times=1),
            error=StreamLostError(DownReason.CONNECTION_LOST, "nvidia-smi: connection lost"),
            before_error=runner.up.clear,
        )

    runner = FakeRunner(first_dmon)
    store, clock = Store(), Clock(10.0)
    collector = make_collector(runner, store, clock)
    async with running(collector):
        await eventually(lambda: collector.source is GpuSource.HOST_DOWN)
        calls = (len(runner.streams), len(runner.queries))
        await asyncio.sleep(0.2)
        assert (len(runner.streams), len(runner.queries)) == calls
        clock.now = 30.0
        runner.dmon = lambda: ScriptedStream(replay(dmon_lines(), times=1), exit_status=None)
        runner.up.set()
        await eventually(lambda: collector.source is GpuSource.DMON)
        await eventually(lambda: latest(store, 3).sm_clock_mhz == 1200)
        assert host_of(store).gpus[3].last_t == 30.0
    assert len(runner.streams) == 2 and all(stream.closed for stream in runner.streams)


async def test_cancelling_closes_the_stream_and_propagates() -> None:
    runner = FakeRunner(lambda: ScriptedStream(replay(dmon_lines(), times=1), exit_status=None))
    collector = make_collector(runner, Store(), Clock(0.0))
    task = asyncio.get_running_loop().create_task(collector.run())
    await eventually(lambda: collector.source is GpuSource.DMON)
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
    assert runner.streams[0].closed


# ------------------------------------------------------------------------------------- pure helpers


def test_merge_fills_only_what_dmon_did_not_print() -> None:
    dmon_row = GpuSample(gpu=0, sm_pct=98, fb_used_mib=90538, power_w=294, power_limit_w=250)
    known = GpuSample(gpu=0, sm_pct=99, fb_total_mib=97887, power_limit_w=300, uuid="GPU-1", name="n")
    merged = merge_inventory(dmon_row, known)
    assert merged == GpuSample(
        gpu=0,
        sm_pct=98,
        fb_used_mib=90538,
        fb_total_mib=97887,
        power_w=294,
        power_limit_w=250,
        uuid="GPU-1",
        name="n",
    )
    assert merge_inventory(dmon_row, None) is dmon_row


def test_query_argv_is_the_parsers_argv() -> None:
    assert query_gpu_argv(QUERY_GPU_FIELDS) == QUERY_GPU_ARGV


@pytest.mark.parametrize(
    ("exit_status", "stdout", "stderr", "reason"),
    [
        (127, "", "setsid: failed to execute nvidia-smi: No such file or directory\n", NOT_INSTALLED),
        (127, "", "sh: 1: nvidia-smi: not found\n", NOT_INSTALLED),
        (126, "", "nvidia-smi: Permission denied\n", NO_PERMISSION),
        (0, "", "", NO_DEVICES),
        (
            2,
            "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n",
            "",
            INVALID_ARGUMENTS,
        ),
        (
            255,
            "",
            "\x1b[31msomething odd\x1b[0m happened\n",
            "nvidia-smi failed (exit 255): something odd happened",
        ),
        (255, "", "", "nvidia-smi failed (exit 255)"),
    ],
)
def test_failure_reason(exit_status: int, stdout: str, stderr: str, reason: str) -> None:
    assert failure_reason(exit_status, stdout, stderr) == reason


@given(st.integers(min_value=-1, max_value=300), st.text(), st.text())
def test_failure_reason_never_raises_and_is_one_clean_line(
    exit_status: int, stdout: str, stderr: str
) -> None:
    reason = failure_reason(exit_status, stdout, stderr)
    assert reason
    assert not any(unicodedata.category(char) == "Cc" for char in reason)
