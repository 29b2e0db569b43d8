"""Phase-map energy design vs the conventional grid: macro-F1 and minority recall/precision versus beam time.

The library split of the clustering issue (``clustering.split_library``): the phantom is
``clustering.held_out_phantom`` — nine measured ALS 10.3.2 phases (minorities siderite at 0.5 % and almandine at
0.1 %, almandine absent from the library), thickness (edge jump 0.5–1.2) and offset (0.2–0.8) maps — on 200 × 200
pixels; the design and the clustering know only the other collections of the bundled Fe K library. Imaging is
simulated by photon counting (2 × 10⁴ photons/pixel/s, the sim camera's flux; flat = mean of 10 frames), at
energies and dwell from

(a) the map design (library candidates, time budget = the per-pixel scan time; ``keep_ends=False``: it starts
    where the library spectra differ instead of at the grid's ends and may drop those, saving travel),
(b) the adaptive plan offline: a first pass with the library map design at 30 % of the budget (keeping the grid's
    ends: its cluster spectra are normalized there), clustered; the
    cluster spectra (GP-reconstructed on the candidate grid, ``planning.cluster_candidates``) become the
    candidates of a second design (with the model error the clustering estimated) that continues from the first
    pass's dwell for the rest; the final map is clustered from every energy measured (an energy measured in
    both passes: the summed counts),
(c) the conventional grid: 5 eV pre-edge, 0.5 eV over E0 − 20 … E0 + 30 eV, 3 eV post-edge, equal dwell,

each at several total times (dwell + 0.11 s settle per energy + 20 eV/s monochromator moves, ScanTimeModel), and
clustered with the project's clustering (``ClusteringPipeline`` seeded by the library). Scores:
``clustering.matched_scores`` (one-to-one Hungarian match), macro-F1 over the nine phases, recall/precision of the
two minorities. The beam-time ratio at equal macro-F1: for the goal 0.99 × the best macro-F1 the conventional
grid reaches, the time each method first reaches it (running maximum of macro-F1, log-interpolated in time)
divided by the conventional grid's. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xbeam_bluesky.clustering import (
    ArrayStack,
    held_out_phantom,
    matched_scores,
    pipeline_from_library,
    split_library,
)
from xbeam_bluesky.planning import (
    ScanTimeModel,
    TransmissionNoise,
    design_map_energies,
    fe_k_grid,
    measured_units,
    phase_candidates,
    prior_from_library,
    second_pass_candidates,
)
from xbeam_bluesky.spectra import PhotonNoiseModel

SHAPE = (200, 200)
E0 = 7112.0
DETECTOR = PhotonNoiseModel(gain=1.0, offset=0.0, flat_frames=10)
TIME_MODEL = ScanTimeModel(dwell_s=0.05, settle_s=0.11, speed_eV_per_s=20.0)
GOAL_FRACTION = 0.99


@dataclass(frozen=True)
class Regime:
    """A flux and the per-pixel scan times (s) each method is measured at."""

    name: str
    photons_per_s: float
    conventional_times_s: tuple[float, ...]
    map_times_s: tuple[float, ...]
    adaptive_times_s: tuple[float, ...]

    @property
    def noise(self) -> TransmissionNoise:
        """The design's sample: the phantom's mean offset and edge jump."""
        return TransmissionNoise(
            i0_counts_per_s=self.photons_per_s, mu_t_pre_edge=0.5, edge_jump=0.85, detector=DETECTOR
        )


#: The conventional grid's 118 energies cost 18.2 s of settles and moves alone; the map design starts where the
#: library spectra differ (keep_ends=False: 7108.5-7170 eV, 3.1 s of travel); the adaptive first pass (30 %) must
#: afford three energies over the whole grid (5.8 s).
REGIMES = (
    # the sim camera's flux: overheads dominate, dwell is cheap
    Regime("overhead-limited", 2.0e4, (19.0, 20.0, 22.0, 25.0, 30.0, 40.0),
           (4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0), (22.0, 25.0, 30.0, 40.0)),
    # 20x fewer photons (a thin or dilute sample, a weaker beam): dwell dominates
    Regime("dose-limited", 1.0e3, (25.0, 35.0, 50.0, 70.0, 100.0, 140.0, 200.0),
           (4.0, 5.0, 6.0, 8.0, 10.0, 14.0, 20.0, 28.0, 40.0), (20.0, 28.0, 40.0, 56.0, 80.0, 112.0)),
)  # fmt: skip


def measure(phantom, grid, energies, dwell, rng, photons_per_s: float) -> np.ndarray:
    """Absorbance stack (n_energies, ny, nx) from Poisson sample counts and a 10-frame flat."""
    idx = np.searchsorted(grid, np.asarray(energies) - 1e-6)
    stack = np.empty((len(energies), *SHAPE), dtype=np.float32)
    for k, (i, d) in enumerate(zip(idx, dwell, strict=True)):
        n0 = photons_per_s * d
        counts = rng.poisson(n0 * np.exp(-phantom.mu_t[i].astype(np.float64)))
        flat = rng.poisson(n0 * DETECTOR.flat_frames, SHAPE) / DETECTOR.flat_frames
        stack[k] = np.log(np.maximum(flat, 1.0) / np.maximum(counts, 1.0))
    return stack


def cluster(energies, dwell, stack, library, grid, photons_per_s: float):
    """The project's clustering (ClusteringPipeline seeded by the library) of one stack."""
    idx = np.searchsorted(grid, np.asarray(energies) - 1e-6)
    pipeline = pipeline_from_library(
        np.asarray(energies),
        photons_per_s * np.asarray(dwell),
        DETECTOR,
        {n: v[idx] for n, v in library.items()},
    )
    return pipeline.cluster([ArrayStack(stack)])


