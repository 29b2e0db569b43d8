"""Build the EPICS beamline devices from an :class:`EpicsBeamlineConfig`."""

from __future__ import annotations

from pathlib import Path

from ophyd_async.core import Device, StaticPathProvider, UUIDFilenameProvider

from ._camera import CalibratedScmosCamera, EpicsScmosCamera, EpicsShutter
from ._config import CameraConfig, EpicsBeamlineConfig
from ._diffractometer import EpicsPowderDetector
from ._motion import EpicsMonochromator, EpicsSampleStage

__all__ = ["make_epics_devices"]


def make_epics_devices(
    config: EpicsBeamlineConfig, frames_dir: str | Path | None = None
) -> dict[str, Device]:
    """Create (not connect) the monochromator, stage, camera, shutter and powder detector named in ``config``.

    Connect them with ``ophyd_async.core.init_devices`` (``mock=True`` for the mock IOC behaviour) after
    the RunEngine exists.

    Parameters
    ----------
    config
        PV prefixes and hardware facts.
    frames_dir
        Overrides the camera's ``write_dir`` and ``read_dir`` (used in mock mode, where this process writes the
        frames itself).

    Returns
    -------
    dict
        ``{"mono": ..., "stage": ..., "camera": ..., "shutter": ..., "xrd": ...}`` (``shutter`` and ``xrd``
        only when configured), each device named after its key.
    """
    cam = config.camera
    write_dir = Path(frames_dir) if frames_dir is not None else Path(cam.write_dir)
    read_dir = Path(frames_dir) if frames_dir is not None else Path(cam.read_dir or cam.write_dir)
    path_provider = StaticPathProvider(
        UUIDFilenameProvider(), write_dir, directory_uri=f"file://localhost{read_dir.absolute().as_posix()}/"
    )
    devices: dict[str, Device] = {
        "mono": EpicsMonochromator(
            config.mono.prefix + config.mono.energy,
            config.mono.limits_eV,
            name="mono",
            stall_timeout_s=config.mono.stall_timeout_s,
        ),
        "stage": EpicsSampleStage(
            config.stage.prefix + config.stage.x,
            config.stage.prefix + config.stage.y,
            x_limits=config.stage.x_limits_mm,
            y_limits=config.stage.y_limits_mm,
            out_position_mm=config.stage.out_position_mm,
            stall_timeout_s=config.stage.stall_timeout_s,
            name="stage",
        ),
        "camera": _camera(
            cam,
            path_provider,
            driver_suffix=cam.driver,
            hdf_suffix=cam.hdf,
            readout_time=cam.readout_s,
            shape=cam.shape,
            pixel_size_um=cam.pixel_size_um,
            name="camera",
        ),
    }
    if config.shutter is not None:
        devices["shutter"] = EpicsShutter(config.shutter.command, config.shutter.status, name="shutter")
    if config.xrd is not None:
        xrd = config.xrd
        devices["xrd"] = EpicsPowderDetector(
            xrd.prefix,
            n_channels=xrd.n_channels,
            two_theta_start_deg=xrd.two_theta_start_deg,
            two_theta_step_deg=xrd.two_theta_step_deg,
            driver_suffix=xrd.driver,
            array_suffix=xrd.array,
            array_dtype=xrd.array_dtype,
            two_theta_pv=xrd.two_theta_pv,
            timeout_s=xrd.timeout_s,
            name="xrd",
        )
    return devices


def _camera(cam: CameraConfig, path_provider: StaticPathProvider, **kwargs) -> EpicsScmosCamera:
    """A :class:`CalibratedScmosCamera` when the config has the noise keys, else an :class:`EpicsScmosCamera`."""
    noise = cam.noise()
    if noise is None:
        return EpicsScmosCamera(cam.prefix, path_provider, **kwargs)
    return CalibratedScmosCamera(cam.prefix, path_provider, noise, **kwargs)
