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
            n_points=30, dwell=0.2, shutter=bl.shutter, n_darks=1, n_flats=1,
        )
    )  # fmt: skip
    start = next(d for n, d in docs if n == "start")
    design = start["design"]
    assert design["objective"] == "map" and design["stop_reason"] == "n_points"
    assert design["n_picks"] == 30 and design["candidates"]["n_phases"] == 4
    assert len(design["pairs"]) == 6 and design["weakest_pair"] == design["pairs"][0]
    assert design["noise"]["i0_counts_per_s"] == pytest.approx(bl.camera.noise_metadata(1.0)["i0_counts"])
    load_design(design)  # the record replays as a saved design
    primary = next(d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "primary")
    events = [d["data"] for n, d in docs if n == "event" and d["descriptor"] == primary]
    energies = np.unique(np.round([e["mono"] for e in events], 6))
    np.testing.assert_allclose(energies, design["energies_eV"], atol=1e-6)
    # the design's time, charged per frame, x (2 tiles + 1 flat) is the run's estimate without what the design
    # cannot see: the darks and the trips from and back to the start position; dwell beyond the camera's
    # unsaturated exposure is split into frames in the run and charged the same in the design
    estimate = start["time_estimate"]
    model = ScanTimeModel.from_dict(design["time_model"])
    e, dwell = np.asarray(design["energies_eV"]), np.asarray(design["dwell_s"])
    assert design["total_time_s"] == pytest.approx(model.scan_time_s(e, dwell))
    splits = np.ceil(dwell / design["max_exposure_s"] - 1e-9).astype(int)
    assert (
        design["frames_per_energy"] == splits.tolist() and splits.max() > 1
    )  # 0.2 s units, 0.31 s limit: an energy with two units is two frames
    assert model.max_exposure_s == design["max_exposure_s"] and model.pick_overhead_s == 0.0
    run_s = estimate["total_s"] - estimate["overhead_s"]
    assert design["total_time_s"] * 3 == pytest.approx(
        run_s - _darks(bl, design) - _trips(bl, start, e), rel=1e-6
    )


def _darks(bl, design: dict) -> float:
    """One dark frame: the exposure of the run's first frame (the first energy's, split at saturation)."""
    return design["dwell_s"][0] / design["frames_per_energy"][0] + bl.camera.readout_s


def _trips(bl, start: dict, energies) -> float:
    """What the design cannot see: the mono and stage trips from and back to the start position (7112 eV, 0, 0)."""
    flat, last_tile = tuple(bl.stage.out_position_mm), tuple(start["tiles"]["positions"][-1])
    e = np.sort(np.asarray(energies, dtype=float))
    mono = bl.mono.move_time_s(7112.0, e[0]) - bl.mono.settle_s + bl.mono.move_time_s(e[-1], 7112.0)
    stage = (
        bl.stage.move_time_s((0.0, 0.0), flat)
        + bl.stage.move_time_s(last_tile, (0.0, 0.0))
        - bl.stage.move_time_s(last_tile, flat)
    )
    return mono + stage


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


def test_adaptive_plan_writes_both_passes_and_their_link(tiled_RE, tiled_storage, sim_beamline):
    """The adaptive plan with its results client given as the tiled URI, as the queueserver passes it."""
    from xbeam_bluesky.callbacks import LiveClustering

    bl = sim_beamline
    live = LiveClustering(tiled_storage.client, references=PHASES, n_draws=200, n_threads=1)
    tiled_RE.subscribe(live)
    budget = 90.0
    uid1, uid2 = tiled_RE(
        optimal_xanes_imaging(
            bl.camera, bl.mono, bl.stage, tiles=[[0.0, 0.0]], phases=PHASES, adaptive=True,
            first_pass_fraction=0.3, time_budget_s=budget, results_client=tiled_storage.uri,
            dwell=0.05, shutter=bl.shutter, n_darks=1, n_flats=1,
        )
    )  # fmt: skip
    start2 = tiled_storage.client[uid2].metadata["start"]
    link = start2["adaptive"]
    assert link["pass"] == 2 and link["first_pass_uid"] == uid1
    start1 = tiled_storage.client[link["first_pass_uid"]].metadata["start"]
    assert start1["adaptive"]["pass"] == 1 and start1["design"]["objective"] == "map"
    # the first pass used its share of the budget, the second design continues from it within the whole: the
    # runs' estimates are the designs' times x frames + darks, less only the trips to and from the start position
    d1, d2 = start1["design"], start2["design"]
    run1 = start1["time_estimate"]["total_s"] - start1["time_estimate"]["overhead_s"]
    run2 = start2["time_estimate"]["total_s"] - start2["time_estimate"]["overhead_s"]
    frames = len(start1["tiles"]["positions"]) + 1
    work1 = run1 - _trips(bl, start1, d1["energies_eV"]) - _darks(bl, d1)
    work2 = run2 - _trips(bl, start2, d2["energies_eV"]) - _darks(bl, d2)
    assert work1 == pytest.approx(d1["total_time_s"] * frames, rel=1e-6)
    assert work1 + _darks(bl, d1) <= 0.3 * budget * (1 + 1e-6)  # the first pass keeps its share
    assert work1 + work2 == pytest.approx(d2["total_time_s"] * frames, rel=1e-6)  # combined = both sweeps
    assert work1 + work2 + _darks(bl, d1) <= budget * (1 + 1e-6)
    assert d2["objective"] == "map" and len(link["candidates"]) >= 2
    combined = dict(zip(d2["combined_design"]["energies_eV"], d2["combined_design"]["dwell_s"], strict=True))
    for e, dw in zip(d1["energies_eV"], d1["dwell_s"], strict=True):
        assert combined[e] >= dw - 1e-9  # nothing of the first pass is taken back
    first = dict(zip(d1["energies_eV"], d1["dwell_s"], strict=True))
    for e, dw in zip(d2["energies_eV"], d2["dwell_s"], strict=True):
        assert combined[e] == pytest.approx(first.get(e, 0.0) + dw)
    assert (
        sorted(set(start2["energies"])) == d2["energies_eV"]
    )  # (long dwell split into frames at saturation)
    assert link["combined_min_separation"] == pytest.approx(d2["min_separation"])
