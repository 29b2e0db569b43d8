"""Gaussian-process prior over a spectrum on a candidate energy grid, built from a reference library."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize

from xbeam_bluesky.errors import DesignInputError
from xbeam_bluesky.planning._warp import EnergyWarp

#: Length scales (eV) searched when fitting the prior; the Fe K optimum (≈ 4 eV) lies well inside.
DEFAULT_LENGTH_SCALES_EV: NDArray[np.float64] = np.geomspace(0.5, 30.0, 41)
#: Smallest prior standard deviation (normalized units), keeps the kernel positive definite where all
#: library spectra agree (far pre-edge).
DEFAULT_STD_FLOOR = 1e-3
#: Standard deviation (normalized units) of the independent noise added to the kernel when fitting the length
#: scale: the library spectra's own measurement noise and misfit.
DEFAULT_FIT_NOISE = 5e-3
#: Maximum number of grid points used in the length-scale likelihood (the grid is strided down to this).
FIT_MAX_POINTS = 300
#: Kernels a prior can use: METHODS §1's stationary RBF in E, or the same RBF in a warped energy (the default).
KERNELS = ("warped", "stationary")
#: Starting points of the warp fit: the warp center at these fractions of the candidate range.
_WARP_START_FRACTIONS = (0.3, 0.5, 0.7)


def rbf_kernel(
    energies_eV: NDArray[np.float64],
    std: NDArray[np.float64],
    length_scale_eV: float,
    warp: EnergyWarp | None = None,
) -> NDArray:
    """Kernel ``K_ij = s_i s_j exp(-(u_i - u_j)² / c²)``, shape (n, n).

    ``u = E`` (METHODS §1) without a warp, ``u = warp.apply(E)`` with one.
    """
    u = energies_eV if warp is None else warp.apply(energies_eV)
    diff = u[:, None] - u[None, :]
    return std[:, None] * std[None, :] * np.exp(-((diff / length_scale_eV) ** 2))


def library_log_likelihood(
    energies_eV: NDArray[np.float64],
    library: NDArray[np.float64],
    length_scale_eV: float,
    *,
    mean: NDArray[np.float64] | None = None,
    std: NDArray[np.float64] | None = None,
    noise_std: float = DEFAULT_FIT_NOISE,
    warp: EnergyWarp | None = None,
) -> float:
    """Mean log-likelihood of the library spectra (rows of ``library``) under ``N(μ, K + noise_std² I)``."""
    mu = library.mean(axis=0) if mean is None else mean
    s = np.maximum(library.std(axis=0, ddof=1), DEFAULT_STD_FLOOR) if std is None else std
    cov = rbf_kernel(energies_eV, s, length_scale_eV, warp) + noise_std**2 * np.eye(energies_eV.size)
    factor = cho_factor(cov, lower=True, check_finite=False)
    resid = (library - mu).T
    quad = np.einsum("ij,ij->j", resid, cho_solve(factor, resid, check_finite=False))
    logdet = 2.0 * np.log(np.diag(factor[0])).sum()
    return float(np.mean(-0.5 * (quad + logdet + energies_eV.size * np.log(2 * np.pi))))


def _strided(
    energies_eV: NDArray[np.float64], library: NDArray[np.float64], std_floor: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The grid strided to at most ``FIT_MAX_POINTS`` energies, with the library's mean and std there."""
    stride = max(1, int(np.ceil(energies_eV.size / FIT_MAX_POINTS)))
    e = energies_eV[::stride]
    lib = library[:, ::stride]
    return e, lib, lib.mean(axis=0), np.maximum(lib.std(axis=0, ddof=1), std_floor)


