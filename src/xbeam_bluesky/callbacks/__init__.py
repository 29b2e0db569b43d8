"""TODO"""

from xbeam_bluesky.callbacks.clustering import LiveClustering, live_clustering
from xbeam_bluesky.callbacks.rietveld import AutoRietveld, auto_rietveld

__all__ = ["AutoRietveld", "LiveClustering", "auto_rietveld", "live_clustering"]
