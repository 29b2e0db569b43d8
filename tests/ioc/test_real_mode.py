"""``build_namespace("real")`` against the soft beamline over Channel Access: plans, live analyses, tiled.

The camera IOC renders the phantom with the simulated camera's physics and random stream, so a ``xanes_imaging``
run in real mode and the same run on the simulated beamline (same phantom, seed and plan) see the same frames and
the live clustering makes the same map.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from xbeam_bluesky.devices.epics import CalibratedScmosCamera
from xbeam_bluesky.storage import analysis_results, read_frames

from .conftest import PIXEL_UM, SAMPLE_MM, SEED, SHAPE

pytestmark = pytest.mark.ioc

ENERGIES = [float(e) for e in np.linspace(7095.0, 7175.0, 12)]
TILES = [[0.0, 0.0], [0.4, 0.0]]  # 40 px × 10 µm = 0.4 mm: side by side
DWELL = 0.05
CIF = Path(__file__).parents[2] / "src" / "xbeam_bluesky" / "data" / "cif" / "PbSO4-Wyckoff.cif"


def wait_for_result(client, uid: str, kind: str, timeout_s: float = 300.0):
    """The finished ``kind`` result of run ``uid`` (polls tiled; fails after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [n for n in analysis_results(client, uid, kind) if n.metadata.get("status") != "running"]
        if found:
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no {kind} result for run {uid} within {timeout_s} s")


def xanes_plan(ns, **kwargs):
    return ns["xanes_imaging"](
        ns["camera"], ns["mono"], ns["stage"], ENERGIES, TILES, DWELL, shutter=ns["shutter"], n_darks=2, n_flats=1,
        **kwargs,
    )  # fmt: skip


def sim_clustering(tmp_path):
    """The same plan on the simulated beamline (its own RunEngine), clustered live in memory: (labels, frames)."""
    from bluesky import RunEngine
    from bluesky.run_engine import get_bluesky_event_loop, set_bluesky_event_loop

    from xbeam_bluesky.callbacks.clustering import LiveClustering
    from xbeam_bluesky.devices.sim import make_sim_beamline
    from xbeam_bluesky.plans import xanes_imaging

    ca_loop = get_bluesky_event_loop()
    sim_RE = RunEngine(call_returns_result=False)
    try:
        beamline = make_sim_beamline(
            tmp_path, frame_shape=SHAPE, pixel_size_um=PIXEL_UM, sample_size_mm=SAMPLE_MM, seed=SEED, time_scale=0.0
        )  # fmt: skip
        live = LiveClustering(None, single_run=True)  # what the [live.clustering]-less config builds
        sim_RE.subscribe(live)
        ns = {"xanes_imaging": xanes_imaging, **beamline.devices()}
        (uid,) = sim_RE(xanes_plan(ns))
        assert live.join(timeout=300)
        return live.results[uid].labels
    finally:
        set_bluesky_event_loop(ca_loop)  # the CA client stays bound to the session RunEngine's loop


def test_xanes_imaging_in_real_mode_makes_the_sim_map(real_ns, soft_iocs, soft_beamline, tmp_path):
    ns = real_ns
    soft_iocs["camera"].restart()  # a fresh noise stream, as a new SimCamera of the same seed
    camera = ns["camera"]
    assert isinstance(camera, CalibratedScmosCamera)  # the noise keys the soft beamline wrote
    (uid,) = ns["RE"](xanes_plan(ns))
    run = ns["tiled_client"][uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    # the noise model recorded is the camera IOC's detector model, at the run's dwell
    model, noise = soft_beamline.camera_model(), run.metadata["start"]["noise_model"]
    assert noise["gain"] == model.gain and noise["offset"] == pytest.approx(model.read_noise**2)
    assert noise["i0_counts"] == pytest.approx(model.i0_counts(DWELL))
    frames = read_frames(run)  # through the tiled server, from the camera IOC's files
    assert frames.shape == (len(ENERGIES) * len(TILES), *SHAPE) and frames.mean() > 1000  # beam, not darks
    # the energies the mono reached are the requested ones (motor record readbacks, recorded per event)
    np.testing.assert_allclose(np.unique(run["primary"]["mono"].read()), ENERGIES, atol=1e-6)

    result = wait_for_result(ns["tiled_client"], uid, "clustering")
    assert result.metadata["status"] == "success", result.metadata.get("error")
    labels = result["labels"].read()
    assert labels.shape == (SHAPE[0], 2 * SHAPE[1])
    assert len(np.unique(labels[labels > 0])) >= 2  # the phantom's phases, not one blob

    np.testing.assert_array_equal(labels, sim_clustering(tmp_path))


def cif_cell(path: Path) -> dict[str, float]:
    """a, b, c (Å) as written in the CIF."""
    text = path.read_text()
    return {a: float(re.search(rf"_cell_length_{a}\s+([0-9.]+)", text).group(1)) for a in ("a", "b", "c")}


def test_xrd_powder_in_real_mode_is_refined_to_the_cif_cell(real_ns, soft_iocs):
    ns = real_ns
    (uid,) = ns["RE"](ns["xrd_powder"](ns["xrd"], 0.5, ["PbSO4-Wyckoff.cif"], sample="PbSO4 soft IOC"))
    assert ns["tiled_client"][uid].metadata["stop"]["exit_status"] == "success"
    result = wait_for_result(ns["tiled_client"], uid, "rietveld")
    md = result.metadata
    assert md["status"] == "success", md.get("error")
    assert md["refinement"]["instrument"]["wavelength1"] == pytest.approx(1.5405)  # the config's .instprm
    lattice = md["refinement"]["phases"][0]["lattice"]
    for axis, value in cif_cell(CIF).items():  # the IOC rendered this cell
        assert lattice[axis] == pytest.approx(value, rel=2e-3), axis
