"""Scaling of batch noise-grid clustering from 10⁶ to 10⁸ pixels (100 energies), streamed in row blocks.

The stack is never held in memory: a procedural source renders each row block on request (a 1024 × 1024
field of the simulated phantom repeated periodically, photon noise from a pre-drawn standard-normal slab
scaled by the noise model's σ(μt)). Each size runs in its own process so its peak RSS is its own. Rendering
time is measured separately and excluded from the clustering time (it is reported).

Prints one JSON line: per size wall time, µs per pixel (per 100 energies), peak RSS; the slope of time vs
pixels, and the extrapolated time for the published 4 × 10⁸ pixels × 100 energies on this machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

N_ENERGIES = 100
SIZES = ((1000, 1000), (3200, 3125), (10000, 10000))
I0 = 1e5
REFERENCES = ["Fe2O3_rt_01", "Fe3O4_rt_01", "larch_FeDem_Goerthite", "larch_ALS1032_Olivine_Fo0", "FeS2_rt_01",
              "Fe_metal_rt_01"]  # fmt: skip


class ProceduralStack:
    """Absorbance (n_energies, ny, nx) rendered block by block from a periodic phantom field."""

    def __init__(self, shape: tuple[int, int], energies: np.ndarray) -> None:
        from xbeam_bluesky.devices.sim.phantom import Phantom
        from xbeam_bluesky.spectra import PhotonNoiseModel

        phantom = Phantom(width_mm=5.2, height_mm=5.2, seed=4)
        fov = phantom.field_of_view((0.0, 0.0), (1024, 1024), 5.0)
        self.labels, self.thickness = fov.labels, fov.thickness
        spectra = np.vstack([np.zeros(len(energies)), phantom.phase_spectra(energies)])  # label 0: none
        self.mu = spectra.astype(np.float32)  # (n_phases + 1, n_energies)
        self.sigma = np.sqrt(PhotonNoiseModel().var_absorbance(I0, spectra)).astype(np.float32)
        self.noise = np.random.default_rng(0).standard_normal(2**24).astype(np.float32)
        self._shape = (len(energies), *shape)
        self.render_s = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        t0 = time.perf_counter()
        _, _, nx = self._shape
        rows = np.arange(y0, y1) % 1024
        cols = np.arange(nx) % 1024
        lab = self.labels[np.ix_(rows, cols)]
        thick = self.thickness[np.ix_(rows, cols)]
        out = np.empty((self._shape[0], y1 - y0, nx), np.float32)
        n = lab.size
        for i in range(self._shape[0]):
            start = (i * 7919 + y0 * nx) % (self.noise.size - n)
            out[i] = self.mu[lab, i] * thick + self.sigma[lab, i] * self.noise[start : start + n].reshape(
                lab.shape
            )
        self.render_s += time.perf_counter() - t0
        return out


def run_one(ny: int, nx: int) -> dict[str, float]:
    from xbeam_bluesky.clustering import cluster_stack, sites_from_library
    from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

    energies = np.linspace(7090.0, 7190.0, N_ENERGIES)
    lib = aligned_library(load_library(), energies)
    refs = np.vstack([lib.matrix[lib.names.index(n)] for n in REFERENCES])
    sites = sites_from_library(
        energies, refs, REFERENCES, i0_counts=I0, noise=PhotonNoiseModel(), mu_offset=0.4
    )
    source = ProceduralStack((ny, nx), energies)
    t0 = time.perf_counter()
    result = cluster_stack(source, sites, memory_bytes=256 * 2**20, n_threads=2)
    wall = time.perf_counter() - t0
    return {
        "pixels": ny * nx,
        "wall_s": round(wall - source.render_s, 2),
        "render_s": round(source.render_s, 2),
        "us_per_pixel": round(1e6 * (wall - source.render_s) / (ny * nx), 4),
        "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "clusters": result.summary()["n_clusters"],
    }


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(run_one(int(sys.argv[1]), int(sys.argv[2]))))
        return
    runs = []
    for ny, nx in SIZES:
        out = subprocess.run(
            [sys.executable, __file__, str(ny), str(nx)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    pixels = np.array([r["pixels"] for r in runs], float)
    seconds = np.array([r["wall_s"] for r in runs], float)
    slope, intercept = np.polyfit(pixels, seconds, 1)
    print(
        json.dumps(
            {
                "benchmark": "clustering_scale",
                "energies": N_ENERGIES,
                "block_memory_MB": 256,
                "runs": runs,
                "us_per_pixel_fit": round(1e6 * slope, 4),
                "extrapolated_4e8_pixels_s": round(slope * 4e8 + intercept, 1),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
