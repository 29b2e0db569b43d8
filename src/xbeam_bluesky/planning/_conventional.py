"""The conventional region grid used at XANES-imaging beamlines: the baseline a design is compared with, and
its expected error at the design's beam time."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import DesignInputError
from xbeam_bluesky.planning._grid import candidate_grid, default_range
from xbeam_bluesky.planning._noise import TransmissionNoise
from xbeam_bluesky.planning._prior import GaussianProcessPrior, prior_from_library
from xbeam_bluesky.planning._reconstruction import grid_indices, reconstruct
from xbeam_bluesky.planning._timing import ScanTimeModel
from xbeam_bluesky.planning._warp import EnergyWarp
from xbeam_bluesky.spectra import PhotonNoiseModel

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
            raise DesignInputError(f"{name} must be > 0, got {value!r}")
    if not stop_eV > start_eV:
        raise DesignInputError(f"stop_eV ({stop_eV}) must be above start_eV ({start_eV})")
    if not edge_to_eV > edge_from_eV:
        raise DesignInputError(f"edge_to_eV ({edge_to_eV}) must be above edge_from_eV ({edge_from_eV})")
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


def design_grid(design: Mapping[str, Any], e0_eV: float) -> NDArray[np.float64]:
    """The candidate grid (eV) of a spectrum design record (``candidates``), else the default grid at ``e0_eV``."""
    if "candidates" in design:
        c = design["candidates"]
        return np.round(c["start_eV"] + c["step_eV"] * np.arange(int(c["n"])), 6)
    return candidate_grid(*default_range(e0_eV))


def _prior_and_noise(
    design: Mapping[str, Any], e0_eV: float
) -> tuple[GaussianProcessPrior, TransmissionNoise, NDArray[np.float64]]:
    grid = design_grid(design, e0_eV)
    recorded = design["prior"]
    warp = recorded.get("warp")
    prior = prior_from_library(
        None, grid, e0_ref_eV=e0_eV, length_scale_eV=recorded["length_scale_eV"],
        kernel=recorded.get("kernel", "stationary"), warp=None if warp is None else EnergyWarp(**warp),
    )  # fmt: skip
    n = design["noise"]
    noise = TransmissionNoise(
        i0_counts_per_s=n["i0_counts_per_s"], mu_t_pre_edge=n["mu_t_pre_edge"], edge_jump=n["edge_jump"],
        detector=PhotonNoiseModel(gain=n["detector_gain"], offset=n["detector_offset"]),
    )  # fmt: skip
    return prior, noise, grid


def conventional_expected_rmse(
    design: Mapping[str, Any], energies_eV: Sequence[float], dwell_s: float, *, e0_eV: float
) -> dict[str, Any]:
    """Expected RMSE (normalized units) of the GP reconstruction from a conventional grid at the design's
    beam time, with the design's prior, noise and time models.

    The conventional grid gets a uniform dwell that makes its scan time (same time model: moves, settles, stage
    path and readouts per energy, no split frames) equal to the design's ``total_time_s``; if even a zero dwell
    does not fit, the grid is evaluated at ``dwell_s`` and its longer time is reported.

    Parameters
    ----------
    design : dict
        A spectrum design record (:meth:`EnergyDesign.to_dict`, e.g. a run's ``start["design"]``).
    energies_eV : list of float
        The conventional grid, eV (on the design's candidate grid, e.g. :func:`conventional_grid` with
        ``snap_to``).
    dwell_s : float
        Dwell per energy (s) used when the design's time does not fit the grid.
    e0_eV : float
        Edge energy (eV): the prior's reference and the default candidate grid's centre.

    Returns
    -------
    dict
        ``expected_rmse``, ``dwell_s``, ``time_s`` (design time units), ``equal_time`` (bool), ``energies_eV``,
        and, for a plot, ``prior_mean`` / ``prior_std`` on ``grid_eV``.
    """
    prior, noise, grid = _prior_and_noise(design, e0_eV)
    # the conventional dwell stays far below the camera's saturation: none of the design's pro-rata charge for
    # split frames applies to it
    model = replace(ScanTimeModel.from_dict(design["time_model"]), pick_overhead_s=0.0)
    conv = np.asarray(energies_eV, dtype=float)
    fixed = model.scan_time_s(conv, 0.0)
    dwell = (float(design["total_time_s"]) - fixed) / conv.size
    equal_time = dwell > 0
    if not equal_time:
        dwell = float(dwell_s)
    idx = grid_indices(grid, conv)
    cov = prior.covariance()
    variances = noise.variance(prior.mean[idx], dwell)
    _, std = reconstruct(prior, grid[idx], prior.mean[idx], variances, cov=cov)
    return {
        "expected_rmse": float(math.sqrt(np.mean(std**2))),
        "dwell_s": float(dwell),
        "time_s": float(model.scan_time_s(conv, dwell)),
        "equal_time": bool(equal_time),
        "energies_eV": [float(e) for e in conv],
        "grid_eV": grid,
        "prior_mean": prior.mean,
        "prior_std": np.sqrt(np.diag(cov)),
    }
