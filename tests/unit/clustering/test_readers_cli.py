"""``xbeam cluster`` on stack files: a TIFF crop of the real STXM stack, noise models recorded, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from xbeam_bluesky.cli import main
from xbeam_bluesky.spectra import read_stack

DATA = Path(__file__).resolve().parents[2] / "data" / "stxm_FeL_71214078"


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    stack = read_stack(DATA / "71214078.nxs")
    folder = tmp_path_factory.mktemp("tiff")
    tifffile.imwrite(folder / "crop.tif", stack.frames[:, 40:80, 40:80])
    np.savetxt(folder / "crop.txt", stack.energies)
    return folder / "crop.tif"


def _model(out: Path) -> dict:
    with h5py.File(out) as f:
        return json.loads(f.attrs["i0_model"])


@pytest.mark.parametrize("noise", ["photon", "estimate"])
def test_tiff_counts_with_each_noise_model(crop: Path, tmp_path: Path, capsys, noise: str):
    out = tmp_path / "o.h5"
    args = ["cluster", str(crop), "--library", str(DATA / "references"), "--noise", noise]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["noise"] == noise
    model = _model(out)
    assert model["od_i0"]["n_pixels"] == 160 and model["od_i0"]["source"] == "brightest 10% of the pixels"
    assert model["file"]["format"] == "multi-page TIFF"
    if noise == "photon":
        assert model["noise_model"] == {"gain": 1.0, "offset": 0.0, "flat_frames": 160}
    else:
        assert model["noise_model"]["b"] > 0 and model["source"].startswith("estimated")


def test_box_region_and_bad_input(crop: Path, tmp_path: Path, capsys):
    out = tmp_path / "o.h5"
    refs = ["--library", str(DATA / "references"), "--out", str(out)]
    assert main(["cluster", str(crop), "--i0-region", "0:4,0:5", *refs]) == 0
    capsys.readouterr()
    assert _model(out)["od_i0"] == {**_model(out)["od_i0"], "n_pixels": 20, "source": "user region"}
    assert main(["cluster", str(crop), "--i0-region", "top-left", *refs]) == 2
    assert "expected 'auto' or a pixel box Y0:Y1,X0:X1" in capsys.readouterr().err
    lone = tmp_path / "lone.tif"
    tifffile.imwrite(lone, np.ones((3, 4, 4), np.float32))
    assert main(["cluster", str(lone), *refs]) == 2
    assert "no energy list" in capsys.readouterr().err
    assert main(["cluster", str(lone), "--energies", str(crop.with_suffix(".txt")), *refs]) == 2
    assert "3 pages but 123 energies" in capsys.readouterr().err
    od = tmp_path / "od.tif"
    tifffile.imwrite(od, np.ones((123, 4, 4), np.float32))
    assert main(["cluster", str(od), "--energies", str(crop.with_suffix(".txt")), "--tiff-kind", "od",
                 "--noise", "photon", *refs]) == 2  # fmt: skip
    assert "give --i0" in capsys.readouterr().err
    assert main(["cluster", str(crop), "--library", str(DATA / "references"), "--energies",
                 str(crop.with_suffix(".txt")), "--out", str(out)]) == 0  # fmt: skip
