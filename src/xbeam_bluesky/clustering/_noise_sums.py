"""Fast per-pixel noise sums for the confidence margin and the novelty test.

For transmission with the photon-count model, Var(μt) = A + B·e^μt + C·e^2μt exactly
(A = Var(I0)/I0², B = g/I0, C = d/I0²). A pixel explained by site a has μ_i ≈ m + s·z_a,i
(mean m, amplitude s), so every sum over energies the statistics need is
Σ_i f_i·e^{k s z_a,i} with f_i depending only on the sites. Those are tabulated on a grid of s
once per finalize and interpolated per pixel: O(1) per pixel instead of O(n_energies).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._separation import AbsorbanceNoise, incident_counts


def photon_coefficients(noise: AbsorbanceNoise, i0_counts: float | ArrayLike) -> NDArray[np.float64]:
    """(A, B, C) with Var(μt) = A + B·e^μt + C·e^2μt for ``noise`` at ``i0_counts`` incident counts.

    Parameters
    ----------
    noise
        Detector noise model.
    i0_counts
        One number (returns shape (3,)), or one value per energy (returns shape (3, n_energies): the
        coefficients of every energy's own incident counts).

    Raises
    ------
    ValueError
        If the noise model does not have this form (checked at a fifth absorbance), or the counts are not
        positive and finite.
    """
    i0 = np.asarray(i0_counts, dtype=np.float64)
    if i0.ndim == 1:
        i0 = np.asarray(incident_counts(i0, i0.shape[0]))
        return np.stack([photon_coefficients(noise, float(v)) for v in np.unique(i0)], axis=1)[
            :, np.searchsorted(np.unique(i0), i0)
        ]
    i0_counts = incident_counts(i0_counts, 1)
    mu = np.array([0.0, 0.75, 1.5, 2.25])
    var = np.asarray(noise.var_absorbance(i0_counts, mu), dtype=np.float64)
    basis = np.stack([np.ones_like(mu), np.exp(mu), np.exp(2 * mu)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, var, rcond=None)
    check = np.asarray(noise.var_absorbance(i0_counts, np.array([3.0])), dtype=np.float64)[0]
    pred = coef @ np.array([1.0, np.exp(3.0), np.exp(6.0)])
    if not (np.allclose(basis @ coef, var, rtol=1e-6) and abs(pred - check) <= 1e-6 * abs(check)):
        raise ValueError(
            f"noise model {noise!r} is not of the photon-counting form A + B·exp(μt) + C·exp(2μt) "
            f"at i0_counts={i0_counts}"
        )
    return coef


class GridPosition(NamedTuple):
    """Amplitudes placed on a :class:`NoiseSums` grid in s: the grid interval ``index`` (0 … n_grid − 2) and the
    fraction ``frac`` (0 … 1) of the way through it, one per pixel."""

    index: NDArray[np.intp]
    frac: NDArray[np.float64]


class NoiseSums:
    """Tabulated energy sums of the photon noise along each site and site pair.

    Parameters
    ----------
    z
        Standardized sites on the energies used, shape (K, n).
    coef
        (A, B, C) of :func:`photon_coefficients`: shape (3,) for one incident count at every energy, or
        (3, n) with each energy's own coefficients (per-energy incident counts, e.g. a dwell list).
    s_max
        Largest amplitude s to tabulate.
    pairs
        Site pairs (a, b) whose sums :meth:`pair_variance` will be asked for, shape (P, 2).
    n_grid
        Grid points in s.
    model_error
        Model error ε per energy on the standardized scale, shape (n,); ``None`` = none. A pixel of amplitude
        s then has Var(μ_i) = photon variance + ε_i² s² (model error scales with the spectrum's spread). Its
        cross term with the photon variance in Σ Var² uses the mean ε² (exact when ε is the same at every
        energy, as the floor is).
    """

    def __init__(
        self,
        z: NDArray[np.float64],
        coef: NDArray[np.float64],
        s_max: float,
        pairs: NDArray[np.intp],
        n_grid: int = 65,
        model_error: NDArray[np.float64] | None = None,
    ) -> None:
        coef = np.asarray(coef, dtype=np.float64)
        e2 = np.zeros(z.shape[1]) if model_error is None else np.asarray(model_error, np.float64) ** 2
        if e2.shape != (z.shape[1],):
            raise ValueError(f"model_error: shape {e2.shape}, expected ({z.shape[1]},)")
        self._e2_sum, self._e2_mean, self._e4_sum = float(e2.sum()), float(e2.mean()), float((e2**2).sum())
        if coef.shape not in ((3,), (3, z.shape[1])):
            raise ValueError(f"coef: shape {coef.shape}, expected (3,) or (3, {z.shape[1]})")
        self.per_energy = coef.ndim == 2
        self.coef = coef
        self.n = z.shape[1]
        self.s = np.linspace(0.0, max(float(s_max), 1e-9), n_grid)
        self._step = self.s[1] - self.s[0]
        # exp(k s z): (k, K, grid, n)
        ez = np.exp(np.multiply.outer(self.s, z)).transpose(1, 0, 2)  # (K, grid, n) for k = 1
        if self.per_energy:
            # Var(μ_i) = A_i + B_i e^μ_i + C_i e^2μ_i: the per-energy coefficients are folded into the tables
            a_, b_, c_ = coef
            self._total0 = float(a_.sum())
            self._squares0 = float((a_ * a_).sum())
            weights = (b_, c_, 2 * a_ * b_, b_ * b_ + 2 * a_ * c_, 2 * b_ * c_, c_ * c_)
            powers = (1, 2, 1, 2, 3, 4)
            self.p = np.stack([(ez**k * f).sum(axis=2) for f, k in zip(weights, powers, strict=True)])
            self._mult = (1.0, 1.0, 1.0)
            fa, fb, fc = a_, b_, c_
        else:
            self.p = np.stack([(ez**k).sum(axis=2) for k in range(1, 5)])  # (4, K, grid)
            self._mult = tuple(coef)
            fa = fb = fc = 1.0
        self._k = z.shape[0]
        pairs = np.asarray(pairs, dtype=np.intp).reshape(-1, 2)
        # the distinct pair codes, sorted (a count per possible code: faster than sorting a pair per pixel)
        self._codes = np.flatnonzero(np.bincount(pairs[:, 0] * self._k + pairs[:, 1], minlength=self._k**2))
        a, b = np.divmod(self._codes, self._k)
        d2 = (z[a] - z[b]) ** 2  # (P, n)
        self.w = np.empty((3, len(self._codes), n_grid))
        self.w[0] = (d2 * fa).sum(axis=1)[:, None]
        self.w[1] = np.einsum("pn,pgn->pg", d2 * fb, ez[a])
        self.w[2] = np.einsum("pn,pgn->pg", d2 * fc, ez[a] ** 2)
        self._w_model = (d2 * e2).sum(axis=1)

    def grid_position(self, s: NDArray[np.float64]) -> GridPosition:
        """Where amplitudes ``s`` fall on the grid in s (clipped to it): pass it as ``at`` to the sums asked for
        the same pixels so it is worked out once."""
        x = np.clip(s, 0.0, self.s[-1]) / self._step
        i = np.minimum(x.astype(np.intp), len(self.s) - 2)
        return GridPosition(i, x - i)

    def _interp(
        self, table: NDArray[np.float64], row: NDArray[np.intp], at: GridPosition
    ) -> NDArray[np.float64]:
        """Linear interpolation in s of ``table[row, grid]`` per pixel (``table`` (rows, n_grid), C-ordered)."""
        i, f = at
        flat = row * table.shape[1] + i  # one flat take per neighbour: cheaper than a 2-D fancy index
        return table.ravel().take(flat) * (1 - f) + table.ravel().take(flat + 1) * f

    def pair_variance(
        self,
        best: NDArray[np.intp],
        second: NDArray[np.intp],
        mean: NDArray[np.float64],
        s: NDArray[np.float64],
        *,
        at: GridPosition | None = None,
    ) -> NDArray[np.float64]:
        """Σ_i (z_a,i − z_b,i)² Var(μ_i) per pixel (a = best, b = second site); ``at``: :meth:`grid_position` of
        ``s`` when already known."""
        a, b, c = self._mult
        em = np.exp(mean)
        at = self.grid_position(s) if at is None else at
        row = np.searchsorted(self._codes, best * self._k + second)
        w1 = self._interp(self.w[1], row, at)
        w2 = self._interp(self.w[2], row, at)
        return a * self.w[0][row, 0] + b * em * w1 + c * em**2 * w2 + s**2 * self._w_model[row]

    def residual_moments(
        self,
        best: NDArray[np.intp],
        mean: NDArray[np.float64],
        s: NDArray[np.float64],
        *,
        at: GridPosition | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(Σ_i Var(μ_i), Σ_i Var(μ_i)²) per pixel along its best site (photon noise ⊕ model error); ``at``:
        :meth:`grid_position` of ``s`` when already known."""
        total, squares = self._photon_moments(best, mean, self.grid_position(s) if at is None else at)
        s2 = s**2
        return (
            total + s2 * self._e2_sum,
            squares + 2 * s2 * self._e2_mean * total + s2**2 * self._e4_sum,
        )

    def _photon_moments(
        self, best: NDArray[np.intp], mean: NDArray[np.float64], at: GridPosition
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        em = np.exp(mean)
        if self.per_energy:
            t_b, t_c, s1, s2, s3, s4 = (self._interp(self.p[k], best, at) for k in range(6))
            total = self._total0 + em * t_b + em**2 * t_c
            squares = self._squares0 + em * s1 + em**2 * s2 + em**3 * s3 + em**4 * s4
            return total, squares
        a, b, c = self.coef
        p1, p2, p3, p4 = (self._interp(self.p[k], best, at) for k in range(4))
        total = self.n * a + b * em * p1 + c * em**2 * p2
        squares = (
            self.n * a * a
            + 2 * a * b * em * p1
            + (b * b + 2 * a * c) * em**2 * p2
            + 2 * b * c * em**3 * p3
            + c * c * em**4 * p4
        )
        return total, squares
