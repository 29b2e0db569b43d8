"""An sCMOS areaDetector camera with its HDF5 file-writer plugin, and a beam shutter."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ophyd_async.core import (
    AsyncStatus,
    DetectorTriggerLogic,
    DeviceMock,
    NotConnectedError,
    PathProvider,
    SignalDict,
    StandardReadable,
    StrictEnum,
    TriggerInfo,
    callback_on_mock_put,
    default_mock_class,
    observe_value,
    set_and_wait_for_other_value,
    set_mock_value,
)
from ophyd_async.epics.adcore import (
    ADAcquireLogic,
    ADBaseDataType,
    ADBaseIO,
    ADImageMode,
    ADState,
    ADWriterFactory,
    AreaDetector,
    prepare_exposures,
    trigger_info_from_num_images,
)
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw

__all__ = [
    "CalibratedScmosCamera",
    "CameraFaultError",
    "CameraNoise",
    "EpicsScmosCamera",
    "EpicsShutter",
    "ScmosCameraMock",
    "ScmosTriggerLogic",
    "ShutterMock",
    "ShutterState",
    "mock_frame",
]

logger = logging.getLogger(__name__)

#: The dataset the areaDetector HDF5 plugin writes frames to (and ``ADHDFDataLogic`` points readers at).
HDF_DATASET = "/entry/data/data"
#: Time (s) the camera IOC has to answer a read when a frame did not come, before it counts as gone.
PROBE_TIMEOUT_S = 2.0


class CameraFaultError(RuntimeError):
    """The camera's IOC stopped answering, or its HDF5 plugin reported a write error (PV and message named)."""


class ScmosTriggerLogic(DetectorTriggerLogic):
    """Internally triggered exposures for a generic sCMOS areaDetector driver.

    Parameters
    ----------
    driver
        The camera's ``ADBaseIO`` driver.
    readout_time
        Dead time between frames (s), e.g. the rolling-shutter readout of the sensor.
    """

    def __init__(self, driver: ADBaseIO, readout_time: float) -> None:
        self.driver = driver
        self.readout_time = readout_time

    def get_deadtime(self, config_values: SignalDict) -> float:
        """Dead time between frames (s)."""
        return self.readout_time

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        """Configure ``num`` exposures of ``livetime`` s each."""
        await prepare_exposures(self.driver, num, livetime, deadtime)

    async def default_trigger_info(self):
        """One collection of the driver's current ``NumImages`` frames."""
        return await trigger_info_from_num_images(self.driver)


