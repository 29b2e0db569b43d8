"""An areaDetector sCMOS camera soft IOC whose HDF5 plugin writes frames of the simulated phantom.

The camera looks through the phantom of :mod:`xbeam_bluesky.devices.sim` at the beamline state it reads over
Channel Access from the other soft IOCs — the monochromator energy (``--energy-pv``), the stage position
(``--x-pv``, ``--y-pv``) and the shutter status (``--shutter-pv``) — and renders each frame with the sim
camera's physics (:class:`~xbeam_bluesky.devices.sim.camera_model.CameraModel`: flat field, Beer–Lambert,
photon and read noise; closed shutter → dark frame), with the same random stream as ``SimCamera`` for the
same ``--seed``.

Records (``{prefix}cam1:`` and ``{prefix}HDF1:``, the suffixes are options) behave as ADCore's:

- ``Acquire`` is a busy record: a put of 1 takes ``NumImages`` frames (``ImageMode`` Multiple; one in
  Single; until stopped in Continuous), each ``AcquireTime`` long and ``AcquirePeriod`` apart, and completes
  when the acquisition ends; a put of 0 aborts. ``ArrayCounter`` counts frames, ``DetectorState_RBV`` goes
  Acquire → Idle (Aborted after an abort).
- ``Capture`` (busy) starts a file: ``FullFileName_RBV`` = ``FileTemplate`` % (``FilePath``, ``FileName``,
  ``FileNumber``); in ``Stream`` mode every frame is appended (SWMR, ``/entry/data/data``, one chunk per frame,
  flushed) and counted in ``NumCaptured_RBV``; ``Capture`` mode keeps the frames and writes them when
  ``NumCapture`` are in, at ``WriteFile`` or when capture stops; ``Single`` writes one file per frame.
  ``NumCapture`` = 0 captures until ``Capture`` is put to 0. A put of 1 to ``Capture`` completes at once
  (watch ``Capture_RBV``), a put of 0 when the file is closed. ``FilePathExists_RBV`` says whether ``FilePath``
  is a writable directory; a capture into a missing one is refused with ``WriteStatus`` = Write error and the
  reason in ``WriteMessage``, as is a failed write.

Test-only control PV: ``HDF1:SimWriteError`` — a non-empty message makes the next frame's write fail with it.

Run ``python -m xbeam_bluesky.testing.iocs.camera --prefix BL08:SCMOS1: --port N --shape 256 256
--energy-pv BL08:DCM:Energy.RBV --x-pv BL08:SMPL:X.RBV --y-pv BL08:SMPL:Y.RBV --shutter-pv BL08:SHTR:STS``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xbeam_bluesky.devices.sim.camera_model import CameraModel
from xbeam_bluesky.devices.sim.phantom import FieldOfView, Phantom
from xbeam_bluesky.testing.iocs._areadetector import ADDriverGroup, HDF5PluginGroup
from xbeam_bluesky.testing.iocs._server import bool_pv, ioc_argument_parser, serve

__all__ = ["BeamState", "CameraIOC", "FrameFile", "PhantomRenderer", "main"]

logger = logging.getLogger(__name__)

#: The dataset the areaDetector HDF5 plugin writes frames to.
FRAMES_DATASET = "/entry/data/data"


class PhantomRenderer:
    """Frames of the phantom as the simulated camera renders them (same physics and random stream).

    Parameters
    ----------
    model
        Detector physics (frame shape, pixel size, flux, gain, noise).
    phantom
        The sample.
    seed
        Seed of the frame noise (``SimCamera``'s stream for the same seed).
    """

    def __init__(self, model: CameraModel, phantom: Phantom, seed: int) -> None:
        self.model = model
        self.phantom = phantom
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA3]))
        self._fovs: OrderedDict[tuple[float, float], FieldOfView] = OrderedDict()
        self._spectra: dict[float, np.ndarray] = {}

    def render(self, energy_eV: float, center_mm: tuple[float, float], exposure_s: float, shutter_open: bool):
        """One noisy uint16 frame (ny, nx) at this beamline state."""
        if not shutter_open:
            return self.model.sample_frame(None, exposure_s, self.rng, shutter_open=False)
        key = (round(center_mm[0], 9), round(center_mm[1], 9))
        fov = self._fovs.get(key)
        if fov is None:
            fov = self.phantom.field_of_view(center_mm, self.model.shape, self.model.pixel_size_um)
            self._fovs[key] = fov
            while len(self._fovs) > 8:
                self._fovs.popitem(last=False)
        spectrum = self._spectra.get(energy_eV)
        if spectrum is None:
            spectrum = self._spectra.setdefault(energy_eV, self.phantom.phase_spectra([energy_eV])[:, 0])
        return self.model.sample_frame(fov.absorbance(spectrum), exposure_s, self.rng)


class BeamState:
    """The beamline state the camera sees, read over CA at each exposure (energy eV, x/y mm, shutter).

    PVs that are not given keep the defaults (7112 eV, (0, 0) mm, shutter open). A PV that cannot be read
    keeps its last value and is logged once per outage.
    """

    def __init__(self, energy_pv: str, x_pv: str, y_pv: str, shutter_pv: str, timeout_s: float = 2.0) -> None:
        self.names = {"energy": energy_pv, "x": x_pv, "y": y_pv, "shutter": shutter_pv}
        self.values: dict[str, Any] = {"energy": 7112.0, "x": 0.0, "y": 0.0, "shutter": "Open"}
        self.timeout_s = timeout_s
        self._pvs: dict[str, Any] = {}
        self._context: Any = None
        self._failing: set[str] = set()

    async def read(self) -> tuple[float, tuple[float, float], bool]:
        """(energy eV, (x, y) mm, shutter open) now."""
        from caproto import ChannelType
        from caproto.asyncio.client import Context

        wanted = {k: v for k, v in self.names.items() if v}
        if wanted and self._context is None:
            self._context = Context()
        for key, name in wanted.items():
            try:
                if key not in self._pvs:
                    (self._pvs[key],) = await self._context.get_pvs(name, timeout=self.timeout_s)
                as_string = key == "shutter"
                reading = await self._pvs[key].read(
                    data_type=ChannelType.STRING if as_string else None, timeout=self.timeout_s
                )
                value = reading.data[0]
                self.values[key] = value.decode() if as_string else float(value)
                self._failing.discard(key)
            except Exception as exc:
                if key not in self._failing:
                    logger.warning(
                        "cannot read %s (%s); using its last value %r", name, exc, self.values[key]
                    )
                    self._failing.add(key)
        v = self.values
        return float(v["energy"]), (float(v["x"]), float(v["y"])), v["shutter"] == "Open"


class FrameFile:
    """One HDF5 file of uint16 frames at :data:`FRAMES_DATASET`, as NDFileHDF5 writes it (SWMR, flushed)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.file = h5py.File(path, "w", libver="latest")
        self.data = self.file.create_dataset(
            FRAMES_DATASET, shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape), dtype=dtype
        )
        self.file.swmr_mode = True
        self.count = 0

    def append(self, frame: np.ndarray) -> None:
        """Append one frame and flush it (readers see it at once)."""
        self.data.resize(self.count + 1, axis=0)
        self.data[self.count] = frame
        self.data.flush()
        self.count += 1

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def full_file_name(template: str, path: str, name: str, number: int) -> str:
    """``template`` % (path, name, number) as NDFileCreateFileName does (templates with two ``%s`` only too).

    Raises
    ------
    ValueError
        The template does not take (path, name[, number]).
    """
    for args in ((path, name, number), (path, name)):
        try:
            return template % args
        except TypeError:
            continue
    raise ValueError(f"FileTemplate {template!r}; expected e.g. '%s%s_%3.3d.h5' (path, name, number)")


