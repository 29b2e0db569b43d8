"""Phase-map energy design vs the conventional grid: macro-F1 and minority recall/precision versus beam time.

Library split by source collection (``data/xas/Fe_K/SOURCES.txt``): the design and the clustering know only the
XraySpectroscopy/XASDataLibrary spectra; the phantom is built from spectra of other collections (xraylarch's
FeDem and ALS 10.3.2 projects): hematite, goethite, Fe foil, fayalite (olivine Fo0: absent from the design
library), pyrrhotite at 0.5 % and chromite (also absent) at 0.1 % of the pixels, on 200 × 200 pixels with a
per-pixel thickness factor 0.7–1.3. Imaging is simulated on counts (sample and flat, sCMOS photon-noise model,
the sim camera's 1.862e5 ADU/s per pixel), at energies and dwell from

(a) the map design (library candidates, time budget = the per-pixel scan time),
(b) the adaptive plan offline: a first pass with the library map design at 30 % of the budget, clustered; the
    cluster spectra (GP-reconstructed on the candidate grid from the first-pass energies with the library prior)
    become the candidates of a second design that continues from the first pass's dwell for the rest,
(c) the conventional grid: 5 eV pre-edge, 0.5 eV over E0 − 20 … E0 + 30 eV, 3 eV post-edge, equal dwell,

each at several total times (dwell + 0.11 s settle per energy + 20 eV/s monochromator moves, ScanTimeModel), and
clustered with the project's clustering (sites_from_library on the design library, cluster_stack with discovery
and denoising). Macro-F1: clusters matched one-to-one to phases (Hungarian on the contingency table), F1 averaged
over the six phases. The beam-time ratio at equal macro-F1: the time the design needs (log-interpolated) for the
best macro-F1 the conventional grid reaches, divided by the conventional grid's shortest time that reaches it (the
clustering's macro-F1 is not monotone in dose, issue 13, so "equal" is taken at that best value). Prints one JSON
line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from xbeam_bluesky.clustering import ArrayStack, cluster_stack, sites_from_library
from xbeam_bluesky.planning import (
    ScanTimeModel,
    TransmissionNoise,
    design_map_energies,
    fe_k_grid,
    phase_candidates,
    prior_from_library,
    reconstruct,
)
from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, bundled_library_dir, load_library

SHAPE = (200, 200)
I0_PER_S = 1.862e5
E0 = 7112.0
PHANTOM = {  # phase: (spectrum of another collection, area fraction)
    "hematite": ("larch_FeDem_Hematite", 0.45),
    "goethite": ("larch_FeDem_Goerthite", 0.25),
    "Fe metal": ("larch_FeDem_Fe_foil", 0.144),
    "fayalite (absent)": ("larch_ALS1032_Olivine_Fo0", 0.15),
    "pyrrhotite 0.5 %": ("larch_ALS1032_Pyrrhotite", 0.005),
    "chromite 0.1 % (absent)": ("larch_ALS1032_Chromite", 0.001),
}
#: Per-pixel scan times (s): the conventional grid's ~118 energies cost ~18 s of settles and moves alone.
CONVENTIONAL_TIMES_S = (25.0, 50.0, 100.0, 200.0)
MAP_TIMES_S = (8.0, 12.0, 18.0, 25.0, 50.0)  # the two ends alone cost 5.6 s (105 eV at 20 eV/s)
ADAPTIVE_TIMES_S = (20.0, 30.0, 50.0)  # the first pass (30 %) must afford the ends
NOISE = TransmissionNoise(i0_counts_per_s=I0_PER_S, detector=PhotonNoiseModel())
TIME_MODEL = ScanTimeModel(dwell_s=0.05, settle_s=0.11, speed_eV_per_s=20.0)


def design_collection() -> list[str]:
    """Stems of the bundled spectra from XraySpectroscopy/XASDataLibrary (the design library)."""
    lines = (bundled_library_dir() / "SOURCES.txt").read_text().splitlines()
    return [
        ln.split("|")[0].strip().rsplit(".", 1)[0] for ln in lines if "XraySpectroscopy/XASDataLibrary" in ln
    ]


def phantom(rng: np.random.Generator, spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (0..5), thickness factor, and normalized spectra per pixel index (n_phases, n_grid)."""
    ny, nx = SHAPE
    yy, xx = np.mgrid[0:ny, 0:nx]
    labels = np.zeros(SHAPE, dtype=int)
    labels[:, nx * 45 // 100 :] = 1
    labels[ny * 2 // 3 :, nx * 45 // 100 :] = 2
    labels[: ny * 3 // 10, : nx * 45 // 100] = 3
    n = ny * nx
    for phase, (_, frac) in list(enumerate(PHANTOM.values()))[4:]:
        r = np.sqrt(frac * n / np.pi)
        cy, cx = (ny * 0.55, nx * 0.2) if phase == 4 else (ny * 0.4, nx * 0.75)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = phase
    thickness = 0.7 + 0.6 * (xx / nx * 0.5 + yy / ny * 0.5) + rng.normal(0, 0.02, SHAPE)
    return labels, thickness, spectra


def measure(grid, labels, thickness, spectra, energies, dwell, rng) -> np.ndarray:
    """Simulated absorbance stack (n_energies, ny, nx) from sample and flat counts."""
    idx = np.searchsorted(grid, energies)
    stack = np.empty((len(energies), *SHAPE), dtype=np.float32)
    for k, (i, d) in enumerate(zip(idx, dwell, strict=True)):
        mu = thickness * NOISE.absorbance(spectra[labels, i])
        i0 = I0_PER_S * d
        counts = NOISE.detector.sample_counts(i0 * np.exp(-mu), rng)
        flat = NOISE.detector.sample_counts(np.full(SHAPE, i0), rng)
        stack[k] = np.log(np.maximum(flat, 1.0) / np.maximum(counts, 1.0))
    return stack


def cluster(energies, dwell, stack, lib_names, lib_grid_spectra, grid) -> tuple[np.ndarray, np.ndarray]:
    """Labels and cluster spectra (absorbance) from the project's clustering with the design library."""
    idx = np.searchsorted(grid, energies)
    sites = sites_from_library(
        energies, lib_grid_spectra[:, idx], lib_names, i0_counts=I0_PER_S * np.asarray(dwell),
        noise=NOISE.detector, mu_offset=NOISE.mu_t_pre_edge, edge_jump=NOISE.edge_jump, n_draws=2000,
    )  # fmt: skip
    result = cluster_stack(ArrayStack(stack), sites, n_threads=1)
    return result.labels, result.spectra


def scores(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Macro-F1 over phases (one-to-one matching) and recall/precision of the two minorities."""
    phases = np.arange(len(PHANTOM))
    clusters = np.unique(labels[labels > 0])
    table = np.array([[np.sum((truth == p) & (labels == c)) for c in clusters] for p in phases], dtype=float)
    size_p = np.array([[np.sum(truth == p)] for p in phases], dtype=float)
    size_c = np.array([np.sum(labels == c) for c in clusters], dtype=float)[None, :]
    f1 = 2 * table / (size_p + size_c)
    rows, cols = linear_sum_assignment(-f1)
    per_phase = np.zeros(len(phases))
    per_phase[rows] = f1[rows, cols]
    out = {"macro_f1": round(float(per_phase.mean()), 4)}
    names = list(PHANTOM)
    for p in (4, 5):
        match = dict(zip(rows, cols, strict=True)).get(p)
        hit = table[p, match] if match is not None else 0.0
        out[f"{names[p]} recall"] = round(float(hit / size_p[p, 0]), 4)
        out[f"{names[p]} precision"] = round(float(hit / size_c[0, match]) if match is not None else 0.0, 4)
    return out


def conventional(grid: np.ndarray, total_s: float) -> tuple[np.ndarray, np.ndarray]:
    """5 eV pre-edge, 0.5 eV edge (E0-20..E0+30), 3 eV post-edge on the candidate grid, equal dwell for total_s."""
    pre = np.arange(grid[0], E0 - 20, 5.0)
    edge = np.arange(E0 - 20, E0 + 30, 0.5)
    post = np.arange(E0 + 30, grid[-1] + 1e-6, 3.0)
    e = grid[np.unique(np.searchsorted(grid, np.concatenate([pre, edge, post]) - 1e-6))]
    overhead = TIME_MODEL.scan_time_s(e, np.zeros(e.size))
    dwell = (total_s - overhead) / e.size
    return e, np.full(e.size, dwell)


def ratio_at_equal_f1(t_ref: np.ndarray, f_ref: np.ndarray, t: np.ndarray, f: np.ndarray) -> float | None:
    """Time the method needs for the reference's best macro-F1 / the reference's first time at it (log interp.).

    None if the method never reaches it; if it does at its shortest time, the ratio is an upper bound.
    """
    goal = float(f_ref.max())
    order = np.argsort(t)
    tt, ff = np.log(t[order]), np.maximum.accumulate(f[order])
    if ff[-1] < goal:
        return None
    k = int(np.argmax(ff >= goal))
    need = (
        tt[0]
        if k == 0
        else tt[k - 1] + (goal - ff[k - 1]) / max(ff[k] - ff[k - 1], 1e-12) * (tt[k] - tt[k - 1])
    )
    first = int(np.argmax(np.maximum.accumulate(f_ref) >= goal))
    return float(np.exp(need) / t_ref[first])


def main() -> None:
    started = time.perf_counter()
    rng = np.random.default_rng(11)
    grid = fe_k_grid()
    lib = aligned_library(load_library(None), grid)
    design_names = [n for n in lib.names if n in set(design_collection())]
    lib_spectra = lib.matrix[[lib.names.index(n) for n in design_names]]
    phantom_spectra = lib.matrix[[lib.names.index(s) for s, _ in PHANTOM.values()]]
    truth, thickness, spectra = phantom(rng, phantom_spectra)
    candidates = phase_candidates(lib_spectra, design_names)
    prior = prior_from_library(None, grid, exclude=tuple(n for n in lib.names if n not in design_names))
    cov = prior.covariance()
    t0 = time.perf_counter()
    design_map_energies(candidates, grid, NOISE, TIME_MODEL, time_budget_s=MAP_TIMES_S[-1])
    compute_1051 = time.perf_counter() - t0
    results: dict[str, list[dict]] = {"map": [], "adaptive": [], "conventional": []}
    for total in CONVENTIONAL_TIMES_S:
        e, d = conventional(grid, total)
        labels, _ = cluster(
            e, d, measure(grid, truth, thickness, spectra, e, d, rng), design_names, lib_spectra, grid
        )
        results["conventional"].append({"time_s": round(TIME_MODEL.scan_time_s(e, d), 2), "n_energies": int(e.size),
                                        **scores(truth, labels)})  # fmt: skip
    for total in MAP_TIMES_S:
        m = design_map_energies(candidates, grid, NOISE, TIME_MODEL, time_budget_s=total)
        stack = measure(grid, truth, thickness, spectra, m.energies_eV, m.dwell_s, rng)
        labels, _ = cluster(m.energies_eV, m.dwell_s, stack, design_names, lib_spectra, grid)
        results["map"].append({"time_s": round(m.total_time_s, 2), "n_energies": int(m.energies_eV.size),
                               "design_min_D": round(m.min_separation, 2), **scores(truth, labels)})  # fmt: skip
    for total in ADAPTIVE_TIMES_S:
        # adaptive: first pass, cluster, cluster spectra -> candidates of the second design
        first = design_map_energies(candidates, grid, NOISE, TIME_MODEL, time_budget_s=0.3 * total)
        stack1 = measure(grid, truth, thickness, spectra, first.energies_eV, first.dwell_s, rng)
        _, cl_spectra = cluster(first.energies_eV, first.dwell_s, stack1, design_names, lib_spectra, grid)
        cl = cl_spectra[np.all(np.isfinite(cl_spectra), axis=1)]
        norm = (cl - cl[:, :1]) / (
            cl[:, -1:] - cl[:, :1]
        )  # first-pass ends: pre-edge and post-edge of the grid
        recon = np.array(
            [  # cluster means of many pixels: 1 % of one pixel's variance
                reconstruct(
                    prior,
                    first.energies_eV,
                    y,
                    NOISE.variance(np.clip(y, 0, 2), first.dwell_s) / 100,
                    cov=cov,
                )[0]
                for y in norm
            ]
        )
        units = np.zeros(grid.size, dtype=int)
        units[np.searchsorted(grid, first.energies_eV)] = np.round(first.dwell_s / TIME_MODEL.dwell_s)
        data_candidates = phase_candidates(
            recon, [f"cluster {k + 1}" for k in range(len(recon))], kind="data"
        )
        second = design_map_energies(data_candidates, grid, NOISE, TIME_MODEL, time_budget_s=total,
                                     measured_units=units)  # fmt: skip
        extra = (
            np.round(second.dwell_s / TIME_MODEL.dwell_s).astype(int)
            - units[np.searchsorted(grid, second.energies_eV)]
        )
        new_e, new_d = second.energies_eV[extra > 0], extra[extra > 0] * TIME_MODEL.dwell_s
        stack2 = measure(grid, truth, thickness, spectra, new_e, new_d, rng)
        # final map on every energy measured; an energy measured twice is one channel of the summed counts
        all_e = np.union1d(first.energies_eV, new_e)
        dw = np.zeros(all_e.size)
        combined = np.zeros((all_e.size, *SHAPE))
        for energies, dwell, stk in ((first.energies_eV, first.dwell_s, stack1), (new_e, new_d, stack2)):
            k = np.searchsorted(all_e, energies)
            combined[k] += stk * dwell[:, None, None]  # dwell-weighted mean ≈ the summed-count absorbance
            dw[k] += dwell
        combined /= dw[:, None, None]
        labels, _ = cluster(all_e, dw, combined.astype(np.float32), design_names, lib_spectra, grid)
        t_real = first.total_time_s + TIME_MODEL.scan_time_s(new_e, new_d)
        results["adaptive"].append({"time_s": round(t_real, 2), "n_energies": int(all_e.size),
                                    "n_cluster_candidates": len(recon), **scores(truth, labels)})  # fmt: skip
    t_ref = np.array([r["time_s"] for r in results["conventional"]])
    f_ref = np.array([r["macro_f1"] for r in results["conventional"]])
    ratios = {
        k: ratio_at_equal_f1(
            t_ref, f_ref, np.array([r["time_s"] for r in v]), np.array([r["macro_f1"] for r in v])
        )
        for k, v in results.items()
        if k != "conventional"
    }
    print(json.dumps({
        "benchmark": "map_design", "pixels": SHAPE[0] * SHAPE[1], "phantom": {k: v[0] for k, v in PHANTOM.items()},
        "design_library": f"{len(design_names)} XASDataLibrary spectra, {candidates.n_phases} phases",
        "design_compute_s_1051_candidates": round(compute_1051, 3), "results": results,
        "beam_time_ratio_at_equal_macro_f1": ratios, "target": 0.25, "goal": 0.15,
        "wall_s": round(time.perf_counter() - started, 1), "cores": os.cpu_count(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
