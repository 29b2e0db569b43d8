"""Denoising scaled to the pixel and feature size, keeping confident regions and the no-absorber class."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from xbeam_bluesky.clustering import DenoiseInputError, denoise_labels, denoise_window, novel_fraction_check


def _disc(shape: tuple[int, int], centre: tuple[int, int], diameter_px: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0] + 0.5) ** 2 + (xx - centre[1] + 0.5) ** 2 <= (diameter_px / 2) ** 2


def test_window_from_pixel_and_feature_size_keeps_the_feature() -> None:
    assert denoise_window(1.0, 7.1) == (5, 23)  # the published window for 7-pixel features
    assert denoise_window(0.08, 0.4) == (3, 8)  # 5-pixel STXM features at 80 nm
    assert denoise_window(1.0, 2.0) == (1, 1)  # features of ≤ 2 pixels: nothing can be cleared
    for diameter in (4.5, 5.0, 6.0, 8.0, 12.0):
        labels = np.ones((60, 60), np.int32)
        disc = _disc(labels.shape, (30, 30), diameter)
        labels[disc] = 2
        window, count = denoise_window(0.5, 0.5 * diameter)
        assert np.array_equal(denoise_labels(labels, window=window, min_count=count), labels)
    labels = np.ones((60, 60), np.int32)
    labels[_disc(labels.shape, (30, 30), 5.0)] = 2
    assert not np.any(denoise_labels(labels) == 2)  # the fixed 5×5 rule erases a 5-pixel disc
    with pytest.raises(DenoiseInputError, match="pixel_um"):
        denoise_window(0.0, 1.0)
    with pytest.raises(DenoiseInputError, match="feature_um"):
        denoise_window(1.0, float("nan"))


def test_confident_compact_region_is_kept_noise_is_not() -> None:
    rng = np.random.default_rng(3)
    labels = np.ones((200, 200), np.int32)
    labels[:, 120:] = 2
    confidence = np.abs(
        rng.normal(0.0, 1.0, labels.shape)
    )  # margins of a pixel within noise of both clusters
    flip = rng.random(labels.shape) < 0.03
    labels[flip] = rng.integers(1, 4, flip.sum())  # salt noise, margins |N(0, 1)|
    real = _disc(labels.shape, (60, 50), 4.0)  # 12 pixels of a real phase: every margin ~3 (Z ≈ 10)
    labels[real] = 3
    confidence[real] = rng.normal(3.0, 1.0, real.sum()).clip(0)
    weak = _disc(labels.shape, (150, 60), 4.0)  # same size, margins of noise
    labels[weak] = 3
    out = denoise_labels(labels, confidence=confidence)
    assert np.all(out[real] == 3)
    assert not np.any(out[weak] == 3)
    assert np.sum((out == 3) & ~real) <= 2  # a salt pixel survives only by chance at α = 0.01 (familywise)
    published = denoise_labels(labels)
    assert not np.any(published[real] == 3)  # the published rule alone erases it
    with pytest.raises(DenoiseInputError, match="confidence"):
        denoise_labels(labels, confidence=confidence[:10])


def test_no_absorber_pixels_are_fixed_and_never_spread() -> None:
    labels = np.ones((80, 80), np.int32)
    labels[:, 50:] = 2
    no_fe = np.zeros(labels.shape, bool)
    no_fe[:, :20] = True
    no_fe[40, 35] = True  # one isolated no-Fe pixel inside cluster 1
    no_fe[10, 5] = False
    labels[no_fe] = 3
    labels[10, 5] = 2  # an isolated chemical pixel among no-Fe
    labels[60, 30] = 2  # an isolated chemical pixel in cluster 1
    out = denoise_labels(labels, fixed=no_fe)
    assert np.array_equal(out[no_fe], labels[no_fe])  # kept, even the isolated one
    assert np.all(out[~no_fe] != 3)  # never received by a chemical pixel
    assert out[60, 30] == 1 and out[10, 5] == 1  # noise cleared, refilled from the nearest chemical survivor
    with pytest.raises(DenoiseInputError, match="fixed"):
        denoise_labels(labels, fixed=no_fe[:5])


def test_novel_fraction_warning(caplog: pytest.LogCaptureFixture) -> None:
    valid = np.ones((10, 10), bool)
    valid[0] = False
    novel = np.zeros((10, 10), bool)
    novel[0] = True  # invalid pixels do not count
    novel[1:3] = True  # 20 of 90 valid
    with caplog.at_level(logging.WARNING):
        check = novel_fraction_check(novel, valid)
    assert check == {"novel_fraction": pytest.approx(20 / 90), "novel_warning": True}
    assert "novel" in caplog.text
    novel[2] = False
    assert novel_fraction_check(novel, valid)["novel_warning"] is False
