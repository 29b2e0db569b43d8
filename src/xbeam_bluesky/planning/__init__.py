"""Experiment planning: Bayesian-optimal XANES energy points, stage tiling and beam-time estimates.

Pure science: numpy/scipy only, no bluesky/ophyd/tiled imports.
"""

from xbeam_bluesky.planning.adaptive import (
    CLUSTER_MEAN_VARIANCE_FRACTION,
    TooFewClustersError,
    cluster_candidates,
    measured_units,
    second_pass_candidates,
)
from xbeam_bluesky.planning.conventional import conventional_expected_rmse, conventional_grid, design_grid
from xbeam_bluesky.planning.design import (
    DEFAULT_EXCHANGE_ROUNDS,
    DEFAULT_EXCHANGE_WINDOW,
    EnergyDesign,
    GreedySelection,
    design_energies,
    greedy_select,
    load_design,
)
from xbeam_bluesky.planning.exchange import ExchangeResult, design_trace, exchange_refine
from xbeam_bluesky.planning.grid import DEFAULT_RANGE_REL_EV, candidate_grid, default_range
from xbeam_bluesky.planning.map_design import (
    DEFAULT_MODEL_ERROR,
    DEFAULT_SEPARATION_MODEL_ERROR,
    DEFAULT_TARGET_SEPARATION,
    MapDesign,
    MapDesignError,
    PhaseCandidates,
    design_map_energies,
    map_separations,
    phase_candidates,
)
from xbeam_bluesky.planning.noise import TransmissionNoise
from xbeam_bluesky.planning.prior import (
    KERNELS,
    GaussianProcessPrior,
    RawDataExtension,
    fe_k_grid,
    fit_kernel,
    fit_length_scale,
    library_log_likelihood,
    prior_from_library,
    rbf_kernel,
)
from xbeam_bluesky.planning.reconstruction import error_decomposition, grid_indices, reconstruct
from xbeam_bluesky.planning.tiling import (
    TilePlan,
    check_stage_limits,
    default_overlap,
    estimate_imaging_time,
    plan_tiles,
    tile_size_mm,
)
from xbeam_bluesky.planning.timing import ScanTimeModel
from xbeam_bluesky.planning.warp import EnergyWarp

__all__ = [
    "CLUSTER_MEAN_VARIANCE_FRACTION",
    "DEFAULT_EXCHANGE_ROUNDS",
    "DEFAULT_EXCHANGE_WINDOW",
    "DEFAULT_MODEL_ERROR",
    "DEFAULT_RANGE_REL_EV",
    "DEFAULT_SEPARATION_MODEL_ERROR",
    "DEFAULT_TARGET_SEPARATION",
    "KERNELS",
    "EnergyDesign",
    "EnergyWarp",
    "ExchangeResult",
    "GaussianProcessPrior",
    "GreedySelection",
    "MapDesign",
    "MapDesignError",
    "PhaseCandidates",
    "RawDataExtension",
    "ScanTimeModel",
    "TilePlan",
    "TooFewClustersError",
    "TransmissionNoise",
    "candidate_grid",
    "check_stage_limits",
    "cluster_candidates",
    "conventional_expected_rmse",
    "conventional_grid",
    "default_overlap",
    "default_range",
    "design_energies",
    "design_grid",
    "design_map_energies",
    "design_trace",
    "error_decomposition",
    "estimate_imaging_time",
    "exchange_refine",
    "fe_k_grid",
    "fit_kernel",
    "fit_length_scale",
    "greedy_select",
    "grid_indices",
    "library_log_likelihood",
    "load_design",
    "map_separations",
    "measured_units",
    "phase_candidates",
    "plan_tiles",
    "prior_from_library",
    "rbf_kernel",
    "reconstruct",
    "second_pass_candidates",
    "tile_size_mm",
]
