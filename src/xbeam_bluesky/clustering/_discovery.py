"""Sites from the data: compact regions no site explains open new sites (phases absent from the library)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from ._denoise import pure_regions
from ._separation import (
    ACCEPT_THRESHOLD,
    MERGE_THRESHOLD,
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
