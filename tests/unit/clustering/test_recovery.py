"""Known phantom labels recovered; a phase missing from the library discovered as a new site."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from xbeam_bluesky.clustering import ArrayStack, cluster_stack, sites_from_library
from xbeam_bluesky.devices.sim.phantom import Phantom

SHAPE, PIXEL_UM, I0 = (500, 500), 4.0, 2e5


@pytest.fixture(scope="module")
def phantom_data(energies, noise, noisy_absorbance):
    phantom = Phantom(width_mm=2.4, height_mm=2.4, seed=0, domain_size_um=250)
    truth = phantom.labels((0.0, 0.0), SHAPE, PIXEL_UM)
    mu = phantom.absorbance(energies, (0.0, 0.0), SHAPE, PIXEL_UM)
    return phantom, truth, noisy_absorbance(mu, I0, noise, seed=11).astype(np.float32)


def _run(library, energies, noise, stack, drop=()):
    names = [n for n in library if n not in drop]
    refs = np.vstack([library[n] for n in names])
    sites = sites_from_library(energies, refs, names, i0_counts=I0, noise=noise, n_draws=1500, mu_offset=0.4)
    return cluster_stack(ArrayStack(stack), sites, memory_bytes=8 * 2**20)


def _match(truth, labels, phase):
    """Recall and precision of the cluster holding most of the phase's pixels."""
    member = truth == phase
    values, counts = np.unique(labels[member], return_counts=True)
    predicted = labels == values[np.argmax(counts)]
    hit = (predicted & member).sum()
    return values[np.argmax(counts)], hit / member.sum(), hit / predicted.sum()


@pytest.mark.slow
def test_phantom_labels_recovered(library, energies, noise, phantom_data) -> None:
    phantom, truth, stack = phantom_data
    result = _run(library, energies, noise, stack)
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) > 0.98
    fractions = np.bincount(truth.ravel(), minlength=8) / truth.size
    for phase in (6, 7):  # pyrite (~0.7 %) and iron metal (~0.14 %) inclusions
        assert 0.0005 < fractions[phase] < 0.01
        label, recall, precision = _match(truth, result.labels, phase)
        assert recall >= 0.95 and precision >= 0.9, phantom.phase_names[phase - 1]
    # cluster spectra are the members' spectra: the pyrite cluster matches pyrite's μt shape
    label, _, _ = _match(truth, result.labels, 6)
    expected = phantom.phase_spectra(energies)[5]
    assert np.corrcoef(result.spectra[label - 1], expected)[0, 1] > 0.999


@pytest.mark.slow
def test_phase_absent_from_library_opens_a_site(library, energies, noise, phantom_data) -> None:
    _phantom, truth, stack = phantom_data
    result = _run(library, energies, noise, stack, drop=("FeS2_rt_01",))
    label, recall, precision = _match(truth, result.labels, 6)
    assert result.sites.cluster_origin[label - 1] == "data"
    assert result.sites.cluster_names[label - 1].startswith("novel-")
    assert recall >= 0.95 and precision >= 0.9
    # the other minority is still a library cluster
    label, recall, _ = _match(truth, result.labels, 7)
    assert result.sites.cluster_origin[label - 1] == "library" and recall >= 0.95
