"""The default refinement: the fixed staged sequence with the decisions a careful person takes on the way.

1. :func:`~xbeam_bluesky.rietveld.strategy.default_strategy` (background + scale → cell + displacement →
   X Y → atoms → U V W). In a mixture the atoms stage refines only the major phases (weight fraction ≥
   ``MIN_ATOM_FRACTION`` after the X Y stage): a minor phase's few weak reflections cannot carry its atoms,
   whose Uiso then run to a bound. Before its last stage (U V W), background terms are grown one at a time while Hamilton's test (an F test
   on the χ² drop of one more term, linear least squares with the peaks held) says the drop is significant at
   ``ALPHA``; the last stage then runs with that background (no extra stage, so no extra time). Kept only if
   it finishes, lowers χ² below the model before it and breaks no validity rule that model kept; otherwise the last stage runs with the
   fixed background.
2. Preferred orientation tried when the residual asks for it: the per-reflection log(I_obs / I_calc) is
   regressed on the March–Dollase term of each candidate axis; for the best-correlated axis (if the
   correlation is significant), a stage refines the March–Dollase ratio. Kept only if it converges, the
   model stays physical (:func:`~xbeam_bluesky.rietveld.validity.check_validity`) and Hamilton's test on
   the full refinement accepts the extra parameter.
3. Per-phase microstrain for a mixture (two or more phases): when the phases' peak widths differ, one common
   profile cannot describe them. Greedily, one phase at a time, a stage tries an isotropic term and one
   uniaxial axis per Laue-equivalent set (``uniaxial_strain``); the best is kept only if every strain term
   stays ≥ 0, the model stays valid and Hamilton's test accepts it. Single-phase refinements skip it.

Everything turned on is judged the same way: a step that fails to converge, breaks a validity rule the
previous model kept, or is not significant is dropped and the previous result kept.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np
from scipy import stats

from ._result import RefinementResult
from .crystal import Phase
from .model import ModelState
from .refine import Refinement
from .strategy import BackgroundSpec, OccupancySpec, Stage, Strategy, default_strategy
from .validity import check_validity

__all__ = ["ALPHA", "MIN_ATOM_FRACTION", "major_phases", "refine_default", "strain_candidates"]

#: significance level of Hamilton's test for one more parameter
ALPHA = 0.001
#: smallest weight fraction of a mixture's phase whose atoms are refined (the others keep the CIF's)
MIN_ATOM_FRACTION = 0.1
#: most background terms the growth may reach
_MAX_TERMS = 15
#: candidate March–Dollase axes (lattice directions); equivalent ones are tried once per Laue class
_PO_AXES = ((0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))


def _significant(chi2_a: float, chi2_b: float, n_points: int, n_params_b: int, extra: int = 1) -> bool:
    """Hamilton's test: does the model with ``extra`` more parameters (χ² ``chi2_b``) fit significantly better?"""
    dof = max(n_points - n_params_b, 1)
    if not chi2_b < chi2_a:
        return False
    f = ((chi2_a - chi2_b) / extra) / (chi2_b / dof)
    return bool(f > stats.f.ppf(1.0 - ALPHA, extra, dof))


def _background_terms(refinement: Refinement, result: RefinementResult) -> int:
    """Chebyshev terms grown from the current number while each new term is significant (peaks held)."""
    st = result.state
    calc, mask = refinement.calculator(result.fit_range)
    y = refinement.pattern.counts[mask]
    sw = np.sqrt(refinement.pattern.weights[mask])
    peaks = result.calculated - result.background_curve  # the result's own curves: no new evaluation
    n = len(st.background_coefs)
    n_other = result.n_params - n

    def chi2(terms: int) -> float:
        basis = calc.background_matrix(st.background_kind, terms)
        a = np.column_stack([basis, peaks]) * sw[:, None]  # background and one overall peak scale
        coef, *_ = np.linalg.lstsq(a, y * sw, rcond=None)
        return float(np.sum((y * sw - a @ coef) ** 2))

    current = chi2(n)
    while n < _MAX_TERMS:
        more = chi2(n + 1)
        if not _significant(current, more, result.n_points, n_other + n + 1):
            break
        n, current = n + 1, more
    return n