class ScmosCameraMock(DeviceMock["EpicsScmosCamera"]):
    """Mock behaviour standing in for the IOC: acquiring writes frames through the HDF5 plugin.

    With ``init_devices(mock=True)`` the camera reports an unsigned 16-bit mono sensor of
    ``frame_shape`` pixels. Setting ``Acquire`` produces ``NumImages`` frames (one in ``Single`` mode),
    ``AcquireTime`` apart; while the HDF5 plugin is capturing each frame is appended to
    ``FilePath/FileName.h5`` at ``/entry/data/data`` (SWMR) and ``NumCaptured`` counts it, exactly as the
    areaDetector HDF5 plugin does, so plans, TiledWriter and the read-back helpers run unchanged.
    Frame ``n`` (0-based, counted by ``ArrayCounter``) is :func:`mock_frame` ``(n, shape)``.
    """

    async def connect(self, device: EpicsScmosCamera) -> None:
        """Set IOC-like defaults and install the acquisition and file-writing callbacks."""
        driver, hdf = device.driver, device.hdf
        height, width = device.frame_shape
        set_mock_value(driver.array_size_x, width)
        set_mock_value(driver.array_size_y, height)
        set_mock_value(driver.data_type, ADBaseDataType.UINT16)
        set_mock_value(driver.detector_state, ADState.IDLE)
        set_mock_value(hdf.file_path_exists, True)
        files: dict[str, h5py.File] = {}

        def on_capture(value: bool) -> None:
            if value:
                set_mock_value(hdf.num_captured, 0)
            else:
                for h5 in files.values():
                    h5.close()
                files.clear()

        async def acquire_frames() -> None:
            mode, num, exposure = await asyncio.gather(
                driver.image_mode.get_value(), driver.num_images.get_value(), driver.acquire_time.get_value()
            )
            n_frames = 1 if mode == ADImageMode.SINGLE else max(1, num)
            set_mock_value(driver.detector_state, ADState.ACQUIRE)
            for _ in range(n_frames):
                if not await driver.acquire.get_value():
                    break  # aborted
                await asyncio.sleep(exposure)
                counter = await driver.array_counter.get_value()
                frame = mock_frame(counter, (height, width))
                set_mock_value(driver.array_counter, counter + 1)
                if await hdf.capture.get_value():
                    path = Path(await hdf.file_path.get_value()) / f"{await hdf.file_name.get_value()}.h5"
                    _append_frame(files, path, frame)
                    set_mock_value(hdf.num_captured, await hdf.num_captured.get_value() + 1)
            set_mock_value(driver.detector_state, ADState.IDLE)
            set_mock_value(driver.acquire, False)

        tasks: set[asyncio.Task] = set()

        def on_acquire(value: bool) -> None:
            if value:
                task = asyncio.get_running_loop().create_task(acquire_frames())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        callback_on_mock_put(hdf.capture, on_capture)
        callback_on_mock_put(driver.acquire, on_acquire)


def mock_frame(counter: int, shape: tuple[int, int]) -> np.ndarray:
    """The frame the mock camera produces as its ``counter``-th image (uint16, ``shape`` = (y, x)).

    A ramp along x offset by 100 counts per frame, so each frame is distinguishable and its pixels too.
    """
    height, width = shape
    row = (np.arange(width, dtype=np.int64) + 100 * counter) % 65536
    return np.broadcast_to(row, (height, width)).astype(np.uint16)


def _append_frame(files: dict[str, h5py.File], path: Path, frame: np.ndarray) -> None:
    """Append ``frame`` to ``path`` at :data:`HDF_DATASET`, opening (SWMR) the file on first use."""
    key = str(path)
    if key not in files:
        h5 = h5py.File(path, "w", libver="latest")
        h5.create_dataset(
            HDF_DATASET, shape=(0, *frame.shape), maxshape=(None, *frame.shape), chunks=(1, *frame.shape),
            dtype=frame.dtype,
        )  # fmt: skip
        h5.swmr_mode = True
        files[key] = h5
    dataset = files[key][HDF_DATASET]
    dataset.resize(dataset.shape[0] + 1, axis=0)
    dataset[-1] = frame
    dataset.flush()


