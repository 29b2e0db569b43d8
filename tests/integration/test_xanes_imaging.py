"""xanes_imaging end to end: RunEngine → sim devices → HDF5 + TiledWriter → read back from tiled."""

from __future__ import annotations

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.simulators import check_limits, summarize_plan
from bluesky.utils import FailedStatus

from xbeam_bluesky.plans import acquisition_order, estimate_duration, frame_order, xanes_imaging
from xbeam_bluesky.storage import (
    absorbance_stack,
    dark_frames,
    flat_means,
    frame_table,
    read_frames,
    tile_stack,
)
from xbeam_bluesky.testing import tiled_runs

ENERGIES = [7100.0, 7112.5, 7125.0, 7150.0]
TILES = [[0.0, 0.0], [0.32, 0.0], [0.0, 0.4]]
DWELL = 0.05


def _plan(bl, **kwargs):
    args = {"shutter": bl.shutter, "n_darks": 3, "n_flats": 2, **kwargs}
    return xanes_imaging(bl.camera, bl.mono, bl.stage, ENERGIES, TILES, DWELL, **args)


@pytest.mark.parametrize("order", ["energy", "tile"])
def test_frames_energies_positions_and_streams(tiled_RE, tiled_storage, sim_beamline, order) -> None:
    bl = sim_beamline
    (uid,) = tiled_RE(_plan(bl, order=order, design={"method": "conventional"}, md={"operator": "test"}))
    run = tiled_storage.client[uid]
    start, stop = run.metadata["start"], run.metadata["stop"]
    assert stop["exit_status"] == "success"
    assert start["purpose"] == "xanes_imaging" and start["order"] == order
    assert start["energies"] == ENERGIES and start["dwell"] == DWELL
    assert start["tiles"] == {"positions": TILES, "pixel_size_um": 10.0, "frame_shape": [32, 40]}
    assert start["edge"] == "Fe-K" and start["e0"] == pytest.approx(7112.0)
    assert start["design"] == {"method": "conventional"} and start["operator"] == "test"
    assert start["num_points"] == 12 and start["detectors"] == ["camera"]
    assert start["noise_model"]["gain"] == pytest.approx(9.31) and start["i0"] > 1000
    assert set(run) == {"primary", "flat", "dark", "baseline"}

    frames = read_frames(run)
    assert frames.shape == (12, 32, 40) and frames.dtype == np.uint16
    table = frame_table(run)
    expected = acquisition_order(len(ENERGIES), len(TILES), order)
    assert list(zip(table.energy_index, table.tile_index, strict=True)) == expected == frame_order(start)
    np.testing.assert_allclose(table.energy_eV, [ENERGIES[ie] for ie, _ in expected])
    np.testing.assert_allclose(np.c_[table.x_mm, table.y_mm], [TILES[it] for _, it in expected])

    darks = dark_frames(run)
    assert darks.shape == (3, 32, 40) and darks.dtype == np.uint16
    assert darks.mean() == pytest.approx(bl.camera.model.dark_offset, abs=0.5)
    flat_table = frame_table(run, "flat")
    assert sorted(flat_table.energy_index.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (flat_table.tile_index == -1).all()
    np.testing.assert_allclose(np.c_[flat_table.x_mm, flat_table.y_mm], [bl.stage.out_position_mm] * 8)
    flats = flat_means(run)
    assert sorted(flats) == [0, 1, 2, 3]
    expected_flat = bl.camera.model.expected_frame(None, DWELL)
    assert flats[0].mean() == pytest.approx(expected_flat.mean(), rel=0.01)

    # The monochromator and the stage are back where they started.
    assert bl.mono.position == 7112.0
    assert (bl.stage.x.position, bl.stage.y.position) == (0.0, 0.0)


def test_corrected_absorbance_matches_the_phantom(tiled_RE, tiled_storage, sim_beamline) -> None:
    bl = sim_beamline
    (uid,) = tiled_RE(_plan(bl, n_flats=4))
    run = tiled_storage.client[uid]
    stack = tile_stack(run, 1)
    assert stack.frames.shape == (4, 32, 40)
    np.testing.assert_allclose(stack.energies_eV, ENERGIES)
    assert stack.position_mm == (0.32, 0.0)
    _, mu = absorbance_stack(run, 1)
    truth = bl.phantom.absorbance(ENERGIES, (0.32, 0.0), (32, 40), 10.0)
    # Photon noise of one frame (~2000 photons) and 4 flats: σ(μt) ≈ 0.03 per pixel; the means agree closely.
    assert np.abs(mu.mean(axis=(1, 2)) - truth.mean(axis=(1, 2))).max() < 0.01
    assert np.abs(mu - truth).mean() < 0.06
    # Edge jump: the absorbance rises across the Fe K edge.
    assert mu[3].mean() - mu[0].mean() > 0.5


def test_detector_fault_fails_the_run_and_keeps_frames(tiled_RE, tiled_storage, sim_beamline) -> None:
    bl = sim_beamline
    bl.camera.frame_timeout_s = 0.2
    bl.camera.inject_timeout(after_frames=3 + 2 + 3 + 2 + 1)  # darks, flats, tiles @E0, flats @E1, 1 tile @E1
    uids: list[str] = []
    tiled_RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    with pytest.raises(FailedStatus) as info:
        tiled_RE(_plan(bl))
    assert "no frame within" in str(info.value.__cause__)
    run = tiled_storage.client[uids[-1]]
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "no frame within" in run.metadata["stop"]["reason"]
    frames = read_frames(run)
    assert frames.shape == (4, 32, 40)
    table = frame_table(run)
    assert list(zip(table.energy_index, table.tile_index, strict=True)) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert dark_frames(run).shape == (3, 32, 40) and read_frames(run, "flat").shape == (4, 32, 40)
    assert bl.mono.position == 7112.0  # returned to the start energy after the failure
    bl.camera.inject_timeout(None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"energies": [7100.0, 30000.0]}, r"energies\[1\] = 30000.0 eV is outside the limits of mono"),
        ({"energies": []}, "energies is empty"),
        ({"tiles": [[0.0, 0.0], [50.0, 0.0]]}, r"tiles\[1\] x = 50.0 mm is outside the limits of stage-x"),
        ({"tiles": [[0.0]]}, r"tiles\[0\] = \[0.0\]; expected an \[x, y\] pair"),
        ({"dwell": 0.0}, "dwell = 0.0; expected a positive exposure"),
        ({"order": "random"}, "order = 'random'"),
        ({"shutter": None}, "no shutter was given"),
        ({"flat_position": [99.0, 0.0]}, "flat_position x = 99.0 mm is outside"),
    ],
)
def test_bad_input_raises_before_any_motion(tiled_RE, tiled_storage, sim_beamline, kwargs, message) -> None:
    bl = sim_beamline
    before = set(tiled_runs(tiled_storage.client))
    args = {"energies": ENERGIES, "tiles": TILES, "dwell": DWELL, "shutter": bl.shutter, **kwargs}
    moved = []
    tiled_RE.msg_hook = lambda msg: moved.append(msg) if msg.command in ("set", "open_run") else None
    with pytest.raises(ValueError, match=message):
        tiled_RE(xanes_imaging(bl.camera, bl.mono, bl.stage, **args))
    assert moved == []
    assert set(tiled_runs(tiled_storage.client)) == before
    assert bl.mono.position == 7112.0 and bl.camera.frames_total == 0


