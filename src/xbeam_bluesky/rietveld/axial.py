"""Axial divergence from the instrument geometry: the full axial model of Cheary & Coelho (1998).

A Bragg–Brentano diffractometer has a line source, a flat sample and a receiving slit that all extend
along the goniometer axis, with Soller slits limiting the axial angles of the incident and diffracted
rays. A ray from source height z_x through sample height z_s to slit height z_r has axial angles
β₁ = (z_s − z_x)/R and β₂ = (z_r − z_s)/R, and the angle measured in the equatorial plane differs from
the Bragg angle 2θ by, to second order in β (Cheary & Coelho, J. Appl. Cryst. 31 (1998) 851),

    ε = β₁β₂ / sin 2θ − (β₁² + β₂²)/2 · cot 2θ        (radians).

(For a typical lab geometry the mean and width of ε agree with exact ray tracing within 3 % for
10° ≤ 2θ ≤ 170°, and within 7–12 % at 5° and 175°, where β is no longer small against θ or 90° − θ.)

The heights are uniform over the source, sample and receiver lengths and each Soller slit transmits
T(β) = max(0, 1 − |β|/Δ) (Δ its angular aperture). The joint distribution of (β₁β₂, −(β₁² + β₂²)/2)
does not depend on 2θ, so it is tabulated once per geometry and every peak's aberration profile is the
distribution of a linear combination of the two — a few thousand weighted samples, binned into the
quadrature nodes the profile code convolves with.

Unlike the one-parameter FCJ term (which has no Soller slits), this keeps the axial tails of the real
slit geometry: on lab data FCJ's SH/L, fitted to the low-angle tails, biases the lattice parameter
(docs/decisions/rietveld-lab6-asymmetry.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.spatial import ConvexHull

from xbeam_bluesky.errors import RietveldInputError

__all__ = ["AxialDivergence", "axial_extent", "axial_quadrature"]

#: Gauss–Legendre nodes along each of the source, sample and receiver lengths
_N_HEIGHTS = 24
#: bins of the tabulated (β₁β₂, −(β₁²+β₂²)/2) distribution along each axis
_N_TABLE = 40


@dataclass(frozen=True)
class AxialDivergence:
    """Axial geometry of a Bragg–Brentano diffractometer.

    Attributes
    ----------
    soller
        Angular aperture Δ of the primary and of the secondary Soller slits (deg); transmission
        1 − |β|/Δ.
    source_length, sample_length, receiver_length
        Axial lengths of the source line (tube focus), the illuminated sample and the receiving slit
        or detector strip (mm).
    radius
        Goniometer radius (mm), source–sample and sample–receiver distance.
    """

    soller: float
    source_length: float
    sample_length: float
    receiver_length: float
    radius: float

    def __post_init__(self) -> None:
        for name in ("soller", "source_length", "sample_length", "receiver_length", "radius"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise RietveldInputError(f"axial divergence {name} = {value!r}: expected a positive number")


@lru_cache(maxsize=16)
def _table(geom: AxialDivergence) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted samples (a, b, w) of a = β₁β₂, b = −(β₁² + β₂²)/2 (rad²) and their hull vertices."""
    u, wq = np.polynomial.legendre.leggauss(_N_HEIGHTS)
    u, wq = 0.5 * u, 0.5 * wq
    zx, zs, zr = (u * length for length in (geom.source_length, geom.sample_length, geom.receiver_length))
    b1 = (zs[None, :, None] - zx[:, None, None]) / geom.radius
    b2 = (zr[None, None, :] - zs[None, :, None]) / geom.radius
    aperture = np.radians(geom.soller)
    trans = np.clip(1.0 - np.abs(b1) / aperture, 0.0, None) * np.clip(1.0 - np.abs(b2) / aperture, 0.0, None)
    w = (wq[:, None, None] * wq[None, :, None] * wq[None, None, :]) * trans
    a = np.broadcast_to(b1 * b2, w.shape).ravel()
    b = np.broadcast_to(-0.5 * (b1 * b1 + b2 * b2), w.shape).ravel()
    w = w.ravel()
    keep = w > 0
    if not np.any(keep):
        raise RietveldInputError(f"axial divergence {geom}: the Soller slits transmit no ray")
    a, b, w = a[keep], b[keep], w[keep]
    # compress to the weighted mean of each cell of an _N_TABLE² grid: keeps the mean exactly
    ia = _bin(a, _N_TABLE)
    ib = _bin(b, _N_TABLE)
    cell = ia * _N_TABLE + ib
    mass = np.bincount(cell, weights=w, minlength=_N_TABLE * _N_TABLE)
    full = mass > 0
    a_c = np.bincount(cell, weights=w * a, minlength=mass.size)[full] / mass[full]
    b_c = np.bincount(cell, weights=w * b, minlength=mass.size)[full] / mass[full]
    w_c = mass[full] / mass.sum()
    pts = np.column_stack([a_c, b_c])
    hull = pts[ConvexHull(pts).vertices] if len(pts) >= 3 and np.ptp(a_c) > 0 and np.ptp(b_c) > 0 else pts
    return a_c, b_c, w_c, hull


