"""Noise models for any detector: photon, sCMOS and estimated from the data (one var_absorbance interface)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xbeam_bluesky.clustering import photon_coefficients
from xbeam_bluesky.spectra import (
    EstimatedNoiseModel,
    PhotonNoiseModel,
    bright_region_i0,
    estimate_noise,
    noise_model,
    optical_density,
    read_stack,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "stxm_FeL_71214078"


def test_photon_and_scmos_models():
    photon = noise_model("photon", flat_frames=4)
    assert (photon.gain, photon.offset, photon.flat_frames) == (1.0, 0.0, 4)
    # Var(μ) = 1/(4 I0) + e^μ / I0 for Poisson counts and 4 averaged references
    assert photon.var_absorbance(1000.0, 1.0) == pytest.approx(1 / 4000 + np.e / 1000)
    assert noise_model("scmos") == PhotonNoiseModel()
    with pytest.raises(ValueError, match="expected 'photon', 'scmos' or 'estimate'"):
        noise_model("ccd?")


def _poisson_stack(i0: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    e = np.linspace(700.0, 730.0, 100)
    mu = 0.3 + 0.8 / (1 + np.exp(-(e[:, None] - 708.0))) + rng.uniform(0, 1, (1, 5000))
    return e, mu, -np.log(rng.poisson(i0 * np.exp(-mu)) / i0)


@pytest.mark.parametrize(("i0", "rel"), [(500.0, 0.2), (2000.0, 0.12), (20000.0, 0.12)])
def test_estimate_recovers_poisson_noise(i0: float, rel: float):
    # at 500 counts and μ = 2 (68 transmitted counts) -ln N is skewed and its robust spread reads ~14 % low
    e, _, od = _poisson_stack(i0)
    model = estimate_noise(od, e)
    for level in (0.5, 1.0, 2.0):
        truth = np.exp(level) / i0  # noiseless reference, Poisson transmitted counts
        assert model.var_absorbance(1.0, level) == pytest.approx(truth, rel=rel)
    if i0 >= 2000:  # at 500 counts part of the variance goes into the constant term (1/b = 624)
        assert model.effective_counts == pytest.approx(i0, rel=rel)


def test_estimate_is_a_photon_form_the_clustering_accepts():
    model = EstimatedNoiseModel(a=1e-5, b=2e-4, i0_ref=400.0)
    a, b, c = photon_coefficients(model, 800.0)  # other counts scale the variance as photon noise does
    assert (a, b, c) == pytest.approx((0.5e-5, 1e-4, 0.0), abs=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        EstimatedNoiseModel(a=-1.0, b=0.0)


def test_estimate_on_the_real_stxm_stack():
    stack = read_stack(DATA / "71214078.nxs")
    i0 = bright_region_i0(stack.frames)
    model = estimate_noise(optical_density(stack.frames, i0.counts), stack.energies)
    # the shared README measures 0.015 OD pixel-to-pixel noise in flat regions
    sigma = np.sqrt(model.var_absorbance(1.0, 0.3))
    assert 0.010 < sigma < 0.018
    # far below photon noise at the recorded counts (~400 per pixel): the counts are not photons
    assert model.effective_counts > 10 * i0.counts.mean()


def test_estimate_rejects_bad_input():
    with pytest.raises(ValueError, match="no pixel has finite values"):
        estimate_noise(np.full((5, 4, 4), np.nan), np.arange(5.0) + 700)
    with pytest.raises(ValueError, match="expected ≥ 3"):
        estimate_noise(np.zeros((1, 4, 4)), np.array([700.0]))
