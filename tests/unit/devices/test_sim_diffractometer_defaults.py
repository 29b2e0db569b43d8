"""Default count levels of the simulated powder diffractometer: a realistic lab/beamline pattern."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.devices.sim.diffractometer import (
    DEFAULT_BACKGROUND_FRACTION,
    DEFAULT_PEAK_COUNTS_PER_S,
    rietveld_renderer,
    smooth_background,
)
from xbeam_bluesky.rietveld import simulate_pattern

CIF = "PbSO4-Wyckoff.cif"
GRID = np.arange(10.0, 120.0 + 0.01, 0.02)


@pytest.fixture(scope="module")
def bragg_only():
    from xbeam_bluesky.devices.sim.diffractometer import CIF_DIR

    return np.asarray(simulate_pattern([CIF_DIR / CIF], GRID, scales=[1.0]))


def test_default_pattern_has_lab_count_levels_and_a_smooth_background(bragg_only) -> None:
    pattern = rietveld_renderer({CIF: 1.0})(GRID)  # counts/s = counts in the default 1 s exposure
    background = smooth_background(GRID, DEFAULT_BACKGROUND_FRACTION * DEFAULT_PEAK_COUNTS_PER_S)
    peaks = pattern - background
    assert 1e4 <= peaks.max() <= 1e5 and peaks.max() == pytest.approx(DEFAULT_PEAK_COUNTS_PER_S)
    # same peak shapes as the forward model, only rescaled
    np.testing.assert_allclose(peaks, bragg_only * DEFAULT_PEAK_COUNTS_PER_S / bragg_only.max(), atol=1e-6)
    # background: never zero, higher at low angle (air scatter), smooth (no jumps between grid points)
    assert pattern.min() >= 0.9 * DEFAULT_BACKGROUND_FRACTION * DEFAULT_PEAK_COUNTS_PER_S
    assert background[0] > 2 * background[-1]
    assert np.abs(np.diff(background)).max() < 1e-2 * background.max()


def test_absolute_scales_and_flat_background_are_still_available(bragg_only) -> None:
    absolute = rietveld_renderer({CIF: 2.0}, peak_counts_per_s=None)(GRID)
    np.testing.assert_allclose(absolute, 2.0 * bragg_only, rtol=1e-9)
    flat = rietveld_renderer({CIF: 1.0}, background=10.0, peak_counts_per_s=1000.0)(GRID)
    assert flat.min() == pytest.approx(10.0, abs=1e-3) and flat.max() == pytest.approx(1010.0, rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"peak_counts_per_s": 0.0}, "peak_counts_per_s = 0.0; expected a positive count rate"),
        ({"background": -1.0}, "background = -1.0; expected a count rate"),
    ],
)
def test_bad_levels_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        rietveld_renderer({CIF: 1.0}, **kwargs)
