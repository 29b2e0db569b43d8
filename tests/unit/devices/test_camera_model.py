"""Detector physics of the simulated sCMOS: Beer–Lambert means, Poisson + read-noise variance, saturation."""

import numpy as np
import pytest

from xbeam_bluesky.devices.sim.camera_model import SATURATION_ADU, CameraModel


def _frames(model: CameraModel, mu_t: float | None, exposure: float, n: int, seed: int = 0, shutter=True):
    rng = np.random.default_rng(seed)
    absorbance = None if mu_t is None else np.full(model.shape, mu_t, dtype=np.float32)
    return np.stack(
        [model.sample_frame(absorbance, exposure, rng, shutter_open=shutter) for _ in range(n)]
    ).astype(np.float64)


def test_frames_are_uint16_of_the_configured_shape() -> None:
    model = CameraModel(shape=(12, 20))
    frame = model.sample_frame(None, 0.1, np.random.default_rng(0))
    assert frame.shape == (12, 20) and frame.dtype == np.uint16


@pytest.mark.parametrize("mu_t", [0.0, 0.5, 2.0])
def test_mean_follows_beer_lambert(mu_t: float) -> None:
    model = CameraModel(shape=(8, 8), photon_flux=5.0e4, gain=9.31, read_noise=2.0, dark_offset=100.0)
    exposure, n = 0.1, 400
    frames = _frames(model, mu_t, exposure, n)
    photons = 5.0e4 * exposure * model.flat_field() * np.exp(-mu_t)
    expected = 100.0 + 9.31 * photons
    # Standard error of the per-pixel mean: sqrt(gain² λ + σ²) / sqrt(n); allow 5 σ.
    sem = np.sqrt(9.31**2 * photons + 4.0) / np.sqrt(n)
    assert np.all(np.abs(frames.mean(axis=0) - expected) < 5 * sem)
    # Transmission from dark-subtracted means: exp(−μt), independent of the flat field.
    flats = _frames(model, None, exposure, n, seed=1)
    ratio = (frames.mean(axis=0) - 100.0) / (flats.mean(axis=0) - 100.0)
    assert ratio.mean() == pytest.approx(np.exp(-mu_t), rel=0.01)


def test_variance_is_gain_times_signal_plus_read_noise() -> None:
    model = CameraModel(shape=(16, 16), photon_flux=2.0e4, gain=4.0, read_noise=3.0, dark_offset=200.0)
    frames = _frames(model, 0.3, 0.05, 600)
    signal = frames.mean(axis=0) - 200.0
    variance = frames.var(axis=0, ddof=1)
    predicted = 4.0 * signal + 9.0 + 1 / 12  # Poisson photons × gain², read noise², rounding
    # Relative standard error of a sample variance is sqrt(2/(n−1)) ≈ 5.8 %; averaged over 256 pixels.
    assert (variance / predicted).mean() == pytest.approx(1.0, abs=0.02)
    model_var = model.noise_model().var_counts(signal)
    np.testing.assert_allclose(model_var, predicted - 1 / 12, rtol=1e-9)


def test_photon_statistics_are_poisson_at_low_counts() -> None:
    # gain 1, no read noise: counts above the offset are exactly Poisson (mean = variance, integer).
    model = CameraModel(shape=(32, 32), photon_flux=30.0, gain=1.0, read_noise=0.0, dark_offset=10.0)
    frames = _frames(model, None, 0.1, 300) - 10.0
    assert np.all(frames == np.round(frames)) and frames.min() >= 0
    lam = 3.0 * model.flat_field()
    assert frames.mean() == pytest.approx(lam.mean(), rel=0.01)
    assert frames.var(axis=0, ddof=1).mean() == pytest.approx(lam.mean(), rel=0.03)


def test_dark_frames_have_offset_and_read_noise_only() -> None:
    model = CameraModel(shape=(32, 32), dark_offset=100.0, read_noise=2.5)
    darks = _frames(model, 0.0, 1.0, 100, shutter=False)
    assert darks.mean() == pytest.approx(100.0, abs=0.05)
    assert darks.std() == pytest.approx(np.sqrt(2.5**2 + 1 / 12), rel=0.02)


def test_saturation_clips_at_65535() -> None:
    model = CameraModel(shape=(8, 8), photon_flux=1.0e9)
    frame = model.sample_frame(None, 1.0, np.random.default_rng(0))
    assert (frame == SATURATION_ADU).all()


def test_i0_counts_is_the_mean_open_beam_signal() -> None:
    model = CameraModel(shape=(64, 64))
    flats = _frames(model, None, 0.1, 20)
    assert (flats.mean() - model.dark_offset) == pytest.approx(model.i0_counts(0.1), rel=0.005)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="shape"):
        CameraModel(shape=(0, 10))
    with pytest.raises(ValueError, match="gain"):
        CameraModel(gain=0.0)
