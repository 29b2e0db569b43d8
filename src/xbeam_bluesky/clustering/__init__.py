"""Noise-defined grid clustering of XAS-imaging stacks (Ito et al., Sci. Rep. 14, 22549, 2024).

Pure science: numpy/scipy (h5py for reading stacks); never imports the beamline stack.
"""

from ._absorber import (
    DETECTION_Z,
    AbsorberInputError,
    AbsorberTest,
    absorber_test,
    label_no_absorber,
    no_absorber_name,
)
from ._denoise import (
    NOVEL_WARNING_FRACTION,
    DenoiseInputError,
    denoise_labels,
    denoise_window,
    novel_fraction_check,
    pure_regions,
)
from ._discovery import discover_sites, partition_spectra, region_spectra
from ._model_error import MODEL_ERROR_FLOOR_RMS, estimate_model_error, model_error_floor
from ._mosaic import Mosaic, TileMap, stitch_tiles
from ._noise_sums import photon_coefficients
from ._phantom import MatchedScores, MeasuredPhantom, held_out_phantom, matched_scores, split_library
from ._pipeline import NAME_TOLERANCE, ClusteringPipeline, DataSites, estimated_noise, pipeline_from_library
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
from ._split import SPLIT_ALPHA, SplitInputError, SplitTest, split_clusters
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
    "DETECTION_Z",
    "MERGE_THRESHOLD",
    "MODEL_ERROR_FLOOR_RMS",
    "NAME_TOLERANCE",
    "NOVEL_WARNING_FRACTION",
    "SPLIT_ALPHA",
    "AbsorbanceNoise",
    "AbsorberInputError",
    "AbsorberTest",
    "ArrayStack",
    "Assignment",
    "BlockResult",
    "ClusterResult",
    "ClusteringPipeline",
    "DataSites",
    "DenoiseInputError",
    "FrameCorrection",
    "GramAccumulator",
    "HDF5Stack",
    "MatchedScores",
    "MeasuredPhantom",
    "Mosaic",
    "Sites",
    "SplitInputError",
    "SplitTest",
    "StackSource",
    "StreamingAssigner",
    "TileMap",
    "absorber_test",
    "area_fractions",
    "assemble_result",
    "assign_block",
    "assign_spectra",
    "cluster_stack",
    "cluster_tiles",
    "denoise_labels",
    "denoise_window",
    "directed_separation",
    "discover_sites",
    "estimate_model_error",
    "estimated_noise",
    "held_out_phantom",
    "incident_counts",
    "label_no_absorber",
    "matched_scores",
    "merge_sites",
    "model_error_floor",
    "model_error_per_energy",
    "no_absorber_name",
    "novel_fraction_check",
    "partition_spectra",
    "photon_coefficients",
    "pipeline_from_library",
    "pure_regions",
    "region_spectra",
    "row_blocks",
    "separation_matrix",
    "separation_to_sites",
    "sites_from_library",
    "split_clusters",
    "split_library",
    "standardize",
    "standardized_noise",
    "stitch_tiles",
]
