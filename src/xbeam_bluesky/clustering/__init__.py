"""Noise-defined grid clustering of XAS-imaging stacks (Ito et al., Sci. Rep. 14, 22549, 2024).

Pure science: numpy/scipy (h5py for reading stacks); never imports the beamline stack.
"""

from ._denoise import denoise_labels, pure_regions
from ._discovery import discover_sites, partition_spectra, region_spectra
from ._model_error import MODEL_ERROR_FLOOR_RMS, estimate_model_error, model_error_floor
from ._mosaic import Mosaic, TileMap, stitch_tiles
from ._noise_sums import photon_coefficients
from ._phantom import MatchedScores, MeasuredPhantom, held_out_phantom, matched_scores, split_library
from ._pipeline import NAME_TOLERANCE, ClusteringPipeline, DataSites, pipeline_from_library
from ._separation import (
    ACCEPT_THRESHOLD,
    MERGE_THRESHOLD,
    AbsorbanceNoise,
    directed_separation,
    incident_counts,
    model_error_per_energy,
    separation_matrix,
    separation_to_sites,
    standardize,
    standardized_noise,
)
from ._sites import Sites, merge_sites, sites_from_library
from ._stack import (
    ArrayStack,
    BlockResult,
    ClusterResult,
    HDF5Stack,
    StackSource,
    assemble_result,
    assign_block,
    assign_spectra,
    cluster_stack,
    cluster_tiles,
    row_blocks,
)
from ._streaming import Assignment, FrameCorrection, StreamingAssigner
from ._summary import GramAccumulator, area_fractions

__all__ = [
    "ACCEPT_THRESHOLD",
    "MERGE_THRESHOLD",
    "MODEL_ERROR_FLOOR_RMS",
    "NAME_TOLERANCE",
    "AbsorbanceNoise",
    "ArrayStack",
    "Assignment",
    "BlockResult",
    "ClusterResult",
    "ClusteringPipeline",
    "DataSites",
    "FrameCorrection",
    "GramAccumulator",
    "HDF5Stack",
    "MatchedScores",
    "MeasuredPhantom",
    "Mosaic",
    "Sites",
    "StackSource",
    "StreamingAssigner",
    "TileMap",
    "area_fractions",
    "assemble_result",
    "assign_block",
    "assign_spectra",
    "cluster_stack",
    "cluster_tiles",
    "denoise_labels",
    "directed_separation",
    "discover_sites",
    "estimate_model_error",
    "held_out_phantom",
    "incident_counts",
    "matched_scores",
    "merge_sites",
    "model_error_floor",
    "model_error_per_energy",
    "partition_spectra",
    "photon_coefficients",
    "pipeline_from_library",
    "pure_regions",
    "region_spectra",
    "row_blocks",
    "separation_matrix",
    "separation_to_sites",
    "sites_from_library",
    "split_library",
    "standardize",
    "standardized_noise",
    "stitch_tiles",
]
