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
from xbeam_bluesky.storage.server import (
    Storage,
    check_reachable,
    ensure_writable,
    open_storage,
    start_embedded_server,
)
from xbeam_bluesky.storage.spool import SpoolingWriter, read_spool, replay_pending, replay_spool

__all__ = [
    "ANALYSIS_CONTAINER",
    "FrameTable",
    "SpoolingWriter",
    "Storage",
    "TileStack",
    "XRDPattern",
    "absorbance_stack",
    "analysis_results",
    "check_reachable",
    "dark_frames",
    "dark_mean",
    "energies",
    "ensure_writable",
    "flat_means",
    "frame_table",
    "open_storage",
    "read_frames",
    "read_spool",
    "replay_pending",
    "replay_spool",
    "result_png",
    "start_doc",
    "start_embedded_server",
    "streams",
    "tile_positions",
    "tile_stack",
    "write_analysis_result",
    "xrd_pattern",
]
