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


def test_cluster_tiles_stitch_like_one_field(library, energies, noise, noisy_absorbance) -> None:
    from xbeam_bluesky.clustering import ArrayStack, cluster_stack, cluster_tiles, sites_from_library
    from xbeam_bluesky.devices.sim.phantom import Phantom

    names = list(library)
    sites = sites_from_library(energies, np.vstack(list(library.values())), names, i0_counts=1e5, noise=noise,
                               n_draws=300)  # fmt: skip
    phantom = Phantom(width_mm=1.0, height_mm=1.0, seed=1, domain_size_um=60)
    union = noisy_absorbance(phantom.absorbance(energies, (0.0, 0.0), (40, 70), 4.0), 1e5, noise, seed=9)
    # two 40 × 40 tiles cut from the same measurement, 30 px (0.12 mm) apart on the stage
    left, right = union[:, :, :40], union[:, :, 30:]
    centers = [(-0.06, 0.0), (0.06, 0.0)]
    tiles = cluster_tiles([ArrayStack(left), ArrayStack(right)], sites, centers_mm=centers, pixel_um=4.0,
                          denoise=False, discover=False)  # fmt: skip
    whole = cluster_stack(ArrayStack(union), sites, denoise=False, discover=False)
    assert tiles.labels.shape == (40, 70)
    assert np.array_equal(tiles.raw_labels, whole.raw_labels)
    # float32 margins (units of σ, up to ~8 here) accumulated through each field's own subspace basis: they
    # agree to float32 rounding (3.6e-5 measured with numpy 2.4.6 / OpenBLAS), far below any decision threshold
    np.testing.assert_allclose(tiles.confidence, whole.confidence, rtol=1e-5, atol=1e-4)
    assert tiles.mosaic.offsets == ((0, 0), (0, 30))
    with pytest.raises(ValueError, match="centers_mm"):
        cluster_tiles([ArrayStack(left), ArrayStack(right)], sites)
