"""Sites from the data: compact regions no site explains open new sites (phases absent from the library)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, sparse
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from threadpoolctl import threadpool_limits

from ._denoise import pure_regions
from ._separation import (
    ACCEPT_THRESHOLD,
    MERGE_THRESHOLD,
    directed_separation,
    separation_matrix,
    separation_to_sites,
    standardize,
    standardized_noise,
)
from ._sites import Sites

logger = logging.getLogger(__name__)

#: Reads absorbance for rows [y0, y1) of a tile: returns shape (n_energies, y1 - y0, nx).
RowReader = Callable[[int, int], NDArray[np.floating]]


def region_spectra(
    regions: NDArray[np.int32], read_rows: RowReader, n_regions: int, *, rows_per_read: int = 64
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Mean absorbance spectrum of each labelled region, reading only the rows that contain one.

    Parameters
    ----------
    regions
        Region map (ny, nx), 0 = background, 1..n_regions.
    read_rows
        Row reader of the tile's absorbance.
    n_regions
        Number of regions.
    rows_per_read
        Rows read at once (bounds memory).

    Returns
    -------
    means
        Shape (n_regions, n_energies).
    counts
        Pixels per region.
    """
    rows = np.flatnonzero((regions > 0).any(axis=1))
    sums: NDArray[np.float64] | None = None
    counts = np.bincount(regions.ravel(), minlength=n_regions + 1)[1:]
    start = 0
    while start < rows.size:
        y0 = rows[start]
        y1 = min(y0 + rows_per_read, regions.shape[0])
        block = np.asarray(read_rows(int(y0), int(y1)), dtype=np.float64)
        reg = regions[y0:y1].ravel()
        flat = block.reshape(block.shape[0], -1)
        if sums is None:
            sums = np.zeros((n_regions, block.shape[0]))
        sel = reg > 0
        for i in range(flat.shape[0]):
            sums[:, i] += np.bincount(reg[sel] - 1, weights=flat[i, sel], minlength=n_regions)
        start = int(np.searchsorted(rows, y1))
    assert sums is not None
    return sums / np.maximum(counts, 1)[:, None], counts


def discover_sites(
    sites: Sites,
    novel: NDArray[np.bool_],
    read_rows: RowReader,
    *,
    window: int = 5,
    min_count: int = 23,
    accept: float = ACCEPT_THRESHOLD,
    merge: float = MERGE_THRESHOLD,
) -> Sites:
    """Open new sites for compact regions of novel pixels.

    Novel pixels (no site explains them within the photon noise) are cleaned like a cluster (near-pure
    ``window`` seeds, 8-connected flood fill) so isolated noise never opens a site. Each surviving
    8-connected region gives its mean spectrum (read back from the data); a mean farther than
    ``accept`` in D from every site is a candidate, candidates closer than ``merge`` are merged by
    average linkage (pixel-weighted means), and the rest become sites of origin ``"data"``.

    Parameters
    ----------
    sites
        Current sites.
    novel
        Novel flags of one tile, shape (ny, nx).
    read_rows
        Reader of that tile's absorbance rows on the sites' full energy grid.
    window, min_count
        Seed window and threshold for the novel-pixel regions.
    accept, merge
        Acceptance and merge thresholds in D.

    Returns
    -------
    Sites
        ``sites`` unchanged when nothing new was found, else a copy with the new sites appended.
    """
    kept = pure_regions(novel, window=window, min_count=min_count)
    regions, n_regions = ndimage.label(kept, structure=np.ones((3, 3), dtype=bool))
    if n_regions == 0:
        return sites
    means, counts = region_spectra(regions.astype(np.int32), read_rows, n_regions)
    if means.shape[1] != sites.n_energies:
        raise ValueError(f"read_rows returned {means.shape[1]} energies, sites have {sites.n_energies}")
    z = standardize(means)
    tau = standardized_noise(means, sites.i0_counts, sites.noise, sites.model_error)
    far = separation_to_sites(z, tau, sites.z, sites.tau).min(axis=1) > accept
    if not far.any():
        logger.info("discovery: %d novel regions, all within %.3f of an existing site", n_regions, accept)
        return sites
    means, counts, z, tau = means[far], counts[far], z[far], tau[far]
    if len(means) > 1:
        d = separation_matrix(z, tau)
        groups = fcluster(
            linkage(squareform(d, checks=False), method="average"), t=merge, criterion="distance"
        )
    else:
        groups = np.ones(1, dtype=int)
    new = [np.average(means[groups == g], axis=0, weights=counts[groups == g]) for g in np.unique(groups)]
    n_data = sum(o == "data" for o in sites.origin)
    names = [f"novel-{n_data + i + 1}" for i in range(len(new))]
    logger.info("discovery: %d new site(s) from %d novel region(s)", len(new), int(far.sum()))
    return sites.extended(np.asarray(new), names, "data")


