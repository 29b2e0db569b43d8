"""Shared fixtures: a small Fe K energy grid, library references and photon-noise stacks."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

REFS = ("Fe2O3_rt_01", "Fe3O4_rt_01", "larch_FeDem_Goerthite", "larch_ALS1032_Olivine_Fo0", "FeS2_rt_01",
        "Fe_metal_rt_01")  # fmt: skip


@pytest.fixture(scope="session")
def energies() -> np.ndarray:
    return np.linspace(7090.0, 7180.0, 60)


@pytest.fixture(scope="session")
def library(energies: np.ndarray) -> dict[str, np.ndarray]:
    lib = aligned_library(load_library(), energies)
    return {name: lib.matrix[lib.names.index(name)] for name in REFS}


@pytest.fixture(scope="session")
def noise() -> PhotonNoiseModel:
    return PhotonNoiseModel()


def _noisy_absorbance(mu: np.ndarray, i0: float, noise: PhotonNoiseModel, seed: int = 0) -> np.ndarray:
    """μt measured with photon noise: −ln(I/I0) with I and I0 drawn from the detector model."""
    rng = np.random.default_rng(seed)
    counts = noise.sample_counts(i0 * np.exp(-mu), rng)
    flat = noise.sample_counts(np.full(mu.shape, i0), rng)
    return np.log(np.maximum(flat, 1.0) / np.maximum(counts, 1.0))


@pytest.fixture(scope="session")
def noisy_absorbance():
    """``noisy_absorbance(mu, i0, noise, seed=0)``: photon-noise measurement of absorbance ``mu``."""
    return _noisy_absorbance
