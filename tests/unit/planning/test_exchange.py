"""Exchange step after the greedy: exact criterion, never worse, within the time budget, a true local optimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from xbeam_bluesky.planning import (
    GaussianProcessPrior,
    ScanTimeModel,
    TransmissionNoise,
    design_energies,
    design_trace,
    exchange_refine,
    greedy_select,
)
from xbeam_bluesky.planning._exchange import _pair_reduction


def _direct_trace(cov, counts, pick_variance):
    """tr Σ_post with an explicit inverse (independent of the module's Cholesky/Woodbury code)."""
    idx = np.flatnonzero(counts)
    var = pick_variance(idx, counts[idx])
    inv = np.linalg.inv(cov[np.ix_(idx, idx)] + np.diag(var))
    return float(np.trace(cov - cov[:, idx] @ inv @ cov[idx, :]))


def _scan_time(tm, e, counts):
    idx = np.flatnonzero(counts)
    return tm.scan_time_s(e[idx], counts[idx] * tm.dwell_s)


@pytest.fixture
def setup(small_prior):
    cov = small_prior.covariance()
    e = small_prior.energies_eV
    rng = np.random.default_rng(7)
    base = rng.uniform(0.5e-4, 5e-4, e.size)

    def pick_variance(idx, k):  # a detector with a constant term: v(k) is not v(1)/k
        return base[idx] / k + 2e-5

    return cov, e, pick_variance


def test_pair_reduction_matches_direct_inverse(setup):
    """The 2 × 2 Woodbury reduction of tr Σ equals the direct posterior for precision changes of either sign."""
    cov, e, pv = setup
    counts = np.zeros(e.size, dtype=np.intp)
    counts[[0, 12, 30, 31, 55, 80]] = [1, 3, 2, 1, 4, 1]
    idx = np.flatnonzero(counts)
    sigma = (
        cov - cov[:, idx] @ np.linalg.inv(cov[np.ix_(idx, idx)] + np.diag(pv(idx, counts[idx]))) @ cov[idx, :]
    )
    before = np.trace(sigma)
    for i, j, di_units, dj_units in [(12, 40, -1, 1), (30, 31, -2, 1), (55, 56, -4, 4), (0, 80, 1, 2)]:
        new = counts.copy()
        new[i] += di_units
        new[j] += dj_units

        def prec(k, c):
            return 0.0 if c == 0 else 1.0 / pv(np.array([k]), np.array([c]))[0]

        di, dj = prec(i, new[i]) - prec(i, counts[i]), prec(j, new[j]) - prec(j, counts[j])
        red = _pair_reduction(
            di, dj, sigma[i, i], sigma[j, j], sigma[i, j],
            sigma[:, i] @ sigma[:, i], sigma[:, j] @ sigma[:, j], sigma[:, i] @ sigma[:, j],
        )  # fmt: skip
        assert before - red == pytest.approx(_direct_trace(cov, new, pv), rel=1e-9)


def test_removal_saving_is_the_scan_time_difference():
    tm = ScanTimeModel(dwell_s=0.1, settle_s=0.3, speed_eV_per_s=5.0, move_overhead_s=0.2)
    e = np.array([7100.0, 7103.5, 7110.0, 7111.0, 7140.0])
    full = tm.scan_time_s(e, 0.0)
    saving = tm.removal_saving_s(e)
    for k in range(e.size):
        assert saving[k] == pytest.approx(full - tm.scan_time_s(np.delete(e, k), 0.0), rel=1e-12)


@pytest.mark.parametrize("budget_rule", ["time", "picks"])
def test_exchange_never_worse_within_time_and_picks(setup, budget_rule):
    cov, e, pv = setup
    tm = ScanTimeModel(dwell_s=0.1, settle_s=0.4, speed_eV_per_s=10.0)
    n = e.size
    if budget_rule == "time":
        sel = greedy_select(cov, e, pv, tm, time_budget_s=12.0, lookahead=16)
        budget, max_picks = 12.0, None
    else:
        sel = greedy_select(cov, e, pv, tm, n_points=60, lookahead=16)
        budget, max_picks = float(sel.time_s[-1]), 60
    res = exchange_refine(
        cov,
        e,
        pv,
        tm,
        sel.counts,
        time_budget_s=budget,
        max_picks=max_picks,
        fixed=(0, n - 1),
        max_rounds=200,
    )
    assert res.trace_before == pytest.approx(_direct_trace(cov, sel.counts, pv), rel=1e-9)
    assert res.trace == pytest.approx(_direct_trace(cov, res.counts, pv), rel=1e-9)
    assert res.trace <= res.trace_before
    assert res.moves > 0 and res.trace < res.trace_before  # the greedy is not a local optimum here
    assert _scan_time(tm, e, res.counts) <= budget + 1e-9
    assert res.time_s == pytest.approx(_scan_time(tm, e, res.counts))
    assert res.counts[0] >= 1 and res.counts[-1] >= 1
    if max_picks is not None:
        assert res.counts.sum() <= max_picks
    assert res.stop_reason == "converged"


def test_exchange_stops_at_a_local_optimum_checked_by_brute_force(setup):
    """After convergence no single transfer, relocation (within the window) or addition that fits improves tr Σ."""
    cov, e, pv = setup
    tm = ScanTimeModel(dwell_s=0.1, settle_s=0.4, speed_eV_per_s=10.0)
    n = e.size
    sel = greedy_select(cov, e, pv, tm, time_budget_s=8.0, lookahead=16)
    res = exchange_refine(
        cov, e, pv, tm, sel.counts, time_budget_s=8.0, fixed=(0, n - 1), window=3, max_rounds=500
    )
    assert res.stop_reason == "converged"
    c = res.counts
    best = _direct_trace(cov, c, pv)
    measured = np.flatnonzero(c)
    near = {j for s in measured for j in range(max(0, s - 3), min(n, s + 4))}
    trials = []
    for i in measured:
        for j in near - {int(i)}:
            unit = c.copy()
            unit[i] -= 1
            unit[j] += 1
            trials.append(unit)
            if c[j] == 0 and c[i] > 1:
                move = c.copy()
                move[j], move[i] = c[i], 0
                trials.append(move)
    for j in near:
        add = c.copy()
        add[j] += 1
        trials.append(add)
    for t in trials:
        if t[0] < 1 or t[-1] < 1 or _scan_time(tm, e, t) > 8.0 + 1e-9:
            continue
        assert _direct_trace(cov, t, pv) >= best * (1 - 1e-9)


def test_exchange_finds_the_brute_force_optimum_on_a_tiny_problem():
    """6 candidates, 5 dwell units, a settle per energy: the exchange from a poor start reaches the optimum of all
    designs within the time budget (enumerated)."""
    e = np.linspace(7100.0, 7110.0, 6)
    std = np.array([0.02, 0.1, 0.3, 0.25, 0.1, 0.05])
    cov = std[:, None] * std[None, :] * np.exp(-(((e[:, None] - e[None, :]) / 3.0) ** 2))
    base = np.array([4e-3, 3e-3, 5e-3, 2e-3, 3e-3, 4e-3])

    def pv(idx, k):
        return base[idx] / k

    tm = ScanTimeModel(dwell_s=1.0, settle_s=0.6)
    budget = _scan_time(tm, e, np.array([1, 0, 0, 0, 0, 1])) + 3.0 + 0.6  # ends + 3 units + one more energy
    start = np.array([2, 0, 0, 0, 0, 1])  # a poor start: no point near the edge
    res = exchange_refine(cov, e, pv, tm, start, time_budget_s=budget, fixed=(0, 5), window=5, max_rounds=100)
    best = np.inf
    for c in itertools.product(range(6), repeat=6):
        c = np.array(c)
        if c[0] >= 1 and c[-1] >= 1 and _scan_time(tm, e, c) <= budget + 1e-9:
            best = min(best, _direct_trace(cov, c, pv))
    assert res.trace == pytest.approx(best, rel=1e-9)


def test_design_energies_uses_the_exchange_step(small_prior):
    tm = ScanTimeModel(dwell_s=0.05, settle_s=0.4, speed_eV_per_s=20.0)
    greedy = design_energies(small_prior, TransmissionNoise(), tm, time_budget_s=15.0, exchange_rounds=0)
    refined = design_energies(small_prior, TransmissionNoise(), tm, time_budget_s=15.0)
    assert "exchange" not in greedy.extra
    ex = refined.extra["exchange"]
    assert ex["expected_rmse_before"] == pytest.approx(greedy.expected_rmse, rel=1e-9)
    assert refined.expected_rmse == pytest.approx(ex["expected_rmse_after"])
    assert refined.expected_rmse <= greedy.expected_rmse
    assert refined.total_time_s <= 15.0 + 1e-9
    assert refined.total_time_s == pytest.approx(tm.scan_time_s(refined.energies_eV, refined.dwell_s))
    assert refined.energies_eV[0] == small_prior.energies_eV[0]
    assert refined.energies_eV[-1] == small_prior.energies_eV[-1]
    assert refined.bias_variance["rmse"][-1] == pytest.approx(refined.expected_rmse, rel=1e-9)
    # a fixed number of picks stays fixed
    by_picks = design_energies(small_prior, TransmissionNoise(), tm, n_points=70)
    assert by_picks.n_picks == 70
    assert round(by_picks.dwell_s.sum() / tm.dwell_s) == 70
    # a target-RMSE design still meets its target, in no more time than the greedy took
    target = design_energies(small_prior, TransmissionNoise(), tm, target_rmse=0.01)
    assert target.expected_rmse <= 0.01
    assert target.total_time_s <= target.curve["time_s"][-1] + 1e-9
    # the D criterion is left as the greedy made it
    d = design_energies(small_prior, TransmissionNoise(), tm, n_points=30, criterion="D")
    assert "exchange" not in d.extra


def test_design_trace_matches_direct_inverse(setup):
    cov, e, pv = setup
    counts = np.zeros(e.size, dtype=np.intp)
    counts[[0, 5, 33, 80]] = [2, 1, 5, 1]
    assert design_trace(cov, counts, pv) == pytest.approx(_direct_trace(cov, counts, pv), rel=1e-10)


def test_exchange_skips_designs_with_many_energies(setup):
    cov, e, pv = setup
    counts = np.zeros(e.size, dtype=np.intp)
    counts[[0, 10, 20, 30, 80]] = 1
    tm = ScanTimeModel(dwell_s=0.1)
    res = exchange_refine(cov, e, pv, tm, counts, time_budget_s=10.0, fixed=(0, 80), max_energies=4)
    assert res.stop_reason == "skipped" and res.moves == 0
    np.testing.assert_array_equal(res.counts, counts)
    # design_energies keeps the greedy design and says why
    energies = np.linspace(7100.0, 7160.0, 601)
    wide = GaussianProcessPrior(
        energies_eV=energies,
        mean=1.0 / (1.0 + np.exp(-(energies - 7115.0) / 1.5)),
        std=0.02 + 0.2 * np.exp(-(((energies - 7118.0) / 20.0) ** 2)),
        length_scale_eV=0.5,
    )
    many = design_energies(wide, TransmissionNoise(), ScanTimeModel(dwell_s=0.01), n_points=400)
    assert many.energies_eV.size > 100
    assert many.extra["exchange"]["stop_reason"] == "skipped"
    assert many.expected_rmse == pytest.approx(many.curve["expected_rmse"][-1])
