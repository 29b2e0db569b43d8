"""The inputs of ``xbeam refine`` read from its command line (shared by the plain, ``--auto`` and
``--sequential`` paths): the pattern, phases and instrument, the 2θ range, the strategy, background humps and
occupancy requests. Only argparse is imported at module level so ``xbeam --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from xbeam_bluesky.cli import CLIError
from xbeam_bluesky.errors import XbeamInputError

__all__ = [
    "background_peaks",
    "chosen_strategy",
    "default_background",
    "load_inputs",
    "load_instrument",
    "load_phases",
    "occupancy_request",
    "parse_range",
]


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
        except XbeamInputError as exc:
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
    except XbeamInputError as exc:
        raise CLIError(f"--background-peak: {exc}") from exc
    return Strategy(tuple(stages))


def default_background(args: argparse.Namespace) -> Any:
    """The default sequence's first-stage background with any --background-peak humps, or None."""
    from xbeam_bluesky.rietveld import BackgroundSpec

    peaks = background_peaks(args)
    if not peaks:
        return None
    try:
        return BackgroundSpec(peaks=peaks)
    except XbeamInputError as exc:
        raise CLIError(f"--background-peak: {exc}") from exc


def parse_range(text: str | None) -> tuple[float, float] | None:
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

    fit_range = parse_range(args.fit_range)
    pattern = read_pattern(args.pattern)
    instrument = load_instrument(args)
    phases = load_phases(args, load_phase)
    return fit_range, pattern, phases, instrument


def load_phases(args: argparse.Namespace, load_phase: Any) -> list[Any]:
    """The --cif phases, with unique names."""
    phases = [load_phase(c) for c in args.cif]
    names = [ph.name for ph in phases]
    if len(set(names)) != len(names):
        for i, ph in enumerate(phases):
            ph.name = f"{ph.name}_{i + 1}"
    return phases


def load_instrument(args: argparse.Namespace) -> Any:
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
        except XbeamInputError as exc:
            raise CLIError(f"--geometry/--mu-r: {exc}") from exc
    return instrument
