"""Standardized spectra, their photon noise, and the separation statistic D (Ito et al. 2024)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import ClusteringInputError

#: Normal quantile Φ⁻¹(0.99): a spectrum this far (in D) from every site opens a new site.
ACCEPT_THRESHOLD = 2.326
#: Normal quantile Φ⁻¹(0.9999): sites closer than this (average linkage in D) are merged.
MERGE_THRESHOLD = 3.719


class AbsorbanceNoise(Protocol):
    """Anything that gives the variance of an absorbance μt measured with ``i0_counts`` incident counts."""

    def var_absorbance(self, i0_counts: ArrayLike, mu_t: ArrayLike) -> NDArray[np.float64]:
        """Variance of μt (dimensionless²) for incident counts ``i0_counts`` and absorbance ``mu_t``."""
        ...


def standardize(spectra: ArrayLike) -> NDArray[np.float64]:
    """Standardize spectra along the last axis: z = (s − mean s) / ‖s − mean s‖.

    Parameters
    ----------
    spectra
        Spectra, shape (..., n_energies), any units (absorbance μt in practice).

    Returns
    -------
    z
        Zero-mean, unit-norm spectra; z_p·z_q is the Pearson correlation. A flat spectrum gives zeros.
    """
    s = np.asarray(spectra, dtype=np.float64)
    c = s - s.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(c, axis=-1, keepdims=True)
    if np.all(norm > 0):  # no flat spectrum: divide in place (no further copies of the spectra)
        c /= norm
        return c
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(norm > 0, c / np.where(norm > 0, norm, 1.0), 0.0)
    return z


def incident_counts(
    i0_counts: ArrayLike, n_energies: int, what: str = "i0_counts"
) -> float | NDArray[np.float64]:
    """Check incident counts: a positive finite scalar, or one positive finite value per energy.

    Parameters
    ----------
    i0_counts
        Incident (flat-field) counts per pixel per frame: one number for every energy, or a sequence of
        ``n_energies`` numbers (per energy, e.g. with a per-energy dwell).
    n_energies
        Number of energies of the spectra the counts belong to.
    what
        Name used in error messages.

    Returns
    -------
    float or numpy.ndarray
        The scalar as ``float`` (unchanged path), or a float64 array of shape (n_energies,).

    Raises
    ------
    ValueError
        If the array has another length than ``n_energies`` or any value is ≤ 0, NaN or infinite.
    """
    arr = np.asarray(i0_counts, dtype=np.float64)
    if arr.ndim == 0:
        value = float(arr)
        if not (np.isfinite(value) and value > 0):
            raise ClusteringInputError(
                f"{what} = {value!r}; expected positive finite incident counts per pixel per frame"
            )
        return value
    if arr.ndim != 1 or arr.shape[0] != n_energies:
        raise ClusteringInputError(
            f"{what}: {arr.shape[0] if arr.ndim == 1 else arr.shape} values for {n_energies} energies; expected "
            "one number or one value per energy"
        )
    bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
    if bad.size:
        raise ClusteringInputError(
            f"{what}[{bad[0]}] = {float(arr[bad[0]])!r}; expected positive finite incident counts per pixel per frame"
        )
    return arr


def model_error_per_energy(model_error: ArrayLike | None, n_energies: int) -> NDArray[np.float64]:
    """Check a model-error term: ``None`` (none), one number for every energy, or one per energy.

    Parameters
    ----------
    model_error
        Standard deviation ε of the spread of real spectra beyond photon noise, on the standardized scale
        (a fraction of ‖μt − mean μt‖, dimensionless), ≥ 0 and finite.
    n_energies
        Number of energies.

    Returns
    -------
    numpy.ndarray
        ε per energy, shape (n_energies,).
    """
    if model_error is None:
        return np.zeros(n_energies)
    eps = np.asarray(model_error, dtype=np.float64)
    if eps.ndim == 0:
        eps = np.full(n_energies, float(eps))
    if eps.shape != (n_energies,) or not np.all(np.isfinite(eps) & (eps >= 0)):
        raise ClusteringInputError(
            f"model_error: expected one finite value ≥ 0 or {n_energies} (one per energy), got "
            f"{np.asarray(model_error).tolist() if eps.size < 8 else f'shape {eps.shape}'}"
        )
    return eps


def standardized_noise(
    mu_t: ArrayLike,
    i0_counts: float | ArrayLike,
    noise: AbsorbanceNoise,
    model_error: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Noise on the standardized spectrum: τ_i = sqrt(σ_μt,i² / ‖μt − mean μt‖² + ε_i²).

    σ_μt,i is the photon (detector) noise; ε_i the model error (``docs/decisions/clustering-model-error.md``):
    the spread of real spectra of one phase beyond photon noise, as a fraction of the spectrum's own
    spread, so it does not shrink with dose and the discrimination limit saturates.

    Parameters
    ----------
    mu_t
        Absorbance spectra μt (dimensionless), shape (..., n_energies).
    i0_counts
        Incident (flat-field) counts per pixel per frame: one number for all energies, or one per energy
        (shape (n_energies,), e.g. with a per-energy dwell), each used for its channel's σ_μt,i.
    noise
        Detector noise model giving Var(μt).
    model_error
        ε per energy (or one number), dimensionless; ``None`` = photon noise only.

    Returns
    -------
    tau
        Standard deviation of each standardized channel, same shape as ``mu_t``.
    """
    mu = np.asarray(mu_t, dtype=np.float64)
    i0 = incident_counts(i0_counts, mu.shape[-1])
    eps = model_error_per_energy(model_error, mu.shape[-1])
    sigma = np.sqrt(np.asarray(noise.var_absorbance(i0, mu), dtype=np.float64))
    norm = np.linalg.norm(mu - mu.mean(axis=-1, keepdims=True), axis=-1, keepdims=True)
    if np.any(norm <= 0):
        raise ValueError("mu_t: a spectrum is flat (zero variance over energy); it cannot be standardized")
    return np.sqrt((sigma / norm) ** 2 + eps**2)


