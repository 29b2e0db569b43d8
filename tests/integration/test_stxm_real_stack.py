"""The documented STXM recipe on the real ALS Fe L-edge stack, against a two-reference NNLS map computed here.

Reference analysis (as in the data's README): OD = −ln(I / I0) with the recorded incident spectrum ``i0.xsp``; per
pixel non-negative least squares on the ``.t`` spectra, each scaled to a post-edge step of 1, plus a constant of
either sign; "no Fe" where the fitted total Fe < 0.02 OD; Fe³⁺ fraction bins < 0.33, 0.33–0.66, > 0.66.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.optimize import nnls
from sklearn.metrics import adjusted_rand_score

from xbeam_bluesky.cli import main
from xbeam_bluesky.spectra import read_spectrum, read_stack

DATA = Path(__file__).resolve().parents[1] / "data" / "stxm_FeL_71214078"
RECIPE = ["--library", str(DATA / "references"), "--noise", "photon"]

pytestmark = pytest.mark.slow


def _reference_map() -> tuple[np.ndarray, np.ndarray]:
    stack = read_stack(DATA / "71214078.nxs")
    i0 = np.loadtxt(DATA / "i0.xsp")
    assert np.allclose(i0[:, 0], stack.energies, atol=1e-3)
    od = -np.log(stack.frames.astype(np.float64) / i0[:, 1, None, None]).reshape(stack.shape[0], -1)
    columns = []
    for name in ("oxidized", "reduced"):
        ref = read_spectrum(DATA / "references" / f"{name}.t")
        values = np.interp(stack.energies, ref.energy, ref.mu)
        columns.append(values / values[stack.energies >= 725.0].mean())  # post-edge step of 1
    ones = np.ones(stack.shape[0])
    basis = np.stack([*columns, ones, -ones], axis=1)
    coef = np.array([nnls(basis, od[:, p])[0] for p in range(od.shape[1])])
    total = coef[:, 0] + coef[:, 1]
    fe = total >= 0.02
    fraction = np.where(fe, coef[:, 0] / np.where(fe, total, 1.0), 0.0)
    bins = np.where(~fe, 0, 1 + np.digitize(fraction, [0.33, 0.66]))
    return bins.reshape(stack.shape[1:]), fe.reshape(stack.shape[1:])


@pytest.fixture(scope="module")
def reference():
    return _reference_map()


def _recipe(stack: Path, out: Path) -> tuple[np.ndarray, list[str]]:
    assert main(["cluster", str(stack), *RECIPE, "--out", str(out)]) == 0
    with h5py.File(out, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["cluster_names"][()]]
        return f["labels"][()], names


def test_reference_map_reproduces_the_readme(reference):
    bins, _ = reference
    counts = np.bincount(bins.ravel(), minlength=4)
    # README: 10352 no Fe; of the Fe-bearing pixels 1055 (< 0.33), 1293 (0.33–0.66), 2925 (> 0.66)
    assert counts == pytest.approx([10352, 1055, 1293, 2925], rel=0.03)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "issue 13 open: measured 2026-12-03 on main f508607 the data-first pipeline with the no-Fe class gives ARI "
        "0.219 on Fe-bearing pixels (7 'unknown' clusters: the real domain-coherent spread is split finer than the "
        "three NNLS Fe3+-fraction bins); target 0.8"
    ),
)
def test_stxm_recipe_matches_the_nnls_map(reference, tmp_path: Path):
    bins, fe = reference
    labels, names = _recipe(DATA / "71214078.nxs", tmp_path / "raw.h5")
    ari = adjusted_rand_score(bins[fe], labels[fe])
    assert ari >= 0.8, f"ARI {ari:.3f} on Fe-bearing pixels; clusters {names}"
    label_names = np.array(["unassigned", *names])[labels]
    no_fe = np.mean(label_names[~fe] == "no Fe")
    assert no_fe >= 0.95, f"{no_fe:.3f} of the background pixels are 'no Fe'; clusters {names}"
    sub, _ = _recipe(DATA / "SubPreEdge" / "71214078.tif", tmp_path / "sub.h5")
    same = adjusted_rand_score(labels.ravel(), sub.ravel())
    assert same >= 0.9, f"raw vs SubPreEdge maps agree at ARI {same:.3f}"
