"""Quantitative phase analysis: weight fractions with esds (Hill & Howard, J. Appl. Cryst. 20 (1987) 467).

Our scale S multiplies m |F|² LP per reflection, with |F|² per unit cell and no 1/V² inside it, so the
intensity of phase p is ∝ v_p / V_p² (v_p its volume fraction) and S_p ∝ v_p / V_p². Its weight fraction
follows as W_p = S_p (ZMV)_p / Σ_i S_i (ZMV)_i, with ZM the mass of the cell contents (g/mol, from the refined
occupancies) and V the cell volume (Å³). The esds propagate the covariance of the scales and, when the
cell is refined, of the cell terms (the volume) through the exact first derivatives; occupancy esds are not
propagated (ZM is taken as exact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .crystal import Phase
from .lattice import a_to_cell, metric_tensor
from .model import PhaseState

__all__ = ["WeightFractions", "cell_volume", "weight_fractions"]


@dataclass
class WeightFractions:
    """Weight fractions of the phases of one refinement.

    Attributes
    ----------
    fraction, esd
        W_p and its esd (dimensionless, sums to 1); NaN when no phase has a positive scale.
    status
        Per phase: "ok", "not_detected" (scale refined to zero: reported, W = 0) or "negative_scale".
    warnings
        One line per phase whose status is not "ok".
    """

    fraction: np.ndarray
    esd: np.ndarray
    status: list[str]
    warnings: list[str]


def cell_volume(phase: Phase, a_free: np.ndarray) -> float:
    """Cell volume (Å³) from the free reciprocal-metric terms ``a_free`` of ``phase``."""
    cell = a_to_cell(phase.lattice_matrix @ a_free)
    return float(np.sqrt(np.linalg.det(metric_tensor(cell))))


def weight_fractions(
    phases: Sequence[Phase],
    states: Sequence[PhaseState],
    index: Mapping[str, int],
    cov: np.ndarray | None,
) -> WeightFractions:
    """Hill–Howard weight fractions of ``phases`` in their refined ``states``, with esds.

    Parameters
    ----------
    phases, states
        The phases and their refined values (scale, ``a_free``, occupancies), same order.
    index
        Position of each refined parameter (``"phase:scale"``, ``"phase:A0"`` …) in ``cov``.
    cov
        Covariance of the refined parameters; ``None`` gives zero esds.
    """
    n = len(phases)
    mass = np.zeros(n)  # S · ZM · V per phase
    grad: list[dict[int, float]] = []  # d mass_p / d parameter (by covariance index)
    for k, (ph, ps) in enumerate(zip(phases, states, strict=True)):
        zm = float(np.sum(ps.occupancy * ph.multiplicity * ph.atomic_mass))
        vol = cell_volume(ph, ps.a_free)
        mass[k] = ps.scale * zm * vol
        g: dict[int, float] = {}
        if f"{ph.name}:scale" in index:
            g[index[f"{ph.name}:scale"]] = zm * vol
        for i in range(len(ps.a_free)):
            name = f"{ph.name}:A{i}"
            if name in index:
                h = 1e-7 * max(abs(ps.a_free[i]), 1e-6)
                step = ps.a_free.copy()
                step[i] += h
                g[index[name]] = ps.scale * zm * (cell_volume(ph, step) - vol) / h
        grad.append(g)
    status = [
        "ok" if s > 0 else "not_detected" if s == 0 else "negative_scale" for s in (ps.scale for ps in states)
    ]
    warnings = [
        f"phase {ph.name!r}: scale refined to {ps.scale:g} ({st}): weight fraction reported as "
        f"{'0' if st == 'not_detected' else 'negative'}, the phase is not detected in this pattern"
        for ph, ps, st in zip(phases, states, status, strict=True)
        if st != "ok"
    ]
    total = float(np.sum(mass))
    if not total > 0:
        return WeightFractions(np.full(n, np.nan), np.full(n, np.nan), status, warnings)
    frac = mass / total
    esd = np.zeros(n)
    if cov is not None:
        cols = sorted({i for g in grad for i in g})
        if cols:
            # dW_p/dθ = Σ_q (δ_pq − W_p) / T · d mass_q / dθ
            dmass = np.array([[g.get(i, 0.0) for i in cols] for g in grad])
            jac = (dmass - frac[:, None] * dmass.sum(axis=0)[None, :]) / total
            esd = np.sqrt(np.maximum(np.diag(jac @ cov[np.ix_(cols, cols)] @ jac.T), 0.0))
    return WeightFractions(frac, esd, status, warnings)
