"""The default candidate grid: the published Fe K case, 7076.2-7181.2 eV in 0.1 eV steps."""

from __future__ import annotations

import numpy as np

from xbeam_bluesky.planning import candidate_grid, default_range


def test_default_grid_is_the_published_fe_k_case() -> None:
    grid = candidate_grid(*default_range(7112.0))
    assert grid.size == 1051
    assert grid[0] == 7076.2 and grid[-1] == 7181.2
    np.testing.assert_allclose(np.diff(grid), 0.1, atol=1e-6)


def test_grid_includes_both_ends_of_a_whole_number_of_steps() -> None:
    np.testing.assert_array_equal(
        candidate_grid(7100.0, 7101.0, 0.25), [7100.0, 7100.25, 7100.5, 7100.75, 7101.0]
    )
