"""Warped prior kernel: the warp's analytic form, its fit by maximum likelihood, and held-out real spectra."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xbeam_bluesky.cli import main
from xbeam_bluesky.planning import (
    EnergyWarp,
    GaussianProcessPrior,
    fe_k_grid,
    fit_kernel,
    library_log_likelihood,
    rbf_kernel,
)
from xbeam_bluesky.spectra import aligned_library, load_library


def test_warp_derivative_and_local_length_scale_are_the_stated_ones():
    w = EnergyWarp(center_eV=7125.0, scale_eV=8.0)
    e = np.linspace(7080.0, 7180.0, 2001)
    u = w.apply(e)
    assert w.apply(np.array([7125.0]))[0] == 0.0
    assert np.all(np.diff(u) > 0)  # monotonic: a valid change of coordinate
    deriv = np.gradient(u, e)
    expected = 1.0 / np.sqrt(1.0 + np.abs(e - 7125.0) / 8.0)
    np.testing.assert_allclose(deriv[1:-1], expected[1:-1], rtol=2e-3)
    np.testing.assert_allclose(w.local_length_scale(e, 2.0), 2.0 / expected)
    # far from the center the coordinate grows like sqrt(E - E1), the photoelectron wavenumber's law
    d = np.array([3.0, 15.0])  # 1 + d/L = 4 and 16
    u_far = EnergyWarp(0.0, 1.0).apply(d)
    assert (u_far[1] + 2.0) / (u_far[0] + 2.0) == pytest.approx(2.0, rel=1e-12)


def test_a_very_long_warp_scale_is_the_stationary_kernel():
    e = np.linspace(7100.0, 7150.0, 101)
    std = np.full(e.size, 0.1)
    warped = rbf_kernel(e, std, 3.0, EnergyWarp(center_eV=7120.0, scale_eV=1e9))
    np.testing.assert_allclose(warped, rbf_kernel(e, std, 3.0), atol=1e-8)


@pytest.mark.parametrize(("center", "scale"), [(float("nan"), 5.0), (7120.0, 0.0), (7120.0, -3.0)])
def test_invalid_warps_are_refused_by_name(center, scale):
    with pytest.raises(ValueError, match=r"warp (center_eV|scale_eV)"):
        EnergyWarp(center_eV=center, scale_eV=scale)


def _gp_library(kernel: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(
        np.zeros(kernel.shape[0]), kernel + (5e-3) ** 2 * np.eye(kernel.shape[0]), n
    )


def test_fit_recovers_the_warp_a_library_was_drawn_from():
    """Spectra drawn from a GP with a known warp: the fitted center, scale and length scale come back."""
    e = np.linspace(7080.0, 7180.0, 201)
    std = 0.05 + 0.1 * np.exp(-(((e - 7125.0) / 20.0) ** 2))
    truth = EnergyWarp(center_eV=7120.0, scale_eV=6.0)
    lib = _gp_library(rbf_kernel(e, std, 2.0, truth), 200, seed=3)
    c, warp, info = fit_kernel(e, lib)
    assert warp is not None
    assert warp.center_eV == pytest.approx(7120.0, abs=2.0)
    assert warp.scale_eV == pytest.approx(6.0, rel=0.35)
    assert c == pytest.approx(2.0, rel=0.15)
    assert info["log_likelihood"] > info["log_likelihood_stationary"] + 5.0


def test_a_stationary_library_gets_a_practically_stationary_kernel():
    """Spectra drawn from the stationary kernel: whatever the fit returns has a nearly constant length scale."""
    e = np.linspace(7080.0, 7180.0, 201)
    std = 0.05 + 0.1 * np.exp(-(((e - 7125.0) / 20.0) ** 2))
    lib = _gp_library(rbf_kernel(e, std, 4.0), 200, seed=5)
    c, warp, info = fit_kernel(e, lib)
    local = np.full(e.size, c) if warp is None else warp.local_length_scale(e, c)
    assert local.max() / local.min() < 1.25
    assert np.median(local) == pytest.approx(4.0, rel=0.15)
    assert info["log_likelihood"] - info["log_likelihood_stationary"] < 1.0


def test_fit_kernel_options_and_errors():
    e = np.linspace(7100.0, 7150.0, 51)
    lib = _gp_library(rbf_kernel(e, np.full(e.size, 0.1), 3.0), 30, seed=1)
    c, warp, info = fit_kernel(e, lib, kernel="stationary")
    assert warp is None and info["log_likelihood"] == info["log_likelihood_stationary"]
    fixed = EnergyWarp(7125.0, 10.0)
    c, warp, _ = fit_kernel(e, lib, warp=fixed, length_scale_eV=2.5)
    assert warp == fixed and c == 2.5
    with pytest.raises(ValueError, match=r"kernel must be one of .* got 'matern'"):
        fit_kernel(e, lib, kernel="matern")
    with pytest.raises(ValueError, match="warp was given with kernel='stationary'"):
        fit_kernel(e, lib, kernel="stationary", warp=fixed)


@pytest.fixture(scope="module")
def fe_library():
    grid = fe_k_grid()
    aligned = aligned_library(load_library(), grid)
    return grid, list(aligned.names), np.asarray(aligned.matrix)


def test_the_warped_kernel_predicts_held_out_fe_k_spectra_better(fe_library):
    """Real data, held out: priors fitted on 3/4 of the bundled library, scored on the other quarter."""
    grid, names, lib = fe_library
    held = np.arange(len(names)) % 4 == 0
    train = tuple(np.asarray(names)[~held])
    e = grid[::4]
    scores = {}
    for kernel in ("warped", "stationary"):
        prior = GaussianProcessPrior.from_matrix(grid, lib[~held], names=train, kernel=kernel)
        scores[kernel] = library_log_likelihood(
            e,
            lib[held][:, ::4],
            prior.length_scale_eV,
            mean=prior.mean[::4],
            std=prior.std[::4],
            warp=prior.warp,
        )
        assert prior.summary()["kernel"] == kernel
    warped = GaussianProcessPrior.from_matrix(grid, lib[~held], names=train)
    assert warped.warp is not None
    assert 7105.0 < warped.warp.center_eV < 7150.0  # the sharpest features: rising edge and white line
    assert scores["warped"] > scores["stationary"] + 5.0


def test_plan_energies_records_the_kernel(tmp_path):
    out = tmp_path / "d.json"
    common = ["plan-energies", "--e-range", "7100:7150:0.25", "--n-points", "20", "--out", str(out)]
    assert main(common) == 0
    d = json.loads(out.read_text())
    assert d["prior"]["kernel"] == "warped" and set(d["prior"]["warp"]) == {"center_eV", "scale_eV"}
    assert d["prior"]["log_likelihood"] >= d["prior"]["log_likelihood_stationary"]
    assert main([*common, "--kernel", "stationary"]) == 0
    d = json.loads(out.read_text())
    assert d["prior"]["kernel"] == "stationary" and d["prior"]["warp"] is None
