"""The start documents the plans write, as a contract: their keys, their types and the readers of them.

``plans`` writes these documents; ``storage`` reads runs back with them, the live analyses (``callbacks``) pick
runs and frames by them and the CLI reports from them. Everyone imports the keys and readers from here instead of
retyping strings. Pure Python and numpy (no beamline imports), the lowest layer.

``tests/unit/test_documents.py`` checks that the documents the plans write have exactly the keys declared here.

Frame tags
    Every event of the ``primary``, ``flat`` and ``dark`` streams of an ``xanes_imaging`` run carries
    :data:`ENERGY_INDEX_KEY` / :data:`TILE_INDEX_KEY` (−1 = not applicable: darks have both −1, flats a tile
    index of −1) and :data:`EXPOSURE_KEY` (s); :class:`XanesDataKeys` names the other event fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np

from xbeam_bluesky.errors import XbeamInputError

__all__ = [
    "DARK_STREAM",
    "ENERGY_INDEX_KEY",
    "EXPOSURE_KEY",
    "FLAT_STREAM",
    "PRIMARY_STREAM",
    "PURPOSE_KEY",
    "TILE_INDEX_KEY",
    "XANES_IMAGING",
    "XRD",
    "NoiseRecord",
    "TilesRecord",
    "XanesDataKeys",
    "XanesImagingStart",
    "XrdDataKeys",
    "XrdStart",
    "json_safe",
    "n_tiles",
    "require_purpose",
    "start_energies",
    "start_tile_positions",
    "xanes_data_keys",
    "xrd_data_keys",
]

#: Start-document key naming what a run measures; the live analyses and the read-back helpers select runs by it.
PURPOSE_KEY = "purpose"
#: ``purpose`` of a full-field XANES-imaging run (``plans.xanes_imaging``).
XANES_IMAGING = "xanes_imaging"
#: ``purpose`` of a powder-diffraction run (``plans.xrd_powder``).
XRD = "xrd"

#: Streams of an ``xanes_imaging`` run: dark frames (shutter closed), flat frames (sample out of the beam) and the
#: frames of the sample; ``baseline`` holds the mono, stage and shutter readings at start and stop.
DARK_STREAM = "dark"
FLAT_STREAM = "flat"
PRIMARY_STREAM = "primary"

#: Names of the event fields that tag each frame with its place in the acquisition.
ENERGY_INDEX_KEY = "energy_index"
TILE_INDEX_KEY = "tile_index"
#: Name of the event field holding the exposure (s) the camera was prepared with for that frame.
EXPOSURE_KEY = "exposure_s"


class XanesDataKeys(TypedDict):
    """Event fields of an ``xanes_imaging`` run (``start["data_keys"]``), each the name of a data key."""

    frame: str  #: the camera frame (the camera's name)
    energy: str  #: monochromator readback, eV
    x: str  #: stage x readback, mm
    y: str  #: stage y readback, mm
    energy_index: str  #: :data:`ENERGY_INDEX_KEY`
    tile_index: str  #: :data:`TILE_INDEX_KEY`
    exposure_s: str  #: :data:`EXPOSURE_KEY`


class TilesRecord(TypedDict):
    """``start["tiles"]``: where the frames are and how large."""

    positions: list[list[float]]  #: stage [x, y] of each tile centre, mm
    pixel_size_um: float | None  #: pixel size at the sample, µm (None: the camera does not know)
    frame_shape: list[int] | None  #: (ny, nx) pixels (None: the camera does not know)


class NoiseRecord(TypedDict, total=False):
    """``start["noise_model"]``: what a camera that knows its noise model reports (None for one that does not)."""

    gain: float  #: ADU per detected photon
    offset: float  #: variance offset, read_noise², ADU²
    read_noise: float  #: ADU rms
    dark_offset: float  #: mean dark level, ADU
    i0_counts: float  #: mean open-beam counts above dark per pixel at the shortest dwell, ADU
    photon_flux: float  #: detected photons per pixel per s at the flat-field maximum
    i0_counts_per_energy: list[float]  #: with a dwell list: ``i0_counts`` at each energy's dwell


class XanesImagingStart(TypedDict):
    """The ``xanes_imaging`` start document beyond the bluesky-standard keys (``uid``, ``time``, ``plan_name``,
    ``plan_args``, ``detectors``, ``motors``, ``num_points``, ``num_intervals``, ``hints``, ``scan_id``...)."""

    purpose: str  #: :data:`XANES_IMAGING`
    edge: str  #: absorption edge, e.g. ``"Fe-K"``
    e0: float  #: edge energy, eV
    energies: list[float]  #: requested energies in acquisition order, eV (repeats are measured again)
    dwell: float | list[float]  #: exposure per frame, s: one number, or one per energy
    order: str  #: ``"energy"`` (energy outer) or ``"tile"`` (tile outer), see ``plans.layout``
    tiles: TilesRecord
    frame_shape: list[int] | None  #: same as ``tiles["frame_shape"]``
    design: dict[str, Any] | None  #: provenance of the energy list (the planner's design record)
    n_darks: int
    n_flats: int  #: flat frames per energy
    flat_position: list[float] | None  #: stage [x, y] of the flats, mm (None: no flats)
    noise_model: NoiseRecord | None
    i0: float | None  #: ``noise_model["i0_counts"]``
    data_keys: XanesDataKeys


class XrdDataKeys(TypedDict):
    """Event fields of an ``xrd_powder`` run (``start["data_keys"]``)."""

    two_theta: str  #: 2θ grid, degrees
    counts: str  #: counts per channel


class XrdStart(TypedDict):
    """The ``xrd_powder`` start document beyond the bluesky-standard keys."""

    purpose: str  #: :data:`XRD`
    phases: list[str]  #: CIFs as given (paths or bundled names)
    cif_paths: list[str]  #: the CIFs resolved to files
    exposure: float  #: counting time per pattern, s
    sample: str
    data_keys: XrdDataKeys


def require_purpose(start: Mapping[str, Any], purpose: str) -> None:
    """Raise ``XbeamInputError`` (a ``ValueError``) naming the run unless its start document has ``purpose``."""
    if start.get(PURPOSE_KEY) != purpose:
        raise XbeamInputError(
            f"run {start.get('uid')} has purpose {start.get(PURPOSE_KEY)!r}, not {purpose!r}"
        )


def xanes_data_keys(start: Mapping[str, Any]) -> XanesDataKeys:
    """The event-field names of an ``xanes_imaging`` run (raises ``ValueError`` for another purpose)."""
    require_purpose(start, XANES_IMAGING)
    return start["data_keys"]


def start_energies(start: Mapping[str, Any]) -> list[float]:
    """The requested energies (eV) of an ``xanes_imaging`` run, in acquisition order."""
    require_purpose(start, XANES_IMAGING)
    return [float(e) for e in start["energies"]]


def start_tile_positions(start: Mapping[str, Any]) -> list[list[float]]:
    """Stage [x, y] (mm) of each tile of an ``xanes_imaging`` run."""
    require_purpose(start, XANES_IMAGING)
    return [[float(v) for v in p] for p in start["tiles"]["positions"]]


def n_tiles(start: Mapping[str, Any]) -> int:
    """Number of tiles of an ``xanes_imaging`` run."""
    return len(start_tile_positions(start))


def xrd_data_keys(start: Mapping[str, Any]) -> XrdDataKeys:
    """The event-field names of an ``xrd_powder`` run (raises ``ValueError`` for another purpose)."""
    require_purpose(start, XRD)
    return start["data_keys"]


def json_safe(value: Any, *, nonfinite_to_none: bool = False) -> Any:
    """``value`` as document or metadata content: mappings (string keys) and lists of numbers, strings, None.

    Tuples and arrays become lists, numpy scalars Python numbers, and any other object (a device passed as a plan argument)
    the ``repr`` of its name (or of itself). With ``nonfinite_to_none`` NaN and ±inf become None (for JSON);
    without, they are kept (a start document keeps e.g. a time model's ``max_exposure_s = inf``).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, nonfinite_to_none=nonfinite_to_none) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v, nonfinite_to_none=nonfinite_to_none) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and nonfinite_to_none and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return repr(getattr(value, "name", value))
