"""Experiment planning: Bayesian-optimal XANES energy points, stage tiling and beam-time estimates.

Pure science: numpy/scipy only, no bluesky/ophyd/tiled imports.
"""

from xbeam_bluesky.planning.design import (
    EnergyDesign,
    GreedySelection,
    design_energies,
    greedy_select,
    load_design,
)
from xbeam_bluesky.planning.noise import TransmissionNoise
from xbeam_bluesky.planning.prior import (
    GaussianProcessPrior,
    fe_k_grid,
    fit_length_scale,
    library_log_likelihood,
    prior_from_library,
    rbf_kernel,
)
from xbeam_bluesky.planning.reconstruction import error_decomposition, grid_indices, reconstruct
from xbeam_bluesky.planning.timing import ScanTimeModel

__all__ = [
    "EnergyDesign",
    "GaussianProcessPrior",
    "GreedySelection",
    "ScanTimeModel",
    "TransmissionNoise",
    "design_energies",
    "error_decomposition",
    "fe_k_grid",
    "fit_length_scale",
    "greedy_select",
    "grid_indices",
    "library_log_likelihood",
    "load_design",
    "prior_from_library",
    "rbf_kernel",
    "reconstruct",
]
