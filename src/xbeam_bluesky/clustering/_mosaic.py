"""Stitching tile maps into one mosaic by stage position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from xbeam_bluesky.errors import ClusteringInputError


@dataclass(frozen=True)
class TileMap:
    """Maps of one tile and where the stage put it.

    Attributes
    ----------
    labels
        Site labels (ny, nx), 0 = unassigned; labels refer to one shared site set.
    confidence
        D margin per pixel (ny, nx).
    center_mm
        Stage position (x, y) of the tile centre, mm.
    layers
        Further per-pixel maps (e.g. ``novel``, ``masked``) stitched with the same choice of tile.
    """

    labels: NDArray[np.int32]
    confidence: NDArray[np.float32]
    center_mm: tuple[float, float]
    layers: dict[str, NDArray] = field(default_factory=dict)


@dataclass(frozen=True)
class Mosaic:
    """Stitched maps.

    Attributes
    ----------
    labels, confidence
        Mosaic maps; rows run along +y, columns along +x; 0 / 0.0 where no tile covers.
    covered
        Pixels covered by at least one tile.
    origin_mm
        Stage (x, y) of the corner of pixel (0, 0) (its low-x, low-y edge), mm.
    pixel_um
        Pixel size, µm.
    layers
        The tiles' further layers, stitched (zeros where no tile covers).
    offsets
        (row, column) of each tile's pixel (0, 0) in the mosaic.
    """

    labels: NDArray[np.int32]
    confidence: NDArray[np.float32]
    covered: NDArray[np.bool_]
    origin_mm: tuple[float, float]
    pixel_um: float
    layers: dict[str, NDArray] = field(default_factory=dict)
    offsets: tuple[tuple[int, int], ...] = ()


def stitch_tiles(tiles: Sequence[TileMap], pixel_um: float) -> Mosaic:
    """Place tile maps on one pixel grid by stage position.

    Tile offsets are rounded to whole pixels. Where tiles overlap, each pixel takes the label of the
    tile with the higher confidence there (the first tile on ties), so the result does not depend on
    acquisition order except for exact ties; labels are shared because all tiles use the same sites.

    Parameters
    ----------
    tiles
        Tile maps.
    pixel_um
        Pixel size in µm (sample plane).
    """
    if not tiles:
        raise ValueError("stitch_tiles: no tiles given")
    if not pixel_um > 0:
        raise ClusteringInputError(f"pixel_um={pixel_um}; expected a positive pixel size in µm")
    p_mm = pixel_um / 1000.0
    corners = []
    for t in tiles:
        ny, nx = t.labels.shape
        if t.confidence.shape != t.labels.shape:
            raise ValueError(
                f"tile at {t.center_mm}: confidence {t.confidence.shape} vs labels {t.labels.shape}"
            )
        corners.append((t.center_mm[0] - nx * p_mm / 2, t.center_mm[1] - ny * p_mm / 2))
    x0 = min(c[0] for c in corners)
    y0 = min(c[1] for c in corners)
    offsets = [(round((cy - y0) / p_mm), round((cx - x0) / p_mm)) for cx, cy in corners]
    height = max(oy + t.labels.shape[0] for (oy, _), t in zip(offsets, tiles, strict=True))
    width = max(ox + t.labels.shape[1] for (_, ox), t in zip(offsets, tiles, strict=True))
    labels = np.zeros((height, width), np.int32)
    conf = np.full((height, width), -np.inf, np.float32)
    covered = np.zeros((height, width), bool)
    layers = {k: np.zeros((height, width), v.dtype) for k, v in tiles[0].layers.items()}
    for (oy, ox), t in zip(offsets, tiles, strict=True):
        sl = (slice(oy, oy + t.labels.shape[0]), slice(ox, ox + t.labels.shape[1]))
        c = np.where(t.labels > 0, t.confidence, -1.0).astype(np.float32)
        better = c > conf[sl]
        labels[sl] = np.where(better, t.labels, labels[sl])
        conf[sl] = np.where(better, c, conf[sl])
        for k, layer in layers.items():
            layer[sl] = np.where(better, t.layers[k], layer[sl])
        covered[sl] = True
    conf = np.where(labels > 0, conf, 0.0).astype(np.float32)
    return Mosaic(labels, conf, covered, (x0, y0), float(pixel_um), layers, tuple(offsets))
