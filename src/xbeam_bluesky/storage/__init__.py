"""Storage: runs written to tiled by ``TiledWriter``, read back as stacks and patterns; analysis results."""

from xbeam_bluesky.storage.readback import (
    FrameTable,
    TileStack,
    XRDPattern,
    absorbance_stack,
    dark_frames,
    dark_mean,
    energies,
    flat_means,
    frame_table,
    read_frames,
    start_doc,
    streams,
    tile_positions,
    tile_stack,
    xrd_pattern,
)
from xbeam_bluesky.storage.results import (
    ANALYSIS_CONTAINER,
    analysis_results,
    result_png,
    write_analysis_result,
)
from xbeam_bluesky.storage.server import Storage, ensure_writable, open_storage, start_embedded_server

__all__ = [
    "ANALYSIS_CONTAINER",
    "FrameTable",
    "Storage",
    "TileStack",
    "XRDPattern",
    "absorbance_stack",
    "analysis_results",
    "dark_frames",
    "dark_mean",
    "energies",
    "ensure_writable",
    "flat_means",
    "frame_table",
    "open_storage",
    "read_frames",
    "result_png",
    "start_doc",
    "start_embedded_server",
    "streams",
    "tile_positions",
    "tile_stack",
    "write_analysis_result",
    "xrd_pattern",
]
