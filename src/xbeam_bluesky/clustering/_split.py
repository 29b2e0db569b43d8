"""Evidence of many pixels: split a cluster whose spatially coherent parts have different mean spectra.

Single pixels of two phases may be too noisy to tell apart (D ~ 1), while the means of their domains, over hundreds
of pixels, differ far beyond their noise. Per cluster, a spatial 2-means on smoothed spectra proposes two parts and a
one-sided test on the parts' mean spectra decides. The proposal and the test use disjoint pixels (the two colours of
a checkerboard: noise is independent between pixels), so a split found in pure noise is rejected at the stated
rate — the same data never both choose the partition and judge it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.cluster.vq import kmeans2
from scipy.stats import norm

from xbeam_bluesky.errors import ClusteringInputError

from ._separation import standardize

#: Familywise rate of splitting a single phase, over the clusters tested in one map.
SPLIT_ALPHA = 0.01


class SplitInputError(ClusteringInputError):
    """Bad stack, labels or options given to the cluster split."""


@dataclass(frozen=True)
class SplitTest:
    """The split test of one cluster, as recorded in the result.

    Attributes
    ----------
    cluster
        Label tested.
    name
        Cluster name (if given).
    n_pixels
        Member pixels.
    n_test
        Test pixels (one checkerboard colour) in the two parts, (part kept, part split off).
    statistic
        T: difference of the parts' standardized mean spectra along the proposal's direction, in units of its
        noise (≈ N(0, 1) for a single phase); NaN when the cluster was too small to test.
    threshold
        Φ⁻¹(1 − α / clusters tested) (one-sided, Bonferroni).
    split
        Whether the cluster was split.
    new_label
        Label given to the part split off (the smaller one), or ``None``.
    """

    cluster: int
    name: str
    n_pixels: int
    n_test: tuple[int, int]
    statistic: float
    threshold: float
    split: bool
    new_label: int | None

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly record (NaN statistic as ``None``)."""
        d = asdict(self)
        d["n_test"] = list(self.n_test)
        d["statistic"] = None if not np.isfinite(self.statistic) else float(self.statistic)
        return d


