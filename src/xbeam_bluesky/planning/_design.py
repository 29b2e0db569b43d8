"""Greedy A-/D-optimal energy design with rank-one posterior updates (METHODS §1)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

from xbeam_bluesky._inputs import read_text
from xbeam_bluesky.errors import DesignInputError
from xbeam_bluesky.planning._exchange import DEFAULT_MAX_ENERGIES, ExchangeResult, exchange_refine
from xbeam_bluesky.planning._noise import TransmissionNoise
from xbeam_bluesky.planning._prior import GaussianProcessPrior
from xbeam_bluesky.planning._reconstruction import error_decomposition
from xbeam_bluesky.planning._timing import ScanTimeModel

logger = logging.getLogger(__name__)

Criterion = Literal["A", "D"]
#: Picks between exact recomputations of the column norms kept up to date by rank-one updates.
_REFRESH_EVERY = 64
#: Rounds of the exchange step after the greedy (``design_energies``; 0 = greedy only).
DEFAULT_EXCHANGE_ROUNDS = 40
#: The exchange step considers new energies within this many grid steps of a measured one.
DEFAULT_EXCHANGE_WINDOW = 3

#: ``pick_variance(indices, k)``: noise variance of ONE measurement of ``k`` dwell units at those candidates.
PickVariance = Callable[[NDArray[np.intp], NDArray[np.intp]], NDArray[np.float64]]


@dataclass
class GreedySelection:
    """Raw result of :func:`greedy_select`.

    Attributes
    ----------
    order
        Candidate index of every pick, in pick order (repeats appear several times).
    counts
        Number of picks per candidate.
    trace
        ``tr Σ_post`` after every pick (units²).
    time_s
        Scan time (s) of the design after every pick.
    stop_reason
        Which stopping rule ended the selection.
    """

    order: NDArray[np.intp]
    counts: NDArray[np.intp]
    trace: NDArray[np.float64]
    time_s: NDArray[np.float64]
    stop_reason: str
    prior_trace: float


def _incremental_variance(v_prev: NDArray, v_next: NDArray) -> NDArray:
    """Variance of the extra observation that turns precision ``1/v_prev`` into ``1/v_next``."""
    with np.errstate(divide="ignore"):
        extra = 1.0 / v_next - np.where(np.isfinite(v_prev), 1.0 / v_prev, 0.0)
        return np.where(extra > 0, 1.0 / np.where(extra > 0, extra, 1.0), np.inf)


def greedy_select(
    cov: NDArray[np.float64],
    energies_eV: NDArray[np.float64],
    pick_variance: PickVariance,
    time_model: ScanTimeModel,
    *,
    criterion: Criterion = "A",
    per_time: bool = True,
    n_points: int | None = None,
    time_budget_s: float | None = None,
    target_rmse: float | None = None,
    max_picks: int = 5000,
    lookahead: int = 1,
) -> GreedySelection:
    """Greedy forward selection from the two end points, repeats allowed.

    The posterior covariance Σ is kept and updated by one rank-one step per pick,
    ``Σ ← Σ - Σ[:, j] Σ[j, :] / (Σ_jj + ν_j)`` (O(n²)); the gains of all candidates are evaluated vectorised:
    A-optimal ``‖Σ[:, j]‖² / (Σ_jj + ν_j)`` (reduction of ``tr Σ``), D-optimal ``log(1 + Σ_jj / ν_j)``. With
    ``per_time`` the gain is divided by the time the pick adds (dwell, plus move and settle for a new energy).
    A repeat at energy j is one longer exposure: ν_j is the variance of the extra observation that turns the
    precision of ``k`` dwell units into that of ``k + 1`` (exact for any detector variance model).

    Parameters
    ----------
    cov
        Prior covariance (n × n).
    energies_eV
        Candidate energies (eV), increasing.
    pick_variance
        Noise variance of one measurement of ``k`` dwell units at given candidates.
    time_model
        Dwell and monochromator overheads.
    criterion
        ``"A"`` (expected squared error) or ``"D"`` (information gain).
    per_time
        Optimise gain per second of beam time (True) or per pick.
    n_points, time_budget_s, target_rmse
        Stopping rules (any that is set ends the selection): number of picks including repeats, total scan time
        (s), expected RMSE ``sqrt(tr Σ / n)``.
    max_picks
        Safety limit on the number of picks.
    lookahead
        With ``per_time``, rank an energy not yet in the design by the best gain per second of ``r`` picks there
        at once, ``r`` in 1, 2, 4, … ≤ ``lookahead`` (the move and settle are paid once for all of them); still
        one pick is taken. 1 = plain greedy.

    Raises
    ------
    ValueError
        No stopping rule, a bad criterion, or a time budget too small for the two end points.
    """
    if criterion not in ("A", "D"):
        raise DesignInputError(f"criterion must be 'A' or 'D', got {criterion!r}")
    if n_points is None and time_budget_s is None and target_rmse is None:
        raise DesignInputError("give at least one stopping rule: n_points, time_budget_s or target_rmse")
    if n_points is not None and n_points < 2:
        raise DesignInputError(f"n_points must be >= 2 (the two end points), got {n_points}")
    if target_rmse is not None and not target_rmse > 0:
        raise DesignInputError(f"target_rmse must be > 0, got {target_rmse}")
    n = cov.shape[0]
    if cov.shape != (n, n) or energies_eV.shape != (n,):
        raise ValueError(f"cov must be ({energies_eV.size}, {energies_eV.size}), got {cov.shape}")
    limit = min(max_picks, n_points) if n_points is not None else max_picks

    sigma = np.array(cov, dtype=np.float64, order="F", copy=True)
    diag = sigma.diagonal().copy()
    colsq = np.einsum("ij,ij->j", sigma, sigma)
    trace = float(diag.sum())
    prior_trace = trace
    all_idx = np.arange(n)
    counts = np.zeros(n, dtype=np.intp)
    v_now = np.full(n, np.inf)
    v_next = np.asarray(pick_variance(all_idx, np.ones(n, dtype=np.intp)), dtype=float)
    if v_next.shape != (n,) or not np.all(v_next > 0):
        raise ValueError("pick_variance must return n positive variances")
    nu = v_next.copy()
    if lookahead < 1:
        raise DesignInputError(f"lookahead must be >= 1 pick, got {lookahead}")
    ahead = [r for r in (2**i for i in range(1, 31)) if r <= lookahead] if per_time else []
    v_ahead = [np.asarray(pick_variance(all_idx, np.full(n, r, dtype=np.intp)), dtype=float) for r in ahead]
    selected: list[float] = []
    overhead = time_model.insertion_overhead_s(energies_eV, selected)
    elapsed = 0.0
    order: list[int] = []
    traces: list[float] = []
    times: list[float] = []
    min_time = time_model.scan_time_s(energies_eV[[0, -1]], time_model.dwell_s)
    if time_budget_s is not None and time_budget_s < min_time:
        raise DesignInputError(
            f"time budget {time_budget_s:g} s is too small for even the two end points "
            f"{energies_eV[0]:.2f} and {energies_eV[-1]:.2f} eV ({min_time:.3g} s)"
        )

    def take(j: int) -> None:
        nonlocal sigma, trace, elapsed, overhead
        u = sigma[:, j].copy()
        d = u[j] + nu[j]
        w = blas.dsymv(1.0, sigma, u)
        uu = float(u @ u)
        colsq[:] -= 2.0 * u * w / d - u * u * (uu / d**2)
        np.clip(colsq, 0.0, None, out=colsq)
        diag[:] -= u * u / d
        np.clip(diag, 0.0, None, out=diag)
        sigma = blas.dger(-1.0 / d, u, u, a=sigma, overwrite_a=1)
        trace -= uu / d
        elapsed += time_model.pick_cost_s + overhead[j]
        counts[j] += 1
        v_now[j] = v_next[j]
        v_next[j] = float(pick_variance(np.array([j]), np.array([counts[j] + 1]))[0])
        nu[j] = _incremental_variance(v_now[j : j + 1], v_next[j : j + 1])[0]
        if counts[j] == 1:
            selected.append(float(energies_eV[j]))
            overhead = time_model.insertion_overhead_s(energies_eV, selected)
        order.append(j)
        traces.append(max(trace, 0.0))
        times.append(elapsed)
        if len(order) % _REFRESH_EVERY == 0:
            colsq[:] = np.einsum("ij,ij->j", sigma, sigma)
            diag[:] = sigma.diagonal()

    # The per-pick BLAS calls are O(n²) on a ~1000² matrix: threads only add synchronisation, and busy-waiting
    # BLAS threads on a loaded machine slow the loop down many times over.
    with threadpool_limits(limits=1, user_api="blas"):
        take(0)
        take(n - 1)
        stop_reason = "n_points"
        while True:
            if target_rmse is not None and np.sqrt(max(trace, 0.0) / n) <= target_rmse:
                stop_reason = "target_rmse"
                break
            if len(order) >= limit:
                stop_reason = "n_points" if n_points is not None and len(order) >= n_points else "max_picks"
                break
            with np.errstate(divide="ignore", invalid="ignore"):
                if criterion == "A":
                    gain = colsq / (diag + nu)
                else:
                    gain = np.log1p(diag / nu)
            cost = time_model.pick_cost_s + overhead
            score = gain / cost if per_time else gain.copy()
            fresh = counts == 0
            for r, v_r in zip(ahead, v_ahead, strict=True):
                with np.errstate(divide="ignore", invalid="ignore"):
                    gain_r = colsq / (diag + v_r) if criterion == "A" else np.log1p(diag / v_r)
                    score_r = gain_r / (r * time_model.pick_cost_s + overhead)
                score = np.where(fresh & (score_r > score), score_r, score)
            score[~np.isfinite(score)] = -np.inf
            if time_budget_s is not None:
                score[elapsed + cost > time_budget_s * (1 + 1e-12)] = -np.inf
            j = int(np.argmax(score))
            if not np.isfinite(score[j]):
                stop_reason = "time_budget"
                break
            take(j)
    return GreedySelection(
        order=np.asarray(order, dtype=np.intp),
        counts=counts,
        trace=np.asarray(traces),
        time_s=np.asarray(times),
        stop_reason=stop_reason,
        prior_trace=prior_trace,
    )


@dataclass
class EnergyDesign:
    """An energy design: where to measure, how long, and what error to expect.

    Attributes
    ----------
    energies_eV
        Energies to measure (eV), sorted, unique.
    dwell_s
        Exposure per energy (s): number of picks × base dwell.
    total_time_s
        Scan time (s): dwell plus monochromator moves and settles.
    expected_rmse
        Expected RMSE of the GP reconstruction over the candidate grid (normalized units).
    criterion
        ``"A"`` or ``"D"``; ``per_time`` says whether gains were divided by time cost.
    curve
        Expected-error curve of the greedy selection: ``time_s`` and ``expected_rmse`` after every pick (before the
        exchange step; ``extra["exchange"]`` has the error and time before and after it).
    bias_variance
        ``time_s``, ``rmse``, ``bias_rmse``, ``variance_rmse`` at checkpoints along the curve.
    """

    energies_eV: NDArray[np.float64]
    dwell_s: NDArray[np.float64]
    total_time_s: float
    expected_rmse: float
    criterion: str
    per_time: bool
    n_picks: int
    stop_reason: str
    prior: dict[str, Any]
    noise: dict[str, Any]
    time_model: dict[str, Any]
    candidates: dict[str, Any]
    curve: dict[str, list[float]]
    bias_variance: dict[str, list[float]]
    compute_s: float
    prior_rmse: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (the CLI's ``design.json``)."""
        return {
            "energies_eV": [float(e) for e in self.energies_eV],
            "dwell_s": [float(d) for d in self.dwell_s],
            "total_time_s": self.total_time_s,
            "expected_rmse": self.expected_rmse,
            "prior_rmse": self.prior_rmse,
            "criterion": self.criterion,
            "per_time": self.per_time,
            "n_points": int(self.energies_eV.size),
            "n_picks": self.n_picks,
            "stop_reason": self.stop_reason,
            "compute_s": self.compute_s,
            "prior": self.prior,
            "noise": self.noise,
            "time_model": self.time_model,
            "candidates": self.candidates,
            "curve": self.curve,
            "bias_variance": self.bias_variance,
            **self.extra,
        }

    def save(self, path: str | Path) -> Path:
        """Write the design as JSON and return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def load_design(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read and check a saved design (a JSON path or an already-parsed dictionary).

    Raises
    ------
    InputFileError
        The path does not exist, is a directory or is not text (a ``FileNotFoundError`` too).
    DesignInputError
        Not JSON, or ``energies_eV``/``dwell_s`` missing, of different lengths, not sorted and unique, or not
        positive.
    """
    name = "design"
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        name = str(path)
        try:
            data = json.loads(read_text(path, "design file"))
        except json.JSONDecodeError as exc:
            raise DesignInputError(f"design file {path} is not valid JSON: {exc}") from exc
    for key in ("energies_eV", "dwell_s"):
        if key not in data:
            raise DesignInputError(f"{name} has no {key!r} list")
    energies = np.asarray(data["energies_eV"], dtype=float)
    dwell = np.asarray(data["dwell_s"], dtype=float)
    if energies.ndim != 1 or energies.size == 0 or energies.shape != dwell.shape:
        raise DesignInputError(f"{name}: energies_eV and dwell_s must be non-empty lists of the same length")
    if not (np.all(np.isfinite(energies)) and np.all(np.diff(energies) > 0)):
        raise DesignInputError(f"{name}: energies_eV must be finite, sorted and unique")
    if not (np.all(np.isfinite(dwell)) and np.all(dwell > 0)):
        raise DesignInputError(f"{name}: dwell_s must be finite and > 0")
    return data


