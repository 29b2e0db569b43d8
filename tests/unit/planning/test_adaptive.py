"""Cluster spectra of a first pass as candidates of the second design: normalization and reconstruction."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.planning import MapDesignError, TransmissionNoise, cluster_candidates, measured_units


def test_cluster_spectra_are_normalized_at_the_ends_and_reconstructed(small_prior) -> None:
    e_grid = small_prior.energies_eV
    truth = np.stack([small_prior.mean, 1.0 / (1.0 + np.exp(-(e_grid - 7117.0) / 1.5))])
    idx = np.array([0, 20, 26, 30, 34, 40, 50, 80])  # the grid's ends and the edge
    offset, jump = np.array([0.4, 0.7]), np.array([0.9, 0.6])
    absorbance = offset[:, None] + jump[:, None] * truth[:, idx]
    noise = TransmissionNoise(i0_counts_per_s=2e4)
    c = cluster_candidates(e_grid[idx], absorbance, ["p", "q"], small_prior, noise, np.full(idx.size, 0.2))
    assert c.names == ("p", "q") and c.kind == ("data", "data")
    # offset and jump removed (the ends are ~0 and ~1 of the true spectra), the edge shift kept on the whole grid
    np.testing.assert_allclose(c.spectra[:, idx], truth[:, idx], atol=0.01)
    assert np.sqrt(np.mean((c.spectra - truth) ** 2, axis=1)).max() < 0.05


def test_fewer_than_two_usable_clusters_are_named() -> None:
    from xbeam_bluesky.planning import GaussianProcessPrior

    e = np.linspace(7100.0, 7140.0, 41)
    prior = GaussianProcessPrior(energies_eV=e, mean=1 / (1 + np.exp(-(e - 7115))), std=np.full(41, 0.1),
                                 length_scale_eV=3.0, names=("a",))  # fmt: skip
    y = np.stack([np.full(5, np.nan), 0.5 + prior.mean[[0, 10, 15, 20, 40]]])
    with pytest.raises(MapDesignError, match=r"1 usable of 2 .*cluster 1"):
        cluster_candidates(
            e[[0, 10, 15, 20, 40]], y, ["cluster 1", "cluster 2"], prior, TransmissionNoise(), 0.1
        )


def test_measured_units_adds_repeats_on_the_grid() -> None:
    grid = np.arange(7100.0, 7105.0, 1.0)
    units = measured_units(grid, [7101.0, 7103.0, 7101.0], [0.1, 0.25, 0.05], 0.05)
    np.testing.assert_array_equal(units, [0, 3, 0, 5, 0])


def test_second_pass_falls_back_to_the_library_when_the_first_pass_gives_one_cluster(small_prior) -> None:
    from xbeam_bluesky.planning import phase_candidates, second_pass_candidates

    e_grid = small_prior.energies_eV
    step = 1.0 / (1.0 + np.exp(-(e_grid - 7117.0) / 1.5))
    library = phase_candidates(np.stack([small_prior.mean, step]), ["lib a", "lib b"])
    idx = np.array([0, 20, 26, 30, 40, 80])
    noise = TransmissionNoise(i0_counts_per_s=2e4)
    one = (0.4 + 0.8 * step[idx])[None]
    got, source = second_pass_candidates(e_grid[idx], one, ["cluster 1"], small_prior, noise, 0.2, library)
    assert got is library and source.startswith("library (") and "1 usable of 1" in source
    two = np.stack([0.4 + 0.8 * small_prior.mean[idx], 0.4 + 0.8 * step[idx]])
    got, source = second_pass_candidates(e_grid[idx], two, ["c1", "c2"], small_prior, noise, 0.2, library)
    assert source == "first-pass clusters and library"
    assert got.names == ("c1", "c2", "lib a", "lib b") and got.kind == ("data", "data", "library", "library")
    # c1 is the prior mean, which its reconstruction returns exactly: within the model error of "lib a", one phase
    assert "c1/lib a" in got.phase_names


def test_second_pass_keeps_library_phases_a_merged_first_pass_hid(small_prior) -> None:
    """A first pass that merged two phases (its cluster is their mean) and found a third: the second design must
    still separate the two merged phases, and the merged spectrum from both."""
    from xbeam_bluesky.planning import phase_candidates, second_pass_candidates

    e_grid = small_prior.energies_eV
    a = 1.0 / (1.0 + np.exp(-(e_grid - 7114.0) / 1.5))
    b = 1.0 / (1.0 + np.exp(-(e_grid - 7120.0) / 1.5))
    c = 1.0 / (1.0 + np.exp(-(e_grid - 7128.0) / 1.5))
    library = phase_candidates(np.stack([a, b, c]), ["a", "b", "c"])
    idx = np.array([0, 20, 26, 30, 40, 80])
    noise = TransmissionNoise(i0_counts_per_s=2e4)
    clusters = np.stack([0.4 + 0.8 * (0.5 * (a + b))[idx], 0.4 + 0.8 * c[idx]])
    got, _ = second_pass_candidates(
        e_grid[idx], clusters, ["merged", "third"], small_prior, noise, 0.2, library
    )
    phase = dict(zip(got.names, got.phase, strict=True))
    assert len({phase["a"], phase["b"], phase["merged"]}) == 3  # a, b and their mixture are three phases
    pairs = {tuple(sorted((got.names[i], got.names[j]))) for i, j in got.pairs}
    assert {("a", "b"), ("a", "merged"), ("b", "merged")} <= pairs
