"""One namespace for every front end (CLI, IPython profile, queueserver startup, tests).

``build_namespace(mode="sim")`` creates the RunEngine first (ophyd-async devices need its event loop), opens
storage (embedded tiled on the data directory, or the configured server), subscribes the TiledWriter, builds
and connects the simulated beamline and returns everything by name.

``mode="real"`` builds the EPICS devices of :mod:`xbeam_bluesky.devices.epics` from the ``[epics.*]`` tables of
the TOML config; ``mode="mock"`` builds the same classes connected with mock signals (no IOC needed; the camera
mock writes frames like the areaDetector HDF5 plugin, the powder detector mock posts a rendered pattern). With an
``[epics.xrd]`` table the powder detector is ``xrd``, refined with the ``[live.rietveld]`` ``instrument`` file. The live analyses of
:data:`xbeam_bluesky.callbacks.remote.LIVE_ANALYSES` follow every run in-process, or, with ``publish_to``, the
documents go to a bluesky 0MQ proxy for ``xbeam analysis-server``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xbeam_bluesky.errors import ConfigError, InputFileError

MODES = ("sim", "mock", "real")


def build_namespace(
    mode: str = "sim",
    *,
    data_dir: str | Path | None = None,
    tiled_uri: str | None = None,
    api_key: str | None = None,
    RE: Any = None,
    write_to_tiled: bool = True,
    config_path: str | Path | None = None,
    live: bool | None = None,
    publish_to: str | None = None,
    progress: bool = False,
    connect_timeout: float = 10.0,
    **sim_options: Any,
) -> dict[str, Any]:
    """Build the beamline namespace.

    Parameters
    ----------
    mode : {"sim", "mock", "real"}
        ``"sim"``: the simulated beamline; ``"real"``: EPICS devices from the ``[epics.*]`` tables of the config;
        ``"mock"``: the same EPICS classes connected with mock signals.
    data_dir : str or pathlib.Path, optional
        Data directory (default ``XBEAM_DATA_DIR`` / the per-user default).
    tiled_uri, api_key : str, optional
        Write to this tiled server instead of an embedded one.
    RE : bluesky.RunEngine, optional
        Reuse a RunEngine (default: a new one).
    write_to_tiled : bool
        Subscribe the TiledWriter to the RunEngine.
    config_path : str or pathlib.Path, optional
        The TOML config (default ``$XBEAM_CONFIG`` or ``~/.config/xbeam/config.toml``): storage keys, ``[sim]``
        options (keyword ``sim_options`` win), ``[epics.*]`` PV prefixes, ``zmq_proxy``.
    live : bool, optional
        Run the registered live analyses in this process (default: yes, unless documents are published).
    publish_to : str, optional
        ``host:port`` of a bluesky 0MQ proxy's in address: publish every document there (default: the config's
        ``zmq_proxy``; ``""`` disables it).
    progress : bool
        Show a progress bar for moves and long waits (interactive sessions).
    connect_timeout : float
        Seconds to wait for EPICS devices to connect (``mode="real"``).
    **sim_options
        Fields of :class:`~xbeam_bluesky.devices.sim.SimBeamlineConfig` (``frame_shape``, ``time_scale``,
        ``seed``, ...), plus ``phantom`` and ``xrd_renderer``.

    Returns
    -------
    dict
        ``RE``, ``storage``, ``tiled_client``, ``tiled_writer``, ``beamline`` and ``phantom`` (sim only), the
        devices by name (``mono``, ``stage``, ``shutter``, ``camera``, and ``xrd`` in sim or when the config has
        ``[epics.xrd]``), the plans
        (``xanes_imaging``, ``optimal_xanes_imaging``, ``xrd_powder``), ``estimate_duration``, ``bps``, ``bpp``,
        ``live_router`` (or None), ``publisher`` (or None), ``mode`` and ``banner`` (a short text saying what is
        connected and where data go).

    Raises
    ------
    ValueError
        Unknown mode, bad config, or ``mode="real"`` with ``[epics.xrd]`` but no ``[live.rietveld]``
        ``instrument`` file (see :func:`check_rietveld_instrument`); ``ophyd_async.core.NotConnectedError``
        naming the PVs that did not connect.
    FileNotFoundError
        The ``[live.rietveld]`` ``instrument`` file does not exist.
    """
    if mode not in MODES:
        raise ConfigError(f"mode = {mode!r}; expected one of {MODES}")
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp
    from bluesky import RunEngine

    from xbeam_bluesky.config import load_config
    from xbeam_bluesky.devices.sim import make_sim_beamline
    from xbeam_bluesky.plans import estimate_duration, xanes_imaging, xrd_powder
    from xbeam_bluesky.storage import open_storage

    config = load_config(config_path, data_dir=data_dir)
    RE = RE if RE is not None else RunEngine()
    storage = open_storage(
        config,
        data_dir=data_dir,
        uri=tiled_uri,
        api_key=api_key,
        readable_dirs=_frame_dirs(mode, config.path),
    )
    _close_at_exit(storage)
    beamline = None
    if mode == "sim":
        sim_options = {**config.sim, **sim_options}
        phantom = sim_options.pop("phantom", None)
        renderer = sim_options.pop("xrd_renderer", None)
        beamline = make_sim_beamline(
            storage.detector_dir, phantom=phantom, xrd_renderer=renderer, **sim_options
        )
        devices = beamline.devices()
    else:
        devices = _epics_devices(mode, config.path, storage.detector_dir, connect_timeout)
        if "xrd" in devices:
            check_rietveld_instrument(mode, config.live, config.path)
    if write_to_tiled:
        RE.subscribe(storage.writer)
    publish_to = config.zmq_proxy if publish_to is None else publish_to
    publisher = _publish(RE, publish_to) if publish_to else None
    live = live if live is not None else publisher is None
    router = _subscribe_live(RE, storage.client, config.live) if live else None
    if progress:
        from bluesky.utils import ProgressBarManager

        RE.waiting_hook = ProgressBarManager(_numeric_progress_bar)
    namespace: dict[str, Any] = {
        "RE": RE,
        "storage": storage,
        "tiled_client": storage.client,
        "tiled_writer": storage.writer,
        "beamline": beamline,
        "phantom": beamline.phantom if beamline is not None else None,
        "xanes_imaging": xanes_imaging,
        "optimal_xanes_imaging": _optimal_plan(),
        "xrd_powder": xrd_powder,
        "estimate_duration": estimate_duration,
        "bps": bps,
        "bpp": bpp,
    }
    for name in ("xanes_imaging", "optimal_xanes_imaging", "xrd_powder"):
        _resolve_annotations(namespace[name])
    namespace.update(devices)
    namespace.update(mode=mode, live_router=router, publisher=publisher)
    namespace["banner"] = banner(namespace)
    return namespace


def _numeric_progress_bar(status_objs: Any) -> Any:
    """A terminal progress bar that skips moves it cannot draw (e.g. a shutter going to ``"closed"``).

    bluesky's bar subtracts positions; a string position would raise inside the status watcher and fail the move.
    """
    import numbers

    from bluesky.utils import TerminalProgressBar

    class NumericProgressBar(TerminalProgressBar):
        def update(self, pos: int, **kwargs: Any) -> None:
            values = (kwargs.get("current"), kwargs.get("initial"), kwargs.get("target"))
            if all(v is None or isinstance(v, numbers.Real) for v in values):
                super().update(pos, **kwargs)

    return NumericProgressBar(status_objs, delay_draw=0.2)


def _resolve_annotations(plan: Any) -> None:
    """Evaluate a plan's postponed (string) annotations in place.

    Modules with ``from __future__ import annotations`` leave ``'Readable'`` strings in ``__annotations__``; the
    queueserver builds its parameter-validation model from them and rejects every submission ("`Model` is not
    fully defined"). Resolved types let it check device names and parameter types.
    """
    import typing

    plan.__annotations__ = typing.get_type_hints(plan)


def _close_at_exit(storage: Any) -> None:
    """Stop an embedded tiled server when the interpreter exits (its server thread would otherwise keep the
    process alive: IPython, ``qserver-list-plans-devices`` and scripts would hang on exit)."""
    import threading

    if storage.server is not None:
        threading._register_atexit(storage.close)  # runs before non-daemon threads are joined


def _frame_dirs(mode: str, config_path: Path | None) -> list[Path]:
    """The EPICS camera's frame directory as this host sees it (``mode="real"``), for the embedded tiled server
    to read the frames through; none in the other modes (frames go to the data directory)."""
    if mode != "real":
        return []
    from xbeam_bluesky.config import default_config_path
    from xbeam_bluesky.devices.epics import load_epics_config

    camera = load_epics_config(config_path or default_config_path()).camera
    return [Path(camera.read_dir or camera.write_dir)]


def _epics_devices(mode: str, config_path: Path | None, detector_dir: Path, timeout: float) -> dict[str, Any]:
    """Build and connect the EPICS devices (mock signals in ``mock`` mode, frames into ``detector_dir``)."""
    from bluesky.run_engine import call_in_bluesky_event_loop
    from ophyd_async.core import wait_for_connection

    from xbeam_bluesky.config import default_config_path
    from xbeam_bluesky.devices.epics import load_epics_config, make_epics_devices

    epics = load_epics_config(config_path or default_config_path())
    mock = mode == "mock"
    devices = make_epics_devices(epics, frames_dir=detector_dir if mock else None)
    coros = {name: device.connect(mock=mock, timeout=timeout) for name, device in devices.items()}
    call_in_bluesky_event_loop(wait_for_connection(**coros))
    return devices


def check_rietveld_instrument(mode: str, live: dict, config_path: Path | None) -> None:
    """Check the instrument file the automatic Rietveld refinement of a real powder station will use.

    The refinement takes its wavelength and profile terms from ``[live.rietveld] instrument`` (the same option
    ``xbeam analysis-server`` reads); without it it uses lab Cu Kα defaults (1.5405 Å), which would refine a
    synchrotron pattern to a wrong cell without failing.

    Parameters
    ----------
    mode : {"mock", "real"}
        Without an instrument file, ``"real"`` raises and ``"mock"`` warns (the mock renders Cu Kα patterns).
    live : dict
        The config's ``[live]`` table.
    config_path : pathlib.Path or None
        The config file, named in the messages.

    Raises
    ------
    ValueError
        ``mode="real"`` and no instrument file, or an unreadable one (message names the file and key).
    FileNotFoundError
        The instrument file does not exist.
    """
    import warnings

    from xbeam_bluesky.rietveld import read_instrument

    where = f"{config_path or 'the config'}"
    instrument = dict(live.get("rietveld") or {}).get("instrument")
    if instrument is None:
        message = (
            f"{where}: [epics.xrd] configures a powder detector but [live.rietveld] has no "
            'instrument = "<file>.instprm"; the automatic Rietveld refinement would use lab Cu Kα defaults '
            "(1.5405 Å), not the powder station's wavelength"
        )
        if mode == "real":
            raise ConfigError(message + "; set it to the station's GSAS-II .instprm (or GSAS .PRM) file")
        warnings.warn(message + " (mock mode: the mock detector renders Cu Kα patterns)", stacklevel=3)
        return
    try:
        read_instrument(instrument)
    except FileNotFoundError:
        raise InputFileError(
            f"{where}: [live.rietveld] instrument = {instrument!r} does not exist (needed for [epics.xrd])"
        ) from None
    except ValueError as exc:
        raise ConfigError(
            f"{where}: [live.rietveld] instrument = {instrument!r} is unreadable: {exc}"
        ) from None


def _publish(RE: Any, address: str) -> Any:
    """Publish every document to the bluesky 0MQ proxy at ``address`` (its in port)."""
    from bluesky.callbacks.zmq import Publisher

    publisher = Publisher(address)
    RE.subscribe(publisher)
    return publisher


def _subscribe_live(RE: Any, client: Any, options: dict) -> Any:
    """Run the registered live analyses in this process, writing results to ``client``."""
    from xbeam_bluesky.callbacks.remote import LiveContext, live_router

    router = live_router(LiveContext(results=client, options=options))
    RE.subscribe(router)
    return router


def _optimal_plan() -> Any:
    """The planner's ``optimal_xanes_imaging`` plan."""
    from xbeam_bluesky.plans.optimal import optimal_xanes_imaging

    return optimal_xanes_imaging


def banner(namespace: dict[str, Any]) -> str:
    """A few lines saying what is connected and where data go (printed by the IPython profile)."""
    from ophyd_async.core import Device

    storage = namespace["storage"]
    where = storage.uri.split("?")[0]  # never show an API key
    devices = ", ".join(
        f"{name} ({type(value).__name__})" for name, value in namespace.items() if isinstance(value, Device)
    )
    if namespace.get("publisher") is not None:
        live = f"published to the 0MQ proxy {namespace['publisher'].address} for `xbeam analysis-server`"
    elif namespace.get("live_router") is not None:
        from xbeam_bluesky.callbacks.remote import LIVE_ANALYSES

        live = "in this process: " + "; ".join(
            f"{purpose} → {', '.join(p.split(':')[1] for p in paths) or 'none'}"
            for purpose, paths in LIVE_ANALYSES.items()
        )
    else:
        live = "off"
    plans = [
        n for n in ("xanes_imaging", "optimal_xanes_imaging", "xrd_powder") if namespace.get(n) is not None
    ]
    return "\n".join(
        [
            f"xbeam-bluesky — mode {namespace['mode']!r}",
            f"  devices:  {devices}",
            f"  plans:    {', '.join(plans)}  (RE(plan(...)); dry run: summarize_plan(plan(...)))",
            f"  data:     tiled {where}; detector files in {storage.detector_dir}",
            f"  analysis: {live}",
        ]
    )
