"""Queueserver overhead: time from ``environment_open`` to idle, and the per-plan cost of the queue.

A real Redis and a real RE Manager run ``profiles/queueserver`` (sim mode, 24×32 frames, instantaneous motion),
writing to a tiled server started here. 20 short plans (``count([camera])``, one frame) go through the queue;
the same 20 plans then run directly on a RunEngine built by the same ``build_namespace`` and writing to the same
tiled server. Prints one JSON line.

Usage: ``.venv/bin/python benchmarks/queueserver.py [--plans N]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bluesky_queueserver_api import BPlan

from xbeam_bluesky.storage import start_embedded_server
from xbeam_bluesky.testing.qserver import RedisProcess, REManagerProcess, sim_worker_environment

STARTUP_DIR = Path(__file__).parents[1] / "profiles" / "queueserver"
CONFIG = "[sim]\nframe_shape = [24, 32]\ntime_scale = 0.0\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=20, help="number of short plans (default 20)")
    n_plans = parser.parse_args().plans
    root = Path(tempfile.mkdtemp(prefix="xbeam-bench-qs-"))
    server = start_embedded_server(root / "data")
    env = sim_worker_environment(root, CONFIG, server.uri)
    try:
        with (
            RedisProcess(root / "redis") as redis,
            REManagerProcess(STARTUP_DIR, redis.addr, root / "m", env=env) as m,
        ):
            api = m.api(timeout_recv=30.0)
            api.user, api.user_group = "benchmark", "primary"
            t0 = time.perf_counter()
            api.environment_open()
            api.wait_for_idle(timeout=600)
            env_open_s = time.perf_counter() - t0
            assert api.status()["worker_environment_exists"], m.log_tail()
            api.item_add(BPlan("count", ["camera"]))  # warm-up: first plan pays imports and file creation
            api.queue_start()
            api.wait_for_idle(timeout=600)
            for _ in range(n_plans):
                api.item_add(BPlan("count", ["camera"]))
            t0 = time.perf_counter()
            api.queue_start()
            api.wait_for_idle(timeout=600)
            queue_s = time.perf_counter() - t0
            history = api.history_get()["items"][-n_plans:]
            assert all(item["result"]["exit_status"] == "completed" for item in history), m.log_tail()
            api.close()

        os.environ.update(env)
        from bluesky.plans import count

        from xbeam_bluesky.startup import build_namespace

        ns = build_namespace("sim", config_path=root / "xbeam.toml", live=False)
        ns["RE"](count([ns["camera"]]))  # same warm-up
        t0 = time.perf_counter()
        for _ in range(n_plans):
            ns["RE"](count([ns["camera"]]))
        direct_s = time.perf_counter() - t0
    finally:
        server.close()
    print(
        json.dumps(
            {
                "benchmark": "queueserver",
                "environment_open_to_idle_s": round(env_open_s, 3),
                "n_plans": n_plans,
                "plan": "count([camera]), one 24x32 sim frame, written to tiled",
                "queue_s_per_plan": round(queue_s / n_plans, 4),
                "direct_s_per_plan": round(direct_s / n_plans, 4),
                "queue_overhead_s_per_plan": round((queue_s - direct_s) / n_plans, 4),
                "load_average_1min": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
