"""``xbeam refine``: Rietveld refinement of a powder pattern against one or more CIF phases."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xbeam_bluesky._outputs import atomic_output, check_output
from xbeam_bluesky.cli import CLIError
from xbeam_bluesky.cli._refine_inputs import (
    chosen_strategy,
    default_background,
    load_inputs,
    occupancy_request,
)
from xbeam_bluesky.cli.refine_auto import add_auto_arguments, run_auto


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``refine`` sub-command."""
    p = subparsers.add_parser(
        "refine",
        help="Rietveld refinement of a powder pattern",
        description=(
            "Rietveld refinement (own engine, GSAS-II conventions). Without --strategy runs the default "
            "sequence: background+scale -> cell+displacement -> profile X Y -> atoms -> U V W, the background "
            "grown while Hamilton's test accepts more terms and preferred orientation tried when the residual "
            "asks for it; result.json records the stages kept."
        ),
    )
    p.add_argument(
        "pattern",
        nargs="+",
        help="pattern file (GSAS STD/ESD/ALT/FXYE, xy/xye/csv, FullProf .dat, Bruker UXD/RAW); with "
        "--sequential several files or globs ('series/*.fxye')",
    )
    p.add_argument(
        "--cif", type=Path, action="append", required=True, help="phase CIF (repeat for several phases)"
    )
    p.add_argument("--instrument", type=Path, help="GSAS .PRM or GSAS-II .instprm (default: lab Cu Kα)")
    p.add_argument(
        "--range", dest="fit_range", help="2θ range MIN:MAX (deg) of the final fit (default: whole pattern)"
    )
    p.add_argument("--strategy", type=Path, help="strategy JSON to replay (see docs/rietveld.md)")
    p.add_argument(
        "--plot",
        type=Path,
        help="save the fit plot (observed, calculated, difference, ticks); with --sequential the parametric "
        "plot (Rwp, cells with esds, weight fractions versus the series)",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="result JSON file (--sequential: the series table)"
    )
    p.add_argument(
        "--background-peak",
        action="append",
        default=[],
        metavar="POS:FWHM",
        help="add a broad pseudo-Voigt background hump starting at POS with FWHM (deg 2θ) to the first stage's "
        "background (amorphous scattering, capillary); repeat for several",
    )
    p.add_argument(
        "--occupancy",
        action="append",
        default=[],
        metavar="[PHASE:]SITE,SITE",
        help="refine these sites' occupancies from the atoms stage on (default sequence and --auto); atoms of "
        "one shared site keep their occupancy sum, e.g. La1,Sr1; repeat per phase",
    )
    p.add_argument(
        "--geometry",
        choices=("bragg_brentano", "debye_scherrer"),
        help="override the geometry inferred from the instrument file",
    )
    p.add_argument("--mu-r", type=float, help="capillary μR (debye_scherrer), refinable as 'absorption'")
    s = p.add_argument_group("sequential refinement of a series")
    s.add_argument(
        "--sequential",
        action="store_true",
        help="refine the patterns in series order, each starting from the previous result; the strategy "
        "(given, default, or --auto's search on the first pattern) is reused",
    )
    s.add_argument(
        "--series-key",
        help="order by the value after KEY in each file's header, e.g. 'Temp (K)' (default: file name order)",
    )
    s.add_argument(
        "--series-values", help="comma-separated series values, one per pattern, in the order given"
    )
    s.add_argument(
        "--degrade-factor",
        type=float,
        default=1.3,
        help="redo a pattern from the CIF model (re-search with --auto) when its Rwp exceeds this factor × the "
        "previous pattern's (default 1.3)",
    )
    add_auto_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.sequential:
        from xbeam_bluesky.cli.refine_sequential import run_sequential

        return run_sequential(args)
    if len(args.pattern) != 1:
        raise CLIError(f"{len(args.pattern)} patterns given: refine one, or a series with --sequential")
    args.pattern = Path(args.pattern[0])
    if args.auto:
        return run_auto(args)
    from xbeam_bluesky.rietveld import Refinement, Strategy, plot_fit

    check_output(args.out, [args.pattern, *args.cif, *(p for p in (args.instrument, args.strategy) if p)])
    fit_range, pattern, phases, instrument = load_inputs(args)
    refinement = Refinement(pattern, phases, instrument, fit_range=fit_range)
    if args.strategy is None:
        # the grown default sequence; the strategy it returns (the stages it kept) goes into result.json
        from xbeam_bluesky.rietveld.default_sequence import refine_default

        result, strategy = refine_default(
            refinement, background=default_background(args), occupancy=occupancy_request(args)
        )
    else:
        occupancy_request(args)  # refuses --occupancy with --strategy
        strategy = chosen_strategy(args)
        if fit_range is not None and strategy.stages[-1].range is not None:
            print("xbeam refine: --range overrides the last stage's range", file=sys.stderr)
            stages = list(strategy.stages)
            from dataclasses import replace

            stages[-1] = replace(stages[-1], range=fit_range)
            strategy = Strategy(tuple(stages), strategy.shared_sites)
        result = refinement.run(strategy)
    out = result.to_dict()
    out["pattern"] = str(args.pattern)
    out["cifs"] = [str(c) for c in args.cif]
    out["instrument_defaults_used"] = args.instrument is None
    out["strategy"] = strategy.to_dict()
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(out, indent=1))
    if args.plot:
        plot_fit(result, args.plot)
    summary = ", ".join(
        f"{p['name']} a={p['lattice']['a']:.5f} b={p['lattice']['b']:.5f} c={p['lattice']['c']:.5f}"
        for p in out["phases"]
    )
    print(
        f"xbeam refine: {result.status}: Rwp {result.rwp:.2f} %, Rp {result.rp:.2f} %, GOF {result.gof:.2f}, "
        f"{result.n_reflections} reflections, {result.n_points} points, {result.wall_s:.2f} s; {summary}; "
        f"wrote {args.out}"
    )
    if not result.ok:
        print(f"xbeam refine: refinement failed: {result.message}", file=sys.stderr)
        return 1
    return 0
