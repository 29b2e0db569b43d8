"""Sites from library mixtures and average-linkage grouping."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import ACCEPT_THRESHOLD, MERGE_THRESHOLD, Sites, merge_sites, sites_from_library


def _sites(library, energies, noise, i0, n_draws=1500, **kw) -> Sites:
    names = list(library)
    refs = np.vstack([library[n] for n in names])
    return sites_from_library(energies, refs, names, i0_counts=i0, noise=noise, n_draws=n_draws, **kw)


def test_mixture_sites_are_farther_than_acceptance(library, energies, noise) -> None:
    sites = _sites(library, energies, noise, 2e4)
    d = sites.separation()
    mixtures = [k for k, o in enumerate(sites.origin) if o == "mixture"]
    assert len(mixtures) > 5
    for k in mixtures:  # each accepted mixture was farther than 2.326 from every site before it
        assert np.all(d[k, :k] > ACCEPT_THRESHOLD)
    assert sites.origin[: len(library)] == ("library",) * len(library)


def test_groups_are_average_linkage_clusters(library, energies, noise) -> None:
    sites = _sites(library, energies, noise, 2e4)
    d, g = sites.separation(), sites.groups
    assert sites.n_clusters < len(sites)
    for a in range(1, sites.n_clusters + 1):
        for b in range(a + 1, sites.n_clusters + 1):
            assert d[np.ix_(g == a, g == b)].mean() > MERGE_THRESHOLD


def test_noise_sets_how_many_clusters(library, energies, noise) -> None:
    two = {k: library[k] for k in ("Fe2O3_rt_01", "Fe_metal_rt_01")}
    clean = _sites(two, energies, noise, 1e6, n_draws=0)
    assert clean.n_clusters == 2 and clean.cluster_names == ("Fe2O3_rt_01", "Fe_metal_rt_01")
    hopeless = _sites(two, energies, noise, 30.0, n_draws=0)  # a few photons: indistinguishable
    assert hopeless.n_clusters == 1


def test_merge_keeps_sites_and_max_sites(library, energies, noise) -> None:
    sites = _sites(library, energies, noise, 2e4, max_sites=20)
    assert len(sites) == 20
    again = merge_sites(sites)
    assert np.array_equal(again.groups, sites.groups)


def test_bad_inputs(library, energies, noise) -> None:
    with pytest.raises(ValueError, match="names"):
        sites_from_library(energies, np.vstack(list(library.values())), ["a"], i0_counts=1e4, noise=noise)
    with pytest.raises(ValueError, match="NaN"):
        sites_from_library(
            energies, np.full((2, energies.size), np.nan), ["a", "b"], i0_counts=1e4, noise=noise
        )
    bad = energies.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="positive energies"):
        Sites(
            bad,
            1 + np.vstack(list(library.values())),
            tuple(library),
            ("library",) * 6,
            1e4,
            noise,
        )
