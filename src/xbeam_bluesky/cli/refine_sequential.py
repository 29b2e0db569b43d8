"""``xbeam refine --sequential``: refine a series of patterns, each from the previous result."""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Any

from xbeam_bluesky.cli import CLIError
from xbeam_bluesky.errors import XbeamInputError


def series_files(specs: list[str]) -> list[Path]:
    """The pattern files named on the command line, globs expanded (each glob sorted by name)."""
    files: list[Path] = []
    for spec in specs:
        if any(c in spec for c in "*?["):
            hits = sorted(glob.glob(spec))
            if not hits:
                raise CLIError(f"pattern glob {spec!r} matches no file")
            files += [Path(h) for h in hits]
        else:
            files.append(Path(spec))
    return files


def _ordered(args: argparse.Namespace, files: list[Path]) -> tuple[list[Path], list[float], str]:
    """Files in series order, their series values and the values' label."""
    from xbeam_bluesky.rietveld.sequential import series_value

    if args.series_values is not None:
        try:
            values = [float(v) for v in args.series_values.split(",")]
        except ValueError as exc:
            raise CLIError(
                f"--series-values {args.series_values!r}: expected comma-separated numbers"
            ) from exc
        if len(values) != len(files):
            raise CLIError(f"--series-values: {len(values)} values for {len(files)} patterns")
        label = "series value"
    elif args.series_key is not None:
        try:
            values = [series_value(f, args.series_key) for f in files]
        except (XbeamInputError, OSError) as exc:
            raise CLIError(f"--series-key {args.series_key!r}: {exc}") from exc
        label = args.series_key
    else:
        return files, [float(i) for i in range(len(files))], "pattern index"
    order = sorted(range(len(files)), key=lambda i: values[i])
    return [files[i] for i in order], [values[i] for i in order], label


def run_sequential(args: argparse.Namespace) -> int:
    """Run ``xbeam refine --sequential`` and write the series table (``--out``) and plot (``--plot``)."""
    from xbeam_bluesky.cli._refine_inputs import chosen_strategy, load_instrument, load_phases, parse_range
    from xbeam_bluesky.rietveld import load_phase, read_pattern
    from xbeam_bluesky.rietveld.sequential import plot_series, refine_series

    files = series_files(args.pattern)
    files, values, label = _ordered(args, files)
    fit_range = parse_range(args.fit_range)
    patterns = [read_pattern(f) for f in files]
    phases = load_phases(args, load_phase)
    instrument = load_instrument(args)
    find = None
    strategy = None
    if args.auto:
        if args.strategy:
            raise CLIError("--auto searches the strategy: do not combine it with --strategy")
        find = _search_function(args)
    else:
        strategy = chosen_strategy(args)

    def progress(i: int, res: Any) -> None:
        print(
            f"xbeam refine --sequential: {files[i]} ({label} {values[i]:g}): {res.status}, Rwp {res.rwp:.2f} %",
            file=sys.stderr,
        )

    seq = refine_series(
        patterns,
        phases,
        instrument,
        values=values,
        strategy=strategy,
        fit_range=fit_range,
        find_strategy=find,
        degrade_factor=args.degrade_factor,
        progress=progress,
    )
    rows = []
    for f, v, res, why, wall in zip(files, seq.values, seq.results, seq.restarted, seq.wall_s, strict=True):
        row = {"file": str(f), "value": v, **res.to_dict(), "restarted": why, "pattern_wall_s": wall}
        rows.append(row)
    out = {
        "series": label,
        "patterns": rows,
        "parametric": seq.table(),
        "strategy": seq.strategy.to_dict(),
        "cifs": [str(c) for c in args.cif],
        "instrument_defaults_used": args.instrument is None,
        "degrade_factor": args.degrade_factor,
        "wall_s": sum(seq.wall_s),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    if args.plot:
        plot_series(seq, args.plot, label)
    n_bad = sum(not r.ok for r in seq.results)
    print(
        f"xbeam refine --sequential: {len(files)} patterns in {sum(seq.wall_s):.1f} s "
        f"({sum(seq.wall_s) / len(files):.2f} s per pattern), Rwp {min(r['rwp'] for r in rows):.2f}–"
        f"{max(r['rwp'] for r in rows):.2f} %, {sum(bool(w) for w in seq.restarted)} redone from the CIFs, "
        f"{n_bad} failed; wrote {args.out}"
    )
    return 1 if n_bad else 0


def _search_function(args: argparse.Namespace) -> Any:
    """``--auto``'s strategy search as a function of a refinement problem, returning its best strategy."""
    from xbeam_bluesky.cli._refine_inputs import background_peaks, occupancy_request
    from xbeam_bluesky.rietveld import SearchSettings, problem_space, run_search

    settings = SearchSettings(
        n_trials=args.trials, n_jobs=args.jobs, seed=args.seed, timeout_s=args.timeout_s, top_k=args.top
    )
    exclude = tuple(t.strip() for t in args.exclude.split(",") if t.strip())
    peaks = background_peaks(args)
    occupancy = occupancy_request(args)

    def find(refinement: Any) -> Any:
        space = problem_space(refinement, exclude=exclude, background_peaks=peaks, occupancy=occupancy)
        search = run_search(refinement, space=space, settings=settings)
        if search.best is None:
            raise CLIError(
                "--sequential --auto: every trial of the strategy search was invalid on "
                f"{refinement.pattern.source}: " + "; ".join(search.failure_reasons())
            )
        print(
            f"xbeam refine --sequential --auto: best strategy Rwp {search.best.rwp:.2f} % on "
            f"{refinement.pattern.source}",
            file=sys.stderr,
        )
        return search.space.strategy(search.best.params)

    return find
