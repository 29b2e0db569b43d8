"""Read runs back from tiled: frame stacks per tile, energies, stage positions, darks/flats, XRD patterns.

Every function takes a run node (``client[uid]``, a databroker-compatible ``BlueskyRun``). Frames are read
with slicing, so one tile's stack is fetched without reading the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xbeam_bluesky.documents import (
    DARK_STREAM,
    FLAT_STREAM,
    PRIMARY_STREAM,
    XanesDataKeys,
    start_energies,
    start_tile_positions,
    xanes_data_keys,
    xrd_data_keys,
)
from xbeam_bluesky.spectra import FrameMean, correct_frame


@dataclass(frozen=True)
class FrameTable:
    """Per-frame bookkeeping of one stream, in acquisition (seq_num) order.

    Attributes
    ----------
    energy_eV, x_mm, y_mm : numpy.ndarray
        Monochromator and stage readbacks at each frame.
    energy_index, tile_index : numpy.ndarray
        Place of each frame in the start document's ``energies`` / ``tiles`` (−1 = not applicable).
    """

    energy_eV: np.ndarray
    x_mm: np.ndarray
    y_mm: np.ndarray
    energy_index: np.ndarray
    tile_index: np.ndarray

    def __len__(self) -> int:
        return int(self.energy_index.size)


@dataclass(frozen=True)
class TileStack:
    """The frames of one tile as an (energy, y, x) stack.

    Attributes
    ----------
    tile_index : int
        Index into the start document's ``tiles["positions"]``.
    position_mm : tuple of float
        Requested stage position (x, y) in mm.
    energies_eV : numpy.ndarray
        Requested energy of each frame (start document), in acquisition order.
    readback_eV : numpy.ndarray
        Monochromator readback at each frame.
    energy_index : numpy.ndarray
        Index of each frame into the start document's ``energies``.
    frames : numpy.ndarray
        uint16 (n_energy, ny, nx).
    """

    tile_index: int
    position_mm: tuple[float, float]
    energies_eV: np.ndarray
    readback_eV: np.ndarray
    energy_index: np.ndarray
    frames: np.ndarray


def _v3(run: Any) -> Any:
    """The run as a tiled-native (v3) ``BlueskyRun``: streams are containers of arrays.

    Needed because ``run.v2`` (the databroker view) can switch the client class used for later runs.
    """
    return getattr(run, "v3", run)


def start_doc(run: Any) -> dict:
    """The run's start document."""
    return dict(run.metadata["start"])


def _keys(run: Any) -> XanesDataKeys:
    return xanes_data_keys(start_doc(run))


def _column(run: Any, stream: str, key: str) -> np.ndarray:
    return np.asarray(_v3(run)[stream][key].read())


def streams(run: Any) -> list[str]:
    """Names of the run's streams."""
    return list(run)


def frame_table(run: Any, stream: str = PRIMARY_STREAM) -> FrameTable:
    """Energies, positions and (energy_index, tile_index) of every frame of ``stream``."""
    keys = _keys(run)
    if stream not in run:
        return FrameTable(*(np.empty(0) for _ in range(3)), *(np.empty(0, dtype=int) for _ in range(2)))
    return FrameTable(
        energy_eV=_column(run, stream, keys["energy"]).astype(float),
        x_mm=_column(run, stream, keys["x"]).astype(float),
        y_mm=_column(run, stream, keys["y"]).astype(float),
        energy_index=_column(run, stream, keys["energy_index"]).astype(int),
        tile_index=_column(run, stream, keys["tile_index"]).astype(int),
    )


def energies(run: Any) -> np.ndarray:
    """The requested energies (eV) of an XANES-imaging run, in order."""
    return np.asarray(start_energies(start_doc(run)), dtype=float)


def tile_positions(run: Any) -> np.ndarray:
    """Requested stage positions of the tiles, (n_tiles, 2) in mm."""
    return np.asarray(start_tile_positions(start_doc(run)), dtype=float).reshape(-1, 2)


def read_frames(run: Any, stream: str = PRIMARY_STREAM, rows: np.ndarray | slice | None = None) -> np.ndarray:
    """Frames of ``stream`` as (n, ny, nx) (all, a slice, or the given row indices)."""
    keys = _keys(run)
    node = _v3(run)[stream][keys["frame"]]
    if rows is None:
        data = node.read()
    elif isinstance(rows, slice):
        data = node[rows]
    else:
        rows = np.asarray(rows, dtype=int)
        if rows.size == 0:
            shape = node.shape
            return np.empty((0, *shape[-2:]), dtype=node.dtype.to_numpy_dtype())
        steps = np.diff(rows)
        if rows.size == 1 or ((steps > 0).all() and (steps == steps[0]).all()):
            step = int(steps[0]) if rows.size > 1 else 1
            data = node[int(rows[0]) : int(rows[-1]) + 1 : step]
        else:
            data = np.stack([node[int(r)] for r in rows])
    data = np.asarray(data)
    return data.reshape(data.shape[0], *data.shape[-2:]) if data.ndim == 4 else data


