"""Per-pixel linear baseline: removed exactly, and a map that does not depend on it."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import ArrayStack, matched_scores, pipeline_from_library
from xbeam_bluesky.clustering._baseline import baseline_basis, remove_baseline
from xbeam_bluesky.spectra import PhotonNoiseModel

NOISE = PhotonNoiseModel(gain=1.0, offset=0.0)


def test_a_line_is_removed_and_the_mean_kept(energies):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, energies.size))
    line = 0.3 + 0.002 * (energies - 7100.0)
    basis = baseline_basis(energies, 1)
    a, b = remove_baseline(s, basis), remove_baseline(s + line, basis)
    np.testing.assert_allclose(b - a, np.full_like(a, line.mean()), atol=1e-12)  # only the mean level remains
    np.testing.assert_allclose(a.mean(axis=1), s.mean(axis=1), atol=1e-12)
    # the residual is orthogonal to a straight line
    np.testing.assert_allclose(
        (a - a.mean(axis=1, keepdims=True)) @ (energies - energies.mean()), 0, atol=1e-9
    )


def test_bad_degree_and_too_few_energies_are_named(energies):
    with pytest.raises(ValueError, match="integer 0–3"):
        baseline_basis(energies, -1)
    with pytest.raises(ValueError, match="needs at least 4 energies"):
        baseline_basis(energies[:3], 1)


def test_a_per_pixel_slope_does_not_change_the_map(energies, library, noisy_absorbance):
    names = list(library)[:3]
    truth = np.repeat(np.arange(3), 40 * 40 // 3 + 1)[: 40 * 40].reshape(40, 40)
    mu = (0.4 + 0.8 * np.stack([library[n] for n in names])[truth]).transpose(2, 0, 1)
    rng = np.random.default_rng(3)
    slope = rng.uniform(-0.004, 0.004, size=(40, 40))  # OD per eV: up to ±0.18 OD over the 90 eV
    ramp = slope[None] * (energies - energies.mean())[:, None, None]
    plain = noisy_absorbance(mu, 1e4, NOISE, seed=1).astype(np.float32)
    sloped = noisy_absorbance(mu + ramp, 1e4, NOISE, seed=1).astype(np.float32)
    pipe = pipeline_from_library(energies, 1e4, NOISE, library)
    a = pipe.cluster([ArrayStack(plain)]).labels
    b = pipe.cluster([ArrayStack(sloped)]).labels
    assert matched_scores(truth, a, 3).macro_f1 > 0.99
    assert matched_scores(truth, b, 3).macro_f1 > 0.99
    # without the baseline removal the slopes split the phases
    old = pipeline_from_library(energies, 1e4, NOISE, library, baseline_degree=0).cluster(
        [ArrayStack(sloped)]
    )
    assert matched_scores(truth, old.labels, 3).macro_f1 < 0.99


@pytest.mark.parametrize("degree", [0, 1, 2])
def test_the_float32_block_reader_matches_the_float64_removal(energies, degree):
    from xbeam_bluesky.clustering import ArrayStack
    from xbeam_bluesky.clustering._baseline import BaselineRemoved

    rng = np.random.default_rng(5)
    stack = (0.5 + rng.normal(size=(energies.size, 12, 9)) * 0.1).astype(np.float32)
    stack[:, 3, 4] = np.nan  # a dead pixel stays non-finite
    before = stack.copy()
    basis = baseline_basis(energies, degree)
    got = BaselineRemoved(ArrayStack(stack), basis).read_rows(2, 10)
    want = remove_baseline(stack[:, 2:10].astype(np.float64), basis, axis=0)
    assert got.dtype == np.float32 and got.shape == (energies.size, 8, 9)
    np.testing.assert_allclose(got, want, atol=2e-6, equal_nan=True)
    assert (
        np.isnan(got[:, 1, 4]).all() and np.isfinite(np.delete(got.reshape(energies.size, -1), 13, 1)).all()
    )
    np.testing.assert_array_equal(stack, before)  # the source is not changed