@default_mock_class(ScmosCameraMock)
class EpicsScmosCamera(AreaDetector[ADBaseIO]):
    """An sCMOS camera on an areaDetector IOC, writing frames with the HDF5 plugin (SWMR).

    Works with any areaDetector driver exposing the ADBase records (ADAndor3, ADHamamatsu, ADPcoEdge...).
    Frames go to files named by ``path_provider`` in a directory the IOC can write and this process can
    read; the run documents carry StreamResource/StreamDatum pointing at them.

    Parameters
    ----------
    prefix
        PV prefix of the IOC, e.g. ``"BL08:SCMOS1:"``.
    path_provider
        Where the HDF5 plugin writes (directory as seen by the IOC) and how files are named.
    driver_suffix, hdf_suffix
        Suffixes of the driver and HDF5 plugin records (``"cam1:"``, ``"HDF1:"``).
    readout_time
        Dead time between frames (s).
    shape
        (y, x) frame size in pixels (reported as the sensor size in mock mode).
    pixel_size_um
        Pixel size at the sample, µm.
    name
        Device name.
    """

    def __init__(
        self,
        prefix: str,
        path_provider: PathProvider,
        driver_suffix: str = "cam1:",
        hdf_suffix: str = "HDF1:",
        readout_time: float = 1e-3,
        shape: tuple[int, int] = (2048, 2048),
        pixel_size_um: float = 1.0,
        name: str = "",
    ) -> None:
        self.frame_shape = (int(shape[0]), int(shape[1]))
        self.pixel_um = float(pixel_size_um)
        self.readout_s = float(readout_time)
        driver = ADBaseIO(prefix + driver_suffix)
        self.hdf_prefix = prefix + hdf_suffix
        self.driver_prefix = prefix + driver_suffix
        self.write_status = epics_signal_r(str, self.hdf_prefix + "WriteStatus")
        self.write_message = epics_signal_r(str, self.hdf_prefix + "WriteMessage")
        self._lost: str | None = None  # why the IOC is taken for gone (no unstage puts into the void)
        super().__init__(
            driver,
            prefix,
            ADWriterFactory.hdf(path_provider, writer_suffix=hdf_suffix),
            acquire_logic=ADAcquireLogic(driver),
            trigger_logic=ScmosTriggerLogic(driver, readout_time),
            name=name,
        )
        # bluesky does not wait for a Status returned by stage/unstage unless the plan asks (bps.stage(...,
        # wait=True)); a plan that unstages, stages and prepares in a row would otherwise stop, open and start
        # the HDF5 capture concurrently over CA (the new capture is taken for the old one still closing).
        self._in_order = asyncio.Lock()

    @AsyncStatus.wrap
    async def stage(self) -> None:
        """Stop acquisition and file writing (after any unstage still running), ready for ``prepare``."""
        async with self._in_order:
            await self._guarded(super().stage())

    @AsyncStatus.wrap
    async def unstage(self) -> None:
        """Stop acquisition and close the file; a later stage or prepare waits for this to finish.

        After a trigger found the IOC gone (:class:`CameraFaultError`) nothing is put (each put would wait for
        its timeout and hide the fault behind a second error); the next stage talks to the IOC again.
        """
        async with self._in_order:
            if self._lost is not None:
                logger.warning("%s: not unstaged: %s", self.name, self._lost)
                self._lost = None
                return
            await self._guarded(super().unstage())

    def trigger(self) -> AsyncStatus:  # type: ignore[override]
        """Take one frame; fail with :class:`CameraFaultError` as soon as the HDF5 plugin reports a write error,
        or when no frame came within the exposure timeout and the IOC does not answer (both named)."""
        inner = super().trigger()

        async def checked() -> None:
            watches = [
                asyncio.ensure_future(self._write_error()),
                asyncio.ensure_future(self._disconnected()),
            ]
            try:
                done, _ = await asyncio.wait({inner.task, *watches}, return_when=asyncio.FIRST_COMPLETED)
                for watch in watches:
                    if watch in done:
                        inner.task.cancel()
                        raise watch.result()
                await self._guarded(inner)
            finally:
                for watch in watches:
                    watch.cancel()

        return AsyncStatus(checked())

    async def _disconnected(self) -> CameraFaultError:
        """Wait for the CA client to report the driver's ``DetectorState_RBV`` disconnected (the IOC went away
        mid-frame); never returns for mock signals."""
        if not self.write_status.source.startswith("ca://"):
            await asyncio.Event().wait()
        import aioca

        pv = self.driver_prefix + "DetectorState_RBV"
        connected, lost = asyncio.Event(), asyncio.Event()

        def on_update(value: Any) -> None:
            (connected if value.ok else lost).set()

        subscription = aioca.camonitor(pv, on_update, notify_disconnect=True)
        try:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    await connected.wait()
                how = "disconnected during the frame"
            except TimeoutError:
                how = f"is not connected (no update of {pv} within {PROBE_TIMEOUT_S} s)"
            else:
                await lost.wait()
        finally:
            subscription.close()
        self._lost = (
            f"{self.driver_prefix}: the camera IOC {how} (Channel Access lost {pv}); it was stopped or crashed. "
            "The frames written before stay in the run's file; restart the IOC and run the plan again"
        )
        return CameraFaultError(self._lost)

    async def _write_error(self) -> CameraFaultError:
        """Wait for ``WriteStatus`` to change to ``Write error``; the error naming the PV and the message."""
        first = True
        async for status in observe_value(self.write_status):
            if status == "Write error" and not first:
                return await self._write_fault()
            first = False
        raise AssertionError("observe_value ended")  # pragma: no cover - it does not end by itself

    async def _write_fault(self) -> CameraFaultError:
        message = await self.write_message.get_value()
        return CameraFaultError(
            f"{self.hdf_prefix}WriteStatus = Write error: {message or '(no WriteMessage)'}; the frames written "
            "before this one stay in the run's file"
        )

    async def _diagnose(self, timeout: TimeoutError) -> Exception:
        """Why a frame or a put timed out: the IOC does not answer, the HDF5 plugin failed, or (else) ``timeout``."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                status = await self.write_status.get_value()
        except (TimeoutError, NotConnectedError):
            self._lost = (
                f"{self.driver_prefix}: the camera IOC does not answer (no reply from {self.hdf_prefix}WriteStatus "
                f"within {PROBE_TIMEOUT_S} s after: {timeout}); it was stopped or crashed. The frames "
                "written before stay in the run's file; restart the IOC and run the plan again"
            )
            return CameraFaultError(self._lost)
        if status == "Write error":
            return await self._write_fault()
        return timeout

    @AsyncStatus.wrap
    async def prepare(self, value: TriggerInfo) -> None:
        """Set the exposures and open the file (after any stage or unstage still running)."""
        async with self._in_order:
            await self._guarded(super().prepare(value))

    async def _guarded(self, operation: Awaitable[None]) -> None:
        """Await ``operation``; a timeout becomes :class:`CameraFaultError` when the IOC turns out to be gone."""
        try:
            await operation
        except TimeoutError as exc:
            raise await self._diagnose(exc) from exc

    @property
    def exposure(self):
        """The exposure time signal (s): the driver's ``AcquireTime``."""
        return self.driver.acquire_time

    def frame_time_s(self, exposure_s: float) -> float:
        """Time per frame (exposure + readout) in s."""
        return float(exposure_s) + self.readout_s


