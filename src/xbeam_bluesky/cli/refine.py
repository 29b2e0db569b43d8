"""``xbeam refine``: Rietveld refinement of a powder pattern against one or more CIF phases."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xbeam_bluesky._outputs import atomic_output, check_output
from xbeam_bluesky.cli import CLIError
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


def background_peaks(args: argparse.Namespace) -> tuple[tuple[float, float], ...]:
    """The ``--background-peak POS:FWHM`` humps, deg 2θ."""
    peaks = []
    for text in args.background_peak:
        try:
            pos, fwhm = (float(v) for v in text.split(":"))
        except ValueError as exc:
            raise CLIError(f"--background-peak {text!r}: expected POS:FWHM in deg 2θ, e.g. 5:1.5") from exc
        peaks.append((pos, fwhm))
    return tuple(peaks)


def occupancy_request(args: argparse.Namespace) -> tuple[Any, ...]:
    """The ``--occupancy [PHASE:]SITE,SITE`` requests as :class:`OccupancySpec` entries (one per phase).

    Raises
    ------
    CLIError
        Given with ``--strategy`` (a strategy names its own occupancies), or not a list of site labels.
    """
    from xbeam_bluesky.rietveld import OccupancySpec

    if not args.occupancy:
        return ()
    if args.strategy is not None:
        raise CLIError("--occupancy applies to the default sequence and --auto; a --strategy names its own")
    specs = []
    for text in args.occupancy:
        phase, _, sites = text.rpartition(":")
        labels = tuple(lab.strip() for lab in sites.split(",") if lab.strip())
        try:
            specs.append(OccupancySpec(labels, phase or None))
        except ValueError as exc:
            raise CLIError(f"--occupancy {text!r}: {exc}; expected [PHASE:]SITE,SITE, e.g. La1,Sr1") from exc
    return tuple(specs)


def chosen_strategy(args: argparse.Namespace) -> Any:
    """--strategy (or the fixed default stages with any --occupancy), with any --background-peak added to its
    first stage."""
    from dataclasses import replace

    from xbeam_bluesky.rietveld import BackgroundSpec, Strategy, default_strategy

    if args.strategy:
        strategy = Strategy.from_json(args.strategy)
    else:
        strategy = default_strategy(occupancy=occupancy_request(args))
    peaks = background_peaks(args)
    if not peaks:
        return strategy
    stages = list(strategy.stages)
    i = next((k for k, st in enumerate(stages) if st.background is not None), 0)
    bkg = stages[i].background or BackgroundSpec()
    try:
        stages[i] = replace(stages[i], background=replace(bkg, peaks=bkg.peaks + peaks))
    except ValueError as exc:
        raise CLIError(f"--background-peak: {exc}") from exc
    return Strategy(tuple(stages))


def _default_background(args: argparse.Namespace) -> Any:
    """The default sequence's first-stage background with any --background-peak humps, or None."""
    from xbeam_bluesky.rietveld import BackgroundSpec

    peaks = background_peaks(args)
    if not peaks:
        return None
    try:
        return BackgroundSpec(peaks=peaks)
    except ValueError as exc:
        raise CLIError(f"--background-peak: {exc}") from exc


def _parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError as exc:
        raise CLIError(f"--range {text!r}: expected MIN:MAX in degrees 2θ, e.g. 16:158.4") from exc
    if not 0 < lo < hi < 180:
        raise CLIError(f"--range {text!r}: expected 0 < MIN < MAX < 180")
    return lo, hi


def load_inputs(args: argparse.Namespace) -> tuple[tuple[float, float] | None, Any, list[Any], Any]:
    """Read the pattern, the phases and the instrument named on the command line.

    Returns
    -------
    tuple
        ``(fit_range, pattern, phases, instrument)``; the 2θ range in degrees or None; phases with unique names;
        the lab Cu Kα defaults (announced on stderr) when no ``--instrument`` is given.
    """
    from xbeam_bluesky.rietveld import load_phase, read_pattern

    fit_range = _parse_range(args.fit_range)
    pattern = read_pattern(args.pattern)
    instrument = _instrument(args)
    phases = _phases(args, load_phase)
    return fit_range, pattern, phases, instrument


def _phases(args: argparse.Namespace, load_phase: Any) -> list[Any]:
    """The --cif phases, with unique names."""
    phases = [load_phase(c) for c in args.cif]
    names = [ph.name for ph in phases]
    if len(set(names)) != len(names):
        for i, ph in enumerate(phases):
            ph.name = f"{ph.name}_{i + 1}"
    return phases


def _instrument(args: argparse.Namespace) -> Any:
    """The --instrument file (or the announced lab defaults), with --geometry and --mu-r applied."""
    from xbeam_bluesky.rietveld import Instrument, read_instrument

    if args.instrument is None:
        instrument = Instrument.lab_cu_ka()
        print(
            "xbeam refine: no --instrument given; using lab Cu Kα defaults: Kα1 1.5405 Å, Kα2 1.5443 Å, "
            "I(Kα2)/I(Kα1) 0.5, polarisation 0.7, U V W 2 -2 5 centideg², X Y 0, SH/L 0.002, "
            "goniometer radius 200 mm",
            file=sys.stderr,
        )
    else:
        instrument = read_instrument(args.instrument)
    changes: dict[str, Any] = {}
    if getattr(args, "geometry", None):
        changes["geometry"] = args.geometry
    if getattr(args, "mu_r", None) is not None:
        changes["mu_r"] = args.mu_r
    if changes:
        try:
            instrument = instrument.with_changes(**changes)
        except ValueError as exc:
            raise CLIError(f"--geometry/--mu-r: {exc}") from exc
    return instrument


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
            refinement, background=_default_background(args), occupancy=occupancy_request(args)
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
