"""Data containers for X-ray absorption spectra."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xbeam_bluesky.errors import SpectrumFormatError

SpectrumKind = Literal["counts", "mu", "normalized"]


@dataclass(frozen=True, eq=False)
class Spectrum:
    """One measured absorption spectrum.

    Attributes
    ----------
    energy : numpy.ndarray
        Photon energies in eV, float64, strictly increasing.
    mu : numpy.ndarray
        Absorbance μ(E) (dimensionless μt, or normalized μ when ``kind == "normalized"``), same length.
    name : str
        Short name (the file stem for files).
    kind : {"counts", "mu", "normalized"}
        ``"counts"``: computed from raw transmission counts as ln(i0/itrans) (``i0``/``itrans`` kept);
        ``"mu"``: un-normalized μ(E); ``"normalized"``: edge-step normalized μ(E).
    path : pathlib.Path or None
        The file it was read from.
    i0, itrans : numpy.ndarray or None
        Raw incident and transmitted counts per point (only for ``kind == "counts"``).
    metadata : dict
        Header fields of the file (XDI ``Family.field`` keys, ALS ``#%Key`` lines, ...).
    """

    energy: np.ndarray
    mu: np.ndarray
    name: str
    kind: SpectrumKind = "mu"
    path: Path | None = None
    i0: np.ndarray | None = None
    itrans: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        energy = np.asarray(self.energy, dtype=np.float64)
        mu = np.asarray(self.mu, dtype=np.float64)
        where = f"spectrum {self.name!r}" + (f" ({self.path})" if self.path else "")
        if energy.ndim != 1 or energy.shape != mu.shape:
            raise SpectrumFormatError(
                f"{where}: energy and mu must be 1-D of equal length, got {energy.shape} and {mu.shape}"
            )
        if energy.size < 2:
            raise SpectrumFormatError(f"{where}: needs at least 2 points, got {energy.size}")
        bad = ~(np.isfinite(energy) & np.isfinite(mu))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SpectrumFormatError(
                f"{where}: non-finite value at point {i} (E={energy[i]!r}, mu={mu[i]!r}); "
                "expected finite numbers"
            )
        steps = np.diff(energy)
        if (steps <= 0).any():
            i = int(np.flatnonzero(steps <= 0)[0])
            raise SpectrumFormatError(
                f"{where}: energies must increase strictly, but E[{i + 1}]={energy[i + 1]} "
                f"follows E[{i}]={energy[i]}"
            )
        object.__setattr__(self, "energy", energy)
        object.__setattr__(self, "mu", mu)


@dataclass(frozen=True, eq=False)
class NormalizedSpectrum:
    """A spectrum after pre-edge subtraction and edge-step normalization (Athena conventions).

    Attributes
    ----------
    energy : numpy.ndarray
        Energies in eV (as measured, not shifted).
    mu : numpy.ndarray
        The input absorbance.
    norm : numpy.ndarray
        (μ − pre-edge line) / edge step: ≈ 0 below the edge, ≈ 1 far above it.
    e0 : float
        Edge energy in eV (maximum of the smoothed derivative).
    edge_step : float
        Post-edge minus pre-edge curve at ``e0`` (units of ``mu``).
    pre_coeffs, post_coeffs : numpy.ndarray
        Polynomial coefficients (``numpy.polyval`` order, in E − e0 eV) of the pre- and post-edge curves.
    name : str
        The spectrum's name.
    """

    energy: np.ndarray
    mu: np.ndarray
    norm: np.ndarray
    e0: float
    edge_step: float
    pre_coeffs: np.ndarray
    post_coeffs: np.ndarray
    name: str
