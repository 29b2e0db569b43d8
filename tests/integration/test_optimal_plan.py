"""optimal_xanes_imaging on the simulated beamline: the design lands in the start document (read back from tiled)
and every designed energy is measured on every tile, repeats as consecutive frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xbeam_bluesky.planning import load_design
from xbeam_bluesky.plans import optimal_xanes_imaging
from xbeam_bluesky.storage import frame_table


def test_plan_designs_tiles_and_records_the_design(tiled_RE, tiled_storage, sim_beamline):
    bl = sim_beamline
    plan = optimal_xanes_imaging(
        bl.camera, bl.mono, bl.stage, [-0.3, 0.3], [-0.2, 0.2],
        shutter=bl.shutter, n_points=30, dwell=0.05, n_darks=1, n_flats=1,
    )  # fmt: skip
    (uid,) = tiled_RE(plan)
    run = tiled_storage.client[uid]
    start = run.metadata["start"]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert start["plan_name"] == "optimal_xanes_imaging" and start["purpose"] == "xanes_imaging"
    design = start["design"]
    # the record: library, prior, noise model, criterion, expected error, compute time
    assert design["prior"]["library"] == "bundled Fe-K" and design["prior"]["library_size"] >= 60
    assert design["prior"]["length_scale_eV"] > 0
    assert design["noise"]["detector_gain"] == pytest.approx(bl.camera.model.gain)
    assert design["noise"]["i0_counts_per_s"] == pytest.approx(bl.camera.noise_metadata(1.0)["i0_counts"])
    assert design["criterion"] == "A" and design["n_picks"] == 30
    assert 0 < design["expected_rmse"] < design["prior_rmse"]
    assert design["compute_s"] > 0 and design["compute_s_total"] >= design["compute_s"]
    # tiles: the 0.40 × 0.32 mm field of view covering 0.6 × 0.4 mm needs 2 × 2 tiles
    positions = np.asarray(start["tiles"]["positions"])
    assert positions.shape == (4, 2) == (start["tiling"]["n_tiles"], 2)
    # every design energy measured on every tile; a point picked k times = k consecutive frames
    frames = np.asarray(design["frames_per_energy"])
    assert frames.sum() == 30
    table = frame_table(run)
    assert len(table.energy_eV) == 30 * 4
    measured, counts = np.unique(np.round(table.energy_eV, 6), return_counts=True)
    np.testing.assert_allclose(measured, design["energies_eV"], atol=1e-6)
    np.testing.assert_array_equal(counts, frames * 4)
    assert start["time_estimate"]["total_s"] > start["time_estimate"]["exposure_s"] > 0


def test_plan_takes_a_saved_design(RE, sim_beamline, tmp_path):
    bl = sim_beamline
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    path = tmp_path / "design.json"
    path.write_text(json.dumps({"energies_eV": [7100.0, 7112.5, 7130.0], "dwell_s": [0.1, 0.2, 0.1]}))
    RE(
        optimal_xanes_imaging(
            bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], design=str(path), dwell=0.1, shutter=bl.shutter,
            n_darks=1, n_flats=1,
        )
    )  # fmt: skip
    start = next(d for n, d in docs if n == "start")
    primary = next(d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "primary")
    energies = [d["data"]["mono"] for n, d in docs if n == "event" and d["descriptor"] == primary]
    assert start["design"]["source"] == str(path)
    assert start["design"]["frames_per_energy"] == [1, 2, 1]
    assert energies == pytest.approx([7100.0, 7112.5, 7112.5, 7130.0])
    assert load_design(start["design"])["energies_eV"] == [7100.0, 7112.5, 7130.0]


def test_saved_design_with_incompatible_dwell_is_rejected(RE, sim_beamline, tmp_path):
    bl = sim_beamline
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"energies_eV": [7100.0, 7110.0], "dwell_s": [0.1, 0.15]}))
    with pytest.raises(ValueError, match=r"odd\.json.*dwell_s\[1\] = 0.15"):
        RE(
            optimal_xanes_imaging(
                bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], design=str(path), dwell=0.1
            )
        )


def test_budget_too_small_names_the_budget(RE, sim_beamline):
    bl = sim_beamline
    with pytest.raises(ValueError, match=r"time_budget_s = 3 s is too small .* 2 tile\(s\)"):
        RE(
            optimal_xanes_imaging(
                bl.camera, bl.mono, bl.stage, tiles=[[0, 0], [0.3, 0]], time_budget_s=3, n_darks=0
            )
        )
