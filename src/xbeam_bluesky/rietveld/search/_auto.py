"""Search, then package the result: what ``xbeam refine --auto`` writes and the live ``AutoRietveld`` stores.

:func:`search_and_package` runs :func:`~._run.run_search` on a refinement problem and returns a
:class:`PackagedSearch`: the search, its JSON summary, the best strategy as a replayable document and, when
every trial was invalid, the reason. The CLI and the callback both call it and only format its pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..refine import Refinement
from ._run import SearchResult, SearchSettings, TrialRecord, run_search, strategy_document
from ._space import SearchSpace

__all__ = ["PackagedSearch", "search_and_package"]


@dataclass
class PackagedSearch:
    """A finished strategy search and what is stored of it.

    Attributes
    ----------
    search
        The search (every trial, the best refinement with its curves).
    summary
        :meth:`SearchResult.to_dict` (best Rwp and strategy, counts, report, every trial).
    strategy
        The best strategy document (:func:`strategy_document`: stages to replay plus the point of the space),
        None if every trial was invalid.
    failure
        Why there is no result ("every trial of the strategy search was invalid: …"), empty on success.
    """

    search: SearchResult
    summary: dict[str, Any]
    strategy: dict[str, Any] | None
    failure: str

    @property
    def ok(self) -> bool:
        """True if a valid best trial was found."""
        return not self.failure

    def document(self) -> dict[str, Any]:
        """The result JSON of the search: the best refinement's :meth:`RefinementResult.to_dict` with the search
        summary, ``refinement_wall_s`` (the best refinement, s) and ``wall_s`` (the whole search, s); or
        ``status: "failed"`` with the ``message`` and the summary."""
        if not self.ok:
            return {"status": "failed", "message": self.failure, **self.summary}
        result = self.search.best_result
        assert result is not None  # ok
        return {
            **result.to_dict(),
            **self.summary,
            "refinement_wall_s": result.wall_s,
            "wall_s": self.search.wall_s,
        }


def search_and_package(
    refinement: Refinement,
    *,
    space: SearchSpace | None = None,
    settings: SearchSettings | None = None,
    warm_start: Sequence[Mapping[str, Any]] = (),
    history: Sequence[Mapping[str, Any]] = (),
    progress: Callable[[TrialRecord, TrialRecord | None], None] | None = None,
) -> PackagedSearch:
    """Search the strategies of ``refinement`` (:func:`~._run.run_search`, same parameters) and package the
    outcome."""
    search = run_search(
        refinement, space=space, settings=settings, warm_start=warm_start, history=history, progress=progress
    )
    summary = search.to_dict()
    if search.best is None or search.best_result is None:
        reasons = "; ".join(search.failure_reasons())
        return PackagedSearch(
            search, summary, None, f"every trial of the strategy search was invalid: {reasons}"
        )
    return PackagedSearch(search, summary, strategy_document(search.space, search.best), "")
