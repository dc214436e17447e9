"""NvmlGpuCollector with a fake pynvml (real pynvml exception classes and field structs), and for real here.

This machine has no NVIDIA driver, so the real no-driver path is tested as it is. The fake GPUs are built
from real readings in the corpus: a 4-GPU Blackwell host's ``--query-gpu`` capture and an 8-GPU H800 host's
dmon capture. A value the capture does not hold is one the fake GPU does not support (NVMLError_NotSupported),
which the collector must report as None.
"""

# The fake spells pynvml's own camelCase function names.
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from trainmon_tui.model import GpuSample
from trainmon_tui.parsers.dmon import parse_dmon
from trainmon_tui.parsers.smi_csv import parse_query_gpu
from trainmon_tui.parsers.smi_status import DRIVER_MISMATCH, GPU_LOST, NO_DEVICES, NO_PERMISSION
from trainmon_tui.state.store import GpuStatus, Store
from trainmon_tui.transport.nvml import NO_DRIVER, NO_PYNVML, NvmlApi, NvmlGpuCollector

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
QUERY_BLACKWELL = FIXTURES / "query_gpu" / "query_gpu_noheader_nounits_23fields_blackwell.txt"
DMON_H800 = FIXTURES / "dmon" / "dmon_gpm_metrics_8gpu_h800.txt"
REPO_ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
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


#: Every per-poll NVML call the collector makes for a device.
EVERY_READ = (
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetFieldValues",
)


def blackwell_gpus() -> list[GpuSample]:
    return parse_query_gpu(QUERY_BLACKWELL.read_text(), BLACKWELL_QUERY_FIELDS)


def h800_gpus() -> list[GpuSample]:
    """The first reading of each of the 8 GPUs."""
    first: dict[int, GpuSample] = {}
    for sample in parse_dmon(DMON_H800.read_text()):
        first.setdefault(sample.gpu, sample)
    return list(first.values())


def nvml_view(sample: GpuSample) -> GpuSample:
    """What NVML can report of a reading: the named fields, no extra columns, no printed time."""
    return GpuSample(
        gpu=sample.gpu,
        sm_pct=sample.sm_pct,
        mem_util_pct=sample.mem_util_pct,
        fb_used_mib=sample.fb_used_mib,
        fb_total_mib=sample.fb_total_mib,
        power_w=sample.power_w,
        power_limit_w=sample.power_limit_w,
        gpu_temp_c=sample.gpu_temp_c,
        mem_temp_c=sample.mem_temp_c,
        sm_clock_mhz=sample.sm_clock_mhz,
        mem_clock_mhz=sample.mem_clock_mhz,
        uuid=sample.uuid,
        name=sample.name,
    )


@dataclass
class FakeDevice:
    """A GPU that reports ``reading``; ``errors`` makes named NVML functions raise instead."""

    reading: GpuSample
    errors: dict[str, type[Exception]] = field(default_factory=dict)

    def answer(self, function: str, value: Any) -> Any:
        error = self.errors.get(function)
        if error is not None:
            raise error()
        if value is None:
            raise pynvml.NVMLError_NotSupported()
        return value


def _milli(value: float | None) -> int | None:
    return None if value is None else round(value * 1000)


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


