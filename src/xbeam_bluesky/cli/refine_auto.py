"""``xbeam refine --auto``: the Bayesian strategy search behind the ``refine`` sub-command.

:func:`add_auto_arguments` adds the search options to the ``refine`` parser and :func:`run_auto` runs the
search when ``--auto`` is given. Kept apart from ``cli/refine.py`` (the engine's CLI); only argparse is
imported at module level so ``xbeam --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from xbeam_bluesky.cli import CLIError
from xbeam_bluesky.errors import XbeamInputError


def add_auto_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--auto`` and the search options to the ``refine`` parser."""
    g = parser.add_argument_group(
        "automatic strategy search (--auto)",
        "Search refinement strategies with optuna's TPE sampler (BBO-Rietveld); the objective is the "
        "final full-range Rwp with physical validity checks. See docs/auto_rietveld.md.",
    )
    g.add_argument("--auto", action="store_true", help="search for the best refinement strategy")
    g.add_argument("--trials", type=int, default=100, help="trial budget (default 100)")
    g.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="trials run at once in worker processes (default: min(2, CPUs))",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    g.add_argument("--timeout-s", type=float, help="time budget in s: no trial starts after it")
    g.add_argument(
        "--warm-start",
        type=Path,
        help="a saved best strategy (evaluated first) or an earlier --auto result.json (its trials too)",
    )
    g.add_argument(
        "--save-strategy",
        type=Path,
        help="where to save the best strategy for --strategy (default: OUT with suffix .strategy.json)",
    )
    g.add_argument("--top", type=int, default=5, help="best trials compared in the report (default 5)")
    g.add_argument(
        "--exclude",
        default="",
        help="comma-separated terms never refined, e.g. zero,transparency (a calibrated goniometer); "
        "any of zero, displacement, transparency, U, V, W, X, Y, SH/L, preferred_orientation",
    )


def _check(args: argparse.Namespace) -> None:
    if args.strategy is not None:
        raise CLIError("--strategy replays one strategy; with --auto use --warm-start FILE to start from it")
    for name in ("trials", "jobs", "top"):
        value = getattr(args, name)
        if value < 1:
            raise CLIError(f"--{name} {value}: expected a positive integer")
    if args.timeout_s is not None and not args.timeout_s > 0:
        raise CLIError(f"--timeout-s {args.timeout_s}: expected a positive time in s")


def run_auto(args: argparse.Namespace) -> int:
    """Handler of ``xbeam refine --auto``: search, write result.json, the best strategy and the plot."""
    _check(args)
    from tqdm import tqdm

    from xbeam_bluesky.cli._refine_inputs import background_peaks, load_inputs, occupancy_request
    from xbeam_bluesky.rietveld import Refinement, plot_fit
    from xbeam_bluesky.rietveld.default_sequence import MIN_ATOM_FRACTION
    from xbeam_bluesky.rietveld.search import (
        SearchSettings,
        SearchSpace,
        load_warm_start,
        problem_space,
        search_and_package,
    )

    fit_range, pattern, phases, instrument = load_inputs(args)
    warm_points: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    if args.warm_start is not None:
        warm_points, history = load_warm_start(args.warm_start)
    settings = SearchSettings(
        n_trials=args.trials, n_jobs=args.jobs, seed=args.seed, timeout_s=args.timeout_s, top_k=args.top
    )
    refinement = Refinement(pattern, phases, instrument, fit_range=fit_range)
    exclude = tuple(t.strip() for t in args.exclude.split(",") if t.strip())
    try:
        SearchSpace(*refinement.fit_range, exclude=exclude)  # names a bad --exclude before any work
    except XbeamInputError as exc:
        raise CLIError(f"--exclude {args.exclude!r}: {exc}") from exc
    space = problem_space(
        refinement,
        exclude=exclude,
        background_peaks=background_peaks(args),
        occupancy=occupancy_request(args),
    )
    if space.atom_phases is not None:
        print(
            f"xbeam refine --auto: atoms refined for {', '.join(space.atom_phases)} only (the phases of at "
            f"least {MIN_ATOM_FRACTION:.0%} by weight)",
            file=sys.stderr,
        )
    from xbeam_bluesky.rietveld.validity import check_start_model

    for problem in check_start_model(refinement.phases, settings.limits).values():
        print(f"xbeam refine --auto: starting model: {problem} (not held against trials)", file=sys.stderr)
    bar = tqdm(total=args.trials, desc="strategy search", unit="trial", file=sys.stderr)

    def progress(record, best) -> None:
        bar.update(1)
        bar.set_postfix_str(
            f"best Rwp {best.rwp:.2f} % (trial {best.number})" if best else "no valid trial yet",
            refresh=False,
        )

    try:
        packaged = search_and_package(
            refinement,
            space=space,
            settings=settings,
            warm_start=warm_points,
            history=history,
            progress=progress,
        )
    finally:
        bar.close()
    search, summary = packaged.search, packaged.summary
    common = {
        "pattern": str(args.pattern),
        "cifs": [str(c) for c in args.cif],
        "instrument_defaults_used": args.instrument is None,
        "auto": True,
    }
    out = {**packaged.document(), **common}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not packaged.ok:
        args.out.write_text(json.dumps(out, indent=1))
        print(f"xbeam refine --auto: {packaged.failure}; wrote {args.out}", file=sys.stderr)
        return 1
    result = search.best_result
    strategy_path = args.save_strategy or args.out.with_suffix(".strategy.json")
    strategy_path.parent.mkdir(parents=True, exist_ok=True)
    strategy_path.write_text(json.dumps(packaged.strategy, indent=1))
    out["strategy_file"] = str(strategy_path)
    args.out.write_text(json.dumps(out, indent=1))
    if args.plot:
        plot_fit(result, args.plot)
    reasons = summary.get("local_minimum_reasons") or ["see top/spreads in the result"]
    flag = f"; SUSPECTED LOCAL MINIMUM: {'; '.join(reasons)}" if summary["local_minimum_suspected"] else ""
    print(
        f"xbeam refine --auto: best Rwp {result.rwp:.2f} % (trial {search.best.number}) after {search.n_trials} "
        f"trials ({search.n_failed} invalid) in {search.wall_s:.1f} s{flag}; wrote {args.out} and "
        f"{strategy_path} (replay: xbeam refine ... --strategy {strategy_path})"
    )
    return 0 if result.ok else 1
