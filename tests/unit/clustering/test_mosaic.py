"""Tiles stitched by stage position; overlaps resolved by confidence, independent of order."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import TileMap, stitch_tiles


def test_two_overlapping_tiles() -> None:
    a = TileMap(np.full((10, 20), 1, np.int32), np.full((10, 20), 5.0, np.float32), (0.0, 0.0))
    b = TileMap(np.full((10, 20), 2, np.int32), np.full((10, 20), 9.0, np.float32), (0.015, 0.0))
    # pixel 1 µm: b is 15 px to the right of a, overlapping 5 columns
    for tiles in ([a, b], [b, a]):
        m = stitch_tiles(tiles, pixel_um=1.0)
        assert m.labels.shape == (10, 35)
        assert np.all(m.labels[:, :15] == 1) and np.all(m.labels[:, 15:] == 2)  # b more confident in overlap
        assert m.covered.all()
        assert m.origin_mm == pytest.approx((-0.010, -0.005))


def test_gaps_and_unassigned_pixels() -> None:
    lab = np.ones((4, 4), np.int32)
    lab[0, 0] = 0
    a = TileMap(lab, np.ones((4, 4), np.float32), (0.0, 0.0))
    b = TileMap(np.full((4, 4), 2, np.int32), np.zeros((4, 4), np.float32), (0.0, 0.010))
    m = stitch_tiles([a, b], pixel_um=1.0)
    assert m.labels.shape == (14, 4)
    assert m.labels[0, 0] == 0 and not m.covered[5:9].any()  # a gap between the tiles
    assert np.all(m.labels[10:] == 2)
    with pytest.raises(ValueError, match="no tiles"):
        stitch_tiles([], 1.0)
