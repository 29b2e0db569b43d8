"""Greedy design: analytic checks against direct matrix inverses, time accounting, stopping rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xbeam_bluesky.planning import (
    ScanTimeModel,
    TransmissionNoise,
    design_energies,
    error_decomposition,
    greedy_select,
    load_design,
    reconstruct,
)
from xbeam_bluesky.spectra import PhotonNoiseModel


def _direct_posterior(cov, idx, var):
    """Σ_post = K - K[:, M] (K[M, M] + N)^-1 K[M, :] with an explicit inverse."""
    inv = np.linalg.inv(cov[np.ix_(idx, idx)] + np.diag(var))
    return cov - cov[:, idx] @ inv @ cov[idx, :]


def test_one_point_posterior_variance_closed_form(small_prior):
    cov = small_prior.covariance()
    j, v = 30, 0.01**2
    _, std = reconstruct(small_prior, [small_prior.energies_eV[j]], [0.5], [v])
    expected = np.diag(cov) - cov[:, j] ** 2 / (cov[j, j] + v)
    np.testing.assert_allclose(std**2, expected, rtol=1e-9, atol=1e-14)


def test_rank_one_updates_match_brute_force_greedy(small_prior):
    """Every pick equals the argmax of gains computed by direct inverses; traces match the inverse."""
    cov = small_prior.covariance()
    e = small_prior.energies_eV
    n = e.size
    rng = np.random.default_rng(3)
    base = rng.uniform(0.5e-4, 5e-4, n)

    def pick_variance(idx, k):  # a detector with a constant term: v(k) is not v(1)/k
        return base[idx] / k + 2e-5

    tm = ScanTimeModel(dwell_s=1.0, settle_s=0.3, pick_overhead_s=0.1)
    sel = greedy_select(cov, e, pick_variance, tm, criterion="A", per_time=True, n_points=40)
    assert np.unique(sel.order).size < sel.order.size, "this case must exercise repeats"
    for step in range(2, sel.order.size):
        idx, k = np.unique(sel.order[:step], return_counts=True)
        post = _direct_posterior(cov, idx, pick_variance(idx, k))
        np.testing.assert_allclose(sel.trace[step - 1], np.trace(post), rtol=1e-8)
        # brute force: trace after adding each candidate once more, per unit of added time
        scores = np.empty(n)
        for j in range(n):
            cnt = dict(zip(idx.tolist(), k.tolist(), strict=True))
            cnt[j] = cnt.get(j, 0) + 1
            jj = np.array(sorted(cnt))
            kk = np.array([cnt[i] for i in jj])
            cost = tm.dwell_s + tm.pick_overhead_s + tm.insertion_overhead_s(e[[j]], e[idx])[0]
            scores[j] = (np.trace(post) - np.trace(_direct_posterior(cov, jj, pick_variance(jj, kk)))) / cost
        assert scores[sel.order[step]] >= scores.max() * (1 - 1e-9)  # argmax up to rounding ties


def test_d_criterion_matches_log_det_gain(small_prior):
    """D-optimal picks maximise log(1 + Σ_jj/σ²) of the directly computed posterior (σ² per pick constant)."""
    cov = small_prior.covariance()
    e = small_prior.energies_eV
    var = np.full(e.size, 1e-4)
    sel = greedy_select(
        cov, e, lambda i, k: var[i] / k, ScanTimeModel(), criterion="D", per_time=False, n_points=12
    )
    for step in range(2, sel.order.size):
        idx, k = np.unique(sel.order[:step], return_counts=True)
        post = _direct_posterior(cov, idx, var[idx] / k)
        gains = np.log1p(np.diag(post) / var)
        assert gains[sel.order[step]] >= gains.max() * (1 - 1e-9)  # argmax up to symmetric ties


def test_a_criterion_monotone_and_rmse_curve(small_prior):
    d = design_energies(small_prior, TransmissionNoise(), ScanTimeModel(dwell_s=0.1), n_points=60)
    trace = np.asarray(d.curve["expected_rmse"])
    assert np.all(np.diff(trace) <= 1e-15)
    assert d.expected_rmse < d.prior_rmse
    assert np.all(np.diff(d.curve["time_s"]) > 0)


def test_design_time_accounting_matches_scan_time(small_prior):
    tm = ScanTimeModel(
        dwell_s=0.2, settle_s=0.4, speed_eV_per_s=5.0, move_overhead_s=0.1, pick_overhead_s=0.05
    )
    d = design_energies(small_prior, TransmissionNoise(), tm, time_budget_s=30.0)
    assert d.total_time_s == pytest.approx(d.curve["time_s"][-1], rel=1e-9)
    assert d.total_time_s == pytest.approx(tm.scan_time_s(d.energies_eV, d.dwell_s), rel=1e-12)
    assert d.total_time_s <= 30.0 + 1e-9
    assert d.stop_reason == "time_budget"
    # nothing else fits: the cheapest addition is one more dwell at an existing energy
    assert d.total_time_s + tm.dwell_s + tm.pick_overhead_s > 30.0
    assert np.all(np.diff(d.energies_eV) > 0)
    assert np.allclose(d.dwell_s / tm.dwell_s, np.round(d.dwell_s / tm.dwell_s))


def test_overhead_turns_picks_into_longer_dwell(small_prior):
    cheap = design_energies(small_prior, TransmissionNoise(), ScanTimeModel(dwell_s=0.1), n_points=80)
    costly = design_energies(
        small_prior, TransmissionNoise(), ScanTimeModel(dwell_s=0.1, settle_s=5.0), n_points=80
    )
    assert costly.energies_eV.size < cheap.energies_eV.size
    assert costly.dwell_s.max() > cheap.dwell_s.max()


def test_target_rmse_stops_at_first_pick_below(small_prior):
    d = design_energies(small_prior, TransmissionNoise(), ScanTimeModel(dwell_s=0.1), target_rmse=0.01)
    rmse = d.curve["expected_rmse"]
    assert d.stop_reason == "target_rmse"
    assert rmse[-1] <= 0.01 < rmse[-2]


def test_budget_too_small_for_end_points(small_prior):
    with pytest.raises(ValueError, match="too small for even the two end points"):
        design_energies(small_prior, time_budget_s=0.05)


def test_no_stopping_rule_and_bad_criterion(small_prior):
    with pytest.raises(ValueError, match="stopping rule"):
        design_energies(small_prior)
    with pytest.raises(ValueError, match="criterion"):
        design_energies(small_prior, n_points=5, criterion="E")


def test_design_is_reproducible_and_round_trips(small_prior, tmp_path):
    kwargs = {"time_model": ScanTimeModel(dwell_s=0.1, settle_s=0.2), "n_points": 50}
    a = design_energies(small_prior, TransmissionNoise(), **kwargs)
    b = design_energies(small_prior, TransmissionNoise(), **kwargs)
    np.testing.assert_array_equal(a.energies_eV, b.energies_eV)
    np.testing.assert_array_equal(a.dwell_s, b.dwell_s)
    path = a.save(tmp_path / "design.json")
    data = load_design(path)
    assert data["energies_eV"] == a.energies_eV.tolist()
    assert data["prior"]["length_scale_eV"] == 3.0
    assert data["noise"]["detector_gain"] == PhotonNoiseModel().gain
    json.dumps(data)  # everything JSON-friendly


def test_load_design_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        load_design(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"energies_eV": [7112.0, 7110.0], "dwell_s": [1.0, 1.0]}))
    with pytest.raises(ValueError, match=r"bad\.json.*sorted"):
        load_design(bad)
    with pytest.raises(ValueError, match="dwell_s"):
        load_design({"energies_eV": [1.0]})


def test_error_decomposition_matches_definition(small_prior):
    cov = small_prior.covariance()
    idx = np.array([0, 10, 25, 40, 80])
    var = np.array([1e-3, 2e-4, 5e-4, 1e-4, 1e-3])
    bias, variance = error_decomposition(cov, idx, var)
    a = cov[:, idx] @ np.linalg.inv(cov[np.ix_(idx, idx)] + np.diag(var))
    s = np.zeros((idx.size, cov.shape[0]))
    s[np.arange(idx.size), idx] = 1.0
    r = np.eye(cov.shape[0]) - a @ s
    assert bias == pytest.approx(np.trace(r @ cov @ r.T), rel=1e-8)
    assert variance == pytest.approx(np.trace(a @ np.diag(var) @ a.T), rel=1e-8)
    assert bias + variance == pytest.approx(np.trace(_direct_posterior(cov, idx, var)), rel=1e-8)


def test_bias_variance_curve_recorded(small_prior):
    d = design_energies(small_prior, TransmissionNoise(), ScanTimeModel(dwell_s=0.1), n_points=100)
    bv = d.bias_variance
    total = np.asarray(bv["bias_rmse"]) ** 2 + np.asarray(bv["variance_rmse"]) ** 2
    np.testing.assert_allclose(total, np.asarray(bv["rmse"]) ** 2, rtol=1e-6)
    assert bv["bias_rmse"][-1] < bv["bias_rmse"][0]


def test_reconstruction_recovers_a_dense_precise_measurement(small_prior):
    rng = np.random.default_rng(0)
    truth = rng.multivariate_normal(
        small_prior.mean, small_prior.covariance() + 1e-12 * np.eye(small_prior.size)
    )
    mean, std = reconstruct(small_prior, small_prior.energies_eV[::2], truth[::2], np.full(41, 1e-8))
    assert np.sqrt(np.mean((mean - truth) ** 2)) < 1e-3
    assert np.all(std < 0.01)


def test_reconstruct_rejects_off_grid_energies(small_prior):
    with pytest.raises(ValueError, match="not on the candidate grid"):
        reconstruct(small_prior, [7100.2], [0.1], [1e-4])


def test_lookahead_pays_the_move_once_for_several_picks(small_prior):
    """With a costly move and a short dwell unit, plain greedy under-opens energies; lookahead does better."""
    tm = ScanTimeModel(dwell_s=0.02, settle_s=2.0)
    plain = design_energies(small_prior, TransmissionNoise(), tm, time_budget_s=40.0, lookahead=1)
    ahead = design_energies(small_prior, TransmissionNoise(), tm, time_budget_s=40.0, lookahead=16)
    assert ahead.expected_rmse < plain.expected_rmse
    assert ahead.total_time_s <= 40.0 + 1e-9
    with pytest.raises(ValueError, match="lookahead"):
        design_energies(small_prior, n_points=5, lookahead=0)
