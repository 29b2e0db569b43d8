"""Live clustering throughput: 2048×2048 uint16 frames, K = 64 sites, 2 threads.

Frames are raw sCMOS counts of the simulated phantom (dark + flat corrected inside the assigner).
Prints one JSON line: frames/s of ``StreamingAssigner.update`` (including the buffered accumulation, wall
clock, on a machine shared with other jobs: see ``load_average_1min``), the process CPU time per frame and the
rate it implies if both cores were free (2 / CPU time; an upper bound assuming perfect 2-thread scaling),
finalize time, subspace rank, and peak resident memory. A second figure is measured for a site set of
full rank (64 sites in general position: r = 66), where the low-rank shortcut does not help, and a third
(``per_energy_i0_*``) for the same frames with sites and noise sums built from incident counts per energy
(a dwell list alternating 1× and 4× the base dwell), the case of an energy-design run.
"""

from __future__ import annotations

import json
import resource
import time

import numpy as np

from xbeam_bluesky.clustering import FrameCorrection, Sites, StreamingAssigner, sites_from_library
from xbeam_bluesky.devices.sim.phantom import Phantom
from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

SHAPE = (2048, 2048)
N_ENERGIES = 100
N_SITES = 64
I0_ADU = 20000.0
DARK_ADU = 100.0


def _frames(energies: np.ndarray, n_distinct: int, rng: np.random.Generator) -> list[np.ndarray]:
    phantom = Phantom(width_mm=12.0, height_mm=12.0, seed=3)
    noise = PhotonNoiseModel()
    picks = np.linspace(0, len(energies) - 1, n_distinct).astype(int)
    mu = phantom.absorbance(energies[picks], (0.0, 0.0), SHAPE, 5.0)
    return [
        np.clip(DARK_ADU + noise.sample_counts(I0_ADU * np.exp(-m), rng), 0, 65535).astype(np.uint16)
        for m in mu
    ]


def _run(sites: Sites, frames: list[np.ndarray], correction: FrameCorrection) -> dict[str, float]:
    assigner = StreamingAssigner(sites, SHAPE, correction=correction, n_threads=2)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(N_ENERGIES):
        assigner.update(frames[i % len(frames)], i)
    assigner.flush()
    t_update = time.perf_counter() - t0
    cpu_update = time.process_time() - c0
    t0 = time.perf_counter()
    result = assigner.finalize()
    t_final = time.perf_counter() - t0
    assigner.close()
    return {
        "frames_per_s": N_ENERGIES / t_update,
        "cpu_ms_per_frame": 1e3 * cpu_update / N_ENERGIES,
        "finalize_s": t_final,
        "rank": assigner.rank,
        "clusters_found": int(np.unique(result.labels[result.labels > 0]).size),
    }


def main() -> None:
    rng = np.random.default_rng(0)
    energies = np.linspace(7090.0, 7190.0, N_ENERGIES)
    lib = aligned_library(load_library(), energies)
    noise = PhotonNoiseModel()
    refs = ["Fe2O3_rt_01", "Fe3O4_rt_01", "larch_FeDem_Goerthite", "larch_ALS1032_Olivine_Fo0", "FeS2_rt_01",
            "Fe_metal_rt_01", "FeO_rt_01", "larch_FeDem_Ferrihydrite"]  # fmt: skip
    idx = [lib.names.index(n) for n in refs]
    sites = sites_from_library(
        energies, lib.matrix[idx], refs, i0_counts=I0_ADU, noise=noise, mu_offset=0.4, max_sites=N_SITES
    )
    frames = _frames(energies, 8, rng)
    dark = np.full(SHAPE, DARK_ADU, np.float32)
    flat = DARK_ADU + I0_ADU * _flat_profile(rng)
    correction = FrameCorrection(dark=dark, flat=flat)
    low_rank = _run(sites, frames, correction)
    general = Sites(
        energies,
        0.5 + np.abs(rng.standard_normal((N_SITES, N_ENERGIES))).cumsum(axis=1) / N_ENERGIES,
        tuple(f"random-{k}" for k in range(N_SITES)),
        ("mixture",) * N_SITES,
        I0_ADU,
        noise,
    )
    full_rank = _run(general, frames, correction)
    dwell = np.where(np.arange(N_ENERGIES) % 2 == 0, 1.0, 4.0)
    sites_pe = sites_from_library(
        energies,
        lib.matrix[idx],
        refs,
        i0_counts=I0_ADU * dwell,
        noise=noise,
        mu_offset=0.4,
        max_sites=N_SITES,
    )
    per_energy = _run(sites_pe, frames, correction)
    print(
        json.dumps(
            {
                "benchmark": "clustering_live",
                "frame_shape": list(SHAPE),
                "dtype": "uint16",
                "n_energies": N_ENERGIES,
                "n_sites": len(sites),
                "n_clusters": sites.n_clusters,
                "threads": 2,
                "frames_per_s": round(low_rank["frames_per_s"], 1),
                "cpu_ms_per_frame": round(low_rank["cpu_ms_per_frame"], 2),
                "frames_per_s_if_2_cores_free": round(2e3 / low_rank["cpu_ms_per_frame"], 1),
                "subspace_rank": low_rank["rank"],
                "finalize_s": round(low_rank["finalize_s"], 2),
                "full_rank_frames_per_s": round(full_rank["frames_per_s"], 1),
                "full_rank_subspace_rank": full_rank["rank"],
                "full_rank_finalize_s": round(full_rank["finalize_s"], 2),
                "per_energy_i0_n_sites": len(sites_pe),
                "per_energy_i0_frames_per_s": round(per_energy["frames_per_s"], 1),
                "per_energy_i0_finalize_s": round(per_energy["finalize_s"], 2),
                "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "target_frames_per_s": 100,
                "load_average_1min": round(__import__("os").getloadavg()[0], 2),
            }
        )
    )


def _flat_profile(rng: np.random.Generator) -> np.ndarray:
    """Open-beam profile: vertical Gaussian with a 1 % pixel-response pattern (relative, max ≈ 1)."""
    y = np.linspace(-0.5, 0.5, SHAPE[0])[:, None]
    return (np.exp(-0.5 * (y / 0.68) ** 2) * (1 + 0.01 * rng.standard_normal(SHAPE))).astype(np.float32)


if __name__ == "__main__":
    main()
