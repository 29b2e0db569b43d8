"""The one frame correction: dark, flat, saturation mask; frame means added live or read back alike."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.spectra import FrameMean, PhotonNoiseModel, correct_frame


def test_dark_and_flat_give_the_beer_lambert_absorbance() -> None:
    # a known μt map, a non-uniform flat and a dark: counts = dark + (flat - dark) e^−μt (noiseless)
    rng = np.random.default_rng(0)
    mu = rng.uniform(0.0, 3.0, (6, 7))
    dark = rng.uniform(90.0, 110.0, (6, 7))
    flat = dark + rng.uniform(8000.0, 12000.0, (6, 7))
    counts = dark + (flat - dark) * np.exp(-mu)
    out = correct_frame(counts, flat, dark)
    assert out.dtype == np.float32 and out.shape == mu.shape
    np.testing.assert_allclose(out, mu, atol=2e-5)


def test_saturated_empty_and_dead_pixels_are_nan_never_clipped() -> None:
    counts = np.array([[65535, 100, 99, 5100], [600, 0, 65534, 5100]], dtype=np.uint16)
    flat = np.array([[60000.0, 60000.0, 60000.0, 100.0], [60000.0, 60000.0, 65000.0, 5100.0]])
    out = correct_frame(counts, flat, dark=100.0)
    expected = np.array(
        [[np.nan, np.nan, np.nan, np.nan], [np.log(59900 / 500), np.nan, np.log(64900 / 65434), 0.0]]
    )
    # saturated (65535), sample at the dark (100 − 100 = 0), below it (99), flat at the dark: NaN; the rest exact
    np.testing.assert_allclose(out, expected, rtol=1e-6, equal_nan=True)
    # no saturation mask: a full-scale reading is a value
    assert np.isfinite(correct_frame(np.array([65535.0]), np.array([70000.0]), saturation=None)).all()


def test_shapes_that_do_not_broadcast_are_named() -> None:
    with pytest.raises(ValueError, match=r"counts of shape \(4, 4\), flat \(3, 3\)"):
        correct_frame(np.ones((4, 4)), np.ones((3, 3)))


def test_absorbance_variance_matches_the_noise_model() -> None:
    # photon counting, 4 averaged flats: Var(μt) = 1/(4 I0) + 1/(I0 e^−μt) (METHODS.md §1)
    model = PhotonNoiseModel(gain=1.0, offset=0.0, flat_frames=4)
    rng = np.random.default_rng(3)
    i0, mu_t = 20_000.0, 0.4
    flats = FrameMean.of(model.sample_counts(np.full((4, 100_000), i0), rng))
    images = model.sample_counts(np.full(100_000, i0 * np.exp(-mu_t)), rng)
    measured = correct_frame(images, flats)
    assert measured.mean() == pytest.approx(mu_t, abs=2e-3)
    assert measured.var() == pytest.approx(1 / (4 * i0) + 1 / (i0 * np.exp(-mu_t)), rel=0.03)


def test_frame_mean_live_equals_read_back_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 65535, (5, 16, 16)).astype(np.uint16)
    live = FrameMean()
    for f in frames:
        live.add(f)
    assert live.n == 5
    np.testing.assert_array_equal(live.mean(), FrameMean.of(frames))
    np.testing.assert_allclose(live.mean(), frames.mean(axis=0), rtol=1e-7)
    with pytest.raises(ValueError, match=r"frame of shape \(8, 8\)"):
        live.add(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="no frame added"):
        FrameMean().mean()
