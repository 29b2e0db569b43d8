"""Edge finding, pre/post-edge normalization (Athena conventions) and resampling."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from xbeam_bluesky.spectra.model import NormalizedSpectrum, Spectrum, SpectrumFormatError

#: Default pre-edge fit window relative to E0, eV.
PRE_EDGE_EV: tuple[float, float] = (-150.0, -30.0)
#: Default post-edge fit window relative to E0, eV.
POST_EDGE_EV: tuple[float, float] = (50.0, 400.0)


def find_e0(energy: np.ndarray, mu: np.ndarray, *, smooth_ev: float = 0.7) -> float:
    """Edge energy: the maximum of the derivative of μ(E) after light Gaussian smoothing.

    Parameters
    ----------
    energy : numpy.ndarray
        Energies in eV, increasing.
    mu : numpy.ndarray
        Absorbance at those energies.
    smooth_ev : float
        Gaussian smoothing width (σ) in eV applied on a uniform 0.1 eV grid before differentiating.

    Returns
    -------
    float
        E0 in eV.
    """
    energy = np.asarray(energy, dtype=np.float64)
    grid = np.arange(energy[0], energy[-1], 0.1)
    if grid.size < 8:
        raise SpectrumFormatError(
            f"energy range {energy[0]:.1f}-{energy[-1]:.1f} eV is too short to find an edge"
        )
    values = gaussian_filter1d(np.interp(grid, energy, mu), smooth_ev / 0.1, mode="nearest")
    slope = np.gradient(values, grid)
    # Ignore the outermost smoothing widths, where the filter's edge handling distorts the slope.
    margin = max(int(3 * smooth_ev / 0.1), 1)
    i = margin + int(np.argmax(slope[margin:-margin]))
    return float(grid[i])


def _window(energy: np.ndarray, e0: float, lo: float, hi: float) -> np.ndarray:
    return (energy >= e0 + lo) & (energy <= e0 + hi)


def normalize(
    spectrum: Spectrum,
    *,
    e0: float | None = None,
    pre: tuple[float, float] = PRE_EDGE_EV,
    post: tuple[float, float] = POST_EDGE_EV,
) -> NormalizedSpectrum:
    """Subtract a pre-edge line and divide by the edge step (Athena-style normalization).

    The pre-edge line is fitted over ``pre`` (relative to E0) and the post-edge curve over ``post``: a line when the
    post-edge window spans under 150 eV of data, otherwise a quadratic. Windows are narrowed to the data and, for
    short XANES scans, widened to whatever lies at least 10 eV below / 25 eV above E0.

    Parameters
    ----------
    spectrum : Spectrum
        The measured spectrum.
    e0 : float, optional
        Edge energy in eV; found with :func:`find_e0` when omitted.
    pre, post : tuple of float
        Fit windows relative to E0 in eV.

    Returns
    -------
    NormalizedSpectrum

    Raises
    ------
    SpectrumFormatError
        Too few points below or above the edge, or a non-positive edge step.
    """
    energy, mu = spectrum.energy, spectrum.mu
    edge = find_e0(energy, mu) if e0 is None else float(e0)
    where = f"spectrum {spectrum.name!r}" + (f" ({spectrum.path})" if spectrum.path else "")
    pre_sel = _window(energy, edge, *pre)
    if pre_sel.sum() < 3:
        pre_sel = energy <= edge - 10.0
    post_sel = _window(energy, edge, *post)
    if post_sel.sum() < 3:
        post_sel = energy >= edge + 25.0
    if pre_sel.sum() < 2 or post_sel.sum() < 3:
        raise SpectrumFormatError(
            f"{where}: needs >= 2 points below E0-10 eV and >= 3 above E0+25 eV to normalize "
            f"(E0={edge:.1f} eV, range {energy[0]:.1f}-{energy[-1]:.1f} eV)"
        )
    x = energy - edge
    pre_coeffs = np.polyfit(x[pre_sel], mu[pre_sel], 1)
    span = np.ptp(x[post_sel])
    post_coeffs = np.polyfit(x[post_sel], mu[post_sel], 2 if span >= 150.0 else 1)
    step = float(np.polyval(post_coeffs, 0.0) - np.polyval(pre_coeffs, 0.0))
    if not step > 0:
        raise SpectrumFormatError(
            f"{where}: edge step at E0={edge:.1f} eV is {step:.3g}; expected a positive jump"
        )
    norm = (mu - np.polyval(pre_coeffs, x)) / step
    return NormalizedSpectrum(
        energy=energy,
        mu=mu,
        norm=norm,
        e0=edge,
        edge_step=step,
        pre_coeffs=pre_coeffs,
        post_coeffs=post_coeffs,
        name=spectrum.name,
    )


def resample(
    energy: np.ndarray, values: np.ndarray, grid: np.ndarray, *, name: str = "spectrum"
) -> np.ndarray:
    """Linearly interpolate ``values(energy)`` onto ``grid``.

    Parameters
    ----------
    energy : numpy.ndarray
        Increasing energies in eV.
    values : numpy.ndarray
        Values at ``energy``.
    grid : numpy.ndarray
        Target energies in eV; must lie inside ``[energy[0], energy[-1]]``.
    name : str
        Used in the error message.

    Returns
    -------
    numpy.ndarray
        Values on ``grid``.

    Raises
    ------
    SpectrumFormatError
        The grid reaches outside the measured range (no extrapolation).
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.min() < energy[0] - 1e-9 or grid.max() > energy[-1] + 1e-9:
        raise SpectrumFormatError(
            f"{name}: measured {energy[0]:.1f}-{energy[-1]:.1f} eV does not cover the requested "
            f"{grid.min():.1f}-{grid.max():.1f} eV"
        )
    return np.interp(grid, energy, values)