def _bin(v: np.ndarray, n: int) -> np.ndarray:
    lo, hi = v.min(), v.max()
    if hi <= lo:
        return np.zeros(len(v), dtype=np.int64)
    return np.minimum(((v - lo) / (hi - lo) * n).astype(np.int64), n - 1)


def _coefficients(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1/sin 2θ, cot 2θ) at peak positions ``pos`` (deg 2θ), converted to give ε in degrees."""
    t = np.radians(pos)
    s = np.sin(t)
    return np.degrees(1.0 / s), np.degrees(np.cos(t) / s)


def axial_extent(pos: np.ndarray, geom: AxialDivergence) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest aberration ε (deg) of each peak at ``pos`` (deg 2θ); ``lo ≤ 0 ≤ hi`` not implied."""
    *_, hull = _table(geom)
    c1, c2 = _coefficients(pos)
    eps = c1[:, None] * hull[None, :, 0] + c2[:, None] * hull[None, :, 1]
    return eps.min(axis=1), eps.max(axis=1)


def axial_quadrature(pos: np.ndarray, geom: AxialDivergence, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes of each peak's axial aberration profile.

    The range [lo, hi] of ε is cut into ``n`` equal bins; a node sits at the weighted mean of its bin
    and carries the bin's probability, so the profile's mean is exact and its shape resolved to
    (hi − lo)/n.

    Parameters
    ----------
    pos
        Peak positions (deg 2θ).
    geom
        The axial geometry.
    n
        Nodes per peak.

    Returns
    -------
    offsets, weights
        ``(len(pos), n)`` arrays: node offsets ε (deg) and weights summing to 1 per peak.
    """
    a, b, w, _ = _table(geom)
    c1, c2 = _coefficients(pos)
    eps = c1[:, None] * a[None, :] + c2[:, None] * b[None, :]
    lo, hi = axial_extent(pos, geom)
    span = np.maximum(hi - lo, 1e-12)
    k = np.minimum(((eps - lo[:, None]) / span[:, None] * n).astype(np.int64), n - 1)
    k += (np.arange(len(pos)) * n)[:, None]
    size = len(pos) * n
    mass = np.bincount(k.ravel(), weights=np.broadcast_to(w, eps.shape).ravel(), minlength=size)
    first = np.bincount(k.ravel(), weights=(eps * w[None, :]).ravel(), minlength=size)
    centre = lo[:, None] + (np.arange(n)[None, :] + 0.5) * (span / n)[:, None]
    mass = mass.reshape(len(pos), n)
    first = first.reshape(len(pos), n)
    offsets = np.where(mass > 0, first / np.where(mass > 0, mass, 1.0), centre)
    return offsets, mass / mass.sum(axis=1, keepdims=True)
