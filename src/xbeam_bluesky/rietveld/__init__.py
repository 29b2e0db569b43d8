"""A Rietveld engine of our own: powder patterns from CIF structures, refined by staged least squares.

Pure numpy/scipy/gemmi; follows GSAS-II's conventions (TCH pseudo-Voigt in centidegrees, FCJ asymmetry,
Kα1/Kα2 doublet, Lorentz–polarisation with P from the instrument file, Bragg–Brentano displacement).

Typical use::

    ref = Refinement(read_pattern("PBSO4.XRA"), [load_phase("PbSO4.cif")], read_instrument("INST_XRY.PRM"))
    result = ref.run()                        # default staged strategy
    result = ref.run(Strategy.from_json(p))   # any other strategy, on a fresh copy of the start model
"""

from ._result import RefinementResult
from .background import BACKGROUND_TYPES
from .crystal import Phase, load_phase
from .instrument import Instrument, read_instrument
from .model import ModelState, PatternCalculator
from .pattern_io import Pattern, read_pattern
from .refine import Refinement
from .report import plot_fit
from .search import (  # strategy search (issue 6)
    SearchResult,
    SearchSettings,
    SearchSpace,
    TrialRecord,
    load_warm_start,
    problem_space,
    run_search,
    strategy_document,
)
from .simulate import simulate_pattern
from .strategy import PARAMETER_GROUPS, BackgroundSpec, OccupancySpec, Stage, Strategy, default_strategy
from .validity import ValidityLimits, check_validity

__all__ = [
    "BACKGROUND_TYPES",
    "PARAMETER_GROUPS",
    "BackgroundSpec",
    "Instrument",
    "ModelState",
    "OccupancySpec",
    "Pattern",
    "PatternCalculator",
    "Phase",
    "Refinement",
    "RefinementResult",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "Stage",
    "Strategy",
    "TrialRecord",
    "ValidityLimits",
    "check_validity",
    "default_strategy",
    "load_phase",
    "load_warm_start",
    "plot_fit",
    "problem_space",
    "read_instrument",
    "read_pattern",
    "run_search",
    "simulate_pattern",
    "strategy_document",
]