def _checkpoints(selection: GreedySelection, n_checkpoints: int) -> NDArray[np.intp]:
    n = selection.order.size
    if n <= 2 or n_checkpoints < 1:
        return np.array([n], dtype=np.intp)
    return np.unique(np.round(np.geomspace(2, n, n_checkpoints)).astype(np.intp))


def design_energies(
    prior: GaussianProcessPrior,
    noise: TransmissionNoise | None = None,
    time_model: ScanTimeModel | None = None,
    *,
    criterion: Criterion = "A",
    per_time: bool = True,
    n_points: int | None = None,
    time_budget_s: float | None = None,
    target_rmse: float | None = None,
    max_picks: int = 5000,
    lookahead: int = 16,
    exchange_rounds: int = DEFAULT_EXCHANGE_ROUNDS,
    exchange_window: int = DEFAULT_EXCHANGE_WINDOW,
    n_checkpoints: int = 8,
) -> EnergyDesign:
    """Design the energies (and dwell per energy) of a XANES measurement before the beamtime.

    The noise of each candidate is evaluated at the prior mean (the sample is unknown yet).

    Parameters
    ----------
    prior
        GP prior on the candidate grid.
    noise
        Photon-counting noise; default :class:`TransmissionNoise` with its defaults.
    time_model
        Dwell and monochromator overheads; default :class:`ScanTimeModel` with its defaults.
    criterion, per_time, n_points, time_budget_s, target_rmse, max_picks, lookahead
        See :func:`greedy_select`.
    exchange_rounds, exchange_window
        A-criterion only: after the greedy, at most this many rounds of exact exchange moves
        (:func:`xbeam_bluesky.planning._exchange.exchange_refine`: move a dwell unit between energies, shift an
        energy by up to ``exchange_window`` grid steps, spend time freed by a dropped energy), accepted only if
        they lower the expected error without exceeding the time budget (or, without a budget, the greedy
        design's time) and the number of picks; the two end points stay. 0 rounds: the greedy design as it is.
        Skipped for designs of more than ``DEFAULT_MAX_ENERGIES`` (100) energies (cheap moves and settles; there
        the greedy is already at the continuous-dwell bound and a round would cost O(n² m)).
    n_checkpoints
        Points along the error curve at which the bias/variance split is computed.

    Returns
    -------
    EnergyDesign
    """
    started = time.perf_counter()
    noise = TransmissionNoise() if noise is None else noise
    time_model = ScanTimeModel() if time_model is None else time_model
    energies = np.asarray(prior.energies_eV, dtype=float)
    mean = np.asarray(prior.mean, dtype=float)
    cov = prior.covariance()

    def pick_variance(idx: NDArray[np.intp], k: NDArray[np.intp]) -> NDArray[np.float64]:
        return noise.variance(mean[idx], k * time_model.dwell_s)

    sel = greedy_select(
        cov,
        energies,
        pick_variance,
        time_model,
        criterion=criterion,
        per_time=per_time,
        n_points=n_points,
        time_budget_s=time_budget_s,
        target_rmse=target_rmse,
        max_picks=max_picks,
        lookahead=lookahead,
    )
    n = energies.size
    if sel.stop_reason == "max_picks":
        logger.warning(
            "design stopped at max_picks=%d before its stopping rule (expected RMSE %.4g)",
            max_picks,
            float(np.sqrt(sel.trace[-1] / n)),
        )
    counts, final_trace = sel.counts, float(sel.trace[-1])
    exchange: ExchangeResult | None = None
    if criterion == "A" and exchange_rounds > 0:
        # never longer than the greedy's design, unless the budget stopped the greedy (then the budget is the limit)
        budget = time_budget_s if sel.stop_reason == "time_budget" else float(sel.time_s[-1])
        exchange = exchange_refine(
            cov,
            energies,
            pick_variance,
            time_model,
            sel.counts,
            time_budget_s=float(budget),  # type: ignore[arg-type]
            max_picks=int(sel.order.size) if n_points is not None else max_picks,
            fixed=(0, n - 1),
            window=exchange_window,
            max_rounds=exchange_rounds,
        )
        if exchange.stop_reason != "skipped":
            counts, final_trace = exchange.counts, exchange.trace
    bv: dict[str, list[float]] = {"time_s": [], "rmse": [], "bias_rmse": [], "variance_rmse": []}
    marks = _checkpoints(sel, n_checkpoints)
    for m in marks:
        if m == marks[-1]:  # the final design (after the exchange step)
            idx = np.flatnonzero(counts)
            k = counts[idx]
            t_m, tr_m = float(time_model.scan_time_s(energies[idx], k * time_model.dwell_s)), final_trace
        else:
            idx, k = np.unique(sel.order[:m], return_counts=True)
            t_m, tr_m = float(sel.time_s[m - 1]), float(sel.trace[m - 1])
        bias, variance = error_decomposition(cov, idx, pick_variance(idx, k))
        bv["time_s"].append(t_m)
        bv["rmse"].append(float(np.sqrt(tr_m / n)))
        bv["bias_rmse"].append(float(np.sqrt(bias / n)))
        bv["variance_rmse"].append(float(np.sqrt(variance / n)))
    picked = np.flatnonzero(counts)
    dwell = counts[picked] * time_model.dwell_s
    step = float(np.median(np.diff(energies)))
    extra: dict[str, Any] = {"pick_order_eV": [float(energies[j]) for j in sel.order]}
    if exchange is not None:
        extra["exchange"] = exchange.to_dict(n)
        if exchange.stop_reason == "skipped":
            extra["exchange"]["note"] = f"skipped: {picked.size} energies > {DEFAULT_MAX_ENERGIES}"
    return EnergyDesign(
        energies_eV=energies[picked],
        dwell_s=dwell.astype(float),
        total_time_s=float(time_model.scan_time_s(energies[picked], dwell)),
        expected_rmse=float(np.sqrt(final_trace / n)),
        prior_rmse=float(np.sqrt(sel.prior_trace / n)),
        criterion=criterion,
        per_time=per_time,
        n_picks=int(counts.sum()),
        stop_reason=sel.stop_reason,
        prior=prior.summary(),
        noise=noise.to_dict(),
        time_model=time_model.to_dict(),
        candidates={"start_eV": float(energies[0]), "stop_eV": float(energies[-1]), "step_eV": step, "n": n},
        curve={
            "time_s": [float(t) for t in sel.time_s],
            "expected_rmse": [float(np.sqrt(t / n)) for t in sel.trace],
        },
        bias_variance=bv,
        compute_s=time.perf_counter() - started,
        extra=extra,
    )
