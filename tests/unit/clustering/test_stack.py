"""Chunked stack clustering: bounded blocks give the same maps as one block; HDF5 source; errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from xbeam_bluesky.clustering import (
    ArrayStack,
    GramAccumulator,
    HDF5Stack,
    area_fractions,
    assign_spectra,
    cluster_stack,
    row_blocks,
    sites_from_library,
)


@pytest.fixture(scope="module")
def case(library, energies, noise, noisy_absorbance):
    names = list(library)
    sites = sites_from_library(energies, np.vstack(list(library.values())), names, i0_counts=5e4, noise=noise,
                               n_draws=300)  # fmt: skip
    truth = np.ones((60, 40), np.int32)
    truth[20:45, 10:30] = 5  # pyrite block
    truth[:, 35:] = 6  # iron metal band
    mu = (0.4 + np.vstack([library[n] for n in names]))[truth - 1].transpose(2, 0, 1)
    return sites, truth, noisy_absorbance(mu, 5e4, noise, seed=2).astype(np.float32)


def test_blocks_equal_one_pass_and_published_assignment(case, tmp_path) -> None:
    sites, truth, stack = case
    path = tmp_path / "stack.h5"
    with h5py.File(path, "w") as f:
        f["stack"] = stack
    small = cluster_stack(HDF5Stack(path), sites, memory_bytes=60 * 40 * 4 * 7, denoise=False)
    assert len(row_blocks(stack.shape, 60 * 40 * 4 * 7)) > 5
    whole = cluster_stack(ArrayStack(stack), sites, memory_bytes=2**30, denoise=False)
    assert np.array_equal(small.labels, whole.labels)
    published = assign_spectra(stack.reshape(stack.shape[0], -1).T, sites).reshape(truth.shape)
    assert np.array_equal(whole.labels, published)
    assert np.allclose(small.spectra, whole.spectra, equal_nan=True, rtol=1e-6)


def test_cluster_spectra_and_fractions(case) -> None:
    sites, truth, stack = case
    result = cluster_stack(ArrayStack(stack), sites)
    summary = result.summary()
    by_name = {c["name"]: c for c in summary["clusters"]}
    assert by_name["FeS2_rt_01"]["area_fraction"] == pytest.approx(np.mean(truth == 5), abs=0.002)
    label = by_name["FeS2_rt_01"]["label"]
    member = stack[:, truth == 5]
    # first singular vector of the members, computed directly
    _u, s, vt = np.linalg.svd(member.T.astype(np.float64), full_matrices=False)
    direct = np.abs(vt[0]) * s[0] / np.sqrt(member.shape[1])
    assert np.corrcoef(result.spectra[label - 1], direct)[0, 1] > 0.9999
    assert np.allclose(result.spectra[label - 1], direct, rtol=0.01)


def test_gram_accumulator_and_fractions_by_hand() -> None:
    basis = np.eye(3)
    g = GramAccumulator(2, basis)
    g.add(
        np.array([1, 1, 2, 0]), np.array([[1.0, 1.0, 0.0, 5.0], [0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 5.0]])
    )
    spectra = g.spectra()
    assert np.allclose(spectra, [[1, 0, 0], [0, 2, 0]])
    fr = area_fractions(np.array([[0, 1], [1, 2]]), 2)
    assert fr["fractions"] == [2 / 3, 1 / 3] and fr["unassigned"] == 0.25 and fr["counts"] == [1, 2, 1]


def test_bad_stack_inputs(case, tmp_path) -> None:
    sites, _, stack = case
    with pytest.raises(FileNotFoundError, match="HDF5 file not found"):
        HDF5Stack(tmp_path / "missing.h5")
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["other"] = stack
        f["flat"] = stack[0]
    with pytest.raises(ValueError, match="no dataset '/stack'"):
        HDF5Stack(path)
    with pytest.raises(ValueError, match="expected 3-D"):
        HDF5Stack(path, dataset="/flat")
    with pytest.raises(ValueError, match="energies"):
        cluster_stack(ArrayStack(stack[:-1]), sites)