class FakeNvml:
    """The pynvml functions NvmlGpuCollector calls, answering from FakeDevices, with pynvml's own errors."""

    NVMLError = pynvml.NVMLError
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = pynvml.NVMLError_DriverNotLoaded
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_LibRmVersionMismatch = pynvml.NVMLError_LibRmVersionMismatch
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVMLError_Uninitialized = pynvml.NVMLError_Uninitialized
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_FI_DEV_MEMORY_TEMP = pynvml.NVML_FI_DEV_MEMORY_TEMP

    def __init__(self, devices: Sequence[FakeDevice], init_error: type[Exception] | None = None) -> None:
        self.devices = list(devices)
        self.init_error = init_error
        self.init_attempts = 0
        self.initialised = 0
        self.shutdowns = 0
        self.threads: set[int] = set()

    def _enter(self) -> None:
        self.threads.add(threading.get_ident())

    def nvmlInit(self) -> None:
        self._enter()
        self.init_attempts += 1
        if self.init_error is not None:
            raise self.init_error()
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._enter()
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        self._enter()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        self._enter()
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str:
        return str(handle.answer("nvmlDeviceGetName", handle.reading.name))

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str:
        return str(handle.answer("nvmlDeviceGetUUID", handle.reading.uuid))

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> Any:
        self._enter()
        reading = handle.reading
        both = None if reading.sm_pct is None or reading.mem_util_pct is None else reading
        rates = (
            None if both is None else SimpleNamespace(gpu=_int(both.sm_pct), memory=_int(both.mem_util_pct))
        )
        return handle.answer("nvmlDeviceGetUtilizationRates", rates)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> Any:
        reading = handle.reading
        memory = None
        if reading.fb_used_mib is not None and reading.fb_total_mib is not None:
            used, total = round(reading.fb_used_mib * MIB), round(reading.fb_total_mib * MIB)
            memory = SimpleNamespace(used=used, total=total, free=total - used)
        return handle.answer("nvmlDeviceGetMemoryInfo", memory)

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:
        return int(handle.answer("nvmlDeviceGetPowerUsage", _milli(handle.reading.power_w)))

    def nvmlDeviceGetPowerManagementLimit(self, handle: FakeDevice) -> int:
        return int(handle.answer("nvmlDeviceGetPowerManagementLimit", _milli(handle.reading.power_limit_w)))

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return int(handle.answer("nvmlDeviceGetTemperature", _int(handle.reading.gpu_temp_c)))

    def nvmlDeviceGetClockInfo(self, handle: FakeDevice, clock_type: int) -> int:
        reading = handle.reading
        value = {pynvml.NVML_CLOCK_SM: reading.sm_clock_mhz, pynvml.NVML_CLOCK_MEM: reading.mem_clock_mhz}
        return int(handle.answer("nvmlDeviceGetClockInfo", _int(value[clock_type])))

    def nvmlDeviceGetFieldValues(self, handle: FakeDevice, field_ids: list[int]) -> Sequence[Any]:
        assert field_ids == [pynvml.NVML_FI_DEV_MEMORY_TEMP]
        handle.answer("nvmlDeviceGetFieldValues", True)
        # NVML answers the call as a whole and reports each field's own outcome inside it.
        value = pynvml.c_nvmlFieldValue_t()
        value.fieldId = pynvml.NVML_FI_DEV_MEMORY_TEMP
        if handle.reading.mem_temp_c is None:
            value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        else:
            value.nvmlReturn = pynvml.NVML_SUCCESS
            value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            value.value.uiVal = round(handle.reading.mem_temp_c)
        return [value]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(collector: NvmlGpuCollector) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(collector.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})
    assert task.cancelled()


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def collected(store: Store, host: str = "local") -> list[GpuSample]:
    return [gpu.latest for gpu in store.snapshot(0.0).hosts[host].gpus]


def test_the_fake_covers_the_api() -> None:
    as_api: NvmlApi = FakeNvml([])
    assert as_api.NVMLError is pynvml.NVMLError


async def test_every_field_of_every_gpu_off_the_event_loop() -> None:
    gpus = blackwell_gpus()
    fake = FakeNvml([FakeDevice(gpu) for gpu in gpus])
    store, clock = Store(), Clock(500.0)
    collector = NvmlGpuCollector(store, "local", clock=clock, interval_s=0.05, nvml=fake)
    async with running(collector):
        await eventually(lambda: "local" in store.snapshot(0.0).hosts and len(collected(store)) == 4)
    assert collected(store) == [nvml_view(gpu) for gpu in gpus]
    first = collected(store)[0]
    assert (first.sm_pct, first.fb_used_mib, first.fb_total_mib) == (99, 90538, 97887)
    assert (first.power_w, first.power_limit_w, first.gpu_temp_c) == (299.35, 300.0, 81)
    assert (first.uuid, first.name) == (
        "GPU-e16d248c-c1a9-3302-01d6-82c18e02c9ce",
        "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
    )
    # Not in the capture, so not supported by the fake: unknown, not 0.
    assert (first.mem_temp_c, first.sm_clock_mhz) == (None, None)
    host = store.snapshot(0.0).hosts["local"]
    assert host.gpus[0].last_t == 500.0
    assert host.gpu_status is None
    assert threading.get_ident() not in fake.threads
    assert fake.shutdowns == fake.initialised == 1


