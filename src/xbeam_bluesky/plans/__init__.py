"""Bluesky plans: full-field XANES imaging and powder XRD, their frame layout and duration estimates.

Plans are typed against ``bluesky.protocols`` with JSON-friendly arguments, so they run from the RunEngine, the
IPython profile and the queueserver alike.
"""

from xbeam_bluesky.documents import ENERGY_INDEX_KEY, TILE_INDEX_KEY
from xbeam_bluesky.plans.duration import DurationEstimate, estimate_duration
from xbeam_bluesky.plans.layout import ORDERS, acquisition_order, frame_order
from xbeam_bluesky.plans.segments import DetectorSegments
from xbeam_bluesky.plans.xanes_imaging import validate_xanes_imaging, xanes_imaging
from xbeam_bluesky.plans.xrd import resolve_cif, validate_xrd_powder, xrd_powder

__all__ = [
    "ENERGY_INDEX_KEY",
    "ORDERS",
    "TILE_INDEX_KEY",
    "DetectorSegments",
    "DurationEstimate",
    "acquisition_order",
    "estimate_duration",
    "frame_order",
    "resolve_cif",
    "validate_xanes_imaging",
    "validate_xrd_powder",
    "xanes_imaging",
    "xrd_powder",
]
from xbeam_bluesky.plans.optimal import optimal_xanes_imaging as optimal_xanes_imaging
