"""Photon-counting noise model for transmission measurements (METHODS.md §1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from xbeam_bluesky.errors import StackFormatError, XbeamInputError


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
            raise XbeamInputError(
                f"PhotonNoiseModel gain={self.gain!r}; expected a positive variance per count"
            )
        if int(self.flat_frames) != self.flat_frames or self.flat_frames < 1:
            raise XbeamInputError(
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


@dataclass(frozen=True)
class EstimatedNoiseModel:
    """Noise of absorbance estimated from the data itself: Var(μt) = (a + b·e^μt) · i0_ref / I0.

    For incident counts that are unknown (or not photons): the form is that of photon counting with a noiseless
    reference (b = gain / I0) plus a constant floor ``a``, fitted by :func:`estimate_noise`. ``i0_ref`` is the
    incident count the fit belongs to (1 = the data's own, nominal units); other counts scale the variance as
    photon noise does.

    Attributes
    ----------
    a : float
        Constant variance term, OD².
    b : float
        Variance per unit transmission⁻¹ (e^μt), OD².
    i0_ref : float
        Incident counts the fit refers to.
    n_samples : int
        Residuals the fit used.
    """

    a: float
    b: float
    i0_ref: float = 1.0
    n_samples: int = 0

    def __post_init__(self) -> None:
        if not (self.a >= 0 and self.b >= 0 and self.a + self.b > 0):
            raise XbeamInputError(
                f"EstimatedNoiseModel a={self.a!r}, b={self.b!r}; expected non-negative, not both 0"
            )
        if not self.i0_ref > 0:
            raise XbeamInputError(f"EstimatedNoiseModel i0_ref={self.i0_ref!r}; expected positive counts")

    @property
    def effective_counts(self) -> float:
        """Photon-equivalent incident counts at ``i0_ref``: 1/b, the I0 with which photon noise alone (noiseless
        reference) gives this variance at a transmission e^−μt."""
        return 1.0 / self.b if self.b > 0 else float("inf")

    def var_absorbance(
        self,
        i0_counts: np.ndarray | float,
        mu_t: np.ndarray | float,
        *,
        i0_var: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """Variance of μt (dimensionless²) at incident counts ``i0_counts``; ``i0_var`` is accepted for the
        common interface and ignored (the fit already holds the reference's noise)."""
        scale = self.i0_ref / np.asarray(i0_counts, dtype=np.float64)
        return (self.a + self.b * np.exp(np.asarray(mu_t, dtype=np.float64))) * scale

    def as_dict(self) -> dict[str, float]:
        """JSON-friendly parameters."""
        return {**asdict(self), "effective_counts": self.effective_counts}


def estimate_noise(
    od: np.ndarray,
    energies: np.ndarray,
    *,
    i0_ref: float = 1.0,
    max_pixels: int = 20_000,
    n_bins: int = 16,
    seed: int = 0,
) -> EstimatedNoiseModel:
    """Fit Var(μt) = a + b·e^μt to the data's own scatter between neighbouring energies.

    At every interior energy the residual r_i = μ_i − (w μ_{i−1} + (1 − w) μ_{i+1}) (linear interpolation in
    energy) has variance (1 + w² + (1 − w)²)·σ² when the spectrum is locally linear; its robust spread
    (1.4826 × median absolute deviation, so sharp peaks and edges do not count) is taken in bins of μt and the
    two terms fitted by non-negative least squares.

    Parameters
    ----------
    od : numpy.ndarray
        Optical density, shape (n_energies, ny, nx) or (n_energies, n_pixels).
    energies : numpy.ndarray
        eV, one per frame, increasing.
    i0_ref : float
        Incident counts the data were measured with (1 when unknown: nominal units).
    max_pixels : int
        Pixels sampled (memory and time bounded).
    n_bins : int
        Bins of μt.
    seed : int
        Pixel sampling seed.

    Returns
    -------
    EstimatedNoiseModel
    """
    from scipy.optimize import nnls

    e = np.asarray(energies, dtype=np.float64)
    mu = np.asarray(od, dtype=np.float64).reshape(np.shape(od)[0], -1)
    if mu.shape[0] != e.size or e.size < 3:
        raise StackFormatError(
            f"estimate_noise: {mu.shape[0]} frames, {e.size} energies; expected ≥ 3, one per frame"
        )
    if np.any(np.diff(e) <= 0):
        raise StackFormatError("estimate_noise: energies must increase (sort the stack by energy first)")
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(np.all(np.isfinite(mu), axis=0))
    if keep.size == 0:
        raise StackFormatError("estimate_noise: no pixel has finite values at every energy")
    mu = mu[:, rng.choice(keep, min(max_pixels, keep.size), replace=False)]
    w = ((e[2:] - e[1:-1]) / (e[2:] - e[:-2]))[:, None]
    resid = mu[1:-1] - (w * mu[:-2] + (1 - w) * mu[2:])
    factor = np.broadcast_to(1 + w**2 + (1 - w) ** 2, resid.shape).ravel()
    level, resid = mu[1:-1].ravel(), resid.ravel() / np.sqrt(factor)
    edges = np.quantile(level, np.linspace(0, 1, n_bins + 1))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, n_bins - 1)
    centre, var, weight = [], [], []
    for k in range(n_bins):
        r = resid[which == k]
        if r.size < 50:
            continue
        mad = np.median(np.abs(r - np.median(r)))
        centre.append(np.median(level[which == k]))
        var.append((1.4826 * mad) ** 2)
        weight.append(np.sqrt(r.size))
    if not var:
        raise StackFormatError("estimate_noise: too few samples to estimate the noise (need ≥ 50 per μt bin)")
    var, centre, weight = np.asarray(var), np.asarray(centre), np.asarray(weight)
    scale = weight / np.maximum(var, 1e-30)
    basis = np.stack([np.ones_like(centre), np.exp(centre)], axis=1) * scale[:, None]
    (a, b), _ = nnls(basis, var * scale)
    return EstimatedNoiseModel(a=float(a), b=float(b), i0_ref=float(i0_ref), n_samples=int(resid.size))


def noise_model(
    kind: str, *, flat_frames: int = 1, gain: float | None = None, offset: float | None = None
) -> PhotonNoiseModel:
    """The detector model for ``kind``: ``"photon"`` (gain 1, offset 0: STXM, photon-counting pixel detectors)
    or ``"scmos"`` (gain, offset; default Ito et al.'s 9.31, −63), with ``flat_frames`` references averaged
    into I0. ``"estimate"`` needs the data: use :func:`estimate_noise`."""
    if kind == "photon":
        return PhotonNoiseModel(gain=1.0, offset=0.0, flat_frames=flat_frames)
    if kind == "scmos":
        defaults = PhotonNoiseModel()
        return PhotonNoiseModel(
            gain=defaults.gain if gain is None else gain,
            offset=defaults.offset if offset is None else offset,
            flat_frames=flat_frames,
        )
    raise XbeamInputError(f"noise model {kind!r}; expected 'photon', 'scmos' or 'estimate' (estimate_noise)")
