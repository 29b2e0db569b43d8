"""Model error: recovered from the data's spread beyond photon noise, and it bounds the grid."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import (
    estimate_model_error,
    model_error_floor,
    standardize,
    standardized_noise,
)


def _phase_pixels(spectrum, n, i0, noise, eps, rng):
    """n pixels of one phase: photon noise plus a known model error ε (fraction of the spread) per energy."""
    mu = 0.5 + spectrum
    spread = np.linalg.norm(mu - mu.mean())
    clean = mu + rng.standard_normal((n, mu.size)) * eps * spread
    sigma = np.sqrt(noise.var_absorbance(i0, clean))
    return clean + rng.standard_normal(clean.shape) * sigma


@pytest.mark.parametrize("eps_true", [0.004, 0.01])
def test_estimate_recovers_injected_model_error(library, noise, eps_true):
    rng = np.random.default_rng(0)
    x = _phase_pixels(library["Fe2O3_rt_01"], 20000, 1e5, noise, eps_true, rng)
    z = standardize(x)
    tau = standardized_noise(x, 1e5, noise)
    center = standardize(z.mean(axis=0))[None]
    eps = estimate_model_error(z, tau, center, np.zeros(len(x), int), floor=0.0)
    # the estimate is on the standardized scale: ε/‖·‖ of the clean spectrum's spread, within 10 %
    assert np.median(eps) == pytest.approx(eps_true, rel=0.1)


def test_photon_noise_only_gives_the_floor(library, noise):
    rng = np.random.default_rng(1)
    x = _phase_pixels(library["Fe3O4_rt_01"], 5000, 3000, noise, 0.0, rng)
    z, tau = standardize(x), standardized_noise(x, 3000, noise)
    eps = estimate_model_error(z, tau, standardize(z.mean(axis=0))[None], np.zeros(len(x), int))
    floor = model_error_floor(x.shape[1])
    # the median of 5000 χ²₁ draws scatters by a few %: ε beyond the floor stays a small fraction of photon noise
    assert np.all(eps <= np.maximum(floor, 0.35 * np.median(tau, axis=0)))
    assert np.mean(eps == floor) > 0.6


def test_separation_saturates_with_dose(library, noise):
    """With ε the separation D of two spectra tends to (1 − r) / (ε ‖z_p − z_q‖) as photon noise vanishes
    (analytic), so the grid's cell size stops shrinking and the number of sites is bounded at any dose."""
    from xbeam_bluesky.clustering import separation_matrix

    mu = 0.5 + np.stack([library["Fe2O3_rt_01"], library["larch_FeDem_Goerthite"]])
    z = standardize(mu)
    eps = 0.003
    limit = (1.0 - z[0] @ z[1]) / (eps * np.linalg.norm(z[0] - z[1]))
    d = [separation_matrix(z, standardized_noise(mu, i0, noise, eps))[0, 1] for i0 in (1e4, 1e6, 1e9)]
    photon_only = [separation_matrix(z, standardized_noise(mu, i0, noise))[0, 1] for i0 in (1e4, 1e6, 1e9)]
    assert d[0] < d[1] < d[2] <= limit * (1 + 1e-9)
    assert d[2] == pytest.approx(limit, rel=1e-3)
    assert photon_only[2] > 100 * photon_only[0]  # without ε, D grows as sqrt(dose) without bound


def test_bad_model_error_is_named():
    with pytest.raises(ValueError, match="model_error"):
        standardized_noise(np.linspace(0, 1, 5), 1e4, None, model_error=[-1.0, 0, 0, 0, 0])  # type: ignore[arg-type]


def test_estimate_solves_the_median_equation(library, noise):
    """The closed form is the root of median_p[r²/(v + ε²)] = median(χ²₁) per energy, found here independently by
    root-finding on the defining equation (odd n: the median is one ratio, so the root is exact)."""
    from scipy.optimize import brentq
    from scipy.stats import chi2

    rng = np.random.default_rng(3)
    x = _phase_pixels(library["Fe2O3_rt_01"], 4001, 2e4, noise, 0.006, rng)
    z, tau = standardize(x), standardized_noise(x, 2e4, noise)
    c = standardize(z.mean(axis=0))
    eps = estimate_model_error(z, tau, c[None], np.zeros(len(x), int), floor=0.0)
    r2 = (z - c) ** 2
    v = tau**2 + c**2 * ((c**2 * tau**2).sum(axis=1))[:, None]
    m = chi2.median(1)
    checked = 0
    for i in range(z.shape[1]):
        g = lambda e2, i=i: np.median(r2[:, i] / (v[:, i] + e2)) - m  # noqa: E731
        if g(0.0) <= 0:  # photon noise explains this channel: the estimate is 0 (floor 0)
            assert eps[i] == 0.0
            continue
        root = brentq(g, 0.0, float(np.max(r2[:, i])) / m, xtol=1e-16, rtol=1e-12)
        assert eps[i] ** 2 == pytest.approx(root, rel=1e-6)
        checked += 1
    assert checked > z.shape[1] // 2  # most channels carry the injected model error


def test_estimate_ignores_unused_pixels_and_keeps_the_floor(library, noise):
    rng = np.random.default_rng(4)
    x = _phase_pixels(library["Fe3O4_rt_01"], 3000, 1e4, noise, 0.01, rng)
    z, tau = standardize(x), standardized_noise(x, 1e4, noise)
    c = standardize(z.mean(axis=0))[None]
    labels = np.zeros(len(x), int)
    labels[::2] = -1  # half the pixels not used
    used = estimate_model_error(z[1::2], tau[1::2], c, np.zeros(len(x) // 2, int), floor=0.0)
    assert np.array_equal(estimate_model_error(z, tau, c, labels, floor=0.0), used)
    floor = np.full(z.shape[1], 0.5)  # a floor above the spread wins everywhere
    assert np.array_equal(estimate_model_error(z, tau, c, labels, floor=floor), floor)
    assert np.array_equal(estimate_model_error(z, tau, c, np.full(len(x), -1), floor=floor), floor)
