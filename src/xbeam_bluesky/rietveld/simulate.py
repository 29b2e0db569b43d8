"""Forward model for simulated instruments: expected counts of a powder pattern (no noise)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .crystal import Phase, load_phase
from .instrument import Instrument
from .model import PatternCalculator, initial_state

__all__ = ["simulate_pattern"]


def simulate_pattern(
    cifs: Sequence[str | Path | Phase],
    two_theta_deg: np.ndarray,
    *,
    instrument: Instrument | None = None,
    scales: Sequence[float] | None = None,
    background: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Expected counts of a powder pattern from CIF structures (no noise; add Poisson noise yourself).

    Parameters
    ----------
    cifs
        CIF paths (or already loaded :class:`Phase` objects), one per phase.
    two_theta_deg
        Sorted, strictly increasing 2θ grid (deg).
    instrument
        Wavelengths, profile terms (GSAS-II conventions); default :meth:`Instrument.lab_cu_ka`.
    scales
        Phase scale factors S (counts per unit m|F|²LP); default 1e-3 for every phase.
    background
        Constant or per-point background (counts) added to the peaks.

    Returns
    -------
    numpy.ndarray
        Expected counts at each 2θ, same shape as ``two_theta_deg``.

    Raises
    ------
    ValueError
        Non-monotonic or non-finite 2θ, wrong number of scales, or a bad background array.
    """
    x = np.asarray(two_theta_deg, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError("two_theta_deg: expected a 1-D array of at least 2 angles (deg)")
    if not np.all(np.isfinite(x)) or np.any(np.diff(x) <= 0):
        raise ValueError("two_theta_deg: expected finite, strictly increasing angles (deg)")
    if x[0] <= 0 or x[-1] >= 180:
        raise ValueError(f"two_theta_deg: angles must lie in (0, 180) deg, got {x[0]}..{x[-1]}")
    phases = [c if isinstance(c, Phase) else load_phase(c) for c in cifs]
    inst = instrument or Instrument.lab_cu_ka()
    if scales is None:
        scales = [1e-3] * len(phases)
    if len(scales) != len(phases):
        raise ValueError(f"scales: expected {len(phases)} values (one per CIF), got {len(scales)}")
    bkg = np.broadcast_to(np.asarray(background, dtype=float), x.shape)
    state = initial_state(phases, inst)
    for ps, s in zip(state.phases, scales, strict=True):
        ps.scale = float(s)
    calc = PatternCalculator(x, phases, inst)
    calc.update_reflections(state)
    return calc.evaluate(state).y + bkg
