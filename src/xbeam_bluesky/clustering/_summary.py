"""Cluster spectra (first singular vector of the members) and area fractions."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


class GramAccumulator:
    """Per-cluster second-moment matrices Σ c cᵀ of member coordinates, summed over chunks or tiles.

    The first singular vector of the member spectra X (n × E) is the top eigenvector of XᵀX. With
    spectra given by coordinates c in an orthonormal basis Q (x = Qᵀc), XᵀX = Qᵀ(Σ c cᵀ)Q, so the
    small r × r matrices can be summed chunk by chunk and tile by tile.

    Parameters
    ----------
    n_clusters
        Number of clusters K (labels 1..K).
    basis
        Orthonormal rows Q, shape (r, n_energies).
    """

    def __init__(self, n_clusters: int, basis: ArrayLike) -> None:
        self.basis = np.asarray(basis, dtype=np.float64)
        r = self.basis.shape[0]
        self.gram = np.zeros((n_clusters + 1, r, r))
        self.count = np.zeros(n_clusters + 1, dtype=np.int64)

    def add(self, labels: ArrayLike, coords: ArrayLike, *, chunk_pixels: int = 65536) -> None:
        """Add pixels with ``labels`` (n,) and coordinates ``coords`` (r, n; float32 or float64).

        The pixels are taken ``chunk_pixels`` at a time, each chunk's coordinates converted to float64 (the sums
        are float64 whatever the input), so the work arrays stay small for millions of pixels.
        """
        lab = np.asarray(labels).ravel()
        c = np.asarray(coords)
        if c.ndim != 2 or c.shape != (self.gram.shape[1], lab.size):
            raise ValueError(
                f"GramAccumulator.add: coords of shape {c.shape}, expected ({self.gram.shape[1]}, {lab.size})"
            )
        for s in range(0, lab.size, chunk_pixels):
            part = lab[s : s + chunk_pixels]
            cc = c[:, s : s + chunk_pixels].astype(np.float64)
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(self.gram.shape[0] + 1))
            for k in range(1, self.gram.shape[0]):
                idx = order[bounds[k] : bounds[k + 1]]
                if idx.size:
                    ck = cc[:, idx]
                    self.gram[k] += ck @ ck.T
                    self.count[k] += idx.size

    def merge(self, other: GramAccumulator) -> None:
        """Add another accumulator on the same basis (e.g. from another tile)."""
        self.gram += other.gram
        self.count += other.count

    def spectra(self) -> NDArray[np.float64]:
        """Cluster spectra, shape (K, n_energies), in absorbance units (NaN rows for empty clusters).

        Each is the first right singular vector of the members' spectra scaled by
        σ₁/√n (the RMS member spectrum along that direction), sign chosen so its mean is positive.
        """
        k_max = self.gram.shape[0] - 1
        out = np.full((k_max, self.basis.shape[1]), np.nan)
        for k in range(1, k_max + 1):
            if self.count[k] == 0:
                continue
            w, v = np.linalg.eigh(self.gram[k])
            vec = v[:, -1] @ self.basis
            vec *= np.sqrt(max(w[-1], 0.0) / self.count[k])
            out[k - 1] = vec if vec.mean() >= 0 else -vec
        return out


def area_fractions(labels: ArrayLike, n_clusters: int) -> dict[str, float | list[float]]:
    """Area fraction of each cluster among assigned pixels, and the unassigned fraction.

    Parameters
    ----------
    labels
        Label map, 0 = unassigned/masked.
    n_clusters
        Number of clusters K.

    Returns
    -------
    dict
        ``fractions`` (K floats, of assigned pixels), ``unassigned`` (fraction of all pixels),
        ``counts`` (K + 1 pixel counts, index 0 = unassigned).
    """
    lab = np.asarray(labels).ravel()
    counts = np.bincount(lab, minlength=n_clusters + 1)
    assigned = counts[1:].sum()
    return {
        "fractions": (counts[1:] / assigned).tolist() if assigned else [0.0] * n_clusters,
        "unassigned": float(counts[0] / max(lab.size, 1)),
        "counts": counts.tolist(),
    }
