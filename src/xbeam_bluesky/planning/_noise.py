"""Photon-counting noise of a transmission measurement, expressed in the prior's units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import DesignInputError


class DetectorVarianceModel(Protocol):
    """What the design needs from :class:`xbeam_bluesky.spectra.PhotonNoiseModel`."""

    gain: float
    offset: float

    def var_absorbance(self, i0_counts: ArrayLike, mu_t: ArrayLike) -> NDArray[np.float64]:
        """Variance of ``μt = ln(I0/I)`` for ``i0_counts`` incident counts and absorbance ``mu_t``."""
        ...

    def sample_counts(self, mean_counts: NDArray[np.float64], rng: np.random.Generator) -> NDArray:
        """Detector readings with mean ``mean_counts`` and this model's variance."""
        ...


def _default_detector() -> DetectorVarianceModel:
    from xbeam_bluesky.spectra import PhotonNoiseModel

    return PhotonNoiseModel()


@dataclass(frozen=True)
class TransmissionNoise:
    """Noise of one transmission point of a sample whose absorbance follows the prior mean.

    The sample's absorbance is ``μt(E) = mu_t_pre_edge + edge_jump * f(E)`` with ``f`` the normalized
    spectrum (the prior mean when designing). ``I0 = i0_counts_per_s * dwell`` and ``I = I0 exp(-μt)``
    counts; the detector variance model gives ``Var(μt)``, divided by ``edge_jump²`` to normalized units.

    Parameters
    ----------
    i0_counts_per_s
        Incident counts per second on one detector element (detector units, e.g. ADU/s of one pixel).
    mu_t_pre_edge
        Sample absorbance just below the edge (dimensionless).
    edge_jump
        Sample absorbance edge step Δμt (dimensionless).
    detector
        Variance model ``Var(N) = gain·N + offset``; default :class:`xbeam_bluesky.spectra.PhotonNoiseModel`.
    """

    i0_counts_per_s: float = 2.0e5
    mu_t_pre_edge: float = 0.5
    edge_jump: float = 1.0
    detector: DetectorVarianceModel = field(default_factory=_default_detector)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.i0_counts_per_s) and self.i0_counts_per_s > 0):
            raise DesignInputError(f"i0_counts_per_s must be > 0 counts/s, got {self.i0_counts_per_s!r}")
        if not (np.isfinite(self.edge_jump) and self.edge_jump > 0):
            raise DesignInputError(f"edge_jump must be > 0, got {self.edge_jump!r}")
        if not (np.isfinite(self.mu_t_pre_edge) and self.mu_t_pre_edge >= 0):
            raise DesignInputError(f"mu_t_pre_edge must be >= 0, got {self.mu_t_pre_edge!r}")

    def absorbance(self, normalized: ArrayLike) -> NDArray[np.float64]:
        """Sample absorbance μt for a normalized spectrum."""
        return self.mu_t_pre_edge + self.edge_jump * np.asarray(normalized, dtype=float)

    def variance(self, normalized: ArrayLike, dwell_s: ArrayLike) -> NDArray[np.float64]:
        """Variance (normalized units²) of one measurement of dwell ``dwell_s`` (s) where ``f = normalized``."""
        i0 = self.i0_counts_per_s * np.asarray(dwell_s, dtype=float)
        var_mu_t = np.asarray(self.detector.var_absorbance(i0, self.absorbance(normalized)), dtype=float)
        return var_mu_t / self.edge_jump**2

    def simulate(
        self, normalized: ArrayLike, dwell_s: ArrayLike, rng: np.random.Generator
    ) -> NDArray[np.float64]:
        """One noisy measurement of the normalized spectrum, simulated on counts.

        ``I0`` and ``I`` are drawn by the detector model's ``sample_counts`` (Poisson photons scaled by the gain).
        Returns ``(ln(I0/I) - mu_t_pre_edge) / edge_jump``.
        """
        mu_t = self.absorbance(normalized)
        i0_mean = np.broadcast_to(self.i0_counts_per_s * np.asarray(dwell_s, dtype=float), mu_t.shape)
        i0 = np.maximum(self.detector.sample_counts(i0_mean, rng), 1.0)
        i = np.maximum(self.detector.sample_counts(i0_mean * np.exp(-mu_t), rng), 1.0)
        return (np.log(i0 / i) - self.mu_t_pre_edge) / self.edge_jump

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly parameters."""
        return {
            "model": "transmission photon counting",
            "i0_counts_per_s": self.i0_counts_per_s,
            "mu_t_pre_edge": self.mu_t_pre_edge,
            "edge_jump": self.edge_jump,
            "detector_gain": float(self.detector.gain),
            "detector_offset": float(self.detector.offset),
            "detector_flat_frames": int(self.detector.flat_frames),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransmissionNoise:
        """Inverse of :meth:`to_dict` (a record without ``detector_flat_frames`` had one flat)."""
        from xbeam_bluesky.spectra import PhotonNoiseModel

        return cls(
            i0_counts_per_s=float(data["i0_counts_per_s"]),
            mu_t_pre_edge=float(data["mu_t_pre_edge"]),
            edge_jump=float(data["edge_jump"]),
            detector=PhotonNoiseModel(
                gain=float(data["detector_gain"]),
                offset=float(data["detector_offset"]),
                flat_frames=int(data.get("detector_flat_frames", 1)),
            ),
        )
