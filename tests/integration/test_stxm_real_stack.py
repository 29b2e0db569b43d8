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


def valence_map(
    od: np.ndarray, energies: np.ndarray, *, linear: bool = False, return_model: bool = False
) -> tuple[np.ndarray, ...]:
    """The README's reference analysis on OD spectra (n_energies, n_pixels): NNLS on the two ``.t`` references
    (post-edge step 1) plus a constant of either sign (and a linear term of either sign with ``linear``);
    returns the bins (0 no Fe, 1..3 Fe³⁺ fraction < 0.33, 0.33–0.66, > 0.66) and the Fe mask, per pixel (and the
    fitted OD, shaped like ``od``, with ``return_model``)."""
    columns = []
    for name in ("oxidized", "reduced"):
        ref = read_spectrum(DATA / "references" / f"{name}.t")
        values = np.interp(energies, ref.energy, ref.mu)
        columns.append(values / values[energies >= 725.0].mean())  # post-edge step of 1
    ones = np.ones(len(energies))
    extra = [ones, -ones]
    if linear:
        slope = (energies - energies.mean()) / np.ptp(energies)
        extra += [slope, -slope]
    basis = np.stack([*columns, *extra], axis=1)
    coef = np.array([nnls(basis, od[:, p])[0] for p in range(od.shape[1])])
    total = coef[:, 0] + coef[:, 1]
    fe = total >= 0.02
    fraction = np.where(fe, coef[:, 0] / np.where(fe, total, 1.0), 0.0)
    bins = np.where(~fe, 0, 1 + np.digitize(fraction, [0.33, 0.66]))
    return (bins, fe, basis @ coef.T) if return_model else (bins, fe)


def _reference_map() -> tuple[np.ndarray, np.ndarray]:
    stack = read_stack(DATA / "71214078.nxs")
    i0 = np.loadtxt(DATA / "i0.xsp")
    assert np.allclose(i0[:, 0], stack.energies, atol=1e-3)
    od = -np.log(stack.frames.astype(np.float64) / i0[:, 1, None, None]).reshape(stack.shape[0], -1)
    bins, fe = valence_map(od, stack.energies)
    return bins.reshape(stack.shape[1:]), fe.reshape(stack.shape[1:])


@pytest.fixture(scope="module")
def reference():
    return _reference_map()


@pytest.fixture(scope="module")
def recipe_maps(tmp_path_factory) -> dict[str, tuple[np.ndarray, list[str]]]:
    """The recipe's maps of the raw stack and of its pre-edge-subtracted variant."""
    out = tmp_path_factory.mktemp("stxm")
    return {
        "raw": _recipe(DATA / "71214078.nxs", out / "raw.h5"),
        "sub": _recipe(DATA / "SubPreEdge" / "71214078.tif", out / "sub.h5"),
    }


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
        "issue 13 open: measured 2026-12-03 on branch stxm (per-pixel linear baseline removed) ARI 0.334 on Fe-bearing "
        "pixels, 93 % of the NNLS background 'no Fe'; target 0.8. The NNLS reference agrees with itself between the raw "
        "and SubPreEdge stacks at ARI 0.77 only, and a method knowing the noise-free valence would agree with it at "
        "ARI 0.767 given the stack's measured noise (benchmarks/stxm_agreement.py, reference_noise_ceiling)"
    ),
)
def test_stxm_recipe_matches_the_nnls_map(reference, recipe_maps):
    bins, fe = reference
    labels, names = recipe_maps["raw"]
    ari = adjusted_rand_score(bins[fe], labels[fe])
    assert ari >= 0.8, f"ARI {ari:.3f} on Fe-bearing pixels; clusters {names}"
    label_names = np.array(["unassigned", *names])[labels]
    no_fe = np.mean(label_names[~fe] == "no Fe")
    assert no_fe >= 0.95, f"{no_fe:.3f} of the background pixels are 'no Fe'; clusters {names}"


def test_pre_edge_subtracted_stack_gives_the_same_map(recipe_maps):
    labels, names = recipe_maps["raw"]
    sub, sub_names = recipe_maps["sub"]
    same = adjusted_rand_score(labels.ravel(), sub.ravel())
    assert same >= 0.9, f"raw vs SubPreEdge maps agree at ARI {same:.3f}; clusters {names} / {sub_names}"
