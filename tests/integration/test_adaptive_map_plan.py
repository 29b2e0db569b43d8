"""optimal_xanes_imaging(objective="map") on the simulated beamline: the map design is made with the plan's time
model, lands in the start document and is measured as designed; design time and run time agree."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.planning import ScanTimeModel, load_design
from xbeam_bluesky.plans import optimal_xanes_imaging

PHASES = ["Fe2O3_rt_01", "Fe3O4_rt_01", "FeS2_rt_01", "Fe_metal_rt_01"]


def test_map_objective_run_measures_the_design_and_its_time(RE, sim_beamline):
    bl = sim_beamline
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(
        optimal_xanes_imaging(
            bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0], [0.3, 0.0]], objective="map", phases=PHASES,
            target_separation=1.5, dwell=0.05, shutter=bl.shutter, n_darks=1, n_flats=1,
        )
    )  # fmt: skip
    start = next(d for n, d in docs if n == "start")
    design = start["design"]
    assert design["objective"] == "map" and design["stop_reason"] == "target_separation"
    assert design["min_separation"] >= 1.5 and design["candidates"]["n_phases"] == 4
    assert len(design["pairs"]) == 6 and design["weakest_pair"] == design["pairs"][0]
    assert design["noise"]["i0_counts_per_s"] == pytest.approx(bl.camera.noise_metadata(1.0)["i0_counts"])
    load_design(design)  # the record replays as a saved design
    primary = next(d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "primary")
    events = [d["data"] for n, d in docs if n == "event" and d["descriptor"] == primary]
    energies = np.unique(np.round([e["mono"] for e in events], 6))
    np.testing.assert_allclose(energies, np.repeat(design["energies_eV"], 1), atol=1e-6)
    # the design's time, charged per frame, x (2 tiles + 1 flat) is the run's estimate without what the design
    # cannot see: the darks, the trips from and back to the start position, the pro-rata saturation charge
    estimate = start["time_estimate"]
    model = ScanTimeModel.from_dict(design["time_model"])
    e, dwell = np.asarray(design["energies_eV"]), np.asarray(design["dwell_s"])
    assert design["total_time_s"] == pytest.approx(model.scan_time_s(e, dwell))
    assert design["frames_per_energy"] == [1] * e.size
    charged = design["n_picks"] * model.pick_overhead_s * 3
    positions = start["tiles"]["positions"]
    flat, last_tile = tuple(bl.stage.out_position_mm), tuple(positions[-1])
    mono_trips = bl.mono.move_time_s(7112.0, e[0]) - bl.mono.settle_s + bl.mono.move_time_s(e[-1], 7112.0)
    stage_trips = (
        bl.stage.move_time_s((0.0, 0.0), flat)
        + bl.stage.move_time_s(last_tile, (0.0, 0.0))
        - bl.stage.move_time_s(last_tile, flat)
    )
    darks = dwell[0] + bl.camera.readout_s
    run_s = estimate["total_s"] - estimate["overhead_s"]
    assert design["total_time_s"] * 3 - charged == pytest.approx(
        run_s - darks - mono_trips - stage_trips, rel=1e-6
    )


def test_map_objective_budget_too_small_names_the_pair(RE, sim_beamline):
    bl = sim_beamline
    with pytest.raises(ValueError, match=r"closest pair .* it needs about"):
        RE(
            optimal_xanes_imaging(
                bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], objective="map", phases=PHASES,
                time_budget_s=20.0, target_separation=3.719, n_darks=0, n_flats=1,
            )
        )  # fmt: skip


def test_map_objective_unknown_phase(RE, sim_beamline):
    bl = sim_beamline
    with pytest.raises(ValueError, match="unobtainium not in the library"):
        RE(optimal_xanes_imaging(bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], objective="map",
                                 phases=["Fe2O3_rt_01", "unobtainium"], n_darks=0))  # fmt: skip
