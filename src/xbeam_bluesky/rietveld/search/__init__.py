"""Bayesian strategy search (BBO-Rietveld): which refinement strategy gives the lowest valid Rwp.

* :func:`problem_space` — the :class:`SearchSpace` of a refinement problem (what ``xbeam refine --auto``,
  ``--sequential --auto`` and the live ``AutoRietveld`` search);
* :func:`run_search` — optuna TPE over the space, trials in worker processes, judged by
  :mod:`~xbeam_bluesky.rietveld.validity`; :class:`SearchResult` with the report of :func:`summarize_top`;
* :func:`search_and_package` — a search, then its best refinement and strategy document packaged as one
  :class:`PackagedSearch` (used by the CLI and the live callback).

The validity rules stay in :mod:`xbeam_bluesky.rietveld.validity`: the engine's default sequence uses them too.
"""

from ._auto import PackagedSearch, search_and_package
from ._problem import degenerate_shift_pairs, degenerate_shift_terms, problem_space
from ._report import parameter_values, reference_differences, structure_shifts, summarize_top
from ._run import SearchResult, SearchSettings, TrialRecord, load_warm_start, run_search, strategy_document
from ._space import PROFILE_TERMS, SearchSpace

__all__ = [
    "PROFILE_TERMS",
    "PackagedSearch",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "TrialRecord",
    "degenerate_shift_pairs",
    "degenerate_shift_terms",
    "load_warm_start",
    "parameter_values",
    "problem_space",
    "reference_differences",
    "run_search",
    "search_and_package",
    "strategy_document",
    "structure_shifts",
    "summarize_top",
]
