"""``xbeam plan-energies`` and ``xbeam plan-tiles``: design energy points and stage tiles before a run."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from xbeam_bluesky._outputs import atomic_output, check_output
from xbeam_bluesky.cli import CLIError
from xbeam_bluesky.cli._args import number
from xbeam_bluesky.cli.planning_map import plan_map_energies, register_map_options

logger = logging.getLogger(__name__)


def _floats(text: str, option: str, count: tuple[int, ...], sep: str) -> list[float]:
    parts = text.split(sep)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in count or not values:
        shape = " or ".join(sep.join(["N"] * c) for c in count)
        raise CLIError(f"{option} {text!r}: expected {shape} (numbers)")
    return values


#: Largest incident rate accepted by ``--i0`` (counts/s per pixel): far above any detector pixel's count rate.
MAX_I0_COUNTS_PER_S = 1e9


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plan-energies`` and ``plan-tiles``."""
    p = subparsers.add_parser(
        "plan-energies",
        help="Bayesian-optimal XANES energy points from a reference library",
        description="Design where (and how long) to measure a XANES spectrum: GP prior from a reference library, "
        "photon-counting noise, greedy A-/D-optimal selection per unit of beam time incl. monochromator overheads.",
    )
    p.add_argument(
        "--library", type=Path, help="directory of reference spectra (default: bundled library of --edge)"
    )
    p.add_argument("--edge", default="Fe-K", help="absorption edge, e.g. Fe-K (default %(default)s)")
    p.add_argument(
        "--e-range", metavar="START:STOP:STEP", help="candidate grid in eV (default E0-35.8:E0+69.2:0.1)"
    )
    p.add_argument(
        "--criterion", choices=("A", "D"), default="A", help="A: expected squared error; D: information"
    )
    stop = p.add_mutually_exclusive_group(required=True)
    stop.add_argument(
        "--n-points", type=int, metavar="N", help="number of picks (a repeat = one more dwell unit)"
    )
    stop.add_argument(
        "--time-budget",
        type=number(float, 0, low_open=True),
        metavar="SECONDS",
        help="total scan time incl. overheads (s)",
    )
    stop.add_argument(
        "--target-rmse", type=float, metavar="X", help="expected RMSE to reach (normalized units)"
    )
    stop.add_argument(
        "--target-separation",
        type=float,
        metavar="D",
        help="--objective map: separation D every phase pair must reach",
    )
    p.add_argument(
        "--i0",
        type=number(float, 0, MAX_I0_COUNTS_PER_S, low_open=True),
        default=1.862e5,
        metavar="COUNTS_PER_S",
        help="incident counts per second per detector pixel (default %(default)g, the sim camera)",
    )
    p.add_argument(
        "--dwell",
        type=number(float, 0, low_open=True),
        default=0.05,
        metavar="S",
        help="dwell of one pick, s (default %(default)s)",
    )
    p.add_argument(
        "--overhead-s",
        type=number(float, 0),
        default=0.11,
        metavar="S",
        help="fixed cost per energy point: settle + readout, s (default %(default)s)",
    )
    p.add_argument(
        "--mono-speed",
        type=float,
        default=20.0,
        metavar="EV_PER_S",
        help="monochromator speed, eV/s (default %(default)s; 0 = moves cost only --overhead-s)",
    )
    p.add_argument("--mu-t-pre-edge", type=float, default=0.5, help="sample absorbance below the edge")
    p.add_argument("--edge-jump", type=float, default=1.0, help="sample absorbance edge step")
    p.add_argument(
        "--gain", type=float, default=9.31, help="detector variance per count (default %(default)s)"
    )
    p.add_argument(
        "--offset", type=float, default=-63.0, help="detector constant variance (default %(default)s)"
    )
    p.add_argument(
        "--length-scale", type=float, metavar="EV", help="fix the prior length scale (default: fit)"
    )
    p.add_argument(
        "--kernel",
        choices=("warped", "stationary"),
        default="warped",
        help="prior kernel: RBF in a warped energy (default, fitted) or METHODS' stationary RBF",
    )
    p.add_argument(
        "--align",
        choices=("calibration", "edge", "none"),
        default="calibration",
        help="library energy alignment (default %(default)s: the library's calibration.json)",
    )
    p.add_argument("--per-pick", action="store_true", help="optimise gain per pick instead of per second")
    p.add_argument(
        "--plot", type=Path, metavar="design.png", help="draw prior ± std, chosen points, dwell, error"
    )
    p.add_argument("--out", type=Path, required=True, metavar="design.json", help="output JSON")
    register_map_options(p)
    p.set_defaults(func=plan_energies)

    t = subparsers.add_parser(
        "plan-tiles",
        help="stage tiles covering a sample region, in serpentine order",
        description="Tiles of the camera field of view covering a rectangle or polygon, with overlap, stage-limit "
        "checks and (with --design) the total beam-time estimate of the imaging run.",
    )
    t.add_argument("--x", metavar="START:STOP", help="region x range, mm")
    t.add_argument("--y", metavar="START:STOP", help="region y range, mm")
    t.add_argument("--polygon", metavar="X,Y;X,Y;...", help="polygon region instead of --x/--y, mm")
    t.add_argument("--fov-px", required=True, metavar="W,H", help="camera field of view, pixels")
    t.add_argument(
        "--pixel-um",
        required=True,
        type=number(float, 0, low_open=True),
        metavar="P",
        help="pixel size at the sample, µm",
    )
    t.add_argument(
        "--overlap", type=float, metavar="F", help="overlap fraction (default from --repeatability-um)"
    )
    t.add_argument("--repeatability-um", type=float, default=1.0, help="stage repeatability, µm (default 1)")
    t.add_argument("--x-limits", metavar="LO:HI", help="stage x travel, mm")
    t.add_argument("--y-limits", metavar="LO:HI", help="stage y travel, mm")
    t.add_argument("--design", type=Path, metavar="design.json", help="energy design for the time estimate")
    t.add_argument("--readout-s", type=number(float, 0), default=0.01, help="camera readout per frame, s")
    t.add_argument(
        "--tile-move-s", type=number(float, 0), default=0.3, help="stage move + settle between tiles, s"
    )
    t.add_argument("--n-flats", type=number(int, 0), default=1, help="flat fields per energy")
    t.add_argument("--out", type=Path, required=True, metavar="tiles.json", help="output JSON")
    t.set_defaults(func=plan_tiles)


