"""X-ray structure factors |F|² with analytic derivatives wrt coordinates, Uiso and occupancy.

F(h) = Σ_j occ_j (f0_j(s) + f′_j + i f″_j) T_j(h) / n_stab,j · Σ_ops exp(2πi h·(R r_j + t)),
with T = exp(−8π² Uiso s²) (or the anisotropic form, per operation), s = sinθ/λ = 1/(2d).
Friedel mates are averaged (powder): |F|² = (|F(h)|² + |F(−h)|²)/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crystal import Phase
from .lattice import cell_to_a

__all__ = ["StructureFactors", "form_factors", "structure_factors"]

TWO_PI = 2.0 * np.pi


def form_factors(coefs: np.ndarray, stol2: np.ndarray) -> np.ndarray:
    """IT92 f0 (electrons), (n_refl, n_sites), at (sinθ/λ)² = ``stol2`` (Å⁻²)."""
    a = coefs[:, 0:4]
    b = coefs[:, 4:8]
    c = coefs[:, 8]
    return np.einsum("sk,hsk->hs", a, np.exp(-b[None, :, :] * stol2[:, None, None])) + c[None, :]


@dataclass
class StructureFactors:
    """|F|² per reflection and, optionally, its derivatives.

    Attributes
    ----------
    f2
        Friedel-averaged |F|² (electrons²), (n_refl,).
    d_xyz
        d|F|²/d(x, y, z) per site, (n_refl, n_sites, 3), fractional units.
    d_uiso
        d|F|²/dUiso per site (Å⁻²), (n_refl, n_sites).
    d_occ
        d|F|²/d(occupancy) per site (electrons², per unit site fraction), (n_refl, n_sites).
    """

    f2: np.ndarray
    d_xyz: np.ndarray | None = None
    d_uiso: np.ndarray | None = None
    d_occ: np.ndarray | None = None


def structure_factors(
    phase: Phase,
    hkl: np.ndarray,
    stol2: np.ndarray,
    xyz: np.ndarray,
    uiso: np.ndarray,
    fp: np.ndarray,
    fpp: np.ndarray,
    want_derivs: bool = False,
    occupancy: np.ndarray | None = None,
) -> StructureFactors:
    """Compute |F|² for ``hkl`` (n, 3) at (sinθ/λ)² ``stol2``.

    Parameters
    ----------
    phase
        Symmetry, form-factor coefficients, anisotropic U (and the CIF occupancies).
    hkl
        Reflections (n_refl, 3).
    stol2
        (sinθ/λ)² per reflection (Å⁻²).
    xyz, uiso
        Current coordinates (n_sites, 3) and Uiso (Å²).
    fp, fpp
        f′ and f″ per site (electrons).
    want_derivs
        Also return derivatives wrt xyz, Uiso and occupancy.
    occupancy
        Current site occupancies (fraction of the site, n_sites); ``None`` = the phase's CIF values.
    """
    h = np.asarray(hkl, dtype=float)
    hr = np.einsum("hc,ocd->hod", h, phase.rotations)  # (n_refl, n_ops, 3)
    ht = h @ phase.translations.T  # (n_refl, n_ops)
    arg = TWO_PI * (np.einsum("hod,sd->hos", hr, xyz) + ht[:, :, None])  # (n_refl, n_ops, n_sites)
    ex = np.exp(1j * arg)
    n_ops = phase.rotations.shape[0]
    weight = phase.multiplicity / n_ops  # 1 / |stabiliser|
    aniso = ~np.isnan(phase.u_aniso[:, 0])
    if np.any(aniso):
        ex = ex * _aniso_factors(phase, hr, aniso)
    f0 = form_factors(phase.ff_coefs, stol2)
    t_iso = np.where(aniso[None, :], 1.0, np.exp(-8.0 * np.pi**2 * uiso[None, :] * stol2[:, None]))
    occ = phase.occupancy if occupancy is None else occupancy
    fj = (f0 + fp[None, :] + 1j * fpp[None, :]) * (occ * weight)[None, :] * t_iso  # (n_refl, n_sites)
    s_plus = ex.sum(axis=1)  # (n_refl, n_sites)
    s_minus = np.conj(s_plus)
    f_plus = np.sum(fj * s_plus, axis=1)
    f_minus = np.sum(fj * s_minus, axis=1)
    f2 = 0.5 * (np.abs(f_plus) ** 2 + np.abs(f_minus) ** 2)
    if not want_derivs:
        return StructureFactors(f2=f2)
    ds = 1j * TWO_PI * np.einsum("hos,hod->hsd", ex, hr)  # dS+/dr (n_refl, n_sites, 3)
    dfp = fj[:, :, None] * ds
    dfm = fj[:, :, None] * np.conj(ds)
    d_xyz = np.real(np.conj(f_plus)[:, None, None] * dfp) + np.real(np.conj(f_minus)[:, None, None] * dfm)
    du = -8.0 * np.pi**2 * stol2[:, None] * np.where(aniso[None, :], 0.0, 1.0)
    d_uiso = np.real(np.conj(f_plus)[:, None] * fj * s_plus * du) + np.real(
        np.conj(f_minus)[:, None] * fj * s_minus * du
    )
    # F is linear in occ_j: dF±/docc_j = (fj / occ_j) S±_j, written without dividing by a zero occupancy
    gj = (f0 + fp[None, :] + 1j * fpp[None, :]) * weight[None, :] * t_iso
    d_occ = np.real(np.conj(f_plus)[:, None] * gj * s_plus) + np.real(
        np.conj(f_minus)[:, None] * gj * s_minus
    )
    return StructureFactors(f2=f2, d_xyz=d_xyz, d_uiso=d_uiso, d_occ=d_occ)


def _aniso_factors(phase: Phase, hr: np.ndarray, aniso: np.ndarray) -> np.ndarray:
    """Per-operation anisotropic Debye–Waller factors (n_refl, n_ops, n_sites); 1 for isotropic sites."""
    a_terms = cell_to_a(phase.cell)
    astar = np.sqrt(a_terms[:3])
    out = np.ones((*hr.shape[:2], phase.n_sites))
    for j in np.flatnonzero(aniso):
        u11, u22, u33, u12, u13, u23 = phase.u_aniso[j]
        u = np.array([[u11, u12, u13], [u12, u22, u23], [u13, u23, u33]])
        beta = 2.0 * np.pi**2 * u * np.outer(astar, astar)
        out[:, :, j] = np.exp(-np.einsum("hoi,ij,hoj->ho", hr, beta, hr))
    return out
