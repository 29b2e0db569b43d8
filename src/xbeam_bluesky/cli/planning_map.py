"""``xbeam plan-energies --objective map``: energies and dwell designed for the phase map."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from xbeam_bluesky._outputs import atomic_output
from xbeam_bluesky.cli import CLIError

#: Default thickness range (factors on the sample absorbance) the pairs must be separated at.
DEFAULT_THICKNESS = "1"


def register_map_options(p: argparse.ArgumentParser) -> None:
    """Add the ``--objective`` switch and the map objective's options to ``plan-energies``."""
    from xbeam_bluesky.planning import (
        DEFAULT_MODEL_ERROR,
        DEFAULT_SEPARATION_MODEL_ERROR,
        DEFAULT_TARGET_SEPARATION,
    )

    g = p.add_argument_group("phase-map objective (--objective map)")
    g.add_argument(
        "--objective",
        choices=("spectrum", "map"),
        default="spectrum",
        help="spectrum: A-/D-optimal reconstruction (default); map: separate the candidate phases of the map",
    )
    g.add_argument(
        "--phases", metavar="NAME,...", help="library spectra the map must tell apart (default: all)"
    )
    g.add_argument(
        "--model-error",
        type=float,
        default=DEFAULT_MODEL_ERROR,
        metavar="RMS",
        help="spectra closer than this RMS (normalized units) are one phase (default %(default)s)",
    )
    g.add_argument(
        "--separation-model-error",
        type=float,
        default=DEFAULT_SEPARATION_MODEL_ERROR,
        metavar="E",
        help="model error in the clustering's D, as a fraction of a spectrum's RMS (eps_i = E/sqrt(n energies); "
        "default %(default)s, the clustering's floor; 0 = photon noise only)",
    )
    g.add_argument(
        "--free-ends",
        action="store_true",
        help="start where the candidates differ instead of at the two ends of the range and let the design drop "
        "the ends (saves monochromator travel; the map does not need pre- and post-edge)",
    )
    g.add_argument(
        "--mixtures",
        default="",
        metavar="W,...",
        help="weights of binary mixtures of every two phases to separate from their end members, e.g. 0.5",
    )
    g.add_argument(
        "--thickness",
        default=DEFAULT_THICKNESS,
        metavar="LO:HI",
        help="thickness factors on the absorbance the pairs must be separated at (default %(default)s)",
    )
    g.add_argument(
        "--min-separation",
        type=float,
        default=DEFAULT_TARGET_SEPARATION,
        metavar="D",
        help="with --time-budget: fail (naming the pair and the time needed) if the weakest pair stays below "
        "this D (default %(default)s, the clustering's merge threshold; 0 = accept any)",
    )


def _numbers(text: str, option: str, sep: str) -> list[float]:
    try:
        return [float(v) for v in text.split(sep) if v.strip()]
    except ValueError:
        raise CLIError(f"{option} {text!r}: expected numbers separated by {sep!r}") from None


def plan_map_energies(args: argparse.Namespace, grid, e0: float) -> int:
    """Handler of ``xbeam plan-energies --objective map`` (``grid``: candidate energies, eV)."""
    from xbeam_bluesky.planning import (
        ScanTimeModel,
        TransmissionNoise,
        design_map_energies,
        phase_candidates,
        plot_map_design,
    )
    from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, bundled_library_dir, load_library

    if args.target_rmse is not None:
        raise CLIError(
            "--target-rmse is for --objective spectrum; the map objective stops at --target-separation"
        )
    directory = args.library
    if directory is None and args.edge.lower() != "fe-k":
        directory = bundled_library_dir(args.edge)
    library = aligned_library(load_library(directory), grid, align=args.align, e0_ref=e0)
    names, matrix = list(library.names), library.matrix
    if args.phases:
        wanted = [n.strip() for n in args.phases.split(",") if n.strip()]
        missing = [n for n in wanted if n not in names]
        if missing:
            raise CLIError(
                f"--phases: {', '.join(missing)} not in the library ({directory or 'bundled Fe K'}, spectra covering "
                f"{grid[0]:.1f}-{grid[-1]:.1f} eV: {', '.join(names)})"
            )
        rows = [names.index(n) for n in wanted]
        names, matrix = wanted, matrix[rows]
    thickness = _numbers(args.thickness, "--thickness", ":")
    if len(thickness) not in (1, 2):
        raise CLIError(f"--thickness {args.thickness!r}: expected one factor or LO:HI")
    candidates = phase_candidates(
        matrix,
        names,
        model_error=args.model_error,
        mixtures=tuple(_numbers(args.mixtures, "--mixtures", ",")),
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
    design = design_map_energies(
        candidates,
        grid,
        noise,
        time_model,
        thickness=thickness,
        model_error_rms=args.separation_model_error,
        keep_ends=not args.free_ends,
        n_points=args.n_points,
        time_budget_s=args.time_budget,
        target_separation=args.target_separation
        if args.time_budget is None
        else (args.min_separation if args.min_separation > 0 else None),
    )
    design.extra.update({"edge": args.edge, "library": str(directory) if directory else "bundled Fe-K"})
    with atomic_output(args.out) as tmp:
        design.save(tmp)
    weak = design.weakest_pair
    print(
        f"map design: {design.energies_eV.size} energies ({design.n_picks} picks of {args.dwell} s), total "
        f"{design.total_time_s:.1f} s; {candidates.n_phases} phases, {len(candidates.pairs)} pairs; weakest pair "
        f"{weak['a']} / {weak['b']} at D = {weak['separation']:.2f} (confusion {weak['confusion']:.2g}); "
        f"stop {design.stop_reason}; computed in {design.compute_s:.2f} s -> {args.out}"
    )
    if args.plot is not None:
        print(f"plot -> {plot_map_design(design, candidates, grid, Path(args.plot))}")
    return 0
