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
            "staged sequence: background+scale -> cell+displacement -> profile X Y -> atoms -> U V W."
        ),
    )
    p.add_argument(
        "pattern",
        type=Path,
        help="pattern file (GSAS STD/ESD/ALT/FXYE, xy/xye/csv, FullProf .dat, Bruker UXD/RAW)",
    )
    p.add_argument(
        "--cif", type=Path, action="append", required=True, help="phase CIF (repeat for several phases)"
    )
    p.add_argument("--instrument", type=Path, help="GSAS .PRM or GSAS-II .instprm (default: lab Cu Kα)")
    p.add_argument(
        "--range", dest="fit_range", help="2θ range MIN:MAX (deg) of the final fit (default: whole pattern)"
    )
    p.add_argument("--strategy", type=Path, help="strategy JSON to replay (see docs/rietveld.md)")
    p.add_argument("--plot", type=Path, help="save the fit plot (observed, calculated, difference, ticks)")
    p.add_argument("--out", type=Path, required=True, help="result JSON file")
    add_auto_arguments(p)
    p.set_defaults(func=_run)


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
    from xbeam_bluesky.rietveld import Instrument, load_phase, read_instrument, read_pattern

    fit_range = _parse_range(args.fit_range)
    pattern = read_pattern(args.pattern)
    phases = [load_phase(c) for c in args.cif]
    names = [ph.name for ph in phases]
    if len(set(names)) != len(names):
        for i, ph in enumerate(phases):
            ph.name = f"{ph.name}_{i + 1}"
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
    return fit_range, pattern, phases, instrument


def _run(args: argparse.Namespace) -> int:
    if args.auto:
        return run_auto(args)
    from xbeam_bluesky.rietveld import Refinement, Strategy, default_strategy, plot_fit

    check_output(args.out, [args.pattern, *args.cif, *(p for p in (args.instrument, args.strategy) if p)])
    fit_range, pattern, phases, instrument = load_inputs(args)
    strategy = Strategy.from_json(args.strategy) if args.strategy else default_strategy()
    if fit_range is not None and strategy.stages[-1].range is not None:
        print("xbeam refine: --range overrides the last stage's range", file=sys.stderr)
        stages = list(strategy.stages)
        from dataclasses import replace

        stages[-1] = replace(stages[-1], range=fit_range)
        strategy = Strategy(tuple(stages))
    result = Refinement(pattern, phases, instrument, fit_range=fit_range).run(strategy)
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
