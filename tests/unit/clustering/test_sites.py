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
    named = np.array([o == "library" for o in sites.origin])
    assert sites.n_clusters < len(sites)
    for a in range(1, sites.n_clusters + 1):
        for b in range(a + 1, sites.n_clusters + 1):
            # two groups stay apart when on average farther than the cut, or when they hold separable references
            separable = d[np.ix_((g == a) & named, (g == b) & named)]
            assert d[np.ix_(g == a, g == b)].mean() > MERGE_THRESHOLD or np.any(separable > MERGE_THRESHOLD)
    for a in range(1, sites.n_clusters + 1):  # no group holds two references separable beyond the cut
        refs = np.flatnonzero((g == a) & named)
        assert np.all(d[np.ix_(refs, refs)] <= MERGE_THRESHOLD)


def _partition(labels) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == v).tolist()) for v in np.unique(labels)}


def test_constrained_linkage_is_scipys_when_no_constraint_binds() -> None:
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist, squareform

    from xbeam_bluesky.clustering._sites import constrained_average_linkage

    rng = np.random.default_rng(5)
    points = np.concatenate([rng.normal(c, 0.6, size=(15, 2)) for c in ((0, 0), (6, 0), (0, 7), (8, 8))])
    cond = pdist(points)
    scipy_labels = fcluster(linkage(cond, method="average"), t=3.0, criterion="distance")
    assert len(set(scipy_labels)) == 4
    # constraints only between items scipy puts in different clusters: they never bind
    cannot = (scipy_labels[:, None] != scipy_labels[None, :]) & (rng.random((60, 60)) < 0.3)
    cannot |= cannot.T
    ours = constrained_average_linkage(squareform(cond), 3.0, cannot)
    assert _partition(ours) == _partition(scipy_labels)


def test_separable_ends_are_not_chained_through_mixtures() -> None:
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist, squareform

    from xbeam_bluesky.clustering._sites import constrained_average_linkage

    # two references 4.1 apart (beyond the 3.719 cut) and mixture points between them, on a line
    x = np.array([0.0, 4.1, 0.7, 1.4, 2.05, 2.7, 3.4])[:, None]
    d = squareform(pdist(x))
    plain = fcluster(linkage(pdist(x), method="average"), t=MERGE_THRESHOLD, criterion="distance")
    assert plain[0] == plain[1]  # plain average linkage chains the two references into one cluster
    cannot = np.zeros_like(d, dtype=bool)
    cannot[0, 1] = cannot[1, 0] = True
    ours = constrained_average_linkage(d, MERGE_THRESHOLD, cannot)
    assert ours[0] != ours[1]
    # two clusters, each an interval of the line around one reference
    assert len(set(ours)) == 2
    along = ours[np.argsort(x[:, 0])]
    assert np.count_nonzero(np.diff(along)) == 1


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
