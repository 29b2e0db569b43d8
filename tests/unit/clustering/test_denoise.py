"""Spatial denoising: isolated noise cleared and refilled, a compact 0.1 % region kept."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import denoise_labels, pure_regions


def _scene() -> tuple[np.ndarray, np.ndarray]:
    truth = np.ones((200, 200), np.int32)
    truth[:, 120:] = 2
    yy, xx = np.mgrid[:200, :200]
    truth[(yy - 60) ** 2 + (xx - 50) ** 2 <= 12] = 3  # 37 px ≈ 0.1 % of the area
    return truth, yy


def test_isolated_noise_removed_compact_minority_kept() -> None:
    truth, _ = _scene()
    assert 0.0008 < np.mean(truth == 3) < 0.0011
    rng = np.random.default_rng(0)
    noisy = truth.copy()
    flip = rng.random(truth.shape) < 0.03
    noisy[flip] = rng.integers(1, 5, flip.sum())  # 3 % salt noise, including a label (4) that is all noise
    noisy[0, 0] = 0  # a masked pixel stays 0
    out = denoise_labels(noisy)
    kept = (out == 3) & (truth == 3)
    assert kept.sum() >= 0.95 * (truth == 3).sum()  # a pixel flipped to the surrounding label may stay so
    assert not np.any((out == 3) & (truth != 3))
    assert not np.any(out == 4)
    assert out[0, 0] == 0
    assert np.mean(out[1:] == truth[1:]) > 0.999


def test_window_and_threshold_configurable() -> None:
    truth, _ = _scene()
    small = truth.copy()
    small[(np.arange(200)[:, None] - 150) ** 2 + (np.arange(200)[None, :] - 30) ** 2 <= 2] = 3  # a 3×3 block
    assert np.sum(denoise_labels(small) == 3) == np.sum(truth == 3)  # too small for a 5×5 seed: cleared
    assert np.sum(denoise_labels(small, window=3, min_count=5) == 3) == np.sum(truth == 3) + 9


def test_pure_regions_flood_fill_reaches_thin_tails() -> None:
    mask = np.zeros((30, 30), bool)
    mask[5:10, 5:10] = True  # a 5×5 block: the centre is a seed
    mask[10:25, 9] = True  # a 1-px wide tail 8-connected to it
    mask[20, 20] = True  # isolated
    kept = pure_regions(mask)
    assert kept[5:10, 5:10].all() and kept[10:25, 9].all() and not kept[20, 20]
    with pytest.raises(ValueError, match="odd"):
        pure_regions(mask, window=4)
    with pytest.raises(ValueError, match="min_count"):
        pure_regions(mask, min_count=26)


@pytest.mark.parametrize("window", [1, 3, 5, 17])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 40), (40, 6)])
def test_window_counts_equal_a_direct_window_sum(window: int, shape: tuple[int, int]) -> None:
    """The shifted-sum window counts equal the count of mask pixels in each zero-padded window, summed directly."""
    from xbeam_bluesky.clustering._denoise import _window_counts

    mask = np.random.default_rng(window * 100 + shape[0]).random(shape) < 0.5
    h = window // 2
    padded = np.pad(mask, h).astype(int)
    expected = np.array(
        [[padded[y : y + window, x : x + window].sum() for x in range(shape[1])] for y in range(shape[0])]
    )
    assert np.array_equal(_window_counts(mask, window).astype(int), expected)
