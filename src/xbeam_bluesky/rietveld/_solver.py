"""The weighted least-squares solver of a refinement stage: Levenberg–Marquardt with bounds.

:func:`levenberg_marquardt` refines the parameters of a :class:`~._parameters.ParameterMap` in place on a
:class:`~xbeam_bluesky.rietveld.model.ModelState`; it raises :class:`Singular` when a parameter has no effect
on the pattern or parameters are (nearly) fully correlated.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ._parameters import Param, ParameterMap
from .model import ModelState, PatternCalculator

__all__ = ["Singular", "levenberg_marquardt"]

#: stop a stage when the linearised model predicts a χ² reduction below this fraction
_PREDICTED_TOL = 1e-6


class Singular(Exception):
    """The normal matrix is singular: ``names`` are the parameters of the null direction (or without effect)."""

    def __init__(self, names: list[str], reason: str = ""):
        super().__init__(", ".join(names) + (f" ({reason})" if reason else ""))
        self.names = names


def levenberg_marquardt(
    calc: PatternCalculator,
    st: ModelState,
    groups: frozenset[str],
    params: list[Param],
    pmap: ParameterMap,
    y: np.ndarray,
    w: np.ndarray,
    max_cycles: int,
    notes: set[str],
) -> tuple[int, str]:
    """Levenberg–Marquardt on ``params`` (in place on ``st``); returns (accepted cycles, stage status).

    Parameters
    ----------
    calc
        The pattern calculator of the stage's 2θ range.
    groups
        The refined groups (the Jacobian blocks the model evaluates).
    y, w
        Observed counts and weights (1/σ²) of the points ``calc`` covers.
    max_cycles
        Accepted cycles allowed.
    notes
        Collects remarks for the result's warnings (nearly degenerate background coefficients).

    Returns
    -------
    cycles, status
        Status "converged" (χ² stopped improving by 1e-4 relative, or no step predicts a reduction) or
        "max_cycles".

    Raises
    ------
    Singular
        A parameter does not change the pattern, or a (near-)null direction involves more than background
        coefficients.
    """
    lower = np.array([p.lower for p in params])
    upper = np.array([p.upper for p in params])
    sw = np.sqrt(w)
    ev = calc.evaluate(st, groups, jacobian=True)
    r = y - ev.y
    chi2 = float(np.sum(w * r * r))
    lam = 1e-3
    cycles = 0
    feasible = _widths_feasible(calc, st)
    while cycles < max_cycles:
        jw, normal, d, ns = _scaled_normal(ev.blocks, params, pmap, sw)
        grad = jw.T @ (sw * r)
        gs = grad / d
        p0 = pmap.get(st, params)
        accepted = False
        # the first trial of a cycle usually succeeds: evaluate it with the Jacobian straight away
        first_try = True
        while lam < 1e8:
            try:
                step = sla.solve(ns + lam * np.eye(len(gs)), gs, assume_a="pos") / d
            except (sla.LinAlgError, ValueError):
                lam *= 10.0
                continue
            p1 = np.clip(p0 + step, lower, upper)
            taken = p1 - p0
            # reduction of χ² predicted by the linearised model; if negligible, we are at the minimum
            predicted = 2.0 * float(grad @ taken) - float(taken @ normal @ taken)
            if predicted < _PREDICTED_TOL * chi2:
                break
            trial = st.copy()
            pmap.set(trial, params, p1)
            if feasible and not _widths_feasible(calc, trial):
                lam *= 10.0  # the step would make a peak width negative somewhere: shorten it
                continue
            ev_t = calc.evaluate(trial, groups, jacobian=first_try)
            first_try = False
            r_t = y - ev_t.y
            chi2_t = float(np.sum(w * r_t * r_t))
            if np.isfinite(chi2_t) and chi2_t < chi2:
                accepted = True
                break
            lam *= 10.0
        if not accepted:
            _check_rank(ns, params, notes)
            return cycles, "converged"
        cycles += 1
        rel = (chi2 - chi2_t) / chi2
        pmap.set(st, params, p1)
        chi2, r = chi2_t, r_t
        lam = max(lam * 0.1, 1e-7)
        if rel < 1e-4:
            _check_rank(ns, params, notes)
            return cycles, "converged"
        ev = ev_t if ev_t.blocks else calc.evaluate(st, groups, jacobian=True)
    # stopped while still improving: a null direction would still make the esds meaningless
    _check_rank(_scaled_normal(ev.blocks, params, pmap, sw)[3], params, notes)
    return cycles, "max_cycles"


def _scaled_normal(
    blocks: dict[str, np.ndarray], params: list[Param], pmap: ParameterMap, sw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Jacobian, normal matrix, its column scales √diag and the scaled normal matrix.

    Raises Singular for parameters whose Jacobian column is zero (they do not change the pattern).
    """
    jw = pmap.jacobian(blocks, params) * sw[:, None]
    normal = jw.T @ jw
    d = np.sqrt(np.diag(normal))
    dead = d <= 1e-12 * max(float(d.max()), 1e-300)
    if np.any(dead):
        raise Singular([p.name for p, z in zip(params, dead, strict=True) if z])
    return jw, normal, d, normal / np.outer(d, d)


def _widths_feasible(calc: PatternCalculator, st: ModelState) -> bool:
    """True if the Gaussian variance and Lorentzian FWHM are non-negative over the fitted range."""
    sig2, _, gam, _ = calc.width_minima(st, float(calc.x[0]), float(calc.x[-1]))
    return sig2 >= 0.0 and gam >= 0.0


def _check_rank(ns: np.ndarray, params: list[Param], notes: set[str]) -> None:
    """Raise Singular for (near-)null directions of the scaled normal matrix.

    Near-degeneracies among background coefficients alone (high-order power series) are tolerated and noted:
    they do not affect the fit, only the background coefficients' esds.
    """
    evals, evecs = np.linalg.eigh(ns)
    tiny = np.flatnonzero(evals < 1e-13 * max(evals[-1], 1e-300))
    for i in tiny:
        vec = evecs[:, i]
        involved = [params[j] for j in np.argsort(-np.abs(vec)) if abs(vec[j]) > 0.05]
        if involved and all(p.group == "background" for p in involved):
            notes.add("background coefficients are nearly degenerate (too many terms for this range)")
            continue
        raise Singular([p.name for p in involved])  # every parameter of the null direction
