"""Test helpers (never imported at run time): a small simulated beamline and an embedded tiled catalog.

The pytest fixtures built on these live in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xbeam_bluesky.devices.sim import Phantom, SimBeamline, make_sim_beamline
from xbeam_bluesky.storage import Storage, open_storage

#: Options of the small test beamline: 32×40-pixel frames of 10 µm pixels on a 4 mm × 4 mm phantom,
#: instantaneous motion and exposure.
SMALL_BEAMLINE = {
    "frame_shape": (32, 40),
    "pixel_size_um": 10.0,
    "time_scale": 0.0,
    "seed": 7,
    "sample_size_mm": (4.0, 4.0),
}


def small_phantom(seed: int = 7) -> Phantom:
    """A 4 mm × 4 mm phantom with the default phases."""
    return Phantom(width_mm=4.0, height_mm=4.0, seed=seed)


def make_test_beamline(detector_dir: str | Path, *, connect: bool = True, **overrides: Any) -> SimBeamline:
    """The small simulated beamline (``SMALL_BEAMLINE`` updated with ``overrides``); a RunEngine must exist."""
    options = {**SMALL_BEAMLINE, **overrides}
    return make_sim_beamline(detector_dir, connect=connect, **options)


def open_test_storage(directory: str | Path) -> Storage:
    """An embedded tiled server on ``directory`` (close it when done)."""
    return open_storage(data_dir=Path(directory))


def tiled_runs(client: Any) -> list[str]:
    """uids of the Bluesky runs in a catalog (analysis results excluded)."""
    return [key for key, node in client.items() if "BlueskyRun" in {spec.name for spec in node.specs}]
