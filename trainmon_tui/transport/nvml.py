"""The one place that calls NVML (pynvml): this machine's GPUs into the store, N/A instead of a crash.

pynvml is imported inside functions only, so this module imports on machines where the package or the driver
is missing. Every call that reads a value goes through a :class:`_Reader`, which turns any NVMLError into
None for that one value. Blocking NVML calls run in a worker thread (:func:`asyncio.to_thread`), one hop per
poll.
When NVML cannot start (no driver, no library, no permission) the reason becomes the host's GPU status once,
and starting is retried only every ``retry_s`` seconds.
"""

# The protocol below spells pynvml's own camelCase function names.
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from trainmon_tui.model import GpuSample
from trainmon_tui.parsers.smi_status import (
    DRIVER_MISMATCH,
    GPU_LOST,
    NO_DEVICES,
    NO_PERMISSION,
    NVML_INIT_FAILED,
)
from trainmon_tui.state.store import Store

_log = logging.getLogger(__name__)

#: GPU status when NVML finds no driver (its library is missing or the kernel module is not loaded).
NO_DRIVER: Final = "no NVIDIA driver"
#: GPU status when the pynvml package (nvidia-ml-py) cannot be imported.
NO_PYNVML: Final = "pynvml not installed"

_MIB = 1024.0 * 1024.0
_MILLI = 1000.0
_NVML_SUCCESS = 0
# nvmlFieldValue_t.valueType -> the member of its value union that holds the number.
_VALUE_MEMBER_BY_TYPE: Final = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}

_T = TypeVar("_T")


class NvmlApi(Protocol):
    """The part of the pynvml module this collector uses (the real module, or a fake in tests)."""

    NVMLError: type[Exception]
    NVMLError_LibraryNotFound: type[Exception]
    NVMLError_DriverNotLoaded: type[Exception]
    NVMLError_NoPermission: type[Exception]
    NVMLError_LibRmVersionMismatch: type[Exception]
    NVMLError_GpuIsLost: type[Exception]
    NVMLError_Uninitialized: type[Exception]
    NVML_TEMPERATURE_GPU: int
    NVML_CLOCK_SM: int
    NVML_CLOCK_MEM: int
    NVML_FI_DEV_MEMORY_TEMP: int

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    # An object with ``gpu`` and ``memory`` (percent).
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    # An object with ``used`` and ``total`` (bytes).
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    # Milliwatts.
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    # MHz.
    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int: ...
    # One nvmlFieldValue_t per id: ``nvmlReturn``, ``valueType`` and the ``value`` union.
    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[int]) -> Sequence[Any]: ...


def import_pynvml() -> NvmlApi:
    """The real pynvml module; raises ImportError where nvidia-ml-py is not installed."""
    import pynvml  # noqa: PLC0415 - imported late on purpose: most machines running the TUI have no GPU

    api: NvmlApi = pynvml
    return api


class _Reader:
    """Makes NVML calls for values: any NVMLError becomes None for that value.

    It notes a lost GPU, and an error that means NVML itself is gone (driver unloaded, library shut down).
    """

    __slots__ = ("api", "gone", "gpu_lost")

    def __init__(self, api: NvmlApi) -> None:
        self.api = api
        self.gpu_lost = False
        self.gone: Exception | None = None

    def __call__(self, call: Callable[..., _T], *args: Any) -> _T | None:
        api = self.api
        try:
            return call(*args)
        except api.NVMLError_GpuIsLost:
            self.gpu_lost = True
        except (
            api.NVMLError_DriverNotLoaded,
            api.NVMLError_LibraryNotFound,
            api.NVMLError_Uninitialized,
        ) as error:
            self.gone = error
        except api.NVMLError:
            pass
        return None


def _scaled(value: float | None, divisor: float) -> float | None:
    return None if value is None else float(value) / divisor


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def _field_number(field: Any) -> float | None:
    """The number in one nvmlFieldValue_t, or None when NVML reported an error for that field."""
    if getattr(field, "nvmlReturn", None) != _NVML_SUCCESS:
        return None
    value_type = getattr(field, "valueType", None)
    member = _VALUE_MEMBER_BY_TYPE.get(value_type) if isinstance(value_type, int) else None
    if member is None:
        return None
    value = getattr(field.value, member, None)
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class _Device:
    index: int
    handle: Any
    name: str | None
    uuid: str | None


