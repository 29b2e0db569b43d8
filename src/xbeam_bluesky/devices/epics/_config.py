"""EPICS beamline configuration from TOML: PV prefixes and the few facts the plans need about the hardware."""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from xbeam_bluesky.errors import ConfigError, InputFileError

from ._camera import CameraNoise
from ._motion import DEFAULT_STALL_TIMEOUT_S

__all__ = [
    "CameraConfig",
    "EpicsBeamlineConfig",
    "MonoConfig",
    "ShutterConfig",
    "StageConfig",
    "XrdConfig",
    "load_epics_config",
]


#: The noise keys of ``[epics.camera]`` that come together (see :class:`CameraConfig`).
NOISE_KEYS = ("gain", "read_noise", "dark_offset", "i0_counts_per_s")


@dataclass(frozen=True)
class MonoConfig:
    """The monochromator: ``prefix`` + ``energy`` names the energy motor record (eV).

    ``limits_eV`` are the energies plans may request, checked before any motion (the motor record's own soft
    limits still apply). ``stall_timeout_s`` is how long (s) a move may take beyond ``|Δ| / VELO + 2 · ACCL``
    before it counts as stalled (the motor is stopped and the plan fails with ``MotorFaultError``).
    """

    prefix: str
    energy: str = "Energy"
    limits_eV: tuple[float, float] = (4500.0, 25000.0)
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S


@dataclass(frozen=True)
class StageConfig:
    """The sample stage: ``prefix`` + ``x`` / ``y`` name the motor records (mm).

    ``x_limits_mm`` / ``y_limits_mm`` are checked before any motion; ``out_position_mm`` is where the sample is out
    of the beam (flat fields); ``stall_timeout_s`` as for :class:`MonoConfig`.
    """

    prefix: str
    x: str = "X"
    y: str = "Y"
    x_limits_mm: tuple[float, float] = (-15.0, 15.0)
    y_limits_mm: tuple[float, float] = (-10.0, 10.0)
    out_position_mm: tuple[float, float] = (14.0, 0.0)
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S


@dataclass(frozen=True)
class CameraConfig:
    """The sCMOS areaDetector IOC and where its HDF5 plugin writes.

    ``write_dir`` is the frame directory as the IOC sees it; ``read_dir`` the same directory as this host sees it
    (defaults to ``write_dir``; differs when the IOC runs on another machine). ``shape`` is (y, x) pixels,
    ``pixel_size_um`` the pixel size at the sample (µm), ``readout_s`` the dead time per frame (s).

    The optional noise keys are the camera's measured response (:class:`~._camera.CameraNoise`): ``gain``
    (ADU/photon), ``read_noise`` (ADU rms), ``dark_offset`` (ADU), ``i0_counts_per_s`` (mean open-beam ADU above
    dark per pixel per s), ``peak_counts_per_s`` (the brightest pixel's, ADU/s) and ``saturation_adu`` (full
    scale, default 65535). With the first four the camera reports its noise model to the plans (the live
    clustering weighs the frames with it); with ``peak_counts_per_s`` too, exposures that would saturate are
    refused before anything moves. Give all four or none.
    """

    prefix: str
    write_dir: str
    read_dir: str | None = None
    driver: str = "cam1:"
    hdf: str = "HDF1:"
    shape: tuple[int, int] = (2048, 2048)
    pixel_size_um: float = 1.0
    readout_s: float = 0.01
    gain: float | None = None
    read_noise: float | None = None
    dark_offset: float | None = None
    i0_counts_per_s: float | None = None
    peak_counts_per_s: float | None = None
    saturation_adu: float = 65535.0

    def __post_init__(self) -> None:
        self.noise()  # checks the noise keys

    def noise(self) -> CameraNoise | None:
        """The measured noise and response, or None when the noise keys are not given.

        Raises
        ------
        ConfigError
            Some but not all of ``gain``, ``read_noise``, ``dark_offset``, ``i0_counts_per_s`` are given,
            ``peak_counts_per_s`` without them, or a value out of range (named).
        """
        required = {k: getattr(self, k) for k in NOISE_KEYS}
        given = [k for k, v in required.items() if v is not None]
        if not given:
            if self.peak_counts_per_s is not None:
                raise ConfigError(f"peak_counts_per_s needs the noise keys {list(NOISE_KEYS)} as well")
            return None
        if len(given) != len(required):
            missing = [k for k in NOISE_KEYS if k not in given]
            raise ConfigError(
                f"noise keys {given} given without {missing}; expected all of {list(NOISE_KEYS)}"
            )
        return CameraNoise(
            **required, peak_counts_per_s=self.peak_counts_per_s, saturation_adu=self.saturation_adu
        )


@dataclass(frozen=True)
class ShutterConfig:
    """A beam shutter: command record and status record (``Open``/``Closed``)."""

    command: str
    status: str | None = None


