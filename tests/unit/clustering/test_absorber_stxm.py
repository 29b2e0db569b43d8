"""No-Fe class on the real ALS Fe L-edge STXM stack: raw and pre-edge-subtracted stacks, an independent NNLS map.

Reads the copy in ``tests/data/stxm_FeL_71214078`` (attribution in its README; added by the stack-reader work).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import nnls

from xbeam_bluesky.clustering import absorber_test
from xbeam_bluesky.spectra import PhotonNoiseModel

DATA = Path(__file__).resolve().parents[2] / "data" / "stxm_FeL_71214078"
pytestmark = pytest.mark.skipif(
    not (DATA / "71214078.nxs").is_file(), reason="STXM stack copy not in tests/data"
)


@pytest.fixture(scope="module")
def stxm() -> dict[str, np.ndarray]:
    h5py = pytest.importorskip("h5py")
    tifffile = pytest.importorskip("tifffile")
    with h5py.File(DATA / "71214078.nxs", "r") as f:
        counts = np.asarray(f["entry1/data/data"], dtype=np.float64)
        energies = np.asarray(f["entry1/data/energy"], dtype=np.float64)
    sub = np.asarray(tifffile.imread(DATA / "SubPreEdge" / "71214078.tif"), dtype=np.float64)
    i0 = np.loadtxt(DATA / "i0.xsp")[:, 1]
    refs = np.stack([np.loadtxt(DATA / "references" / f"{n}.t")[:, 1] for n in ("oxidized", "reduced")])
    return {
        "energies": energies,
        "od": np.log(i0[:, None, None] / counts),
        "od_sub": np.log(i0[:, None, None] / sub),
        "refs": refs,
    }


def _nnls_total_fe(od: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """The README's independent analysis: NNLS on the two references (post-edge step 1) plus a constant."""
    design = np.column_stack([*(r / r[-10:].mean() for r in refs), np.ones(od.shape[0])])
    x = od.reshape(od.shape[0], -1)
    return np.array([nnls(design, x[:, p])[0][:2].sum() for p in range(x.shape[1])]).reshape(od.shape[1:])


def test_raw_and_pre_edge_subtracted_stacks_give_the_same_no_fe_map(stxm) -> None:
    noise = PhotonNoiseModel(gain=1.0, offset=0.0)  # photon counting; ≈ 4000 photons per pixel (README)
    test = absorber_test(stxm["energies"], references=stxm["refs"], element="Fe")
    raw = test.absorbing(stxm["od"], noise.var_absorbance(4000.0, stxm["od"]))
    sub = test.absorbing(stxm["od_sub"], noise.var_absorbance(4000.0, stxm["od_sub"]))
    assert test.name == "no Fe"
    assert np.mean(raw == sub) >= 0.999
    total = _nnls_total_fe(stxm["od"], stxm["refs"])
    fe = total >= 0.02  # the README's "Fe-bearing": fitted total Fe ≥ 0.02 OD
    assert 0.25 < fe.mean() < 0.40  # 5273 of 15625 pixels in the README's analysis
    assert np.mean(raw[fe]) >= 0.995  # every Fe-bearing pixel is detected
    assert 0.6 < np.mean(~raw[~fe]) < 0.95  # most background is no Fe; the rest holds a detected trace of Fe
    # the NNLS cut stated as a floor on the jump (J ≈ 0.42 × the NNLS total): the two maps agree
    floored = absorber_test(stxm["energies"], references=stxm["refs"], element="Fe", min_jump_od=0.008)
    assert np.mean(floored.absorbing(stxm["od"], noise.var_absorbance(4000.0, stxm["od"])) == fe) >= 0.98