def _candidate_grid(args: argparse.Namespace, e0: float):
    from xbeam_bluesky.planning import candidate_grid, default_range

    if args.e_range is None:
        start, stop, step = default_range(e0)
    else:
        start, stop, step = _floats(args.e_range, "--e-range", (3,), ":")
    if not (step > 0 and stop > start):
        raise CLIError(f"--e-range {args.e_range!r}: expected START < STOP and STEP > 0 (eV)")
    n = round((stop - start) / step) + 1
    if n < 3 or n > 20000:
        raise CLIError(f"--e-range {args.e_range!r} gives {n} candidates; expected 3 to 20000")
    return candidate_grid(start, stop, step)


def _kernel_text(prior) -> str:
    """One-line description of the prior's kernel for the console."""
    if prior.warp is None:
        return f"stationary kernel, length scale {prior.length_scale_eV:.2f} eV"
    w = prior.warp
    return (
        f"warped kernel, length scale {prior.length_scale_eV:.2f} eV at {w.center_eV:.1f} eV growing as "
        f"sqrt(1 + |E - E1| / {w.scale_eV:.1f} eV)"
    )


def plan_energies(args: argparse.Namespace) -> int:
    """Handler of ``xbeam plan-energies``."""
    import math

    from xbeam_bluesky.planning import (
        ScanTimeModel,
        TransmissionNoise,
        design_energies,
        plot_design,
        prior_from_library,
    )
    from xbeam_bluesky.spectra import PhotonNoiseModel, bundled_library_dir, edge_energy

    args.out = check_output(args.out)
    if args.plot is not None:
        args.plot = check_output(args.plot, option="--plot")
    e0 = edge_energy(args.edge)
    grid = _candidate_grid(args, e0)
    if args.objective == "map":
        return plan_map_energies(args, grid, e0)
    if args.target_separation is not None:
        raise CLIError(
            "--target-separation is for --objective map; the spectrum objective stops at --target-rmse"
        )
    directory = args.library
    if directory is None and args.edge.lower() != "fe-k":
        directory = bundled_library_dir(args.edge)
    if args.n_points is not None and args.n_points < 2:
        raise CLIError(f"--n-points {args.n_points}: expected at least 2 (the two end points)")
    if args.mono_speed < 0:
        raise CLIError(f"--mono-speed {args.mono_speed}: expected >= 0 eV/s")
    prior = prior_from_library(
        directory, grid, e0_ref_eV=e0, align=args.align, length_scale_eV=args.length_scale, kernel=args.kernel
    )
    noise = TransmissionNoise(
        i0_counts_per_s=args.i0,
        mu_t_pre_edge=args.mu_t_pre_edge,
        edge_jump=args.edge_jump,
        detector=PhotonNoiseModel(gain=args.gain, offset=args.offset),
    )
    time_model = ScanTimeModel(
        dwell_s=args.dwell,
        settle_s=args.overhead_s,
        speed_eV_per_s=args.mono_speed if args.mono_speed > 0 else math.inf,
    )
    design = design_energies(
        prior,
        noise,
        time_model,
        criterion=args.criterion,
        per_time=not args.per_pick,
        n_points=args.n_points,
        time_budget_s=args.time_budget,
        target_rmse=args.target_rmse,
    )
    design.extra["edge"] = args.edge
    exchange = design.extra.get("exchange", {})
    greedy_note = (
        f"greedy alone {exchange['expected_rmse_before']:.4f}, "
        if exchange.get("stop_reason") != "skipped" and exchange
        else ""
    )
    with atomic_output(args.out) as tmp:
        design.save(tmp)
    print(
        f"{design.energies_eV.size} energies ({design.n_picks} picks of {args.dwell} s), total {design.total_time_s:.1f} s, "
        f"expected RMSE {design.expected_rmse:.4f} ({greedy_note}prior {design.prior_rmse:.4f}), "
        f"{_kernel_text(prior)} from {len(prior.names)} spectra, "
        f"computed in {design.compute_s:.2f} s -> {args.out}"
    )
    if design.stop_reason == "max_picks":
        print(
            f"note: stopped at the pick limit before reaching the target (stop_reason {design.stop_reason})"
        )
    if args.plot is not None:
        print(f"plot -> {plot_design(design, prior, args.plot)}")
    return 0


