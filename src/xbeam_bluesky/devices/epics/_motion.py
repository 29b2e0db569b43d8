"""Monochromator energy and sample stage built on EPICS motor records."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from functools import cached_property

from ophyd_async.core import SignalR, StandardReadable, TimeoutCalculator
from ophyd_async.epics.core import epics_signal_r
from ophyd_async.epics.motor import Motor, MotorFlyableMovableLogic

__all__ = ["EpicsAxis", "EpicsMonochromator", "EpicsSampleStage", "MotorFaultError"]

#: Time (s) a move may take beyond its trapezoid (|Δ| / VELO + 2 · ACCL) before it counts as stalled.
DEFAULT_STALL_TIMEOUT_S = 5.0


class MotorFaultError(RuntimeError):
    """A motor record did not get where it was sent: a limit switch, a refused target (``LVIO``) or a stall.

    The message names the record's PV, the target, where the motor is and what to check. The axis refuses
    further moves until :meth:`EpicsAxis.clear_fault` (after the hardware was checked).
    """


@dataclass
class FaultCheckingMotorLogic(MotorFlyableMovableLogic):
    """The motor-record move of ophyd-async, checked for the faults a beamline motor has.

    The put to ``.VAL`` completes when the record reports ``DMOV`` = 1. A move that does not within
    ``|Δ| / VELO + 2 · ACCL + stall_timeout_s`` is a stall: the motor is stopped (``STOP`` = 1) and
    :class:`MotorFaultError` raised. A move that completed with ``HLS``/``LLS`` set away from the target (the motor
    ran into a limit switch) or with ``LVIO`` = 1 (the record refused the target) raises it too.
    """

    high_limit_switch: SignalR[int]
    low_limit_switch: SignalR[int]
    limit_violation: SignalR[int]
    deadband: SignalR[float]
    record: str
    stall_timeout_s: float
    fault: str | None = None

    async def check_move(self, new_position: float) -> None:
        """Refuse any move after a fault (until cleared), then check the record's soft limits."""
        if self.fault is not None:
            raise MotorFaultError(
                f"{self.record}: not moved to {new_position}: the axis faulted earlier ({self.fault}); check the "
                "hardware, then clear_fault()"
            )
        await super().check_move(new_position)

    async def calculate_timeout(self, old_position: float, new_position: float) -> float:
        """``|Δ| / VELO + 2 · ACCL + stall_timeout_s`` (s); a non-positive ``VELO`` is a fault."""
        velocity, accel = await asyncio.gather(self.velocity.get_value(), self.acceleration_time.get_value())
        if not velocity > 0:
            raise MotorFaultError(
                f"{self.record}.VELO = {velocity}: the motor cannot move to {new_position} (expected a positive "
                "speed; check the motor record's VELO)"
            )
        return abs(new_position - old_position) / velocity + 2 * max(accel, 0.0) + self.stall_timeout_s

    async def move(self, new_position: float, timeout: TimeoutCalculator) -> None:
        """Put ``.VAL`` and wait for completion; check the switches and the limit violation afterwards."""
        try:
            await self._checked_move(new_position, timeout)
        except MotorFaultError as exc:
            self.fault = str(exc)
            raise

    async def _checked_move(self, new_position: float, timeout: TimeoutCalculator) -> None:
        limit = timeout()
        try:
            await self.setpoint.set(new_position, timeout=limit)
        except TimeoutError:
            position = await self.readback.get_value(cached=False)
            await self.motor_stop.set(1)
            raise MotorFaultError(
                f"{self.record}: the move to {new_position} did not finish (DMOV stayed 0) within {limit:.3g} s "
                f"(|Δ|/VELO + 2·ACCL + stall_timeout_s = {self.stall_timeout_s} s); the motor stalled at "
                f"{position} and was stopped (STOP = 1): check the mechanics and the drive"
            ) from None
        high, low, violation, position, deadband = await asyncio.gather(
            self.high_limit_switch.get_value(),
            self.low_limit_switch.get_value(),
            self.limit_violation.get_value(),
            self.readback.get_value(cached=False),
            self.deadband.get_value(),
        )
        if violation:
            raise MotorFaultError(
                f"{self.record}.LVIO = 1: the IOC refused the move to {new_position} (outside the record's soft "
                f"limits HLM/LLM); the motor stayed at {position}"
            )
        off_target = not math.isclose(position, new_position, abs_tol=max(abs(deadband), 1e-9))
        if (high or low) and off_target:
            which = "HLS" if high else "LLS"
            side = "high" if high else "low"
            raise MotorFaultError(
                f"{self.record}.{which} = 1: the motor hit its {side} limit switch at {position} on the way to "
                f"{new_position} and stopped there; check the sample position and the switch"
            )


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
    stall_timeout_s
        Time (s) a move may take beyond ``|Δ| / VELO + 2 · ACCL`` before it is a stall (:class:`MotorFaultError`).
    name
        Device name.

    Notes
    -----
    Moves are checked for faults (:class:`FaultCheckingMotorLogic`: stall, limit switch, ``LVIO``). After a
    fault the axis refuses to move (also a plan's clean-up moving it back) until :meth:`clear_fault`.
    """

    def __init__(
        self,
        prefix: str,
        limits: tuple[float, float],
        units: str,
        name: str = "",
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    ) -> None:
        low, high = float(limits[0]), float(limits[1])
        if not low < high:
            raise ValueError(f"motor {prefix!r}: limits={limits!r}; expected (low, high) with low < high")
        if not (math.isfinite(stall_timeout_s) and stall_timeout_s > 0):
            raise ValueError(
                f"motor {prefix!r}: stall_timeout_s = {stall_timeout_s!r}; expected a positive time in s"
            )
        self.limits = (low, high)
        self.units = units
        self.record = prefix
        self.stall_timeout_s = float(stall_timeout_s)
        self.limit_violation = epics_signal_r(int, prefix + ".LVIO")
        super().__init__(prefix, name=name)

    @cached_property
    def _logic(self) -> FaultCheckingMotorLogic:
        """The motor-record move checked for stalls, limit switches and refused targets."""
        return FaultCheckingMotorLogic(
            readback=self.user_readback,
            setpoint=self.user_setpoint,
            motor_stop=self.motor_stop,
            low_limit_travel=self.low_limit_travel,
            high_limit_travel=self.high_limit_travel,
            dial_low_limit_travel=self.dial_low_limit_travel,
            dial_high_limit_travel=self.dial_high_limit_travel,
            velocity=self.velocity,
            acceleration_time=self.acceleration_time,
            motor_done_move=self.motor_done_move,
            max_velocity=self.max_velocity,
            motor_egu=self.motor_egu,
            high_limit_switch=self.high_limit_switch,
            low_limit_switch=self.low_limit_switch,
            limit_violation=self.limit_violation,
            deadband=self.deadband,
            record=self.record,
            stall_timeout_s=self.stall_timeout_s,
        )

    @property
    def fault(self) -> str | None:
        """The message of the fault that stopped the axis (None: no fault; see :meth:`clear_fault`)."""
        return self._logic.fault

    def clear_fault(self) -> None:
        """Allow moves again after a :class:`MotorFaultError` (once the hardware was checked)."""
        self._logic.fault = None

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
    stall_timeout_s
        See :class:`EpicsAxis`.
    """

    def __init__(
        self,
        prefix: str,
        limits_eV: tuple[float, float] = (4500.0, 25000.0),
        name: str = "",
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    ) -> None:
        super().__init__(prefix, limits_eV, "eV", name=name, stall_timeout_s=stall_timeout_s)


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
    stall_timeout_s
        See :class:`EpicsAxis`.
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
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        name: str = "",
    ) -> None:
        with self.add_children_as_readables():
            self.x = EpicsAxis(x_pv, x_limits, "mm", stall_timeout_s=stall_timeout_s)
            self.y = EpicsAxis(y_pv, y_limits, "mm", stall_timeout_s=stall_timeout_s)
        self.x.check_position(out_position_mm[0])
        self.y.check_position(out_position_mm[1])
        self.out_position_mm = (float(out_position_mm[0]), float(out_position_mm[1]))
        super().__init__(name=name)
