"""Issue 17, unclear/late: a run the live clustering cannot cluster still gets a result record saying why."""

from __future__ import annotations

from xbeam_bluesky.callbacks import LiveClustering
from xbeam_bluesky.startup import build_namespace
from xbeam_bluesky.storage import analysis_results


def test_a_run_with_two_energies_gets_a_failed_clustering_record(tmp_path) -> None:
    ns = build_namespace("sim", data_dir=tmp_path / "data", frame_shape=(16, 16), live=False)
    try:
        live = LiveClustering(ns["storage"].client)
        ns["RE"].subscribe(live)
        plan = ns["xanes_imaging"](ns["camera"], ns["mono"], ns["stage"], [7100.0, 7130.0], [[0.0, 0.0]], 0.01,
                                   n_darks=0)  # fmt: skip
        (uid,) = ns["RE"](plan)
        assert live.join(timeout=120)
        records = list(analysis_results(ns["storage"].client, uid, "clustering"))
        assert len(records) == 1
        meta = records[0].metadata
        assert meta["status"] == "failed" and meta["exit_status"] == "success"
        assert (
            meta["error"] == f"ClusteringInputError: run {uid}: 2 energies; the clustering needs at least 3"
        )
        assert uid not in live.results  # no map was made
    finally:
        ns["storage"].close()
