"""Stage tiles covering a sample region, and the beam-time estimate of a tiled XANES-imaging run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import DesignInputError
from xbeam_bluesky.planning._timing import ScanTimeModel

#: Smallest default overlap between neighbouring tiles (fraction of the tile size), for stitching.
MIN_OVERLAP = 0.05


def tile_size_mm(fov_px: tuple[int, int], pixel_um: float) -> tuple[float, float]:
    """Field of view (width, height) in mm of a camera with ``fov_px`` pixels of ``pixel_um`` µm."""
    width, height = (int(v) for v in fov_px)
    if width <= 0 or height <= 0:
        raise DesignInputError(f"fov_px must be two positive pixel counts, got {fov_px!r}")
    if not (np.isfinite(pixel_um) and pixel_um > 0):
        raise DesignInputError(f"pixel_um must be > 0 µm, got {pixel_um!r}")
    return width * pixel_um * 1e-3, height * pixel_um * 1e-3


def default_overlap(size_mm: tuple[float, float], repeatability_um: float) -> float:
    """Overlap fraction that keeps neighbours overlapping at the stage's worst-case positioning error.

    Two tiles can each be off by the repeatability, so the overlap must exceed twice it; the result is at least
    :data:`MIN_OVERLAP` (stitching margin).
    """
    if not repeatability_um >= 0:
        raise DesignInputError(f"repeatability_um must be >= 0 µm, got {repeatability_um!r}")
    return max(MIN_OVERLAP, 2.0 * repeatability_um * 1e-3 / min(size_mm))


@dataclass(frozen=True)
class TilePlan:
    """Tiles in acquisition (serpentine) order.

    Attributes
    ----------
    centers_mm
        Stage (x, y) of every tile centre (mm), shape (n, 2), in acquisition order.
    size_mm
        Tile (width, height) in mm.
    overlap
        Overlap between neighbouring tiles, fraction of the tile size.
    grid_index
        (column, row) of every tile on the tiling grid.
    region
        The region covered (``{"x_mm": ..., "y_mm": ...}`` or ``{"polygon_mm": ...}``).
    """

    centers_mm: NDArray[np.float64]
    size_mm: tuple[float, float]
    overlap: float
    grid_index: NDArray[np.intp]
    region: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return int(self.centers_mm.shape[0])

    @property
    def step_mm(self) -> tuple[float, float]:
        """Distance between neighbouring tile centres (x, y) in mm."""
        return self.size_mm[0] * (1 - self.overlap), self.size_mm[1] * (1 - self.overlap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (the CLI's ``tiles.json``)."""
        return {
            "n_tiles": self.n_tiles,
            "tile_size_mm": list(self.size_mm),
            "step_mm": list(self.step_mm),
            "overlap": self.overlap,
            "order": "serpentine",
            "region": self.region,
            "tiles": [
                {"index": i, "x_mm": float(x), "y_mm": float(y), "column": int(c), "row": int(r)}
                for i, ((x, y), (c, r)) in enumerate(zip(self.centers_mm, self.grid_index, strict=True))
            ],
        }


def _axis_centers(lo: float, hi: float, size: float, step: float) -> NDArray[np.float64]:
    """Centres of tiles of ``size`` every ``step`` covering [lo, hi], centred on the interval."""
    length = hi - lo
    n = 1 if length <= size else math.ceil((length - size) / step - 1e-9) + 1
    return (lo + hi) / 2 + (np.arange(n) - (n - 1) / 2) * step


def _check_range(name: str, value: ArrayLike) -> tuple[float, float]:
    lo, hi = (float(v) for v in np.asarray(value, dtype=float).ravel())
    if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo):
        raise DesignInputError(f"{name} must be START:STOP with finite START <= STOP (mm), got {value!r}")
    return lo, hi


def check_stage_limits(centers_mm: NDArray[np.float64], limits_mm: dict[str, tuple[float, float]]) -> None:
    """Raise ValueError naming the first tile whose centre lies outside the stage travel.

    Parameters
    ----------
    centers_mm
        Tile centres (x, y) in mm.
    limits_mm
        ``{"x": (low, high), "y": (low, high)}`` stage travel in mm (missing axes are not checked).
    """
    for axis, column in (("x", 0), ("y", 1)):
        if axis not in limits_mm:
            continue
        lo, hi = limits_mm[axis]
        outside = np.flatnonzero((centers_mm[:, column] < lo) | (centers_mm[:, column] > hi))
        if outside.size:
            i = int(outside[0])
            raise DesignInputError(
                f"tile {i} at {axis} = {centers_mm[i, column]:.4f} mm is outside the stage {axis} limits "
                f"[{lo}, {hi}] mm ({outside.size} tiles outside)"
            )


