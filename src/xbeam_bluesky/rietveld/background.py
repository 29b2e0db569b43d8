"""Background functions, all linear in their coefficients (GSAS-II's set), and background peaks.

Each function returns a basis matrix B (n_points, n_terms) so that background = B @ coefficients.
Background peaks are broad pseudo-Voigt humps (amorphous scattering, a glass capillary, a cell window)
with refinable position, FWHM and area: :func:`background_peaks`.
"""

from __future__ import annotations

import numpy as np

from xbeam_bluesky.errors import RietveldInputError

__all__ = ["BACKGROUND_PEAK_ETA", "BACKGROUND_TYPES", "background_basis", "background_peaks"]

#: Lorentzian fraction of a background peak's pseudo-Voigt (fixed; the hump's shape is rarely better known)
BACKGROUND_PEAK_ETA = 0.5
_G0 = np.sqrt(4.0 * np.log(2.0) / np.pi)
_C4 = 4.0 * np.log(2.0)

BACKGROUND_TYPES = (
    "chebyshev",
    "cosine",
    "q2_power",
    "q-2_power",
    "lin_interpolate",
    "inv_interpolate",
    "log_interpolate",
)


def _interp_basis(u: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Hat functions: linear interpolation weights of u between the sorted nodes."""
    n = len(nodes)
    if n == 1:
        return np.ones((len(u), 1))
    basis = np.zeros((len(u), n))
    j = np.clip(np.searchsorted(nodes, u, side="right") - 1, 0, n - 2)
    t = (u - nodes[j]) / (nodes[j + 1] - nodes[j])
    rows = np.arange(len(u))
    basis[rows, j] = 1.0 - t
    basis[rows, j + 1] = t
    return basis


def background_basis(kind: str, n_terms: int, two_theta: np.ndarray, wavelength: float) -> np.ndarray:
    """Basis matrix of a background function over ``two_theta`` (deg).

    Parameters
    ----------
    kind
        One of :data:`BACKGROUND_TYPES`.
    n_terms
        Number of coefficients (≥ 1).
    two_theta
        The 2θ values (deg) of the fitted range; Chebyshev and the interpolations span its ends.
    wavelength
        Wavelength (Å) for the Q power series.
    """
    if kind not in BACKGROUND_TYPES:
        raise RietveldInputError(f"background type {kind!r}: expected one of {', '.join(BACKGROUND_TYPES)}")
    if not 1 <= int(n_terms) <= 36:
        raise RietveldInputError(f"background terms {n_terms!r}: expected an integer from 1 to 36")
    n = int(n_terms)
    x = np.asarray(two_theta, dtype=float)
    lo, hi = float(x[0]), float(x[-1])
    if kind == "chebyshev":
        u = 2.0 * (x - lo) / (hi - lo) - 1.0 if hi > lo else np.zeros_like(x)
        return np.polynomial.chebyshev.chebvander(u, n - 1)
    if kind == "cosine":
        return np.stack([np.cos(np.radians(180.0 * x * i / hi)) for i in range(n)], axis=1)
    q = 4.0 * np.pi * np.sin(np.radians(x / 2.0)) / wavelength
    # Q is scaled to 1 at the range end that keeps the terms ≤ 1, so high orders stay well conditioned;
    # the function space is the same as GSAS-II's, only the coefficients are rescaled.
    if kind == "q2_power":
        u = q / q.max()
        return np.stack([u ** (2 * i) for i in range(n)], axis=1)
    if kind == "q-2_power":
        u = q.min() / q
        return np.stack([u ** (2 * i) for i in range(n)], axis=1)
    if kind == "lin_interpolate":
        return _interp_basis(x, np.linspace(lo, hi, n))
    if kind == "inv_interpolate":
        return _interp_basis(1.0 / x, np.linspace(1.0 / hi, 1.0 / lo, n))[:, ::-1]
    # log_interpolate
    return _interp_basis(np.log(x), np.linspace(np.log(lo), np.log(hi), n))


def background_peaks(two_theta: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of pseudo-Voigt background peaks and the derivatives with respect to their parameters.

    Parameters
    ----------
    two_theta
        The 2θ values (deg).
    peaks
        (n_peaks, 3): position (deg 2θ), FWHM (deg 2θ) and area (counts × deg) of each peak; the
        Lorentzian fraction is :data:`BACKGROUND_PEAK_ETA`.

    Returns
    -------
    tuple of numpy.ndarray
        The curve (n_points,) and the Jacobian (n_points, 3 n_peaks), columns ordered position, FWHM,
        area per peak.
    """
    x = np.asarray(two_theta, dtype=float)
    pk = np.asarray(peaks, dtype=float).reshape(-1, 3)
    curve = np.zeros_like(x)
    jac = np.zeros((len(x), 3 * len(pk)))
    eta = BACKGROUND_PEAK_ETA
    for i, (pos, fwhm, area) in enumerate(pk):
        u = (x - pos) / fwhm
        g = _G0 / fwhm * np.exp(-_C4 * u * u)
        lor = 2.0 / (np.pi * fwhm) / (1.0 + 4.0 * u * u)
        shape = (1.0 - eta) * g + eta * lor
        # d/du and d/dfwhm of each component (u = (x − pos)/fwhm)
        dg_du = -2.0 * _C4 * u * g
        dl_du = -8.0 * u * lor / (1.0 + 4.0 * u * u)
        ds_du = (1.0 - eta) * dg_du + eta * dl_du
        curve += area * shape
        jac[:, 3 * i] = area * ds_du * (-1.0 / fwhm)
        jac[:, 3 * i + 1] = area * (-shape / fwhm + ds_du * (-u / fwhm))
        jac[:, 3 * i + 2] = shape
    return curve, jac
