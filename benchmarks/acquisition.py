"""Acquisition throughput: RunEngine + sim sCMOS (HDF5, SWMR) + TiledWriter into an embedded tiled server.

Runs ``xanes_imaging`` with 2048×2048 uint16 frames at zero exposure and instantaneous motion, and reports one
JSON line: frames per second end to end, the simulation's render time per frame (phantom μt + Beer–Lambert +
Poisson/read noise, done by the sim camera in a worker thread), the HDF5 write time per frame, and the pipeline's
own overhead per frame = steady-state time per frame (first to last event) − render time (RunEngine messages,
motion calls, document bundling, StreamResource/StreamDatum, HDF5 write, TiledWriter), and the per-run cost of
opening and closing the run (tiled containers, stream registration). The per-tile ground truth of the phantom
is rendered before timing (a sample property, not acquisition). The render time inside the pipeline is timed in
the camera's worker thread (it includes waits for the GIL while the RunEngine works, so the RunEngine share can
come out near zero); the same frames rendered standalone give a second split (informational: two separately timed
~300 ms loops differ by ±30 ms). Then the run is repeated with every frame pre-rendered, which times the pipeline
at full speed directly, with and without the sim camera's HDF5 write (on hardware the IOC writes the file).
Target: overhead ≤ 10 ms per frame, checked on the direct measurements.

    .venv/bin/python benchmarks/acquisition.py [--frames-per-tile 12] [--tiles 4] [--size 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="frame size in pixels (default 2048)")
    parser.add_argument("--tiles", type=int, default=4, help="tiles (default 4)")
    parser.add_argument("--energies", type=int, default=12, help="energies (default 12)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()

    from bluesky import RunEngine

    from xbeam_bluesky.devices.sim import make_sim_beamline
    from xbeam_bluesky.plans import xanes_imaging
    from xbeam_bluesky.storage import open_storage, read_frames

    data_dir = Path(tempfile.mkdtemp(prefix="xbeam-bench-"))
    storage = open_storage(data_dir=data_dir)
    try:
        RE = RunEngine(call_returns_result=False)
        RE.subscribe(storage.writer)
        bl = make_sim_beamline(
            storage.detector_dir, frame_shape=(args.size, args.size), pixel_size_um=1.0, time_scale=0.0,
            readout_s=0.0,
        )  # fmt: skip
        fov_mm = args.size / 1000.0
        tiles = [[(i % 2) * fov_mm, (i // 2) * fov_mm] for i in range(args.tiles)]
        energies = [7100.0 + 2.0 * k for k in range(args.energies)]
        bl.camera._fov_cache_size = args.tiles + 1
        t0 = time.perf_counter()
        for xy in tiles:
            bl.camera.field_of_view((xy[0], xy[1]))
        fov_s = time.perf_counter() - t0

        # Warm-up run (imports, first descriptors), not timed.
        RE(xanes_imaging(bl.camera, bl.mono, bl.stage, energies[:1], tiles[:1], 0.001, n_darks=0, n_flats=0))
        bl.camera.render_seconds = bl.camera.write_seconds = 0.0
        frames_before = bl.camera.frames_total

        event_times: list[float] = []
        token = RE.subscribe(lambda name, doc: event_times.append(time.perf_counter()), "event")
        t0 = time.perf_counter()
        (uid,) = RE(xanes_imaging(bl.camera, bl.mono, bl.stage, energies, tiles, 0.001, n_darks=0, n_flats=0))
        wall = time.perf_counter() - t0
        RE.unsubscribe(token)
        n = bl.camera.frames_total - frames_before
        # Steady state between the first and the last frame; the rest is per-run (open/close, tiled containers).
        steady_ms = 1000 * (event_times[-1] - event_times[0]) / (len(event_times) - 1)
        fixed_s = wall - steady_ms / 1000 * n
        stored = read_frames(storage.client[uid], rows=slice(0, 1))
        assert n == len(energies) * len(tiles), (n, len(energies), len(tiles))
        assert (
            storage.client[uid]["primary"]["camera"].shape[0] == n and stored.shape[-2:] == (args.size,) * 2
        )
        # The same frames rendered outside the pipeline (no RunEngine, no file): the simulation's own cost.
        t1 = time.perf_counter()
        for k in range(n):
            bl.camera.render(energies[k % len(energies)], tuple(tiles[k % len(tiles)]), 0.001, True)
        standalone_ms = 1000 * (time.perf_counter() - t1) / n
        render_ms = 1000 * bl.camera.render_seconds / n
        write_ms = 1000 * bl.camera.write_seconds / n
        overhead_ms = steady_ms - render_ms
        # The pipeline alone, measured directly: the same run with every frame pre-rendered (one real frame
        # reused), so the steady time per frame is RunEngine + HDF5 write + TiledWriter at full speed. Subtracting
        # two separately timed ~300 ms render loops (above) carries ±30 ms of render-time noise. On hardware the
        # areaDetector IOC writes the HDF5 file, so what runs in our process is that time minus the write.
        frame = bl.camera.render(energies[0], tuple(tiles[0]), 0.001, True)
        bl.camera.render = lambda *_args: frame
        event_times.clear()
        written = bl.camera.write_seconds
        token = RE.subscribe(lambda name, doc: event_times.append(time.perf_counter()), "event")
        RE(xanes_imaging(bl.camera, bl.mono, bl.stage, energies, tiles, 0.001, n_darks=0, n_flats=0))
        RE.unsubscribe(token)
        pipeline_ms = 1000 * (event_times[-1] - event_times[0]) / (len(event_times) - 1)
        pipeline_write_ms = 1000 * (bl.camera.write_seconds - written) / n
        software_ms = pipeline_ms - pipeline_write_ms
        print(
            json.dumps(
                {
                    "benchmark": "acquisition",
                    "frame_shape": [args.size, args.size],
                    "frames": n,
                    "tiles": len(tiles),
                    "energies": len(energies),
                    "wall_s": round(wall, 3),
                    "frames_per_s": round(n / wall, 2),
                    "steady_ms_per_frame": round(steady_ms, 2),
                    "run_open_close_s": round(fixed_s, 3),
                    "render_ms_per_frame": round(render_ms, 2),
                    "hdf5_write_ms_per_frame": round(write_ms, 2),
                    "pipeline_overhead_ms_per_frame": round(overhead_ms, 2),
                    "runengine_and_tiledwriter_ms_per_frame": round(overhead_ms - write_ms, 2),
                    "render_standalone_ms_per_frame": round(standalone_ms, 2),
                    "overhead_vs_standalone_render_ms_per_frame": round(steady_ms - standalone_ms, 2),
                    "prerendered_ms_per_frame": round(pipeline_ms, 2),
                    "prerendered_frames_per_s": round(1000 / pipeline_ms, 1),
                    "prerendered_hdf5_write_ms_per_frame": round(pipeline_write_ms, 2),
                    "prerendered_without_file_write_ms_per_frame": round(software_ms, 2),
                    "target_overhead_ms": 10.0,
                    "meets_target": max(overhead_ms, software_ms) <= 10.0,
                    "fov_ground_truth_s": round(fov_s, 2),
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            )
        )
    finally:
        storage.close()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
