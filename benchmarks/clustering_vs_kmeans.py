"""Noise-grid clustering vs scikit-learn MiniBatchKMeans and Birch on one simulated XAS-imaging stack.

The stack is the simulated phantom (majority phases, a ~0.5 % pyrite and a ~0.1 % iron-metal minority)
rendered on 1024 × 1024 pixels at 60 energies, measured with photon noise from the sCMOS model
(``PhotonNoiseModel``, 1e5 ADU incident per pixel per frame, flat measured once per energy).

Peers are run as their documentation suggests, on the standardized spectra (z = (s − mean)/‖s − mean‖, which
removes thickness, the fairest input for them) and told the true number of phases:
MiniBatchKMeans(n_clusters, batch_size=1024·cores, n_init="auto"); Birch (whose docs recommend reducing
dimensionality above ~20 features) on a 10-component PCA of the same spectra with n_clusters, once with its
default threshold (0.5) and once with threshold 0.03, which I picked on a 512 × 512 rendering of the same
phantom (it gives ~10 subclusters there; the default gives one, since PCA scores of unit-norm spectra are ≪ 1).

Prints one JSON line: per method wall time, adjusted Rand index, recall and precision of each minority phase
(cluster holding most of the phase's pixels), and the speed-up over MiniBatchKMeans.
"""

from __future__ import annotations

import json
import os
import resource
import time

import numpy as np
from sklearn.cluster import Birch, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from xbeam_bluesky.clustering import ArrayStack, cluster_stack, sites_from_library, standardize
from xbeam_bluesky.devices.sim.phantom import Phantom
from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

SHAPE, PIXEL_UM, I0 = (1024, 1024), 5.0, 1e5
ENERGIES = np.linspace(7090.0, 7180.0, 60)
REFERENCES = ["Fe2O3_rt_01", "Fe3O4_rt_01", "larch_FeDem_Goerthite", "larch_ALS1032_Olivine_Fo0", "FeS2_rt_01",
              "Fe_metal_rt_01", "FeO_rt_01", "larch_FeDem_Ferrihydrite"]  # fmt: skip


def simulate() -> tuple[Phantom, np.ndarray, np.ndarray]:
    """Ground-truth labels and the noisy absorbance stack (float32, energy × y × x)."""
    phantom = Phantom(width_mm=5.2, height_mm=5.2, seed=4)
    truth = phantom.labels((0.0, 0.0), SHAPE, PIXEL_UM)
    mu = phantom.absorbance(ENERGIES, (0.0, 0.0), SHAPE, PIXEL_UM)
    noise, rng = PhotonNoiseModel(), np.random.default_rng(0)
    for i in range(len(ENERGIES)):  # frame by frame keeps the float64 temporaries small
        counts = noise.sample_counts(I0 * np.exp(-mu[i]), rng)
        flat = noise.sample_counts(np.full(SHAPE, I0), rng)
        mu[i] = np.log(np.maximum(flat, 1.0) / np.maximum(counts, 1.0))
    return phantom, truth, mu


def scores(truth: np.ndarray, labels: np.ndarray, minority: dict[str, int]) -> dict[str, float]:
    out = {"ari": round(float(adjusted_rand_score(truth.ravel(), labels.ravel())), 4)}
    for name, phase in minority.items():
        member = truth == phase
        values, counts = np.unique(labels[member], return_counts=True)
        predicted = labels == values[np.argmax(counts)]
        hit = int((predicted & member).sum())
        out[f"{name}_recall"] = round(hit / int(member.sum()), 4)
        out[f"{name}_precision"] = round(hit / int(predicted.sum()), 4)
    return out


def main() -> None:
    phantom, truth, stack = simulate()
    n_phases = len(phantom.phase_names)
    fractions = np.bincount(truth.ravel(), minlength=n_phases + 1) / truth.size
    minority = {"minority_0p5": n_phases - 1, "minority_0p1": n_phases}
    results = {}

    t0 = time.perf_counter()
    lib = aligned_library(load_library(), ENERGIES)
    refs = np.vstack([lib.matrix[lib.names.index(n)] for n in REFERENCES])
    sites = sites_from_library(
        ENERGIES, refs, REFERENCES, i0_counts=I0, noise=PhotonNoiseModel(), mu_offset=0.4
    )
    t_sites = time.perf_counter() - t0
    ours = cluster_stack(ArrayStack(stack), sites, n_threads=2)
    t_ours = time.perf_counter() - t0
    results["noise_grid"] = {"wall_s": round(t_ours, 2), "sites_s": round(t_sites, 2), "n_sites": len(sites),
                             "n_clusters_found": ours.summary()["n_clusters"], **scores(truth, ours.labels, minority)}  # fmt: skip

    t0 = time.perf_counter()
    z = standardize(stack.reshape(len(ENERGIES), -1).T).astype(np.float32)
    t_std = time.perf_counter() - t0
    del stack
    t0 = time.perf_counter()
    kmeans = MiniBatchKMeans(
        n_clusters=n_phases, batch_size=1024 * os.cpu_count(), n_init="auto", random_state=0
    )
    km_labels = kmeans.fit_predict(z).reshape(SHAPE) + 1
    t_km = time.perf_counter() - t0 + t_std
    results["minibatch_kmeans"] = {"wall_s": round(t_km, 2), **scores(truth, km_labels, minority)}

    for key, threshold in (("birch_default", 0.5), ("birch_tuned", 0.03)):
        t0 = time.perf_counter()
        reduced = PCA(n_components=10, random_state=0).fit_transform(z)
        birch = Birch(n_clusters=n_phases, threshold=threshold).fit(reduced)
        birch_labels = birch.predict(reduced).reshape(SHAPE) + 1
        t_birch = time.perf_counter() - t0 + t_std
        results[key] = {"wall_s": round(t_birch, 2), "threshold": threshold,
                        "subclusters": len(birch.subcluster_centers_), **scores(truth, birch_labels, minority)}  # fmt: skip

    print(
        json.dumps(
            {
                "benchmark": "clustering_vs_kmeans",
                "pixels": int(truth.size),
                "energies": len(ENERGIES),
                "i0_adu": I0,
                "true_fractions": {
                    "minority_0p5": round(float(fractions[-2]), 5),
                    "minority_0p1": round(float(fractions[-1]), 5),
                },
                **results,
                "speedup_vs_minibatch_kmeans": round(t_km / t_ours, 2),
                "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
