"""Bayesian strategy search (BBO-Rietveld): optuna TPE over refinement strategies, trials in worker processes.

The objective of a trial is the Rwp (%) of the final full-range stage of its strategy
(:class:`~xbeam_bluesky.rietveld.search.SearchSpace`). A trial whose refinement fails or whose model
breaks :func:`~xbeam_bluesky.rietveld.validity.check_validity` or
:func:`~xbeam_bluesky.rietveld.validity.check_degeneracy` scores the capped penalty
``SearchSettings.penalty_rwp`` instead (TPE ranks trials, so a cap is as informative as the paper's 1e9 and keeps
reports and plots readable).

The parent process drives a shared in-memory study with ask/tell and keeps ``n_jobs`` trials running in a
process pool. Trials are told in the order they were asked, and trial ``n + n_jobs`` is asked only once trial
``n`` is told, so the sampler sees the same history whatever the timing: a seeded search is reproducible for
a given ``n_jobs``.

The engine's default sequence is run once per search as a reference: the report flags a suspected local
minimum when the best trial's cell differs from the reference cell by more than
``SearchSettings.reference_tolerance`` esd.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from xbeam_bluesky._inputs import read_text
from xbeam_bluesky.errors import RietveldInputError

from .._result import RefinementResult
from ..crystal import Phase
from ..default_sequence import refine_default
from ..instrument import Instrument
from ..pattern_io import Pattern
from ..refine import Refinement
from ..strategy import BackgroundSpec, Strategy
from ..validity import ValidityLimits, check_degeneracy, check_start_model, check_validity
from ._problem import problem_space
from ._report import summarize_top
from ._space import SearchSpace

__all__ = [
    "SearchResult",
    "SearchSettings",
    "TrialRecord",
    "load_warm_start",
    "run_search",
    "strategy_document",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    """How to search.

    Attributes
    ----------
    n_trials
        Trial budget (warm-start trials included).
    n_jobs
        Trials run at once, each in its own worker process (1 = in this process).
    seed
        Seed of the TPE sampler.
    timeout_s
        Time budget (s): no trial is started after it; running trials finish. ``None`` = no limit.
    n_startup_trials
        Random trials before TPE takes over (the paper's 20).
    top_k
        Number of best trials in the report.
    penalty_rwp
        Objective (%) of an invalid or failed trial; also caps valid ones.
    shift_tolerance
        Atom shift (Å) from the consensus of the best trials above which a trial is a suspected local minimum.
    reference_tolerance
        Difference (in combined esd) between the best trial's cell and the default sequence's above which a
        local minimum is suspected.
    limits
        Validity thresholds.
    start_from_default
        Run the default sequence (the report's reference) before the search and evaluate its point of the
        space (:meth:`SearchSpace.point_from_strategy`) first, after any warm-start points: the search then
        starts from what the default refinement reached (on a mixture, its per-phase strain terms).
    """

    n_trials: int = 100
    n_jobs: int = 1
    seed: int = 0
    timeout_s: float | None = None
    n_startup_trials: int = 20
    top_k: int = 5
    penalty_rwp: float = 100.0
    shift_tolerance: float = 0.1
    reference_tolerance: float = 5.0
    limits: ValidityLimits = field(default_factory=ValidityLimits)
    start_from_default: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise RietveldInputError(f"n_trials = {self.n_trials!r}; expected a positive integer")
        if not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise RietveldInputError(f"n_jobs = {self.n_jobs!r}; expected a positive integer")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise RietveldInputError(f"timeout_s = {self.timeout_s!r}; expected a positive time in s or None")
        if not self.penalty_rwp > 0:
            raise RietveldInputError(f"penalty_rwp = {self.penalty_rwp!r}; expected a positive Rwp in %")
        if not self.reference_tolerance > 0:
            raise RietveldInputError(
                f"reference_tolerance = {self.reference_tolerance!r}; expected a positive number of esd"
            )
        if self.top_k < 1:
            raise RietveldInputError(f"top_k = {self.top_k!r}; expected a positive integer")


@dataclass
class TrialRecord:
    """One evaluated strategy.

    Attributes
    ----------
    number
        Trial number in the study.
    params
        The point of the search space.
    objective
        What the sampler was told (%): Rwp if valid, else the penalty.
    rwp
        Final Rwp (%) if the refinement finished, else None.
    valid
        The refinement finished and passed the validity checks.
    reasons
        Why it is invalid (empty if valid).
    wall_s
        Wall time of the refinement (s).
    summary
        :meth:`RefinementResult.to_dict` of the refinement (None if it raised).
    warm_start
        The trial was enqueued from a previous strategy.
    """

    number: int
    params: dict[str, Any]
    objective: float
    rwp: float | None
    valid: bool
    reasons: list[str]
    wall_s: float
    summary: dict[str, Any] | None = field(default=None, repr=False)
    warm_start: bool = False

    def to_dict(self, with_summary: bool = False) -> dict[str, Any]:
        """JSON form (the refinement summary only if asked)."""
        out = {
            "number": self.number,
            "params": self.params,
            "objective": self.objective,
            "rwp": self.rwp,
            "valid": self.valid,
            "reasons": self.reasons,
            "wall_s": self.wall_s,
            "warm_start": self.warm_start,
        }
        if with_summary:
            out["summary"] = self.summary
        return out


@dataclass
class SearchResult:
    """Outcome of a search.

    Attributes
    ----------
    best
        The best valid trial (None if every trial was invalid).
    best_result
        The full refinement of the best trial (curves, state, covariance), None without a best.
    trials
        Every trial, in order.
    report
        :func:`~xbeam_bluesky.rietveld.search.summarize_top` of the best valid trials.
    space, settings
        What was searched, and how.
    wall_s
        Wall time of the search (s), pool start-up included.
    start_problems
        Rules the starting model (the CIFs) already breaks (:func:`check_start_model`), reported once and not
        held against trials that leave them no worse.
    """

    best: TrialRecord | None
    best_result: RefinementResult | None
    trials: list[TrialRecord]
    report: dict[str, Any]
    space: SearchSpace
    settings: SearchSettings
    wall_s: float
    start_problems: list[str] = field(default_factory=list)

    @property
    def n_trials(self) -> int:
        """Number of trials run."""
        return len(self.trials)

    @property
    def n_failed(self) -> int:
        """Number of invalid or failed trials."""
        return sum(not t.valid for t in self.trials)

    @property
    def best_strategy(self) -> Strategy | None:
        """The best strategy (None if every trial was invalid)."""
        return None if self.best is None else self.space.strategy(self.best.params)

    def failure_reasons(self, limit: int = 5) -> list[str]:
        """The most frequent reasons trials were invalid, with counts."""
        counts: dict[str, int] = {}
        for t in self.trials:
            for r in t.reasons:
                key = r.split(":", 1)[0] if r.startswith("refinement") else r
                counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        return [f"{n}× {r}" for r, n in ranked]

    def to_dict(self) -> dict[str, Any]:
        """JSON summary: best Rwp and strategy, counts, the report and every trial (no refinement details)."""
        return {
            "best_rwp": None if self.best is None else self.best.rwp,
            "best_trial": None if self.best is None else self.best.number,
            "strategy": None if self.best is None else strategy_document(self.space, self.best),
            "n_trials": self.n_trials,
            "n_failed": self.n_failed,
            "search_wall_s": self.wall_s,
            "settings": {
                "n_trials": self.settings.n_trials,
                "n_jobs": self.settings.n_jobs,
                "seed": self.settings.seed,
                "timeout_s": self.settings.timeout_s,
                "n_startup_trials": self.settings.n_startup_trials,
                "penalty_rwp": self.settings.penalty_rwp,
            },
            "top": self.report["top"],
            "spreads": self.report["spreads"],
            "local_minimum_suspected": self.report["local_minimum_suspected"],
            "local_minimum_reasons": self.report["local_minimum_reasons"],
            "reference": self.report["reference"],
            "failure_reasons": self.failure_reasons(),
            "start_model_problems": self.start_problems,
            "trials": [t.to_dict() for t in self.trials],
        }


def strategy_document(space: SearchSpace, trial: TrialRecord) -> dict[str, Any]:
    """The strategy JSON of a trial: ``stages`` (what ``xbeam refine --strategy`` replays) plus a ``search``
    block (the point of the space, the space and the Rwp) that a later search can warm-start from."""
    doc = space.strategy(trial.params).to_dict()
    doc["search"] = {"params": dict(trial.params), "space": space.to_dict(), "rwp": trial.rwp}
    return doc


def load_warm_start(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Warm-start material from a file: a saved best strategy or the result JSON of an earlier search.

    Returns
    -------
    points, history
        Points of the space to evaluate first (the saved best), and earlier trials
        (``{"params", "objective"}``) to tell the sampler (only from a result JSON).

    Raises
    ------
    FileNotFoundError, ValueError
        The file is missing, not JSON, or holds no ``search`` block (not written by a search).
    """
    p = Path(path)
    try:
        doc = json.loads(read_text(p, "warm-start file"))
    except json.JSONDecodeError as exc:
        raise RietveldInputError(f"warm-start file {p}: not valid JSON ({exc})") from exc
    strategy = doc.get("strategy") if isinstance(doc.get("strategy"), dict) else doc
    search = strategy.get("search") if isinstance(strategy, dict) else None
    if not isinstance(search, dict) or not isinstance(search.get("params"), dict):
        raise RietveldInputError(
            f"warm-start file {p}: no 'search' block with 'params'; expected a strategy saved by a search "
            "(xbeam refine --auto --save-strategy) or its result.json"
        )
    history = [t for t in doc.get("trials", []) if isinstance(t, dict)]
    return [search["params"]], history


# ---------------------------------------------------------------------- trial evaluation (worker side)
_WORKER: dict[str, Any] = {}


def _init_worker(blob: bytes, creator_pid: int) -> None:
    """Process-pool initializer: unpickle the problem once per worker, one BLAS thread per worker; the worker
    ends when its creator does (no orphan left searching)."""
    from threadpoolctl import threadpool_limits

    from xbeam_bluesky._procs import exit_with_creator

    exit_with_creator(creator_pid)

    _WORKER["blas_limit"] = threadpool_limits(1)  # n_jobs workers share the cores; nested BLAS threads thrash
    _WORKER["problem"] = pickle.loads(blob)


def _evaluate(number: int, params: dict[str, Any], warm: bool) -> tuple[TrialRecord, RefinementResult | None]:
    return _evaluate_with(*_WORKER["problem"], number, params, warm)


def _evaluate_with(
    pattern: Pattern,
    phases: list[Phase],
    instrument: Instrument,
    fit_range: tuple[float, float],
    space: SearchSpace,
    settings: SearchSettings,
    exempt: Mapping[str, str],
    number: int,
    params: dict[str, Any],
    warm: bool,
) -> tuple[TrialRecord, RefinementResult | None]:
    """Run one strategy on a fresh copy of the problem and judge it; the full result comes back if valid."""
    t0 = time.perf_counter()
    summary = None
    rwp = None
    result = None
    try:
        strategy = space.strategy(params)
        with np.errstate(all="ignore"):
            result = Refinement(pattern, phases, instrument, fit_range=fit_range).run(strategy)
        summary = result.to_dict()
        rwp = float(result.rwp) if np.isfinite(result.rwp) else None
        reasons = check_validity(summary, phases, settings.limits, exempt)
        if not reasons:
            reasons = check_degeneracy(result.parameter_names, result.correlation, settings.limits)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, IndexError) as exc:
        reasons = [f"refinement error: {exc}"]
    valid = not reasons and rwp is not None
    objective = min(rwp, settings.penalty_rwp) if valid and rwp is not None else settings.penalty_rwp
    record = TrialRecord(
        number=number,
        params=params,
        objective=float(objective),
        rwp=rwp,
        valid=valid,
        reasons=reasons,
        wall_s=time.perf_counter() - t0,
        summary=summary,
        warm_start=warm,
    )
    return record, (result if valid else None)


# ---------------------------------------------------------------------- the search (parent side)
def _reference(refinement: Refinement, space: SearchSpace) -> tuple[dict[str, Any] | None, Strategy | None]:
    """The default sequence's refinement summary (the reference cell of the report) and kept strategy, with
    the space's background humps and occupancy request; ``(None, None)`` if it fails."""
    background = BackgroundSpec(peaks=space.background_peaks) if space.background_peaks else None
    try:
        with np.errstate(all="ignore"):
            result, strategy = refine_default(refinement, background=background, occupancy=space.occupancy)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, IndexError) as exc:
        logger.warning("strategy search: the default sequence (reference) failed: %s", exc)
        return None, None
    if not result.ok:
        logger.warning(
            "strategy search: the default sequence (reference) %s: %s", result.status, result.message
        )
        return None, None
    return result.to_dict(), strategy