def _start(api: NvmlApi) -> list[_Device]:
    """nvmlInit and the devices with what does not change (name, UUID). Raises NVMLError when it cannot."""
    api.nvmlInit()
    read = _Reader(api)
    try:
        devices: list[_Device] = []
        for index in range(api.nvmlDeviceGetCount()):
            handle = read(api.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue  # a device that fell off the bus: the others still count
            name = read(api.nvmlDeviceGetName, handle)
            uuid = read(api.nvmlDeviceGetUUID, handle)
            devices.append(_Device(index, handle, name, uuid))
        return devices
    except api.NVMLError:
        _shutdown(api)
        raise


def _shutdown(api: NvmlApi) -> None:
    try:
        api.nvmlShutdown()
    except api.NVMLError as error:
        _log.debug("nvmlShutdown failed: %s", error)


def _read_device(read: _Reader, device: _Device) -> GpuSample:
    """One reading of one device; what NVML cannot tell is None."""
    api = read.api
    handle = device.handle
    utilisation = read(api.nvmlDeviceGetUtilizationRates, handle)
    memory = read(api.nvmlDeviceGetMemoryInfo, handle)
    # Memory temperature has no getter of its own; HBM parts report it as a field value.
    fields = read(api.nvmlDeviceGetFieldValues, handle, [api.NVML_FI_DEV_MEMORY_TEMP])
    return GpuSample(
        gpu=device.index,
        sm_pct=None if utilisation is None else _number(utilisation.gpu),
        mem_util_pct=None if utilisation is None else _number(utilisation.memory),
        fb_used_mib=None if memory is None else _scaled(memory.used, _MIB),
        fb_total_mib=None if memory is None else _scaled(memory.total, _MIB),
        power_w=_scaled(read(api.nvmlDeviceGetPowerUsage, handle), _MILLI),
        power_limit_w=_scaled(read(api.nvmlDeviceGetPowerManagementLimit, handle), _MILLI),
        gpu_temp_c=_number(read(api.nvmlDeviceGetTemperature, handle, api.NVML_TEMPERATURE_GPU)),
        mem_temp_c=_field_number(fields[0]) if fields else None,
        sm_clock_mhz=_number(read(api.nvmlDeviceGetClockInfo, handle, api.NVML_CLOCK_SM)),
        mem_clock_mhz=_number(read(api.nvmlDeviceGetClockInfo, handle, api.NVML_CLOCK_MEM)),
        uuid=device.uuid,
        name=device.name,
    )


def _read_all(api: NvmlApi, devices: Sequence[_Device]) -> tuple[list[GpuSample], _Reader]:
    """A reading of every device, and the reader that says what went wrong on the way."""
    read = _Reader(api)
    samples = [_read_device(read, device) for device in devices]
    return samples, read


def init_failure_reason(api: NvmlApi, error: Exception) -> str:
    """The GPU status for an NVMLError raised while starting NVML."""
    if isinstance(error, api.NVMLError_LibraryNotFound | api.NVMLError_DriverNotLoaded):
        return NO_DRIVER
    if isinstance(error, api.NVMLError_Uninitialized):
        # NVML was started; something shut it down under us (or the driver went away).
        return f"{NVML_INIT_FAILED}: {error}"
    if isinstance(error, api.NVMLError_NoPermission):
        return NO_PERMISSION
    if isinstance(error, api.NVMLError_LibRmVersionMismatch):
        return DRIVER_MISMATCH
    if isinstance(error, api.NVMLError_GpuIsLost):
        return GPU_LOST
    return f"{NVML_INIT_FAILED}: {error}"


def _shut_down_after_start(api: NvmlApi) -> Callable[[asyncio.Future[list[_Device]]], None]:
    """A callback for a start whose caller was cancelled: shut NVML down again if it did start."""

    def shut_down(start: asyncio.Future[list[_Device]]) -> None:
        if not start.cancelled() and start.exception() is None:
            asyncio.get_running_loop().run_in_executor(None, _shutdown, api)

    return shut_down


class NvmlGpuCollector:
    """Polls this machine's GPUs through NVML every ``interval_s`` into ``store``; ``await run()``.

    ``nvml`` replaces the pynvml module (tests inject a fake); by default it is imported when ``run`` starts.
    """

    def __init__(
        self,
        store: Store,
        host: str = "local",
        *,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 1.0,
        retry_s: float = 300.0,
        nvml: NvmlApi | None = None,
    ) -> None:
        self._store = store
        self.host = host
        self._clock = clock
        self._interval_s = interval_s
        self._retry_s = retry_s
        self._api = nvml
        self._gpu_status: str | None = None
        # The store may hold a status from an earlier collector of this host: the first one always goes there.
        self._gpu_status_stored = False
        self.starts = 0

    @property
    def gpu_status(self) -> str | None:
        """Why the GPUs cannot be read, as last stored; None while they can."""
        return self._gpu_status

    async def run(self) -> None:
        """Poll until cancelled; while NVML cannot start, try again every ``retry_s``."""
        api = self._api
        while api is None:
            try:
                api = import_pynvml()
            except ImportError:
                self._set_gpu_status(NO_PYNVML)
                await asyncio.sleep(self._retry_s)
        self._api = api
        while True:
            self.starts += 1
            starting = asyncio.ensure_future(asyncio.to_thread(_start, api))
            try:
                # Shielded: a start already under way in its thread finishes, and is undone (below).
                devices = await asyncio.shield(starting)
            except asyncio.CancelledError:
                starting.add_done_callback(_shut_down_after_start(api))
                raise
            except api.NVMLError as error:
                self._set_gpu_status(init_failure_reason(api, error))
                await asyncio.sleep(self._retry_s)
                continue
            try:
                if not devices:
                    self._set_gpu_status(NO_DEVICES)
                    await asyncio.sleep(self._retry_s)
                    continue
                # Returns when NVML itself went away (driver unloaded): it is started again after a pause.
                await self._poll(api, devices)
            finally:
                await asyncio.to_thread(_shutdown, api)
            await asyncio.sleep(self._interval_s)

    async def _poll(self, api: NvmlApi, devices: Sequence[_Device]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            samples, reader = await asyncio.to_thread(_read_all, api, devices)
            if reader.gone is not None:
                self._set_gpu_status(init_failure_reason(api, reader.gone))
                return
            self._set_gpu_status(GPU_LOST if reader.gpu_lost else None)
            now = self._clock()
            for sample in samples:
                self._store.apply_gpu(self.host, sample, now)
            await asyncio.sleep(max(0.0, started + self._interval_s - loop.time()))

    def _set_gpu_status(self, reason: str | None) -> None:
        changed = reason != self._gpu_status
        if self._gpu_status_stored and not changed:
            return
        if changed and reason is None:
            _log.info("%s: NVML reads the GPUs again (was: %s)", self.host, self._gpu_status)
        elif changed:
            _log.warning("%s: GPUs cannot be read through NVML: %s", self.host, reason)
        self._gpu_status = reason
        self._gpu_status_stored = True
        self._store.set_gpu_status(self.host, reason, self._clock())