@dataclass(frozen=True)
class CameraNoise:
    """The noise and response of a camera, measured at the beamline (the ``[epics.camera]`` noise keys).

    Parameters
    ----------
    gain
        ADU per detected photon (from a photon-transfer curve).
    read_noise
        Read noise, ADU rms (standard deviation of a dark frame's pixels).
    dark_offset
        Mean dark level, ADU.
    i0_counts_per_s
        Mean open-beam counts per pixel above dark per second of exposure, ADU/s (mean of a flat minus the
        dark, divided by its exposure).
    peak_counts_per_s
        Counts above dark per second of the brightest open-beam pixel, ADU/s (None: not measured, no
        saturation check).
    saturation_adu
        Full scale of the frames, ADU (65535 for 16 bits).
    """

    gain: float
    read_noise: float
    dark_offset: float
    i0_counts_per_s: float
    peak_counts_per_s: float | None = None
    saturation_adu: float = 65535.0

    def __post_init__(self) -> None:
        for key in ("gain", "i0_counts_per_s", "saturation_adu"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"camera noise {key} = {value!r}; expected a positive number")
        for key in ("read_noise", "dark_offset"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"camera noise {key} = {value!r}; expected a non-negative number (ADU)")
        peak = self.peak_counts_per_s
        if peak is not None and not (math.isfinite(peak) and peak >= self.i0_counts_per_s):
            raise ValueError(
                f"camera noise peak_counts_per_s = {peak!r}; expected a number >= i0_counts_per_s "
                f"= {self.i0_counts_per_s} (the brightest pixel is at least as bright as the mean)"
            )
        if self.dark_offset >= self.saturation_adu:
            raise ValueError(
                f"camera noise dark_offset = {self.dark_offset!r} ADU is not below saturation_adu = "
                f"{self.saturation_adu!r}"
            )


