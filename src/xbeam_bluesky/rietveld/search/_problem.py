"""The search space of one refinement problem: :func:`problem_space` and the shift terms it leaves out.

What ``xbeam refine --auto``, ``--sequential --auto`` and the live ``AutoRietveld`` search: the problem's
final 2θ range and asymmetry model, for a mixture the atoms of the major phases only and a per-phase strain
switch, background humps and occupancies on request, and no shift term (or pair of them) that the cell makes
degenerate over the range.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..default_sequence import MIN_ATOM_FRACTION, major_phases, strain_candidates
from ..refine import Refinement
from ..strategy import BackgroundSpec, OccupancySpec, Strategy, default_strategy
from ._space import SearchSpace

__all__ = ["degenerate_shift_pairs", "degenerate_shift_terms", "problem_space"]

logger = logging.getLogger(__name__)

#: a shift term whose 2θ dependence the cell and zero shift reproduce but for this fraction of its variance
#: over the fit range is left out of the space (capillary DisplaceY ∝ sin 2θ at 4.5–26°: 4e-4; lab
#: transparency at 16–158°: 0.94)
DEGENERATE_SHIFT_FRACTION = 0.01


def degenerate_shift_terms(refinement: Refinement) -> tuple[str, ...]:
    """The search's shift terms that a cell change plus a zero shift mimic over the fit range.

    A cell change moves peaks by ∝ tan θ, a zero shift by a constant; transparency (flat plate) and a
    capillary's offset along the beam both shift peaks ∝ sin 2θ, which at low angles is nearly a·1 + b·tan θ.
    Fitting sin 2θ by those two over the range (uniform in 2θ) leaves a fraction of its variance; below
    ``DEGENERATE_SHIFT_FRACTION`` every trial that refines the term is degenerate (|r| with the cell
    ≥ 0.998 measured on the 11-BM CuCr2O4 pattern), so it is not offered.
    """
    lo, hi = refinement.fit_range
    tth = np.radians(np.linspace(lo, hi, 400))
    basis = np.column_stack([np.ones_like(tth), np.tan(tth / 2)])
    y = np.sin(tth)
    resid = y - basis @ np.linalg.lstsq(basis, y, rcond=None)[0]
    left = float(resid @ resid) / float(np.sum((y - y.mean()) ** 2))
    return ("transparency",) if left < DEGENERATE_SHIFT_FRACTION else ()


#: linearised |correlation| of two shift terms (with the cell) above which they are never refined together:
#: zero with a capillary's DisplaceX (∝ cos 2θ) at 4.5–26° 2θ 0.99992 (refined: |r| 1.000); zero with lab
#: displacement (∝ cos θ) 0.9996 at 15–130° (fluorapatite), 0.9926 at 16–158.4° (PbSO4; refined ≥ 0.999, so
#: those trials are left to the correlation rule of the validity check)
DEGENERATE_SHIFT_CORRELATION = 0.999


def _shift_shapes(refinement: Refinement, tth: np.ndarray) -> dict[str, np.ndarray]:
    """How each shift term moves a peak at 2θ (rad), up to a factor, in the refinement's geometry."""
    if refinement.instrument.geometry == "debye_scherrer":
        return {"zero": np.ones_like(tth), "displacement": np.cos(tth), "transparency": np.sin(tth)}
    return {"zero": np.ones_like(tth), "displacement": np.cos(tth / 2), "transparency": np.sin(tth)}


def degenerate_shift_pairs(refinement: Refinement) -> tuple[tuple[str, str], ...]:
    """Pairs of shift terms that, refined together with the cell, are degenerate over the fit range.

    The shifts are linearised (a cell change moves peaks ∝ tan θ) and sampled uniformly in 2θ; a pair whose
    correlation in that three-term fit exceeds ``DEGENERATE_SHIFT_CORRELATION`` is returned as
    ``(dropped, kept)``: every trial refining both would be rejected by the correlation rule of
    :func:`~xbeam_bluesky.rietveld.validity.check_degeneracy`. The sample-position term is kept, the zero shift
    dropped (a calibrated instrument's zero is in its file).
    """
    lo, hi = refinement.fit_range
    tth = np.radians(np.linspace(lo, hi, 400))
    shapes = _shift_shapes(refinement, tth)
    names = list(shapes)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            m = np.column_stack([shapes[a], shapes[b], np.tan(tth / 2)])
            cov = np.linalg.inv(m.T @ m)
            if abs(cov[0, 1]) / np.sqrt(cov[0, 0] * cov[1, 1]) > DEGENERATE_SHIFT_CORRELATION:
                out.append((a, b))
    return tuple(out)


def problem_space(
    refinement: Refinement,
    *,
    exclude: Sequence[str] = (),
    background_peaks: Sequence[tuple[float, float]] = (),
    occupancy: Sequence[OccupancySpec] = (),
    min_atom_fraction: float = MIN_ATOM_FRACTION,
) -> SearchSpace:
    """The search space for a refinement problem: its final 2θ range and asymmetry model, and for a mixture
    the atoms of the major phases only plus a per-phase microstrain switch.

    A mixture's weight fractions are estimated first by the default sequence's stages before the atoms
    (background + scale, cell + displacement, X Y; a fraction of a second); phases below
    ``min_atom_fraction`` keep their CIF atoms in every trial (their few weak reflections cannot carry
    them: the Uiso of a 1 wt % phase runs to a bound). Every phase of a mixture is offered an isotropic or
    one uniaxial strain term per Laue-equivalent axis (:func:`~.default_sequence.strain_candidates`).

    A peak-shift term that the cell (with a zero shift) reproduces over the fit range is left out too
    (:func:`degenerate_shift_terms`: a capillary's offset along the beam at 4.5–26° 2θ), and two shift terms
    degenerate with each other are never refined together (:func:`degenerate_shift_pairs`: zero shift and a
    capillary's DisplaceX at low angles).

    Parameters
    ----------
    exclude
        Terms never refined (:class:`SearchSpace`).
    background_peaks
        Background humps ``(position, fwhm)`` (deg 2θ) in every trial's background.
    occupancy
        Site occupancies refined in every trial's atoms stage (on request; a shared site keeps its sum).
    min_atom_fraction
        Smallest weight fraction of a phase whose atoms are refined.
    """
    exclude = (*exclude, *(t for t in degenerate_shift_terms(refinement) if t not in exclude))
    atom_phases: tuple[str, ...] | None = None
    strain: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...] = ()
    if len(refinement.phases) > 1:
        head = default_strategy(BackgroundSpec("chebyshev", 6, tuple(background_peaks))).stages[:3]
        with np.errstate(all="ignore"):
            early = refinement.run(Strategy(head))
        if early.ok:
            major = major_phases(early, min_atom_fraction)
            if len(major) < len(refinement.phases):
                atom_phases = major
        else:
            logger.warning(
                "strategy search: weight fractions not estimated (%s: %s); atoms of every phase refined",
                early.status,
                early.message,
            )
        strain = tuple((ph.name, tuple(strain_candidates(ph))) for ph in refinement.phases)
    return SearchSpace(
        *refinement.fit_range,
        exclude=tuple(exclude),
        asymmetry_parameter=refinement.instrument.asymmetry_parameter,
        atom_phases=atom_phases,
        strain_axes=strain,
        background_peaks=tuple(background_peaks),
        occupancy=tuple(occupancy),
        exclusive_shifts=tuple(p for p in degenerate_shift_pairs(refinement) if not set(p) & set(exclude)),
    )