def fit_length_scale(
    energies_eV: NDArray[np.float64],
    library: NDArray[np.float64],
    *,
    length_scales_eV: ArrayLike = DEFAULT_LENGTH_SCALES_EV,
    noise_std: float = DEFAULT_FIT_NOISE,
    std_floor: float = DEFAULT_STD_FLOOR,
    warp: EnergyWarp | None = None,
) -> tuple[float, NDArray[np.float64]]:
    """Length scale (eV) maximising the library's mean log-likelihood, by grid search.

    The grid is strided to at most ``FIT_MAX_POINTS`` energies (the kernel is smooth on that scale).

    Returns
    -------
    best, loglik
        The best length scale in eV and the log-likelihood at every searched scale.
    """
    e, lib, mu, s = _strided(energies_eV, library, std_floor)
    scales = np.asarray(length_scales_eV, dtype=float)
    loglik = np.array(
        [library_log_likelihood(e, lib, c, mean=mu, std=s, noise_std=noise_std, warp=warp) for c in scales]
    )
    return float(scales[int(np.argmax(loglik))]), loglik


def fit_kernel(
    energies_eV: NDArray[np.float64],
    library: NDArray[np.float64],
    *,
    kernel: str = "warped",
    length_scale_eV: float | None = None,
    warp: EnergyWarp | None = None,
    length_scales_eV: ArrayLike = DEFAULT_LENGTH_SCALES_EV,
    noise_std: float = DEFAULT_FIT_NOISE,
    std_floor: float = DEFAULT_STD_FLOOR,
) -> tuple[float, EnergyWarp | None, dict[str, Any]]:
    """Kernel hyperparameters by maximum likelihood of the library (what is not given is fitted).

    The stationary length scale is found by grid search (:func:`fit_length_scale`). For ``kernel="warped"``
    without a given ``warp``, the length scale, warp center and warp scale are then fitted together (Nelder–Mead
    in log c, E1, log L from the stationary optimum and three centers across the range); the warped kernel is
    kept only if its likelihood is higher (the stationary kernel is its L → ∞ limit).

    Parameters
    ----------
    energies_eV, library
        Candidate grid (eV) and aligned normalized spectra (rows).
    kernel
        ``"warped"`` or ``"stationary"`` (METHODS §1 as published).
    length_scale_eV
        Fixed length scale c (eV); fitted when None.
    warp
        Fixed warp (``kernel="warped"`` only); fitted when None.

    Returns
    -------
    length_scale_eV, warp, info
        The length scale (eV), the warp (None: stationary) and a record with the mean log-likelihoods of the
        chosen and of the stationary kernel.
    """
    if kernel not in KERNELS:
        raise DesignInputError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "stationary" and warp is not None:
        raise DesignInputError("a warp was given with kernel='stationary'; use kernel='warped'")
    e, lib, mu, s = _strided(energies_eV, library, std_floor)

    def loglik(c: float, w: EnergyWarp | None) -> float:
        return library_log_likelihood(e, lib, c, mean=mu, std=s, noise_std=noise_std, warp=w)

    def best_c(w: EnergyWarp | None) -> tuple[float, float]:
        """The fixed or grid-searched length scale for warp ``w`` and the log-likelihood there."""
        if length_scale_eV is not None:
            return float(length_scale_eV), loglik(length_scale_eV, w)
        c, ll = fit_length_scale(
            energies_eV, library, length_scales_eV=length_scales_eV, noise_std=noise_std,
            std_floor=std_floor, warp=w,
        )  # fmt: skip
        return c, float(ll.max())

    c_stat, ll_stat = best_c(None)
    stationary = (c_stat, None, {"log_likelihood": ll_stat, "log_likelihood_stationary": ll_stat})
    if kernel == "stationary":
        return stationary
    if warp is not None:
        c, ll = best_c(warp)
        return c, warp, {"log_likelihood": ll, "log_likelihood_stationary": ll_stat}
    # free parameters: (log L, E1) and, unless the length scale is fixed, log c
    span = float(e[-1] - e[0])
    scales = np.asarray(length_scales_eV, dtype=float)
    bounds = [
        (np.log(max(float(np.min(np.diff(e))), 1e-3)), np.log(100.0 * span)),
        (float(e[0]), float(e[-1])),
    ]
    fit_c = length_scale_eV is None
    if fit_c:
        bounds.append((np.log(scales.min()), np.log(scales.max())))

    def unpack(x: NDArray[np.float64]) -> tuple[float, EnergyWarp]:
        c = float(np.exp(x[2])) if fit_c else float(length_scale_eV)
        return c, EnergyWarp(center_eV=float(x[1]), scale_eV=float(np.exp(x[0])))

    def objective(x: NDArray[np.float64]) -> float:
        return -loglik(*unpack(x))

    options = {"xatol": 1e-3, "fatol": 1e-3, "maxiter": 400}
    starts = [
        [np.log(0.2 * span), e[0] + f * span, np.log(c_stat)][: len(bounds)] for f in _WARP_START_FRACTIONS
    ]
    runs = [minimize(objective, x0, method="Nelder-Mead", bounds=bounds, options=options) for x0 in starts]
    best = min(runs, key=lambda r: float(r.fun))
    if -float(best.fun) <= ll_stat:
        return stationary
    c, w = unpack(best.x)
    return c, w, {"log_likelihood": -float(best.fun), "log_likelihood_stationary": ll_stat}


