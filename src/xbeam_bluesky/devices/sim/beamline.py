"""Assemble a complete simulated beamline: monochromator, sample stage, shutter, sCMOS camera, diffractometer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from ophyd_async.core import Device, StaticPathProvider, UUIDFilenameProvider

from xbeam_bluesky.devices.sim.camera import SimCamera
from xbeam_bluesky.devices.sim.camera_model import CameraModel
from xbeam_bluesky.devices.sim.diffractometer import SimPowderDiffractometer, rietveld_renderer
from xbeam_bluesky.devices.sim.motion import SimMonochromator, SimSampleStage, SimShutter
from xbeam_bluesky.devices.sim.phantom import Phantom
from xbeam_bluesky.errors import ConfigError, OutputPathError

#: Crystal phases of the simulated powder sample: bundled CIF → scale factor.
DEFAULT_XRD_PHASES: dict[str, float] = {"PbSO4-Wyckoff.cif": 1.0}


@dataclass
class SimBeamlineConfig:
    """Parameters of the simulated beamline (all JSON-friendly).

    Attributes
    ----------
    frame_shape : tuple of int
        Camera frame (ny, nx) pixels.
    pixel_size_um : float
        Effective camera pixel size in µm.
    photon_flux : float
        Detected photons per pixel per second in the open beam.
    time_scale : float
        Factor applied to every simulated wait (motion, exposure, readout); 0 = as fast as possible.
    seed : int
        Seed of the phantom and of the noise.
    sample_size_mm : tuple of float
        Phantom (width, height) in mm.
    mono_speed_eV_s, mono_settle_s : float
        Monochromator timing model.
    stage_speed_mm_s, stage_settle_s : float
        Sample-stage timing model.
    readout_s : float
        Camera readout (dead) time per frame in s.
    xrd_phases : dict
        CIF → scale of the powder sample.
    """

    frame_shape: tuple[int, int] = (256, 256)
    pixel_size_um: float = 4.0
    photon_flux: float = 2.0e4
    time_scale: float = 0.0
    seed: int = 0
    sample_size_mm: tuple[float, float] = (20.0, 10.0)
    mono_speed_eV_s: float = 20.0
    mono_settle_s: float = 0.1
    stage_speed_mm_s: float = 5.0
    stage_settle_s: float = 0.05
    readout_s: float = 0.01
    xrd_phases: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_XRD_PHASES))


@dataclass
class SimBeamline:
    """The devices of a simulated beamline (not yet connected: call :meth:`connect` after creating the
    RunEngine)."""

    mono: SimMonochromator
    stage: SimSampleStage
    shutter: SimShutter
    camera: SimCamera
    xrd: SimPowderDiffractometer
    phantom: Phantom
    config: SimBeamlineConfig
    detector_dir: Path

    def devices(self) -> dict[str, Device]:
        """Devices by name."""
        return {d.name: d for d in (self.mono, self.stage, self.shutter, self.camera, self.xrd)}

    async def connect_async(self, timeout: float = 10.0) -> None:
        """Connect every device (soft signals) from within the bluesky event loop."""
        await asyncio.gather(*(d.connect(timeout=timeout) for d in self.devices().values()))

    def connect(self, timeout: float = 10.0) -> None:
        """Connect every device; a RunEngine must exist (it owns the event loop)."""
        from bluesky.run_engine import call_in_bluesky_event_loop

        call_in_bluesky_event_loop(self.connect_async(timeout))


def make_sim_beamline(
    detector_dir: str | Path,
    config: SimBeamlineConfig | None = None,
    *,
    phantom: Phantom | None = None,
    xrd_renderer=None,
    connect: bool = True,
    **overrides: object,
) -> SimBeamline:
    """Build the simulated beamline.

    Parameters
    ----------
    detector_dir : str or pathlib.Path
        Directory for the camera's HDF5 files (created if missing).
    config : SimBeamlineConfig, optional
        Parameters; keyword ``overrides`` replace single fields (e.g. ``frame_shape=(64, 64)``).
    phantom : Phantom, optional
        The XAS-imaging sample (default: ``Phantom(width_mm, height_mm, seed)`` from the config).
    xrd_renderer : callable, optional
        ``renderer(two_theta_deg) -> counts/s`` for the diffractometer; default: the Rietveld forward model
        of ``config.xrd_phases``.
    connect : bool
        Connect the devices (needs a RunEngine to exist already).

    Returns
    -------
    SimBeamline
    """
    config = config or SimBeamlineConfig()
    unknown = set(overrides) - set(SimBeamlineConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown simulated-beamline option(s) {sorted(unknown)}")
    for key, value in overrides.items():
        setattr(config, key, value)
    detector_dir = Path(detector_dir)
    try:
        detector_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"detector directory {detector_dir} cannot be created: {exc}") from exc
    width, height = config.sample_size_mm
    phantom = phantom or Phantom(width_mm=width, height_mm=height, seed=config.seed)
    ts = config.time_scale
    mono = SimMonochromator(
        "mono", speed_eV_s=config.mono_speed_eV_s, settle_s=config.mono_settle_s, time_scale=ts
    )
    half_w, half_h = phantom.width_mm / 2, phantom.height_mm / 2
    stage = SimSampleStage(
        "stage",
        x_limits=(-half_w - 5.0, half_w + 5.0),
        y_limits=(-half_h - 5.0, half_h + 5.0),
        speed=config.stage_speed_mm_s,
        settle_s=config.stage_settle_s,
        out_position_mm=(half_w + 4.0, 0.0),
        time_scale=ts,
    )
    shutter = SimShutter("shutter")
    model = CameraModel(
        shape=tuple(config.frame_shape),  # type: ignore[arg-type]
        pixel_size_um=config.pixel_size_um,
        photon_flux=config.photon_flux,
        flat_seed=config.seed,
    )
    camera = SimCamera(
        StaticPathProvider(UUIDFilenameProvider(), detector_dir),
        mono=mono,
        stage=stage,
        shutter=shutter,
        phantom=phantom,
        model=model,
        seed=config.seed,
        readout_s=config.readout_s,
        time_scale=ts,
        name="camera",
    )
    renderer = xrd_renderer or rietveld_renderer(config.xrd_phases)
    xrd = SimPowderDiffractometer(
        renderer, seed=config.seed, time_scale=ts, phases=config.xrd_phases, name="xrd"
    )
    beamline = SimBeamline(mono, stage, shutter, camera, xrd, phantom, config, detector_dir)
    if connect:
        beamline.connect()
    return beamline