def test_dry_run_with_simulators(RE, sim_beamline, capsys) -> None:
    bl = sim_beamline
    summarize_plan(_plan(bl))
    out = capsys.readouterr().out
    assert out.count("Read ['camera'") == 12 + 8 + 3  # primary, flat and dark frames
    assert out.count("Open Run") == 1 and out.count("Close Run") == 1
    check_limits(_plan(bl))  # every move of the plan is inside the soft limits
    with pytest.raises(ValueError, match="outside the limits"):
        check_limits(bps.mv(bl.mono, bl.mono.limits[1] + 1.0))
    assert bl.camera.frames_total == 0 and bl.mono.position == 7112.0  # nothing was acquired or moved


def test_duration_estimate_adds_motion_exposure_and_overhead(RE, sim_beamline) -> None:
    bl = sim_beamline
    energies, tiles = [7100.0, 7110.0], [[0.0, 0.0], [1.0, 0.0]]
    estimate = estimate_duration(
        xanes_imaging(bl.camera, bl.mono, bl.stage, energies, tiles, 0.1, n_darks=0, n_flats=0),
        overhead_per_frame_s=0.01,
    )
    mono, stage = bl.mono, bl.stage
    # Start at 7112 eV, (0, 0): 7112→7100, tile moves 0→1→0, 7100→7110, tile 1→0... then back to 7112 and (0, 0).
    motion = (
        mono.move_time_s(7112.0, 7100.0)
        + stage.move_time_s((0, 0), (1, 0))
        + mono.move_time_s(7100.0, 7110.0)
        + stage.move_time_s((1, 0), (0, 0))
        + stage.move_time_s((0, 0), (1, 0))
        + mono.move_time_s(7110.0, 7112.0)
        + stage.move_time_s((1, 0), (0, 0))
    )
    assert estimate.frames == 4
    assert estimate.exposure_s == pytest.approx(4 * (0.1 + bl.camera.readout_s))
    assert estimate.overhead_s == pytest.approx(0.04)
    assert estimate.motion_s == pytest.approx(motion)
    assert estimate.total_s == pytest.approx(motion + 4 * (0.1 + bl.camera.readout_s) + 0.04)
    assert call_in_bluesky_event_loop(bl.mono.readback.get_value()) == 7112.0  # nothing moved


DWELLS = [0.02, 0.05, 0.1, 0.04]


