"""X-ray absorption spectra: reading, normalization, reference libraries and the photon-noise model.

Pure science: no bluesky/ophyd imports.
"""

from xbeam_bluesky.spectra.edges import K_EDGES_EV, edge_energy
from xbeam_bluesky.spectra.io import bundled_library_dir, library_files, load_library, read_spectrum
from xbeam_bluesky.spectra.library import AlignedLibrary, aligned_library, calibration_shifts
from xbeam_bluesky.spectra.model import NormalizedSpectrum, Spectrum, SpectrumFormatError
from xbeam_bluesky.spectra.noise import PhotonNoiseModel, absorbance_from_counts
from xbeam_bluesky.spectra.normalize import find_e0, normalize, resample

__all__ = [
    "K_EDGES_EV",
    "AlignedLibrary",
    "NormalizedSpectrum",
    "PhotonNoiseModel",
    "Spectrum",
    "SpectrumFormatError",
    "absorbance_from_counts",
    "aligned_library",
    "bundled_library_dir",
    "calibration_shifts",
    "edge_energy",
    "find_e0",
    "library_files",
    "load_library",
    "normalize",
    "read_spectrum",
    "resample",
]
