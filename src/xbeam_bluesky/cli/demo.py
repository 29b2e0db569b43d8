"""``xbeam demo``: a small simulated beamtime from energy design to analysed results and a report.

The demo is a list of steps (:data:`DEMO_STEPS`) sharing a :class:`DemoContext`:

1. set up the simulated beamline and storage (``startup.build_namespace("sim")``) and subscribe the registered
   live analyses (:data:`xbeam_bluesky.callbacks.remote.LIVE_ANALYSES`, routed on the run's ``purpose``);
2. design the Fe K-edge energies with the planner at the beam time of a conventional imaging grid and measure
   them over N×N tiles with darks and flats (``optimal_xanes_imaging``); live clustering follows the run and
   writes its cluster maps to tiled, linked to the raw run;
3. measure one powder pattern (``xrd_powder``); automatic Rietveld refinement follows it and writes the fit to
   tiled;
4. wait for both analyses, print their results and write a one-page PNG report (:mod:`.demo_report`).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds to wait for a live analysis to finish before the demo reports it as still running.
ANALYSIS_TIMEOUT_S = 900.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="run a small simulated beamtime (designed XANES imaging, live clustering, XRD + auto-Rietveld) "
        "and write a report",
        description=(
            "Simulated beamline with a seeded multi-phase Fe phantom: the planner designs the Fe K-edge energies "
            "(at the beam time of a conventional grid), they are measured over N×N tiles with darks and flats "
            "while live clustering maps the phases; then one powder pattern is measured and refined "
            "automatically. Runs and analysis results go to tiled in the data directory, a PNG report (frames, "
            "edge-jump mosaic, cluster mosaic, energy design, XRD fit) to the report directory."
        ),
    )
    p.add_argument(
        "--data-dir", type=Path, help="data directory (default: $XBEAM_DATA_DIR or the per-user one)"
    )
    p.add_argument(
        "--report-dir", type=Path, help="where to write the PNG report (default: DATA_DIR/reports)"
    )
    p.add_argument("--frame-size", type=int, default=256, help="camera frame size in pixels (default 256)")
    p.add_argument("--pixel-um", type=float, default=4.0, help="pixel size at the sample in µm (default 4)")
    p.add_argument("--tiles", type=int, default=2, help="N for an N×N mosaic of tiles (default 2)")
    p.add_argument(
        "--dwell", type=float, default=0.2, help="dwell unit of the design (one pick), s (default 0.2)"
    )
    p.add_argument(
        "--edge-step",
        type=float,
        default=1.0,
        help="edge step of the conventional grid the design is compared with, eV (default 1)",
    )
    p.add_argument("--trials", type=int, default=16, help="auto-Rietveld strategy-search trials (default 16)")
    p.add_argument(
        "--xrd-exposure", type=float, default=1.0, help="exposure of the powder pattern, s (default 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="phantom, noise and search seed (default 0)")
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.0,
        help="fraction of the modelled motion/exposure time actually waited (default 0: as fast as possible)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


@dataclass
class DemoContext:
    """State shared by the demo steps."""

    args: argparse.Namespace
    namespace: dict[str, Any] = field(default_factory=dict)
    report_dir: Path | None = None
    uids: dict[str, str] = field(default_factory=dict)
    tiles: list[list[float]] = field(default_factory=list)
    live: list[Any] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def say(self, text: str) -> None:
        """Print a line for the user."""
        print(text, flush=True)


def _check_args(args: argparse.Namespace) -> None:
    from xbeam_bluesky.cli import CLIError

    if not 16 <= args.frame_size <= 4096:
        raise CLIError(f"--frame-size {args.frame_size}: expected 16 to 4096 pixels")
    if not 1 <= args.tiles <= 8:
        raise CLIError(f"--tiles {args.tiles}: expected 1 to 8")
    if not args.dwell > 0:
        raise CLIError(f"--dwell {args.dwell}: expected a positive exposure in s")
    if not args.edge_step > 0:
        raise CLIError(f"--edge-step {args.edge_step}: expected a positive step in eV")
    if not args.pixel_um > 0:
        raise CLIError(f"--pixel-um {args.pixel_um}: expected a positive size in µm")
    if args.time_scale < 0:
        raise CLIError(f"--time-scale {args.time_scale}: expected ≥ 0")
    if not args.trials >= 2:
        raise CLIError(f"--trials {args.trials}: expected at least 2")
    if not args.xrd_exposure > 0:
        raise CLIError(f"--xrd-exposure {args.xrd_exposure}: expected a positive exposure in s")


def step_setup(ctx: DemoContext) -> None:
    """Storage, the simulated beamline, and the registered live analyses (demo-sized Rietveld budget)."""
    from xbeam_bluesky.callbacks.remote import LiveContext, live_router, resolve_factories
    from xbeam_bluesky.startup import build_namespace
    from xbeam_bluesky.storage import ensure_writable

    args = ctx.args
    ctx.namespace = build_namespace(
        "sim",
        data_dir=args.data_dir,
        live=False,  # subscribed below with the demo's trial budget on top of the config's [live.*] options
        publish_to="",
        frame_shape=(args.frame_size, args.frame_size),
        pixel_size_um=args.pixel_um,
        seed=args.seed,
        time_scale=args.time_scale,
    )
    storage = ctx.namespace["storage"]
    ctx.report_dir = ensure_writable(args.report_dir or storage.config.report_dir, "report directory")
    options = {k: dict(v) for k, v in (storage.config.live or {}).items()}
    options["rietveld"] = {**options.get("rietveld", {}), "n_trials": args.trials, "seed": args.seed}

    def keep(factory: Callable[[LiveContext], Any]) -> Callable[[LiveContext], Any]:
        def make(context: LiveContext) -> Any:
            callback = factory(context)
            ctx.live.append(callback)
            return callback

        make.__qualname__ = getattr(factory, "__qualname__", repr(factory))
        return make

    factories = {purpose: [keep(f) for f in fs] for purpose, fs in resolve_factories().items()}
    router = live_router(LiveContext(results=storage.client, options=options), factories)
    ctx.namespace["RE"].subscribe(router)
    ctx.namespace["live_router"] = router
    ctx.say(f"data directory: {storage.config.data_dir}")


def _progress(ctx: DemoContext, label: str, frames_of: Callable[[dict], int]) -> Callable[[str, dict], None]:
    """A tqdm bar over the frames of one run (``frames_of(start)`` of them; baseline readings not counted)."""
    from tqdm import tqdm

    bar: list[Any] = []
    baseline: set[str] = set()

    def callback(name: str, doc: dict) -> None:
        if name == "start":
            bar.append(tqdm(total=frames_of(doc), desc=label, unit="frame", disable=ctx.args.no_progress))
        elif name == "descriptor" and doc.get("name") == "baseline":
            baseline.add(doc["uid"])
        elif name == "event" and bar and doc.get("descriptor") not in baseline:
            bar[0].update(1)
        elif name == "stop" and bar:
            bar[0].close()

    return callback


def _tiles(args: argparse.Namespace) -> list[list[float]]:
    import numpy as np

    fov_mm = args.frame_size * args.pixel_um / 1000.0
    offsets = (np.arange(args.tiles) - (args.tiles - 1) / 2) * fov_mm
    return [[float(x), float(y)] for y in offsets for x in offsets]


def step_xanes(ctx: DemoContext) -> None:
    """Planner-designed energies at the beam time of a conventional grid, over N×N tiles with darks and flats."""
    from xbeam_bluesky.cli.demo_report import E0_EV, conventional_baseline
    from xbeam_bluesky.documents import n_tiles, start_energies
    from xbeam_bluesky.planning import conventional_expected_rmse
    from xbeam_bluesky.plans import estimate_duration, xanes_imaging
    from xbeam_bluesky.storage import start_doc

    ns, args = ctx.namespace, ctx.args
    camera, mono, stage, shutter = ns["camera"], ns["mono"], ns["stage"], ns["shutter"]
    ctx.tiles = _tiles(args)
    n_darks, n_flats = 5, 2
    conv_energies = conventional_baseline(args.edge_step)
    conv_estimate = estimate_duration(
        xanes_imaging(camera, mono, stage, conv_energies, ctx.tiles, args.dwell, shutter=shutter,
                      n_darks=n_darks, n_flats=n_flats)
    )  # fmt: skip
    budget = conv_estimate.total_s - conv_estimate.overhead_s
    ctx.say(
        f"conventional grid: {len(conv_energies)} energies (edge step {args.edge_step:g} eV, {args.dwell:g} s "
        f"each) × {len(ctx.tiles)} tiles would take {budget / 60:.1f} min of beam time; designing energies for "
        "the same time"
    )
    plan = ns["optimal_xanes_imaging"](
        camera, mono, stage, tiles=ctx.tiles, time_budget_s=budget, dwell=args.dwell, shutter=shutter,
        n_darks=n_darks, n_flats=n_flats,
    )  # fmt: skip

    def frames(start: dict) -> int:
        return n_darks + len(start_energies(start)) * (n_flats + n_tiles(start))

    RE = ns["RE"]
    token = RE.subscribe(_progress(ctx, "xanes_imaging", frames))
    try:
        (ctx.uids["xanes_imaging"],) = RE(plan)
    finally:
        RE.unsubscribe(token)
    start = start_doc(ns["tiled_client"][ctx.uids["xanes_imaging"]])
    design = start["design"]
    ctx.comparison = conventional_expected_rmse(design, conv_energies, args.dwell, e0_eV=E0_EV)
    ctx.say(
        f"energy design: {len(design['energies_eV'])} energies, {design['n_picks']} picks of {args.dwell:g} s "
        f"(dwell {min(design['dwell_s']):g}-{max(design['dwell_s']):g} s), run estimated at "
        f"{start['time_estimate']['total_s'] / 60:.1f} min; expected RMSE of the normalized spectrum "
        f"{design['expected_rmse']:.4f} vs {ctx.comparison['expected_rmse']:.4f} for the conventional grid at "
        f"the same beam time ({ctx.comparison['expected_rmse'] / design['expected_rmse']:.1f}× higher)"
    )


def step_xrd(ctx: DemoContext) -> None:
    """One powder pattern of the simulated sample (refined automatically when the run stops)."""
    from xbeam_bluesky.plans import xrd_powder

    ns, args = ctx.namespace, ctx.args
    phases = list(ns["beamline"].config.xrd_phases)
    RE = ns["RE"]
    token = RE.subscribe(_progress(ctx, "xrd_powder", lambda start: 1))
    try:
        (ctx.uids["xrd"],) = RE(xrd_powder(ns["xrd"], args.xrd_exposure, phases, sample="simulated powder"))
    finally:
        RE.unsubscribe(token)


def step_analyses(ctx: DemoContext) -> None:
    """Wait for live clustering and auto-Rietveld, then read their results back from tiled."""
    from xbeam_bluesky.storage import analysis_results

    ctx.say("waiting for the live analyses (clustering, auto-Rietveld) to finish ...")
    deadline = time.monotonic() + ANALYSIS_TIMEOUT_S
    for callback in ctx.live:
        join = getattr(callback, "join", None)
        if join is not None and not join(timeout=max(deadline - time.monotonic(), 1.0)):
            ctx.say(f"  {type(callback).__name__} still running after {ANALYSIS_TIMEOUT_S:.0f} s")
    client = ctx.namespace["tiled_client"]
    for kind, run in (("clustering", "xanes_imaging"), ("rietveld", "xrd")):
        found = analysis_results(client, ctx.uids[run], kind)
        ctx.results[kind] = found[-1] if found else None
        ctx.results[f"{kind}_metadata"] = dict(found[-1].metadata) if found else None


def step_report(ctx: DemoContext) -> None:
    """One-page PNG report (frames, edge-jump mosaic, clusters, design, XRD fit)."""
    from xbeam_bluesky.cli.demo_report import write_report

    assert ctx.report_dir is not None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ctx.report_path = ctx.report_dir / f"demo-{stamp}-{ctx.uids['xanes_imaging'][:8]}.png"
    write_report(
        ctx.report_path,
        ctx.namespace["tiled_client"],
        ctx.uids,
        ctx.results.get("clustering"),
        ctx.results.get("rietveld"),
        ctx.comparison,
    )


#: The demo, in order.
DEMO_STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("setup", step_setup),
    ("xanes_imaging", step_xanes),
    ("xrd", step_xrd),
    ("analyses", step_analyses),
    ("report", step_report),
]


def run_demo(args: argparse.Namespace, steps: list[tuple[str, Callable[[DemoContext], None]]] | None = None):
    """Run the demo steps and return the :class:`DemoContext` (live analyses stopped, storage closed)."""
    _check_args(args)
    ctx = DemoContext(args)
    try:
        for name, step in steps or DEMO_STEPS:
            t0 = time.perf_counter()
            step(ctx)
            ctx.timings[name] = time.perf_counter() - t0
    finally:
        for callback in {id(c): c for c in ctx.live}.values():
            close = getattr(callback, "close", None)
            if close is not None:
                close()
        storage = ctx.namespace.get("storage")
        if storage is not None:
            storage.close()
    return ctx


def _describe_results(ctx: DemoContext) -> None:
    from xbeam_bluesky.cli.demo_report import lattice_text, short_name

    clustering, rietveld = ctx.results.get("clustering_metadata"), ctx.results.get("rietveld_metadata")
    if clustering is None:
        ctx.say("clustering: no result in tiled (see the log)")
    else:
        md = clustering
        ctx.say(f"result clustering: analysis/{md['result_uid']} (raw_uid {md['raw_uid']})")
        if md.get("status") == "success":
            summary = md["summary"]
            ctx.say(f"  {summary['n_clusters']} clusters (area fractions):")
            for c in summary["clusters"]:
                ctx.say(f"    {c['label']}: {short_name(c['name'])}  {100 * c['area_fraction']:.2f} %")
        else:
            ctx.say(f"  failed: {md.get('error')}")
    if rietveld is None:
        ctx.say("rietveld: no result in tiled (see the log)")
    else:
        md = rietveld
        ctx.say(f"result rietveld: analysis/{md['result_uid']} (raw_uid {md['raw_uid']})")
        if md.get("status") == "success":
            ctx.say(f"  Rwp {md['rwp']:.2f} % after {md['n_trials']} trials ({md['n_failed']} invalid)")
            for phase in md["refinement"]["phases"]:
                ctx.say(f"  {phase.get('name', 'phase')}: {lattice_text(phase)}")
        else:
            ctx.say(f"  failed: {md.get('error')}")


def _run(args: argparse.Namespace) -> int:
    if not args.verbose:
        for noisy in ("httpx", "tiled", "bluesky", "ophyd_async"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx = run_demo(args)
    storage = ctx.namespace["storage"]
    ctx.say("")
    for name, uid in ctx.uids.items():
        ctx.say(f"run {name}: {uid}")
    _describe_results(ctx)
    ctx.say(
        f"catalog: {storage.config.data_dir / 'tiled'} (detector files in {storage.detector_dir}); analysis "
        "results under the catalog's 'analysis' container, e.g. client['analysis'][result_uid]"
    )
    ctx.say(f"report: {ctx.report_path}")
    ctx.say(f"browse the runs: xbeam serve --data-dir {storage.config.data_dir}")
    ctx.say("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items()))
    return 0
