"""The live AutoRietveld callback on RunEngine runs of the simulated powder diffractometer, results in tiled."""

from __future__ import annotations

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import pytest

from xbeam_bluesky.callbacks.rietveld import AutoRietveld
from xbeam_bluesky.rietveld import SearchSettings, ValidityLimits
from xbeam_bluesky.storage import analysis_results, result_png, xrd_pattern

pytestmark = pytest.mark.slow

CIF = "PbSO4-Wyckoff.cif"


@pytest.fixture(scope="module")
def ns(tmp_path_factory):
    from xbeam_bluesky.startup import build_namespace

    # live=False: the test subscribes its own AutoRietveld (small budget) instead of the registered one
    namespace = build_namespace(
        "sim",
        data_dir=tmp_path_factory.mktemp("auto_rietveld"),
        frame_shape=(8, 8),
        live=False,
        time_scale=0.0,
    )
    yield namespace
    namespace["storage"].close()


def _run(ns, auto, phases=(CIF,), sample="S1", **md):
    token = ns["RE"].subscribe(auto)
    try:
        return ns["RE"](ns["xrd_powder"](ns["xrd"], 1.0, list(phases), sample=sample, md=md))[0]
    finally:
        ns["RE"].unsubscribe(token)


def _only_result(ns, uid):
    (node,) = analysis_results(ns["tiled_client"], uid, "rietveld")
    return node


def test_refines_each_run_queues_them_and_warm_starts_the_same_sample(ns):
    auto = AutoRietveld(ns["tiled_client"], settings=SearchSettings(n_trials=5, n_jobs=1, n_startup_trials=5))
    try:
        first = _run(ns, auto)
        second = _run(ns, auto)
        # The RunEngine got control back while refinements are still queued or running.
        assert auto.pending >= 1
        assert auto.join(timeout=900)
    finally:
        auto.close()
    assert [h[0] for h in auto.handled] == [first, second]  # in run order, one at a time
    for uid in (first, second):
        raw = xrd_pattern(ns["tiled_client"][uid])
        node = _only_result(ns, uid)
        md = node.metadata
        assert md["raw_uid"] == uid and md["kind"] == "rietveld" and md["status"] == "success", md.get(
            "error"
        )
        # The sim renders PbSO4 with the same forward model: the refined fit must be close to the data.
        assert md["rwp"] < 5.0
        assert md["refinement"]["phases"][0]["lattice"]["a"] == pytest.approx(8.48, abs=0.01)
        assert md["refinement"]["phases"][0]["lattice_esd"]["a"] > 0
        assert md["strategy"]["stages"] and md["strategy"]["search"]["params"]
        two_theta = node["two_theta"].read()
        observed = node["observed"].read()
        np.testing.assert_allclose(observed, np.interp(two_theta, raw.two_theta_deg, raw.counts))
        np.testing.assert_allclose(node["difference"].read(), observed - node["calculated"].read())
        assert result_png(node)[:8] == b"\x89PNG\r\n\x1a\n"
    first_md = _only_result(ns, first).metadata
    second_md = _only_result(ns, second).metadata
    assert first_md["warm_start"] is False and second_md["warm_start"] is True
    trial0 = second_md["search"]["trials"][0]
    assert trial0["warm_start"] and trial0["params"] == first_md["strategy"]["search"]["params"]
    # The raw run is untouched: no analysis keys were added to it.
    assert "rietveld" not in ns["tiled_client"][first].metadata["start"]


def test_missing_cif_gives_a_failure_record(ns, tmp_path):
    auto = AutoRietveld(ns["tiled_client"], cif_dir=tmp_path, settings=SearchSettings(n_trials=2))
    try:
        uid = _run(ns, auto)
        assert auto.join(timeout=120)
    finally:
        auto.close()
    md = _only_result(ns, uid).metadata
    assert md["status"] == "failed"
    assert f"CIF {CIF!r} named in the run metadata not found in {tmp_path}" in md["error"]
    assert ns["RE"].state == "idle"


def test_unreadable_cif_gives_a_failure_record(ns, tmp_path):
    (tmp_path / CIF).write_text("data_broken\n_cell_length_a 8.48\nloop_\n_atom_site_label\n")
    auto = AutoRietveld(ns["tiled_client"], cif_dir=tmp_path, settings=SearchSettings(n_trials=2))
    try:
        uid = _run(ns, auto)
        assert auto.join(timeout=120)
    finally:
        auto.close()
    md = _only_result(ns, uid).metadata
    assert md["status"] == "failed" and f"CIF {CIF!r}" in md["error"] and "unreadable" in md["error"]


