"""Peak profiles: Thompson–Cox–Hastings pseudo-Voigt with Finger–Cox–Jephcoat axial asymmetry.

Conventions follow GSAS-II (constant-wavelength, "CW"):

* Gaussian variance σ² = U tan²θ + V tanθ + W (centidegrees²), Gaussian FWHM = √(8 ln2 σ²).
* Lorentzian FWHM γ = X / cosθ + Y tanθ (centidegrees).
* TCH combination of the two FWHMs into one FWHM Γ and mixing η.
* FCJ asymmetry with S/L = H/L = (SH/L)/2 (as GSAS-II's current Finger–Hester profile code); the
  profile is a weighted sum of pseudo-Voigts over the axial-divergence angle δ between 2φ_min and the
  peak position. We integrate it with Gauss–Legendre nodes after the substitution that removes the
  1/√ singularity at δ = 2θ, with the number of nodes chosen from the asymmetry width / FWHM.
* Or, when the peak set carries an :class:`~.axial.AxialDivergence` geometry, the full axial model
  (Soller slits, source/sample/receiver lengths) in place of FCJ, with the same quadrature machinery.
* Peaks are evaluated only inside the window [pos − 10·(fwhm + shl·|cos 2θ|), pos + 15·fwhm]
  (mirrored above 90°), GSAS-II's cut-off; with the axial model, the window is widened by the
  aberration's extent on each side.

All angles here are in degrees; profiles are normalised to unit area in degrees⁻¹.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .axial import AxialDivergence, axial_extent, axial_quadrature

__all__ = ["PeakSet", "ProfileTerms", "evaluate_peaks", "tch_mix"]

LN2 = np.log(2.0)
_TCH = (1.0, 2.69269, 2.42843, 4.47163, 0.07842, 1.0)
_ETA = (1.36603, -0.47719, 0.11116)
_NODE_SETS = (1, 2, 4, 8, 16, 32, 64)
#: points within _NEAR_FWHM FWHM + _NEAR_SPAN asymmetry widths of a peak get the full FCJ quadrature
_NEAR_FWHM = 2.0
_NEAR_SPAN = 5.0
_GL_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _gauss_legendre01(n: int) -> tuple[np.ndarray, np.ndarray]:
    if n not in _GL_CACHE:
        x, w = np.polynomial.legendre.leggauss(n)
        _GL_CACHE[n] = (0.5 * (x + 1.0), 0.5 * w)
    return _GL_CACHE[n]


def tch_mix(fwhm_g: np.ndarray, fwhm_l: np.ndarray) -> tuple[np.ndarray, ...]:
    """TCH total FWHM Γ and mixing η, with their derivatives wrt the Gaussian and Lorentzian FWHMs.

    Returns
    -------
    tuple
        (Γ, η, dΓ/dΓg, dΓ/dΓl, dη/dΓg, dη/dΓl)
    """
    g, l = fwhm_g, fwhm_l  # noqa: E741
    c = _TCH
    p5 = (
        c[0] * g**5
        + c[1] * g**4 * l
        + c[2] * g**3 * l**2
        + c[3] * g**2 * l**3
        + c[4] * g * l**4
        + c[5] * l**5
    )
    big = p5**0.2
    dp_dg = 5 * c[0] * g**4 + 4 * c[1] * g**3 * l + 3 * c[2] * g**2 * l**2 + 2 * c[3] * g * l**3 + c[4] * l**4
    dp_dl = c[1] * g**4 + 2 * c[2] * g**3 * l + 3 * c[3] * g**2 * l**2 + 4 * c[4] * g * l**3 + 5 * c[5] * l**4
    dbig_dg = dp_dg / (5 * big**4)
    dbig_dl = dp_dl / (5 * big**4)
    q = l / big
    eta = _ETA[0] * q + _ETA[1] * q**2 + _ETA[2] * q**3
    deta_dq = _ETA[0] + 2 * _ETA[1] * q + 3 * _ETA[2] * q**2
    dq_dg = -l / big**2 * dbig_dg
    dq_dl = 1.0 / big - l / big**2 * dbig_dl
    return big, eta, dbig_dg, dbig_dl, deta_dq * dq_dg, deta_dq * dq_dl


@dataclass
class ProfileTerms:
    """Per-pair profile values and derivatives, laid out peak by peak (CSC order).

    Attributes
    ----------
    rows
        Point index of each (point, peak) pair.
    indptr
        CSC column pointer: pairs of peak j are ``indptr[j]:indptr[j+1]``.
    value
        Unit-area profile (deg⁻¹).
    d_pos, d_fwhm_g, d_fwhm_l
        Derivatives wrt peak position, Gaussian FWHM and Lorentzian FWHM (per degree).
    """

    rows: np.ndarray
    indptr: np.ndarray
    value: np.ndarray
    d_pos: np.ndarray | None
    d_fwhm_g: np.ndarray | None
    d_fwhm_l: np.ndarray | None

    def matrix(self, data: np.ndarray, n_points: int) -> sp.csc_matrix:
        """A sparse (n_points, n_peaks) matrix with ``data`` in the pair layout."""
        n_peaks = len(self.indptr) - 1
        return sp.csc_matrix((data, self.rows, self.indptr), shape=(n_points, n_peaks))


@dataclass
class PeakSet:
    """Peaks to evaluate: positions and widths in degrees 2θ.

    Attributes
    ----------
    pos
        Peak positions (deg 2θ).
    fwhm_g, fwhm_l
        Gaussian and Lorentzian FWHM (deg).
    shl
        FCJ asymmetry SH/L (dimensionless, S/L + H/L); ignored when ``axial`` is given.
    axial
        Axial geometry for the full axial model, or None for FCJ.
    """

    pos: np.ndarray
    fwhm_g: np.ndarray
    fwhm_l: np.ndarray
    shl: float
    axial: AxialDivergence | None = None


def _fcj_min(pos: np.ndarray, shl: float) -> np.ndarray:
    """FCJ's 2φ_min (deg): the far end of the axial-divergence tail."""
    arg = np.sqrt(1.0 + shl * shl) * np.cos(np.radians(pos))
    return np.degrees(np.arccos(np.clip(arg, -1.0, 1.0)))


