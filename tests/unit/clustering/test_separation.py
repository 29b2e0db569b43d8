"""The separation statistic D against closed forms and a Monte Carlo of the assignment it predicts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from xbeam_bluesky.clustering import (
    directed_separation,
    separation_matrix,
    standardize,
    standardized_noise,
)


def test_standardize_gives_pearson_correlation() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(40), rng.random(40)
    za, zb = standardize(np.vstack([a, b]))
    assert za.mean() == pytest.approx(0, abs=1e-12)
    assert np.linalg.norm(za) == pytest.approx(1)
    assert za @ zb == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert np.all(standardize(np.ones(5)) == 0)


def test_constant_noise_closed_form() -> None:
    # 1 − z_p·z_q = ‖z_p − z_q‖²/2, so with constant τ: D = ‖z_p − z_q‖ / (2τ)
    rng = np.random.default_rng(2)
    zp, zq = standardize(rng.random((2, 30)))
    tau = 0.01
    d = directed_separation(zp, zq, np.full(30, tau))
    assert d == pytest.approx(np.linalg.norm(zp - zq) / (2 * tau))
    assert directed_separation(zp, zp, np.full(30, tau)) == 0


def test_standardized_noise_matches_hand_propagation(noise) -> None:
    mu = np.linspace(0.3, 1.5, 20)
    i0 = 5e4
    i = i0 * np.exp(-mu)
    var = (9.31 * i0 - 63) / i0**2 + (9.31 * i - 63) / i**2
    expected = np.sqrt(var) / np.linalg.norm(mu - mu.mean())
    assert np.allclose(standardized_noise(mu, i0, noise), expected)
    with pytest.raises(ValueError, match="flat"):
        standardized_noise(np.ones(10), i0, noise)


def test_phi_of_minus_d_predicts_misassignment(library, noise) -> None:
    # Two close spectra: the fraction of noisy p that correlate better with q is ≈ Φ(−D(p→q)).
    p = 0.5 + library["Fe2O3_rt_01"]
    q = 0.5 + 0.7 * library["Fe2O3_rt_01"] + 0.3 * library["Fe3O4_rt_01"]
    i0 = 2e4
    z = standardize(np.vstack([p, q]))
    d = directed_separation(z[0], z[1], standardized_noise(p, i0, noise))
    assert 0.8 < d < 2.5  # a case where the probability is measurable
    rng = np.random.default_rng(3)
    sigma = np.sqrt(noise.var_absorbance(i0, p))
    x = standardize(p + sigma * rng.standard_normal((40000, p.size)))
    confused = np.mean(x @ z[1] > x @ z[0])
    assert confused == pytest.approx(norm.cdf(-d), abs=0.012)


def test_separation_matrix_symmetric_min(library, noise) -> None:
    mu = 0.4 + np.vstack([library["Fe2O3_rt_01"], library["Fe3O4_rt_01"], library["FeS2_rt_01"]])
    z, tau = standardize(mu), standardized_noise(mu, 1e4, noise)
    d = separation_matrix(z, tau)
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    assert d[0, 1] == pytest.approx(
        min(directed_separation(z[0], z[1], tau[0]), directed_separation(z[1], z[0], tau[1]))
    )