class CalibratedScmosCamera(EpicsScmosCamera):
    """An :class:`EpicsScmosCamera` whose noise and open-beam response were measured (:class:`CameraNoise`).

    It reports its noise model to the plans (``noise_metadata``: recorded in the start document for the live
    clustering) and, when ``peak_counts_per_s`` is known, the longest exposure that does not saturate
    (``max_unsaturated_exposure_s``), so it satisfies the ``NoiseReporting`` and ``ExposureLimited`` protocols
    like the simulated camera.

    Parameters
    ----------
    prefix, path_provider
        As :class:`EpicsScmosCamera`.
    noise
        The measured noise and response.
    **kwargs
        Further :class:`EpicsScmosCamera` options.
    """

    def __init__(self, prefix: str, path_provider: PathProvider, noise: CameraNoise, **kwargs) -> None:
        self.noise = noise
        super().__init__(prefix, path_provider, **kwargs)

    def noise_metadata(self, exposure_s: float) -> dict[str, float]:
        """``gain`` (ADU/photon), ``offset`` = read_noise² (ADU²), ``read_noise`` (ADU), ``dark_offset`` (ADU)
        and ``i0_counts`` (mean open-beam ADU above dark per pixel) at ``exposure_s`` (s)."""
        n = self.noise
        return {
            "gain": n.gain,
            "offset": n.read_noise**2,
            "read_noise": n.read_noise,
            "dark_offset": n.dark_offset,
            "i0_counts": n.i0_counts_per_s * float(exposure_s),
        }

    def max_unsaturated_exposure_s(self, margin: float = 0.9) -> float | None:
        """Longest exposure (s) with the brightest open-beam pixel below ``margin`` × ``saturation_adu``
        (None when ``peak_counts_per_s`` is not configured)."""
        n = self.noise
        if n.peak_counts_per_s is None:
            return None
        return (margin * n.saturation_adu - n.dark_offset) / n.peak_counts_per_s


class ShutterState(StrictEnum):
    """Commanded and reported state of a beam shutter."""

    CLOSED = "Closed"
    OPEN = "Open"


class ShutterMock(DeviceMock["EpicsShutter"]):
    """Mock behaviour standing in for the IOC: the status follows the command at once."""

    async def connect(self, device: EpicsShutter) -> None:
        """Start closed and mirror every command into the status record."""
        set_mock_value(device.status, ShutterState.CLOSED)
        callback_on_mock_put(device.command, lambda value: set_mock_value(device.status, ShutterState(value)))


@default_mock_class(ShutterMock)
class EpicsShutter(StandardReadable):
    """A beam shutter with a command record and a status readback (``Open``/``Closed`` enums).

    Parameters
    ----------
    command_pv
        The writable command record.
    status_pv
        The status record; defaults to ``command_pv`` + ``"_RBV"``.
    name
        Device name.
    """

    def __init__(self, command_pv: str, status_pv: str | None = None, name: str = "") -> None:
        with self.add_children_as_readables():
            self.status = epics_signal_r(ShutterState, status_pv or command_pv + "_RBV")
        self.command = epics_signal_rw(ShutterState, command_pv)
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def set(self, value: ShutterState | str) -> None:
        """Command ``value`` (``"open"`` or ``"closed"``, any case) and wait for the status to report it."""
        state = _shutter_state(value)
        await set_and_wait_for_other_value(self.command, state, self.status, state)

    async def is_open(self) -> bool:
        """True when the status record reports the shutter open."""
        return await self.status.get_value() == ShutterState.OPEN


def _shutter_state(value: ShutterState | str) -> ShutterState:
    for state in ShutterState:
        if str(value).lower() in {state.value.lower(), state.name.lower()}:
            return state
    raise ValueError(f"shutter position {value!r}; expected 'open' or 'closed'")
