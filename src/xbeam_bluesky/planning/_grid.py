"""The candidate energy grid a design picks its energies from."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Candidate grid relative to the edge when no range is given: start, stop, step in eV (the published Fe K case
#: 7076.2–7181.2 eV in 0.1 eV steps).
DEFAULT_RANGE_REL_EV = (-35.8, 69.2, 0.1)


def default_range(e0_eV: float) -> tuple[float, float, float]:
    """(start, stop, step) in eV of the default candidate grid around the edge energy ``e0_eV``."""
    return e0_eV + DEFAULT_RANGE_REL_EV[0], e0_eV + DEFAULT_RANGE_REL_EV[1], DEFAULT_RANGE_REL_EV[2]


def candidate_grid(start_eV: float, stop_eV: float, step_eV: float) -> NDArray[np.float64]:
    """Energies ``start_eV``, ``start_eV + step_eV``, … up to ``stop_eV`` (both ends included when the range is
    a whole number of steps), rounded to 1 µeV so that the same range always gives the same floats (eV).

    The caller checks the range (``step_eV > 0``, ``stop_eV > start_eV``) and names its own input in the error.
    """
    n = round((stop_eV - start_eV) / step_eV) + 1
    return np.round(start_eV + step_eV * np.arange(n), 6)
