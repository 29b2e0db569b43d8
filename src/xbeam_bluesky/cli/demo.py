"""``xbeam demo``: a small simulated beamtime from start to report.

The demo is a list of steps (:data:`DEMO_STEPS`) sharing a :class:`DemoContext`: set up the simulated beamline
and storage, measure a conventional Fe K-edge energy grid over 2×2 tiles (darks, flats per energy), measure one
powder pattern, write a PNG report. Further steps (energy design, live clustering, automatic Rietveld) slot in
by adding ``(name, function)`` entries.
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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="run a small simulated beamtime (XANES imaging over 2x2 tiles + one XRD pattern) and write a report",
        description=(
            "Simulated beamline with a seeded multi-phase Fe phantom: darks, flats per energy and a conventional "
            "Fe K-edge energy grid over tiles, then one powder-diffraction pattern; runs are written to tiled in "
            "the data directory and a PNG report (frames, edge-jump mosaic, XRD pattern) to the report directory."
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
    p.add_argument("--dwell", type=float, default=0.1, help="exposure per frame in s (default 0.1)")
    p.add_argument("--edge-step", type=float, default=1.0, help="energy step over the edge in eV (default 1)")
    p.add_argument("--seed", type=int, default=0, help="phantom and noise seed (default 0)")
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
    energies: list[float] = field(default_factory=list)
    tiles: list[list[float]] = field(default_factory=list)
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


def step_setup(ctx: DemoContext) -> None:
    """Start storage and the simulated beamline (``build_namespace("sim")``, no live analyses)."""
    from xbeam_bluesky.startup import build_namespace
    from xbeam_bluesky.storage import ensure_writable

    args = ctx.args
    ctx.namespace = build_namespace(
        "sim",
        data_dir=args.data_dir,
        live=False,
        publish_to="",
        frame_shape=(args.frame_size, args.frame_size),
        pixel_size_um=args.pixel_um,
        seed=args.seed,
        time_scale=args.time_scale,
    )
    storage = ctx.namespace["storage"]
    ctx.report_dir = ensure_writable(args.report_dir or storage.config.report_dir, "report directory")
    ctx.say(f"data directory: {storage.config.data_dir}")


def _progress(ctx: DemoContext, total: int, label: str) -> Callable[[str, dict], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="frame", disable=ctx.args.no_progress, leave=True)

    def callback(name: str, doc: dict) -> None:
        if name == "event":
            bar.update(1)
        elif name == "stop":
            bar.close()

    return callback


def step_xanes(ctx: DemoContext) -> None:
    """Conventional Fe K-edge grid over N×N adjacent tiles, darks and flats."""
    import numpy as np

    from xbeam_bluesky.planning import conventional_grid
    from xbeam_bluesky.plans import estimate_duration, xanes_imaging

    ns, args = ctx.namespace, ctx.args
    ctx.energies = [
        float(e)
        for e in conventional_grid(
            7112.0, 7060.0, 7220.0, pre_step_eV=10.0, edge_from_eV=-12.0, edge_to_eV=28.0,
            edge_step_eV=args.edge_step, k_step_per_A=0.15,
        )
    ]  # fmt: skip
    fov_mm = args.frame_size * args.pixel_um / 1000.0
    offsets = (np.arange(args.tiles) - (args.tiles - 1) / 2) * fov_mm
    ctx.tiles = [[float(x), float(y)] for y in offsets for x in offsets]
    camera, mono, stage, shutter = ns["camera"], ns["mono"], ns["stage"], ns["shutter"]
    n_darks, n_flats = 5, 2

    def plan():
        return xanes_imaging(
            camera, mono, stage, ctx.energies, ctx.tiles, args.dwell, shutter=shutter, n_darks=n_darks,
            n_flats=n_flats, design={"method": "conventional", "edge_step_eV": args.edge_step},
        )  # fmt: skip

    estimate = estimate_duration(plan())
    ctx.say(
        f"XANES imaging: {len(ctx.energies)} energies {ctx.energies[0]:.0f}-{ctx.energies[-1]:.0f} eV × "
        f"{len(ctx.tiles)} tiles of {args.frame_size}² px ({fov_mm:.2f} mm); modelled beamtime "
        f"{estimate.total_s / 60:.1f} min (motion {estimate.motion_s:.0f} s, exposure {estimate.exposure_s:.0f} s)"
    )
    total = n_darks + len(ctx.energies) * (n_flats + len(ctx.tiles))
    RE = ns["RE"]
    token = RE.subscribe(_progress(ctx, total, "xanes_imaging"))
    try:
        (ctx.uids["xanes_imaging"],) = RE(plan())
    finally:
        RE.unsubscribe(token)


def step_xrd(ctx: DemoContext) -> None:
    """One powder pattern of the simulated sample."""
    from xbeam_bluesky.plans import xrd_powder

    ns = ctx.namespace
    phases = list(ns["beamline"].config.xrd_phases)
    RE = ns["RE"]
    token = RE.subscribe(_progress(ctx, 1, "xrd_powder"))
    try:
        (ctx.uids["xrd"],) = RE(xrd_powder(ns["xrd"], 0.01, phases, sample="simulated powder"))
    finally:
        RE.unsubscribe(token)


def step_report(ctx: DemoContext) -> None:
    """PNG report: raw frames across the edge, flat, edge-jump mosaic, XRD pattern."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from xbeam_bluesky.spectra import absorbance_from_counts
    from xbeam_bluesky.storage import dark_mean, flat_means, tile_positions, tile_stack, xrd_pattern

    client = ctx.namespace["tiled_client"]
    run = client[ctx.uids["xanes_imaging"]]
    e0 = run.metadata["start"]["e0"]
    stack = tile_stack(run, 0)
    picks = [int(np.argmin(np.abs(stack.energies_eV - e))) for e in (e0 - 30, e0 + 5, e0 + 60)]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    for ax, k in zip(axes[0], picks, strict=True):
        im = ax.imshow(stack.frames[k], cmap="gray", origin="lower")
        ax.set_title(f"tile 0, {stack.energies_eV[k]:.1f} eV (raw counts)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    flat = flat_means(run)[int(stack.energy_index[picks[1]])]
    im = axes[1, 0].imshow(flat, cmap="viridis", origin="lower")
    axes[1, 0].set_title("flat field (sample out)")
    fig.colorbar(im, ax=axes[1, 0], shrink=0.8)

    positions = tile_positions(run)
    start = run.metadata["start"]
    pixel_mm = start["tiles"]["pixel_size_um"] / 1000.0
    ny, nx = start["tiles"]["frame_shape"]
    cols = np.rint((positions[:, 0] - positions[:, 0].min()) / pixel_mm).astype(int)
    rows = np.rint((positions[:, 1] - positions[:, 1].min()) / pixel_mm).astype(int)
    mosaic = np.full((rows.max() + ny, cols.max() + nx), np.nan, dtype=np.float32)
    flats, dark = flat_means(run), dark_mean(run)
    energies = np.asarray(start["energies"])
    pre = np.flatnonzero(energies < e0 - 20)
    post = np.flatnonzero(energies > e0 + 30)
    for it in range(len(positions)):
        tile = tile_stack(run, it)
        mu = {
            int(ie): absorbance_from_counts(f, flats[int(ie)], dark)
            for f, ie in zip(tile.frames, tile.energy_index, strict=True)
        }
        jump = np.mean([mu[i] for i in post], axis=0) - np.mean([mu[i] for i in pre], axis=0)
        mosaic[rows[it] : rows[it] + ny, cols[it] : cols[it] + nx] = jump
    x0, y0 = positions[:, 0].min() - nx * pixel_mm / 2, positions[:, 1].min() - ny * pixel_mm / 2
    extent = (x0, x0 + mosaic.shape[1] * pixel_mm, y0, y0 + mosaic.shape[0] * pixel_mm)
    im = axes[1, 1].imshow(mosaic, cmap="magma", origin="lower", extent=extent)
    axes[1, 1].set_title(f"edge-jump mosaic, {len(positions)} tiles (Δμt)")
    axes[1, 1].set_xlabel("stage x (mm)")
    axes[1, 1].set_ylabel("stage y (mm)")
    fig.colorbar(im, ax=axes[1, 1], shrink=0.8)

    pattern = xrd_pattern(client[ctx.uids["xrd"]])
    axes[1, 2].plot(pattern.two_theta_deg, pattern.counts, lw=0.7)
    axes[1, 2].set_xlabel("2θ (degrees)")
    axes[1, 2].set_ylabel("counts")
    axes[1, 2].set_title(f"XRD: {', '.join(pattern.phases)} ({pattern.exposure_s:g} s)")
    fig.suptitle(
        f"xbeam demo — XANES imaging run {ctx.uids['xanes_imaging'][:8]}, XRD run {ctx.uids['xrd'][:8]}"
    )
    fig.tight_layout()
    assert ctx.report_dir is not None
    ctx.report_path = (
        ctx.report_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{ctx.uids['xanes_imaging'][:8]}.png"
    )
    fig.savefig(ctx.report_path, dpi=90)
    plt.close(fig)


#: The demo, in order; later features insert their own ``(name, step)`` entries.
DEMO_STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("setup", step_setup),
    ("xanes_imaging", step_xanes),
    ("xrd", step_xrd),
    ("report", step_report),
]


def run_demo(args: argparse.Namespace, steps: list[tuple[str, Callable[[DemoContext], None]]] | None = None):
    """Run the demo steps and return the :class:`DemoContext` (storage closed)."""
    _check_args(args)
    ctx = DemoContext(args)
    try:
        for name, step in steps or DEMO_STEPS:
            t0 = time.perf_counter()
            step(ctx)
            ctx.timings[name] = time.perf_counter() - t0
    finally:
        storage = ctx.namespace.get("storage")
        if storage is not None:
            storage.close()
    return ctx


def _run(args: argparse.Namespace) -> int:
    if not args.verbose:
        for noisy in ("httpx", "tiled", "bluesky", "ophyd_async"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx = run_demo(args)
    storage = ctx.namespace["storage"]
    ctx.say("")
    for name, uid in ctx.uids.items():
        ctx.say(f"run {name}: {uid}")
    ctx.say(f"catalog: {storage.config.data_dir / 'tiled'} (detector files in {storage.detector_dir})")
    ctx.say(f"report: {ctx.report_path}")
    ctx.say(f"browse the runs: xbeam serve --data-dir {storage.config.data_dir}")
    ctx.say("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items()))
    return 0