@dataclass(frozen=True)
class RawDataExtension:
    """Distribution of the edge jump and smooth background of un-normalized spectra.

    Attributes
    ----------
    jump_mean, jump_std
        Mean ``m_a`` and standard deviation ``s_a`` of the edge jump (absorbance units).
    background_std
        Standard deviation ``s_b`` of each background coefficient (absorbance units).
    e0_eV
        Edge energy used in the background functions ``(E0/E)³``, ``(E0/E)⁴`` and 1 (eV).
    """

    jump_mean: float
    jump_std: float
    background_std: float
    e0_eV: float

    def __post_init__(self) -> None:
        if not self.jump_mean > 0:
            raise DesignInputError(f"jump_mean must be > 0, got {self.jump_mean!r}")
        for name in ("jump_std", "background_std"):
            if not getattr(self, name) >= 0:
                raise DesignInputError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.e0_eV > 0:
            raise DesignInputError(f"e0_eV must be > 0 eV, got {self.e0_eV!r}")

    def background_functions(self, energies_eV: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
        """The background basis ``(E0/E)³, (E0/E)⁴, 1`` on the grid."""
        ratio = self.e0_eV / np.asarray(energies_eV, dtype=float)
        return ratio**3, ratio**4, np.ones_like(ratio)


@dataclass(frozen=True)
class GaussianProcessPrior:
    """GP prior ``f ~ N(μ, K)`` over normalized absorbance on a candidate energy grid.

    Attributes
    ----------
    energies_eV
        Candidate energies (eV), increasing.
    mean
        Prior mean μ_i: library mean (normalized units).
    std
        Prior standard deviation s_i: library standard deviation, floored at ``std_floor``.
    length_scale_eV
        Kernel length scale c (eV); with a warp, the length scale at the warp center.
    warp
        Energy warp of the kernel (None: METHODS §1's stationary kernel).
    names
        Names of the library spectra the prior was built from.
    source
        Where the library came from (directory, or ``"bundled Fe-K"``).
    metadata
        Everything else worth recording (E0 reference, dropped spectra, fit settings).
    """

    energies_eV: NDArray[np.float64]
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    length_scale_eV: float
    names: tuple[str, ...] = ()
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    raw_data: RawDataExtension | None = None
    warp: EnergyWarp | None = None

    def __post_init__(self) -> None:
        e = np.asarray(self.energies_eV, dtype=float)
        if e.ndim != 1 or e.size < 2:
            raise ValueError(f"energies_eV must be a 1-D grid of at least 2 energies, got shape {e.shape}")
        if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ValueError("energies_eV must be finite and strictly increasing")
        for name in ("mean", "std"):
            values = np.asarray(getattr(self, name), dtype=float)
            if values.shape != e.shape or not np.all(np.isfinite(values)):
                raise ValueError(f"prior {name} must be finite with shape {e.shape}, got {values.shape}")
        if np.any(np.asarray(self.std) <= 0):
            raise ValueError("prior std must be > 0 everywhere")
        if not self.length_scale_eV > 0:
            raise DesignInputError(f"length_scale_eV must be > 0 eV, got {self.length_scale_eV!r}")

    @property
    def size(self) -> int:
        """Number of candidate energies."""
        return int(np.asarray(self.energies_eV).size)

    @property
    def units(self) -> str:
        """``"normalized"`` (edge step 1) or ``"absorbance"`` (with the raw-data extension)."""
        return "normalized" if self.raw_data is None else "absorbance"

    def covariance(self) -> NDArray[np.float64]:
        """Prior covariance (n × n, units²): ``K``, or ``K'`` with the raw-data extension."""
        e = np.asarray(self.energies_eV)
        k = rbf_kernel(e, np.asarray(self.std), self.length_scale_eV, self.warp)
        if self.raw_data is None:
            return k
        raw = self.raw_data
        base_mean = np.asarray(self.mean) / raw.jump_mean
        cov = (raw.jump_mean**2 + raw.jump_std**2) * k + raw.jump_std**2 * np.outer(base_mean, base_mean)
        for phi in raw.background_functions(e):
            cov += raw.background_std**2 * np.outer(phi, phi)
        return cov

    def with_raw_data(self, extension: RawDataExtension) -> GaussianProcessPrior:
        """The prior of un-normalized data ``a f + background`` (METHODS §1 raw-data extension).

        ``f`` follows this (normalized) prior, the edge jump ``a ~ N(m_a, s_a²)`` and the background is
        ``Σ b_φ φ(E)`` with ``b_φ ~ N(0, s_b²)``, ``φ ∈ {(E0/E)³, (E0/E)⁴, 1}``; so the mean is ``m_a μ`` and
        ``K' = (m_a² + s_a²) K + s_a² μμᵀ + Σ_φ s_b² φφᵀ``. Use it with a noise model whose ``edge_jump`` is 1
        (the data are already in absorbance units).
        """
        if self.raw_data is not None:
            raise ValueError("the prior already has a raw-data extension")
        return replace(self, mean=extension.jump_mean * np.asarray(self.mean), raw_data=extension)

    @classmethod
    def from_matrix(
        cls,
        energies_eV: ArrayLike,
        library: ArrayLike,
        *,
        names: tuple[str, ...] = (),
        source: str = "",
        length_scale_eV: float | None = None,
        kernel: str = "warped",
        warp: EnergyWarp | None = None,
        length_scales_eV: ArrayLike = DEFAULT_LENGTH_SCALES_EV,
        fit_noise_std: float = DEFAULT_FIT_NOISE,
        std_floor: float = DEFAULT_STD_FLOOR,
        metadata: dict[str, Any] | None = None,
    ) -> GaussianProcessPrior:
        """Prior from library spectra already aligned on the grid (rows of ``library``).

        Parameters
        ----------
        energies_eV
            Candidate grid (eV), increasing.
        library
            Normalized spectra on that grid, shape (n_spectra, n_energies).
        length_scale_eV
            Fixed length scale (eV); fitted by maximum likelihood when None.
        kernel
            ``"warped"`` (default: RBF in a warped energy, see :class:`EnergyWarp`) or ``"stationary"``
            (METHODS §1 as published).
        warp
            Fixed warp for ``kernel="warped"``; fitted with the length scale by maximum likelihood when None.
        """
        e = np.asarray(energies_eV, dtype=float)
        lib = np.asarray(library, dtype=float)
        if lib.ndim != 2 or lib.shape[1] != e.size:
            raise DesignInputError(f"library must have shape (n_spectra, {e.size}), got {lib.shape}")
        if lib.shape[0] < 3:
            raise DesignInputError(f"a prior needs at least 3 usable library spectra, got {lib.shape[0]}")
        bad = np.flatnonzero(~np.all(np.isfinite(lib), axis=1))
        if bad.size:
            which = [names[i] if i < len(names) else f"row {i}" for i in bad]
            raise DesignInputError(f"library spectra contain NaN or inf: {', '.join(which)}")
        meta = dict(metadata or {})
        meta.update(
            fit_noise_std=fit_noise_std,
            std_floor=std_floor,
            kernel_requested=kernel,
            length_scale_fitted=length_scale_eV is None,
            warp_fitted=kernel == "warped" and warp is None,
        )
        length_scale_eV, warp, info = fit_kernel(
            e, lib, kernel=kernel, length_scale_eV=length_scale_eV, warp=warp,
            length_scales_eV=length_scales_eV, noise_std=fit_noise_std, std_floor=std_floor,
        )  # fmt: skip
        meta.update(info)
        return cls(
            energies_eV=e,
            mean=lib.mean(axis=0),
            std=np.maximum(lib.std(axis=0, ddof=1), std_floor),
            length_scale_eV=float(length_scale_eV),
            names=tuple(names),
            source=source,
            metadata=meta,
            warp=warp,
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description recorded with a design."""
        return {
            "length_scale_eV": self.length_scale_eV,
            "kernel": "stationary" if self.warp is None else "warped",
            "warp": None if self.warp is None else self.warp.to_dict(),
            "library_size": len(self.names),
            "n_candidates": self.size,
            "raw_data": None if self.raw_data is None else asdict(self.raw_data),
            "library": self.source,
            "spectra": list(self.names),
            "units": self.units,
            **self.metadata,
        }


def prior_from_library(
    directory: str | Path | None = None,
    energies_eV: ArrayLike | None = None,
    *,
    e0_ref_eV: float = 7112.0,
    align: str = "calibration",
    length_scale_eV: float | None = None,
    kernel: str = "warped",
    warp: EnergyWarp | None = None,
    exclude: tuple[str, ...] = (),
    strict: bool = True,
) -> GaussianProcessPrior:
    """Build the prior from a directory of reference spectra (None: the bundled Fe K library).

    Spectra are normalized, put on a common energy scale and resampled on the grid by
    :func:`xbeam_bluesky.spectra.aligned_library`; spectra not covering the grid are dropped (reasons recorded).

    Parameters
    ----------
    directory
        Library directory; None for the bundled Fe K library.
    energies_eV
        Candidate grid (eV); default the Fe K grid 7076.2–7181.2 eV in 0.1 eV steps.
    e0_ref_eV
        Reference edge energy (eV) for ``align="edge"``.
    align
        ``"calibration"`` (the library's ``calibration.json`` foil shifts, keeps chemical shifts), ``"edge"``
        (every spectrum's own E0 moved to ``e0_ref_eV``) or ``"none"``.
    length_scale_eV
        Fixed length scale (eV); fitted when None.
    kernel
        ``"warped"`` (default) or ``"stationary"`` (METHODS §1 as published); see :func:`fit_kernel`.
    warp
        Fixed energy warp (``kernel="warped"``); fitted when None.
    exclude
        Names of spectra to leave out (for leave-one-out validation).
    strict
        Raise on the first unreadable file (NaN, non-monotonic energies, ...) instead of skipping it.

    Raises
    ------
    FileNotFoundError
        The directory does not exist.
    ValueError
        A file cannot be read (``strict``; the message names the file and point), or fewer than 3 spectra cover
        the grid (the message lists why the others were dropped).
    """
    from xbeam_bluesky.spectra import aligned_library, load_library

    grid = fe_k_grid() if energies_eV is None else np.asarray(energies_eV, dtype=float)
    spectra = [s for s in load_library(directory, strict=strict) if s.name not in exclude]
    aligned = aligned_library(spectra, grid, align=align, e0_ref=e0_ref_eV)
    names, matrix, dropped = aligned.names, aligned.matrix, aligned.dropped
    source = str(directory) if directory is not None else "bundled Fe-K"
    if len(names) < 3:
        reasons = "; ".join(f"{k}: {v}" for k, v in dropped.items())
        raise DesignInputError(
            f"library {source} has {len(names)} spectra covering {grid[0]:.1f}-{grid[-1]:.1f} eV, "
            f"at least 3 are needed" + (f" (dropped: {reasons})" if reasons else "")
        )
    return GaussianProcessPrior.from_matrix(
        grid,
        matrix,
        names=tuple(names),
        source=source,
        length_scale_eV=length_scale_eV,
        kernel=kernel,
        warp=warp,
        metadata={
            "align": align,
            "e0_ref_eV": e0_ref_eV,
            "dropped": dict(dropped),
            "excluded": list(exclude),
        },
    )


def fe_k_grid() -> NDArray[np.float64]:
    """The published Fe K candidate grid: 7076.2–7181.2 eV in 0.1 eV steps (1051 energies)."""
    return np.round(np.linspace(7076.2, 7181.2, 1051), 6)
