"""Real-mode camera path over Channel Access against the sim camera: frames/s for 2048×2048 uint16 frames.

Starts the soft beamline (mono, stage, shutter and the areaDetector camera IOC, which renders the phantom and
writes SWMR HDF5 like NDFileHDF5) on free loopback ports, connects the EPICS devices of ``mode="real"`` over CA
and runs ``xanes_imaging`` (one segment: no darks or flats, ``--energies`` × ``--tiles`` frames) into an
embedded tiled server; then the same plan on the simulated beamline in the same process and catalog. Reported,
one JSON line: frames/s and steady ms per frame (first to last event) of

- ``ca``: the camera IOC rendering every frame (physics in the IOC process) and writing it;
- ``ca_reused_frame``: the camera IOC sending one pre-rendered frame at every exposure (CA + HDF5 path only);
- ``sim``: the simulated camera (physics and HDF5 write in this process, zero exposure and motion time);

and ``ca_overhead_ms_per_frame`` = ``ca_reused_frame`` steady ms − the IOC's frame period (exposure +
``readout_s``), i.e. what the CA round trips, the IOC's HDF5 write and the RunEngine add per frame.

    .venv/bin/python benchmarks/ca_camera.py [--size 2048] [--energies 8] [--tiles 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

DWELL_S = 0.001


def _steady(RE, plan) -> tuple[str, float, float, int]:
    """Run ``plan``; (uid, wall s, steady ms per primary frame, primary frames)."""
    times: list[float] = []
    primary: set[str] = set()

    def on_document(name: str, doc: dict) -> None:
        if name == "descriptor" and doc["name"] == "primary":
            primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in primary:
            times.append(time.perf_counter())

    token = RE.subscribe(on_document)
    t0 = time.perf_counter()
    (uid,) = RE(plan)
    wall = time.perf_counter() - t0
    RE.unsubscribe(token)
    return uid, wall, 1000 * (times[-1] - times[0]) / (len(times) - 1), len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="frame size in pixels (default 2048)")
    parser.add_argument("--energies", type=int, default=8, help="energies (default 8)")
    parser.add_argument("--tiles", type=int, default=2, help="tiles (default 2)")
    args = parser.parse_args()

    from xbeam_bluesky.testing.iocs.beamline import SoftBeamline

    root = Path(tempfile.mkdtemp(prefix="xbeam-ca-bench-"))
    shape = (args.size, args.size)
    fov_mm = args.size / 1000.0
    beamline = SoftBeamline(
        root / "frames", frame_shape=shape, pixel_size_um=1.0, sample_size_mm=(4 * fov_mm, 2 * fov_mm),
        stage_velocity_mm_s=1000.0, mono_velocity_eV_s=10000.0, log_dir=root / "logs",
    )  # fmt: skip
    config = beamline.write_config(root / "xbeam.toml", with_xrd=False)
    os.environ.update(beamline.client_environment())  # before the first CA context
    names = ["mono", "stage", "shutter", "camera"]
    beamline.start(names)
    try:
        from bluesky import RunEngine
        from bluesky.run_engine import call_in_bluesky_event_loop
        from ophyd_async.core import wait_for_connection

        from xbeam_bluesky.devices.epics import load_epics_config, make_epics_devices
        from xbeam_bluesky.devices.sim import make_sim_beamline
        from xbeam_bluesky.plans import xanes_imaging
        from xbeam_bluesky.storage import open_storage, read_frames

        storage = open_storage(data_dir=root / "data", readable_dirs=[beamline.frames_dir])
    except BaseException:
        beamline.stop()
        raise
    try:
        RE = RunEngine(call_returns_result=False)
        RE.subscribe(storage.writer)
        epics = load_epics_config(config)
        devices = make_epics_devices(epics)
        call_in_bluesky_event_loop(
            wait_for_connection(**{k: d.connect(timeout=10) for k, d in devices.items()})
        )
        tiles = [[(i % 2) * fov_mm, (i // 2) * fov_mm] for i in range(args.tiles)]
        energies = [7100.0 + 2.0 * k for k in range(args.energies)]

        def plan(camera, mono, stage, e=energies, t=tiles):
            return xanes_imaging(camera, mono, stage, e, t, DWELL_S, n_darks=0, n_flats=0)

        cam, mono, stage = devices["camera"], devices["mono"], devices["stage"]
        RE(plan(cam, mono, stage, energies[:1], tiles[:1]))  # warm-up: connections, first descriptors
        ca_uid, ca_wall, ca_ms, n = _steady(RE, plan(cam, mono, stage))
        assert read_frames(storage.client[ca_uid], rows=slice(0, 1)).shape[-2:] == shape
        stored = storage.client[ca_uid]["primary"]["camera"].shape[0]
        assert stored == n == args.energies * args.tiles, (stored, n, ca_wall, ca_ms)

        ioc = beamline.iocs["camera"]
        ioc.args.append("--reuse-frame")
        ioc.restart()
        RE(plan(cam, mono, stage, energies[:1], tiles[:1]))  # reconnect, first frame rendered
        _, reuse_wall, reuse_ms, _ = _steady(RE, plan(cam, mono, stage))

        sim = make_sim_beamline(
            storage.detector_dir, frame_shape=shape, pixel_size_um=1.0, time_scale=0.0, readout_s=0.0,
            sample_size_mm=(4 * fov_mm, 2 * fov_mm),
        )  # fmt: skip
        RE(plan(sim.camera, sim.mono, sim.stage, energies[:1], tiles[:1]))
        _, sim_wall, sim_ms, _ = _steady(RE, plan(sim.camera, sim.mono, sim.stage))
        period_ms = 1000 * (DWELL_S + epics.camera.readout_s)
        print(
            json.dumps(
                {
                    "benchmark": "ca_camera",
                    "frame_shape": list(shape),
                    "frames_per_run": n,
                    "dwell_s": DWELL_S,
                    "ioc_readout_s": epics.camera.readout_s,
                    "ca_frames_per_s": round(n / ca_wall, 2),
                    "ca_steady_ms_per_frame": round(ca_ms, 1),
                    "ca_reused_frame_frames_per_s": round(n / reuse_wall, 2),
                    "ca_reused_frame_steady_ms_per_frame": round(reuse_ms, 1),
                    "ca_overhead_ms_per_frame": round(reuse_ms - period_ms, 1),
                    "sim_frames_per_s": round(n / sim_wall, 2),
                    "sim_steady_ms_per_frame": round(sim_ms, 1),
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            )
        )
    finally:
        storage.close()
        beamline.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
