"""Monochromator energy and sample stage built on EPICS motor records."""

from __future__ import annotations

from ophyd_async.core import StandardReadable
from ophyd_async.epics.motor import Motor

__all__ = ["EpicsAxis", "EpicsMonochromator", "EpicsSampleStage"]


class EpicsAxis(Motor):
    """An EPICS motor record with the soft limits plans check before any motion.

    The motor record enforces its own limits too; ``limits`` here are the range the experiment may use
    (from the TOML config), so a bad plan argument fails before the first move, with a message naming the value.

    Parameters
    ----------
    prefix
        The motor record, e.g. ``"BL08:SMPL:X"``.
    limits
        (low, high) allowed positions in ``units``.
    units
        Engineering units (``"mm"``, ``"eV"``).
    name
        Device name.
    """

    def __init__(self, prefix: str, limits: tuple[float, float], units: str, name: str = "") -> None:
        low, high = float(limits[0]), float(limits[1])
        if not low < high:
            raise ValueError(f"motor {prefix!r}: limits={limits!r}; expected (low, high) with low < high")
        self.limits = (low, high)
        self.units = units
        super().__init__(prefix, name=name)

    def check_position(self, value: float) -> None:
        """Raise ValueError if ``value`` is outside :attr:`limits` (the message names value and limits)."""
        low, high = self.limits
        if not low <= float(value) <= high:
            raise ValueError(
                f"{self.name or self.user_setpoint.source}: requested {value} {self.units} is outside the "
                f"limits [{low}, {high}] {self.units}"
            )


class EpicsMonochromator(EpicsAxis):
    """A monochromator whose photon energy is one EPICS motor record, in eV.

    Most DCMs expose the energy as a pseudo-motor record (the IOC computes Bragg angle and gap); plans
    ``set`` this device to an energy exactly as they set the simulated monochromator.

    Parameters
    ----------
    prefix
        The energy motor record, e.g. ``"BL08:DCM:Energy"``.
    limits_eV
        (low, high) energies plans may request, eV.
    name
        Device name.
    """

    def __init__(
        self, prefix: str, limits_eV: tuple[float, float] = (4500.0, 25000.0), name: str = ""
    ) -> None:
        super().__init__(prefix, limits_eV, "eV", name=name)


class EpicsSampleStage(StandardReadable):
    """An x/y sample stage of two EPICS motor records, in mm.

    Parameters
    ----------
    x_pv, y_pv
        The horizontal and vertical motor records.
    x_limits, y_limits
        (low, high) allowed positions, mm.
    out_position_mm
        (x, y) where the sample is out of the beam, for flat fields.
    name
        Device name; axes read as ``{name}-x`` and ``{name}-y``.
    """

    def __init__(
        self,
        x_pv: str,
        y_pv: str,
        *,
        x_limits: tuple[float, float] = (-15.0, 15.0),
        y_limits: tuple[float, float] = (-10.0, 10.0),
        out_position_mm: tuple[float, float] = (14.0, 0.0),
        name: str = "",
    ) -> None:
        with self.add_children_as_readables():
            self.x = EpicsAxis(x_pv, x_limits, "mm")
            self.y = EpicsAxis(y_pv, y_limits, "mm")
        self.x.check_position(out_position_mm[0])
        self.y.check_position(out_position_mm[1])
        self.out_position_mm = (float(out_position_mm[0]), float(out_position_mm[1]))
        super().__init__(name=name)
