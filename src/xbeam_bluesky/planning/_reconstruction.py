"""GP posterior reconstruction from measured points and the expected-error bias/variance split."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import cho_factor, cho_solve

from xbeam_bluesky.planning._prior import GaussianProcessPrior


def grid_indices(
    grid_eV: NDArray[np.float64], energies_eV: ArrayLike, *, name: str = "energies_eV"
) -> NDArray:
    """Indices of ``energies_eV`` on the candidate grid; each must lie within a tenth of a grid step of one."""
    e = np.atleast_1d(np.asarray(energies_eV, dtype=float))
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{name} contains NaN or inf")
    idx = np.clip(np.searchsorted(grid_eV, e), 1, grid_eV.size - 1)
    idx = np.where(np.abs(grid_eV[idx - 1] - e) <= np.abs(grid_eV[idx] - e), idx - 1, idx)
    steps = np.diff(grid_eV)
    tol = 0.1 * np.concatenate([steps[:1], np.minimum(steps[:-1], steps[1:]), steps[-1:]])[idx] + 1e-9
    off = np.abs(grid_eV[idx] - e) > tol
    if np.any(off):
        raise ValueError(
            f"{name}: {e[off][:5].tolist()} eV are not on the candidate grid "
            f"{grid_eV[0]:.2f}-{grid_eV[-1]:.2f} eV"
        )
    return idx


def _posterior_gain(
    cov: NDArray[np.float64], idx: NDArray, variances: NDArray[np.float64]
) -> tuple[NDArray[np.float64], tuple]:
    """``A = K[:, M] (K[M, M] + N)⁻¹`` and the Cholesky factor of ``K[M, M] + N``."""
    kmm = cov[np.ix_(idx, idx)] + np.diag(variances)
    factor = cho_factor(kmm, lower=True, check_finite=False)
    gain = cho_solve(factor, cov[idx, :], check_finite=False).T
    return gain, factor


def reconstruct(
    prior: GaussianProcessPrior,
    energies_eV: ArrayLike,
    values: ArrayLike,
    variances: ArrayLike,
    *,
    cov: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """GP posterior mean and standard deviation on the prior's grid from measured points.

    Parameters
    ----------
    prior
        The prior (grid, mean, kernel).
    energies_eV
        Measured energies (eV), on the candidate grid; repeats allowed.
    values
        Measured values in the prior's units (normalized absorbance).
    variances
        Noise variance of each value (same units squared), > 0.
    cov
        Precomputed ``prior.covariance()`` to save time when reconstructing many spectra.

    Returns
    -------
    mean, std
        Posterior mean and standard deviation at every candidate energy.
    """
    grid = np.asarray(prior.energies_eV)
    idx = grid_indices(grid, energies_eV)
    y = np.asarray(values, dtype=float).ravel()
    var = np.broadcast_to(np.asarray(variances, dtype=float), y.shape)
    if y.shape != idx.shape:
        raise ValueError(f"values has {y.size} entries for {idx.size} energies")
    if not np.all(np.isfinite(y)):
        raise ValueError("values contains NaN or inf")
    if not np.all(var > 0):
        raise ValueError("variances must be > 0")
    k = prior.covariance() if cov is None else cov
    gain, _ = _posterior_gain(k, idx, var)
    mu = np.asarray(prior.mean)
    mean = mu + gain @ (y - mu[idx])
    post_var = np.diag(k) - np.einsum("ij,ji->i", gain, k[idx, :])
    return mean, np.sqrt(np.clip(post_var, 0.0, None))


def error_decomposition(
    cov: NDArray[np.float64], indices: ArrayLike, variances: ArrayLike
) -> tuple[float, float]:
    """Split the expected squared reconstruction error ``tr Σ_post`` into bias and variance parts.

    With ``A = K[:, M](K[M, M] + N)⁻¹`` the posterior-mean error is ``(I - A S)(f - μ) - A ε``; its expected
    squared norm is ``bias + variance`` with ``variance = tr(A N Aᵀ)`` (measurement noise carried into the
    reconstruction) and ``bias = tr((I - A S) K (I - A S)ᵀ)`` (what the points leave undetermined plus the
    shrinkage towards the prior mean). Both are sums over the grid (units²).

    Returns
    -------
    bias, variance
    """
    idx = np.asarray(indices, dtype=int)
    var = np.asarray(variances, dtype=float)
    gain, _ = _posterior_gain(cov, idx, var)
    variance = float(np.einsum("ij,ij,j->", gain, gain, var))
    total = float(np.trace(cov) - np.einsum("ij,ji->", gain, cov[idx, :]))
    return max(total - variance, 0.0), variance