async def test_memory_temperature_and_clocks_where_supported() -> None:
    gpus = h800_gpus()
    fake = FakeNvml([FakeDevice(gpu) for gpu in gpus])
    store = Store()
    collector = NvmlGpuCollector(store, "local", clock=Clock(1.0), interval_s=0.05, nvml=fake)
    async with running(collector):
        await eventually(lambda: "local" in store.snapshot(0.0).hosts and len(collected(store)) == 8)
    readings = collected(store)
    assert readings == [nvml_view(gpu) for gpu in gpus]
    assert [reading.mem_temp_c for reading in readings[:3]] == [28, 27, 28]
    assert (readings[0].sm_clock_mhz, readings[0].mem_clock_mhz, readings[0].power_w) == (210, 1593, 56)
    # dmon -s of this capture printed no memory use.
    assert (readings[0].fb_used_mib, readings[0].fb_total_mib) == (None, None)


async def test_a_failing_field_is_none_and_the_rest_still_read() -> None:
    gpus = blackwell_gpus()
    broken = FakeDevice(
        gpus[1],
        errors={
            "nvmlDeviceGetPowerUsage": pynvml.NVMLError_NoPermission,
            "nvmlDeviceGetClockInfo": pynvml.NVMLError_Unknown,
            "nvmlDeviceGetFieldValues": pynvml.NVMLError_FunctionNotFound,
        },
    )
    fake = FakeNvml([FakeDevice(gpus[0]), broken])
    store = Store()
    collector = NvmlGpuCollector(store, "local", clock=Clock(1.0), interval_s=0.05, nvml=fake)
    async with running(collector):
        await eventually(lambda: "local" in store.snapshot(0.0).hosts and len(collected(store)) == 2)
        await asyncio.sleep(0.1)
        assert collector.gpu_status is None
    second = collected(store)[1]
    assert (second.power_w, second.sm_clock_mhz, second.mem_clock_mhz, second.mem_temp_c) == (None,) * 4
    assert (second.sm_pct, second.fb_used_mib, second.power_limit_w, second.gpu_temp_c) == (
        99,
        90536,
        300,
        66,
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (pynvml.NVMLError_LibraryNotFound, NO_DRIVER),
        (pynvml.NVMLError_DriverNotLoaded, NO_DRIVER),
        (pynvml.NVMLError_NoPermission, NO_PERMISSION),
        (pynvml.NVMLError_LibRmVersionMismatch, DRIVER_MISMATCH),
        (pynvml.NVMLError_Unknown, "NVML init failed: Unknown Error"),
    ],
)
async def test_nvml_that_cannot_start_is_reported_once_then_recovers(
    error: type[Exception], reason: str
) -> None:
    fake = FakeNvml([FakeDevice(gpu) for gpu in blackwell_gpus()], init_error=error)
    store, clock = Store(), Clock(30.0)
    collector = NvmlGpuCollector(store, "local", clock=clock, interval_s=0.05, retry_s=0.05, nvml=fake)
    async with running(collector):
        await eventually(lambda: fake.init_attempts >= 2)
        version = store.version
        clock.now = 40.0
        await eventually(lambda: fake.init_attempts >= 5)
        assert store.snapshot(0.0).hosts["local"].gpu_status == GpuStatus(reason, 30.0)
        assert store.version == version
        # The driver comes (back).
        fake.init_error = None
        await eventually(lambda: len(collected(store)) == 4)
        assert store.snapshot(0.0).hosts["local"].gpu_status is None
    assert fake.shutdowns == fake.initialised == 1


async def test_real_pynvml_without_a_driver_says_so_once() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    store, clock = Store(), Clock(12.0)
    collector = NvmlGpuCollector(store, "local", clock=clock, retry_s=0.05)
    async with running(collector):
        await eventually(lambda: collector.starts >= 2)
        version = store.version
        clock.now = 13.0
        await eventually(lambda: collector.starts >= 5)
        host = store.snapshot(0.0).hosts["local"]
        assert host.gpu_status == GpuStatus(NO_DRIVER, 12.0)
        assert host.gpus == ()
        assert store.version == version