def tile_stack(run: Any, tile_index: int) -> TileStack:
    """The (energy, y, x) stack of one tile of an XANES-imaging run (frames that were written)."""
    table = frame_table(run)
    positions = tile_positions(run)
    if not 0 <= tile_index < len(positions):
        raise ValueError(f"tile_index = {tile_index}; the run has {len(positions)} tiles")
    rows = np.flatnonzero(table.tile_index == tile_index)
    order = np.argsort(table.energy_index[rows], kind="stable")
    rows = rows[order]
    requested = energies(run)
    return TileStack(
        tile_index=int(tile_index),
        position_mm=(float(positions[tile_index, 0]), float(positions[tile_index, 1])),
        energies_eV=requested[table.energy_index[rows]],
        readback_eV=table.energy_eV[rows],
        energy_index=table.energy_index[rows],
        frames=read_frames(run, PRIMARY_STREAM, rows),
    )


def dark_frames(run: Any) -> np.ndarray:
    """All dark frames, (n, ny, nx) (empty if the run took none)."""
    if DARK_STREAM not in run:
        shape = start_doc(run).get("frame_shape") or (0, 0)
        return np.empty((0, *shape), dtype=np.uint16)
    return read_frames(run, DARK_STREAM)


def dark_mean(run: Any) -> np.ndarray | float:
    """Mean dark frame (float32), or 0.0 without darks."""
    darks = dark_frames(run)
    return FrameMean.of(darks) if len(darks) else 0.0


def flat_means(run: Any) -> dict[int, np.ndarray]:
    """Mean flat frame (float32 (ny, nx)) per energy_index."""
    if FLAT_STREAM not in run:
        return {}
    table = frame_table(run, FLAT_STREAM)
    frames = read_frames(run, FLAT_STREAM)
    return {int(ie): FrameMean.of(frames[table.energy_index == ie]) for ie in np.unique(table.energy_index)}


def absorbance_stack(run: Any, tile_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark- and flat-corrected absorbance μt of one tile.

    Returns
    -------
    energies_eV, mu_t : numpy.ndarray
        Energies (n_energy,) and μt float32 (n_energy, ny, nx) = −ln((I − dark) / (flat − dark)), by
        :func:`~xbeam_bluesky.spectra.correct_frame` (NaN where saturated or not positive), the frame correction
        the live clustering applies to the same counts.

    Raises
    ------
    ValueError
        When the run has no flat for one of the tile's energies.
    """
    stack = tile_stack(run, tile_index)
    dark = dark_mean(run)
    flats = flat_means(run)
    missing = sorted(set(stack.energy_index.tolist()) - set(flats))
    if missing:
        raise ValueError(f"run {start_doc(run).get('uid')} has no flat frames for energy indices {missing}")
    mu = np.stack(
        [
            correct_frame(f, flats[int(ie)], dark)
            for f, ie in zip(stack.frames, stack.energy_index, strict=True)
        ]
    )
    return stack.energies_eV, mu


@dataclass(frozen=True)
class XRDPattern:
    """A powder pattern: 2θ in degrees and counts (summed over the run's events) plus each event's counts."""

    two_theta_deg: np.ndarray
    counts: np.ndarray
    counts_per_event: np.ndarray
    phases: list[str]
    exposure_s: float


def xrd_pattern(run: Any) -> XRDPattern:
    """The powder pattern of an ``xrd_powder`` run."""
    start = start_doc(run)
    keys = xrd_data_keys(start)
    primary = _v3(run)[PRIMARY_STREAM]
    two_theta = np.asarray(primary[keys["two_theta"]].read())
    counts = np.asarray(primary[keys["counts"]].read()).reshape(two_theta.shape[0], -1)
    return XRDPattern(
        two_theta_deg=two_theta.reshape(two_theta.shape[0], -1)[0],
        counts=counts.sum(axis=0),
        counts_per_event=counts,
        phases=list(start["phases"]),
        exposure_s=float(start["exposure"]) * counts.shape[0],
    )
