"""The queueserver startup directory under a real Redis and a real RE Manager (nothing mocked).

One tiled server, one Redis and one RE Manager serve the whole module; tests run in file order and each leaves
the queue empty. The manager runs ``profiles/queueserver`` with the committed YAML files, in sim mode with small
frames, writing to the test's tiled server.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bluesky_queueserver_api import BPlan

from xbeam_bluesky.storage import analysis_results, read_frames, start_embedded_server, xrd_pattern
from xbeam_bluesky.testing.qserver import (
    RedisProcess,
    REManagerProcess,
    find_free_port,
    sim_worker_environment,
)

pytestmark = [pytest.mark.qserver, pytest.mark.slow]

STARTUP_DIR = Path(__file__).parents[2] / "profiles" / "queueserver"
CONFIG = """
[sim]
frame_shape = [24, 32]
pixel_size_um = 10.0
sample_size_mm = [4.0, 4.0]
time_scale = 0.0

[live.rietveld]
n_trials = 4
"""


@pytest.fixture(scope="module")
def qs(tmp_path_factory):
    """tiled server + Redis + RE Manager with the environment open; yields a dict of handles."""
    root = tmp_path_factory.mktemp("qserver")
    server = start_embedded_server(root / "data")
    env = sim_worker_environment(root, CONFIG, server.uri)
    from tiled.client import from_uri

    with RedisProcess(root / "redis") as redis:
        manager = REManagerProcess(STARTUP_DIR, redis.addr, root / "manager", env=env).start()
        api = manager.api(timeout_recv=30.0)
        api.user, api.user_group = "beamline staff", "primary"
        try:
            api.environment_open()
            api.wait_for_idle(timeout=300)
            assert api.status()["worker_environment_exists"], manager.log_tail()
            yield {"api": api, "manager": manager, "server": server, "client": from_uri(server.uri),
                   "root": root, "redis": redis}  # fmt: skip
        finally:
            api.close()
            manager.stop()
            server.close()


@pytest.fixture
def api(qs):
    """The module's manager client, with an empty queue before and after each test."""
    qs["api"].queue_clear()
    yield qs["api"]
    qs["api"].queue_clear()


def _run_queue(api, timeout: float = 600.0) -> list[dict]:
    """Start the queue, wait until the manager is idle, return the history items added by this run."""
    before = len(api.history_get()["items"])
    api.queue_start()
    api.wait_for_idle(timeout=timeout)
    return api.history_get()["items"][before:]


