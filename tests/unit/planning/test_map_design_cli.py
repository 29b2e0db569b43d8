"""``xbeam plan-energies --objective map``: the design.json contract and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xbeam_bluesky.cli import main
from xbeam_bluesky.planning import ScanTimeModel

PHASES = "Fe2O3_rt_01,Fe3O4_rt_01,FeO_rt_01,FeS2_rt_01,Fe_metal_rt_01"


def test_map_objective_writes_the_design_contract(tmp_path):
    out, plot = tmp_path / "design.json", tmp_path / "design.png"
    args = ["plan-energies", "--objective", "map", "--phases", PHASES, "--target-separation", "3.719"]
    assert main([*args, "--thickness", "0.5:2", "--plot", str(plot), "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["objective"] == "map" and d["stop_reason"] == "target_separation"
    e, dwell = np.asarray(d["energies_eV"]), np.asarray(d["dwell_s"])
    assert np.all(np.diff(e) > 0) and np.all(dwell > 0)
    assert d["total_time_s"] == pytest.approx(ScanTimeModel.from_dict(d["time_model"]).scan_time_s(e, dwell))
    assert len(d["pairs"]) == 10 and d["weakest_pair"] == d["pairs"][0]
    assert (
        d["weakest_pair"]["separation"] == pytest.approx(d["min_separation"]) and d["min_separation"] >= 3.719
    )
    assert d["candidates"]["n_phases"] == 5 and d["thickness"] == [0.5, 2.0]
    assert plot.stat().st_size > 10_000


def test_map_objective_budget_too_small_names_the_pair(tmp_path, capsys):
    out = tmp_path / "d.json"
    args = [
        "plan-energies",
        "--objective",
        "map",
        "--phases",
        PHASES,
        "--time-budget",
        "6",
        "--out",
        str(out),
    ]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "separates the closest pair" in err and "it needs about" in err
    assert not out.exists()


def test_map_objective_unknown_phase(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["plan-energies", "--objective", "map", "--phases", "Fe2O3_rt_01,unobtainium", "--n-points", "50",
                 "--out", str(out)]) != 0  # fmt: skip
    assert "unobtainium not in the library" in capsys.readouterr().err


def test_target_separation_is_only_for_the_map(tmp_path, capsys):
    assert main(["plan-energies", "--target-separation", "3", "--out", str(tmp_path / "d.json")]) != 0
    assert "--objective map" in capsys.readouterr().err