class _Driver(ADDriverGroup):
    """``cam1:`` records; ``Acquire`` runs the owner's acquisition."""

    def __init__(self, *args: Any, owner: CameraIOC, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    acquire = bool_pv("Acquire", choices=("Done", "Acquire"))

    @acquire.startup
    async def acquire(self, instance: Any, async_lib: Any) -> None:
        """Publish the sensor size (``ArraySizeX/Y``) of the frames this camera renders."""
        await self.owner.publish_shape()

    @acquire.putter
    async def acquire(self, instance: Any, value: str) -> str:
        """1: acquire (the put completes when done); 0: abort."""
        logger.debug("Acquire put %r (acquiring %s)", value, self.owner.acquiring)
        if value == "Acquire":
            if not self.owner.acquiring:
                await self.owner.acquire()
            return "Done"
        self.owner.abort.set()
        return "Done"


class _HDF5(HDF5PluginGroup):
    """``HDF1:`` records; ``Capture`` and ``WriteFile`` run the owner's file writing."""

    def __init__(self, *args: Any, owner: CameraIOC, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    capture = bool_pv("Capture", choices=("Done", "Capture"))
    write_file = bool_pv("WriteFile", choices=("Done", "Write"))

    @capture.putter
    async def capture(self, instance: Any, value: str) -> str:
        """1: start a capture; 0: end it (the put completes when the file is closed).

        Unlike ADCore's busy record, the put of 1 completes at once (clients watch ``Capture_RBV``, as
        ophyd-async does); a put of 0 completes when the file is closed and ``Capture_RBV`` is 0."""
        logger.debug("Capture put %r (capturing %s)", value, self.owner._capturing)
        if value == "Capture":
            return "Capture" if await self.owner.begin_capture() else "Done"
        await self.owner.end_capture()
        return "Done"

    @write_file.putter
    async def write_file(self, instance: Any, value: str) -> str:
        """1: write the frames kept in Capture mode now."""
        if value == "Write":
            await self.owner.write_buffered()
        return "Done"


class CameraIOC:
    """The driver and HDF5 plugin record groups and the acquisition that links them.

    Parameters
    ----------
    prefix, driver_suffix, hdf_suffix
        PV names: ``{prefix}{driver_suffix}Acquire``, ``{prefix}{hdf_suffix}Capture``, ...
    renderer
        Draws the frames.
    beam
        Reads the beamline state at each exposure.
    reuse_frame
        Render the first frame only and send it at every exposure (benchmarks the CA and HDF5 path without the
        physics).
    """

    def __init__(
        self, prefix: str, renderer: PhantomRenderer, beam: BeamState, driver_suffix: str = "cam1:",
        hdf_suffix: str = "HDF1:", reuse_frame: bool = False,
    ) -> None:  # fmt: skip
        self.renderer = renderer
        self.reuse_frame = reuse_frame
        self._frame: np.ndarray | None = None
        self.beam = beam
        self.driver = _Driver(prefix=prefix + driver_suffix, owner=self)
        self.hdf = _HDF5(prefix=prefix + hdf_suffix, owner=self)
        self.acquiring = False
        self.abort = asyncio.Event()
        self._capturing = False
        self._file: FrameFile | None = None
        self._buffer: list[np.ndarray] = []
        self._file_lock = asyncio.Lock()

    async def publish_shape(self) -> None:
        """``ArraySizeX_RBV``/``ArraySizeY_RBV`` (and the plugin's ``ArraySize0/1``) of the rendered frames."""
        ny, nx = self.renderer.model.shape
        for group in (self.driver, self.hdf):
            await group.array_size_x.write(nx)
            await group.array_size_y.write(ny)
            await group.array_size0.write(nx)
            await group.array_size1.write(ny)
        await self.hdf.file_array_size0.write(nx)
        await self.hdf.file_array_size1.write(ny)

    @property
    def pvdb(self) -> dict[str, Any]:
        """All PVs of the camera."""
        return {**self.driver.pvdb, **self.hdf.pvdb}

    async def _wait_abort(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if an abort came first."""
        try:
            await asyncio.wait_for(self.abort.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            return False
        return True

    async def acquire(self) -> None:
        """Take the frames ``ImageMode``/``NumImages`` ask for, handing each to the HDF5 plugin."""
        drv = self.driver
        mode = drv.image_mode.value
        n_frames = 1 if mode == "Single" else (int(drv.num_images.value) if mode == "Multiple" else None)
        self.acquiring = True
        self.abort.clear()
        await drv.acquire_rbv.write("Acquire")
        await drv.detector_state.write("Acquire")
        loop = asyncio.get_running_loop()
        aborted, taken = False, 0
        try:
            while n_frames is None or taken < max(n_frames, 1):
                t0 = loop.time()
                exposure = float(drv.acquire_time.value)
                period = max(float(drv.acquire_period.value), exposure)
                state = await self.beam.read()
                if await self._wait_abort(exposure):
                    aborted = True
                    break
                frame = self._frame
                if frame is None:
                    frame = await asyncio.to_thread(
                        self.renderer.render, state[0], state[1], exposure, state[2]
                    )
                    self._frame = frame if self.reuse_frame else None
                taken += 1
                await drv.array_counter.write(int(drv.array_counter_rbv.value) + 1)
                await drv.unique_id.write(int(drv.unique_id.value) + 1)
                await self.on_frame(frame)
                if await self._wait_abort(period - (loop.time() - t0)):
                    aborted = True
                    break
        finally:
            await drv.detector_state.write("Aborted" if aborted else "Idle")
            await drv.acquire_rbv.write("Done")
            self.acquiring = False

    async def _error(self, message: str) -> None:
        logger.error("%s: %s", self.hdf.prefix, message)
        await self.hdf.write_status.write("Write error")
        await self.hdf.write_message.write(message[:255])

    async def begin_capture(self) -> bool:
        """Start a capture (``Capture`` = 1): check the path and name the file; False if refused."""
        hdf = self.hdf
        if self._capturing:
            return True
        path = hdf.file_path.value
        if not (path and os.path.isdir(path) and os.access(path, os.W_OK)):
            await hdf.file_path_exists.write("No")
            await self._error(f"FilePath {path!r} does not exist or is not writable; capture refused")
            return False
        try:
            name = full_file_name(
                hdf.file_template.value, path, hdf.file_name.value, int(hdf.file_number.value)
            )
        except ValueError as exc:
            await self._error(str(exc))
            return False
        await hdf.write_status.write("Write OK")
        await hdf.write_message.write("")
        await hdf.full_file_name.write(name)
        await hdf.num_captured.write(0)
        self._buffer = []
        self._capturing = True
        if hdf.lazy_open.value != "Yes" and hdf.file_write_mode.value == "Stream":
            await self._open(Path(name))
        await hdf.capture_rbv.write("Capture")
        return True

    async def end_capture(self) -> None:
        """End the capture (``Capture`` = 0, or ``NumCapture`` reached): write what is kept, close the file."""
        hdf = self.hdf
        if not self._capturing:
            return
        self._capturing = False
        try:
            if hdf.file_write_mode.value == "Capture":
                await self.write_buffered()
        finally:
            await self._close()
            if hdf.auto_increment.value == "Yes":
                await hdf.file_number.write(int(hdf.file_number.value) + 1)
            await hdf.capture_rbv.write("Done")

    async def _open(self, path: Path, shape: tuple[int, ...] | None = None) -> bool:
        async with self._file_lock:
            if self._file is not None:
                return True
            shape = shape or self.renderer.model.shape
            try:
                self._file = await asyncio.to_thread(FrameFile, path, shape, np.dtype(np.uint16))
            except OSError as exc:
                await self._error(f"cannot create {path}: {exc}")
                return False
            return True

    async def _close(self) -> None:
        async with self._file_lock:
            if self._file is not None:
                await asyncio.to_thread(self._file.close)
                self._file = None

    async def _write(self, frames: list[np.ndarray]) -> bool:
        """Append ``frames`` to the open file (opening it on first use); False on a write error."""
        hdf = self.hdf
        message = hdf.sim_write_error.value
        if message:
            await hdf.sim_write_error.write("")
            await self._error(message)
            return False
        if not await self._open(Path(hdf.full_file_name.value), frames[0].shape):
            return False
        async with self._file_lock:
            assert self._file is not None
            try:
                for frame in frames:
                    await asyncio.to_thread(self._file.append, frame)
            except (OSError, RuntimeError) as exc:
                await self._error(f"writing {self._file.path} failed: {exc}")
                return False
        return True

    async def on_frame(self, frame: np.ndarray) -> None:
        """A new NDArray from the driver: write or keep it while capturing."""
        hdf = self.hdf
        if not self._capturing or hdf.enable_callbacks.value != "Enable":
            return
        mode = hdf.file_write_mode.value
        if mode == "Capture":
            self._buffer.append(frame)
            written = True
        else:
            written = await self._write([frame])
            if written and mode == "Single":
                await self._close()
                if hdf.auto_increment.value == "Yes":
                    await hdf.file_number.write(int(hdf.file_number.value) + 1)
                number = int(hdf.file_number.value)
                await hdf.full_file_name.write(
                    full_file_name(hdf.file_template.value, hdf.file_path.value, hdf.file_name.value, number)
                )
        if written:
            await hdf.num_captured.write(int(hdf.num_captured.value) + 1)
        target = int(hdf.num_capture.value)
        if target > 0 and int(hdf.num_captured.value) >= target:
            await self.end_capture()

    async def write_buffered(self) -> None:
        """Write the frames kept in ``Capture`` mode."""
        frames, self._buffer = self._buffer, []
        if frames:
            await self._write(frames)


def main(argv: list[str] | None = None) -> None:
    """``python -m xbeam_bluesky.testing.iocs.camera``: serve the camera until stopped."""
    parser = ioc_argument_parser(
        "Soft areaDetector sCMOS camera writing HDF5 frames of the phantom.", "BL08:SCMOS1:"
    )
    parser.add_argument("--driver", default="cam1:", help="driver suffix (default cam1:)")
    parser.add_argument("--hdf", default="HDF1:", help="HDF5 plugin suffix (default HDF1:)")
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("NY", "NX"))
    parser.add_argument("--pixel-um", type=float, default=4.0, help="pixel size at the sample (µm)")
    parser.add_argument("--photon-flux", type=float, default=2.0e4, help="photons/pixel/s in the open beam")
    parser.add_argument("--sample-mm", type=float, nargs=2, default=(20.0, 10.0), metavar=("W", "H"))
    parser.add_argument("--seed", type=int, default=0, help="seed of phantom, flat field and noise")
    parser.add_argument(
        "--reuse-frame",
        action="store_true",
        help="render one frame and send it at every exposure (benchmarks)",
    )
    for pv in ("energy", "x", "y", "shutter"):
        parser.add_argument(f"--{pv}-pv", default="", help=f"PV of the {pv} the camera sees (default: none)")
    args = parser.parse_args(argv)
    model = CameraModel(
        shape=tuple(args.shape),
        pixel_size_um=args.pixel_um,
        photon_flux=args.photon_flux,
        flat_seed=args.seed,
    )
    phantom = Phantom(width_mm=args.sample_mm[0], height_mm=args.sample_mm[1], seed=args.seed)
    beam = BeamState(args.energy_pv, args.x_pv, args.y_pv, args.shutter_pv)
    ioc = CameraIOC(
        args.prefix, PhantomRenderer(model, phantom, args.seed), beam, args.driver, args.hdf, args.reuse_frame
    )
    serve(ioc.pvdb, args)


if __name__ == "__main__":
    main()