def _node_groups(width: np.ndarray, fwhm: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Group peaks by the number of quadrature nodes their asymmetry width / FWHM needs."""
    ratio = width / np.maximum(fwhm, 1e-12)
    want = np.where(ratio < 0.002, 1, np.ceil(4.0 * ratio + 1.0))
    nodes = np.array(_NODE_SETS)
    choice = nodes[np.minimum(np.searchsorted(nodes, want), len(nodes) - 1)]
    return [(np.flatnonzero(choice == n), int(n)) for n in nodes if np.any(choice == n)]


def _fcj_offsets(pos: np.ndarray, emin: np.ndarray, shl: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Node offsets δ − pos (deg) and normalised weights (n_peaks, n) of the FCJ convolution."""
    v, wgl = _gauss_legendre01(n)
    span = (pos - emin)[:, None]
    delta = pos[:, None] - span * v[None, :] ** 2
    c2t = np.cos(np.radians(pos))[:, None]
    cd = np.cos(np.radians(delta))
    tmp = cd * cd - c2t * c2t
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(tmp > 0, np.abs(c2t) / np.sqrt(np.maximum(tmp, 1e-300)), 1.0)
    # FCJ eq. 7a with S/L = H/L: W/(h |cos δ|) = (SH/L · L/h − 1)/|cos δ|, on both sides of 90°
    g = (shl * f - 1.0) / np.abs(cd)
    # the substitution δ = pos − span·v² has Jacobian 2·span·v; span cancels in the normalisation
    w = wgl[None, :] * g * v[None, :]
    w = np.where(np.isfinite(w), w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    total = np.where(np.abs(total) > 0, total, 1.0)
    return delta - pos[:, None], w / total


def _pv(dx: np.ndarray, big: np.ndarray, eta: np.ndarray, want_derivs: bool):
    """Unit-area pseudo-Voigt and (optionally) d/d(dx), d/dΓ, d/dη."""
    inv_b = 1.0 / big
    u = dx * (2.0 * inv_b)
    u *= u
    lor = (2.0 / np.pi) * inv_b / (1.0 + u)
    gau = np.exp(-LN2 * u)
    gau *= (2.0 * np.sqrt(LN2 / np.pi)) * inv_b
    val = gau + eta * (lor - gau)
    if not want_derivs:
        return val, None, None, None
    d_lor_dx = lor * (-8.0 * dx * inv_b * inv_b) / (1.0 + u)
    d_gau_dx = gau * (-8.0 * LN2 * dx * inv_b * inv_b)
    d_dx = d_gau_dx + eta * (d_lor_dx - d_gau_dx)
    d_lor_db = lor * inv_b * (-1.0 + 2.0 * u / (1.0 + u))
    d_gau_db = gau * inv_b * (-1.0 + 2.0 * LN2 * u)
    d_big = d_gau_db + eta * (d_lor_db - d_gau_db)
    d_eta = lor - gau
    return val, d_dx, d_big, d_eta


@dataclass
class _Layout:
    """Index bookkeeping of the (point, peak) pairs; depends only on the windows and node groups."""

    indptr: np.ndarray
    total: int
    starts_ord: np.ndarray
    peak_of: np.ndarray
    rows_ord: np.ndarray
    rows: np.ndarray
    dest: np.ndarray | None
    locs: list[np.ndarray | None]


_LAYOUTS: OrderedDict[bytes, _Layout] = OrderedDict()
_LAYOUT_CACHE_SIZE = 4
_LAYOUT_LOCK = threading.Lock()


def _layout(n_x: int, i0: np.ndarray, i1: np.ndarray, groups: list[tuple[np.ndarray, int]]) -> _Layout:
    """Pair layout for these windows and groups; the few most recent layouts are reused, because
    successive least-squares evaluations usually move peaks by much less than a step."""
    key = b"|".join(
        [
            str(n_x).encode(),
            i0.tobytes(),
            i1.tobytes(),
            *(idx.tobytes() + str(n).encode() for idx, n in groups),
        ]
    )
    with _LAYOUT_LOCK:
        hit = _LAYOUTS.get(key)
        if hit is not None:
            _LAYOUTS.move_to_end(key)
            return hit
    n_peaks = len(i0)
    counts = np.maximum(i1 - i0, 0)
    indptr = np.zeros(n_peaks + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    total = int(indptr[-1])
    order = np.concatenate([idx for idx, _ in groups]) if len(groups) > 1 else np.arange(n_peaks)
    c_ord = counts[order]
    starts_ord = np.zeros(n_peaks + 1, dtype=np.int64)
    np.cumsum(c_ord, out=starts_ord[1:])
    peak_of = np.repeat(order, c_ord)
    local = np.arange(total) - np.repeat(starts_ord[:-1], c_ord)
    rows_ord = i0[peak_of] + local
    locs: list[np.ndarray | None] = []
    pstart = 0
    for idx, n in groups:
        npk = len(idx)
        locs.append(np.repeat(np.arange(npk), c_ord[pstart : pstart + npk]) if n > 1 else None)
        pstart += npk
    if len(groups) > 1:
        dest = indptr[peak_of] + local
        rows = np.empty(total, dtype=np.int64)
        rows[dest] = rows_ord
    else:
        dest, rows = None, rows_ord
    lay = _Layout(indptr, total, starts_ord, peak_of, rows_ord, rows, dest, locs)
    with _LAYOUT_LOCK:
        _LAYOUTS[key] = lay
        if len(_LAYOUTS) > _LAYOUT_CACHE_SIZE:
            _LAYOUTS.popitem(last=False)
    return lay


def _scatter(values: np.ndarray, dest: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[dest] = values
    return out


def peak_windows(peaks: PeakSet) -> tuple[np.ndarray, np.ndarray]:
    """Low and high extent (deg) of each peak's evaluation window (GSAS-II cut-off)."""
    fwhm = 2.355 * peaks.fwhm_g / np.sqrt(8 * LN2) + peaks.fwhm_l
    if peaks.axial is not None:
        lo, hi = axial_extent(peaks.pos, peaks.axial)
        above = peaks.pos > 90.0
        return (
            np.where(above, 15.0, 10.0) * fwhm + np.maximum(-lo, 0.0),
            np.where(above, 10.0, 15.0) * fwhm + np.maximum(hi, 0.0),
        )
    fmin = 10.0 * (fwhm + peaks.shl * np.abs(np.cos(np.radians(peaks.pos))))
    fmax = 15.0 * fwhm
    above = peaks.pos > 90.0
    low = np.where(above, fmax, fmin)
    high = np.where(above, fmin, fmax)
    return low, high


def evaluate_peaks(x: np.ndarray, peaks: PeakSet, want_derivs: bool = True) -> ProfileTerms:
    """Evaluate every peak on the sorted 2θ grid ``x`` (deg) inside its window.

    Parameters
    ----------
    x
        Sorted 2θ values (deg).
    peaks
        Positions and widths.
    want_derivs
        Also compute derivatives wrt position and the two FWHMs.
    """
    low, high = peak_windows(peaks)
    i0 = np.searchsorted(x, peaks.pos - low)
    i1 = np.searchsorted(x, peaks.pos + high)
    fg = np.maximum(peaks.fwhm_g, 1e-6)
    fl = np.maximum(peaks.fwhm_l, 1e-6)
    big, eta, dbig_dg, dbig_dl, deta_dg, deta_dl = tch_mix(fg, fl)
    if peaks.axial is not None:
        lo, hi = axial_extent(peaks.pos, peaks.axial)
        width = hi - lo
        groups = _node_groups(width, big)
    else:
        emin = _fcj_min(peaks.pos, peaks.shl)
        width = np.abs(peaks.pos - emin)
        groups = _node_groups(width, big) if peaks.shl > 0 else [(np.arange(len(peaks.pos)), 1)]
    lay = _layout(len(x), i0, i1, groups)
    indptr, total, starts_ord, peak_of, rows_ord = (
        lay.indptr,
        lay.total,
        lay.starts_ord,
        lay.peak_of,
        lay.rows_ord,
    )
    value = np.empty(total)
    d_pos = np.empty(total) if want_derivs else None
    d_g = np.empty(total) if want_derivs else None
    d_l = np.empty(total) if want_derivs else None
    pstart = 0
    for gi, (idx, n) in enumerate(groups):
        npk = len(idx)
        stop = int(starts_ord[pstart + npk])
        sl = slice(int(starts_ord[pstart]), stop)
        pstart += npk
        if sl.stop == sl.start:
            continue
        pk = peak_of[sl]
        dx = x[rows_ord[sl]] - peaks.pos[pk]
        b = big[pk]
        e = eta[pk]
        if n == 1:
            val, ddx, dbig, deta = _pv(dx, b, e, want_derivs)
        else:
            if peaks.axial is not None:
                offs, wts = axial_quadrature(peaks.pos[idx], peaks.axial, n)
            else:
                offs, wts = _fcj_offsets(peaks.pos[idx], emin[idx], peaks.shl, n)
            loc = lay.locs[gi]
            # far from the peak (in units of the asymmetry width) the convolution is a pseudo-Voigt
            # shifted to the asymmetry centroid: the neglected second-order term is ~3 var(δ)/D² of the tail
            centroid = np.einsum("ij,ij->i", offs, wts)
            reach = _NEAR_SPAN * width[idx] + _NEAR_FWHM * big[idx]
            near = np.abs(dx - centroid[loc]) <= reach[loc]
            val, ddx, dbig, deta = _pv(dx - centroid[loc], b, e, want_derivs)
            if np.any(near):
                o = offs[loc[near]]
                w = wts[loc[near]]
                v, ddx_n, dbig_n, deta_n = _pv(dx[near, None] - o, b[near, None], e[near, None], want_derivs)
                val[near] = np.einsum("ij,ij->i", v, w)
                if want_derivs:
                    ddx[near] = np.einsum("ij,ij->i", ddx_n, w)
                    dbig[near] = np.einsum("ij,ij->i", dbig_n, w)
                    deta[near] = np.einsum("ij,ij->i", deta_n, w)
        value[sl] = val
        if want_derivs:
            d_pos[sl] = -ddx
            d_g[sl] = dbig * dbig_dg[pk] + deta * deta_dg[pk]
            d_l[sl] = dbig * dbig_dl[pk] + deta * deta_dl[pk]
    rows = lay.rows
    if lay.dest is not None:
        value = _scatter(value, lay.dest)
        if want_derivs:
            d_pos, d_g, d_l = _scatter(d_pos, lay.dest), _scatter(d_g, lay.dest), _scatter(d_l, lay.dest)
    return ProfileTerms(rows=rows, indptr=indptr, value=value, d_pos=d_pos, d_fwhm_g=d_g, d_fwhm_l=d_l)
