"""Conventional region grid and stage tiling: coverage, overlap, order, limits, time estimate."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.planning import (
    ScanTimeModel,
    conventional_grid,
    estimate_imaging_time,
    fe_k_grid,
    plan_tiles,
)
from xbeam_bluesky.planning._conventional import ETOK


def test_conventional_grid_regions():
    e = conventional_grid(7112.0, 7076.2, 7181.2)
    assert e[0] == pytest.approx(7076.2) and e[-1] == pytest.approx(7181.2)
    pre, edge, post = e[e < 7092.0], e[(e >= 7092.0) & (e < 7142.0)], e[e >= 7142.0]
    np.testing.assert_allclose(np.diff(pre), 5.0)
    np.testing.assert_allclose(np.diff(edge), 0.5, atol=1e-9)
    k = np.sqrt(ETOK * (post[:-1] - 7112.0))  # the last point is the range end
    np.testing.assert_allclose(np.diff(k), 0.05, atol=1e-6)  # energies rounded to 1 µeV


def test_conventional_grid_snaps_to_candidates():
    grid = fe_k_grid()
    e = conventional_grid(7112.0, grid[0], grid[-1], snap_to=grid)
    assert np.all(np.isin(e, grid)) and np.all(np.diff(e) > 0)


def _inside_some_tile(points, plan):
    half = np.asarray(plan.size_mm) / 2
    d = np.abs(points[:, None, :] - plan.centers_mm[None, :, :])
    return np.all(d <= half + 1e-12, axis=2).any(axis=1)


def test_rectangle_is_covered_with_the_requested_overlap():
    plan = plan_tiles((2048, 2048), 0.65, x_mm=(-1.0, 3.2), y_mm=(0.0, 2.5), overlap=0.15)
    w, h = plan.size_mm
    assert (w, h) == pytest.approx((1.33120, 1.33120))
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-1.0, 3.2, 5000), rng.uniform(0.0, 2.5, 5000)])
    pts = np.vstack([pts, [[-1.0, 0.0], [3.2, 2.5], [-1.0, 2.5], [3.2, 0.0]]])
    assert _inside_some_tile(pts, plan).all()
    xs, ys = np.unique(plan.centers_mm[:, 0]), np.unique(plan.centers_mm[:, 1])
    np.testing.assert_allclose(np.diff(xs), w * 0.85)  # neighbours overlap by 15 % of the tile
    np.testing.assert_allclose(np.diff(ys), h * 0.85)
    assert plan.n_tiles == xs.size * ys.size


def test_serpentine_order_moves_one_step_at_a_time():
    plan = plan_tiles((100, 100), 10.0, x_mm=(0.0, 4.0), y_mm=(0.0, 3.0), overlap=0.1)
    steps = np.abs(np.diff(plan.grid_index, axis=0)).sum(axis=1)
    assert np.all(steps == 1)
    assert plan.grid_index[0].tolist() == [0, 0]


def test_small_region_gets_one_centred_tile():
    plan = plan_tiles((2048, 2048), 0.65, x_mm=(1.0, 1.2), y_mm=(2.0, 2.0))
    assert plan.n_tiles == 1
    np.testing.assert_allclose(plan.centers_mm[0], [1.1, 2.0])


def test_polygon_covered_and_no_useless_tiles():
    triangle = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    plan = plan_tiles((100, 100), 5.0, polygon_mm=triangle, overlap=0.1)
    rng = np.random.default_rng(2)
    u = rng.uniform(0, 4, (20000, 2))
    pts = u[u.sum(axis=1) <= 4.0]
    assert _inside_some_tile(pts, plan).all()
    rect = plan_tiles((100, 100), 5.0, x_mm=(0.0, 4.0), y_mm=(0.0, 4.0), overlap=0.1)
    assert plan.n_tiles < rect.n_tiles
    # every kept tile touches the triangle: its corner nearest the origin lies inside it
    corner = plan.centers_mm - np.asarray(plan.size_mm) / 2
    assert np.all(np.clip(corner, 0, None).sum(axis=1) <= 4.0 + 1e-9)


def test_default_overlap_from_repeatability():
    plan = plan_tiles((100, 100), 1.0, x_mm=(0.0, 1.0), y_mm=(0.0, 1.0), repeatability_um=10.0)
    assert plan.overlap == pytest.approx(2 * 10e-3 / 0.1)
    coarse = plan_tiles((2048, 2048), 0.65, x_mm=(0.0, 1.0), y_mm=(0.0, 1.0), repeatability_um=1.0)
    assert coarse.overlap == pytest.approx(0.05)


def test_stage_limits_name_the_tile():
    with pytest.raises(ValueError, match=r"tile \d+ at x = .* outside the stage x limits \[-1.0, 2.0\]"):
        plan_tiles((2048, 2048), 0.65, x_mm=(0.0, 4.0), y_mm=(0.0, 1.0), stage_limits_mm={"x": (-1.0, 2.0)})


def test_bad_tiling_input():
    with pytest.raises(ValueError, match="fov_px"):
        plan_tiles((0, 10), 1.0, x_mm=(0, 1), y_mm=(0, 1))
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles((10, 10), 1.0, x_mm=(0, 1), y_mm=(0, 1), overlap=1.0)
    with pytest.raises(ValueError, match="x_mm"):
        plan_tiles((10, 10), 1.0, x_mm=(2, 1), y_mm=(0, 1))


def test_imaging_time_estimate_by_hand():
    mono = ScanTimeModel(dwell_s=0.1, settle_s=0.5, move_overhead_s=0.2)
    est = estimate_imaging_time(
        [7100.0, 7110.0],
        [0.1, 0.3],
        4,
        readout_s=0.01,
        mono=mono,
        tile_move_s=0.5,
        n_flats=1,
        flat_move_s=1.0,
        n_darks=2,
    )
    assert est["exposure_s"] == pytest.approx(4 * 0.4)
    assert est["readout_s"] == pytest.approx(0.01 * 8)
    assert est["energy_moves_s"] == pytest.approx(0.2 + 2 * 0.5)
    assert est["tile_moves_s"] == pytest.approx(2 * 3 * 0.5)
    assert est["flats_s"] == pytest.approx(0.4 + 0.02 + 2.0)
    assert est["darks_s"] == pytest.approx(2 * (0.2 + 0.01))
    assert est["total_s"] == pytest.approx(sum(v for k, v in est.items() if k != "total_s"))
