"""optimal_xanes_imaging on the simulated beamline: the design lands in the start document and is measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bluesky import RunEngine

from xbeam_bluesky.devices.sim.beamline import make_sim_beamline
from xbeam_bluesky.planning import load_design
from xbeam_bluesky.plans.optimal import optimal_xanes_imaging


@pytest.fixture
def beamline(tmp_path):
    re = RunEngine({})
    bl = make_sim_beamline(tmp_path / "det", frame_shape=(32, 32), pixel_size_um=40.0, time_scale=0.0)
    docs: list[tuple[str, dict]] = []
    re.subscribe(lambda name, doc: docs.append((name, doc)))
    return re, bl, docs


def _start_and_events(docs):
    start = next(d for n, d in docs if n == "start")
    descriptors = {d["uid"]: d.get("name") for n, d in docs if n == "descriptor"}
    energies = [
        e["data"]["mono"] for n, e in docs if n == "event" and descriptors[e["descriptor"]] == "primary"
    ]
    return start, energies


def test_plan_designs_tiles_and_records_the_design(beamline):
    re, bl, docs = beamline
    re(
        optimal_xanes_imaging(
            bl.camera, bl.mono, bl.stage, [-1.0, 1.0], [-0.5, 0.5],
            shutter=bl.shutter, n_points=30, dwell=0.05, n_darks=1, n_flats=1,
        )
    )  # fmt: skip
    start, energies = _start_and_events(docs)
    design = start["design"]
    assert start["plan_name"] == "optimal_xanes_imaging" and start["purpose"] == "xanes_imaging"
    # the record: library, prior, noise, criterion, expected error, compute time
    assert design["prior"]["library"] == "bundled Fe-K" and design["prior"]["library_size"] >= 60
    assert design["prior"]["length_scale_eV"] > 0
    assert design["noise"]["detector_gain"] == pytest.approx(bl.camera.model.gain)
    assert design["criterion"] == "A" and design["n_picks"] == 30
    assert 0 < design["expected_rmse"] < design["prior_rmse"]
    assert design["compute_s"] > 0 and design["compute_s_total"] >= design["compute_s"]
    json.dumps(start)
    # tiles: 1.28 mm field of view covering 2 × 1 mm
    n_tiles = len(start["tiles"]["positions"])
    assert n_tiles == start["tiling"]["n_tiles"] >= 2
    # every design energy measured on every tile, repeats as consecutive frames
    frames = np.asarray(design["frames_per_energy"])
    assert frames.sum() == 30
    assert len(energies) == 30 * n_tiles
    measured, counts = np.unique(np.round(energies, 6), return_counts=True)
    np.testing.assert_allclose(measured, design["energies_eV"], atol=1e-6)
    np.testing.assert_array_equal(counts, frames * n_tiles)
    assert start["time_estimate"]["total_s"] > 0


def test_plan_takes_a_saved_design(beamline, tmp_path):
    re, bl, docs = beamline
    path = tmp_path / "design.json"
    path.write_text(
        json.dumps({"energies_eV": [7100.0, 7112.5, 7130.0], "dwell_s": [0.1, 0.2, 0.1], "criterion": "A"})
    )
    re(
        optimal_xanes_imaging(
            bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], design=str(path), dwell=0.1, shutter=bl.shutter,
            n_darks=1, n_flats=1,
        )
    )  # fmt: skip
    start, energies = _start_and_events(docs)
    assert start["design"]["source"] == str(path)
    assert start["design"]["frames_per_energy"] == [1, 2, 1]
    assert energies == pytest.approx([7100.0, 7112.5, 7112.5, 7130.0])
    assert load_design(start["design"])["energies_eV"] == [7100.0, 7112.5, 7130.0]


def test_saved_design_with_incompatible_dwell_is_rejected(beamline, tmp_path):
    re, bl, _ = beamline
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"energies_eV": [7100.0, 7110.0], "dwell_s": [0.1, 0.15]}))
    with pytest.raises(ValueError, match=r"odd\.json.*dwell_s\[1\] = 0.15"):
        re(
            optimal_xanes_imaging(
                bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], design=str(path), dwell=0.1
            )
        )


def test_budget_too_small_names_the_budget(beamline):
    re, bl, _ = beamline
    with pytest.raises(ValueError, match=r"time_budget_s = 3 s is too small .* 2 tile\(s\)"):
        re(
            optimal_xanes_imaging(
                bl.camera, bl.mono, bl.stage, tiles=[[0, 0], [1, 0]], time_budget_s=3, n_darks=0
            )
        )
