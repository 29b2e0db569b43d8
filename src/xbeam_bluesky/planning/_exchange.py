"""Exchange refinement of an A-optimal energy design at equal or lower beam time (Fedorov-type exchanges).

The greedy forward selection (:func:`xbeam_bluesky.planning._design.greedy_select`) never revisits a pick. Once it
has spent the time, a pick placed early can be worth less than the same time spent elsewhere. This step takes the
greedy's design (counts of dwell units per candidate) and applies exact improving moves:

* **transfer** one dwell unit from energy ``i`` to energy ``j`` (``j`` already measured or a new energy within
  ``window`` grid steps of a measured one; ``i`` is dropped when its last unit leaves);
* **relocate** energy ``i`` with all its dwell to a nearby candidate ``j`` not yet measured;
* **add** one dwell unit where the time a move freed (a dropped energy's settle) allows it.

Every move changes the posterior precision at two candidates at most, so the reduction of ``tr Σ_post`` (the
A-criterion) of all candidate moves is evaluated exactly by 2 × 2 Woodbury formulas on the current posterior;
a move is taken only if its scan time (:class:`ScanTimeModel`: dwell, settle, moves) stays within the budget.
Moves far apart (prior correlation below ``1e-3``) are applied together; the trace after such a batch is
recomputed exactly and the batch is replaced by its best single move if it is not better. The criterion never
increases, and the end points (``fixed``) are never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import cho_factor, cho_solve
from threadpoolctl import threadpool_limits

from xbeam_bluesky.planning._timing import ScanTimeModel

#: Prior correlation below which two moves are treated as independent and applied in the same round.
_INDEPENDENT_CORRELATION = 1e-3
#: Largest number of moves applied in one round.
_MAX_BATCH = 16
#: Moves considered for a batch (best reductions first).
_BATCH_CANDIDATES = 256
#: Designs with more measured energies are left as they are (a round costs O(n² m) for m energies; such designs
#: come from cheap moves and settles, where the greedy is already at the continuous-dwell bound).
DEFAULT_MAX_ENERGIES = 100


@dataclass
class ExchangeResult:
    """Result of :func:`exchange_refine`.

    Attributes
    ----------
    counts
        Dwell units per candidate after the exchanges.
    trace, trace_before
        ``tr Σ_post`` (units²) after and before (NaN when skipped).
    time_s, time_before_s
        Scan time (s) after and before.
    rounds
        Rounds run (each evaluates all moves once).
    moves
        Moves applied.
    stop_reason
        ``"converged"`` (no improving move fits), ``"max_rounds"`` or ``"skipped"`` (more than ``max_energies``
        energies: the design is returned unchanged).
    """

    counts: NDArray[np.intp]
    trace: float
    trace_before: float
    time_s: float
    time_before_s: float
    rounds: int
    moves: int
    stop_reason: str

    def to_dict(self, n_candidates: int) -> dict[str, float | int | str | None]:
        """JSON-friendly summary (RMSE = ``sqrt(trace / n_candidates)``)."""

        def rmse(trace: float) -> float | None:
            return None if math.isnan(trace) else math.sqrt(max(trace, 0.0) / n_candidates)

        return {
            "expected_rmse_before": rmse(self.trace_before),
            "expected_rmse_after": rmse(self.trace),
            "time_s_before": self.time_before_s,
            "time_s_after": self.time_s,
            "rounds": self.rounds,
            "moves": self.moves,
            "stop_reason": self.stop_reason,
        }


def design_trace(
    cov: NDArray[np.float64],
    counts: NDArray[np.intp],
    pick_variance,
) -> float:
    """``tr Σ_post`` of a design: one observation of ``counts[j]`` dwell units at every candidate with counts > 0."""
    idx = np.flatnonzero(counts)
    if idx.size == 0:
        return float(np.trace(cov))
    a = cov[np.ix_(idx, idx)] + np.diag(np.asarray(pick_variance(idx, counts[idx]), dtype=float))
    factor = cho_factor(a, lower=True, check_finite=False)
    ks = cov[idx, :]
    return float(np.trace(cov) - np.einsum("ij,ij->", ks, cho_solve(factor, ks, check_finite=False)))


def _precision(pick_variance, idx: NDArray[np.intp], k: NDArray[np.intp]) -> NDArray[np.float64]:
    """``1 / v(k)`` of one exposure of ``k`` dwell units, 0 where ``k == 0``; broadcasts ``idx`` and ``k``."""
    idx_b, k_b = np.broadcast_arrays(np.asarray(idx), np.asarray(k))
    out = np.zeros(idx_b.shape)
    pos = k_b > 0
    if np.any(pos):
        out[pos] = 1.0 / np.asarray(pick_variance(idx_b[pos], k_b[pos]), dtype=float)
    return out


def _apply(counts: NDArray[np.intp], src: int, dst: int, units: int) -> NDArray[np.intp]:
    """``counts`` with ``units`` dwell units moved from ``src`` (-1: added) to ``dst``."""
    out = counts.copy()
    if src >= 0:
        out[src] -= units
    out[dst] += units
    return out


def _involved(src: int, dst: int) -> list[int]:
    return [dst] if src < 0 else [dst, src]


def _pair_reduction(di, dj, a, b, s, hii, hjj, hij):
    """Reduction of ``tr Σ`` when the precision at i and j grows by ``di`` and ``dj`` (either may be < 0).

    ``Σ' = Σ - Σ[:, P] (I + D Σ_PP)⁻¹ D Σ[P, :]`` with ``D = diag(di, dj)``; ``a, b, s`` = ``Σ_ii, Σ_jj, Σ_ij``,
    ``h`` = Gram entries of the columns ``Σ[:, i]``, ``Σ[:, j]``.
    """
    det = (1.0 + di * a) * (1.0 + dj * b) - di * dj * s * s
    num = di * hii * (1.0 + dj * b) + dj * hjj * (1.0 + di * a) - 2.0 * di * dj * s * hij
    with np.errstate(divide="ignore", invalid="ignore"):
        red = num / det
    return np.where(det > 0, red, -np.inf)


@threadpool_limits.wrap(limits=1, user_api="blas")  # many small BLAS calls: threads only add synchronisation
def exchange_refine(
    cov: NDArray[np.float64],
    energies_eV: NDArray[np.float64],
    pick_variance,
    time_model: ScanTimeModel,
    counts: NDArray[np.intp],
    *,
    time_budget_s: float,
    max_picks: int | None = None,
    fixed: tuple[int, ...] = (),
    window: int = 5,
    max_rounds: int = 60,
    max_energies: int = DEFAULT_MAX_ENERGIES,
    rtol: float = 1e-9,
) -> ExchangeResult:
    """Improve a design's A-criterion by exact exchange moves without exceeding ``time_budget_s``.

    Parameters
    ----------
    cov
        Prior covariance (n × n).
    energies_eV
        Candidate energies (eV), increasing.
    pick_variance
        Noise variance of one exposure of ``k`` dwell units at given candidates (as for ``greedy_select``).
    time_model
        Dwell and monochromator overheads; the scan time of a design is ``time_model.scan_time_s``.
    counts
        Dwell units per candidate of the starting design.
    time_budget_s
        Largest allowed scan time (s); the starting design must fit.
    max_picks
        Largest allowed total of dwell units (None: no limit); additions stop there.
    fixed
        Candidates that keep at least one dwell unit (the two end points in :func:`design_energies`).
    window
        New energies are considered within this many grid steps of a measured one.
    max_rounds
        Bound on the rounds (each O(n² m) for m measured energies).
    max_energies
        A starting design with more measured energies is returned unchanged (``stop_reason="skipped"``).
    rtol
        A move must reduce ``tr Σ`` by more than ``rtol × tr Σ``.

    Returns
    -------
    ExchangeResult
    """
    n = cov.shape[0]
    e = np.asarray(energies_eV, dtype=float)
    counts = np.array(counts, dtype=np.intp, copy=True)
    if counts.shape != (n,) or np.any(counts < 0) or counts.sum() == 0:
        raise ValueError("counts must be n non-negative dwell units, not all zero")
    dwell = time_model.dwell_s
    pick_cost = time_model.pick_cost_s

    def scan_time(c: NDArray[np.intp]) -> float:
        s = np.flatnonzero(c)
        return time_model.scan_time_s(e[s], c[s] * dwell)

    limit_picks = math.inf if max_picks is None else max_picks
    tol_time = time_budget_s * (1 + 1e-12) + 1e-12
    fixed_mask = np.zeros(n, dtype=bool)
    fixed_mask[list(fixed)] = True
    time_before = scan_time(counts)
    if time_before > tol_time:
        raise ValueError(
            f"the starting design takes {time_before:.4g} s, more than the budget {time_budget_s:.4g} s"
        )
    tr_k = float(np.trace(cov))
    std = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    if np.count_nonzero(counts) > max_energies:  # not even the trace is computed (O(n m²))
        return ExchangeResult(counts, math.nan, math.nan, time_before, time_before, 0, 0, "skipped")
    trace = design_trace(cov, counts, pick_variance)
    trace_before = trace
    moves = 0
    stop_reason = "max_rounds"
    rounds = 0
    offsets = np.arange(-window, window + 1)
    while rounds < max_rounds:
        rounds += 1
        sel = np.flatnonzero(counts)
        cs = counts[sel]
        v = np.asarray(pick_variance(sel, cs), dtype=float)
        factor = cho_factor(cov[np.ix_(sel, sel)] + np.diag(v), lower=True, check_finite=False)
        ks = cov[sel, :]
        x = cho_solve(factor, ks, check_finite=False)  # A⁻¹ K[S, :]
        trace = tr_k - float(np.einsum("ij,ij->", ks, x))
        cand = np.unique(np.clip(sel[:, None] + offsets[None, :], 0, n - 1))
        pos_s = np.searchsorted(cand, sel)
        sig_c = cov[:, cand] - ks.T @ x[:, cand]  # posterior Σ[:, C]
        sig_diag = sig_c[cand, np.arange(cand.size)]
        colsq = np.einsum("ij,ij->j", sig_c, sig_c)
        gram = sig_c[:, pos_s].T @ sig_c  # (Σ²)[S, C]
        sig_sc = sig_c[sel, :]  # Σ[S, C]
        cc = counts[cand]
        p_now_s = 1.0 / v
        d_unit_i = _precision(pick_variance, sel, cs - 1) - p_now_s
        d_add_j = _precision(pick_variance, cand, cc + 1) - _precision(pick_variance, cand, cc)
        d_rel_j = _precision(pick_variance, cand[None, :], cs[:, None])
        ins = time_model.insertion_overhead_s(e[cand], e[sel])
        sav = time_model.removal_saving_s(e[sel])
        a = sig_diag[pos_s][:, None]
        b = sig_diag[None, :]
        hii = colsq[pos_s][:, None]
        hjj = colsq[None, :]
        not_self = cand[None, :] != sel[:, None]
        droppable = ~fixed_mask[sel]
        with np.errstate(divide="ignore", invalid="ignore"):
            r_unit = _pair_reduction(d_unit_i[:, None], d_add_j[None, :], a, b, sig_sc, hii, hjj, gram)
            r_rel = _pair_reduction(-p_now_s[:, None], d_rel_j, a, b, sig_sc, hii, hjj, gram)
            r_add = d_add_j * colsq / (1.0 + d_add_j * sig_diag)
        ok_unit = not_self & (droppable | (cs > 1))[:, None]
        ok_rel = (cc == 0)[None, :] & (droppable & (cs > 1))[:, None]
        dt_unit = ins[None, :] - np.where(cs == 1, sav, 0.0)[:, None]
        dt_rel = ins[None, :] - sav[:, None]
        slack = time_budget_s - scan_time(counts)
        picks_left = limit_picks - counts.sum()
        # every feasible improving move: reduction, source (-1: none), target, dwell units moved
        red_l, src_l, dst_l, units_l = [], [], [], []
        for red, ok, dt, units in (
            (r_unit, ok_unit, dt_unit, np.ones_like(r_unit, dtype=np.intp)),
            (r_rel, ok_rel, dt_rel, np.broadcast_to(cs[:, None], r_rel.shape)),
        ):
            ok = ok & np.isfinite(red) & (red > rtol * trace) & (dt <= slack + 1e-12)
            ii, jj = np.nonzero(ok)
            red_l.append(red[ii, jj])
            src_l.append(sel[ii])
            dst_l.append(cand[jj])
            units_l.append(units[ii, jj])
        if picks_left >= 1:
            dt_add = pick_cost + ins
            jj = np.flatnonzero(np.isfinite(r_add) & (r_add > rtol * trace) & (dt_add <= slack + 1e-12))
            red_l.append(r_add[jj])
            src_l.append(np.full(jj.size, -1))
            dst_l.append(cand[jj])
            units_l.append(np.ones(jj.size, dtype=np.intp))
        red_all = np.concatenate(red_l)
        if red_all.size == 0:
            stop_reason = "converged"
            break
        src_all, dst_all, units_all = np.concatenate(src_l), np.concatenate(dst_l), np.concatenate(units_l)
        order = np.argsort(-red_all, kind="stable")[:_BATCH_CANDIDATES]

        # the best single move whose exact scan time fits
        best = None
        for k in order:
            trial = _apply(counts, int(src_all[k]), int(dst_all[k]), int(units_all[k]))
            if scan_time(trial) <= tol_time and trial.sum() <= limit_picks:
                best = int(k)
                break
        if best is None:
            stop_reason = "converged"
            break
        single = _apply(counts, int(src_all[best]), int(dst_all[best]), int(units_all[best]))
        batch, used = single, _involved(int(src_all[best]), int(dst_all[best]))
        n_batch = 1
        for k in order:
            if n_batch >= _MAX_BATCH:
                break
            k = int(k)
            if k == best:
                continue
            idx = _involved(int(src_all[k]), int(dst_all[k]))
            corr = np.abs(cov[np.ix_(idx, used)]) / (std[idx][:, None] * std[used][None, :])
            if np.any(corr >= _INDEPENDENT_CORRELATION):
                continue
            trial = _apply(batch, int(src_all[k]), int(dst_all[k]), int(units_all[k]))
            if np.any(trial < 0) or scan_time(trial) > tol_time or trial.sum() > limit_picks:
                continue
            if np.any(fixed_mask & (counts > 0) & (trial == 0)):
                continue
            batch, used, n_batch = trial, used + idx, n_batch + 1
        if n_batch > 1:
            t_batch = design_trace(cov, batch, pick_variance)
            if t_batch < trace - red_all[best] * (1 - 1e-6):
                counts, moves = batch, moves + n_batch
                continue
        t_single = design_trace(cov, single, pick_variance)
        if not t_single < trace:  # rounding: no real improvement left
            stop_reason = "converged"
            break
        counts, moves = single, moves + 1
    else:
        trace = design_trace(cov, counts, pick_variance)
    return ExchangeResult(
        counts=counts,
        trace=max(trace, 0.0),
        trace_before=trace_before,
        time_s=scan_time(counts),
        time_before_s=time_before,
        rounds=rounds,
        moves=moves,
        stop_reason=stop_reason,
    )
