"""Agreement of ``xbeam cluster`` with the independent NNLS valence map on the real ALS Fe L-edge STXM stack, and
how well that reference agrees with itself.

The issue's acceptance figure is the adjusted Rand index (ARI) on Fe-bearing pixels between the clustering's
labels and the three Fe³⁺-fraction bins of a two-reference NNLS fit (the data README's analysis). To know what a
good method can reach, the same reference is also computed (a) on the pre-edge-subtracted variant of the stack
(``SubPreEdge``, the same measurement with each pixel's pre-edge OD removed, which the issue says must give the
same map) and (b) with a linear baseline term besides the constant: the ARI of the reference with itself under
these equivalent choices bounds the agreement any other valid method can show. Prints one JSON line (accuracy
figures, not a speed benchmark; ``wall_s`` is the two ``xbeam cluster`` runs).

The reference is itself noisy per pixel: most Fe-bearing pixels hold 0.02–0.08 OD of Fe. ``reference_noise_ceiling``
measures what that costs: the stack's own noise is estimated from second differences along energy in the
pre-edge (< 705 eV) of the pixels NNLS calls "no Fe" (``noise_variance_over_value``: variance over the recorded
value; 1 for photon counts), the NNLS fit of every pixel is taken as a noise-free truth, re-measured with Poisson
noise at that level (counts = value / ratio) and fitted again: the ARI between the truth's bins and the re-fitted
bins is the agreement a method that knew the noise-free valence of every pixel would show with this reference.

Run: ``python benchmarks/stxm_agreement.py`` from the repository root.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import tifffile
from sklearn.metrics import adjusted_rand_score

from xbeam_bluesky.cli import main
from xbeam_bluesky.spectra import read_stack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from test_stxm_real_stack import DATA, RECIPE, valence_map  # noqa: E402


def _cluster(stack: Path, out: Path) -> tuple[np.ndarray, list[str]]:
    with contextlib.redirect_stdout(io.StringIO()):  # the CLI's own summary line
        assert main(["cluster", str(stack), *RECIPE, "--out", str(out)]) == 0
    with h5py.File(out, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["cluster_names"][()]]
        return f["labels"][()].ravel(), names


def noise_ratio(frames: np.ndarray, energies: np.ndarray, background: np.ndarray) -> float:
    """Variance of the recorded values over their mean (1 for photon counts), from second differences along
    energy below 705 eV on ``background`` pixels (a second difference removes each pixel's level and slope)."""
    x = frames.reshape(len(energies), -1)[energies < 705.0][:, background]
    d2 = x[:-2] - 2.0 * x[1:-1] + x[2:]
    return float(np.var(d2 - d2.mean(axis=1, keepdims=True)) / (6.0 * x.mean()))


def noise_ceiling(od: np.ndarray, energies: np.ndarray, i0: np.ndarray, ratio: float, seed: int = 0) -> float:
    """ARI on Fe-bearing pixels between the bins of the NNLS fit (taken as truth) and the bins of a re-fit of the
    same truth measured with Poisson noise at ``ratio`` (variance over value)."""
    truth, fe, model = valence_map(od, energies, return_model=True)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(i0 / ratio * np.exp(-model)) * ratio
    again, _ = valence_map(-np.log(np.maximum(counts, ratio) / i0), energies)
    return float(adjusted_rand_score(truth[fe], again[fe]))


def main_() -> None:
    raw = read_stack(DATA / "71214078.nxs")
    i0 = np.loadtxt(DATA / "i0.xsp")[:, 1, None]
    energies = raw.energies
    od = -np.log(raw.frames.astype(np.float64).reshape(len(energies), -1) / i0)
    sub = tifffile.imread(DATA / "SubPreEdge" / "71214078.tif").astype(np.float64).reshape(len(energies), -1)
    od_sub = -np.log(sub / i0)
    ref, fe = valence_map(od, energies)
    ref_sub, _ = valence_map(od_sub, energies)
    ref_lin, _ = valence_map(od, energies, linear=True)

    ratio = noise_ratio(raw.frames.astype(np.float64), energies, ~fe)
    ceiling = noise_ceiling(od, energies, i0, ratio)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        labels, names = _cluster(DATA / "71214078.nxs", Path(tmp) / "raw.h5")
        labels_sub, _ = _cluster(DATA / "SubPreEdge" / "71214078.tif", Path(tmp) / "sub.h5")
    wall = time.perf_counter() - t0
    no_fe_label = 1 + names.index("no Fe") if "no Fe" in names else -1

    def ari(a: np.ndarray, b: np.ndarray) -> float:
        return round(float(adjusted_rand_score(a, b)), 3)

    print(
        json.dumps(
            {
                "benchmark": "stxm_agreement",
                "stack": "ALS 71214078 Fe L (125x125 px, 123 energies)",
                "recipe": " ".join(RECIPE[2:]) + " --library <the two .t references>",
                "clusters": names,
                "ari_fe_vs_nnls": ari(ref[fe], labels[fe]),
                "target_ari_fe_vs_nnls": 0.8,
                "no_fe_of_nnls_background": round(float(np.mean(labels[~fe] == no_fe_label)), 3),
                "ari_raw_vs_subpreedge_map": ari(labels, labels_sub),
                "reference_self_agreement": {
                    "ari_fe_raw_vs_subpreedge": ari(ref[fe], ref_sub[fe]),
                    "ari_fe_constant_vs_linear_baseline": ari(ref[fe], ref_lin[fe]),
                },
                "reference_noise_ceiling": {
                    "noise_variance_over_value": round(ratio, 3),
                    "ari_fe_noise_free_truth_vs_reference": round(ceiling, 3),
                },
                "wall_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main_()