def _wait_for_result(client, uid: str, kind: str, key: str, timeout: float = 300.0):
    """The analysis result of ``kind`` for run ``uid`` once its array ``key`` is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [node for node in analysis_results(client, uid, kind) if key in node]
        if found:
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no {kind!r} result with {key!r} for run {uid} within {timeout} s")


def test_plugin_plans_are_allowed_for_users(qs):
    allowed = qs["api"].plans_allowed()["plans_allowed"]
    assert {"xanes_imaging", "optimal_xanes_imaging", "xrd_powder", "count", "scan"} <= set(allowed)
    # parameter descriptions come from the NumPy docstrings
    dwell = {p["name"]: p for p in allowed["xanes_imaging"]["parameters"]}["dwell"]
    assert dwell["description"].startswith("Exposure per frame in s")
    devices = qs["api"].devices_allowed()["devices_allowed"]
    assert {"camera", "mono", "stage", "shutter", "xrd"} <= set(devices)


def test_plans_run_and_raw_runs_and_live_results_land_in_tiled(qs, api):
    client = qs["client"]
    api.item_add(BPlan("optimal_xanes_imaging", "camera", "mono", "stage", n_points=12, dwell=0.01,
                       shutter="shutter", n_darks=1, n_flats=1))  # fmt: skip
    api.item_add(BPlan("xrd_powder", "xrd", 0.5, ["PbSO4-Wyckoff.cif"]))
    items = _run_queue(api)
    assert [(i["name"], i["result"]["exit_status"]) for i in items] == [
        ("optimal_xanes_imaging", "completed"),
        ("xrd_powder", "completed"),
    ], qs["manager"].log_tail()
    xanes_uid, xrd_uid = (i["result"]["run_uids"][0] for i in items)

    xanes = client[xanes_uid]
    start = xanes.start
    assert start["plan_name"] == "optimal_xanes_imaging" and start["purpose"] == "xanes_imaging"
    assert start["design"]["n_picks"] == 12
    # one frame per listed energy at every tile
    n_frames = len(start["energies"]) * len(start["tiles"]["positions"])
    assert read_frames(xanes, "primary").shape == (n_frames, 24, 32)
    pattern = xrd_pattern(client[xrd_uid])
    assert pattern.counts.shape == pattern.two_theta_deg.shape and pattern.counts.sum() > 0

    # the live analyses ran in the worker and wrote their results next to the raw runs
    clusters = _wait_for_result(client, xanes_uid, "clustering", "labels")
    assert clusters.metadata["raw_uid"] == xanes_uid
    assert clusters["labels"].read().shape == (24, 32)
    refinement = _wait_for_result(client, xrd_uid, "rietveld", "calculated")
    assert refinement.metadata["raw_uid"] == xrd_uid
    assert refinement["calculated"].read().shape == pattern.counts.shape


def test_bad_submissions_are_rejected_and_the_queue_is_intact(api):
    good = api.item_add(BPlan("count", ["camera"], num=1))["item"]
    cases = [
        (BPlan("no_such_plan"), "Plan 'no_such_plan' is not in the list of allowed plans"),
        (BPlan("xanes_imaging", "camera", "mono", "stage", "7100", [[0, 0]], 0.01), "energies"),
        (BPlan("xanes_imaging", "camera", "mono", "stage", [7100.0], [[0, 0]], "fast"), "dwell"),
        (BPlan("xrd_powder", "xrd", 0.5, ["PbSO4-Wyckoff.cif"], num="two"), "num"),
    ]
    for plan, message in cases:
        with pytest.raises(Exception, match="Plan validation failed") as info:
            api.item_add(plan)
        assert message in str(info.value)
    queue = api.queue_get()["items"]
    assert [item["item_uid"] for item in queue] == [good["item_uid"]]


def test_restricted_group_cannot_run_plans_outside_its_permissions(api):
    for plan in (
        BPlan("xanes_imaging", "camera", "mono", "stage", [7100.0], [[0, 0]], 0.01),
        BPlan("mv", "mono", 7200.0),
        BPlan("scan", ["camera"], "mono", 7100.0, 7200.0, 3),
    ):
        with pytest.raises(
            Exception, match=f"Plan '{plan.to_dict()['name']}' is not in the list of allowed plans"
        ):
            api.item_add(plan, user_group="observer")
    assert api.item_add(BPlan("count", ["camera"]), user_group="observer")["success"]
    assert api.item_add(BPlan("xrd_powder", "xrd", 0.5, ["PbSO4-Wyckoff.cif"]), user_group="observer")[
        "success"
    ]
    assert len(api.queue_get()["items"]) == 2


def test_unknown_device_fails_the_plan_clearly_and_keeps_the_rest_of_the_queue(qs, api):
    client = qs["client"]
    n_runs = len(client)
    api.item_add(
        BPlan("xanes_imaging", "no_such_camera", "mono", "stage", [7100.0], [[0, 0]], 0.01, n_darks=0)
    )
    kept = api.item_add(BPlan("count", ["camera"]))["item"]
    (failed,) = _run_queue(api)
    assert failed["result"]["exit_status"] == "failed"
    assert "camera = 'no_such_camera' is not a bluesky Readable device" in failed["result"]["msg"]
    # the failed item goes back to the front of the queue (to be fixed or removed); the rest is untouched
    queue = api.queue_get()["items"]
    assert [item["name"] for item in queue] == ["xanes_imaging", "count"]
    assert queue[1]["item_uid"] == kept["item_uid"]
    assert len(client) == n_runs  # nothing was written


def test_stale_yaml_rejects_plans_it_does_not_list(qs, tmp_path):
    """A manager given a YAML that lacks a plan refuses it with a clear message (the file test catches this)."""
    text = (STARTUP_DIR / "existing_plans_and_devices.yaml").read_text()
    head, _, tail = text.partition("  xrd_powder:\n")
    stale = tmp_path / "existing_plans_and_devices.yaml"
    stale.write_text(head + "".join(line + "\n" for line in tail.splitlines() if not line.startswith("    ")))
    manager = REManagerProcess(STARTUP_DIR, qs["redis"].addr, tmp_path / "manager",
                               existing_plans_devices=stale).start()  # fmt: skip
    api = manager.api()
    try:
        with pytest.raises(Exception, match="Plan 'xrd_powder' is not in the list of allowed plans"):
            api.item_add(
                BPlan("xrd_powder", "xrd", 0.5, ["PbSO4-Wyckoff.cif"]), user="t", user_group="primary"
            )
    finally:
        api.close()
        manager.stop()


def test_tiled_unreachable_plans_complete_spooled_and_nothing_is_lost(qs, api):
    """Last: the tiled server goes away. The plans go on (their documents are spooled on the worker's disk, one
    warning line in the manager log); queue and earlier runs survive, and the spooled runs are replayed whole into
    a server started again on the same directory."""
    from tiled.client import from_uri

    from xbeam_bluesky.storage import replay_pending

    server, client = qs["server"], qs["client"]
    earlier = sorted(client)
    server.close()
    api.item_add(BPlan("xrd_powder", "xrd", 0.5, ["PbSO4-Wyckoff.cif"]))
    api.item_add(BPlan("count", ["camera"], num=2))
    items = _run_queue(api)
    assert [(i["name"], i["result"]["exit_status"]) for i in items] == [
        ("xrd_powder", "completed"),
        ("count", "completed"),
    ], qs["manager"].log_tail()
    assert api.status()["manager_state"] == "idle" and api.status()["worker_environment_exists"]
    assert api.queue_get()["items"] == []
    xrd_uid, count_uid = (i["result"]["run_uids"][0] for i in items)
    log = qs["manager"].log_path.read_text(errors="replace")
    assert log.count(f"failed at the start document of run {xrd_uid}") == 1, qs["manager"].log_tail()
    spool_dir = qs["root"] / "data" / "spool"
    assert sorted(p.stem for p in spool_dir.glob("*.jsonl")) == sorted([xrd_uid, count_uid])

    revived = start_embedded_server(qs["root"] / "data")
    try:
        catalog = from_uri(revived.uri)
        assert set(earlier) <= set(catalog)  # the data written before are intact
        assert sorted(replay_pending(spool_dir, catalog)) == sorted([xrd_uid, count_uid])
        assert not list(spool_dir.glob("*.jsonl"))
        xrd = catalog[xrd_uid]
        assert xrd.metadata["stop"]["exit_status"] == "success"
        pattern = xrd_pattern(xrd)
        assert pattern.counts.shape == pattern.two_theta_deg.shape and pattern.counts.sum() > 0
        count_run = catalog[count_uid]
        assert count_run.metadata["stop"]["num_events"]["primary"] == 2
        shapes = [count_run["primary"][key].read().shape for key in count_run["primary"]]
        assert (2, 1, 24, 32) in shapes, shapes  # count: 2 frames (one extra axis) from the HDF5 file
    finally:
        revived.close()


def test_redis_unreachable_is_a_clear_startup_error(tmp_path):
    port = find_free_port()
    manager = REManagerProcess(STARTUP_DIR, f"127.0.0.1:{port}", tmp_path / "manager")
    with pytest.raises(RuntimeError, match="RE Manager did not start") as info:
        manager.start(timeout=60)
    assert f"Redis server may not be available at '127.0.0.1:{port}'" in str(info.value)