def _make_study(space: SearchSpace, settings: SearchSettings) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=settings.seed,
            n_startup_trials=settings.n_startup_trials,
            multivariate=True,
            constant_liar=settings.n_jobs > 1,
        )
    return optuna.create_study(direction="minimize", sampler=sampler)


def _add_history(study: optuna.Study, space: SearchSpace, history: Iterable[Mapping[str, Any]]) -> int:
    """Add completed trials of an earlier study (same space) as prior knowledge; returns how many."""
    dists = space.distributions()
    added = 0
    for h in history:
        params = h.get("params")
        value = h.get("objective")
        if not isinstance(params, Mapping) or value is None or not space.contains(params):
            continue
        study.add_trial(
            optuna.trial.create_trial(params=dict(params), distributions=dists, value=float(value))
        )
        added += 1
    return added


def run_search(
    refinement: Refinement,
    *,
    space: SearchSpace | None = None,
    settings: SearchSettings | None = None,
    warm_start: Sequence[Mapping[str, Any]] = (),
    history: Sequence[Mapping[str, Any]] = (),
    progress: Callable[[TrialRecord, TrialRecord | None], None] | None = None,
) -> SearchResult:
    """Search refinement strategies for the lowest valid full-range Rwp.

    Parameters
    ----------
    refinement
        The problem (pattern, phases, instrument, final 2θ range); every trial runs on a fresh copy.
    space
        Strategy space; default :class:`SearchSpace` over ``refinement.fit_range``.
    settings
        Budget, parallelism, seed, penalty; default :class:`SearchSettings` ().
    warm_start
        Points of the space (e.g. the ``search.params`` of a previous best strategy) evaluated first
        (``study.enqueue_trial``); points outside the space are skipped with a warning.
    history
        Trials of an earlier search of the same space (``{"params", "objective"}``, as in
        :meth:`SearchResult.to_dict` ``["trials"]``), told to the sampler before the first trial.
    progress
        Called after each trial with the trial and the best valid trial so far.

    Returns
    -------
    SearchResult
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the progress
    try:
        return _search(refinement, space, settings, warm_start, history, progress)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _search(
    refinement: Refinement,
    space: SearchSpace | None,
    settings: SearchSettings | None,
    warm_start: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    progress: Callable[[TrialRecord, TrialRecord | None], None] | None,
) -> SearchResult:
    t_start = time.perf_counter()
    space = space or problem_space(refinement)
    settings = settings or SearchSettings()
    study = _make_study(space, settings)
    n_prior = _add_history(study, space, history)
    if n_prior:
        logger.info("strategy search: %d trials of an earlier search told to the sampler", n_prior)
    for point in warm_start:
        if space.contains(point):
            study.enqueue_trial(dict(point))  # also when the history holds it: new data, new Rwp
        else:
            logger.warning("strategy search: warm-start point outside the search space skipped: %s", point)
    reference, reference_strategy = (
        _reference(refinement, space) if settings.start_from_default else (None, None)
    )
    if reference_strategy is not None:
        point = space.point_from_strategy(reference_strategy)
        if point is not None:
            study.enqueue_trial(point)
    queued = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    dists = space.distributions()
    exempt = check_start_model(refinement.phases, settings.limits)  # reported once, in the result
    problem = (
        refinement.pattern,
        refinement.phases,
        refinement.instrument,
        refinement.fit_range,
        space,
        settings,
        exempt,
    )
    records: list[TrialRecord] = []
    best: TrialRecord | None = None
    best_result: RefinementResult | None = None

    def finish(trial: optuna.trial.Trial, outcome: tuple[TrialRecord, RefinementResult | None]) -> None:
        nonlocal best, best_result
        record, result = outcome
        study.tell(trial, record.objective)
        records.append(record)
        if record.valid and (best is None or record.objective < best.objective):
            best, best_result = record, result
        if progress is not None:
            progress(record, best)

    def out_of_time() -> bool:
        return settings.timeout_s is not None and time.perf_counter() - t_start >= settings.timeout_s

    n_asked = 0

    def ask() -> tuple[optuna.trial.Trial, dict[str, Any], bool]:
        nonlocal n_asked
        warm = n_asked < queued
        trial = study.ask(dists)
        n_asked += 1
        return trial, dict(trial.params), warm

    if settings.n_jobs == 1:
        while n_asked < settings.n_trials and not out_of_time():
            trial, params, warm = ask()
            finish(trial, _evaluate_with(*problem, trial.number, params, warm))
    else:
        blob = pickle.dumps(problem)
        ctx = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        with ProcessPoolExecutor(
            max_workers=settings.n_jobs,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(blob, os.getpid()),
        ) as pool:
            running: deque[tuple[optuna.trial.Trial, Future]] = deque()
            while True:
                while len(running) < settings.n_jobs and n_asked < settings.n_trials and not out_of_time():
                    trial, params, warm = ask()
                    running.append((trial, pool.submit(_evaluate, trial.number, params, warm)))
                if not running:
                    break
                trial, future = running.popleft()
                finish(trial, future.result())
    ranked = sorted((t for t in records if t.valid), key=lambda t: t.objective)[: settings.top_k]
    report = summarize_top(
        [{"number": t.number, "rwp": t.rwp, "params": t.params, "summary": t.summary} for t in ranked],
        settings.shift_tolerance,
        reference=(reference if settings.start_from_default else _reference(refinement, space)[0])
        if ranked
        else None,
        reference_tolerance=settings.reference_tolerance,
    )
    return SearchResult(
        best=best,
        best_result=best_result,
        trials=records,
        report=report,
        space=space,
        settings=settings,
        wall_s=time.perf_counter() - t_start,
        start_problems=list(exempt.values()),
    )
