"""Physics of the simulated sCMOS camera (pure numpy): flat field, Beer–Lambert, photon and read noise.

A frame in ADU is

    frame = dark_offset + gain · Poisson(flux · exposure · flat(y, x) · exp(−μt)) + Normal(0, read_noise²),

rounded and clipped to [0, 65535] (uint16 saturation). With the shutter closed the Poisson term is 0 (a dark
frame); with the sample out of the beam μt = 0 (a flat frame). Above the dark offset the variance is
gain · N + read_noise², i.e. :class:`xbeam_bluesky.spectra.PhotonNoiseModel` (gain, read_noise²).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xbeam_bluesky.spectra import PhotonNoiseModel

SATURATION_ADU = 65535


@dataclass
class CameraModel:
    """Detector model of the simulated sCMOS camera.

    Parameters
    ----------
    shape : tuple of int
        (ny, nx) pixels of a frame.
    pixel_size_um : float
        Effective pixel size at the sample in µm.
    photon_flux : float
        Detected photons per pixel per second in the open beam at the flat-field maximum.
    gain : float
        ADU per detected photon.
    read_noise : float
        Read noise in ADU rms.
    dark_offset : float
        Mean dark level in ADU.
    beam_fwhm : float
        Vertical FWHM of the beam profile as a fraction of the frame height.
    flat_seed : int
        Seed of the fixed pixel-response pattern of the flat field.
    """

    shape: tuple[int, int] = (256, 256)
    pixel_size_um: float = 4.0
    photon_flux: float = 2.0e4
    gain: float = 9.31
    read_noise: float = 2.0
    dark_offset: float = 100.0
    beam_fwhm: float = 1.6
    flat_seed: int = 0
    _flat: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        ny, nx = self.shape
        if ny <= 0 or nx <= 0:
            raise ValueError(f"camera shape={self.shape!r}; expected positive (ny, nx)")
        for name in ("pixel_size_um", "photon_flux", "gain"):
            if not getattr(self, name) > 0:
                raise ValueError(f"camera {name}={getattr(self, name)!r}; expected > 0")
        if self.read_noise < 0 or self.dark_offset < 0:
            raise ValueError(
                f"camera read_noise={self.read_noise!r}, dark_offset={self.dark_offset!r}; expected ≥ 0 ADU"
            )

    def flat_field(self) -> np.ndarray:
        """Relative open-beam intensity per pixel (float32, max ≈ 1): a vertical Gaussian beam profile, a
        slight horizontal slope and a ±1 % fixed pixel-response pattern."""
        if self._flat is None:
            ny, nx = self.shape
            y = (np.arange(ny) - (ny - 1) / 2) / ny
            x = (np.arange(nx) - (nx - 1) / 2) / nx
            sigma = self.beam_fwhm / 2.3548
            profile = np.exp(-0.5 * (y / sigma) ** 2)[:, None] * (1.0 - 0.1 * x)[None, :]
            rng = np.random.default_rng(self.flat_seed)
            response = 1.0 + 0.01 * rng.standard_normal(self.shape)
            self._flat = (profile * response / profile.max()).astype(np.float32)
        return self._flat

    def mean_photons(self, absorbance: np.ndarray | None, exposure_s: float) -> np.ndarray:
        """Expected detected photons per pixel: flux · exposure · flat · exp(−μt) (float32 (ny, nx))."""
        photons = self.flat_field() * np.float32(self.photon_flux * exposure_s)
        if absorbance is not None:
            photons = photons * np.exp(-absorbance, dtype=np.float32)
        return photons

    def expected_frame(self, absorbance: np.ndarray | None, exposure_s: float, shutter_open: bool = True):
        """Mean frame in ADU (before noise, rounding and saturation), float32 (ny, nx)."""
        if not shutter_open:
            return np.full(self.shape, self.dark_offset, dtype=np.float32)
        return np.float32(self.dark_offset) + np.float32(self.gain) * self.mean_photons(
            absorbance, exposure_s
        )

    def sample_frame(
        self,
        absorbance: np.ndarray | None,
        exposure_s: float,
        rng: np.random.Generator,
        shutter_open: bool = True,
    ) -> np.ndarray:
        """Draw one noisy frame (uint16 (ny, nx)).

        Parameters
        ----------
        absorbance : numpy.ndarray or None
            μt per pixel (None: no sample in the beam).
        exposure_s : float
            Exposure time in s.
        rng : numpy.random.Generator
            Source of the photon and read noise.
        shutter_open : bool
            False renders a dark frame.
        """
        frame = rng.standard_normal(self.shape, dtype=np.float32)
        frame *= np.float32(self.read_noise)
        frame += np.float32(self.dark_offset)
        if shutter_open:
            photons = rng.poisson(self.mean_photons(absorbance, exposure_s)).astype(np.float32)
            frame += np.float32(self.gain) * photons
        np.rint(frame, out=frame)
        np.clip(frame, 0, SATURATION_ADU, out=frame)
        return frame.astype(np.uint16)

    def max_unsaturated_exposure_s(self, margin: float = 0.9) -> float | None:
        """Longest exposure (s) at which the brightest open-beam pixel's mean stays below ``margin`` × the
        16-bit full scale (:data:`SATURATION_ADU`); None if the open beam adds no counts."""
        dark = float(self.expected_frame(None, 0.0).max())
        per_s = float(self.expected_frame(None, 1.0).max()) - dark
        if not per_s > 0:
            return None
        return (margin * SATURATION_ADU - dark) / per_s

    def noise_model(self) -> PhotonNoiseModel:
        """Variance model of dark-subtracted counts: Var = gain · N + read_noise²."""
        return PhotonNoiseModel(gain=self.gain, offset=self.read_noise**2)

    def i0_counts(self, exposure_s: float) -> float:
        """Mean dark-subtracted open-beam counts per pixel (ADU) at ``exposure_s``."""
        return float(self.gain * self.photon_flux * exposure_s * self.flat_field().mean())

    def as_dict(self) -> dict[str, float | list[int]]:
        """JSON-friendly parameters (run metadata)."""
        return {
            "shape": list(self.shape),
            "pixel_size_um": self.pixel_size_um,
            "photon_flux": self.photon_flux,
            "gain": self.gain,
            "read_noise": self.read_noise,
            "dark_offset": self.dark_offset,
        }
