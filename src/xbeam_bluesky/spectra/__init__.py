"""X-ray absorption spectra: reading, normalization, reference libraries and the photon-noise model.

Pure science: no bluesky/ophyd imports.
"""

from xbeam_bluesky.spectra.correction import SATURATION_COUNTS, FrameMean, correct_frame
from xbeam_bluesky.spectra.edges import K_EDGES_EV, L3_EDGES_EV, absorbing_edge, edge_energy
from xbeam_bluesky.spectra.io import bundled_library_dir, library_files, load_library, read_spectrum
from xbeam_bluesky.spectra.library import AlignedLibrary, aligned_library, calibration_shifts
from xbeam_bluesky.spectra.model import NormalizedSpectrum, Spectrum, SpectrumFormatError
from xbeam_bluesky.spectra.noise import (
    EstimatedNoiseModel,
    PhotonNoiseModel,
    estimate_noise,
    noise_model,
)
from xbeam_bluesky.spectra.normalize import find_e0, normalize, resample
from xbeam_bluesky.spectra.stack_io import (
    IncidentCounts,
    MeasuredStack,
    StackFormatError,
    bright_region_i0,
    optical_density,
    read_stack,
)

__all__ = [
    "K_EDGES_EV",
    "L3_EDGES_EV",
    "SATURATION_COUNTS",
    "AlignedLibrary",
    "EstimatedNoiseModel",
    "FrameMean",
    "IncidentCounts",
    "MeasuredStack",
    "NormalizedSpectrum",
    "PhotonNoiseModel",
    "Spectrum",
    "SpectrumFormatError",
    "StackFormatError",
    "absorbing_edge",
    "aligned_library",
    "bright_region_i0",
    "bundled_library_dir",
    "calibration_shifts",
    "correct_frame",
    "edge_energy",
    "estimate_noise",
    "find_e0",
    "library_files",
    "load_library",
    "noise_model",
    "normalize",
    "optical_density",
    "read_spectrum",
    "read_stack",
    "resample",
]