@dataclass(frozen=True)
class XrdConfig:
    """A 1D powder detector (strip detector) on an areaDetector IOC.

    ``prefix`` + ``driver`` name the driver records (``Acquire``, ``AcquireTime``, ``ImageMode``, ``NumImages``),
    ``prefix`` + ``array`` + ``ArrayData`` the NDPluginStdArrays waveform, of element type ``array_dtype``
    (the plugin's FTVL: ``int32`` for LONG, ``float64`` for DOUBLE, ...). Channel ``i`` is at
    ``two_theta_start_deg + i · two_theta_step_deg`` degrees 2θ, unless ``two_theta_pv`` names a waveform with the
    2θ of every channel. ``timeout_s`` is the time allowed beyond the exposure for an acquisition (s).
    """

    prefix: str
    n_channels: int
    two_theta_start_deg: float
    two_theta_step_deg: float
    driver: str = "cam1:"
    array: str = "image1:"
    array_dtype: str = "int32"
    two_theta_pv: str | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        from ._diffractometer import ARRAY_DTYPES, calibrated_two_theta

        calibrated_two_theta(self.two_theta_start_deg, self.two_theta_step_deg, self.n_channels)
        if self.array_dtype not in ARRAY_DTYPES:
            raise ConfigError(f"array_dtype = {self.array_dtype!r}; expected one of {sorted(ARRAY_DTYPES)}")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s = {self.timeout_s!r}; expected a positive time in s")


@dataclass(frozen=True)
class EpicsBeamlineConfig:
    """PV prefixes of the beamline devices (the ``[epics.*]`` tables of the TOML config)."""

    mono: MonoConfig
    stage: StageConfig
    camera: CameraConfig
    shutter: ShutterConfig | None = None
    xrd: XrdConfig | None = None
    source: str = "<memory>"


_SECTIONS: dict[str, type] = {
    "mono": MonoConfig,
    "stage": StageConfig,
    "camera": CameraConfig,
    "shutter": ShutterConfig,
    "xrd": XrdConfig,
}
_OPTIONAL = {"shutter", "xrd"}
_PAIRS = {"limits_eV", "x_limits_mm", "y_limits_mm", "out_position_mm", "shape"}


def _section(source: str, name: str, table: Any, cls: type) -> Any:
    where = f"{source}: [epics.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {type(table).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; expected some of {sorted(known)}")
    missing = [n for n, f in known.items() if f.default is MISSING and n not in table]
    if missing:
        raise ConfigError(f"{where} is missing required key(s) {missing}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in _PAIRS:
            if not (
                isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
            ):
                raise ConfigError(f"{where} {key} = {value!r}; expected a pair of numbers like [1.0, 2.0]")
            values[key] = (
                (int(value[0]), int(value[1])) if key == "shape" else (float(value[0]), float(value[1]))
            )
        elif key in {"pixel_size_um", "readout_s", *NOISE_KEYS, "peak_counts_per_s", "saturation_adu"}:
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{where} {key} = {value!r}; expected a non-negative number")
            values[key] = float(value)
        elif key == "stall_timeout_s":
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ConfigError(f"{where} {key} = {value!r}; expected a positive time in s")
            values[key] = float(value)
        elif key in {"two_theta_start_deg", "two_theta_step_deg", "timeout_s"}:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"{where} {key} = {value!r}; expected a number")
            values[key] = float(value)
        elif key == "n_channels":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where} {key} = {value!r}; expected an integer number of channels")
            values[key] = value
        elif not isinstance(value, str) or not value:
            raise ConfigError(f"{where} {key} = {value!r}; expected a non-empty string (a PV name or suffix)")
        else:
            values[key] = value
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_epics_config(path: str | Path) -> EpicsBeamlineConfig:
    """Read the ``[epics.*]`` tables of a TOML config file.

    Parameters
    ----------
    path
        The TOML file (see ``profiles/xbeam.example.toml``).

    Returns
    -------
    EpicsBeamlineConfig
        Prefixes and hardware facts; the devices are built from it by :func:`make_epics_devices`.

    Raises
    ------
    InputFileError
        If ``path`` does not exist (a ``FileNotFoundError``).
    ConfigError
        If the file is not valid TOML, has no ``[epics]`` table, or a section has a missing, unknown or
        mistyped key (the message names the file, section and key).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"EPICS config file {path} does not exist")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    epics = document.get("epics")
    if not isinstance(epics, dict):
        raise ConfigError(f"{path}: no [epics] table; expected [epics.mono], [epics.stage], [epics.camera]")
    unknown = sorted(set(epics) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {['epics.' + u for u in unknown]}; expected {list(_SECTIONS)}"
        )
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if name in epics:
            sections[name] = _section(str(path), name, epics[name], cls)
        elif name not in _OPTIONAL:
            raise ConfigError(f"{path}: missing section [epics.{name}]")
    return EpicsBeamlineConfig(**sections, source=str(path))
