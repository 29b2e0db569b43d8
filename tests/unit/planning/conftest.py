"""Small synthetic priors for the planning tests."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.planning import GaussianProcessPrior


@pytest.fixture
def small_prior() -> GaussianProcessPrior:
    """A 81-point prior: sigmoid edge mean, std peaked at the edge, 3 eV length scale."""
    energies = np.linspace(7100.0, 7140.0, 81)
    mean = 1.0 / (1.0 + np.exp(-(energies - 7115.0) / 1.5))
    std = 0.02 + 0.2 * np.exp(-(((energies - 7118.0) / 6.0) ** 2))
    return GaussianProcessPrior(
        energies_eV=energies, mean=mean, std=std, length_scale_eV=3.0, names=("a", "b", "c")
    )