def _po_axis(refinement: Refinement, result: RefinementResult) -> tuple[int, int, int] | None:
    """The March–Dollase axis the residual asks for, or None (correlation not significant at ``ALPHA``)."""
    if len(refinement.phases) != 1:
        return None  # per-reflection intensities of overlapping phases cannot be told apart here
    ph = refinement.phases[0]
    iobs, icalc, hkl = _reflection_intensities(refinement, result)
    keep = (icalc > 0) & (iobs > 0)
    if np.count_nonzero(keep) < 8:
        return None
    ratio = np.log(iobs[keep] / icalc[keep])
    g_star = np.linalg.inv(_metric(result.phases[0]["lattice"]))
    best: tuple[float, tuple[int, int, int]] | None = None
    seen: set[bytes] = set()
    for axis in _PO_AXES:
        key = np.sort(np.abs(np.round(np.einsum("rij,j->ri", ph.laue_rotations, axis))), axis=0).tobytes()
        if key in seen:
            continue
        seen.add(key)
        cos2 = _max_cos2(
            hkl[keep],
            np.array(axis, dtype=float),
            ph.laue_rotations,
            g_star,
            _metric(result.phases[0]["lattice"]),
        )
        if np.ptp(cos2) < 1e-6:
            continue
        r, p = stats.pearsonr(cos2, ratio)
        if p < ALPHA and (best is None or abs(r) > best[0]):
            best = (abs(float(r)), axis)
    return None if best is None else best[1]


def _metric(lat: dict[str, float]) -> np.ndarray:
    from .lattice import metric_tensor

    return metric_tensor(np.array([lat[k] for k in ("a", "b", "c", "alpha", "beta", "gamma")]))


def _max_cos2(
    hkl: np.ndarray, axis: np.ndarray, laue: np.ndarray, g_star: np.ndarray, g: np.ndarray
) -> np.ndarray:
    """cos² of the angle between each reflection's normal and the closest Laue image of the direction ``axis``."""
    images = np.einsum("rij,j->ri", laue, axis)  # equivalent directions (lattice vectors)
    out = np.zeros(len(hkl))
    for u in images:
        dot = hkl @ u  # h·u: reciprocal vector (plane normal) against a direct lattice vector
        norm = np.sqrt(np.einsum("ni,ij,nj->n", hkl, g_star, hkl) * (u @ g @ u))
        out = np.maximum(out, (dot / norm) ** 2)
    return out


