"""A motor-record soft IOC: axes whose moves take time, with soft limits, limit switches, STOP and SPMG.

Each axis ``{prefix}{axis}`` serves the motor-record fields ophyd-async's ``Motor`` uses (``VAL``, ``RBV``,
``DMOV``, ``MOVN``, ``VELO``, ``ACCL``, ``VMAX``, ``HLM``/``LLM``, ``DHLM``/``DLLM``, ``HLS``/``LLS``, ``LVIO``,
``STOP``, ``SPMG``, ``EGU``, ``MRES``, ``RDBD``, ...) with the record's behaviour:

- a put to ``VAL`` starts a trapezoidal move (acceleration over ``ACCL`` s to ``VELO``); ``DMOV`` = 0 and
  ``MOVN`` = 1 while it runs, ``RBV`` updates every 20 ms, and the put completes (put-callback) when the
  motor is done, as the record's does;
- a ``VAL`` outside [``LLM``, ``HLM``] is refused: ``LVIO`` = 1, no motion, the put completes at once;
- ``STOP`` = 1, or ``SPMG`` set to ``Stop``/``Pause``, stops the motor where it is (``VAL`` := ``RBV``); with
  ``SPMG`` at ``Stop``/``Pause`` new moves do not start;
- a hardware limit switch at ``{axis}:SimHighSwitch`` / ``{axis}:SimLowSwitch`` (positions; NaN = none) stops
  the motor there and sets ``HLS`` / ``LLS``.

Test-only control PV: ``{axis}:SimStall`` = 1 makes the motor stall — it stops advancing but stays
"moving" (``DMOV`` = 0) until stopped, as a motor that lost steps against an obstruction.

Run ``python -m xbeam_bluesky.testing.iocs.motor --prefix BL08:SMPL: --axis X:-15:15 --axis Y:-10:10 --port N``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from caproto.server import PVGroup, pvproperty

from xbeam_bluesky.testing.iocs._server import ioc_argument_parser, serve

__all__ = ["MotorAxis", "axis_pvdb", "main", "trapezoid_position"]

#: Readback update period of a moving motor (s).
TICK_S = 0.02


def trapezoid_position(distance: float, velocity: float, accel_time: float, t: float) -> float:
    """Distance travelled after ``t`` s of a trapezoidal move (signed like ``distance``).

    The motor accelerates uniformly to ``velocity`` in ``accel_time`` s, cruises and decelerates over the same
    time; a move too short to reach ``velocity`` is a triangle with the same acceleration.

    Parameters
    ----------
    distance
        Signed move length (engineering units).
    velocity
        Cruise speed (units/s, > 0).
    accel_time
        Time to reach ``velocity`` (s, ≥ 0).
    t
        Time since the move started (s).
    """
    total = abs(distance)
    if total == 0.0:
        return 0.0
    sign = math.copysign(1.0, distance)
    if accel_time <= 0.0:
        return sign * min(total, velocity * t)
    accel = velocity / accel_time
    ramp = velocity * accel_time  # distance of the acceleration plus the deceleration ramps
    if total < ramp:  # triangle
        t_half = math.sqrt(total / accel)
        if t <= t_half:
            return sign * 0.5 * accel * t * t
        tr = min(t, 2 * t_half) - t_half
        return sign * (0.5 * total + accel * t_half * tr - 0.5 * accel * tr * tr)
    t_cruise = (total - ramp) / velocity
    if t <= accel_time:
        return sign * 0.5 * accel * t * t
    if t <= accel_time + t_cruise:
        return sign * (0.5 * ramp + velocity * (t - accel_time))
    tr = min(t - accel_time - t_cruise, accel_time)
    return sign * (0.5 * ramp + velocity * t_cruise + velocity * tr - 0.5 * accel * tr * tr)


def move_time(distance: float, velocity: float, accel_time: float) -> float:
    """Duration (s) of the trapezoidal move of :func:`trapezoid_position`."""
    total = abs(distance)
    if total == 0.0:
        return 0.0
    if accel_time <= 0.0:
        return total / velocity
    if total < velocity * accel_time:
        return 2.0 * math.sqrt(total / (velocity / accel_time))
    return total / velocity + accel_time


class MotorAxis(PVGroup):
    """One motor record (the group's prefix is the record name, e.g. ``BL08:SMPL:X``).

    Parameters
    ----------
    limits
        (low, high) soft limits ``LLM``/``HLM`` (and dial ``DLLM``/``DHLM``), engineering units.
    units
        ``EGU``.
    velocity, accel_time
        ``VELO`` (units/s) and ``ACCL`` (s); ``VMAX`` is 10 × ``VELO``.
    position
        Initial ``VAL``/``RBV``.
    precision
        ``PREC``.
    """

    motor = pvproperty(value=0.0, name="", record="motor", precision=4)
    sim_stall = pvproperty(value=0, name=":SimStall", doc="test only: 1 = the motor stalls when moving")
    sim_high_switch = pvproperty(value=math.nan, name=":SimHighSwitch", doc="high limit switch position")
    sim_low_switch = pvproperty(value=math.nan, name=":SimLowSwitch", doc="low limit switch position")

    def __init__(
        self,
        *args: Any,
        limits: tuple[float, float] = (-100.0, 100.0),
        units: str = "mm",
        velocity: float = 5.0,
        accel_time: float = 0.1,
        position: float = 0.0,
        precision: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not limits[0] < limits[1] or not velocity > 0 or accel_time < 0:
            raise ValueError(
                f"motor {self.prefix}: limits={limits!r}, velocity={velocity!r}, accel_time={accel_time!r}; "
                "expected low < high, velocity > 0, accel_time >= 0"
            )
        self.defaults = {
            "limits": (float(limits[0]), float(limits[1])), "units": units, "velocity": float(velocity),
            "accel_time": float(accel_time), "position": float(position), "precision": int(precision),
        }  # fmt: skip
        self._stop = asyncio.Event()
        self._move_id = 0

    @property
    def fields(self) -> Any:
        """The motor record's fields (caproto ``MotorFields``)."""
        return self.motor.field_inst

    @motor.startup
    async def motor(self, instance: Any, async_lib: Any) -> None:
        """Initial fields: limits, units, speeds, position; done and not moving."""
        d, f = self.defaults, instance.field_inst
        low, high = d["limits"]
        await instance.write(d["position"], verify_value=False)
        for field, value in (
            (f.user_low_limit, low), (f.user_high_limit, high), (f.dial_low_limit, low),
            (f.dial_high_limit, high), (f.velocity, d["velocity"]), (f.max_velocity, 10 * d["velocity"]),
            (f.base_velocity, 0.0), (f.seconds_to_velocity, d["accel_time"]), (f.motor_step_size, 1e-4),
            (f.encoder_step_size, 1e-4), (f.steps_per_revolution, 2000), (f.egu_s_per_revolution, 0.2),
            (f.retry_deadband, 1e-4), (f.display_precision, d["precision"]), (f.engineering_units, d["units"]),
            (f.user_readback_value, d["position"]), (f.dial_readback_value, d["position"]),
            (f.dial_desired_value, d["position"]), (f.done_moving_to_value, 1), (f.motor_is_moving, 0),
            (f.output_specification, f"@sim {self.prefix}"),
        ):  # fmt: skip
            await field.write(value)

    @motor.putter
    async def motor(self, instance: Any, value: float) -> float:
        """A put to ``VAL``: move there (put completion at the end of the move); returns the final ``VAL``."""
        f = instance.field_inst
        start = float(f.user_readback_value.value)
        low, high = float(f.user_low_limit.value), float(f.user_high_limit.value)
        if not (low == high == 0.0) and not low <= value <= high:
            await f.limit_violation.write(1)
            return start  # the record refuses the target and keeps its position
        await f.limit_violation.write(0)
        if f.stop_pause_move_go.value in ("Stop", "Pause"):
            return start
        self._move_id += 1
        move_id = self._move_id
        self._stop.clear()
        return await self._move(start, float(value), move_id)

    async def _move(self, start: float, target: float, move_id: int) -> float:
        f = self.fields
        velocity = max(float(f.velocity.value), 1e-9)
        accel = max(float(f.seconds_to_velocity.value), 0.0)
        distance = target - start
        duration = move_time(distance, velocity, accel)
        high_switch, low_switch = self.sim_high_switch.value, self.sim_low_switch.value
        await f.done_moving_to_value.write(0)
        await f.motor_is_moving.write(1)
        await f.direction_of_travel.write(1 if distance >= 0 else 0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        position, stalled_at = start, None
        final = target
        while True:
            if self._move_id != move_id:  # retargeted by a newer put: that put finishes the motion
                return float(f.user_readback_value.value)
            t = loop.time() - t0
            if self.sim_stall.value:
                stalled_at = position if stalled_at is None else stalled_at
            else:
                position = start + trapezoid_position(distance, velocity, accel, t)
            hit_high = not math.isnan(high_switch) and distance > 0 and position >= high_switch
            hit_low = not math.isnan(low_switch) and distance < 0 and position <= low_switch
            if hit_high or hit_low:
                position = high_switch if hit_high else low_switch
                await (f.user_high_limit_switch if hit_high else f.user_low_limit_switch).write(1)
                final = position
                break
            if self._stop.is_set() or f.stop_pause_move_go.value in ("Stop", "Pause"):
                final = position
                break
            await f.user_readback_value.write(position)
            await f.dial_readback_value.write(position)
            if stalled_at is None and t >= duration:
                position = final = target
                break
            await asyncio.sleep(TICK_S)
        if not hit_high:
            await f.user_high_limit_switch.write(0)
        if not hit_low:
            await f.user_low_limit_switch.write(0)
        await f.user_readback_value.write(position)
        await f.dial_readback_value.write(position)
        await f.motor_is_moving.write(0)
        await f.done_moving_to_value.write(1)
        return final

    @motor.fields.stop.putter
    async def _stop_put(fields: Any, instance: Any, value: int) -> int:
        """``STOP`` = 1 stops a move; the record resets it to 0."""
        group = fields.parent.group
        if value:
            group._stop.set()
        return 0


def parse_axis(text: str) -> tuple[str, tuple[float, float]]:
    """``"X:-15:15"`` → ``("X", (-15.0, 15.0))``.

    Raises
    ------
    ValueError
        Not ``NAME:LOW:HIGH`` with numbers LOW < HIGH.
    """
    parts = text.rsplit(":", 2)
    try:
        name, low, high = parts[0], float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise ValueError(f"--axis {text!r}; expected NAME:LOW:HIGH, e.g. X:-15:15") from None
    if not name or not low < high:
        raise ValueError(f"--axis {text!r}; expected a name and LOW < HIGH")
    return name, (low, high)


def axis_pvdb(prefix: str, axes: dict[str, tuple[float, float]], **options: Any) -> dict[str, Any]:
    """The PV database of one :class:`MotorAxis` per entry of ``axes`` (name → limits)."""
    pvdb: dict[str, Any] = {}
    for name, limits in axes.items():
        pvdb.update(MotorAxis(prefix=prefix + name, limits=limits, **options).pvdb)
    return pvdb


def main(argv: list[str] | None = None) -> None:
    """``python -m xbeam_bluesky.testing.iocs.motor``: serve motor records until stopped."""
    parser = ioc_argument_parser("Soft IOC with simulated motor records.", "BL08:SMPL:")
    parser.add_argument(
        "--axis",
        action="append",
        default=None,
        help="NAME:LOW:HIGH (repeatable; default X:-15:15 and Y:-10:10)",
    )
    parser.add_argument("--units", default="mm", help="EGU of every axis (default mm)")
    parser.add_argument("--velocity", type=float, default=5.0, help="VELO, units/s (default 5)")
    parser.add_argument("--accel-time", type=float, default=0.1, help="ACCL, s (default 0.1)")
    parser.add_argument("--position", type=float, default=0.0, help="initial position (default 0)")
    args = parser.parse_args(argv)
    try:
        axes = dict(parse_axis(a) for a in (args.axis or ["X:-15:15", "Y:-10:10"]))
    except ValueError as exc:
        parser.error(str(exc))
    pvdb = axis_pvdb(
        args.prefix, axes, units=args.units, velocity=args.velocity, accel_time=args.accel_time,
        position=args.position,
    )  # fmt: skip
    serve(pvdb, args)


if __name__ == "__main__":
    main()
