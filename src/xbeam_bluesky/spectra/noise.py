"""Photon-counting noise model for transmission measurements (METHODS.md §1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PhotonNoiseModel:
    """Detector variance model Var(N) = gain · N + offset (clipped at 0), N in detector counts.

    Pure Poisson photon counting is ``gain=1, offset=0``. The defaults are the sCMOS-like fit of Ito et al.
    (g ≈ 9.31, d ≈ −63.0): counts are in ADU with ~9.3 ADU per detected photon and the offset absorbs the
    read-noise/baseline fit.

    Attributes
    ----------
    gain : float
        Variance per count (ADU per photon for an sCMOS), dimensionless.
    offset : float
        Constant variance term, counts².
    flat_frames : int
        Open-beam (flat-field) frames averaged into the I0 estimate of each pixel: the I0 term of
        :meth:`var_absorbance` is ``Var(N) / flat_frames``. 1 = a single flat.
    """

    gain: float = 9.31
    offset: float = -63.0
    flat_frames: int = 1

    def __post_init__(self) -> None:
        if not self.gain > 0:
            raise ValueError(f"PhotonNoiseModel gain={self.gain!r}; expected a positive variance per count")
        if int(self.flat_frames) != self.flat_frames or self.flat_frames < 1:
            raise ValueError(
                f"PhotonNoiseModel flat_frames={self.flat_frames!r}; expected a positive number of averaged flats"
            )

    def var_counts(self, counts: np.ndarray | float) -> np.ndarray:
        """Variance of a detector reading of ``counts`` (counts²), never negative."""
        return np.maximum(self.gain * np.asarray(counts, dtype=np.float64) + self.offset, 0.0)

    def var_absorbance(
        self,
        i0_counts: np.ndarray | float,
        mu_t: np.ndarray | float,
        *,
        i0_var: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """Variance of μt = ln(I0 / I) with I = I0 · exp(−μt).

        Var(μt) = Var(I0)/I0² + Var(I)/I² (first-order error propagation).

        Parameters
        ----------
        i0_counts : array_like
            Incident counts (flat-field counts per pixel per frame, or monitor counts).
        mu_t : array_like
            Absorbance of the sample, dimensionless.
        i0_var : array_like, optional
            Variance of the I0 estimate; defaults to this model's variance of ``i0_counts`` divided by
            ``flat_frames`` (the mean of that many flats). Pass 0 for a noiseless reference.

        Returns
        -------
        numpy.ndarray
            Variance of μt, dimensionless².
        """
        i0 = np.asarray(i0_counts, dtype=np.float64)
        transmitted = i0 * np.exp(-np.asarray(mu_t, dtype=np.float64))
        v0 = (
            self.var_counts(i0) / self.flat_frames if i0_var is None else np.asarray(i0_var, dtype=np.float64)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            return v0 / i0**2 + self.var_counts(transmitted) / transmitted**2

    def sample_counts(self, mean_counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw detector readings with mean ``mean_counts`` and this model's variance.

        Photons are Poisson(mean/gain) scaled by the gain, plus zero-mean Gaussian noise carrying the offset
        variance when it is positive (a negative offset is a fit artefact and is not simulated).
        """
        mean = np.asarray(mean_counts, dtype=np.float64)
        counts = self.gain * rng.poisson(np.maximum(mean, 0.0) / self.gain)
        if self.offset > 0:
            counts = counts + rng.normal(0.0, np.sqrt(self.offset), size=mean.shape)
        return counts

    def as_dict(self) -> dict[str, float]:
        """JSON-friendly parameters (for run metadata and design records)."""
        return asdict(self)


def absorbance_from_counts(
    counts: np.ndarray, flat: np.ndarray, dark: np.ndarray | float = 0.0, *, floor: float = 1.0
) -> np.ndarray:
    """Absorbance μt = −ln((I − dark) / (flat − dark)) of a transmission image or spectrum.

    Parameters
    ----------
    counts, flat : numpy.ndarray
        Sample and flat-field (sample out) readings, detector counts.
    dark : numpy.ndarray or float
        Dark (shutter closed) reading.
    floor : float
        Dark-corrected values below this are clipped to it before the logarithm (counts).

    Returns
    -------
    numpy.ndarray
        float32 absorbance.
    """
    i = np.maximum(np.asarray(counts, dtype=np.float32) - dark, floor)
    i0 = np.maximum(np.asarray(flat, dtype=np.float32) - dark, floor)
    return np.log(i0 / i, dtype=np.float32)