def _reflection_intensities(
    refinement: Refinement, result: RefinementResult
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rietveld-partitioned I_obs, I_calc and hkl of the single phase's reflections in the fit range."""
    calc, mask = refinement.calculator(result.fit_range)
    ev = calc.evaluate(result.state)
    y = refinement.pattern.counts[mask]
    net = ev.y - ev.background
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(net > 1e-9 * max(float(net.max()), 1e-300), (y - ev.background) / net, 0.0)
    contrib = ev.shape.multiply(ev.peak_intensity[None, :]).tocsc()
    pc = ev.pcs[0]
    sel = ev.peak_phase == 0
    iobs = np.bincount(ev.peak_refl[sel], weights=(contrib.T @ ratio)[sel], minlength=len(pc.pos1))
    icalc = np.bincount(
        ev.peak_refl[sel], weights=np.asarray(contrib.sum(axis=0)).ravel()[sel], minlength=len(pc.pos1)
    )
    inside = (pc.pos1 >= result.fit_range[0]) & (pc.pos1 <= result.fit_range[1])
    return iobs[inside], icalc[inside], pc.refl.hkl[inside].astype(float)


def _acceptable(refinement: Refinement, new: RefinementResult, old: RefinementResult) -> bool:
    """The new result finished (converged, or still improving at its last stage's cycle limit), breaks no
    validity rule the old one kept, and its χ² is lower."""
    if not new.ok or not new.chi2 < old.chi2:
        return False
    before = {_rule(r) for r in check_validity(old.to_dict(), refinement.phases)}
    return {_rule(r) for r in check_validity(new.to_dict(), refinement.phases)} <= before


def _rule(reason: str) -> str:
    """A validity reason without its numbers: the rule and the atom it concerns ("X:O: Uiso # Å² ≤ #")."""
    return re.sub(r"[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?", "#", reason)


def refine_default(
    refinement: Refinement,
    state: ModelState | None = None,
    background: BackgroundSpec | None = None,
    occupancy: tuple[OccupancySpec, ...] = (),
) -> tuple[RefinementResult, Strategy]:
    """Run the default refinement of ``refinement`` (module docstring) from ``state`` (default: the CIFs).

    Parameters
    ----------
    background
        The first stage's background (default 6 Chebyshev terms); its ``peaks`` (background humps, deg 2θ)
        stay in every later stage, the grown background included.
    occupancy
        Site occupancies refined on request from the atoms stage on (:func:`default_strategy`); a shared
        site keeps its occupancy sum.

    Returns
    -------
    result, strategy
        The final refinement (its ``stages`` list every stage kept, its ``wall_s`` the whole default
        refinement's wall time in s) and the strategy of the kept stages, which ``Refinement.run(strategy)``
        replays.
    """
    t0 = time.perf_counter()
    result, strategy = _refine_default(refinement, state, background, tuple(occupancy))
    return replace(result, wall_s=time.perf_counter() - t0), strategy


def _continue(stage: Stage, refine: tuple[str, ...], occupancy: tuple[OccupancySpec, ...]) -> Strategy:
    """One stage run on from an earlier result with ``refine`` on; the occupancy request goes with it (a new
    run would otherwise refine every site's occupancy)."""
    return Strategy((replace(stage, refine=refine, occupancy=occupancy if "occupancy" in refine else ()),))


def _refine_default(
    refinement: Refinement,
    state: ModelState | None,
    background: BackgroundSpec | None,
    occupancy: tuple[OccupancySpec, ...],
) -> tuple[RefinementResult, Strategy]:
    base = default_strategy(background, occupancy)
    peaks = base.stages[0].background.peaks if base.stages[0].background else ()
    *head, last = base.stages
    if len(refinement.phases) == 1:
        early = refinement.run(Strategy(tuple(head), base.shared_sites), state)
    else:
        early, head = _mixture_head(refinement, head, base.shared_sites, state)
    if not early.ok:
        return early, Strategy(tuple(head), base.shared_sites)
    so_far = tuple(sorted(set(early.stages[-1].refined) | set(last.refine)))
    # the last fixed stage (U V W) runs with the background grown on the model so far, if that is significant
    terms = _background_terms(refinement, early)
    result = None
    if terms > len(early.state.background_coefs):
        grown = replace(
            last,
            name=f"{last.name}, background {terms} terms",
            background=BackgroundSpec(early.state.background_kind, terms, peaks),
        )
        trial = refinement.run(_continue(grown, so_far, occupancy), early.state)
        if _acceptable(refinement, trial, early):
            last, result = grown, trial
    if result is None:
        if peaks:  # a warm-started run takes its background from its stage: keep the refined humps
            held = BackgroundSpec(early.state.background_kind, len(early.state.background_coefs), peaks)
            last = replace(last, background=held)
        result = refinement.run(_continue(last, so_far, occupancy), early.state)
    stages = [*head, last]
    records = early.stages + result.stages
    everything = so_far
    if not result.ok:
        return replace(result, stages=records), Strategy(tuple(stages), base.shared_sites)

    axis = _po_axis(refinement, result)
    if axis is not None:
        stage = Stage(
            name=f"preferred orientation {''.join(map(str, axis))}",
            refine=("preferred_orientation",),
            po_axis=axis,
            background=BackgroundSpec(
                result.state.background_kind, len(result.state.background_coefs), peaks
            ),
            max_cycles=15,
        )
        trial = refinement.run(
            _continue(stage, (*everything, "preferred_orientation"), occupancy), result.state
        )
        if _acceptable(refinement, trial, result) and _significant(
            result.chi2, trial.chi2, trial.n_points, trial.n_params
        ):
            stages.append(stage)
            records += trial.stages
            result = trial
    if len(refinement.phases) > 1:
        for stage, trial in _strain_terms(refinement, result, everything, peaks, occupancy):
            stages.append(stage)
            records += trial.stages
            result = trial
            everything = tuple(sorted({*everything, "uniaxial_strain"}))
    return replace(result, stages=records), Strategy(tuple(stages), shared_sites=base.shared_sites)


def major_phases(result: RefinementResult, min_fraction: float = MIN_ATOM_FRACTION) -> tuple[str, ...]:
    """Names of the phases whose weight fraction is at least ``min_fraction`` (at least the largest one)."""
    fractions = {p["name"]: float(p.get("weight_fraction", 1.0)) for p in result.phases}
    major = tuple(name for name, w in fractions.items() if w >= min_fraction)
    return major or (max(fractions, key=fractions.__getitem__),)


def _mixture_head(
    refinement: Refinement,
    head: list[Stage],
    shared_sites: bool | tuple[tuple[str, ...], ...],
    state: ModelState | None,
) -> tuple[RefinementResult, list[Stage]]:
    """The fixed stages before U V W for a mixture: the atoms stage refines only the major phases, judged on
    the weight fractions after the stages before it."""
    *before, atoms = head
    pre = refinement.run(Strategy(tuple(before), shared_sites), state)
    if not pre.ok:
        return pre, before
    major = major_phases(pre)
    if len(major) < len(refinement.phases):
        atoms = replace(atoms, atom_phases=major)
    refined = tuple(sorted(set(pre.stages[-1].refined) | set(atoms.refine)))
    background = BackgroundSpec(
        pre.state.background_kind,
        len(pre.state.background_coefs),
        before[0].background.peaks if before[0].background else (),
    )
    run = refinement.run(
        Strategy((replace(atoms, refine=refined, background=background),), shared_sites), pre.state
    )
    return replace(run, stages=pre.stages + run.stages), [*before, replace(atoms, background=background)]


def _strain_terms(
    refinement: Refinement,
    result: RefinementResult,
    refined: tuple[str, ...],
    peaks: tuple,
    occupancy: tuple[OccupancySpec, ...],
) -> list[tuple[Stage, RefinementResult]]:
    """Per-phase microstrain for a mixture whose phases' peak widths differ: greedily, one phase at a time,
    the best of an isotropic term and the candidate uniaxial axes (one per Laue-equivalent set), each kept
    only if every strain term stays a broadening (≥ 0), the result is acceptable and Hamilton's test accepts
    it; at most one term per phase."""
    kept: list[tuple[Stage, RefinementResult]] = []
    axes: dict[str, tuple[int, int, int]] = {}
    names = [ph.name for ph in refinement.phases]
    while len(axes) < len(names):
        best: tuple[Stage, RefinementResult] | None = None
        for name in names:
            if name in axes:
                continue
            for axis in strain_candidates(refinement.phases[names.index(name)]):
                if (
                    axis == (0, 0, 0)
                    and len(axes) == len(names) - 1
                    and all(a == (0, 0, 0) for a in axes.values())
                ):
                    continue  # an isotropic term on every phase is the common Y again
                trial_axes = {**axes, name: axis}
                stage = Stage(
                    name=f"strain {name} {''.join(map(str, axis))}",
                    refine=("uniaxial_strain",),
                    strain_axis=tuple(trial_axes.items()),
                    background=BackgroundSpec(
                        result.state.background_kind, len(result.state.background_coefs), peaks
                    ),
                    max_cycles=15,
                )
                run = refinement.run(_continue(stage, (*refined, "uniaxial_strain"), occupancy), result.state)
                if (best is None or run.chi2 < best[1].chi2) and _broadens(run):
                    if _acceptable(refinement, run, result) and _significant(
                        result.chi2, run.chi2, run.n_points, run.n_params
                    ):
                        best = (stage, run)
        if best is None:
            break
        kept.append(best)
        result = best[1]
        axes = dict(best[0].strain_axis)
    return kept


def _broadens(result: RefinementResult) -> bool:
    """Every refined strain term is a broadening (a negative extra FWHM is unphysical: it would mean the
    common Y is wrong and another phase's term should carry the difference)."""
    terms = [p.get("uniaxial_strain") for p in result.phases]
    return all(t is None or t["value"] >= 0.0 for t in terms)


def strain_candidates(phase: Phase) -> list[tuple[int, int, int]]:
    """The isotropic term and one uniaxial axis per Laue-equivalent set of ``_PO_AXES``."""
    out: list[tuple[int, int, int]] = [(0, 0, 0)]
    seen: set[bytes] = set()
    for axis in _PO_AXES:
        key = np.sort(np.abs(np.round(np.einsum("rij,j->ri", phase.laue_rotations, axis))), axis=0).tobytes()
        if key not in seen:
            seen.add(key)
            out.append(axis)
    return out
