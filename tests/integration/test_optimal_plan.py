"""optimal_xanes_imaging on the simulated beamline: the design lands in the start document (read back from tiled)
and every designed energy is measured once on every tile with the design's dwell for that energy."""

from __future__ import annotations

import json
import math

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
    # every design energy measured once on every tile; a point picked k times = one exposure of k × dwell
    picks = np.round(np.asarray(design["dwell_s"]) / 0.05)
    assert picks.sum() == 30 and picks.max() > 1  # repeats happen, so the per-energy dwell is exercised
    assert design["frames_per_energy"] == [1] * len(design["energies_eV"])  # no dwell past saturation here
    assert start["energies"] == design["energies_eV"] and start["dwell"] == design["dwell_s"]
    table = frame_table(run)
    n_e = len(design["energies_eV"])
    assert len(table.energy_eV) == n_e * 4
    measured, counts = np.unique(np.round(table.energy_eV, 6), return_counts=True)
    np.testing.assert_allclose(measured, design["energies_eV"], atol=1e-6)
    np.testing.assert_array_equal(counts, 4)
    exposure = np.asarray(run["primary"]["exposure_s"].read())
    np.testing.assert_allclose(exposure, [design["dwell_s"][ie] for ie in table.energy_index])
    estimate = start["time_estimate"]
    readout = bl.camera.readout_s
    assert estimate["frames"] == 1 + n_e * (4 + 1)
    assert estimate["exposure_s"] == pytest.approx(
        (design["dwell_s"][0] + readout) + sum(5 * (d + readout) for d in design["dwell_s"])
    )
    # the design's time model charges what the run costs: design time x (tiles + flats) = the estimate less the
    # darks and the trips from and back to the start position, which the design does not see, and less the
    # pro-rata charge of its repeats for frames split at saturation (none were needed here)
    model = design["time_model"]
    tour = model["settle_s"] * 5 - bl.mono.settle_s  # stage path flat -> 4 tiles -> flat + 5 readouts
    assert model["pick_overhead_s"] == pytest.approx(tour / 5 * 0.05 / design["max_exposure_s"])
    charged = design["n_picks"] * model["pick_overhead_s"] * 5
    energies, flat, last_tile = design["energies_eV"], tuple(bl.stage.out_position_mm), tuple(positions[-1])
    mono_trips = (
        bl.mono.move_time_s(7112.0, energies[0])
        - bl.mono.settle_s
        + bl.mono.move_time_s(energies[-1], 7112.0)
    )
    stage_trips = (
        bl.stage.move_time_s((0.0, 0.0), flat)
        + bl.stage.move_time_s(last_tile, (0.0, 0.0))
        - bl.stage.move_time_s(last_tile, flat)
    )
    darks = design["dwell_s"][0] + readout
    run_s = estimate["total_s"] - estimate["overhead_s"]
    assert design["total_time_s"] * 5 - charged == pytest.approx(
        run_s - darks - mono_trips - stage_trips, rel=1e-6
    )


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
    exposures = [d["data"]["exposure_s"] for n, d in docs if n == "event" and d["descriptor"] == primary]
    assert start["design"]["source"] == str(path)
    assert start["dwell"] == [0.1, 0.2, 0.1]
    assert energies == pytest.approx([7100.0, 7112.5, 7130.0])
    assert exposures == pytest.approx([0.1, 0.2, 0.1])
    assert load_design(start["design"])["energies_eV"] == [7100.0, 7112.5, 7130.0]


def test_saved_design_dwell_need_not_be_a_multiple_of_the_unit(RE, sim_beamline, tmp_path):
    bl = sim_beamline
    docs = []
    RE.subscribe(
        lambda name, doc: docs.append(doc) if name == "event" and "exposure_s" in doc["data"] else None
    )
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"energies_eV": [7100.0, 7110.0], "dwell_s": [0.1, 0.15]}))
    RE(optimal_xanes_imaging(bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], design=str(path), dwell=0.1,
                             n_darks=0, n_flats=0))  # fmt: skip
    assert [d["data"]["exposure_s"] for d in docs] == pytest.approx([0.1, 0.15])
    assert [d["data"]["mono"] for d in docs] == pytest.approx([7100.0, 7110.0])


def test_budget_too_small_names_the_budget(RE, sim_beamline):
    bl = sim_beamline
    with pytest.raises(ValueError, match=r"time_budget_s = 3 s is too small .* 2 tile\(s\)"):
        RE(
            optimal_xanes_imaging(
                bl.camera, bl.mono, bl.stage, tiles=[[0, 0], [0.3, 0]], time_budget_s=3, n_darks=0
            )
        )


def test_dwell_beyond_saturation_is_split_into_frames(RE, sim_beamline, tmp_path):
    bl = sim_beamline
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"energies_eV": [7100.0, 7112.5], "dwell_s": [0.1, 0.9]}))
    RE(optimal_xanes_imaging(bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], design=str(path), dwell=0.1,
                             n_darks=0, n_flats=1))  # fmt: skip
    start = next(d for n, d in docs if n == "start")
    longest = start["design"]["max_exposure_s"]
    assert 0.2 < longest < 0.9  # the test camera saturates between these exposures
    k = math.ceil(0.9 / longest)
    assert start["design"]["frames_per_energy"] == [1, k]
    assert start["energies"] == [7100.0] + [7112.5] * k
    assert start["dwell"] == pytest.approx([0.1] + [0.9 / k] * k)  # the photons of the design, none saturated
    exposures = [d["data"]["exposure_s"] for n, d in docs if n == "event" and "exposure_s" in d["data"]]
    assert exposures == pytest.approx([0.1, 0.1] + [0.9 / k] * (2 * k))  # flat + frame per energy entry
