"""Evidence of many pixels: domains of two phases too close for single pixels are split; one phase never is."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import SplitInputError, split_clusters, standardize, standardized_noise

SHAPE = (64, 64)


def _two_phase_spectra(library: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    a = library["Fe2O3_rt_01"]
    return a, 0.85 * a + 0.15 * library["Fe3O4_rt_01"]  # close enough that single pixels are D ~ 1 apart


def _single_pixel_d(s1: np.ndarray, s2: np.ndarray, i0: float, noise) -> float:
    z1, z2 = standardize(s1), standardize(s2)
    tau = standardized_noise(s1, i0, noise)
    return float((1 - z1 @ z2) / np.sqrt(np.sum((z1 - z2) ** 2 * tau**2)))


def _i0_for_d(s1: np.ndarray, s2: np.ndarray, d: float, noise) -> float:
    return 1e4 * (d / _single_pixel_d(s1, s2, 1e4, noise)) ** 2  # D grows as sqrt(i0) (the offset aside)


def _stack(spectra: np.ndarray, phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """OD stack with a thickness map and per-pixel offsets."""
    yy, xx = np.indices(SHAPE)
    thickness = 0.8 + 0.4 * np.sin(yy / 9.0) * np.cos(xx / 13.0) + 0.1 * rng.random(SHAPE)
    offset = 0.2 * rng.random(SHAPE)
    return spectra[phase].transpose(2, 0, 1) * thickness + offset


def test_two_phases_below_single_pixel_resolution_are_split(library, noise, noisy_absorbance) -> None:
    s1, s2 = _two_phase_spectra(library)
    i0 = _i0_for_d(s1, s2, 1.0, noise)
    assert _single_pixel_d(s1, s2, i0, noise) == pytest.approx(1.0, rel=0.01)
    yy, xx = np.indices(SHAPE)
    phase = ((xx - 40) ** 2 + (yy - 30) ** 2 < 18**2).astype(int)  # a disc domain of phase 2
    mu = _stack(np.stack([s1, s2]), phase, np.random.default_rng(1))
    od = noisy_absorbance(mu, i0, noise, seed=2)
    labels = np.ones(SHAPE, np.int32)
    out, tests = split_clusters(od, labels, [1], names=("Fe2O3",))
    (t,) = tests
    assert t.split and t.new_label == 2 and t.statistic > 3 * t.threshold  # domain means differ ≫ their noise
    agree = max(np.mean((out == 2) == (phase == 1)), np.mean((out == 1) == (phase == 1)))
    assert agree > 0.95  # the split follows the domain (the disc is the smaller part)
    assert t.as_dict()["split"] is True and t.as_dict()["name"] == "Fe2O3"
    # a model error as large as the phases' difference (in standardized units) makes the same domains one phase
    gap = np.abs(standardize(s1) - standardize(s2))
    _, (t_model,) = split_clusters(od, labels, [1], model_error=gap.max())
    assert not t_model.split and t_model.statistic < t.statistic / 3


def test_one_phase_in_pure_noise_is_not_split(library, noise, noisy_absorbance) -> None:
    s1, s2 = _two_phase_spectra(library)
    i0 = _i0_for_d(s1, s2, 1.0, noise)
    phase = np.zeros(SHAPE, int)
    stats, splits = [], 0
    n_seeds = 20
    for seed in range(n_seeds):
        mu = _stack(np.stack([s1]), phase, np.random.default_rng(100 + seed))
        od = noisy_absorbance(mu, i0, noise, seed=seed)
        out, (t,) = split_clusters(od, np.ones(SHAPE, np.int32), [1], seed=seed)
        stats.append(t.statistic)
        splits += t.split
        assert t.split or np.all(out == 1)
    # α = 0.01: expected 0.2 false splits in 20; P(≥ 3) ≈ 0.001 if the test holds its level
    assert splits <= 2
    stats = np.asarray(stats)
    assert abs(stats.mean()) < 0.6 and 0.6 < stats.std() < 1.5  # T behaves as N(0, 1) under one phase


def test_small_or_absent_cluster_is_recorded_not_tested_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    od = rng.normal(1.0, 0.01, (10, *SHAPE))
    labels = np.ones(SHAPE, np.int32)
    labels[:3, :3] = 2  # 9 pixels: too few to test
    out, tests = split_clusters(od, labels, [2, 3])
    assert [t.cluster for t in tests] == [2, 3]
    assert all(not t.split and not np.isfinite(t.statistic) for t in tests)
    assert tests[0].n_pixels == 9 and tests[1].n_pixels == 0 and np.array_equal(out, labels)
    with pytest.raises(SplitInputError, match="shape"):
        split_clusters(od[:, :5], labels, [1])
    with pytest.raises(SplitInputError, match="energies"):
        split_clusters(od[:3], labels, [1])
    with pytest.raises(SplitInputError, match="window"):
        split_clusters(od, labels, [1], window=4)
    with pytest.raises(SplitInputError, match="chemical"):
        split_clusters(od, labels, [0])
    with pytest.raises(SplitInputError, match="model_error"):
        split_clusters(od, labels, [1], model_error=-1.0)