def scores(truth: np.ndarray, labels: np.ndarray, n_phases: int) -> dict[str, float]:
    """Macro-F1 over phases (one-to-one matching) and recall/precision of the two minorities."""
    s = matched_scores(truth, labels, n_phases)
    return {
        "macro_f1": round(s.macro_f1, 4),
        "siderite_0p5_recall": round(float(s.recall[-2]), 4),
        "siderite_0p5_precision": round(float(s.precision[-2]), 4),
        "almandine_0p1_absent_recall": round(float(s.recall[-1]), 4),
        "almandine_0p1_absent_precision": round(float(s.precision[-1]), 4),
    }


def conventional(grid: np.ndarray, total_s: float) -> tuple[np.ndarray, np.ndarray]:
    """5 eV pre-edge, 0.5 eV edge (E0-20..E0+30), 3 eV post-edge on the candidate grid, equal dwell for total_s."""
    pre = np.arange(grid[0], E0 - 20, 5.0)
    edge = np.arange(E0 - 20, E0 + 30, 0.5)
    post = np.arange(E0 + 30, grid[-1] + 1e-6, 3.0)
    e = grid[np.unique(np.searchsorted(grid, np.concatenate([pre, edge, post]) - 1e-6))]
    overhead = TIME_MODEL.scan_time_s(e, np.zeros(e.size))
    dwell = (total_s - overhead) / e.size
    return e, np.full(e.size, dwell)


def time_to_reach(t: np.ndarray, f: np.ndarray, goal: float) -> float | None:
    """First time (s) the running maximum of macro-F1 reaches ``goal``, log-interpolated; None if never.

    Reached at the shortest time measured: that time (an upper bound).
    """
    order = np.argsort(t)
    tt, ff = np.log(t[order]), np.maximum.accumulate(f[order])
    if ff[-1] < goal:
        return None
    k = int(np.argmax(ff >= goal))
    if k == 0:
        return float(np.exp(tt[0]))
    return float(np.exp(tt[k - 1] + (goal - ff[k - 1]) / max(ff[k] - ff[k - 1], 1e-12) * (tt[k] - tt[k - 1])))


