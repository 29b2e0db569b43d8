"""Physics simulation of the beamline: monochromator, sample stage, shutter, sCMOS camera, diffractometer,
and the sample phantom.

Names are imported lazily, so ``xbeam_bluesky.devices.sim.phantom`` (pure numpy) can be used without loading
ophyd-async.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Phantom": "phantom",
    "FieldOfView": "phantom",
    "CameraModel": "camera_model",
    "SimCamera": "camera",
    "DetectorTimeoutError": "camera",
    "FRAMES_DATASET": "camera",
    "SimAxis": "motion",
    "SimMonochromator": "motion",
    "SimSampleStage": "motion",
    "SimShutter": "motion",
    "ShutterState": "motion",
    "MotionTiming": "motion",
    "SimPowderDiffractometer": "diffractometer",
    "rietveld_renderer": "diffractometer",
    "SimBeamline": "beamline",
    "SimBeamlineConfig": "beamline",
    "make_sim_beamline": "beamline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
