"""The ``xbeam plan-energies`` / ``xbeam plan-tiles`` contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xbeam_bluesky.cli import main
from xbeam_bluesky.planning import ScanTimeModel


@pytest.fixture(scope="module")
def design_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "design.json"
    plot = out.with_suffix(".png")
    assert main(["plan-energies", "--n-points", "60", "--plot", str(plot), "--out", str(out)]) == 0
    assert plot.stat().st_size > 10_000
    return json.loads(out.read_text())


def test_plan_energies_contract(design_json):
    d = design_json
    e, dwell = np.asarray(d["energies_eV"]), np.asarray(d["dwell_s"])
    assert np.all(np.diff(e) > 0) and e.size == dwell.size
    assert e[0] == pytest.approx(7076.2) and e[-1] == pytest.approx(7181.2)
    assert np.all(dwell > 0) and dwell.sum() == pytest.approx(60 * 0.05)
    tm = ScanTimeModel.from_dict(d["time_model"])
    assert d["total_time_s"] == pytest.approx(tm.scan_time_s(e, dwell))
    assert 0 < d["expected_rmse"] < d["prior_rmse"]
    assert d["criterion"] == "A"
    assert d["prior"]["length_scale_eV"] > 0 and d["prior"]["library_size"] >= 60
    assert d["compute_s"] > 0


def test_plan_energies_time_budget_and_d_criterion(tmp_path):
    out = tmp_path / "d.json"
    args = [
        "plan-energies",
        "--time-budget",
        "20",
        "--criterion",
        "D",
        "--overhead-s",
        "0.5",
        "--out",
        str(out),
    ]
    assert main([*args, "--e-range", "7100:7150:0.25", "--length-scale", "4"]) == 0
    d = json.loads(out.read_text())
    assert d["criterion"] == "D" and d["total_time_s"] <= 20.0 + 1e-9
    assert d["energies_eV"][0] == pytest.approx(7100.0) and d["energies_eV"][-1] == pytest.approx(7150.0)
    assert d["prior"]["length_scale_eV"] == 4.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time-budget", "1"], "time budget 1 s is too small"),
        (["--n-points", "5", "--e-range", "7100:7150"], "--e-range '7100:7150'"),
        (["--n-points", "5", "--library", "/nonexistent/lib"], "/nonexistent/lib"),
        (["--n-points", "5", "--edge", "Xx-K"], "unknown absorption edge 'Xx-K'"),
    ],
)
def test_plan_energies_bad_input(tmp_path, capsys, args, message):
    assert main(["plan-energies", *args, "--out", str(tmp_path / "x.json")]) == 2
    assert message in capsys.readouterr().err


def test_plan_tiles_contract_and_time_estimate(tmp_path, design_json):
    design = tmp_path / "design.json"
    design.write_text(json.dumps(design_json))
    out = tmp_path / "tiles.json"
    args = ["plan-tiles", "--x", "0:3", "--y", "0:2", "--fov-px", "2048,2048", "--pixel-um", "0.65"]
    assert main([*args, "--overlap", "0.1", "--design", str(design), "--out", str(out)]) == 0
    t = json.loads(out.read_text())
    assert t["n_tiles"] == len(t["tiles"]) == 3 * 2
    assert t["overlap"] == 0.1 and t["tile_size_mm"] == pytest.approx([1.3312, 1.3312])
    assert (
        t["time_estimate"]["total_s"]
        > t["time_estimate"]["exposure_s"]
        >= 6 * sum(design_json["dwell_s"]) - 1e-9
    )


def test_plan_tiles_polygon_and_limits(tmp_path, capsys):
    out = tmp_path / "tiles.json"
    poly = ["--polygon", "0,0;4,0;0,4", "--fov-px", "100,100", "--pixel-um", "5"]
    assert main(["plan-tiles", *poly, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["region"]["polygon_mm"][1] == [4.0, 0.0]
    bad = ["plan-tiles", "--x", "0:4", "--y", "0:1", "--fov-px", "100,100", "--pixel-um", "5"]
    assert main([*bad, "--x-limits=-1:2", "--out", str(out)]) == 2
    assert "outside the stage x limits" in capsys.readouterr().err
    assert (
        main(
            [
                "plan-tiles",
                "--x",
                "0:4",
                "--y",
                "0:1",
                "--fov-px",
                "100",
                "--pixel-um",
                "5",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "--fov-px '100'" in capsys.readouterr().err