async def test_lost_gpu_is_the_status_until_it_answers_again() -> None:
    gpus = blackwell_gpus()
    lost = FakeDevice(gpus[1])
    fake = FakeNvml([FakeDevice(gpus[0]), lost])
    store = Store()
    collector = NvmlGpuCollector(store, "local", clock=Clock(1.0), interval_s=0.05, nvml=fake)
    async with running(collector):
        await eventually(lambda: "local" in store.snapshot(0.0).hosts and len(collected(store)) == 2)
        lost.errors = dict.fromkeys(EVERY_READ, pynvml.NVMLError_GpuIsLost)
        await eventually(lambda: collector.gpu_status == GPU_LOST)
        assert store.snapshot(0.0).hosts["local"].gpu_status == GpuStatus(GPU_LOST, 1.0)
        # The other GPU is still read.
        assert collected(store)[0] == nvml_view(gpus[0])
        assert collected(store)[1].sm_pct is None
        lost.errors = {}
        await eventually(lambda: collector.gpu_status is None)
        await eventually(lambda: collected(store)[1] == nvml_view(gpus[1]))
    assert store.snapshot(0.0).hosts["local"].gpu_status is None


async def test_driver_unloaded_while_polling_is_reported_and_nvml_restarted() -> None:
    gpus = blackwell_gpus()
    devices = [FakeDevice(gpu) for gpu in gpus[:2]]
    fake = FakeNvml(devices)
    store, clock = Store(), Clock(70.0)
    collector = NvmlGpuCollector(store, "local", clock=clock, interval_s=0.05, retry_s=0.1, nvml=fake)
    async with running(collector):
        await eventually(lambda: "local" in store.snapshot(0.0).hosts and len(collected(store)) == 2)
        # The kernel module is unloaded: every call fails, and so does starting NVML again.
        fake.init_error = pynvml.NVMLError_DriverNotLoaded
        for device in devices:
            device.errors = dict.fromkeys(EVERY_READ, pynvml.NVMLError_DriverNotLoaded)
        clock.now = 80.0
        await eventually(lambda: collector.gpu_status == NO_DRIVER)
        attempts = fake.init_attempts
        await eventually(lambda: fake.init_attempts >= attempts + 2)
        assert store.snapshot(0.0).hosts["local"].gpu_status == GpuStatus(NO_DRIVER, 80.0)
        # Loaded again.
        fake.init_error = None
        for device in devices:
            device.errors = {}
        await eventually(lambda: collector.gpu_status is None)
    assert fake.shutdowns == fake.initialised


async def test_no_devices() -> None:
    fake = FakeNvml([])
    store = Store()
    collector = NvmlGpuCollector(store, "local", clock=Clock(2.0), retry_s=0.05, nvml=fake)
    async with running(collector):
        await eventually(lambda: fake.init_attempts >= 3)
        assert store.snapshot(0.0).hosts["local"].gpu_status == GpuStatus(NO_DEVICES, 2.0)
    assert fake.shutdowns == fake.initialised


async def test_without_the_pynvml_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import pynvml` raise ImportError.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    store = Store()
    collector = NvmlGpuCollector(store, "local", clock=Clock(4.0), retry_s=0.05)
    async with running(collector):
        await eventually(lambda: collector.gpu_status is not None)
    assert store.snapshot(0.0).hosts["local"].gpu_status == GpuStatus(NO_PYNVML, 4.0)


def test_importing_the_module_does_not_import_pynvml() -> None:
    script = (
        "import sys; sys.modules['pynvml'] = None; "
        "import trainmon_tui.transport.nvml as nvml; "
        "print(sys.modules['pynvml'] is None and nvml.NO_DRIVER)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == NO_DRIVER


async def test_cancelled_while_starting_still_shuts_down() -> None:
    release = threading.Event()

    class SlowStart(FakeNvml):
        def nvmlInit(self) -> None:
            # A driver that takes its time to answer, in the worker thread.
            release.wait(5.0)
            super().nvmlInit()

    fake = SlowStart([FakeDevice(gpu) for gpu in blackwell_gpus()])
    collector = NvmlGpuCollector(Store(), "local", clock=Clock(0.0), nvml=fake)
    task = asyncio.get_running_loop().create_task(collector.run())
    await eventually(lambda: collector.starts == 1)
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
    release.set()
    await eventually(lambda: fake.shutdowns == 1)
    assert fake.initialised == 1
