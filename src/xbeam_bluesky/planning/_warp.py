"""Energy warping of the prior kernel: short length scales at the edge, longer ones away from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import DesignInputError


@dataclass(frozen=True)
class EnergyWarp:
    """Monotonic map ``u(E)`` in which the prior kernel is stationary.

    ``u(E) = sign(E − E1) · 2L (√(1 + |E − E1|/L) − 1)``, so ``du/dE = 1/√(1 + |E − E1|/L)``: the kernel
    ``exp(−(u_i − u_j)²/c²)`` has the length scale ``c`` at ``E1`` and ``c √(1 + |E − E1|/L)`` elsewhere — the
    sharp features of the rising edge and white line, the slower oscillations above it (which stretch like the
    photoelectron wavenumber k ∝ √(E − E0)) and the flat pre-edge. ``L → ∞`` is the stationary kernel.

    Attributes
    ----------
    center_eV
        ``E1``: where the length scale is shortest (eV).
    scale_eV
        ``L``: the distance from ``E1`` over which the length scale grows by √2 (eV).
    """

    center_eV: float
    scale_eV: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.center_eV):
            raise DesignInputError(f"warp center_eV must be finite, got {self.center_eV!r}")
        if not self.scale_eV > 0 or not np.isfinite(self.scale_eV):
            raise DesignInputError(f"warp scale_eV must be a finite value > 0 eV, got {self.scale_eV!r}")

    def apply(self, energies_eV: ArrayLike) -> NDArray[np.float64]:
        """Warped coordinate ``u(E)`` (eV-like units; ``u(E1) = 0``)."""
        d = np.asarray(energies_eV, dtype=float) - self.center_eV
        return np.sign(d) * 2.0 * self.scale_eV * (np.sqrt(1.0 + np.abs(d) / self.scale_eV) - 1.0)

    def local_length_scale(self, energies_eV: ArrayLike, length_scale_eV: float) -> NDArray[np.float64]:
        """Length scale (eV) of the warped kernel at each energy: ``c √(1 + |E − E1|/L)``."""
        d = np.abs(np.asarray(energies_eV, dtype=float) - self.center_eV)
        return length_scale_eV * np.sqrt(1.0 + d / self.scale_eV)

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly record."""
        return {"center_eV": float(self.center_eV), "scale_eV": float(self.scale_eV)}
