"""Simulated sCMOS transmission camera (ophyd-async ``StandardDetector``) writing uint16 frames to HDF5.

At each exposure the camera reads the monochromator energy, the stage position and the shutter, renders
μt of the phantom in its field of view (cached per stage position) and draws a noisy frame with
:class:`~xbeam_bluesky.devices.sim.camera_model.CameraModel`. Frames go to an HDF5 file (SWMR, dataset
``/entry/data/data``, one chunk per frame) described by StreamResource/StreamDatum documents; every
``stage()`` opens a new file, so each stream of a run can have its own files.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from ophyd_async.core import (
    AsyncStatus,
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    PathProvider,
    StandardDetector,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StreamResourceInfo,
    TriggerInfo,
    soft_signal_r_and_setter,
    soft_signal_rw,
)

from xbeam_bluesky.devices.sim.camera_model import CameraModel
from xbeam_bluesky.devices.sim.motion import SimMonochromator, SimSampleStage, SimShutter
from xbeam_bluesky.devices.sim.phantom import FieldOfView, Phantom

#: Dataset holding the frames in every HDF5 file the camera writes.
FRAMES_DATASET = "/entry/data/data"


class DetectorTimeoutError(TimeoutError):
    """The simulated camera delivered no frame in time (an injected fault)."""


class _FrameFile:
    """One SWMR HDF5 file of uint16 frames."""

    def __init__(self, path: Path, shape: tuple[int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = h5py.File(path, "w", libver="latest")
        self.data = self.file.create_dataset(
            FRAMES_DATASET, shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape), dtype=np.uint16
        )
        self.file.swmr_mode = True
        self.count = 0

    def append(self, frame: np.ndarray) -> None:
        self.data.resize(self.count + 1, axis=0)
        self.data[self.count] = frame
        self.data.flush()
        self.count += 1

    def close(self) -> None:
        self.file.close()


class _TriggerLogic(DetectorTriggerLogic):
    def __init__(self, camera: SimCamera) -> None:
        self.camera = camera

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        if livetime > 0:
            await self.camera.exposure.set(livetime)
        self.camera._frames_requested = num

    async def default_trigger_info(self) -> TriggerInfo:
        return TriggerInfo(livetime=await self.camera.exposure.get_value())


class _AcquireLogic(DetectorAcquireLogic):
    def __init__(self, camera: SimCamera) -> None:
        self.camera = camera
        self.task: asyncio.Task | None = None

    async def start_acquiring(self) -> None:
        self.task = asyncio.create_task(self.camera._acquire(self.camera._frames_requested))

    async def wait_for_idle(self) -> None:
        if self.task:
            await self.task

    async def ensure_stopped(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # a failed acquisition was already reported
                pass
            self.task = None


class _DataLogic(DetectorDataLogic):
    def __init__(self, camera: SimCamera, path_provider: PathProvider) -> None:
        self.camera = camera
        self.path_provider = path_provider

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        info = self.path_provider(datakey_name)
        path = Path(info.directory_path) / f"{info.filename}.h5"
        shape = self.camera.model.shape
        self.camera._open_file(path)
        resource = StreamResourceInfo(
            data_key=datakey_name,
            shape=shape,
            chunk_shape=(1, *shape),
            dtype_numpy=np.dtype(np.uint16).str,
            parameters={"dataset": FRAMES_DATASET},
        )
        return StreamResourceDataProvider(
            uri=f"{info.directory_uri}{info.filename}.h5",
            resources=[resource],
            mimetype="application/x-hdf5",
            collections_written_signal=self.camera.frames_written,
        )

    async def stop(self) -> None:
        self.camera._close_file()

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        return [datakey_name]


@dataclass(frozen=True)
class _Links:
    """Devices whose state the camera reads at each exposure."""

    mono: SimMonochromator
    stage: SimSampleStage
    shutter: SimShutter | None


class SimCamera(StandardDetector):
    """Simulated sCMOS camera looking through the phantom at the stage position.

    Parameters
    ----------
    path_provider : ophyd_async.core.PathProvider
        Where to write the HDF5 files (one per ``stage()``).
    mono : SimMonochromator
        Source of the photon energy.
    stage : SimSampleStage
        Source of the field-of-view centre (x, y) in mm.
    phantom : Phantom
        The sample.
    shutter : SimShutter, optional
        Closed shutter → dark frames.
    model : CameraModel, optional
        Detector physics (frame size, pixel size, flux, gain, noise).
    seed : int
        Seed of the frame noise.
    readout_s : float
        Dead time per frame in s (sCMOS rolling readout; 0.01 s = 100 fps).
    time_scale : float
        Factor applied to simulated exposure and readout waits (0 = as fast as the computer renders).
    frame_timeout_s : float
        With an injected fault (:meth:`inject_timeout`), how long the camera waits for the missing frame before
        raising :class:`DetectorTimeoutError`.
    fov_cache_size : int
        Number of fields of view (stage positions) whose ground truth is kept rendered.
    name : str
        Device name; frames are read under this name.
    """

    def __init__(
        self,
        path_provider: PathProvider,
        *,
        mono: SimMonochromator,
        stage: SimSampleStage,
        phantom: Phantom,
        shutter: SimShutter | None = None,
        model: CameraModel | None = None,
        seed: int = 0,
        readout_s: float = 0.01,
        time_scale: float = 1.0,
        frame_timeout_s: float = 10.0,
        fov_cache_size: int = 8,
        name: str = "",
    ) -> None:
        self.model = model or CameraModel()
        # A plain holder, so the linked devices do not become children of the camera.
        self.links = _Links(mono, stage, shutter)
        self.phantom = phantom
        self.readout_s = float(readout_s)
        self.time_scale = float(time_scale)
        self.frame_timeout_s = float(frame_timeout_s)
        self.fail_after_frames: int | None = None
        self.frames_total = 0
        self.render_seconds = 0.0
        self.write_seconds = 0.0
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA3]))
        self._fov_cache: OrderedDict[tuple, FieldOfView] = OrderedDict()
        self._fov_cache_size = int(fov_cache_size)
        self._spectra_cache: dict[float, np.ndarray] = {}
        self._file: _FrameFile | None = None
        self._frames_requested = 1
        self.frames_written, self._set_frames_written = soft_signal_r_and_setter(int, 0)
        self.exposure = soft_signal_rw(float, 0.1, units="s")
        self.pixel_size_um = soft_signal_rw(float, self.model.pixel_size_um, units="um")
        self.gain = soft_signal_rw(float, self.model.gain)
        self.read_noise = soft_signal_rw(float, self.model.read_noise)
        self.dark_offset = soft_signal_rw(float, self.model.dark_offset)
        self.add_detector_logics(_TriggerLogic(self), _AcquireLogic(self), _DataLogic(self, path_provider))
        self.add_config_signals(
            self.exposure, self.pixel_size_um, self.gain, self.read_noise, self.dark_offset
        )
        super().__init__(name=name)

    # -------------------------------------------------------------- plain attributes for planners
    @property
    def frame_shape(self) -> tuple[int, int]:
        """(ny, nx) pixels per frame."""
        return self.model.shape

    @property
    def pixel_um(self) -> float:
        """Effective pixel size at the sample in µm."""
        return self.model.pixel_size_um

    def frame_time_s(self, exposure_s: float) -> float:
        """Modelled time per frame (exposure + readout) in s."""
        return float(exposure_s) + self.readout_s

    def noise_metadata(self, exposure_s: float) -> dict[str, float]:
        """Noise model of the frames for run metadata: gain (ADU/photon), read noise (ADU rms), dark offset
        (ADU), ``offset`` = read_noise² (the :class:`~xbeam_bluesky.spectra.PhotonNoiseModel` offset) and the
        mean open-beam counts above dark ``i0_counts`` at ``exposure_s``."""
        model = self.model
        return {
            "gain": model.gain,
            "offset": model.read_noise**2,
            "read_noise": model.read_noise,
            "dark_offset": model.dark_offset,
            "i0_counts": model.i0_counts(exposure_s),
            "photon_flux": model.photon_flux,
        }

    def max_unsaturated_exposure_s(self, margin: float = 0.9) -> float | None:
        """Longest exposure (s) at which the brightest open-beam pixel stays below ``margin`` × saturation
        (:meth:`CameraModel.max_unsaturated_exposure_s`)."""
        return self.model.max_unsaturated_exposure_s(margin)

    def inject_timeout(self, after_frames: int | None) -> None:
        """Simulate a detector fault: after ``after_frames`` more frames no frame arrives (None = healthy)."""
        self.fail_after_frames = None if after_frames is None else self.frames_total + int(after_frames)

    # -------------------------------------------------------------- acquisition
    def trigger(self) -> AsyncStatus:  # type: ignore[override]
        """Take one frame; fails as soon as the acquisition fails (e.g. :class:`DetectorTimeoutError`)."""
        inner = super().trigger()

        async def _wait() -> None:
            # The standard trigger waits for the frame counter; an acquisition that failed would leave it
            # waiting until its own timeout, so watch the acquisition task as well.
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(inner.task), timeout=0.05)
                    return
                except TimeoutError:
                    acquiring = (
                        self._acquire_logic.task if isinstance(self._acquire_logic, _AcquireLogic) else None
                    )
                    if acquiring is not None and acquiring.done() and acquiring.exception() is not None:
                        inner.task.cancel()
                        raise acquiring.exception() from None

        return AsyncStatus(_wait())

    def _open_file(self, path: Path) -> None:
        self._close_file()
        self._file = _FrameFile(path, self.model.shape)
        self._set_frames_written(0)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def field_of_view(self, center_mm: tuple[float, float]) -> FieldOfView:
        """Ground truth of the field of view at a stage position (cached)."""
        key = (round(center_mm[0], 9), round(center_mm[1], 9))
        fov = self._fov_cache.get(key)
        if fov is None:
            fov = self.phantom.field_of_view(center_mm, self.model.shape, self.model.pixel_size_um)
            self._fov_cache[key] = fov
            while len(self._fov_cache) > self._fov_cache_size:
                self._fov_cache.popitem(last=False)
        else:
            self._fov_cache.move_to_end(key)
        return fov

    def absorbance(self, energy_eV: float, center_mm: tuple[float, float]) -> np.ndarray:
        """μt in the field of view at a stage position and energy (float32 (ny, nx))."""
        spectrum = self._spectra_cache.get(energy_eV)
        if spectrum is None:
            spectrum = self.phantom.phase_spectra([energy_eV])[:, 0]
            if len(self._spectra_cache) > 4096:
                self._spectra_cache.clear()
            self._spectra_cache[energy_eV] = spectrum
        return self.field_of_view(center_mm).absorbance(spectrum)

    def render(self, energy_eV: float, center_mm: tuple[float, float], exposure_s: float, shutter_open: bool):
        """Render one noisy uint16 frame for the given beamline state."""
        if not shutter_open:
            return self.model.sample_frame(None, exposure_s, self._rng, shutter_open=False)
        return self.model.sample_frame(self.absorbance(energy_eV, center_mm), exposure_s, self._rng)

    async def _state(self) -> tuple[float, tuple[float, float], bool]:
        links = self.links
        energy, x, y = await asyncio.gather(
            links.mono.readback.get_value(),
            links.stage.x.readback.get_value(),
            links.stage.y.readback.get_value(),
        )
        shutter_open = True if links.shutter is None else await links.shutter.is_open()
        return float(energy), (float(x), float(y)), shutter_open

    def _render_and_write(self, state: tuple[float, tuple[float, float], bool], exposure: float) -> None:
        t0 = time.perf_counter()
        frame = self.render(state[0], state[1], exposure, state[2])
        t1 = time.perf_counter()
        if self._file is None:
            raise RuntimeError(f"{self.name}: no open file; stage and prepare the camera first")
        self._file.append(frame)
        self.render_seconds += t1 - t0
        self.write_seconds += time.perf_counter() - t1

    async def _acquire(self, frames: int) -> None:
        exposure = await self.exposure.get_value()
        for _ in range(frames):
            if self.fail_after_frames is not None and self.frames_total >= self.fail_after_frames:
                # The frame never arrives: the detector reports a timeout after frame_timeout_s.
                await asyncio.sleep(self.frame_timeout_s)
                raise DetectorTimeoutError(
                    f"{self.name}: no frame within {self.frame_timeout_s:.2f} s (simulated detector timeout after "
                    f"{self.frames_total} frames)"
                )
            state = await self._state()
            wait = self.frame_time_s(exposure) * self.time_scale
            if wait > 0:
                await asyncio.sleep(wait)
            await asyncio.to_thread(self._render_and_write, state, exposure)
            self.frames_total += 1
            assert self._file is not None
            self._set_frames_written(self._file.count)
