"""The conventional region grid used at XANES-imaging beamlines: the baseline a design is compared with."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: ħ²/2mₑ in eV·Å²: E - E0 = k² / ETOK (k in Å⁻¹).
ETOK = 0.2624682917


def conventional_grid(
    e0_eV: float,
    start_eV: float,
    stop_eV: float,
    *,
    pre_step_eV: float = 5.0,
    edge_from_eV: float = -20.0,
    edge_to_eV: float = 30.0,
    edge_step_eV: float = 0.5,
    k_step_per_A: float = 0.05,
    snap_to: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Region grid: coarse pre-edge steps, fine steps over the edge, constant steps in k after it.

    Parameters
    ----------
    e0_eV
        Edge energy (eV).
    start_eV, stop_eV
        Scan range (eV); both ends are included.
    pre_step_eV
        Step below ``e0 + edge_from_eV`` (eV); beamlines use 5–10 eV.
    edge_from_eV, edge_to_eV
        Edge region relative to E0 (eV).
    edge_step_eV
        Step in the edge region (eV); beamlines use 0.2–1 eV.
    k_step_per_A
        Step in photoelectron wavenumber above the edge region (Å⁻¹).
    snap_to
        Candidate grid (eV): if given, every energy is moved to its nearest candidate and duplicates dropped.

    Returns
    -------
    numpy.ndarray
        Sorted unique energies (eV).
    """
    for name, value in (
        ("pre_step_eV", pre_step_eV),
        ("edge_step_eV", edge_step_eV),
        ("k_step_per_A", k_step_per_A),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    if not stop_eV > start_eV:
        raise ValueError(f"stop_eV ({stop_eV}) must be above start_eV ({start_eV})")
    if not edge_to_eV > edge_from_eV:
        raise ValueError(f"edge_to_eV ({edge_to_eV}) must be above edge_from_eV ({edge_from_eV})")
    edge_lo = min(max(e0_eV + edge_from_eV, start_eV), stop_eV)
    edge_hi = min(max(e0_eV + edge_to_eV, start_eV), stop_eV)
    pre = np.arange(start_eV, edge_lo, pre_step_eV)
    edge = np.arange(edge_lo, edge_hi, edge_step_eV)
    k_lo = np.sqrt(ETOK * max(edge_hi - e0_eV, 0.0))
    k_hi = np.sqrt(ETOK * max(stop_eV - e0_eV, 0.0))
    post = e0_eV + np.arange(k_lo, k_hi, k_step_per_A) ** 2 / ETOK
    energies = np.concatenate([pre, edge, post[post >= edge_hi], [stop_eV]])
    energies = energies[(energies >= start_eV) & (energies <= stop_eV)]
    if snap_to is not None:
        grid = np.asarray(snap_to, dtype=float)
        idx = np.abs(grid[None, :] - energies[:, None]).argmin(axis=1)
        energies = grid[idx]
    return np.unique(np.round(energies, 6))
