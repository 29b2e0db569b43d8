"""Benchmark of the Bayesian energy design against the conventional region grid (one JSON line).

Leave-one-out over the bundled Fe K library: for every spectrum j, the prior (mean, std, and the kernel's length
scale and energy warp, fitted by maximum likelihood) is built from the OTHER spectra only; j is then "measured" in simulation with Poisson photon noise on counts
(:meth:`TransmissionNoise.simulate`, the sim camera's gain and flux) at (a) the design's energies and dwells and
(b) the conventional region grid with a uniform dwell, both at the SAME total beam time including monochromator
moves, settles and readout (the sim beamline's mono timing). Both are reconstructed on the 1051-point grid by the
same GP posterior mean; the RMSE against spectrum j is averaged over the library.

The beam-time ratio is the fraction of the conventional scan's time at which the design reaches the conventional
grid's mean RMSE, interpolated between the fractions evaluated. The design at a fraction ``f`` is what
``design_energies`` does for a budget ``f × T``: the greedy selection, then the exchange step
(``exchange_refine`` with the ``design_energies`` defaults) at that budget. The greedy is run once per spectrum
for the full time and its prefix within ``f × T`` is refined (the greedy for the smaller budget is the same
sequence up to its last few picks); ``product_path_check`` compares that with ``design_energies`` itself on the
first spectra. The greedy prefixes alone (the design before the exchange step) are measured with the same noise
draws (``*_greedy_only``).
It is measured with the sim beamline's overheads and with none (dwell only, the published setting), for the
conventional grid with 0.5 eV steps over the edge, and (with overheads) for 0.2 and 1.0 eV edge steps; and with
METHODS §1's stationary kernel (``with_overheads_stationary_kernel``: the prior as published, same noise draws).

Under the full-library prior, the dwell-only ratio is also computed from expected errors, for the greedy design and
for the optimal continuous dwell allocation over all 1051 candidates (multiplicative algorithm, a bound for any
design with this prior and noise).

Also timed: a 1051-candidate, 320-pick A-optimal design (selection only, and the whole ``design_energies`` call
with the covariance build and the bias/variance checkpoints), median of 5 runs.

Run: ``.venv/bin/python benchmarks/energy_design.py [--max-spectra N] [--timing-only]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from xbeam_bluesky.planning import (
    DEFAULT_EXCHANGE_ROUNDS,
    DEFAULT_EXCHANGE_WINDOW,
    GaussianProcessPrior,
    ScanTimeModel,
    TransmissionNoise,
    conventional_grid,
    design_energies,
    exchange_refine,
    fe_k_grid,
    greedy_select,
    grid_indices,
    reconstruct,
)
from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

#: Sim camera (devices/sim/camera_model.py defaults): 2e4 photons/pixel/s, 9.31 ADU per photon.
PHOTON_FLUX = 2.0e4
GAIN = 9.31
#: Sim beamline mono timing and camera readout (devices/sim/beamline.py defaults).
MONO_SPEED_EV_S = 20.0
MONO_SETTLE_S = 0.1
READOUT_S = 0.01
#: Conventional grid exposure per point and the design's dwell unit (s).
CONVENTIONAL_DWELL_S = 0.2
DESIGN_DWELL_S = 0.05
#: Lookahead of the per-time greedy (the ``design_energies`` default).
LOOKAHEAD = 16
#: Fe K edge on the calibrated energy scale (eV).
E0_EV = 7112.0
#: Fractions of the conventional scan time at which the design is evaluated.
FRACTIONS = np.array([0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0])


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _match_fraction(design_rmse: np.ndarray, target: float) -> float:
    """Smallest time fraction at which the (interpolated) design RMSE reaches ``target``."""
    below = np.flatnonzero(design_rmse <= target)
    if below.size == 0:
        return math.inf
    k = int(below[0])
    if k == 0:
        return float(FRACTIONS[0])
    r0, r1 = FRACTIONS[k - 1], FRACTIONS[k]
    y0, y1 = design_rmse[k - 1], design_rmse[k]
    return float(r0 + (y0 - target) / (y0 - y1) * (r1 - r0))


def loo_priors(grid: np.ndarray, names: list[str], lib: np.ndarray, n_out: int, kernel: str) -> list:
    """The prior for each left-out spectrum ``0 .. n_out-1``, built (and fitted) from all the other spectra."""
    priors = []
    for j in range(n_out):
        keep = np.arange(len(names)) != j
        priors.append(
            GaussianProcessPrior.from_matrix(
                grid, lib[keep], names=tuple(np.asarray(names)[keep]), kernel=kernel
            )
        )
    return priors


def leave_one_out(
    grid: np.ndarray,
    lib: np.ndarray,
    priors: list[GaussianProcessPrior],
    noise: TransmissionNoise,
    overheads: bool,
    seed: int,
    edge_step_eV: float = 0.5,
) -> dict[str, float]:
    """Mean LOO RMSE of design and conventional grid at equal time, and the time ratio to match.

    Spectra ``0 .. len(priors)-1`` are left out in turn; ``priors[j]`` is built from all the other spectra.
    """
    n_out = len(priors)
    settle = MONO_SETTLE_S + READOUT_S if overheads else 0.0
    speed = MONO_SPEED_EV_S if overheads else math.inf
    conv_tm = ScanTimeModel(dwell_s=CONVENTIONAL_DWELL_S, settle_s=settle, speed_eV_per_s=speed)
    design_tm = ScanTimeModel(dwell_s=DESIGN_DWELL_S, settle_s=settle, speed_eV_per_s=speed)
    conv_e = conventional_grid(E0_EV, grid[0], grid[-1], edge_step_eV=edge_step_eV, snap_to=grid)
    conv_idx = grid_indices(grid, conv_e)
    budget = conv_tm.scan_time_s(conv_e, CONVENTIONAL_DWELL_S)
    design_rmse = np.zeros((n_out, FRACTIONS.size))
    greedy_rmse = np.zeros((n_out, FRACTIONS.size))
    greedy_expected = np.zeros(n_out)
    conv_rmse = np.zeros(n_out)
    conv_expected = np.zeros(n_out)
    expected = np.zeros(n_out)
    n_energies = np.zeros(n_out)
    design_time = np.zeros(n_out)
    for j, prior in enumerate(priors):
        cov = prior.covariance()
        truth = lib[j]

        def pick_variance(idx, k, mean=prior.mean):
            return noise.variance(mean[idx], k * DESIGN_DWELL_S)

        sel = greedy_select(cov, grid, pick_variance, design_tm, time_budget_s=budget, lookahead=LOOKAHEAD)
        greedy_expected[j] = math.sqrt(sel.trace[-1] / grid.size)
        for f, frac in enumerate(FRACTIONS):
            m = int(np.searchsorted(sel.time_s, frac * budget * (1 + 1e-12), side="right"))
            greedy_counts = np.bincount(sel.order[: max(m, 2)], minlength=grid.size)
            f_budget = max(frac * budget, float(sel.time_s[max(m, 2) - 1]))  # at least the two end points
            ex = exchange_refine(
                cov, grid, pick_variance, design_tm, greedy_counts, time_budget_s=f_budget,
                fixed=(0, grid.size - 1), window=DEFAULT_EXCHANGE_WINDOW, max_rounds=DEFAULT_EXCHANGE_ROUNDS,
            )  # fmt: skip
            for counts_all, out in ((greedy_counts, greedy_rmse), (ex.counts, design_rmse)):
                idx = np.flatnonzero(counts_all)
                dwell = counts_all[idx] * DESIGN_DWELL_S
                rng = np.random.default_rng([seed, j, f])  # the same seed for both designs
                y = noise.simulate(truth[idx], dwell, rng)
                mean, _ = reconstruct(prior, grid[idx], y, noise.variance(prior.mean[idx], dwell), cov=cov)
                out[j, f] = _rmse(mean, truth)
            if frac == 1.0:
                n_energies[j] = np.count_nonzero(ex.counts)
                skipped = ex.stop_reason == "skipped"  # too many energies: design_energies keeps the greedy's
                expected[j] = math.sqrt((sel.trace[max(m, 2) - 1] if skipped else ex.trace) / grid.size)
                design_time[j] = ex.time_s
        rng = np.random.default_rng([seed, j, 999])
        y = noise.simulate(truth[conv_idx], CONVENTIONAL_DWELL_S, rng)
        var = noise.variance(prior.mean[conv_idx], CONVENTIONAL_DWELL_S)
        mean, std = reconstruct(prior, conv_e, y, np.broadcast_to(var, y.shape), cov=cov)
        conv_rmse[j] = _rmse(mean, truth)
        conv_expected[j] = float(np.sqrt(np.mean(std**2)))
    mean_design = design_rmse.mean(axis=0)
    mean_greedy = greedy_rmse.mean(axis=0)
    target = float(conv_rmse.mean())
    return {
        "kernel": priors[0].summary()["kernel"],
        "length_scale_eV_mean": float(np.mean([p.length_scale_eV for p in priors])),
        "edge_step_eV": edge_step_eV,
        "total_time_s": float(budget),
        "conventional_points": int(conv_e.size),
        "design_points_mean": float(n_energies.mean()),
        "design_time_s_mean": float(design_time.mean()),
        "rmse_conventional": target,
        "rmse_conventional_expected": float(conv_expected.mean()),
        "rmse_design_equal_time": float(mean_design[-1]),
        "rmse_design_expected": float(expected.mean()),
        "design_better_fraction": float(np.mean(design_rmse[:, -1] < conv_rmse)),
        "time_ratio_to_match": _match_fraction(mean_design, target),
        "rmse_design_by_fraction": [round(float(r), 6) for r in mean_design],
        "rmse_design_equal_time_greedy_only": float(mean_greedy[-1]),
        "rmse_design_expected_greedy_only": float(greedy_expected.mean()),
        "time_ratio_to_match_greedy_only": _match_fraction(mean_greedy, target),
    }


def product_path_check(
    grid: np.ndarray, priors: list[GaussianProcessPrior], noise: TransmissionNoise, n_check: int = 3
) -> dict[str, float]:
    """Largest relative difference of the expected RMSE between the benchmark's designs (refined greedy prefix)
    and ``design_energies`` with the same budget, over the first ``n_check`` left-out spectra and all fractions
    (with overheads, 0.5 eV grid)."""
    tm = ScanTimeModel(
        dwell_s=DESIGN_DWELL_S, settle_s=MONO_SETTLE_S + READOUT_S, speed_eV_per_s=MONO_SPEED_EV_S
    )
    conv_tm = ScanTimeModel(
        dwell_s=CONVENTIONAL_DWELL_S, settle_s=MONO_SETTLE_S + READOUT_S, speed_eV_per_s=MONO_SPEED_EV_S
    )
    budget = conv_tm.scan_time_s(
        conventional_grid(E0_EV, grid[0], grid[-1], snap_to=grid), CONVENTIONAL_DWELL_S
    )
    worst = 0.0
    for prior in priors[:n_check]:
        cov = prior.covariance()

        def pick_variance(idx, k, mean=prior.mean):
            return noise.variance(mean[idx], k * DESIGN_DWELL_S)

        sel = greedy_select(cov, grid, pick_variance, tm, time_budget_s=budget, lookahead=LOOKAHEAD)
        for frac in FRACTIONS[FRACTIONS * budget >= sel.time_s[1]]:  # budgets that fit the two end points
            m = int(np.searchsorted(sel.time_s, frac * budget * (1 + 1e-12), side="right"))
            ex = exchange_refine(
                cov, grid, pick_variance, tm, np.bincount(sel.order[: max(m, 2)], minlength=grid.size),
                time_budget_s=frac * budget, fixed=(0, grid.size - 1), window=DEFAULT_EXCHANGE_WINDOW,
                max_rounds=DEFAULT_EXCHANGE_ROUNDS,
            )  # fmt: skip
            design = design_energies(prior, noise, tm, time_budget_s=frac * budget, n_checkpoints=0)
            bench = math.sqrt(
                (sel.trace[max(m, 2) - 1] if ex.stop_reason == "skipped" else ex.trace) / grid.size
            )
            worst = max(worst, abs(bench - design.expected_rmse) / design.expected_rmse)
    return {"spectra": n_check, "max_rel_diff_expected_rmse": worst}


def _continuous_a_optimal_rmse(
    cov: np.ndarray, var_1s: np.ndarray, total_s: float, iterations: int = 60
) -> float:
    """Expected RMSE of the best dwell allocation over all candidates (continuous relaxation, no overheads).

    Minimises ``tr (K⁻¹ + diag(t / v₁))⁻¹`` over dwells ``t ≥ 0`` with ``Σ t = total_s`` by the classical
    multiplicative algorithm for A-optimal designs (convex problem); ``v₁`` is the variance of a 1 s exposure.
    """
    n = cov.shape[0]
    t = np.full(n, total_s / n)
    for _ in range(iterations + 1):
        s = np.sqrt(t / var_1s)
        chol = np.linalg.cholesky(np.eye(n) + s[:, None] * cov * s[None, :])
        x = np.linalg.solve(chol, (cov * s[None, :]).T)
        post = cov - x.T @ x
        d = np.einsum("ij,ij->j", post, post) / var_1s
        t = t * d / np.sum(t * d) * total_s
    return float(np.sqrt(np.trace(post) / n))


def expected_ratios_no_overheads(prior: GaussianProcessPrior, grid: np.ndarray) -> dict[str, float]:
    """Beam-time ratio to match the conventional grid's EXPECTED RMSE under the full-library prior, dwell only:
    for the greedy design and for the optimal continuous allocation (a bound for any design with this prior)."""
    noise = TransmissionNoise(
        i0_counts_per_s=PHOTON_FLUX * GAIN,
        mu_t_pre_edge=0.5,
        edge_jump=1.0,
        detector=PhotonNoiseModel(GAIN, 0.0),
    )
    cov = prior.covariance()
    conv_e = conventional_grid(E0_EV, grid[0], grid[-1], snap_to=grid)
    idx = grid_indices(grid, conv_e)
    budget = conv_e.size * CONVENTIONAL_DWELL_S
    _, std = reconstruct(
        prior, conv_e, prior.mean[idx], noise.variance(prior.mean[idx], CONVENTIONAL_DWELL_S), cov=cov
    )
    target = float(np.sqrt(np.mean(std**2)))
    design = design_energies(prior, noise, ScanTimeModel(dwell_s=DESIGN_DWELL_S), time_budget_s=budget)
    t, r = np.asarray(design.curve["time_s"]), np.asarray(design.curve["expected_rmse"])
    greedy = float(t[np.argmax(r <= target)] / budget) if r[-1] <= target else math.inf
    var_1s = noise.variance(prior.mean, 1.0)
    lo, hi = 0.3, 1.0
    for _ in range(7):  # bisection on the fraction of the budget
        mid = (lo + hi) / 2
        if _continuous_a_optimal_rmse(cov, var_1s, mid * budget) <= target:
            hi = mid
        else:
            lo = mid
    return {
        "conventional_expected_rmse": target,
        "expected_ratio_greedy": greedy,
        "expected_ratio_optimal_bracket": [lo, hi],
    }


def time_design(prior: GaussianProcessPrior, noise: TransmissionNoise) -> dict[str, float]:
    """Median wall (and CPU) time of a 320-pick A-optimal design on the full candidate grid."""
    tm = ScanTimeModel(
        dwell_s=DESIGN_DWELL_S, settle_s=MONO_SETTLE_S + READOUT_S, speed_eV_per_s=MONO_SPEED_EV_S
    )
    cov = prior.covariance()

    def pick_variance(idx, k):
        return noise.variance(prior.mean[idx], k * DESIGN_DWELL_S)

    select, select_cpu, exch, exch_cpu, full, full_cpu = [], [], [], [], [], []
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        sel = greedy_select(cov, prior.energies_eV, pick_variance, tm, n_points=320, lookahead=LOOKAHEAD)
        select.append(time.perf_counter() - t)
        select_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        exchange_refine(
            cov, prior.energies_eV, pick_variance, tm, sel.counts, time_budget_s=float(sel.time_s[-1]),
            max_picks=320, fixed=(0, prior.size - 1), window=DEFAULT_EXCHANGE_WINDOW,
            max_rounds=DEFAULT_EXCHANGE_ROUNDS,
        )  # fmt: skip
        exch.append(time.perf_counter() - t)
        exch_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        design_energies(prior, noise, tm, n_points=320)
        full.append(time.perf_counter() - t)
        full_cpu.append(time.process_time() - c)
    return {
        "design_320_select_s": float(np.median(select)),
        "design_320_select_cpu_s": float(np.median(select_cpu)),
        "design_320_exchange_s": float(np.median(exch)),
        "design_320_exchange_cpu_s": float(np.median(exch_cpu)),
        "design_320_select_plus_exchange_s": float(np.median(np.add(select, exch))),
        "design_320_total_s": float(np.median(full)),
        "design_320_total_cpu_s": float(np.median(full_cpu)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-spectra", type=int, default=None, help="leave out only the first N spectra")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-only", action="store_true", help="only time the 320-pick design")
    args = parser.parse_args()
    started = time.perf_counter()
    grid = fe_k_grid()
    aligned = aligned_library(load_library(), grid)
    names, lib = list(aligned.names), np.asarray(aligned.matrix)
    noise = TransmissionNoise(
        i0_counts_per_s=PHOTON_FLUX * GAIN,
        mu_t_pre_edge=0.5,
        edge_jump=1.0,
        detector=PhotonNoiseModel(gain=GAIN),
    )
    t = time.perf_counter()
    full_prior = GaussianProcessPrior.from_matrix(grid, lib, names=tuple(names))
    prior_s = time.perf_counter() - t
    timing = time_design(full_prior, noise)
    if args.timing_only:
        print(json.dumps({"benchmark": "energy_design_timing", **timing, "load_1min": os.getloadavg()[0]}))
        return
    n = len(names) if args.max_spectra is None else min(args.max_spectra, len(names))
    # One BLAS thread: the machine is shared, and busy-waiting BLAS threads only slow the many small solves.
    with threadpool_limits(limits=1, user_api="blas"):
        t = time.perf_counter()
        priors = loo_priors(grid, names, lib, n, "warped")
        loo_prior_s = (time.perf_counter() - t) / n
        stationary = loo_priors(grid, names, lib, n, "stationary")
        with_overheads = leave_one_out(grid, lib, priors, noise, True, args.seed)
        with_overheads_stationary = leave_one_out(grid, lib, stationary, noise, True, args.seed)
        no_overheads = leave_one_out(grid, lib, priors, noise, False, args.seed)
        sweep = [leave_one_out(grid, lib, priors, noise, True, args.seed, step) for step in (0.2, 1.0)]
        bound = expected_ratios_no_overheads(full_prior, grid)
        check = product_path_check(grid, priors, noise, n_check=min(3, n))
    result = {
        "benchmark": "energy_design",
        "library": "bundled Fe-K",
        "n_spectra": n,
        "n_candidates": int(grid.size),
        "length_scale_eV": full_prior.length_scale_eV,
        "warp": full_prior.summary()["warp"],
        "log_likelihood": full_prior.metadata["log_likelihood"],
        "log_likelihood_stationary": full_prior.metadata["log_likelihood_stationary"],
        "prior_build_s": prior_s,
        "loo_prior_build_s_mean": loo_prior_s,
        **timing,
        "settings": {
            "i0_counts_per_s": noise.i0_counts_per_s,
            "mu_t_pre_edge": noise.mu_t_pre_edge,
            "edge_jump": noise.edge_jump,
            "detector_gain": GAIN,
            "conventional_dwell_s": CONVENTIONAL_DWELL_S,
            "design_dwell_unit_s": DESIGN_DWELL_S,
            "mono_speed_eV_s": MONO_SPEED_EV_S,
            "mono_settle_s": MONO_SETTLE_S,
            "readout_s": READOUT_S,
            "criterion": "A per unit time",
            "lookahead_picks": LOOKAHEAD,
            "exchange_rounds": DEFAULT_EXCHANGE_ROUNDS,
            "exchange_window_steps": DEFAULT_EXCHANGE_WINDOW,
        },
        "with_overheads": with_overheads,
        "with_overheads_stationary_kernel": with_overheads_stationary,
        "no_overheads": no_overheads,
        "with_overheads_other_edge_steps": sweep,
        "no_overheads_expected_under_prior": bound,
        "product_path_check": check,
        "load_1min": os.getloadavg()[0],
        "wall_s": time.perf_counter() - started,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