@pytest.mark.parametrize("order", ["energy", "tile"])
def test_per_energy_dwell_sets_the_exposure_of_every_frame(
    tiled_RE, tiled_storage, sim_beamline, order
) -> None:
    bl = sim_beamline
    (uid,) = tiled_RE(
        xanes_imaging(
            bl.camera, bl.mono, bl.stage, ENERGIES, TILES, DWELLS, shutter=bl.shutter, n_darks=2, n_flats=3,
            order=order,
        )
    )  # fmt: skip
    run = tiled_storage.client[uid]
    start = run.metadata["start"]
    assert start["dwell"] == DWELLS and start["plan_args"]["dwell"] == DWELLS
    assert start["i0"] == pytest.approx(bl.camera.noise_metadata(0.02)["i0_counts"])
    assert start["noise_model"]["i0_counts_per_energy"] == pytest.approx(
        [bl.camera.noise_metadata(d)["i0_counts"] for d in DWELLS]
    )
    # the exposure recorded with every frame is the dwell of its energy (darks: the first energy's)
    for stream in ("primary", "flat"):
        table = frame_table(run, stream)
        recorded = np.asarray(run[stream]["exposure_s"].read())
        np.testing.assert_allclose(recorded, [DWELLS[ie] for ie in table.energy_index])
    np.testing.assert_allclose(np.asarray(run["dark"]["exposure_s"].read()), [DWELLS[0]] * 2)
    # ...and the photons say the camera really exposed that long: flat counts above dark ∝ dwell
    flats = flat_means(run)
    for ie, dwell in enumerate(DWELLS):
        expected = bl.camera.model.expected_frame(None, dwell).mean()
        assert flats[ie].mean() == pytest.approx(expected, rel=0.01)
    # transmission stays right: dark/flat-corrected absorbance matches the phantom at every dwell
    _, mu = absorbance_stack(run, 1)
    truth = bl.phantom.absorbance(ENERGIES, tuple(TILES[1]), (32, 40), 10.0)
    assert np.abs(mu.mean(axis=(1, 2)) - truth.mean(axis=(1, 2))).max() < 0.02
    assert frame_order(start) == acquisition_order(len(ENERGIES), len(TILES), order)


def test_duration_estimate_with_per_energy_dwell(RE, sim_beamline) -> None:
    bl = sim_beamline
    tiles = [[0.0, 0.0], [1.0, 0.0]]
    n_flats, n_darks = 2, 3
    estimate = estimate_duration(
        xanes_imaging(bl.camera, bl.mono, bl.stage, ENERGIES, tiles, DWELLS, shutter=bl.shutter,
                      n_darks=n_darks, n_flats=n_flats),
    )  # fmt: skip
    readout = bl.camera.readout_s
    frames = [(d + readout) * (n_flats + len(tiles)) for d in DWELLS]
    assert estimate.frames == n_darks + len(ENERGIES) * (n_flats + len(tiles))
    assert estimate.exposure_s == pytest.approx(n_darks * (DWELLS[0] + readout) + sum(frames))


@pytest.mark.parametrize(
    ("dwell", "message"),
    [
        ([0.1, 0.1, 0.1], "dwell has 3 entries but energies has 4; expected one exposure"),
        ([0.1, 0.1, -0.1, 0.1], r"dwell\[2\] = -0.1; expected a positive exposure"),
        ([0.1, float("nan"), 0.1, 0.1], r"dwell\[1\] = nan; expected a positive exposure"),
        ("0.1", "dwell = '0.1'; expected a positive exposure"),
    ],
)
def test_bad_dwell_list_raises_before_any_motion(
    tiled_RE, tiled_storage, sim_beamline, dwell, message
) -> None:
    bl = sim_beamline
    before = set(tiled_runs(tiled_storage.client))
    moved = []
    tiled_RE.msg_hook = lambda msg: moved.append(msg) if msg.command in ("set", "open_run", "stage") else None
    with pytest.raises(ValueError, match=message):
        tiled_RE(xanes_imaging(bl.camera, bl.mono, bl.stage, ENERGIES, TILES, dwell, shutter=bl.shutter))
    assert moved == []
    assert set(tiled_runs(tiled_storage.client)) == before
    assert bl.camera.frames_total == 0


def test_saturating_dwell_is_refused_before_any_motion(RE, sim_beamline) -> None:
    bl = sim_beamline
    # the brightest flat pixel reaches 90 % of 65535 ADU at (0.9·65535 − dark) / (gain · flux · flat max)
    model = bl.camera.model
    longest = (0.9 * 65535 - model.dark_offset) / (model.gain * model.photon_flux * model.flat_field().max())
    moved = []
    RE.msg_hook = lambda msg: moved.append(msg) if msg.command in ("set", "open_run", "stage") else None
    dwells = [0.1, 1.05 * longest, 0.1, 0.1]
    with pytest.raises(
        ValueError, match=rf"dwell\[1\] = .* s saturates camera 'camera'.* above {longest:.3g} s"
    ):
        RE(xanes_imaging(bl.camera, bl.mono, bl.stage, ENERGIES, TILES, dwells, shutter=bl.shutter))
    assert moved == [] and bl.camera.frames_total == 0
    RE(xanes_imaging(bl.camera, bl.mono, bl.stage, ENERGIES[:1], TILES[:1], 0.95 * longest, n_darks=0))
    assert bl.camera.frames_total == 3  # just below the limit: accepted (2 flats + 1 frame)
