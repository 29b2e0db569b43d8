"""One namespace for every front end (CLI, IPython profile, queueserver startup, tests).

``build_namespace(mode="sim")`` creates the RunEngine first (ophyd-async devices need its event loop), opens
storage (embedded tiled on the data directory, or the configured server), subscribes the TiledWriter, builds
and connects the simulated beamline and returns everything by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODES = ("sim",)


def build_namespace(
    mode: str = "sim",
    *,
    data_dir: str | Path | None = None,
    tiled_uri: str | None = None,
    api_key: str | None = None,
    RE: Any = None,
    write_to_tiled: bool = True,
    **sim_options: Any,
) -> dict[str, Any]:
    """Build the beamline namespace.

    Parameters
    ----------
    mode : {"sim"}
        ``"sim"``: the simulated beamline (later issues add ``"mock"`` and ``"real"``).
    data_dir : str or pathlib.Path, optional
        Data directory (default ``XBEAM_DATA_DIR`` / the per-user default).
    tiled_uri, api_key : str, optional
        Write to this tiled server instead of an embedded one.
    RE : bluesky.RunEngine, optional
        Reuse a RunEngine (default: a new one).
    write_to_tiled : bool
        Subscribe the TiledWriter to the RunEngine.
    **sim_options
        Fields of :class:`~xbeam_bluesky.devices.sim.SimBeamlineConfig` (``frame_shape``, ``time_scale``,
        ``seed``, ...), plus ``phantom`` and ``xrd_renderer``.

    Returns
    -------
    dict
        ``RE``, ``storage``, ``tiled_client``, ``tiled_writer``, ``beamline``, ``phantom``, the devices by name
        (``mono``, ``stage``, ``shutter``, ``camera``, ``xrd``), the plans (``xanes_imaging``, ``xrd_powder``,
        ``estimate_duration``), ``bps``, ``bpp``.
    """
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r}; expected one of {MODES}")
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp
    from bluesky import RunEngine

    from xbeam_bluesky.devices.sim import make_sim_beamline
    from xbeam_bluesky.plans import estimate_duration, xanes_imaging, xrd_powder
    from xbeam_bluesky.storage import open_storage

    RE = RE if RE is not None else RunEngine()
    storage = open_storage(data_dir=data_dir, uri=tiled_uri, api_key=api_key)
    phantom = sim_options.pop("phantom", None)
    renderer = sim_options.pop("xrd_renderer", None)
    beamline = make_sim_beamline(storage.detector_dir, phantom=phantom, xrd_renderer=renderer, **sim_options)
    if write_to_tiled:
        RE.subscribe(storage.writer)
    namespace: dict[str, Any] = {
        "RE": RE,
        "storage": storage,
        "tiled_client": storage.client,
        "tiled_writer": storage.writer,
        "beamline": beamline,
        "phantom": beamline.phantom,
        "xanes_imaging": xanes_imaging,
        "xrd_powder": xrd_powder,
        "estimate_duration": estimate_duration,
        "bps": bps,
        "bpp": bpp,
    }
    namespace.update(beamline.devices())
    return namespace