def test_run_without_pattern_gives_a_failure_record(ns):
    auto = AutoRietveld(ns["tiled_client"], settings=SearchSettings(n_trials=2))
    token = ns["RE"].subscribe(auto)
    try:
        (uid,) = ns["RE"](bpp.run_wrapper(bps.null(), md={"purpose": "xrd", "phases": [CIF]}))
        assert auto.join(timeout=120)
    finally:
        ns["RE"].unsubscribe(token)
        auto.close()
    md = _only_result(ns, uid).metadata
    assert md["status"] == "failed" and md["error"].startswith(f"no powder pattern in run {uid}")


def test_every_trial_invalid_gives_a_failure_record(ns):
    settings = SearchSettings(n_trials=2, n_startup_trials=2, limits=ValidityLimits(uiso_max=1e-9))
    auto = AutoRietveld(ns["tiled_client"], settings=settings)
    try:
        uid = _run(ns, auto, sample="impossible")
        assert auto.join(timeout=300)
    finally:
        auto.close()
    md = _only_result(ns, uid).metadata
    assert md["status"] == "failed" and "every trial of the strategy search was invalid" in md["error"]
    assert md["search"]["n_failed"] == md["search"]["n_trials"] == 2
    assert "Uiso" in md["error"]


def test_bad_documents_never_raise_into_the_caller(ns):
    auto = AutoRietveld(ns["tiled_client"])
    try:
        auto("start", {})  # no uid, no purpose
        auto("stop", {"run_start": "unknown"})
        auto("start", {"purpose": "xrd"})  # no uid: logged, not raised
        assert auto.join(timeout=10) and auto.handled == []
    finally:
        auto.close()


def test_registered_factory_refines_through_the_live_router(ns):
    from xbeam_bluesky.callbacks.remote import LiveContext, live_router
    from xbeam_bluesky.callbacks.rietveld import auto_rietveld

    context = LiveContext(results=ns["tiled_client"], options={"rietveld": {"n_trials": 2, "seed": 3}})
    token = ns["RE"].subscribe(live_router(context))  # the registry: purpose "xrd" -> auto_rietveld
    try:
        uid = ns["RE"](ns["xrd_powder"](ns["xrd"], 1.0, [CIF], sample="via registry"))[0]
        service = auto_rietveld(context)  # the one shared instance the router created for this context
        assert service.settings.n_trials == 2 and service.settings.seed == 3
        assert service.join(timeout=600)
    finally:
        ns["RE"].unsubscribe(token)
        auto_rietveld(context).close()
    md = _only_result(ns, uid).metadata
    assert md["status"] == "success" and md["n_trials"] == 2


def test_series_runs_are_refined_from_the_previous_run_of_the_series(ns):
    """Runs of an in-situ series (``series`` in the start document): a search for the first only; each later
    run is one refinement from the previous run's model, its result naming the previous result."""
    auto = AutoRietveld(ns["tiled_client"], settings=SearchSettings(n_trials=5, n_jobs=1, n_startup_trials=5))
    try:
        uids = [_run(ns, auto, sample="ramp", series="ramp-1", series_value=t) for t in (300.0, 320.0, 340.0)]
        assert auto.join(timeout=900)
    finally:
        auto.close()
    mds = [_only_result(ns, uid).metadata for uid in uids]
    assert [m["status"] for m in mds] == ["success"] * 3, [m.get("error") for m in mds]
    assert [m["series_index"] for m in mds] == [0, 1, 2]
    assert [m["series_value"] for m in mds] == [300.0, 320.0, 340.0]
    assert "search" in mds[0] and "search" not in mds[1] and "search" not in mds[2]
    results = [h[1] for h in auto.handled]
    assert mds[1]["series_previous_run"] == uids[0] and mds[1]["series_previous_result"] == results[0]
    assert mds[2]["series_previous_run"] == uids[1] and mds[2]["series_previous_result"] == results[1]
    # the reused strategy is the first run's best one, and the refined cell stays the simulated one
    assert mds[2]["strategy"]["stages"] == mds[0]["strategy"]["stages"]
    for m in mds:
        assert m["rwp"] < 5.0
        assert m["refinement"]["phases"][0]["lattice"]["a"] == pytest.approx(8.48, abs=0.01)
