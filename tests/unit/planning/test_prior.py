"""GP prior: length-scale fit, bundled-library prior, raw-data extension, bad libraries."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from xbeam_bluesky.planning import (
    GaussianProcessPrior,
    fe_k_grid,
    fit_length_scale,
    prior_from_library,
    rbf_kernel,
)
from xbeam_bluesky.planning._prior import RawDataExtension
from xbeam_bluesky.spectra import bundled_library_dir


def test_fe_k_grid_is_the_published_one():
    grid = fe_k_grid()
    assert grid.size == 1051
    assert grid[0] == pytest.approx(7076.2) and grid[-1] == pytest.approx(7181.2)
    np.testing.assert_allclose(np.diff(grid), 0.1, atol=1e-9)


def test_length_scale_fit_recovers_the_generating_scale():
    """Library drawn from a GP with c = 4 eV: the maximum-likelihood scale is close to 4 eV."""
    rng = np.random.default_rng(7)
    e = np.linspace(7100.0, 7160.0, 241)
    std = 0.05 + 0.15 * np.exp(-(((e - 7125.0) / 10.0) ** 2))
    k = rbf_kernel(e, std, 4.0) + (5e-3) ** 2 * np.eye(e.size)
    lib = rng.multivariate_normal(np.zeros(e.size), k, size=150)
    best, loglik = fit_length_scale(e, lib, length_scales_eV=np.linspace(1.0, 10.0, 91))
    assert best == pytest.approx(4.0, rel=0.1)
    assert loglik.argmax() not in (0, loglik.size - 1)


def test_prior_from_bundled_library():
    prior = prior_from_library()
    assert prior.size == 1051
    assert len(prior.names) >= 60
    assert 1.0 < prior.length_scale_eV < 10.0
    # normalized spectra: ~0 below the edge, ~1 at the top of the range; most spread over the edge
    assert abs(prior.mean[0]) < 0.05 and abs(prior.mean[-1] - 1.0) < 0.15
    assert 7105.0 < prior.energies_eV[np.argmax(prior.std)] < 7140.0
    summary = prior.summary()
    assert summary["library_size"] == len(prior.names) and summary["library"] == "bundled Fe-K"


def test_prior_leave_one_out_excludes_the_spectrum():
    full = prior_from_library(length_scale_eV=4.0)
    left = full.names[5]
    loo = prior_from_library(length_scale_eV=4.0, exclude=(left,))
    assert left not in loo.names and len(loo.names) == len(full.names) - 1


def test_library_with_too_few_spectra(tmp_path):
    src = bundled_library_dir()
    for name in ("Fe2O3_rt_01.xdi", "FeO_rt_01.xdi"):
        shutil.copy(src / name, tmp_path / name)
    with pytest.raises(ValueError, match=rf"library {tmp_path} has 2 spectra.*at least 3"):
        prior_from_library(tmp_path)


def test_library_not_covering_the_grid_names_the_dropped(tmp_path):
    src = bundled_library_dir()
    for name in ("Fe2O3_rt_01.xdi", "FeO_rt_01.xdi", "Fe3O4_rt_01.xdi"):
        shutil.copy(src / name, tmp_path / name)
    grid = np.arange(7000.0, 9000.0, 1.0)
    with pytest.raises(ValueError, match=r"has 0 spectra covering 7000.0-8999.0 eV.*dropped: Fe2O3_rt_01"):
        prior_from_library(tmp_path, grid)


def test_library_file_with_nan_or_unsorted_energies_is_named(tmp_path):
    src = bundled_library_dir()
    for name in ("Fe2O3_rt_01.xdi", "FeO_rt_01.xdi", "Fe3O4_rt_01.xdi"):
        shutil.copy(src / name, tmp_path / name)
    e = np.linspace(7000.0, 7300.0, 50)
    bad = np.column_stack([e, np.tanh(e - 7112.0)])
    bad[10, 1] = np.nan
    np.savetxt(tmp_path / "broken.txt", bad)
    with pytest.raises(ValueError, match=r"broken\.txt"):
        prior_from_library(tmp_path)
    (tmp_path / "broken.txt").unlink()
    swapped = np.column_stack([e, np.tanh(e - 7112.0)])
    swapped[[10, 20]] = swapped[[20, 10]]
    np.savetxt(tmp_path / "unsorted.txt", swapped)
    with pytest.raises(ValueError, match=r"unsorted\.txt"):
        prior_from_library(tmp_path)


def test_missing_library_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prior_from_library(tmp_path / "nowhere")


def test_nan_in_library_matrix_names_the_spectrum():
    e = np.linspace(0.0, 10.0, 11)
    lib = np.ones((4, 11)) * np.arange(4)[:, None]
    lib[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf: s2"):
        GaussianProcessPrior.from_matrix(e, lib, names=("s0", "s1", "s2", "s3"), length_scale_eV=1.0)


def test_raw_data_extension_matches_monte_carlo(small_prior):
    """K' of the raw-data extension equals the covariance of a·f + Σ b φ sampled directly."""
    ext = RawDataExtension(jump_mean=1.5, jump_std=0.3, background_std=0.05, e0_eV=7112.0)
    raw = small_prior.with_raw_data(ext)
    rng = np.random.default_rng(11)
    n = 100_000
    f = rng.multivariate_normal(small_prior.mean, small_prior.covariance(), size=n, method="eigh")
    a = rng.normal(ext.jump_mean, ext.jump_std, size=(n, 1))
    phis = np.vstack(ext.background_functions(small_prior.energies_eV))
    x = a * f + rng.normal(0.0, ext.background_std, size=(n, 3)) @ phis
    np.testing.assert_allclose(x.mean(axis=0), raw.mean, atol=0.01)
    cov = np.cov(x, rowvar=False)
    assert np.abs(cov - raw.covariance()).max() < 0.03 * np.abs(raw.covariance()).max()
    assert raw.units == "absorbance" and raw.summary()["raw_data"]["jump_mean"] == 1.5


def test_library_file_with_repeated_energies_is_used(tmp_path):
    """Duplicated energy rows (as in some library files) are averaged by the reader, not fatal."""
    src = bundled_library_dir()
    for name in ("Fe2O3_rt_01.xdi", "FeO_rt_01.xdi", "Fe3O4_rt_01.xdi"):
        shutil.copy(src / name, tmp_path / name)
    e = np.linspace(6900.0, 7400.0, 400)
    table = np.column_stack([e, 1.0 / (1.0 + np.exp(-(e - 7118.0) / 2.0))])
    table = np.insert(table, 200, table[199], axis=0)  # the same energy twice
    np.savetxt(tmp_path / "repeated.txt", table)
    prior = prior_from_library(tmp_path, length_scale_eV=4.0)
    assert "repeated" in prior.names and len(prior.names) == 4
