"""What a device must offer the xbeam plans, as ``typing.Protocol`` classes (the lowest layer: pure typing).

``bluesky.protocols`` says how a device is driven (``Readable``, ``Movable``, ``Triggerable``, ...); the protocols
here say what the plans read off a device to check, design and cost a measurement: a camera's field of view and
frame time, the soft limits of an axis, the timing model of a monochromator or a stage, a powder detector's
exposure signal. The simulated devices (``xbeam_bluesky.devices.sim``) and the EPICS devices
(``xbeam_bluesky.devices.epics``) satisfy them structurally (no inheritance); ``tests/unit/test_protocols.py``
checks each device class. Every protocol is ``runtime_checkable``, so a plan asks ``isinstance(camera,
ExposureLimited)`` instead of ``hasattr``; such a check tests that the members exist, not their signatures (which
is why :class:`TimedAxis` also needs ``limits`` and :class:`TimedStage` the ``x``/``y`` axes: both have a
``move_time_s``).

Capabilities real hardware does not report are protocols of their own: an EPICS camera is an
:class:`ImagingCamera` and :class:`FrameTimed` but not :class:`NoiseReporting` or :class:`ExposureLimited`, and an
EPICS motor has limits but no timing model (:class:`TimedAxis`), so the plans skip what they cannot know.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ExposureLimited",
    "FrameTimed",
    "HasExposure",
    "HasLimits",
    "HasPosition",
    "ImagingCamera",
    "LimitedAxis",
    "ModelledCamera",
    "Named",
    "NoiseReporting",
    "PowderDetector",
    "SampleStage",
    "ScanningMonochromator",
    "Shutter",
    "TimedAxis",
    "TimedStage",
    "XYStage",
    "name_of",
]


@runtime_checkable
class Named(Protocol):
    """Anything with a device name (ophyd and ophyd-async devices and signals)."""

    @property
    def name(self) -> str:
        """Device name; readings are keyed by it."""
        ...


def name_of(obj: Any) -> Any:
    """``obj.name`` for a :class:`Named` object, else ``obj`` itself (for error messages about any input)."""
    return obj.name if isinstance(obj, Named) else obj


# ------------------------------------------------------------------------------------------------ motion


@runtime_checkable
class HasLimits(Protocol):
    """A movable with soft limits (an ophyd motor's ``(0, 0)`` means none)."""

    @property
    def limits(self) -> tuple[float, float]:
        """(low, high) allowed positions, in the axis units."""
        ...


@runtime_checkable
class LimitedAxis(HasLimits, Protocol):
    """An axis whose range plans check before any motion (a monochromator energy in eV, a stage axis in mm)."""

    @property
    def name(self) -> str:
        """Device name."""
        ...

    @property
    def units(self) -> str:
        """Engineering units of the position and the limits (``"eV"``, ``"mm"``)."""
        ...

    def check_position(self, value: float) -> None:
        """Raise ``ValueError`` naming ``value`` and the limits if ``value`` is outside them."""
        ...


@runtime_checkable
class HasPosition(Protocol):
    """An axis mirroring its position in a plain attribute (the simulated axes, ophyd motors)."""

    @property
    def position(self) -> Any:
        """The current position in the axis units (a number for a linear axis)."""
        ...


@runtime_checkable
class TimedAxis(HasLimits, Protocol):
    """A limited axis with a timing model, so a plan can be costed without moving anything."""

    def move_time_s(self, start: float, stop: float) -> float:
        """Duration of a move from ``start`` to ``stop`` in s (speed + settle; 0 for no move)."""
        ...


@runtime_checkable
class ScanningMonochromator(TimedAxis, Protocol):
    """A monochromator that reports its scan speed and settle time (the simulated DCM)."""

    @property
    def speed_eV_s(self) -> float:
        """Scan speed in eV/s."""
        ...

    @property
    def settle_s(self) -> float:
        """Settling time after a move in s."""
        ...


@runtime_checkable
class XYStage(Protocol):
    """A sample stage of two limited axes in mm."""

    @property
    def name(self) -> str:
        """Device name; the axes read as ``{name}-x`` and ``{name}-y``."""
        ...

    @property
    def x(self) -> LimitedAxis:
        """Horizontal axis, mm."""
        ...

    @property
    def y(self) -> LimitedAxis:
        """Vertical axis, mm."""
        ...


@runtime_checkable
class SampleStage(XYStage, Protocol):
    """An x/y stage that knows where the sample is out of the beam."""

    @property
    def out_position_mm(self) -> tuple[float, float]:
        """(x, y) in mm where the sample is out of the beam (flat fields)."""
        ...


@runtime_checkable
class TimedStage(XYStage, Protocol):
    """An x/y stage with a timing model for (x, y) moves."""

    def move_time_s(self, start: tuple[float, float], stop: tuple[float, float]) -> float:
        """Duration of an (x, y) move in s (both axes move at once)."""
        ...


@runtime_checkable
class Shutter(Protocol):
    """A beam shutter: ``set("open")`` / ``set("closed")`` (any case) and its reported state."""

    def set(self, value: Any) -> Any:
        """Command ``"open"`` or ``"closed"``; returns a status."""
        ...

    async def is_open(self) -> bool:
        """True when the beam reaches the sample."""
        ...


# ------------------------------------------------------------------------------------------------ detectors


@runtime_checkable
class HasExposure(Protocol):
    """A detector with an exposure-time signal (s) that plans set."""

    @property
    def exposure(self) -> Any:
        """The exposure signal in s (a settable ophyd-async signal)."""
        ...


@runtime_checkable
class FrameTimed(Protocol):
    """A detector whose time per frame is exposure plus a readout dead time."""

    @property
    def readout_s(self) -> float:
        """Dead time per frame in s."""
        ...

    def frame_time_s(self, exposure_s: float) -> float:
        """Time per frame (exposure + readout) in s."""
        ...


@runtime_checkable
class ImagingCamera(Protocol):
    """An area detector that knows its field of view, so a region can be tiled with its frames."""

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(ny, nx) pixels per frame."""
        ...

    @property
    def pixel_um(self) -> float:
        """Pixel size at the sample in µm."""
        ...


@runtime_checkable
class NoiseReporting(Protocol):
    """A camera that knows its noise model (recorded in the start document for the live clustering)."""

    def noise_metadata(self, exposure_s: float) -> dict[str, float]:
        """``gain`` (ADU/photon), ``offset`` (read noise², ADU²), ``read_noise``, ``dark_offset`` and the mean
        open-beam counts above dark ``i0_counts`` at ``exposure_s`` (s)."""
        ...


@runtime_checkable
class ExposureLimited(Protocol):
    """A camera that can tell the longest exposure its brightest open-beam pixel takes without saturating."""

    def max_unsaturated_exposure_s(self, margin: float = 0.9) -> float | None:
        """Longest exposure (s) with the brightest open-beam pixel below ``margin`` × full scale (None: no
        limit known)."""
        ...


@runtime_checkable
class ModelledCamera(ImagingCamera, FrameTimed, NoiseReporting, ExposureLimited, Protocol):
    """A camera with a full detector model (the simulated sCMOS): everything a design at plan start can use."""


@runtime_checkable
class PowderDetector(HasExposure, Protocol):
    """A 1D powder detector reading ``{name}-two_theta`` (deg) and ``{name}-counts``."""

    @property
    def name(self) -> str:
        """Device name."""
        ...

    @property
    def two_theta(self) -> Any:
        """Signal of the 2θ grid in degrees (1D float64)."""
        ...

    @property
    def counts(self) -> Any:
        """Signal of the counts per channel (1D float64)."""
        ...
