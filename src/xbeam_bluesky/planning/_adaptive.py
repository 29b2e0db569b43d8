"""The adaptive second pass: a first pass's cluster spectra become the candidates of the next map design."""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.planning._map_design import (
    DEFAULT_MODEL_ERROR,
    MapDesignError,
    PhaseCandidates,
    phase_candidates,
)
from xbeam_bluesky.planning._noise import TransmissionNoise
from xbeam_bluesky.planning._prior import GaussianProcessPrior
from xbeam_bluesky.planning._reconstruction import reconstruct

logger = logging.getLogger(__name__)

#: A cluster spectrum is the mean of many pixels: its noise is taken as this fraction of one pixel's variance
#: (clusters of ≥ 100 pixels; the reconstruction is then limited by the prior, not the noise).
CLUSTER_MEAN_VARIANCE_FRACTION = 0.01


class TooFewClustersError(MapDesignError):
    """A first pass gave fewer than two usable cluster spectra: no data candidates for a second design."""


def cluster_candidates(
    energies_eV: ArrayLike,
    spectra: ArrayLike,
    names: list[str] | tuple[str, ...],
    prior: GaussianProcessPrior,
    noise: TransmissionNoise,
    dwell_s: ArrayLike,
    *,
    model_error: float = DEFAULT_MODEL_ERROR,
) -> PhaseCandidates:
    """Cluster spectra of a first pass (absorbance on its energies) as candidate phases on the prior's grid.

    Each spectrum is normalized by its values at its lowest and highest energy (the candidate grid's ends: a
    map design always measures them), then reconstructed on the whole grid by the GP posterior mean of
    ``prior`` with the noise of a cluster mean (:data:`CLUSTER_MEAN_VARIANCE_FRACTION` of one pixel's).
    Empty (non-finite) and flat clusters are dropped.

    Parameters
    ----------
    energies_eV
        Energies of the first pass (eV, on the prior's grid), shape (n,).
    spectra
        Cluster spectra (absorbance μt) on those energies, shape (K, n).
    names
        One name per cluster.
    prior
        Prior of the normalized spectrum on the candidate grid.
    noise
        Noise model of the first pass (per-pixel counts per second, sample absorbance).
    dwell_s
        Exposure per energy of the first pass (s), shape (n,).
    model_error
        Reconstructed spectra closer than this RMS (normalized units) are one phase.

    Raises
    ------
    MapDesignError
        Shapes that do not match.
    TooFewClustersError
        Fewer than two usable clusters (names those dropped).
    """
    e = np.asarray(energies_eV, dtype=float)
    y = np.atleast_2d(np.asarray(spectra, dtype=float))
    dwell = np.broadcast_to(np.asarray(dwell_s, dtype=float), e.shape)
    names = tuple(str(n) for n in names)
    if y.shape != (len(names), e.size):
        raise MapDesignError(
            f"cluster spectra: shape {y.shape}, expected ({len(names)} names, {e.size} energies)"
        )
    order = np.argsort(e)
    e, y, dwell = e[order], y[:, order], dwell[order]
    keep = np.all(np.isfinite(y), axis=1) & (np.abs(y[:, -1] - y[:, 0]) > 0)
    if keep.sum() < 2:
        dropped = [n for n, k in zip(names, keep, strict=True) if not k]
        raise TooFewClustersError(
            f"cluster spectra: {int(keep.sum())} usable of {len(names)} (empty or without an edge step: "
            f"{', '.join(dropped) or 'none'}); a second design needs at least two"
        )
    norm = (y[keep] - y[keep, :1]) / (y[keep, -1:] - y[keep, :1])
    cov = prior.covariance()
    recon: list[NDArray[np.float64]] = []
    for row in norm:
        var = noise.variance(np.clip(row, 0.0, 2.0), dwell) * CLUSTER_MEAN_VARIANCE_FRACTION
        recon.append(reconstruct(prior, e, row, var, cov=cov)[0])
    kept = [n for n, k in zip(names, keep, strict=True) if k]
    return phase_candidates(np.asarray(recon), kept, kind="data", model_error=model_error)


def second_pass_candidates(
    energies_eV: ArrayLike,
    spectra: ArrayLike,
    names: list[str] | tuple[str, ...],
    prior: GaussianProcessPrior,
    noise: TransmissionNoise,
    dwell_s: ArrayLike,
    library: PhaseCandidates,
    *,
    model_error: float = DEFAULT_MODEL_ERROR,
) -> tuple[PhaseCandidates, str]:
    """The candidates of the adaptive second design: the first pass's clusters and the library's spectra.

    The first pass's cluster spectra bring what the library lacks (a phase absent from every library, the
    sample's own spectra); the library's spectra stay candidates too, because a short first pass merges phases it
    cannot yet tell apart — designing for its clusters alone would spend the rest of the budget separating the
    merged clusters and never split them (measured: macro-F1 0.2–0.4 instead of 0.99 on the dose-limited
    benchmark, ``benchmarks/map_design.py``). Spectra within the model error of each other are one phase (a
    library spectrum within it of a cluster is that cluster's phase, joined under both names), so the second
    design separates every distinct phase, the merged cluster from its members included.

    A first pass that is too noisy (or a sample too uniform) to give two usable clusters cannot say which phases
    are there; the second pass then spends the rest of the budget on the library design, as a fixed plan would,
    with a logged warning, instead of stopping the experiment after the first pass.

    Parameters
    ----------
    energies_eV, spectra, names, prior, noise, dwell_s, model_error
        As :func:`cluster_candidates`.
    library
        The library candidates the first pass was designed for.

    Returns
    -------
    candidates, source
        The candidates and where they came from (``"first-pass clusters and library"`` or
        ``"library (…why…)"``), for the run's start document.
    """
    try:
        data = cluster_candidates(energies_eV, spectra, names, prior, noise, dwell_s, model_error=model_error)
    except TooFewClustersError as exc:
        logger.warning("adaptive: %s; the second pass uses the library design", exc)
        return library, f"library ({exc})"
    own = [k for k, kind in enumerate(library.kind) if kind != "mixture"]
    if not own:
        return data, "first-pass clusters"
    combined = phase_candidates(
        np.vstack([data.spectra, library.spectra[own]]),
        (*data.names, *(library.names[k] for k in own)),
        kind=[*data.kind, *(library.kind[k] for k in own)],
        model_error=model_error,
    )
    return combined, "first-pass clusters and library"


def measured_units(
    grid_eV: ArrayLike, energies_eV: ArrayLike, dwell_s: ArrayLike, dwell_unit_s: float
) -> NDArray:
    """Dwell units measured at each grid point (``measured_units`` of a design continuing from a pass)."""
    grid = np.asarray(grid_eV, dtype=float)
    units = np.zeros(grid.size, dtype=np.intp)
    idx = np.searchsorted(grid, np.asarray(energies_eV, dtype=float) - 1e-6)
    np.add.at(units, idx, np.round(np.asarray(dwell_s, dtype=float) / dwell_unit_s).astype(np.intp))
    return units
