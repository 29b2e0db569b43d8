"""Physical validity of a refined model: what a search trial must satisfy to count.

A least-squares fit can lower Rwp with an unphysical model — negative Uiso, a Gaussian width² that is
negative over part of the pattern (the engine clamps it, so the fit exploits the clamp), atoms pushed
onto each other. :func:`check_validity` works on the JSON summary of a refinement
(:meth:`RefinementResult.to_dict`), so it runs where the trial ran and costs microseconds.

It can also lower Rwp by trading nearly degenerate parameters against each other: zero shift, sample
displacement (∝ cos θ), transparency (∝ sin 2θ) and the cell all move peak positions, and a search that
refines them together lands on a cell far from the reference. :func:`check_degeneracy` rejects a fit whose
correlation matrix has a pair of parameters correlated beyond ``ValidityLimits.max_correlation``
(see docs/decisions/autorietveld-degenerate-peak-shifts.md for the measured correlations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .crystal import OCCUPANCY_SUM_TOL, Phase
from .lattice import metric_tensor

__all__ = [
    "ValidityLimits",
    "check_degeneracy",
    "check_start_model",
    "check_validity",
    "nearest_neighbour_distances",
]

_SHELLS = np.array([[i, k, m] for i in (-1, 0, 1) for k in (-1, 0, 1) for m in (-1, 0, 1)], dtype=float)


@dataclass(frozen=True)
class ValidityLimits:
    """Limits a refined model must respect.

    Attributes
    ----------
    uiso_max
        Largest plausible Uiso (Å²).
    bond_change
        Largest relative change of any site's nearest-neighbour distance against the starting model.
    min_distance
        Smallest interatomic distance allowed (Å).
    require_converged
        Also reject a fit whose last stage stopped at its cycle limit while still improving.
    max_correlation
        Largest |correlation| allowed between two refined parameters (background coefficients among
        themselves excepted). Measured on PbSO4 and fluorapatite: ≤ 0.937 for fits without a degeneracy,
        ≥ 0.9991 (zero shift with displacement) for the degenerate ones.
    shared_site_split
        Largest distance (Å) allowed between atoms that share a site in the starting model (only reachable
        when a strategy switches the shared-site ties off).
    """

    uiso_max: float = 0.15
    bond_change: float = 0.2
    min_distance: float = 0.7
    require_converged: bool = False
    max_correlation: float = 0.99
    shared_site_split: float = 0.05


def nearest_neighbour_distances(phase: Phase, cell: Sequence[float], xyz: np.ndarray) -> np.ndarray:
    """Shortest distance (Å) from each site to any other atom of the crystal.

    Atoms sharing a site with it (:attr:`Phase.shared_sites`, from the starting coordinates) are not its
    neighbours: they are the same scatterer's alternatives, so their images are skipped.

    Parameters
    ----------
    phase
        Supplies the symmetry operations and the shared sites.
    cell
        a, b, c (Å), α, β, γ (degrees).
    xyz
        Fractional coordinates of the independent sites (n_sites, 3).
    """
    xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
    images = np.einsum("oij,sj->soi", phase.rotations, xyz) + phase.translations[None, :, :]
    partner = np.zeros((len(xyz), len(xyz)), dtype=bool)
    for grp in phase.shared_sites if len(xyz) == phase.n_sites else []:
        partner[np.ix_(grp, grp)] = True
    np.fill_diagonal(partner, False)
    g = metric_tensor(np.asarray(cell, dtype=float))
    out = np.empty(len(xyz))
    for j, p in enumerate(xyz):
        d = images[~partner[j]].reshape(-1, 3) - p
        d -= np.round(d)  # nearest lattice image; the ±1 shells below cover oblique cells
        v = (d[:, None, :] + _SHELLS[None, :, :]).reshape(-1, 3)
        dist = np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", v, g, v), 0.0))
        out[j] = float(np.min(dist[dist > 1e-3])) if np.any(dist > 1e-3) else np.inf
    return out


def _profile_problems(instrument: Mapping[str, Any], fit_range: Sequence[float]) -> list[str]:
    th = np.radians(np.linspace(float(fit_range[0]), float(fit_range[1]), 200) / 2.0)
    tan_t, cos_t = np.tan(th), np.cos(th)
    u, v, w = (float(instrument.get(k, 0.0)) for k in ("U", "V", "W"))
    x, y = (float(instrument.get(k, 0.0)) for k in ("X", "Y"))
    problems = []
    sig2 = u * tan_t**2 + v * tan_t + w
    if np.any(sig2 <= 0):
        at = np.degrees(2 * th[np.argmin(sig2)])
        problems.append(
            f"Gaussian width² U tan²θ + V tanθ + W ≤ 0 within the fit range (min {sig2.min():.3g} centideg² "
            f"at 2θ {at:.1f}°; U {u:.3g}, V {v:.3g}, W {w:.3g})"
        )
    gam = x / cos_t + y * tan_t
    if np.any(gam < 0):
        problems.append(f"Lorentzian width X/cosθ + Y tanθ < 0 within the fit range (X {x:.3g}, Y {y:.3g})")
    return problems


def check_start_model(phases: Sequence[Phase], limits: ValidityLimits | None = None) -> dict[str, str]:
    """Rules the starting model (the CIFs) already breaks, before anything is refined.

    Checks every site's Uiso in (0, ``uiso_max``] and its nearest neighbour at ≥ ``min_distance`` (atoms of
    one shared site are not neighbours). A search reports these once and exempts them in
    :func:`check_validity` as long as the refinement does not make them worse.

    Returns
    -------
    dict
        ``"phase:label:rule"`` (rule ``uiso`` or ``min_distance``) → what is wrong; empty if nothing.
    """
    lim = limits or ValidityLimits()
    out: dict[str, str] = {}
    for ph in phases:
        for label, u, d in zip(
            ph.labels, ph.uiso, nearest_neighbour_distances(ph, ph.cell, ph.xyz), strict=True
        ):
            if not 0 < u <= lim.uiso_max:
                out[f"{ph.name}:{label}:uiso"] = (
                    f"{ph.name}:{label}: Uiso {u:.4g} Å² in the CIF is outside (0, {lim.uiso_max}] Å²"
                )
            if d < lim.min_distance:
                out[f"{ph.name}:{label}:min_distance"] = (
                    f"{ph.name}:{label}: nearest neighbour at {d:.3f} Å < {lim.min_distance} Å in the CIF"
                )
    return out


def check_validity(
    summary: Mapping[str, Any],
    phases: Sequence[Phase],
    limits: ValidityLimits | None = None,
    exempt: Mapping[str, str] | None = None,
) -> list[str]:
    """Reasons why a refined model is not acceptable (empty list = valid).

    Checks: the refinement finished ("converged", or also "max_cycles" unless
    ``limits.require_converged``), finite Rwp, every Uiso in (0, ``uiso_max``], occupancies in [0, 1],
    positive Gaussian and non-negative Lorentzian widths over the fit range, and no nearest-neighbour
    distance below ``min_distance`` or changed by more than ``bond_change`` from the starting model.

    Parameters
    ----------
    summary
        :meth:`RefinementResult.to_dict` of the refinement.
    phases
        The starting phases (same order as ``summary["phases"]``).
    limits
        Thresholds; default :class:`ValidityLimits` ().
    exempt
        :func:`check_start_model` of ``phases``: a rule the starting model breaks is not held against an atom
        whose Uiso is no farther outside (0, ``uiso_max``] than its starting value (a CIF's −0.004 Å² refined
        to −0.0035 Å² is exempt, to −0.005 Å² is not), or whose nearest neighbour did not move closer (by
        > 0.01 Å).
    """
    lim = limits or ValidityLimits()
    exempt = exempt or {}
    status = summary.get("status")
    ok_states = ("converged",) if lim.require_converged else ("converged", "max_cycles")
    if status not in ok_states:
        return [f"refinement {status}: {summary.get('message', '')}".strip()]
    reasons: list[str] = []
    rwp = summary.get("rwp")
    if rwp is None or not np.isfinite(rwp):
        reasons.append(f"Rwp is not finite ({rwp})")
    reasons += _profile_problems(summary.get("instrument", {}), summary.get("fit_range", (5.0, 175.0)))
    for phase, out in zip(phases, summary.get("phases", []), strict=False):
        for j, atom in enumerate(out["atoms"]):
            u = float(atom["uiso"])
            held = not (
                f"{phase.name}:{atom['label']}:uiso" in exempt
                and _outside(u, lim.uiso_max) <= _outside(float(phase.uiso[j]), lim.uiso_max) + 1e-9
            )
            if held and not u > 0:
                reasons.append(f"{phase.name}:{atom['label']}: Uiso {u:.4g} Å² ≤ 0")
            elif held and u > lim.uiso_max:
                reasons.append(f"{phase.name}:{atom['label']}: Uiso {u:.4g} Å² > {lim.uiso_max} Å²")
            occ = float(atom.get("occupancy", 1.0))
            if not 0.0 <= occ <= 1.0:
                reasons.append(f"{phase.name}:{atom['label']}: occupancy {occ:.4g} outside [0, 1]")
        lat = out["lattice"]
        cell = [lat[k] for k in ("a", "b", "c", "alpha", "beta", "gamma")]
        xyz = np.array([a["xyz"] for a in out["atoms"]])
        if len(xyz) < 1:
            continue
        reasons += _shared_site_problems(phase, out["atoms"], cell, xyz, lim)
        start = nearest_neighbour_distances(phase, phase.cell, phase.xyz)
        now = nearest_neighbour_distances(phase, cell, xyz)
        for label, d0, d1 in zip(phase.labels, start, now, strict=True):
            if not np.isfinite(d0):
                continue
            if d1 < lim.min_distance and not (
                f"{phase.name}:{label}:min_distance" in exempt and d1 >= d0 - 0.01
            ):
                reasons.append(
                    f"{phase.name}:{label}: nearest neighbour at {d1:.3f} Å < {lim.min_distance} Å"
                )
            elif abs(d1 / d0 - 1.0) > lim.bond_change:
                reasons.append(
                    f"{phase.name}:{label}: nearest-neighbour distance {d1:.3f} Å vs {d0:.3f} Å in the starting "
                    f"model ({d1 / d0 - 1:+.0%}, limit ±{lim.bond_change:.0%})"
                )
    return reasons


def _outside(u: float, uiso_max: float) -> float:
    """How far (Å²) a Uiso lies outside (0, ``uiso_max``]: 0 inside, |u| at or below 0."""
    return max(-u, 0.0) if u <= 0 else max(u - uiso_max, 0.0)


def _shared_site_problems(
    phase: Phase,
    atoms: Sequence[Mapping[str, Any]],
    cell: Sequence[float],
    xyz: np.ndarray,
    lim: ValidityLimits,
) -> list[str]:
    """A shared site filled beyond 1, or split apart, in a refined model."""
    out = []
    g = metric_tensor(np.asarray(cell, dtype=float))
    for grp in phase.shared_sites:
        if len(grp) < 2:
            continue
        names = "/".join(phase.labels[j] for j in grp)
        total = sum(float(atoms[j].get("occupancy", 1.0)) for j in grp)
        if total > 1.0 + OCCUPANCY_SUM_TOL:
            out.append(f"{phase.name}:{names}: shared-site occupancies sum to {total:.4g} > 1")
        d = xyz[grp] - xyz[grp[0]]
        d -= np.round(d)
        split = float(np.sqrt(np.max(np.einsum("ni,ij,nj->n", d, g, d))))
        if split > lim.shared_site_split:
            out.append(
                f"{phase.name}:{names}: atoms of one shared site {split:.3f} Å apart "
                f"(limit {lim.shared_site_split} Å)"
            )
    return out


def check_degeneracy(
    parameter_names: Sequence[str],
    correlation: np.ndarray | None,
    limits: ValidityLimits | None = None,
) -> list[str]:
    """Reasons why the refined parameters are (nearly) degenerate (empty list = none).

    A pair of refined parameters with |correlation| above ``limits.max_correlation`` means the data do
    not determine them separately: the fit can trade one for the other (zero shift, displacement,
    transparency and cell all move peak positions), so the values — the cell first of all — are not
    trustworthy even when Rwp is low. Pairs of background coefficients are exempt: high-order background
    terms are often nearly collinear and that only affects their own esds.

    Parameters
    ----------
    parameter_names
        Names of the refined parameters (:attr:`RefinementResult.parameter_names`).
    correlation
        Their correlation matrix (:attr:`RefinementResult.correlation`); None (no covariance) = no check.
        A NaN entry (a parameter without a positive variance) counts as |correlation| 1.
    limits
        Thresholds; default :class:`ValidityLimits` ().

    Returns
    -------
    list of str
        At most one reason, naming the most correlated pairs (up to three) and their correlations.
    """
    lim = limits or ValidityLimits()
    if correlation is None or len(parameter_names) < 2:
        return []
    corr = np.abs(np.asarray(correlation, dtype=float))
    corr[~np.isfinite(corr)] = 1.0  # no positive variance: the normal matrix is numerically singular
    if corr.shape != (len(parameter_names), len(parameter_names)):
        raise ValueError(
            f"correlation matrix of shape {corr.shape} for {len(parameter_names)} parameter names; "
            "expected a square matrix of that size"
        )
    background = np.array([n.startswith("background") for n in parameter_names])
    upper = np.triu(np.ones_like(corr, dtype=bool), k=1) & ~np.outer(background, background)
    rows, cols = np.nonzero(upper & (corr > lim.max_correlation))
    if len(rows) == 0:
        return []
    order = np.argsort(-corr[rows, cols])
    pairs = ", ".join(
        f"{parameter_names[rows[i]]}/{parameter_names[cols[i]]} {corr[rows[i], cols[i]]:.4f}"
        for i in order[:3]
    )
    return [
        f"degenerate parameters: {len(rows)} pair(s) with |correlation| > {lim.max_correlation} ({pairs})"
    ]
