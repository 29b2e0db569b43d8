"""The pipeline on a phantom of measured spectra held out of its library (ALS 10.3.2 collection vs the rest)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from xbeam_bluesky.clustering import (
    ArrayStack,
    held_out_phantom,
    matched_scores,
    pipeline_from_library,
    split_library,
)
from xbeam_bluesky.planning import conventional_grid
from xbeam_bluesky.spectra import PhotonNoiseModel

PHOTON_COUNTING = PhotonNoiseModel(gain=1.0, offset=0.0, flat_frames=10)


@pytest.fixture(scope="module")
def phantom():
    return held_out_phantom(conventional_grid(7112.0, 7090.0, 7180.0, edge_step_eV=1.0), (256, 256), seed=0)


@pytest.fixture(scope="module")
def library(phantom):
    held, rest = split_library(phantom.energies)
    assert not set(held) & set(rest)
    return rest


def _scores(phantom, library, photons):
    pipeline = pipeline_from_library(phantom.energies, photons, PHOTON_COUNTING, library)
    result = pipeline.cluster([ArrayStack(phantom.measure(photons, seed=1))])
    return result, matched_scores(phantom.truth, result.labels, len(phantom.names))


def test_phantom_is_held_out_and_has_its_minorities(phantom, library):
    # no phantom spectrum is in the clustering library: every phase differs from every library spectrum
    from xbeam_bluesky.clustering import standardize

    held, _ = split_library(phantom.energies)
    z_held = standardize(np.stack([held[n] for n in phantom.names]))
    z_lib = standardize(np.stack(list(library.values())))
    nearest = 1.0 - (z_held @ z_lib.T).max(axis=1)
    assert nearest.min() > 1e-4
    assert nearest[phantom.names.index("Almandine_Waychunas_FeXANES")] > 0.02  # absent from the library
    fractions = np.bincount(phantom.truth.ravel(), minlength=9) / phantom.truth.size
    assert 0.003 < fractions[-2] < 0.007 and 0.0005 < fractions[-1] < 0.002


def test_dose_curve_is_monotone_and_reaches_targets(phantom, library):
    f1 = []
    for photons in (300, 1000, 3000):
        result, scores = _scores(phantom, library, photons)
        f1.append(scores.macro_f1)
        assert len(result.sites) <= 64
    assert all(b >= a - 0.02 for a, b in itertools.pairwise(f1)), f1
    assert f1[-1] >= 0.95, f1
    assert np.all(scores.recall[-2:] >= 0.95) and np.all(scores.precision[-2:] >= 0.9)
    # the phase absent from the library is found and not given a library name
    almandine = scores.cluster_of_phase[phantom.names.index("Almandine_Waychunas_FeXANES")]
    assert result.sites.cluster_names[almandine - 1].startswith(("unknown", "novel"))


def test_no_library_still_clusters(phantom):
    result, scores = _scores(phantom, None, 3000)
    assert scores.macro_f1 >= 0.9
    assert all(n.startswith(("unknown", "novel")) for n in result.sites.cluster_names)
    assert result.metadata["sites_from"] == "data"


def test_sites_bounded_and_model_error_recorded_at_high_dose(phantom, library):
    result, scores = _scores(phantom, library, 1e5)
    assert scores.macro_f1 >= 0.95
    assert len(result.sites) <= 64
    eps = result.metadata["model_error"]
    # pure photon noise in this phantom: the estimate sits at its floor
    assert eps["rms_fraction_of_spectrum_rms"] == pytest.approx(
        eps["floor_fraction_of_spectrum_rms"], rel=0.05
    )
    assert "model_error_rms" in result.summary()
