"""Duration of a plan estimated from its messages and the devices' timing models, before running it.

:func:`estimate_duration` walks the plan's messages without a RunEngine (nothing moves) and adds up
motion (``move_time_s(start, stop)`` of each moved device: speed + settle, parallel moves in one group take
the longest), exposures and readout (``frame_time_s(exposure)`` of detectors, the exposure taken from
``prepare``/exposure-signal messages), explicit sleeps and a fixed software overhead per frame.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import Any

from bluesky.utils import Msg

from xbeam_bluesky.protocols import FrameTimed, HasExposure, HasPosition, Named, TimedAxis


@dataclass
class DurationEstimate:
    """Breakdown of an estimated plan duration, all in s.

    Attributes
    ----------
    total_s : float
        Sum of all parts.
    motion_s, exposure_s, overhead_s, sleep_s : float
        Motion (move + settle), detector exposure and readout, software overhead per frame, explicit sleeps.
    frames, moves : int
        Number of triggers and of motor moves.
    """

    total_s: float = 0.0
    motion_s: float = 0.0
    exposure_s: float = 0.0
    overhead_s: float = 0.0
    sleep_s: float = 0.0
    frames: int = 0
    moves: int = 0

    def as_dict(self) -> dict[str, float]:
        """JSON-friendly breakdown."""
        return asdict(self)


def _exposure_of(obj: Any, exposures: dict[int, float]) -> float | None:
    if id(obj) in exposures:
        return exposures[id(obj)]
    signal = obj.exposure if isinstance(obj, HasExposure) else None
    if signal is not None and id(signal) in exposures:
        return exposures[id(signal)]
    return None


def estimate_duration(
    plan: Generator[Msg, Any, Any],
    *,
    overhead_per_frame_s: float = 0.01,
    positions: dict[Any, float] | None = None,
) -> DurationEstimate:
    """Estimate how long a plan will take, without running it.

    Parameters
    ----------
    plan : generator of Msg
        A plan, e.g. ``xanes_imaging(camera, mono, stage, energies, tiles, dwell)``; it is consumed.
    overhead_per_frame_s : float
        Software time per trigger (document handling, file writing), s.
    positions : dict, optional
        Device → start position for devices without a ``position`` attribute.

    Returns
    -------
    DurationEstimate
        Devices without a timing model (no ``move_time_s``) count as instantaneous.
    """
    where: dict[int, float] = {}
    known = dict(positions or {})
    exposures: dict[int, float] = {}
    pending: dict[Any, float] = {}
    result = DurationEstimate()

    def position(obj: Any) -> float | None:
        if id(obj) in where:
            return where[id(obj)]
        if obj in known:
            return float(known[obj])
        value = obj.position if isinstance(obj, HasPosition) else None
        return float(value) if isinstance(value, int | float) else None

    response: Any = None
    while True:
        try:
            msg = plan.send(response)
        except StopIteration:
            break
        response = None
        command, obj = msg.command, msg.obj
        if command == "trigger" and _exposure_of(obj, exposures) is None and not isinstance(obj, FrameTimed):
            continue  # not a detector (e.g. a soft signal): triggering takes no time
        group = msg.kwargs.get("group")
        if command == "set":
            value = msg.args[0]
            if isinstance(value, int | float):
                start = position(obj)
                if isinstance(obj, TimedAxis) and start is not None:
                    seconds = float(obj.move_time_s(start, float(value)))
                    pending[group] = max(pending.get(group, 0.0), seconds)
                    result.moves += 1
                where[id(obj)] = float(value)
                if isinstance(obj, Named) and obj.name.endswith("exposure"):
                    exposures[id(obj)] = float(value)
        elif command == "prepare":
            livetime = getattr(msg.args[0], "livetime", None) if msg.args else None
            if livetime:
                exposures[id(obj)] = float(livetime)
        elif command == "trigger":
            exposure = _exposure_of(obj, exposures) or 0.0
            frame = obj.frame_time_s(exposure) if isinstance(obj, FrameTimed) else exposure
            result.exposure_s += frame
            result.overhead_s += overhead_per_frame_s
            result.frames += 1
        elif command == "wait":
            result.motion_s += pending.pop(group, 0.0)
        elif command == "sleep":
            result.sleep_s += float(msg.args[0])
        elif command == "locate":
            here = position(obj)
            if here is not None:
                response = {"setpoint": here, "readback": here}
    result.motion_s += sum(pending.values())
    result.total_s = result.motion_s + result.exposure_s + result.overhead_s + result.sleep_s
    return result
