"""Experiment planning: Bayesian-optimal XANES energy points, stage tiling and beam-time estimates.

Pure science: numpy/scipy only, no bluesky/ophyd/tiled imports. The modules are private (``_design``,
``_map_design``, …); this namespace is the public one. The plots (``plot_design``, ``plot_map_design``) are
imported on first use, so importing the package does not import matplotlib.
"""

from typing import Any

from xbeam_bluesky.planning._adaptive import (
    CLUSTER_MEAN_VARIANCE_FRACTION,
    TooFewClustersError,
    cluster_candidates,
    measured_units,
    second_pass_candidates,
)
from xbeam_bluesky.planning._conventional import conventional_expected_rmse, conventional_grid, design_grid
from xbeam_bluesky.planning._design import (
    DEFAULT_EXCHANGE_ROUNDS,
    DEFAULT_EXCHANGE_WINDOW,
    EnergyDesign,
    GreedySelection,
    design_energies,
    greedy_select,
    load_design,
)
from xbeam_bluesky.planning._exchange import ExchangeResult, design_trace, exchange_refine
from xbeam_bluesky.planning._grid import DEFAULT_RANGE_REL_EV, candidate_grid, default_range
from xbeam_bluesky.planning._map_design import (
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
from xbeam_bluesky.planning._noise import TransmissionNoise
from xbeam_bluesky.planning._prior import (
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
from xbeam_bluesky.planning._reconstruction import error_decomposition, grid_indices, reconstruct
from xbeam_bluesky.planning._tiling import (
    TilePlan,
    check_stage_limits,
    default_overlap,
    estimate_imaging_time,
    plan_tiles,
    tile_size_mm,
)
from xbeam_bluesky.planning._timing import ScanTimeModel
from xbeam_bluesky.planning._warp import EnergyWarp

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
    "plot_design",
    "plot_map_design",
    "prior_from_library",
    "rbf_kernel",
    "reconstruct",
    "second_pass_candidates",
    "tile_size_mm",
]

_LAZY = {"plot_design": "_plot", "plot_map_design": "_plot"}


def __getattr__(name: str) -> Any:
    """The plotting functions, imported from ``_plot`` (matplotlib) on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