def _mean_and_noise(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean spectrum of pixels x (n, E) and the noise of its standardized form, from the pixels' own scatter.

    Each pixel is fitted as offset + scale × the mean (thickness and offset vary between pixels); the residuals'
    mean square per channel over n (n − 1) is the variance of the mean's channel.
    """
    n = x.shape[0]
    m = x.mean(axis=0)
    design = np.column_stack([np.ones_like(m), m])
    coef, *_ = np.linalg.lstsq(design, x.T, rcond=None)
    resid = x - (design @ coef).T
    var = np.sum(resid**2, axis=0) / (n * (n - 1)) * m.size / (m.size - 2)
    spread = np.linalg.norm(m - m.mean())
    return m, np.sqrt(var) / spread if spread > 0 else np.full_like(m, np.inf)


def _propose(
    feats: NDArray[np.float64],
    members: NDArray[np.bool_],
    black: NDArray[np.bool_],
    window: int,
    seed: int,
) -> tuple[NDArray[np.int8], NDArray[np.bool_]] | None:
    """Spatial 2-means on features smoothed over the black members only.

    Returns the part (0/1) of every member and where the smoothing saw a black member, or ``None`` if the 2-means
    found one part only.
    """
    src = members & black
    weight = ndimage.uniform_filter(src.astype(np.float64), window, mode="constant")
    smooth = np.empty((*members.shape, feats.shape[1]))
    for j in range(feats.shape[1]):
        img = np.zeros(members.shape)
        img[members] = feats[:, j]
        img[~src] = 0.0
        smooth[..., j] = ndimage.uniform_filter(img, window, mode="constant")
    seen = weight > 1e-12
    smooth[seen] /= weight[seen][:, None]
    train = smooth[src]
    if train.shape[0] < 4:
        return None
    centroids, _ = kmeans2(train, 2, minit="++", seed=np.random.default_rng(seed))
    at = smooth[members]
    part = np.argmin(((at[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1).astype(np.int8)
    if part.min() == part.max():
        return None
    return part, seen[members]


def split_clusters(
    stack: ArrayLike,
    labels: ArrayLike,
    clusters: ArrayLike,
    *,
    names: tuple[str, ...] | None = None,
    next_label: int | None = None,
    window: int = 5,
    alpha: float = SPLIT_ALPHA,
    model_error: float | ArrayLike = 0.0,
    n_components: int = 3,
    min_test_pixels: int = 20,
    max_pca_pixels: int = 20000,
    seed: int = 0,
) -> tuple[NDArray[np.int32], list[SplitTest]]:
    """Split each chemical cluster whose spatially coherent parts differ beyond the noise of their means.

    For each cluster in ``clusters``: members' standardized spectra are reduced to their ``n_components`` leading
    principal components (fitted on at most ``max_pca_pixels`` members); the components are averaged over a
    ``window`` × ``window`` neighbourhood of the black checkerboard members (normalized convolution) and a 2-means of
    these smoothed values proposes two parts; the direction d between the parts' black mean spectra (standardized,
    orthogonal to their pooled spectrum) is fixed. On the white members only, the parts' mean spectra m₁, m₂ give
    T = d·(z(m₁) − z(m₂)) / sqrt(Σᵢ dᵢ² (τ₁,ᵢ² + τ₂,ᵢ²)), τ the noise of each standardized mean from its pixels'
    scatter about it (offset and scale fitted per pixel). With d independent of the white pixels' noise, T ≈ N(0, 1)
    for a single phase; the cluster is split when T > Φ⁻¹(1 − α / n_tested). Time and memory O(N·E) per cluster.

    Parameters
    ----------
    stack
        Absorbance stack (n_energies, ny, nx), OD.
    labels
        Label map (ny, nx).
    clusters
        Labels to test (the chemical clusters; not the masked 0 or the no-absorber class).
    names
        Optional name per label (``names[k - 1]`` for label k) for the record.
    next_label
        First free label for the parts split off (default: the largest label + 1).
    window
        Side of the smoothing window in pixels (odd), e.g. from :func:`denoise_window`.
    alpha
        Familywise rate of splitting a single phase over the clusters tested.
    model_error
        Spread of one phase's standardized spectrum beyond photon noise that is coherent over a domain
        (calibration, thickness, disorder), per channel (a number or (n_energies,)), standardized units: it does not
        average out over pixels, so it is added to each mean's noise (τ² + model_error²). 0 = photon noise only.
    n_components, min_test_pixels, max_pca_pixels, seed
        Principal components used by the proposal, test pixels needed in each part, PCA subsample, 2-means seed.

    Returns
    -------
    labels, tests
        The map with split-off parts relabelled, and one :class:`SplitTest` per cluster in ``clusters``.
    """
    x = np.asarray(stack)
    lab = np.asarray(labels).astype(np.int32)
    if x.ndim != 3 or x.shape[1:] != lab.shape:
        raise SplitInputError(
            f"stack: shape {x.shape}; expected (n_energies, *labels.shape) = (E, {lab.shape})"
        )
    if x.shape[0] < 4:
        raise SplitInputError(f"stack: {x.shape[0]} energies; expected at least 4 to compare spectra")
    if window < 1 or window % 2 == 0:
        raise SplitInputError(f"window={window}; expected an odd positive number of pixels")
    if not 0 < alpha < 1:
        raise SplitInputError(f"alpha={alpha!r}; expected a probability in (0, 1)")
    ks = [int(k) for k in np.atleast_1d(np.asarray(clusters))]
    if any(k < 1 for k in ks):
        raise SplitInputError(f"clusters={ks}; expected chemical labels ≥ 1")
    model = (
        np.broadcast_to(np.asarray(model_error, dtype=np.float64), (x.shape[0],))
        if np.ndim(model_error) <= 1
        else None
    )
    if model is None or not np.all(np.isfinite(model) & (model >= 0)):
        raise SplitInputError(
            f"model_error: expected a number ≥ 0 or {x.shape[0]} values ≥ 0 (one per energy)"
        )
    out = lab.copy()
    free = int(lab.max()) + 1 if next_label is None else int(next_label)
    yy, xx = np.indices(lab.shape)
    black_full = (yy + xx) % 2 == 0
    rng = np.random.default_rng(seed)
    boxes = ndimage.find_objects(lab)
    pending: list[tuple[int, int, tuple[int, int], float, tuple[slice, ...] | None, NDArray | None]] = []
    for k in ks:
        sl = boxes[k - 1] if k <= len(boxes) else None
        if sl is None:
            pending.append((k, 0, (0, 0), np.nan, None, None))
            continue
        members = lab[sl] == k
        black = black_full[sl]
        spectra = x[:, sl[0], sl[1]][:, members].T.astype(np.float64)  # (n, E)
        ok = np.all(np.isfinite(spectra), axis=1)
        members[members] = ok
        spectra = spectra[ok]
        n = spectra.shape[0]
        result = None
        if n >= 4 * min_test_pixels:
            z = standardize(spectra)
            sub = z[rng.choice(n, min(n, max_pca_pixels), replace=False)]
            centre = sub.mean(axis=0)
            _, _, vt = np.linalg.svd(sub - centre, full_matrices=False)
            result = _propose((z - centre) @ vt[:n_components].T, members, black, window, seed)
        if result is None:
            pending.append((k, n, (0, 0), np.nan, sl, None))
            continue
        part, seen = result
        is_black = black[members]
        test = ~is_black & seen
        groups = [spectra[is_black & (part == g)] for g in (0, 1)]
        tests = [spectra[test & (part == g)] for g in (0, 1)]
        sizes = (len(tests[0]), len(tests[1]))
        if min(sizes) < min_test_pixels or min(len(g) for g in groups) < 2:
            pending.append((k, n, sizes, np.nan, sl, None))
            continue
        zb = [standardize(g.mean(axis=0)) for g in groups]
        pooled = standardize(groups[0].mean(axis=0) + groups[1].mean(axis=0))
        d = zb[0] - zb[1]
        d -= (d @ pooled) * pooled
        d -= d.mean()
        (m0, t0), (m1, t1) = _mean_and_noise(tests[0]), _mean_and_noise(tests[1])
        den = np.sqrt(np.sum(d**2 * (t0**2 + t1**2 + 2 * model**2)))
        stat = float(d @ (standardize(m0) - standardize(m1)) / den) if den > 0 else np.nan
        full_part = np.zeros(members.shape, np.int8)
        full_part[members] = part
        pending.append((k, n, sizes, stat, sl, np.where(members, full_part, -1)))
    n_tested = sum(1 for p in pending if np.isfinite(p[3]))
    threshold = float(norm.isf(alpha / max(n_tested, 1)))
    records = []
    for k, n, sizes, stat, sl, parts in pending:
        split = bool(np.isfinite(stat) and stat > threshold)
        new = None
        if split and parts is not None and sl is not None:
            smaller = int(np.sum(parts == 1) < np.sum(parts == 0))  # the smaller part is split off
            region = out[sl]
            region[parts == smaller] = free
            new, free = free, free + 1
        name = names[k - 1] if names is not None and k - 1 < len(names) else str(k)
        records.append(SplitTest(k, name, n, sizes, stat, threshold, split, new))
    return out, records