def plan_tiles(
    fov_px: tuple[int, int],
    pixel_um: float,
    *,
    x_mm: tuple[float, float] | None = None,
    y_mm: tuple[float, float] | None = None,
    polygon_mm: ArrayLike | None = None,
    overlap: float | None = None,
    repeatability_um: float = 1.0,
    stage_limits_mm: dict[str, tuple[float, float]] | None = None,
) -> TilePlan:
    """Tiles covering a rectangle (``x_mm`` × ``y_mm``) or a polygon, in serpentine order.

    Every point of the region lies inside at least one tile; neighbouring tiles overlap by ``overlap`` of the
    tile size. For a polygon, the tiles of its bounding box that do not touch it are dropped.

    Parameters
    ----------
    fov_px
        Camera field of view (width, height) in pixels.
    pixel_um
        Pixel size at the sample (µm).
    x_mm, y_mm
        Rectangle (start, stop) in stage coordinates (mm).
    polygon_mm
        Polygon vertices, shape (n, 2), mm (instead of the rectangle).
    overlap
        Overlap fraction in [0, 1); default from ``repeatability_um`` (:func:`default_overlap`).
    repeatability_um
        Stage repeatability (µm).
    stage_limits_mm
        Stage travel ``{"x": (lo, hi), "y": (lo, hi)}`` in mm; a tile centre outside raises ValueError.
    """
    size = tile_size_mm(fov_px, pixel_um)
    if overlap is None:
        overlap = default_overlap(size, repeatability_um)
    if not (0.0 <= overlap < 1.0):
        raise DesignInputError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    step = (size[0] * (1 - overlap), size[1] * (1 - overlap))
    polygon = None
    if polygon_mm is not None:
        if x_mm is not None or y_mm is not None:
            raise DesignInputError("give either x_mm/y_mm (rectangle) or polygon_mm, not both")
        polygon = np.asarray(polygon_mm, dtype=float)
        if (
            polygon.ndim != 2
            or polygon.shape[1] != 2
            or polygon.shape[0] < 3
            or not np.all(np.isfinite(polygon))
        ):
            raise DesignInputError(
                f"polygon_mm must be at least 3 finite (x, y) vertices, got shape {polygon.shape}"
            )
        x_lo, y_lo = polygon.min(axis=0)
        x_hi, y_hi = polygon.max(axis=0)
        region: dict[str, Any] = {"polygon_mm": polygon.tolist()}
    else:
        if x_mm is None or y_mm is None:
            raise DesignInputError("give the region: x_mm and y_mm (rectangle) or polygon_mm")
        x_lo, x_hi = _check_range("x_mm", x_mm)
        y_lo, y_hi = _check_range("y_mm", y_mm)
        region = {"x_mm": [x_lo, x_hi], "y_mm": [y_lo, y_hi]}
    xs = _axis_centers(x_lo, x_hi, size[0], step[0])
    ys = _axis_centers(y_lo, y_hi, size[1], step[1])
    centers: list[tuple[float, float]] = []
    index: list[tuple[int, int]] = []
    path = None
    if polygon is not None:
        from matplotlib.path import Path as PolygonPath
        from matplotlib.transforms import Bbox

        path = PolygonPath(np.vstack([polygon, polygon[:1]]), closed=True)
    for row, y in enumerate(ys):
        columns = range(xs.size) if row % 2 == 0 else range(xs.size - 1, -1, -1)
        for col in columns:
            x = xs[col]
            if path is not None:
                box = Bbox.from_extents(x - size[0] / 2, y - size[1] / 2, x + size[0] / 2, y + size[1] / 2)
                if not path.intersects_bbox(box, filled=True):
                    continue
            centers.append((float(x), float(y)))
            index.append((col, row))
    centers_mm = np.asarray(centers, dtype=float).reshape(-1, 2)
    if stage_limits_mm:
        check_stage_limits(centers_mm, stage_limits_mm)
    return TilePlan(
        centers_mm=centers_mm,
        size_mm=size,
        overlap=float(overlap),
        grid_index=np.asarray(index, dtype=np.intp).reshape(-1, 2),
        region=region,
    )


def estimate_imaging_time(
    energies_eV: ArrayLike,
    dwell_s: ArrayLike,
    n_tiles: int,
    *,
    readout_s: float = 0.01,
    mono: ScanTimeModel | None = None,
    tile_move_s: float = 0.5,
    n_flats: int = 1,
    flat_move_s: float = 1.0,
    n_darks: int = 10,
    dark_exposure_s: float | None = None,
) -> dict[str, float]:
    """Beam time (s) of a tiled XANES-imaging run, shown before it starts.

    At every energy: a monochromator move and settle, then for every tile a stage move and one exposure of that
    energy's dwell plus the camera readout, then ``n_flats`` flat fields (sample moved out and back). Darks once.

    Parameters
    ----------
    energies_eV, dwell_s
        The energy design (eV) and exposure per energy (s).
    n_tiles
        Number of tiles.
    readout_s
        Camera readout per frame (s).
    mono
        Monochromator time model; default moves cost nothing but its settle (``ScanTimeModel()``).
    tile_move_s
        Stage move and settle between tiles (s).
    n_flats, flat_move_s
        Flat fields per energy and the time (s) to move the sample out and back in.
    n_darks, dark_exposure_s
        Dark frames at the start and their exposure (s); default the mean dwell.

    Returns
    -------
    dict
        ``total_s`` and its parts ``exposure_s``, ``readout_s``, ``energy_moves_s``, ``tile_moves_s``,
        ``flats_s``, ``darks_s``.
    """
    energies = np.asarray(energies_eV, dtype=float)
    dwell = np.broadcast_to(np.asarray(dwell_s, dtype=float), energies.shape)
    if n_tiles < 1:
        raise DesignInputError(f"n_tiles must be >= 1, got {n_tiles}")
    mono = ScanTimeModel() if mono is None else mono
    n_e = energies.size
    exposure = float(dwell.sum()) * n_tiles
    readout = readout_s * n_e * n_tiles
    energy_moves = mono.scan_time_s(energies, np.zeros(n_e))
    tile_moves = tile_move_s * n_e * max(n_tiles - 1, 0)
    flats = n_flats * (float(dwell.sum()) + readout_s * n_e) + (flat_move_s * n_e if n_flats else 0.0)
    dark_exp = float(dwell.mean()) if dark_exposure_s is None else dark_exposure_s
    darks = n_darks * (dark_exp + readout_s)
    parts = {
        "exposure_s": exposure,
        "readout_s": readout,
        "energy_moves_s": energy_moves,
        "tile_moves_s": tile_moves,
        "flats_s": flats,
        "darks_s": darks,
    }
    return {"total_s": float(sum(parts.values())), **parts}