def plan_tiles(args: argparse.Namespace) -> int:
    """Handler of ``xbeam plan-tiles``."""
    from xbeam_bluesky.planning import ScanTimeModel, estimate_imaging_time, load_design
    from xbeam_bluesky.planning import plan_tiles as make_tiles

    args.out = check_output(args.out, [args.design] if args.design is not None else [])
    fov = _floats(args.fov_px, "--fov-px", (2,), ",")
    if any(v != int(v) for v in fov):
        raise CLIError(f"--fov-px {args.fov_px!r}: expected two whole pixel counts W,H")
    polygon = None
    if args.polygon is not None and (args.x is not None or args.y is not None):
        raise CLIError("--polygon and --x/--y both give the region; pass one of them")
    if args.polygon is not None:
        polygon = [_floats(v, "--polygon vertex", (2,), ",") for v in args.polygon.split(";") if v.strip()]
    elif args.x is None or args.y is None:
        raise CLIError("give the region as --x START:STOP --y START:STOP, or --polygon X,Y;X,Y;...")
    limits = {}
    for axis, text in (("x", args.x_limits), ("y", args.y_limits)):
        if text is not None:
            limits[axis] = tuple(_floats(text, f"--{axis}-limits", (2,), ":"))
    plan = make_tiles(
        (int(fov[0]), int(fov[1])),
        args.pixel_um,
        x_mm=None if polygon is not None else tuple(_floats(args.x, "--x", (2,), ":")),
        y_mm=None if polygon is not None else tuple(_floats(args.y, "--y", (2,), ":")),
        polygon_mm=polygon,
        overlap=args.overlap,
        repeatability_um=args.repeatability_um,
        stage_limits_mm=limits or None,
    )
    out = plan.to_dict()
    message = f"{plan.n_tiles} tiles of {plan.size_mm[0]:.3f} × {plan.size_mm[1]:.3f} mm, overlap {plan.overlap:.3f}"
    if args.design is not None:
        design = load_design(args.design)
        mono = ScanTimeModel.from_dict(design["time_model"]) if "time_model" in design else None
        estimate = estimate_imaging_time(
            design["energies_eV"],
            design["dwell_s"],
            plan.n_tiles,
            readout_s=args.readout_s,
            mono=mono,
            tile_move_s=args.tile_move_s,
            n_flats=args.n_flats,
        )
        out["time_estimate"] = {"design": str(args.design), **estimate}
        message += f"; estimated run time {estimate['total_s']:.0f} s ({estimate['total_s'] / 3600:.2f} h)"
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(out, indent=1))
    print(f"{message} -> {args.out}")
    return 0
