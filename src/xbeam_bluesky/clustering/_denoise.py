"""Spatial denoising of label maps: near-pure seeds, 8-connected flood fill, 3×3 dilation refill."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)


def pure_regions(mask: ArrayLike, *, window: int = 5, min_count: int = 23) -> NDArray[np.bool_]:
    """Pixels of ``mask`` 8-connected (through ``mask``) to a near-pure window.

    A pixel of ``mask`` is a seed when its ``window`` × ``window`` neighbourhood holds at least
    ``min_count`` pixels of ``mask``; the result is every pixel of ``mask`` reached from a seed by an
    8-connected flood fill through ``mask``.

    Parameters
    ----------
    mask
        Boolean image, shape (ny, nx).
    window
        Odd window side in pixels.
    min_count
        Seed threshold (pixels of the window inside ``mask``).
    """
    m = np.asarray(mask, dtype=bool)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window={window}; expected an odd positive number of pixels")
    if not 1 <= min_count <= window * window:
        raise ValueError(
            f"min_count={min_count}; expected 1..{window * window} for a {window}×{window} window"
        )
    counts = ndimage.correlate(m.astype(np.uint16), np.ones((window, window), np.uint16), mode="constant")
    seeds = m & (counts >= min_count)
    if not seeds.any():
        return np.zeros_like(m)
    comp, _ = ndimage.label(m, structure=_EIGHT)
    keep = np.zeros(comp.max() + 1, dtype=bool)
    keep[np.unique(comp[seeds])] = True
    keep[0] = False
    return keep[comp]


def denoise_labels(
    labels: ArrayLike, *, window: int = 5, min_count: int = 23, keep_zero: ArrayLike | None = None
) -> NDArray[np.int32]:
    """Spatially denoise a label map as in Ito et al. (2024).

    For each cluster, pixels whose ``window`` × ``window`` neighbourhood holds at least ``min_count``
    pixels of that cluster are seeds; an 8-connected flood fill from the seeds through the cluster's
    pixels keeps them, the other pixels of the cluster are cleared. Cleared pixels are refilled by
    repeated 3×3 dilation of the surviving clusters (computed in one pass as the nearest survivor in
    chessboard distance, which is what repeated 3×3 dilation reaches first).

    Parameters
    ----------
    labels
        Label map (ny, nx); 0 = masked/unassigned, left as 0.
    window, min_count
        Seed window side (odd, pixels) and threshold.
    keep_zero
        Optional extra mask of pixels that must stay 0 (e.g. outside the sample).

    Returns
    -------
    labels
        Denoised int32 map; if no cluster has a seed anywhere the map is returned unchanged.
    """
    lab = np.asarray(labels).astype(np.int32)
    zero = lab == 0 if keep_zero is None else (lab == 0) | np.asarray(keep_zero, dtype=bool)
    survive = np.zeros(lab.shape, dtype=bool)
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        # pad the bounding box so windows at its edge see the same neighbourhood as in the full map
        pad = tuple(
            slice(max(s.start - window, 0), min(s.stop + window, n))
            for s, n in zip(sl, lab.shape, strict=True)
        )
        survive[pad] |= pure_regions(lab[pad] == k, window=window, min_count=min_count)
    if not survive.any():
        return lab
    iy, ix = ndimage.distance_transform_cdt(
        ~survive, metric="chessboard", return_distances=False, return_indices=True
    )
    out = lab[iy, ix]
    out[survive] = lab[survive]
    out[zero] = 0
    return out