def _recenter(
    z: NDArray[np.float64], labels: NDArray[np.intp], k: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Standardized mean of each centre's members and the member counts."""
    counts = np.bincount(labels, minlength=k)
    one_hot = sparse.csr_matrix(
        (np.ones(labels.size), (labels, np.arange(labels.size))), shape=(k, labels.size)
    )
    return standardize(np.asarray(one_hot @ z)), counts


def _bimodal_limit(n: int, n_energies: int) -> float:
    """Largest variance along a split direction that one phase shows: the top-eigenvalue edge of n whitened
    noise vectors, (1 + sqrt(E/n))², plus 1 (two phases at a fraction f, 1 − f and distance Δ noise-σ add
    f(1 − f)Δ²)."""
    return (1.0 + np.sqrt(n_energies / max(n, 1))) ** 2 + 1.0


def _distinct(
    z: NDArray[np.float64],
    tau: NDArray[np.float64],
    members_a: NDArray[np.bool_],
    members_b: NDArray[np.bool_],
    c_a: NDArray[np.float64],
    c_b: NDArray[np.float64],
    merge: float,
    tau_a: NDArray[np.float64] | None = None,
    tau_b: NDArray[np.float64] | None = None,
    tau2: NDArray[np.float64] | None = None,
) -> bool:
    """Are two groups of pixels two phases? Yes if their centres are farther than ``merge`` in D with the
    members' median noise (one pixel tells them apart), or if the pooled pixels, projected on the line through
    the two centres in units of each pixel's own noise, spread more than one phase can (many pixels tell them
    apart). ``tau_a``, ``tau_b``: the groups' median noise when already known; ``tau2``: ``tau**2`` when already
    computed."""
    ta = np.median(tau[members_a], axis=0) if tau_a is None else tau_a
    tb = np.median(tau[members_b], axis=0) if tau_b is None else tau_b
    d = min(directed_separation(c_a, c_b, ta), directed_separation(c_b, c_a, tb))
    if d > merge:
        return True
    both = members_a | members_b
    n = int(both.sum())
    if n < 4 * z.shape[1]:
        return False
    u = c_a - c_b
    norm = np.linalg.norm(u)
    if norm == 0:
        return False
    u = u / norm
    zp = z[both]
    tp2 = tau[both] ** 2 if tau2 is None else tau2[both]
    t = ((zp - zp.mean(axis=0)) @ u) / np.sqrt(tp2 @ (u**2))
    return float(np.var(t)) > _bimodal_limit(n, z.shape[1])


def _median_noise(
    tau: NDArray[np.float64], members: NDArray[np.bool_], cache: dict[bytes, NDArray[np.float64]]
) -> NDArray[np.float64]:
    """Median noise per energy of a member set (``tau[0]`` for none), looked up in ``cache`` by the members
    (the same set recurs from one iteration of the partition to the next)."""
    key = np.packbits(members).tobytes()
    if key not in cache:
        cache[key] = np.median(tau[members], axis=0) if members.any() else tau[0]
    return cache[key]


def _split(
    z: NDArray[np.float64], tau: NDArray[np.float64], center: NDArray[np.float64], n_iter: int = 5
) -> NDArray[np.bool_]:
    """Two-means split of one cluster's pixels, started along the top principal direction of the
    noise-whitened residuals; returns the side of each pixel."""
    w = (z - center) / tau
    w -= w.mean(axis=0)
    _, vecs = np.linalg.eigh(w.T @ w)
    side = w @ vecs[:, -1] > 0
    for _ in range(n_iter):
        if side.all() or not side.any():
            break
        c1, c0 = standardize(z[side].mean(axis=0)), standardize(z[~side].mean(axis=0))
        new = z @ c1 > z @ c0
        if np.array_equal(new, side):
            break
        side = new
    return side


def partition_spectra(
    z: NDArray[np.float64],
    tau: NDArray[np.float64],
    seeds: NDArray[np.float64] | None = None,
    *,
    min_pixels: int = 8,
    max_clusters: int = 64,
    merge: float = MERGE_THRESHOLD,
    outlier_probability: float = 1e-4,
    max_iter: int = 60,
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Partition pixel spectra into phases by the noise alone: sites from the data.

    Starting from ``seeds`` (e.g. library spectra; one centre, the mean, without), repeat until nothing changes:
    assign each pixel to the centre of highest correlation and move each centre to its members' mean; drop
    centres with fewer than ``min_pixels`` members; merge the closest pair of centres that are not two phases
    (:func:`_distinct`: neither one pixel nor their many pixels tell them apart); open a centre at the mean of a
    cluster's outliers when more of its pixels lie beyond the noise (χ² tail probability
    ``outlier_probability``) than chance gives; split a cluster in two (two-means along its top noise-whitened
    direction) when the halves are two phases. The library only seeds: it does not decide the partition.

    Parameters
    ----------
    z
        Standardized spectra, shape (n, n_energies).
    tau
        Their noise (photon ⊕ model error) on the standardized scale, shape (n, n_energies).
    seeds
        Standardized starting centres, shape (S, n_energies), or ``None``.
    min_pixels
        Fewest pixels a centre keeps.
    max_clusters
        Most centres (bounds memory and time).
    merge
        D below which one pixel cannot tell two centres apart.
    outlier_probability
        Chance that photon noise puts a pixel of the phase beyond the outlier limit.
    max_iter
        Iteration bound.

    Returns
    -------
    centers
        Standardized centres, shape (K, n_energies).
    labels
        Centre index (0..K-1) of every spectrum.
    """
    from scipy.stats import chi2

    with threadpool_limits(1, user_api="blas"):  # small matrices: BLAS threads only contend
        return _partition(z, tau, seeds, min_pixels, max_clusters, merge, outlier_probability, max_iter, chi2)


def _partition(
    z: NDArray[np.float64],
    tau: NDArray[np.float64],
    seeds: NDArray[np.float64] | None,
    min_pixels: int,
    max_clusters: int,
    merge: float,
    outlier_probability: float,
    max_iter: int,
    chi2: Any,
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    n, n_e = z.shape
    if n < min_pixels:
        raise ValueError(f"partition_spectra: {n} spectra, need at least min_pixels={min_pixels}")
    limit = chi2.isf(outlier_probability, n_e - 2)
    centers = standardize(z.mean(axis=0))[None] if seeds is None or len(seeds) == 0 else np.array(seeds)
    labels = np.argmax(z @ centers.T, axis=1)
    one_phase: set[tuple[int, int, int]] = set()
    tau2 = tau**2
    inv_var = 1.0 / tau2
    medians: dict[bytes, NDArray[np.float64]] = {}  # a member set's median noise, kept while it recurs
    for _ in range(max_iter):
        centers, counts = _recenter(z, labels, len(centers))
        keep = counts >= min_pixels
        if not keep.any():
            keep[np.argmax(counts)] = True
        centers = centers[keep]
        labels = np.argmax(z @ centers.T, axis=1)
        centers, counts = _recenter(z, labels, len(centers))
        changed = bool((~keep).any())
        k = len(centers)
        # merge: the most correlated pair of centres that are not two phases
        if k > 1:
            corr = centers @ centers.T
            np.fill_diagonal(corr, -np.inf)
            member = [labels == a for a in range(k)]
            for flat in np.argsort(corr, axis=None)[::-1][: k * (k - 1)]:
                a, b = divmod(int(flat), k)
                if a > b:
                    continue
                tau_a, tau_b = (_median_noise(tau, member[c], medians) for c in (a, b))  # when first needed
                if not _distinct(
                    z, tau, member[a], member[b], centers[a], centers[b], merge, tau_a, tau_b, tau2
                ):
                    labels = np.where(labels == b, a, labels)
                    labels = labels - (labels > b)
                    centers = np.delete(centers, b, axis=0)
                    changed = True
                    break
            if changed:
                continue
        # outliers: a sub-population no centre explains opens a centre
        new: list[NDArray[np.float64]] = []
        q = centers[labels]  # then (z − centre)² / τ² summed over energy, in place: one n × E work array
        np.subtract(z, q, out=q)
        q *= q
        q = np.einsum("ne,ne->n", q, inv_var)
        out = q > limit
        for a in range(k):
            members = labels == a
            expected = outlier_probability * counts[a]
            n_out = int((out & members).sum())
            if n_out >= min_pixels and n_out > expected + 3.0 * np.sqrt(expected) + min_pixels:
                new.append(standardize(z[out & members].mean(axis=0)))
        if not new:
            # splits: a cluster whose two halves are two phases (a member set already found one phase is skipped)
            for a in range(k):
                members = np.flatnonzero(labels == a)
                key = (members.size, int(members.sum()), int((members * members).sum() % 1_000_003))
                if members.size < max(2 * min_pixels, 4 * n_e) or key in one_phase:
                    continue
                side = _split(z[members], tau[members], centers[a])
                if side.sum() < min_pixels or (~side).sum() < min_pixels:
                    continue
                c1 = standardize(z[members[side]].mean(axis=0))
                c0 = standardize(z[members[~side]].mean(axis=0))
                m1 = np.zeros(n, bool)
                m0 = np.zeros(n, bool)
                m1[members[side]] = True
                m0[members[~side]] = True
                if _distinct(z, tau, m1, m0, c1, c0, merge, tau2=tau2):
                    centers[a] = c0
                    new.append(c1)
                else:
                    one_phase.add(key)
        if new and k < max_clusters:
            centers = np.vstack([centers, np.asarray(new)[: max_clusters - k]])
            changed = True
        new_labels = np.argmax(z @ centers.T, axis=1)
        if not changed and np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return centers, labels