def run_regime(regime: Regime, phantom, grid, library, candidates, prior, rng) -> dict:
    """Every method at every time of ``regime``; the beam-time ratios at equal macro-F1."""
    flux, noise = regime.photons_per_s, regime.noise
    truth, n_phases = phantom.truth, len(phantom.names)

    def measured(e, d):
        return measure(phantom, grid, e, d, rng, flux)

    results: dict[str, list[dict]] = {"map": [], "adaptive": [], "conventional": []}
    for total in regime.conventional_times_s:
        e, d = conventional(grid, total)
        r = cluster(e, d, measured(e, d), library, grid, flux)
        print(regime.name, "conventional", total, file=sys.stderr, flush=True)
        results["conventional"].append({"time_s": round(TIME_MODEL.scan_time_s(e, d), 2), "n_energies": int(e.size),
                                        **scores(truth, r.labels, n_phases)})  # fmt: skip
    for total in regime.map_times_s:
        m = design_map_energies(candidates, grid, noise, TIME_MODEL, time_budget_s=total, keep_ends=False)
        r = cluster(m.energies_eV, m.dwell_s, measured(m.energies_eV, m.dwell_s), library, grid, flux)
        print(regime.name, "map", total, file=sys.stderr, flush=True)
        results["map"].append({"time_s": round(m.total_time_s, 2), "n_energies": int(m.energies_eV.size),
                               "design_min_D": round(m.min_separation, 2), **scores(truth, r.labels, n_phases)})  # fmt: skip
    for total in regime.adaptive_times_s:
        first = design_map_energies(candidates, grid, noise, TIME_MODEL, time_budget_s=0.3 * total)
        stack1 = measured(first.energies_eV, first.dwell_s)
        r1 = cluster(first.energies_eV, first.dwell_s, stack1, library, grid, flux)
        names = [f"cluster {k + 1}" for k in range(len(r1.spectra))]
        data, source = second_pass_candidates(
            first.energies_eV, r1.spectra, names, prior, noise, first.dwell_s, candidates
        )
        eps = float(r1.metadata["model_error"]["rms_fraction_of_spectrum_rms"])
        units = measured_units(grid, first.energies_eV, first.dwell_s, TIME_MODEL.dwell_s)
        second = design_map_energies(data, grid, noise, TIME_MODEL, time_budget_s=total, measured_units=units,
                                     model_error_rms=eps, on_short_budget="warn")  # fmt: skip
        extra = measured_units(grid, second.energies_eV, second.dwell_s, TIME_MODEL.dwell_s) - units
        new = np.flatnonzero(extra > 0)
        new_e, new_d = grid[new], extra[new] * TIME_MODEL.dwell_s
        stack2 = measured(new_e, new_d)
        # final map on every energy measured; an energy measured twice is one channel of the summed counts
        all_e = np.union1d(first.energies_eV, new_e)
        dw = np.zeros(all_e.size)
        combined = np.zeros((all_e.size, *SHAPE))
        for energies, dwell, stk in ((first.energies_eV, first.dwell_s, stack1), (new_e, new_d, stack2)):
            k = np.searchsorted(all_e, energies)
            combined[k] += stk * dwell[:, None, None]  # dwell-weighted mean ≈ the summed-count absorbance
            dw[k] += dwell
        combined /= dw[:, None, None]
        r = cluster(all_e, dw, combined.astype(np.float32), library, grid, flux)
        t_real = first.total_time_s + (TIME_MODEL.scan_time_s(new_e, new_d) if new.size else 0.0)
        print(regime.name, "adaptive", total, file=sys.stderr, flush=True)
        results["adaptive"].append({"time_s": round(t_real, 2), "n_energies": int(all_e.size),
                                    "first_pass_clusters": len(r1.spectra), "second_design_candidates": len(data.names),
                                    "second_design_from": source.split(" (")[0],
                                    "first_pass_model_error_rms": round(eps, 4),
                                    **scores(truth, r.labels, n_phases)})  # fmt: skip
    t_ref = np.array([r["time_s"] for r in results["conventional"]])
    f_ref = np.array([r["macro_f1"] for r in results["conventional"]])
    goal = GOAL_FRACTION * float(f_ref.max())
    t_conv = time_to_reach(t_ref, f_ref, goal)
    ratios, upper_bound = {}, {}
    for k in ("map", "adaptive"):
        t = np.array([r["time_s"] for r in results[k]])
        t_k = time_to_reach(t, np.array([r["macro_f1"] for r in results[k]]), goal)
        ratios[k] = None if t_k is None or t_conv is None else round(t_k / t_conv, 3)
        upper_bound[k] = t_k is not None and t_k <= float(t.min())
    return {
        "photons_per_pixel_per_s": flux, "results": results, "goal_macro_f1": round(goal, 4),
        "conventional_time_to_goal_s": None if t_conv is None else round(t_conv, 2),
        "beam_time_ratio_at_equal_macro_f1": ratios,
        "ratio_is_upper_bound": upper_bound,
    }  # fmt: skip


def main() -> None:
    started = time.perf_counter()
    rng = np.random.default_rng(11)
    grid = fe_k_grid()
    phantom = held_out_phantom(grid, SHAPE, seed=0)
    held, library = split_library(grid)
    candidates = phase_candidates(np.stack(list(library.values())), list(library))
    prior = prior_from_library(None, grid, exclude=tuple(held))
    t0 = time.perf_counter()
    c0 = time.process_time()
    design_map_energies(
        candidates,
        grid,
        REGIMES[0].noise,
        TIME_MODEL,
        time_budget_s=REGIMES[0].map_times_s[-1],
        keep_ends=False,
    )
    compute_1051 = time.perf_counter() - t0
    compute_cpu = time.process_time() - c0
    regimes = {r.name: run_regime(r, phantom, grid, library, candidates, prior, rng) for r in REGIMES}
    print(json.dumps({
        "benchmark": "map_design", "pixels": SHAPE[0] * SHAPE[1], "phantom": list(phantom.names),
        "design_library": f"{len(library)} spectra (not ALS 10.3.2), {candidates.n_phases} phases, "
                          f"{len(candidates.pairs)} pairs",
        "design_compute_s_1051_candidates": round(compute_1051, 3), "design_cpu_s": round(compute_cpu, 3),
        "beam_time_ratio_at_equal_macro_f1": {k: v["beam_time_ratio_at_equal_macro_f1"] for k, v in regimes.items()},
        "regimes": regimes, "target": 0.25, "goal": 0.15,
        "wall_s": round(time.perf_counter() - started, 1), "cores": os.cpu_count(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
