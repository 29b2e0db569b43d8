"""Spatial denoising of label maps: near-pure seeds, 8-connected flood fill, 3×3 dilation refill.

The seed window can be given by the pixel size and the smallest feature to keep (µm), and a cleared region that the
assignment supports with high confidence (summed margin) is kept, so denoising never erases a real small phase.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.stats import norm

from xbeam_bluesky.errors import ClusteringInputError

logger = logging.getLogger(__name__)

_EIGHT = np.ones((3, 3), dtype=bool)
#: Fill fraction of the published seed rule (23 of a 5×5 window).
SEED_FILL = 23 / 25
#: Familywise false-protection rate over the cleared regions of a map.
PROTECT_ALPHA = 0.01
#: Above this fraction of novel pixels the map is flagged (sites from the data may be swallowing it).
NOVEL_WARNING_FRACTION = 0.20


class DenoiseInputError(ClusteringInputError):
    """Bad pixel size, feature size or maps given to the denoising."""


def denoise_window(pixel_um: float, feature_um: float) -> tuple[int, int]:
    """Seed window and threshold that keep every compact feature at least ``feature_um`` across.

    A disc of diameter d pixels holds a w × w square when w ≤ d/√2, so a feature that size has a seed (and the flood
    fill keeps all of it). The window is the largest odd w ≤ d/√2 and the threshold keeps the published fill fraction
    (23/25). A window of 1 keeps every pixel: denoising is then a no-op, as it should be for features of ≤ 2 pixels.

    Parameters
    ----------
    pixel_um
        Pixel size in µm.
    feature_um
        Diameter of the smallest feature that must survive, in µm.

    Returns
    -------
    window, min_count
        Odd window side in pixels and seed threshold in pixels.
    """
    if not (math.isfinite(pixel_um) and pixel_um > 0):
        raise DenoiseInputError(f"pixel_um={pixel_um!r}; expected a positive pixel size in µm")
    if not (math.isfinite(feature_um) and feature_um > 0):
        raise DenoiseInputError(f"feature_um={feature_um!r}; expected a positive smallest-feature size in µm")
    w = math.floor(feature_um / pixel_um / math.sqrt(2.0))
    w = max(1, w if w % 2 == 1 else w - 1)
    return w, max(1, round(SEED_FILL * w * w))


def novel_fraction_check(
    novel: ArrayLike, valid: ArrayLike, *, limit: float = NOVEL_WARNING_FRACTION
) -> dict[str, float | bool]:
    """Fraction of novel pixels among ``valid`` ones, with a logged warning when it exceeds ``limit``.

    Returns
    -------
    dict
        ``novel_fraction`` and ``novel_warning`` (for the result summary).
    """
    nov = np.asarray(novel, dtype=bool)
    ok = np.asarray(valid, dtype=bool)
    if nov.shape != ok.shape:
        raise DenoiseInputError(f"novel: shape {nov.shape}, expected the valid map's {ok.shape}")
    n = int(ok.sum())
    frac = float((nov & ok).sum() / n) if n else 0.0
    warn = frac > limit
    if warn:
        logger.warning(
            "%.0f %% of the %d assigned pixels are novel (> %.0f %%): no site explains them within the noise; the "
            "noise model (i0, detector) or the references may not fit these data, and sites opened from the data "
            "may swallow the map",
            100 * frac,
            n,
            100 * limit,
        )
    return {"novel_fraction": frac, "novel_warning": warn}


def _window_counts(mask: NDArray[np.bool_], window: int) -> NDArray[np.unsignedinteger]:
    """Pixels of ``mask`` in the ``window`` × ``window`` neighbourhood of every pixel (outside the image counts
    as not in ``mask``): two 1-D passes of shifted sums, exact integers in a type wide enough for window²."""
    kind = np.uint8 if window * window <= np.iinfo(np.uint8).max else np.uint32
    counts = mask.astype(kind)
    half = window // 2
    for axis in (0, 1):
        line = np.moveaxis(counts, axis, 0)
        total = line.copy()
        for d in range(1, min(half, line.shape[0] - 1) + 1):
            total[d:] += line[:-d]
            total[:-d] += line[d:]
        counts = np.moveaxis(total, 0, axis)
    return counts


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
        raise DenoiseInputError(f"window={window}; expected an odd positive number of pixels")
    if not 1 <= min_count <= window * window:
        raise DenoiseInputError(
            f"min_count={min_count}; expected 1..{window * window} for a {window}×{window} window"
        )
    seeds = m & (_window_counts(m, window) >= min_count)
    if not seeds.any():
        return np.zeros_like(m)
    comp, _ = ndimage.label(m, structure=_EIGHT)
    keep = np.zeros(comp.max() + 1, dtype=bool)
    keep[comp[seeds]] = True
    keep[0] = False
    return keep[comp]


def _protected(
    lab: NDArray[np.int32], cleared: NDArray[np.bool_], confidence: NDArray[np.float64], alpha: float
) -> NDArray[np.bool_]:
    """Cleared regions whose summed assignment margin is significant over all cleared regions.

    Each 8-connected region of one label's cleared pixels gets Z = Σ c_p / √n (c_p the pixel's D margin between its
    cluster and the best other one, ~N(δ, 1) per pixel): the margin of the region's mean in units of its noise. A
    region is kept when Z > Φ⁻¹(1 − α / n_regions) (Bonferroni over the regions).
    """
    regions = np.zeros(lab.shape, np.int64)
    n_regions = 0
    for k, sl in enumerate(ndimage.find_objects(np.where(cleared, lab, 0)), start=1):
        if sl is None:
            continue
        comp, n = ndimage.label(cleared[sl] & (lab[sl] == k), structure=_EIGHT)
        regions[sl] = np.where(comp > 0, comp + n_regions, regions[sl])
        n_regions += n
    if n_regions == 0:
        return np.zeros(lab.shape, bool)
    idx = np.arange(1, n_regions + 1)
    c = np.clip(np.nan_to_num(confidence, nan=0.0, posinf=1e6), 0.0, 1e6)
    total = ndimage.sum_labels(c, regions, idx)
    size = ndimage.sum_labels(np.ones(lab.shape), regions, idx)
    z = total / np.sqrt(size)
    keep = np.zeros(n_regions + 1, bool)
    keep[1:] = z > norm.isf(alpha / n_regions)
    return keep[regions]


def denoise_labels(
    labels: ArrayLike,
    *,
    window: int = 5,
    min_count: int = 23,
    keep_zero: ArrayLike | None = None,
    confidence: ArrayLike | None = None,
    fixed: ArrayLike | None = None,
    protect_alpha: float = PROTECT_ALPHA,
) -> NDArray[np.int32]:
    """Spatially denoise a label map as in Ito et al. (2024), without erasing confidently assigned regions.

    For each cluster, pixels whose ``window`` × ``window`` neighbourhood holds at least ``min_count``
    pixels of that cluster are seeds; an 8-connected flood fill from the seeds through the cluster's
    pixels keeps them, the other pixels of the cluster are cleared. With ``confidence``, a cleared region
    (8-connected, one label) whose summed margin is significant (:func:`_protected`) is kept. Cleared pixels
    are refilled by repeated 3×3 dilation of the surviving clusters (computed in one pass as the nearest
    survivor in chessboard distance, which is what repeated 3×3 dilation reaches first).

    Parameters
    ----------
    labels
        Label map (ny, nx); 0 = masked/unassigned, left as 0.
    window, min_count
        Seed window side (odd, pixels) and threshold (see :func:`denoise_window` for a window in µm).
    keep_zero
        Optional extra mask of pixels that must stay 0 (e.g. outside the sample).
    confidence
        Per-pixel D margin of the assignment (same shape); ``None`` = the published rule only.
    fixed
        Pixels whose label is evidence, not chemistry (the "no <element>" class): they keep their label, are
        never cleared, never refilled and never spread into other pixels.
    protect_alpha
        Familywise rate of keeping a noise region by its confidence.

    Returns
    -------
    labels
        Denoised int32 map; if no cluster has a seed anywhere (and nothing is protected) the map is returned
        unchanged.
    """
    lab0 = np.asarray(labels).astype(np.int32)
    fix = np.zeros(lab0.shape, bool) if fixed is None else np.asarray(fixed, dtype=bool)
    if fix.shape != lab0.shape:
        raise DenoiseInputError(f"fixed: shape {fix.shape}, expected the label map's {lab0.shape}")
    lab = np.where(fix, 0, lab0)
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
    if confidence is not None:
        conf = np.asarray(confidence, dtype=np.float64)
        if conf.shape != lab.shape:
            raise DenoiseInputError(f"confidence: shape {conf.shape}, expected the label map's {lab.shape}")
        if not 0 < protect_alpha < 1:
            raise DenoiseInputError(f"protect_alpha={protect_alpha!r}; expected a probability in (0, 1)")
        survive |= _protected(lab, (lab > 0) & ~survive & ~zero, conf, protect_alpha)
    if not survive.any():
        return lab0
    iy, ix = ndimage.distance_transform_cdt(
        ~survive, metric="chessboard", return_distances=False, return_indices=True
    )
    out = lab[iy, ix]
    out[survive] = lab[survive]
    out[zero] = 0
    out[fix] = lab0[fix]
    return out
