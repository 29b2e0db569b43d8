"""The queueserver in ``XBEAM_MODE=real`` against the soft IOCs: ``xanes_imaging`` and ``optimal_xanes_imaging``
submitted, run over Channel Access in the RE worker, their runs and frames in tiled. The CA client lives in the worker process only (this process talks to
the manager and to tiled), so the test runs with the other queueserver tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from bluesky_queueserver_api import BPlan

from xbeam_bluesky.storage import read_frames, start_embedded_server
from xbeam_bluesky.testing.iocs.beamline import SoftBeamline
from xbeam_bluesky.testing.qserver import RedisProcess, REManagerProcess

pytestmark = [pytest.mark.qserver, pytest.mark.ioc, pytest.mark.slow]

STARTUP_DIR = Path(__file__).parents[2] / "profiles" / "queueserver"
SHAPE = (32, 40)
ENERGIES = [7100.0, 7112.0, 7130.0]


def test_xanes_imaging_in_real_mode_through_the_queueserver(tmp_path):
    from tiled.client import from_uri

    beamline = SoftBeamline(
        tmp_path / "frames", frame_shape=SHAPE, pixel_size_um=10.0, sample_size_mm=(4.0, 4.0), seed=7,
        stage_velocity_mm_s=100.0, mono_velocity_eV_s=500.0, log_dir=tmp_path / "ioc-logs",
    )  # fmt: skip
    config = beamline.write_config(tmp_path / "xbeam.toml", with_xrd=False)
    server = start_embedded_server(tmp_path / "data", readable_dirs=[beamline.frames_dir])
    env = {
        "XBEAM_MODE": "real",
        "XBEAM_CONFIG": str(config),
        "XBEAM_DATA_DIR": str(tmp_path / "worker-data"),
        "XBEAM_TILED_URI": server.uri,
        **beamline.client_environment(),  # the worker's CA client finds exactly these IOCs
    }
    beamline.start(["mono", "stage", "shutter", "camera"])
    try:
        with RedisProcess(tmp_path / "redis") as redis:
            manager = REManagerProcess(STARTUP_DIR, redis.addr, tmp_path / "manager", env=env).start()
            api = manager.api(timeout_recv=30.0)
            api.user, api.user_group = "beamline staff", "primary"
            try:
                api.environment_open()
                api.wait_for_idle(timeout=300)
                assert api.status()["worker_environment_exists"], manager.log_tail()
                api.item_add(
                    BPlan("xanes_imaging", "camera", "mono", "stage", ENERGIES, [[0.0, 0.0]], 0.02,
                          shutter="shutter", n_darks=1, n_flats=1)
                )  # fmt: skip
                api.item_add(
                    BPlan("optimal_xanes_imaging", "camera", "mono", "stage", n_points=12, dwell=0.01,
                          shutter="shutter", n_darks=1, n_flats=1)
                )  # fmt: skip
                api.queue_start()
                api.wait_for_idle(timeout=600)
                items = api.history_get()["items"]
                assert [(i["name"], i["result"]["exit_status"]) for i in items] == [
                    ("xanes_imaging", "completed"),
                    ("optimal_xanes_imaging", "completed"),
                ], manager.log_tail()
                uid, optimal_uid = (i["result"]["run_uids"][0] for i in items)
            finally:
                api.close()
                manager.stop()
        run = from_uri(server.uri)[uid]
        start = run.metadata["start"]
        assert start["plan_name"] == "xanes_imaging" and start["noise_model"]["gain"] > 0  # the IOC's camera
        frames = read_frames(run)  # written by the camera IOC, read through the tiled server
        assert frames.shape == (len(ENERGIES), *SHAPE) and frames.mean() > 1000
        assert run.metadata["stop"]["exit_status"] == "success"
        # the planner's design, measured over CA: one frame per designed energy
        optimal = from_uri(server.uri)[optimal_uid]
        start = optimal.metadata["start"]
        assert start["design"]["n_picks"] == 12 and start["noise_model"] is not None
        assert read_frames(optimal).shape == (len(start["energies"]), *SHAPE)
    finally:
        beamline.stop()
        server.close()
