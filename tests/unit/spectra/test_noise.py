"""Photon-noise model: analytic variances and Monte-Carlo checks."""

import numpy as np
import pytest

from xbeam_bluesky.spectra import PhotonNoiseModel, correct_frame


def test_variance_model_is_clipped_at_zero():
    model = PhotonNoiseModel()
    np.testing.assert_allclose(model.var_counts([0.0, 1.0, 100.0]), [0.0, 0.0, 9.31 * 100 - 63.0])


def test_poisson_sampling_mean_and_variance():
    rng = np.random.default_rng(1)
    for model in (PhotonNoiseModel(gain=1.0, offset=0.0), PhotonNoiseModel(gain=9.31, offset=-63.0)):
        draws = model.sample_counts(np.full(200_000, 5000.0), rng)
        assert draws.mean() == pytest.approx(5000.0, rel=3e-3)
        # Photon shot noise only: Var = gain * mean (the negative fitted offset is not simulated).
        assert draws.var() == pytest.approx(model.gain * 5000.0, rel=0.02)


def test_absorbance_variance_matches_monte_carlo():
    model = PhotonNoiseModel(gain=1.0, offset=0.0)
    rng = np.random.default_rng(2)
    i0, mu_t = 20_000.0, 1.3
    flats = model.sample_counts(np.full(100_000, i0), rng)
    images = model.sample_counts(np.full(100_000, i0 * np.exp(-mu_t)), rng)
    measured = correct_frame(images, flats)
    assert measured.mean() == pytest.approx(mu_t, abs=2e-3)
    assert measured.var() == pytest.approx(model.var_absorbance(i0, mu_t), rel=0.03)
    # An averaged (noiseless) flat removes the I0 term.
    assert model.var_absorbance(i0, mu_t, i0_var=0.0) == pytest.approx(1 / (i0 * np.exp(-mu_t)))


def test_gain_must_be_positive():
    with pytest.raises(ValueError, match="gain=0"):
        PhotonNoiseModel(gain=0)


def test_averaged_flats_reduce_the_i0_term_as_monte_carlo():
    n_flats = 4
    model = PhotonNoiseModel(gain=1.0, offset=0.0, flat_frames=n_flats)
    rng = np.random.default_rng(3)
    i0, mu_t = 20_000.0, 0.4  # a thin sample, where the I0 term is a large part of the variance
    flats = model.sample_counts(np.full((n_flats, 100_000), i0), rng).mean(axis=0)
    images = model.sample_counts(np.full(100_000, i0 * np.exp(-mu_t)), rng)
    measured = correct_frame(images, flats)
    assert measured.var() == pytest.approx(model.var_absorbance(i0, mu_t), rel=0.03)
    expected = 1 / (n_flats * i0) + 1 / (i0 * np.exp(-mu_t))  # Poisson: Var(N)/N² = 1/N
    assert model.var_absorbance(i0, mu_t) == pytest.approx(expected)
    with pytest.raises(ValueError, match="flat_frames=0"):
        PhotonNoiseModel(flat_frames=0)
