"""Sequential refinement of a series of patterns (temperature, time, composition).

Each pattern starts from the previous pattern's refined model (cell, atoms, profile, background humps);
the strategy is chosen once — given, the default, or found by a search on the first pattern — and reused.
A fit that degrades beyond a stated limit (Rwp above ``degrade_factor`` × the previous pattern's, or a
failed run) is redone from the CIF model, after a new search when a search function was given.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xbeam_bluesky.errors import PatternFormatError, RietveldInputError

from ._result import RefinementResult
from .crystal import Phase
from .instrument import Instrument
from .pattern_io import Pattern
from .refine import Refinement
from .strategy import Strategy, default_strategy

__all__ = ["DEFAULT_DEGRADE_FACTOR", "SequentialResult", "plot_series", "refine_series", "series_value"]

#: a warm-started pattern whose Rwp exceeds this factor × the previous pattern's is redone from the CIFs
DEFAULT_DEGRADE_FACTOR = 1.3


def series_value(path: str | Path, key: str) -> float:
    """The series value a pattern file states in its header, e.g. ``Temp (K) = 6.778`` for key "Temp (K)".

    The first line containing ``key`` followed by ``=`` or ``:`` and a number gives the value.

    Raises
    ------
    ValueError
        The file has no such line.
    """
    text = Path(path).read_text(errors="replace")
    m = re.search(re.escape(key) + r"\s*[=:]\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)", text)
    if not m:
        raise PatternFormatError(
            f"pattern file {path}: no series value {key!r} followed by '=' or ':' and a number"
        )
    return float(m.group(1))


@dataclass
class SequentialResult:
    """The refinements of a series, in series order.

    Attributes
    ----------
    values
        The series value of each pattern (temperature, time, …, or the index).
    results
        One :class:`RefinementResult` per pattern.
    restarted
        Per pattern: why it was redone from the CIF model ("" when the warm start was kept).
    strategy
        The strategy used (found on the first pattern when a search was run).
    wall_s
        Wall time of each pattern's refinement (s), restarts and searches included.
    """

    values: list[float]
    results: list[RefinementResult]
    restarted: list[str]
    strategy: Strategy
    wall_s: list[float] = field(default_factory=list)

    def table(self) -> dict[str, Any]:
        """Parametric table: per phase, lattice parameters with esds and weight fractions versus the series."""
        out: dict[str, Any] = {"value": list(self.values), "rwp": [r.rwp for r in self.results], "phases": {}}
        for k, ph in enumerate(self.results[0].phases):
            col: dict[str, list[float]] = {}
            for axis in ("a", "b", "c", "alpha", "beta", "gamma"):
                col[axis] = [r.phases[k]["lattice"][axis] for r in self.results]
                col[f"{axis}_esd"] = [r.phases[k]["lattice_esd"][axis] for r in self.results]
            col["volume"] = [r.phases[k]["volume"] for r in self.results]
            col["weight_fraction"] = [r.phases[k]["weight_fraction"] for r in self.results]
            col["weight_fraction_esd"] = [r.phases[k].get("weight_fraction_esd", 0.0) for r in self.results]
            out["phases"][ph["name"]] = col
        return out


def refine_series(
    patterns: Sequence[Pattern],
    phases: list[Phase],
    instrument: Instrument,
    *,
    values: Sequence[float] | None = None,
    strategy: Strategy | None = None,
    fit_range: tuple[float, float] | None = None,
    find_strategy: Callable[[Refinement], Strategy] | None = None,
    degrade_factor: float = DEFAULT_DEGRADE_FACTOR,
    progress: Callable[[int, RefinementResult], None] | None = None,
) -> SequentialResult:
    """Refine ``patterns`` in order, each warm-started from the previous pattern's result.

    Parameters
    ----------
    patterns
        The series, already in series order.
    phases, instrument
        The model (the same for every pattern).
    values
        Series value per pattern (e.g. temperature in K); default the index 0, 1, ….
    strategy
        Strategy for every pattern; default :func:`default_strategy` unless ``find_strategy`` is given.
    fit_range
        2θ range (deg) of every refinement.
    find_strategy
        A strategy search (e.g. ``xbeam refine --auto``'s) run on the first pattern, and again on a pattern
        whose fit degraded; its strategy is reused for the following patterns.
    degrade_factor
        A warm-started fit is redone from the CIF model (and re-searched) when it fails or its Rwp
        exceeds ``degrade_factor`` × the previous pattern's Rwp (> 1).
    progress
        Called with (index, result) after each pattern.

    Raises
    ------
    ValueError
        No patterns, ``values`` of the wrong length, or ``degrade_factor`` ≤ 1.
    """
    if not patterns:
        raise RietveldInputError("sequential refinement: no patterns")
    vals = list(range(len(patterns))) if values is None else [float(v) for v in values]
    if len(vals) != len(patterns):
        raise RietveldInputError(
            f"sequential refinement: {len(vals)} series values for {len(patterns)} patterns"
        )
    if not degrade_factor > 1.0:
        raise RietveldInputError(
            f"degrade_factor {degrade_factor!r}: expected a factor > 1 on the previous Rwp"
        )
    results: list[RefinementResult] = []
    restarted: list[str] = []
    walls: list[float] = []
    current = strategy
    for i, pat in enumerate(patterns):
        t0 = time.perf_counter()
        ref = Refinement(pat, phases, instrument, fit_range=fit_range)
        if current is None:
            current = find_strategy(ref) if find_strategy is not None else default_strategy()
        why = ""
        if i == 0:
            res = ref.run(current)
        else:
            res = ref.run(current, state=results[-1].state)  # run() works on a copy
            prev = results[-1].rwp
            if not res.ok or not np.isfinite(res.rwp) or res.rwp > degrade_factor * prev:
                why = (
                    f"warm start {res.status}, Rwp {res.rwp:.2f} % vs {prev:.2f} % before (limit "
                    f"{degrade_factor:g}×): redone from the CIF model"
                )
                if find_strategy is not None:
                    current = find_strategy(ref)
                    why += " after a new strategy search"
                cold = ref.run(current)
                if cold.ok and (not res.ok or cold.rwp < res.rwp):
                    res = cold
                else:
                    why += f"; the warm start was kept (the cold start reached Rwp {cold.rwp:.2f} %)"
        results.append(res)
        restarted.append(why)
        walls.append(time.perf_counter() - t0)
        if progress is not None:
            progress(i, res)
    return SequentialResult(vals, results, restarted, current, walls)


def plot_series(result: SequentialResult, path: str | Path, value_label: str = "series value") -> None:
    """Save a PNG of Rwp, each phase's lattice parameters (with esds) and weight fractions versus the series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.table()
    x = np.asarray(table["value"], dtype=float)
    names = list(table["phases"])
    fig, axes = plt.subplots(2 + len(names), 1, figsize=(7, 2.4 * (2 + len(names))), sharex=True)
    axes[0].plot(x, table["rwp"], "o-")
    axes[0].set_ylabel("Rwp (%)")
    for ax, name in zip(axes[1:-1], names, strict=True):
        col = table["phases"][name]
        for axis in ("a", "b", "c"):
            ax.errorbar(x, col[axis], yerr=col[f"{axis}_esd"], fmt="o-", ms=3, label=axis)
        ax.set_ylabel(f"{name} cell (Å)")
        ax.legend(fontsize=8)
    for name in names:
        col = table["phases"][name]
        axes[-1].errorbar(
            x,
            100 * np.asarray(col["weight_fraction"]),
            yerr=100 * np.asarray(col["weight_fraction_esd"]),
            fmt="o-",
            ms=3,
            label=name,
        )
    axes[-1].set_ylabel("weight fraction (%)")
    axes[-1].legend(fontsize=8)
    axes[-1].set_xlabel(value_label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
