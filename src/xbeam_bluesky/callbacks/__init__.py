"""Live analyses: RunEngine callbacks that analyse a run while it is measured and write results to tiled.

- :class:`LiveClustering` (``purpose="xanes_imaging"`` runs): per-frame noise-grid clustering of the per-pixel
  spectra, one phase map per tile and a mosaic, linked to the raw run.
- :class:`AutoRietveld` (``purpose="xrd"`` runs): automatic Rietveld refinement (Bayesian strategy search) when
  the run stops.

Which analysis follows which kind of run is one registry, ``callbacks.remote.LIVE_ANALYSES``; the same router
feeds them in the RunEngine's process or out of process behind the bluesky 0MQ proxy (``xbeam analysis-server``).
A failing analysis is logged and never stops the RunEngine.
"""

from xbeam_bluesky.callbacks.clustering import LiveClustering, live_clustering
from xbeam_bluesky.callbacks.rietveld import AutoRietveld, auto_rietveld

__all__ = ["AutoRietveld", "LiveClustering", "auto_rietveld", "live_clustering"]
