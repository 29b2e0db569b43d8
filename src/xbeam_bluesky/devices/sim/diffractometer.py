"""Simulated powder diffractometer (ophyd-async): a 1D pattern (2θ in degrees, counts) per exposure.

The expected pattern comes from the Rietveld forward model, :func:`xbeam_bluesky.rietveld.simulate_pattern`
(gemmi structure factors, pseudo-Voigt profile, Kα1/Kα2) for the CIFs of the sample's crystal phases; the
device scales it by the exposure and draws Poisson counts. The renderer is a constructor argument (the seam the
Rietveld engine plugs into); nothing here computes diffraction itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from ophyd_async.core import (
    Array1D,
    AsyncStatus,
    StandardReadable,
    soft_signal_r_and_setter,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format

from xbeam_bluesky.bundled import CIF_DIR, bundled_cifs
from xbeam_bluesky.errors import InputFileError

#: renderer(two_theta_deg) -> expected counts per second at each 2θ.
PatternRenderer = Callable[[np.ndarray], np.ndarray]


#: Counts per second at the strongest point of the default pattern: a lab Cu Kα diffractometer with a strip
#: detector or a beamline powder station records 10⁴–10⁵ counts at the strongest peak of a well-crystallised
#: sample in a ~1 s step (the device's default exposure).
DEFAULT_PEAK_COUNTS_PER_S = 5.0e4
#: Background level (counts/s) of the default smooth background, as a fraction of the strongest peak.
DEFAULT_BACKGROUND_FRACTION = 0.02


def smooth_background(two_theta_deg: np.ndarray, level: float) -> np.ndarray:
    """A typical smooth powder background in counts/s: flat ``level``, air and sample-holder scatter falling off
    from low angles, and a broad amorphous hump near 25° 2θ.

    Parameters
    ----------
    two_theta_deg : numpy.ndarray
        2θ in degrees.
    level : float
        Flat part of the background (counts/s); the low-angle rise adds up to 1.5 × ``level`` at 10° and the
        hump 0.5 × ``level``.
    """
    tt = np.asarray(two_theta_deg, dtype=np.float64)
    air = 1.5 * np.exp(-(tt - 10.0) / 15.0)
    hump = 0.5 * np.exp(-0.5 * ((tt - 25.0) / 8.0) ** 2)
    return level * (1.0 + air + hump)


def rietveld_renderer(
    phases: Mapping[str, float],
    instrument: object | None = None,
    background: float | None = None,
    peak_counts_per_s: float | None = DEFAULT_PEAK_COUNTS_PER_S,
) -> PatternRenderer:
    """Renderer using :func:`xbeam_bluesky.rietveld.simulate_pattern` for CIF phases and their scale factors.

    Parameters
    ----------
    phases : mapping
        CIF file (path, or name of a bundled CIF in ``xbeam_bluesky/data/cif``) → scale factor. With
        ``peak_counts_per_s`` set the scales are relative weights of the phases; with ``None`` they are absolute
        (counts per second per unit m|F|²LP; 1.0 gives peaks of ~4·10⁷ counts/s for PbSO4 on the default grid).
    instrument : xbeam_bluesky.rietveld.Instrument, optional
        Wavelengths and profile terms (default: ``simulate_pattern``'s lab Cu Kα instrument).
    background : float, optional
        Flat background in counts per second. Default: :func:`smooth_background` at
        ``DEFAULT_BACKGROUND_FRACTION`` of the strongest peak (or none when ``peak_counts_per_s`` is None).
    peak_counts_per_s : float or None
        Counts per second at the strongest point of the Bragg pattern (before background); ``None`` keeps the
        absolute scales. Default :data:`DEFAULT_PEAK_COUNTS_PER_S`.

    Raises
    ------
    FileNotFoundError
        A CIF that is neither a file nor a bundled CIF.
    ValueError
        A non-positive ``peak_counts_per_s`` or a negative ``background``.
    """
    if peak_counts_per_s is not None and not (np.isfinite(peak_counts_per_s) and peak_counts_per_s > 0):
        raise ValueError(
            f"peak_counts_per_s = {peak_counts_per_s!r}; expected a positive count rate (counts/s)"
        )
    if background is not None and not (np.isfinite(background) and background >= 0):
        raise ValueError(f"background = {background!r}; expected a count rate ≥ 0 (counts/s)")
    cifs = []
    for name in phases:
        path = Path(name)
        if not path.is_file():
            path = CIF_DIR / name
        if not path.is_file():
            raise InputFileError(f"CIF {name!r} not found (bundled CIFs: {bundled_cifs()})")
        cifs.append(path)
    scales = [float(s) for s in phases.values()]

    def render(two_theta_deg: np.ndarray) -> np.ndarray:
        from xbeam_bluesky.rietveld import simulate_pattern

        kwargs = {} if instrument is None else {"instrument": instrument}
        peaks = np.asarray(simulate_pattern(cifs, two_theta_deg, scales=scales, **kwargs), dtype=np.float64)
        if peak_counts_per_s is not None and peaks.max() > 0:
            peaks *= peak_counts_per_s / peaks.max()
        if background is not None:
            return peaks + float(background)
        if peak_counts_per_s is None:
            return peaks
        return peaks + smooth_background(two_theta_deg, DEFAULT_BACKGROUND_FRACTION * peak_counts_per_s)

    return render


class SimPowderDiffractometer(StandardReadable):
    """Powder diffractometer with a 1D detector: reads ``{name}-two_theta`` (deg) and ``{name}-counts``.

    Parameters
    ----------
    renderer : callable
        ``renderer(two_theta_deg) -> expected counts per second`` (e.g. :func:`rietveld_renderer`).
    two_theta_range : tuple of float
        (start, stop, step) of the 2θ grid in degrees.
    seed : int
        Seed of the Poisson noise.
    time_scale : float
        Factor applied to the simulated exposure wait (0 = instantaneous).
    phases : mapping, optional
        CIF name → scale of the sample (recorded in the configuration as the truth of the simulation).
    name : str
        Device name.
    """

    def __init__(
        self,
        renderer: PatternRenderer,
        *,
        two_theta_range: tuple[float, float, float] = (10.0, 120.0, 0.02),
        seed: int = 0,
        time_scale: float = 1.0,
        phases: Mapping[str, float] | None = None,
        name: str = "",
    ) -> None:
        self.time_scale = float(time_scale)
        start, stop, step = (float(v) for v in two_theta_range)
        if not (0 < start < stop < 180 and step > 0):
            raise ValueError(
                f"two_theta_range={two_theta_range!r}; expected (start, stop, step) with 0 < start < stop < 180°"
            )
        self._grid = np.arange(start, stop + step / 2, step)
        self._renderer = renderer
        self._expected: np.ndarray | None = None
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD1F]))
        self.sample_phases = dict(phases or {})
        with self.add_children_as_readables():
            self.two_theta, self._set_two_theta = soft_signal_r_and_setter(Array1D[np.float64], self._grid)
            self.counts, self._set_counts = soft_signal_r_and_setter(
                Array1D[np.float64], np.zeros_like(self._grid)
            )
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.exposure = soft_signal_rw(float, 1.0, units="s")
        super().__init__(name=name)

    def expected_counts(self, exposure_s: float) -> np.ndarray:
        """Noise-free counts at each 2θ for an exposure of ``exposure_s`` seconds."""
        if self._expected is None:
            self._expected = np.clip(self._renderer(self._grid), 0.0, None)
        return self._expected * float(exposure_s)

    @property
    def two_theta_deg(self) -> np.ndarray:
        """The 2θ grid in degrees."""
        return self._grid.copy()

    def _measure(self, exposure: float) -> np.ndarray:
        return self._rng.poisson(self.expected_counts(exposure)).astype(np.float64)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        """Expose for ``exposure`` seconds and publish a Poisson-noisy pattern."""
        exposure = await self.exposure.get_value()
        if exposure * self.time_scale > 0:
            await asyncio.sleep(exposure * self.time_scale)
        self._set_counts(await asyncio.to_thread(self._measure, exposure))