def directed_separation(z_p: ArrayLike, z_q: ArrayLike, tau_p: ArrayLike) -> NDArray[np.float64]:
    """D(p→q) = (1 − z_p·z_q) / sqrt(Σ_i (z_p,i − z_q,i)² τ_p,i²).

    Φ(−D) approximates the probability that photon noise on p makes it correlate better with q than
    with itself. Broadcasts over leading axes; identical spectra give D = 0.

    Parameters
    ----------
    z_p, z_q
        Standardized spectra, shape (..., n_energies).
    tau_p
        Noise of the standardized spectrum p, shape (..., n_energies).
    """
    zp = np.asarray(z_p, dtype=np.float64)
    zq = np.asarray(z_q, dtype=np.float64)
    tp = np.asarray(tau_p, dtype=np.float64)
    num = 1.0 - np.sum(zp * zq, axis=-1)
    den = np.sqrt(np.sum((zp - zq) ** 2 * tp**2, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.maximum(d, 0.0)


def separation_matrix(z: ArrayLike, tau: ArrayLike) -> NDArray[np.float64]:
    """Symmetric separation D between every pair of spectra: min(D(p→q), D(q→p)).

    The smaller direction is kept: two sites are only as distinguishable as their most easily
    confused direction (see ``docs/decisions/clustering-separation-statistic.md``).

    Parameters
    ----------
    z
        Standardized spectra, shape (n, n_energies).
    tau
        Their standardized noise, shape (n, n_energies).

    Returns
    -------
    D
        Shape (n, n), zero diagonal.
    """
    z = np.asarray(z, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    directed = directed_separation(z[:, None, :], z[None, :, :], tau[:, None, :])
    d = np.minimum(directed, directed.T)
    np.fill_diagonal(d, 0.0)
    return d


def separation_to_sites(
    z_new: ArrayLike, tau_new: ArrayLike, z_sites: ArrayLike, tau_sites: ArrayLike
) -> NDArray[np.float64]:
    """Symmetric D between each new spectrum and each site, shape (n_new, n_sites)."""
    zn = np.asarray(z_new, dtype=np.float64)[:, None, :]
    tn = np.asarray(tau_new, dtype=np.float64)[:, None, :]
    zs = np.asarray(z_sites, dtype=np.float64)[None, :, :]
    ts = np.asarray(tau_sites, dtype=np.float64)[None, :, :]
    return np.minimum(directed_separation(zn, zs, tn), directed_separation(zs, zn, ts))
