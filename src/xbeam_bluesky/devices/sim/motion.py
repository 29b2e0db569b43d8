"""Simulated motion: monochromator energy, sample stage x/y, beam shutter (ophyd-async).

Each movable has soft limits (checked before any motion, with an error naming the value and the limits) and a
timing model exposed as plain attributes so planners can cost a measurement without a RunEngine:
``move_time_s(start, stop) = |stop − start| / speed + settle`` (0 for no move). The simulation really waits that
long, multiplied by ``time_scale`` (0 = instantaneous moves for tests and demos).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cached_property

from ophyd_async.core import (
    MovableLogic,
    StandardMovable,
    StandardReadable,
    StrictEnum,
    TimeoutCalculator,
    soft_signal_r_and_setter,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format


@dataclass
class MotionTiming:
    """Timing model of one axis.

    Attributes
    ----------
    speed : float
        Speed in axis units per second (eV/s, mm/s).
    settle_s : float
        Settling time after every move, s.
    time_scale : float
        Factor applied to the simulated wait (1 = real time, 0 = instantaneous).
    """

    speed: float
    settle_s: float
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.speed > 0 or self.settle_s < 0 or self.time_scale < 0:
            raise ValueError(
                f"motion timing speed={self.speed!r}, settle_s={self.settle_s!r}, time_scale={self.time_scale!r};"
                " expected speed > 0, settle_s ≥ 0, time_scale ≥ 0"
            )

    def move_time_s(self, start: float, stop: float) -> float:
        """Modelled duration of a move from ``start`` to ``stop`` in s (0 if they are equal)."""
        if start == stop:
            return 0.0
        return abs(stop - start) / self.speed + self.settle_s


@dataclass
class _TimedMoveLogic(MovableLogic[float]):
    readback_set: object = None
    owner: _TimedAxisMixin | None = None
    pending: set = field(default_factory=set)

    async def check_move(self, new_position: float) -> None:
        assert self.owner is not None
        self.owner.check_position(new_position)

    async def calculate_timeout(self, old_position: float, new_position: float) -> float | None:
        assert self.owner is not None
        return self.owner.timing.move_time_s(old_position, new_position) * self.owner.timing.time_scale + 10.0

    async def move(self, new_position: float, timeout: TimeoutCalculator) -> None:
        assert self.owner is not None
        new_position = float(new_position)
        old_position = await self.readback.get_value()
        await self.setpoint.set(new_position)
        wait = self.owner.timing.move_time_s(old_position, new_position) * self.owner.timing.time_scale
        if wait > 0:
            await asyncio.sleep(wait)
        self.readback_set(new_position)  # type: ignore[operator]
        self.owner.position = new_position


class _TimedAxisMixin:
    """Soft limits, timing model and a plain-attribute mirror of the position."""

    limits: tuple[float, float]
    timing: MotionTiming
    position: float
    units: str

    def check_position(self, value: float) -> None:
        """Raise ValueError if ``value`` is outside the soft limits (message names value and limits)."""
        low, high = self.limits
        if not (low <= float(value) <= high):
            raise ValueError(
                f"{self.name or type(self).__name__}: requested {value} {self.units} is outside the limits "  # type: ignore[attr-defined]
                f"[{low}, {high}] {self.units}"
            )

    def move_time_s(self, start: float, stop: float) -> float:
        """Modelled duration of a move from ``start`` to ``stop`` in s (speed + settle)."""
        return self.timing.move_time_s(start, stop)


def _check_limits(limits: tuple[float, float], initial: float, what: str) -> tuple[float, float]:
    low, high = (float(limits[0]), float(limits[1]))
    if not low < high:
        raise ValueError(f"{what} limits={limits!r}; expected (low, high) with low < high")
    if not low <= initial <= high:
        raise ValueError(f"{what} initial position {initial} outside its limits [{low}, {high}]")
    return low, high


class SimAxis(StandardReadable, StandardMovable[float], _TimedAxisMixin):
    """A simulated linear axis (mm) with soft limits, speed and settle time.

    Parameters
    ----------
    name : str
        Device name (its readback is read under this name).
    limits : tuple of float
        (low, high) soft limits in ``units``.
    speed : float
        Speed in units per second.
    settle_s : float
        Settling time after each move, s.
    initial : float
        Starting position.
    units : str
        Engineering units.
    time_scale : float
        Factor applied to the simulated wait (0 = instantaneous).
    """

    def __init__(
        self,
        name: str = "",
        *,
        limits: tuple[float, float] = (-15.0, 15.0),
        speed: float = 5.0,
        settle_s: float = 0.05,
        initial: float = 0.0,
        units: str = "mm",
        time_scale: float = 1.0,
    ) -> None:
        self.limits = _check_limits(limits, initial, f"axis {name!r}")
        self.timing = MotionTiming(speed, settle_s, time_scale)
        self.position = float(initial)
        self.units = units
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.readback, self._readback_set = soft_signal_r_and_setter(float, float(initial), units=units)
        self.setpoint = soft_signal_rw(float, float(initial), units=units)
        super().__init__(name=name)

    @cached_property
    def movable_logic(self) -> _TimedMoveLogic:
        return _TimedMoveLogic(
            setpoint=self.setpoint, readback=self.readback, readback_set=self._readback_set, owner=self
        )


class SimMonochromator(SimAxis):
    """A simulated double-crystal monochromator: energy in eV with limits, speed (eV/s) and settle time (s).

    Parameters
    ----------
    name : str
        Device name; the energy readback is read under this name.
    limits_eV : tuple of float
        (low, high) energy limits in eV.
    speed_eV_s : float
        Scan speed in eV/s.
    settle_s : float
        Settling time after every move in s.
    initial_eV : float
        Starting energy in eV.
    time_scale : float
        Factor applied to the simulated wait (0 = instantaneous).
    """

    def __init__(
        self,
        name: str = "",
        *,
        limits_eV: tuple[float, float] = (4500.0, 25000.0),
        speed_eV_s: float = 20.0,
        settle_s: float = 0.1,
        initial_eV: float = 7112.0,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(
            name,
            limits=limits_eV,
            speed=speed_eV_s,
            settle_s=settle_s,
            initial=initial_eV,
            units="eV",
            time_scale=time_scale,
        )

    @property
    def speed_eV_s(self) -> float:
        """Scan speed in eV/s."""
        return self.timing.speed

    @property
    def settle_s(self) -> float:
        """Settling time after a move in s."""
        return self.timing.settle_s


class SimSampleStage(StandardReadable):
    """Sample stage with ``x`` and ``y`` axes (mm) and an out-of-beam position for flat fields.

    Parameters
    ----------
    name : str
        Device name; axes read as ``{name}-x`` and ``{name}-y``.
    x_limits, y_limits : tuple of float
        Soft limits in mm.
    speed : float
        Axis speed in mm/s.
    settle_s : float
        Settling time per move in s.
    out_position_mm : tuple of float
        (x, y) where the sample is out of the beam (used for flats when a plan gives none).
    time_scale : float
        Factor applied to the simulated wait (0 = instantaneous).
    """

    def __init__(
        self,
        name: str = "",
        *,
        x_limits: tuple[float, float] = (-15.0, 15.0),
        y_limits: tuple[float, float] = (-10.0, 10.0),
        speed: float = 5.0,
        settle_s: float = 0.05,
        out_position_mm: tuple[float, float] = (14.0, 0.0),
        time_scale: float = 1.0,
    ) -> None:
        with self.add_children_as_readables():
            self.x = SimAxis(limits=x_limits, speed=speed, settle_s=settle_s, time_scale=time_scale)
            self.y = SimAxis(limits=y_limits, speed=speed, settle_s=settle_s, time_scale=time_scale)
        self.x.check_position(out_position_mm[0])
        self.y.check_position(out_position_mm[1])
        self.out_position_mm = (float(out_position_mm[0]), float(out_position_mm[1]))
        super().__init__(name=name)

    def move_time_s(self, start: tuple[float, float], stop: tuple[float, float]) -> float:
        """Modelled duration of an (x, y) move in s: both axes move at once."""
        return max(self.x.move_time_s(start[0], stop[0]), self.y.move_time_s(start[1], stop[1]))


class ShutterState(StrictEnum):
    """Beam shutter position."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass
class _InstantLogic(MovableLogic[ShutterState]):
    readback_set: object = None

    async def move(self, new_position: ShutterState, timeout: TimeoutCalculator) -> None:
        value = ShutterState(new_position)
        await self.setpoint.set(value)
        self.readback_set(value)  # type: ignore[operator]


class SimShutter(StandardReadable, StandardMovable[ShutterState]):
    """A beam shutter: ``bps.mv(shutter, "closed")`` for dark frames, ``"open"`` otherwise."""

    def __init__(self, name: str = "", *, initial: str = "open") -> None:
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.state, self._state_set = soft_signal_r_and_setter(ShutterState, ShutterState(initial))
        self.setpoint = soft_signal_rw(ShutterState, ShutterState(initial))
        super().__init__(name=name)

    @cached_property
    def movable_logic(self) -> _InstantLogic:
        return _InstantLogic(setpoint=self.setpoint, readback=self.state, readback_set=self._state_set)

    async def is_open(self) -> bool:
        """True when the beam reaches the sample."""
        return await self.state.get_value() == ShutterState.OPEN
