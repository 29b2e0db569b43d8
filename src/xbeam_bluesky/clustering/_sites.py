"""Sites ("the grid"): cells of spectral space one discrimination limit wide, from a library and from data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from xbeam_bluesky.errors import ClusteringInputError

from ._separation import (
    ACCEPT_THRESHOLD,
    MERGE_THRESHOLD,
    AbsorbanceNoise,
    incident_counts,
    model_error_per_energy,
    separation_matrix,
    separation_to_sites,
    standardize,
    standardized_noise,
)


@dataclass(frozen=True)
class Sites:
    """The grid of sites and the clusters they are merged into.

    Every pixel is assigned to its site of highest correlation; its cluster label is that site's
    group (1..n_clusters). Site k belongs to cluster ``groups[k]``.

    Attributes
    ----------
    energies
        Energies in eV in acquisition order, shape (n_energies,); order does not matter and a repeated
        energy is simply another channel.
    mu_t
        Site spectra as absorbance μt (dimensionless), shape (K, n_energies).
    names
        One name per site (reference name, mixture composition, or ``novel-N``).
    origin
        ``"library"``, ``"mixture"`` or ``"data"`` per site.
    i0_counts
        Incident counts per pixel per frame used for the noise model: one number for every energy, or an
        array with one value per energy (per-energy dwell); validated and stored as ``float`` or
        float64 array of shape (n_energies,).
    noise
        The detector noise model.
    groups
        Cluster (1-based) of each site; ``None`` = every site its own cluster.
    model_error
        Model error ε per energy on the standardized scale (dimensionless, see
        :func:`~xbeam_bluesky.clustering.estimate_model_error`), added in quadrature to the photon noise in
        D; ``None`` = photon noise only. Stored as a float64 array of shape (n_energies,).
    """

    energies: NDArray[np.float64]
    mu_t: NDArray[np.float64]
    names: tuple[str, ...]
    origin: tuple[str, ...]
    i0_counts: float | NDArray[np.float64]
    noise: AbsorbanceNoise
    groups: NDArray[np.int32] | None = None
    model_error: NDArray[np.float64] | None = None
    z: NDArray[np.float64] = field(init=False, repr=False)
    tau: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mu = np.atleast_2d(np.asarray(self.mu_t, dtype=np.float64))
        if not (len(self.names) == len(self.origin) == mu.shape[0]):
            raise ValueError(
                f"Sites: {mu.shape[0]} spectra but {len(self.names)} names and {len(self.origin)} origins"
            )
        if not np.all(np.isfinite(mu)):
            raise ValueError("Sites: mu_t contains NaN or Inf")
        energies = np.asarray(self.energies, dtype=np.float64)
        if energies.shape != (mu.shape[1],) or not np.all(np.isfinite(energies) & (energies > 0)):
            raise ValueError(
                f"Sites: energies must be {mu.shape[1]} positive energies in eV (any order, repeats allowed), "
                f"got shape {energies.shape}"
            )
        groups = np.arange(1, mu.shape[0] + 1) if self.groups is None else np.asarray(self.groups)
        if groups.shape != (mu.shape[0],) or set(np.unique(groups)) != set(range(1, groups.max() + 1)):
            raise ValueError(f"Sites: groups must number the {mu.shape[0]} sites' clusters 1..G without gaps")
        object.__setattr__(self, "i0_counts", incident_counts(self.i0_counts, mu.shape[1]))
        object.__setattr__(self, "energies", energies)
        object.__setattr__(self, "mu_t", mu)
        object.__setattr__(self, "groups", groups.astype(np.int32))
        object.__setattr__(self, "model_error", model_error_per_energy(self.model_error, mu.shape[1]))
        object.__setattr__(self, "z", standardize(mu))
        object.__setattr__(self, "tau", standardized_noise(mu, self.i0_counts, self.noise, self.model_error))

    def __len__(self) -> int:
        return self.mu_t.shape[0]

    @property
    def n_energies(self) -> int:
        """Number of energy points."""
        return self.mu_t.shape[1]

    @property
    def n_clusters(self) -> int:
        """Number of clusters (labels 1..n_clusters)."""
        return int(self.groups.max())

    @property
    def cluster_names(self) -> tuple[str, ...]:
        """One name per cluster: its library or data sites' names, else its first site's name."""
        out = []
        for g in range(1, self.n_clusters + 1):
            members = np.flatnonzero(self.groups == g)
            named = [self.names[m] for m in members if self.origin[m] in ("library", "data")]
            out.append("/".join(named) if named else self.names[members[0]])
        return tuple(out)

    @property
    def cluster_origin(self) -> tuple[str, ...]:
        """``"data"`` for clusters opened from the data, ``"library"`` if they hold a reference, else ``"mixture"``."""
        out = []
        for g in range(1, self.n_clusters + 1):
            kinds = {self.origin[m] for m in np.flatnonzero(self.groups == g)}
            out.append("data" if "data" in kinds else "library" if "library" in kinds else "mixture")
        return tuple(out)

    def separation(self) -> NDArray[np.float64]:
        """Symmetric D between all sites, shape (K, K)."""
        return separation_matrix(self.z, self.tau)

    def extended(self, mu_t: ArrayLike, names: Sequence[str], origin: str) -> Sites:
        """Return a copy with the sites ``mu_t`` (shape (n, n_energies)) appended, each a new cluster."""
        mu = np.atleast_2d(np.asarray(mu_t, dtype=np.float64))
        new_groups = self.n_clusters + 1 + np.arange(mu.shape[0])
        return Sites(
            self.energies,
            np.vstack([self.mu_t, mu]),
            (*self.names, *names),
            (*self.origin, *([origin] * mu.shape[0])),
            self.i0_counts,
            self.noise,
            np.concatenate([self.groups, new_groups]),
            self.model_error,
        )


def _mixture_name(weights: NDArray[np.float64], ref_names: Sequence[str]) -> str:
    order = np.argsort(weights)[::-1]
    parts = [f"{weights[j]:.2f} {ref_names[j]}" for j in order if weights[j] >= 0.005]
    return " + ".join(parts)


def sites_from_library(
    energies: ArrayLike,
    references: ArrayLike,
    names: Sequence[str],
    *,
    i0_counts: float | ArrayLike,
    noise: AbsorbanceNoise,
    mu_offset: float = 0.5,
    edge_jump: float = 1.0,
    n_draws: int = 10_000,
    accept: float = ACCEPT_THRESHOLD,
    merge: float = MERGE_THRESHOLD,
    max_sites: int | None = None,
    seed: int = 0,
    model_error: ArrayLike | None = None,
) -> Sites:
    """Sites from a reference library, random three-site mixtures, and average-linkage merging.

    The references are put on the absorbance scale the sample is expected to have,
    μt = ``mu_offset`` + ``edge_jump`` · s_norm, so the photon-noise model gives each site its noise.
    Then ``n_draws`` random convex mixtures of three current sites are drawn (Dirichlet(1, 1, 1) weights);
    a mixture farther than ``accept`` (in D) from every site becomes a site. Finally sites are grouped into
    clusters by average linkage on D at ``merge`` (:func:`merge_sites`).

    Parameters
    ----------
    energies
        Measurement energy grid in eV, shape (n_energies,).
    references
        Normalized reference spectra on the measurement energy grid, shape (n_ref, n_energies).
    names
        One name per reference.
    i0_counts
        Incident counts per pixel per frame: one number, or one per energy (shape (n_energies,)) when the
        dwell (or the beam) differs between energies.
    noise
        Detector noise model.
    mu_offset, edge_jump
        Absorbance below the edge and edge jump (μt, dimensionless) of the sample.
    n_draws
        Number of random mixtures (the publication uses 10 000).
    accept, merge
        Acceptance and merge thresholds in D (normal quantiles 2.326 and 3.719 by default).
    max_sites
        Stop adding mixture sites once this many sites exist (before merging); ``None`` for no limit.
    seed
        Random seed for the mixture draws.
    model_error
        Model error ε per energy (or one number) on the standardized scale, added to the photon noise in D:
        with it the grid's resolution saturates as the dose grows, so the number of sites stays bounded.

    Returns
    -------
    Sites
        Library and mixture sites, grouped into clusters.
    """
    ref = np.atleast_2d(np.asarray(references, dtype=np.float64))
    if ref.shape[0] != len(names):
        raise ClusteringInputError(f"references: {ref.shape[0]} spectra but {len(names)} names")
    if ref.shape[0] == 0 or ref.shape[1] < 3:
        raise ClusteringInputError(
            f"references: need at least one spectrum on ≥ 3 energies, got shape {ref.shape}"
        )
    if not np.all(np.isfinite(ref)):
        raise ClusteringInputError(
            "references: contains NaN or Inf (is the energy grid inside every reference's range?)"
        )
    i0_counts = incident_counts(i0_counts, ref.shape[1])
    mu = mu_offset + edge_jump * ref
    weights = np.eye(ref.shape[0])  # composition of each site in terms of the references
    eps = model_error_per_energy(model_error, ref.shape[1])
    z = standardize(mu)
    tau = standardized_noise(mu, i0_counts, noise, eps)
    rng = np.random.default_rng(seed)
    mu_l, w_l, z_l, t_l = list(mu), list(weights), list(z), list(tau)
    if ref.shape[0] >= 2:
        for _ in range(n_draws):
            if max_sites is not None and len(mu_l) >= max_sites:
                break
            n_pick = min(3, len(mu_l))
            pick = rng.choice(len(mu_l), size=n_pick, replace=False)
            w = rng.dirichlet(np.ones(n_pick))
            m = w @ np.asarray(mu_l)[pick]
            zm = standardize(m)
            tm = standardized_noise(m, i0_counts, noise, eps)
            d = separation_to_sites(zm[None], tm[None], np.asarray(z_l), np.asarray(t_l))
            if d.min() > accept:
                mu_l.append(m)
                w_l.append(w @ np.asarray(w_l)[pick])
                z_l.append(zm)
                t_l.append(tm)
    mu_all, w_all = np.asarray(mu_l), np.asarray(w_l)
    n_ref = ref.shape[0]
    origin = ["library"] * n_ref + ["mixture"] * (len(mu_all) - n_ref)
    site_names = [*names, *(_mixture_name(w, names) for w in w_all[n_ref:])]
    return merge_sites(
        Sites(energies, mu_all, tuple(site_names), tuple(origin), i0_counts, noise, model_error=eps),
        merge=merge,
    )


def merge_sites(sites: Sites, *, merge: float = MERGE_THRESHOLD) -> Sites:
    """Group sites into clusters by average linkage on D, cut at ``merge``, never joining two separable
    references.

    Sites are kept (the assignment still uses the fine grid); only their ``groups`` change, so a pixel's
    cluster is the group of its best site. Two library (or data) sites farther apart than ``merge`` are distinct
    phases at this noise level; mixture sites between them can bring the *average* distance of their groups
    under ``merge``, so such pairs are kept apart (a cannot-link constraint). Without such a pair the grouping
    is plain average linkage (:func:`scipy.cluster.hierarchy.linkage` cut by ``fcluster``).

    Parameters
    ----------
    sites
        Sites to group.
    merge
        Cut height of the average-linkage dendrogram, in D.
    """
    if len(sites) < 2:
        return sites
    d = sites.separation()
    named = np.array([o in ("library", "data") for o in sites.origin])
    cannot = (d > merge) & named[:, None] & named[None, :]
    found = constrained_average_linkage(d, merge, cannot)
    # number clusters in order of their first site so library references keep low labels
    _, first = np.unique(found, return_index=True)
    order = np.argsort(np.argsort(first))
    groups = order[np.searchsorted(np.unique(found), found)] + 1
    return Sites(
        sites.energies, sites.mu_t, sites.names, sites.origin, sites.i0_counts, sites.noise, groups,
        sites.model_error,
    )  # fmt: skip


def constrained_average_linkage(
    distance: NDArray[np.float64], cut: float, cannot_link: NDArray[np.bool_]
) -> NDArray[np.intp]:
    """Flat clusters of average-linkage agglomeration stopped at ``cut``, never merging two clusters that hold
    a cannot-link pair.

    Parameters
    ----------
    distance
        Symmetric (n, n) distances (here D, dimensionless).
    cut
        Largest average distance at which two clusters merge.
    cannot_link
        Symmetric (n, n) boolean: True where two items must not share a cluster.

    Returns
    -------
    numpy.ndarray
        Cluster id (0..) of every item. Average linkage has no inversions, so merging the closest allowed pair
        while its distance is ≤ ``cut`` is scipy's average linkage cut at ``cut`` when no constraint binds.
    """
    n = distance.shape[0]
    if not cannot_link.any():
        found = fcluster(
            linkage(squareform(distance, checks=False), method="average"), t=cut, criterion="distance"
        )
        return found - 1
    dist = np.array(distance, dtype=np.float64, copy=True)
    blocked = np.array(cannot_link, dtype=bool, copy=True)
    size = np.ones(n)
    alive = np.ones(n, dtype=bool)
    members = np.arange(n)
    np.fill_diagonal(dist, np.inf)
    while True:
        masked = np.where(blocked | ~alive[:, None] | ~alive[None, :], np.inf, dist)
        flat = int(np.argmin(masked))
        i, j = divmod(flat, n)
        if not masked[i, j] <= cut:
            break
        # Lance–Williams update for average linkage: cluster i absorbs j
        dist[i, :] = (size[i] * dist[i, :] + size[j] * dist[j, :]) / (size[i] + size[j])
        dist[:, i] = dist[i, :]
        dist[i, i] = np.inf
        blocked[i, :] |= blocked[j, :]
        blocked[:, i] = blocked[i, :]
        size[i] += size[j]
        alive[j] = False
        members[members == j] = i
    _, labels = np.unique(members, return_inverse=True)
    return labels
