"""LiveClustering on real RunEngine runs of the simulated XANES-imaging beamline, results in tiled."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from xbeam_bluesky.callbacks import LiveClustering
from xbeam_bluesky.clustering import ArrayStack, TileMap, cluster_tiles, stitch_tiles
from xbeam_bluesky.devices.sim.phantom import Phantom
from xbeam_bluesky.storage import absorbance_stack, analysis_results, result_png

pytestmark = pytest.mark.slow

REFS = ["Fe2O3_rt_01", "Fe3O4_rt_01", "larch_FeDem_Goerthite", "larch_ALS1032_Olivine_Fo0", "FeS2_rt_01",
        "Fe_metal_rt_01"]  # fmt: skip
ENERGIES = list(np.linspace(7095.0, 7175.0, 24))
TILES = [[0.0, 0.0], [0.16, 0.0]]  # 48 px × 4 µm = 192 µm fields, overlapping by 32 µm
SHAPE = (48, 48)


def _cluster_cli_args(ns, uid: str) -> list[str]:
    """``xbeam cluster`` on a run of this module's catalog, with the live callback's references and draws."""
    return [
        "cluster",
        uid,
        "--tiled-uri",
        ns["storage"].uri,
        "--references",
        ",".join(REFS),
    ]


@pytest.fixture(scope="module")
def ns(tmp_path_factory):
    from xbeam_bluesky.startup import build_namespace

    phantom = Phantom(width_mm=1.0, height_mm=1.0, seed=2, domain_size_um=70, minority_fractions=(0.02, 0.01),
                      minority_radius_um=(25.0, 20.0))  # fmt: skip
    # live=False: only the callbacks subscribed by these tests run (not the registered in-process ones)
    namespace = build_namespace("sim", data_dir=tmp_path_factory.mktemp("live_clustering"), frame_shape=SHAPE,
                                phantom=phantom, live=False)  # fmt: skip
    yield namespace
    namespace["storage"].close()


def _run(ns, callback, capture=None, dwell=0.25):
    tokens = [ns["RE"].subscribe(callback)]
    if capture is not None:
        tokens.append(ns["RE"].subscribe(lambda name, doc: capture.append((name, doc))))
    try:
        plan = ns["xanes_imaging"](ns["camera"], ns["mono"], ns["stage"], ENERGIES, TILES, dwell,
                                   shutter=ns["shutter"], n_darks=3, n_flats=2)  # fmt: skip
        return ns["RE"](plan)[0]
    finally:
        for token in tokens:
            ns["RE"].unsubscribe(token)


@pytest.fixture(scope="module")
def live_run(ns):
    from xbeam_bluesky.storage import open_storage

    reader = open_storage(uri=ns["storage"].uri)  # another client, reading while the run goes
    provisional, read_back = [], []

    def seen(tile: int, labels: np.ndarray, n: int) -> None:
        provisional.append((tile, n, labels.copy()))
        if n < len(ENERGIES):
            found = [node for node in reader.client["analysis"].values()
                     if node.metadata.get("kind") == "clustering_provisional"]  # fmt: skip
            read_back.append((tile, n, [(dict(f.metadata), f[f"tile_{tile}"].read()) for f in found]))

    live = LiveClustering(ns["tiled_client"], references=REFS, n_draws=800, on_provisional=seen)
    documents: list = []
    uid = _run(ns, live, documents)
    assert live.join(timeout=600)
    reader.close()
    return live, uid, provisional, documents, read_back


def test_result_in_tiled_linked_to_the_run(ns, live_run) -> None:
    _, uid, provisional, _, _ = live_run
    (node,) = analysis_results(ns["tiled_client"], uid, "clustering")
    md = node.metadata
    assert md["raw_uid"] == uid and md["status"] == "success", md.get("error")
    assert md["dropped_frames"] == [] and md["frame_errors"] == []
    labels = node["labels"].read()
    assert labels.shape == (48, 88)  # two tiles 40 px apart on the stage
    assert node["spectra"].read().shape[1] == len(ENERGIES)
    assert node["confidence"].read().shape == labels.shape
    assert sum(md["summary"]["clusters"][i]["area_fraction"] for i in range(md["summary"]["n_clusters"])) == \
        pytest.approx(1.0)  # fmt: skip
    assert result_png(node)[:8] == b"\x89PNG\r\n\x1a\n"
    # provisional maps existed before the last energy of each tile
    assert {t for t, n, _ in provisional if n < len(ENERGIES)} == {0, 1}


def test_provisional_maps_are_readable_in_tiled_while_the_run_goes(ns, live_run) -> None:
    _live, uid, provisional, _, read_back = live_run
    # every provisional map before a tile's last energy was read by another client, equal to the map made
    assert {t for t, n, _ in read_back} == {0, 1}
    for tile, n, found in read_back:
        ((md, labels),) = [(m, a) for m, a in found if m["raw_uid"] == uid]
        assert md["status"] == "running" and md["energies_received"][str(tile)] == n
        made = next(lab for t, k, lab in provisional if (t, k) == (tile, n))
        np.testing.assert_array_equal(labels, made)
    # at the end the provisional result points at the final one
    (final,) = analysis_results(ns["tiled_client"], uid, "clustering")
    (prov,) = analysis_results(ns["tiled_client"], uid, "clustering_provisional")
    assert prov.metadata["status"] == "final" and prov.metadata["final_result_uid"] == final.metadata["result_uid"]
    assert prov.metadata["energies_received"] == {"0": len(ENERGIES), "1": len(ENERGIES)}
    assert final.metadata["provisional_publish_errors"] == 0


def test_live_and_xbeam_cluster_on_the_run_from_tiled_give_identical_maps(ns, live_run, tmp_path, capsys) -> None:
    """The run clustered live (frames read from the detector files as they came) and re-clustered by
    ``xbeam cluster UID`` from tiled (frames read back through the tiled server): the same map, pixel for pixel."""
    import json

    import h5py

    from xbeam_bluesky.cli import main

    live, uid, _, _, _ = live_run
    result = live.results[uid]
    out = tmp_path / "batch.h5"
    cli = ["cluster", uid, "--tiled-uri", ns["storage"].uri, "--references", ",".join(REFS), "--out", str(out)]
    assert main(cli) == 0
    capsys.readouterr()
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["labels"][()], result.labels)
        np.testing.assert_array_equal(f["raw_labels"][()], result.raw_labels)
        np.testing.assert_array_equal(f["confidence"][()], result.confidence)
        np.testing.assert_array_equal(f["spectra"][()], result.spectra)
        assert [n.decode() for n in f["cluster_names"][()]] == list(result.cluster_names)
        record = json.loads(f.attrs["clustering_record"])
    assert record == json.loads(json.dumps(live.records[uid]))  # the same choices, recorded
    assert record["noise"] == "run" and record["element"] == "Fe" and record["references"] == REFS
    # the map is not trivial: several clusters and the pipeline's no-absorber test ran on it
    assert len(np.unique(result.labels[result.labels > 0])) >= 3
    assert "absorber_test" in result.metadata
    (node,) = analysis_results(ns["tiled_client"], uid, "clustering")
    np.testing.assert_array_equal(node["labels"].read(), result.labels)
    assert node.metadata["noise"] == "run" and node.metadata["parameters"]["noise"] is None


def test_labels_match_the_phantom(ns, live_run) -> None:
    live, uid, _, _, _ = live_run
    result = live.results[uid]
    truth = stitch_tiles(
        [
            TileMap(ns["phantom"].labels(tuple(t), SHAPE, 4.0), np.ones(SHAPE, np.float32), tuple(t))
            for t in TILES
        ],
        4.0,
    ).labels
    # the three large majority phases land in three distinct clusters; the 50/50 hematite+magnetite
    # mixture is within the noise of a site of the magnetite cluster at this dose, and inclusions smaller
    # than a 5×5 seed are removed by denoising, so the ARI is moderate
    majority = {}
    for phase in (1, 2, 3):
        member = truth == phase
        values, counts = np.unique(result.labels[member], return_counts=True)
        majority[phase] = values[np.argmax(counts)]
        assert counts.max() / member.sum() > 0.95
    assert len(set(majority.values())) == 3
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) > 0.6


def test_missing_frame_is_reported_and_the_map_still_made(ns, live_run) -> None:
    _, uid, _, documents, _ = live_run
    replay = LiveClustering(None, references=REFS, n_draws=800)
    skipped = False
    for name, doc in documents:
        if name == "event" and not skipped and doc["data"].get("energy_index") == 5 and \
                doc["data"].get("tile_index") == 1:  # fmt: skip
            skipped = True
            continue
        replay(name, doc)
    assert replay.join(timeout=600)
    result = replay.results[uid]
    assert (result.labels > 0).mean() > 0.99
    assert len(replay.dropped) == 1 and "primary seq_num" in replay.dropped[0]


def test_wrong_frame_shape_is_named_and_the_map_still_made(ns, live_run, tmp_path) -> None:
    import h5py

    _, uid, _, documents, _ = live_run
    bad = tmp_path / "wrong_shape.h5"
    with h5py.File(bad, "w") as f:
        f["/entry/data/data"] = np.full((len(TILES), 10, 10), 1000, np.uint16)
    primary = next(d["uid"] for n, d in documents if n == "descriptor" and d["name"] == "primary")
    datum_resources = [d["stream_resource"] for n, d in documents if n == "stream_datum" and
                       d["descriptor"] == primary]  # fmt: skip
    target = datum_resources[len(datum_resources) // 2]  # the file of one energy (both tiles)
    replay = LiveClustering(None, references=REFS, n_draws=800)
    for name, doc in documents:
        if name == "stream_resource" and doc["uid"] == target:
            doc = {**doc, "uri": f"file://localhost{bad}"}
        replay(name, doc)
    assert replay.join(timeout=600)
    result = replay.results[uid]
    errors = [e for e in replay.frame_errors[uid] if "shape (10, 10)" in e]
    assert len(errors) == len(TILES) and all(e.startswith(f"run {uid} frame seq_num") for e in errors)
    assert (result.labels > 0).mean() > 0.99


def test_factory_for_the_live_registry() -> None:
    from xbeam_bluesky.callbacks import live_clustering
    from xbeam_bluesky.callbacks.remote import LiveContext, resolve_factories

    assert live_clustering in resolve_factories()["xanes_imaging"]
    callback = live_clustering(
        LiveContext(results=None, options={"clustering": {"n_draws": 10, "window": 3}})
    )
    assert isinstance(callback, LiveClustering) and callback.single_run and callback.window == 3
    assert live_clustering(LiveContext(results=None, options=None)).site_options["n_draws"] == 2000


def test_cli_on_the_tiled_run(ns, live_run, tmp_path, capsys) -> None:
    import json

    import h5py

    from xbeam_bluesky.cli import main

    _, uid, _, _, _ = live_run
    out = tmp_path / "run.h5"
    args = _cluster_cli_args(ns, uid)
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_clusters"] >= 3 and summary["masked_pixels"] == 0
    with h5py.File(out) as f:
        assert f["labels"].shape == (48, 88) and f["spectra"].shape[1] == len(ENERGIES)
    assert main(["cluster", "no-such-uid", "--tiled-uri", ns["storage"].uri, "--out", str(out)]) == 2
    assert "neither an HDF5 file nor a run uid" in capsys.readouterr().err


# A per-energy dwell as the energy design gives it: the pre-edge point short, the others long.
DWELLS = [0.05] + [0.25] * (len(ENERGIES) - 1)


@pytest.fixture(scope="module")
def dwell_run(ns):
    live = LiveClustering(None, references=REFS, n_draws=800)
    documents: list = []
    uid = _run(ns, live, documents, dwell=DWELLS)
    assert live.join(timeout=600)
    return live, uid, documents


def _truth(ns) -> np.ndarray:
    maps = [
        TileMap(ns["phantom"].labels(tuple(t), SHAPE, 4.0), np.ones(SHAPE, np.float32), tuple(t))
        for t in TILES
    ]
    return stitch_tiles(maps, 4.0).labels


def _majority(labels: np.ndarray, truth: np.ndarray) -> dict[int, tuple[int, float]]:
    """Phase → (cluster holding most of its pixels, share of its pixels there)."""
    out = {}
    for phase in np.unique(truth[truth > 0]):
        values, counts = np.unique(labels[truth == phase], return_counts=True)
        out[int(phase)] = (int(values[np.argmax(counts)]), counts.max() / counts.sum())
    return out


def test_per_energy_i0_separates_phases_one_i0_merges(ns, dwell_run) -> None:
    from xbeam_bluesky.clustering import sites_from_library
    from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

    live, uid, documents = dwell_run
    start = next(doc for name, doc in documents if name == "start")
    model = live.i0_models[uid]
    assert model["source"] == "noise_model_per_energy"
    assert model["i0_counts"] == pytest.approx(start["noise_model"]["i0_counts_per_energy"])
    assert model["i0_counts"][1] == pytest.approx(5 * start["i0"])  # 0.25 s vs the shortest 0.05 s
    assert model["flat_vs_used_max_rel_diff"] < 0.02  # the flats measure the same counts
    result = live.results[uid]
    assert np.all(result.sites.i0_counts == np.asarray(model["i0_counts"]))
    # the camera's recorded noise model (offset = read noise², not the sCMOS fit's −63), I0 averaged over the flats
    recorded = start["noise_model"]
    assert (result.sites.noise.gain, result.sites.noise.offset) == (recorded["gain"], recorded["offset"])
    assert result.sites.noise.flat_frames == start["n_flats"] >= 1
    truth = _truth(ns)
    new = _majority(result.labels, truth)
    assert len({new[p][0] for p in (1, 2, 3)}) == 3 and all(new[p][1] > 0.95 for p in (1, 2, 3))
    # each cluster's area is the area of the phantom phases it holds
    for label in {new[p][0] for p in (1, 2, 3)}:
        expected = sum((truth == p).mean() for p, (lab, _) in new.items() if lab == label)
        assert (result.labels == label).mean() == pytest.approx(expected, abs=0.02)
    # the same frames with the old model (one i0, that of the shortest dwell): the majority phases merge
    lib = aligned_library(load_library(), np.asarray(ENERGIES))
    refs = np.vstack([lib.matrix[lib.names.index(n)] for n in REFS])
    old_sites = sites_from_library(np.asarray(ENERGIES), refs, REFS, i0_counts=start["i0"], noise=PhotonNoiseModel(),
                                   n_draws=800, mu_offset=0.4)  # fmt: skip
    run = ns["tiled_client"][uid]
    sources = [ArrayStack(absorbance_stack(run, t)[1]) for t in range(len(TILES))]
    old = cluster_tiles(
        sources, old_sites, centers_mm=[tuple(t) for t in TILES], pixel_um=4.0, discover=False
    )
    assert len({_majority(old.labels, truth)[p][0] for p in (1, 2, 3)}) < 3


def test_flats_correct_a_start_document_without_per_energy_counts(dwell_run) -> None:
    live, uid, documents = dwell_run
    replay = LiveClustering(None, references=REFS, n_draws=800)
    for name, doc in documents:
        if name == "start":  # as an older plan wrote it: one i0 (the shortest dwell's), no dwell list
            noise = {k: v for k, v in doc["noise_model"].items() if k != "i0_counts_per_energy"}
            doc = {**doc, "noise_model": noise, "dwell": min(DWELLS)}
        replay(name, doc)
    assert replay.join(timeout=600)
    model = replay.i0_models[uid]
    assert model["source"] == "flats" and model["flat_vs_used_max_rel_diff"] > 3
    assert model["i0_counts"] == pytest.approx(live.i0_models[uid]["i0_counts"], rel=0.01)
    assert np.mean(replay.results[uid].labels == live.results[uid].labels) > 0.99


def test_incident_count_models_of_a_start_document() -> None:
    from xbeam_bluesky.callbacks.clustering import run_incident_counts

    base = {"uid": "u", "energies": [1.0, 2.0, 3.0], "i0": 100.0}
    assert run_incident_counts(base) == (100.0, "i0")
    i0, model = run_incident_counts({**base, "dwell": [0.1, 0.2, 0.4]})
    assert model == "i0_scaled_by_dwell" and np.allclose(i0, [100.0, 200.0, 400.0])
    i0, model = run_incident_counts({**base, "dwell": [0.1, 0.2, 0.4],
                                     "noise_model": {"i0_counts_per_energy": [90.0, 210.0, 380.0]}})  # fmt: skip
    assert model == "noise_model_per_energy" and np.allclose(i0, [90.0, 210.0, 380.0])
    with pytest.raises(ValueError, match="2 values for 3 energies"):
        run_incident_counts({**base, "noise_model": {"i0_counts_per_energy": [1.0, 2.0]}})
    with pytest.raises(ValueError, match="no i0"):
        run_incident_counts({"uid": "u", "energies": [1.0]})


def test_cli_on_a_dwell_list_run_uses_the_counts_per_energy(ns, dwell_run, tmp_path, capsys) -> None:
    import json

    import h5py

    from xbeam_bluesky.cli import main

    live, uid, _ = dwell_run
    out = tmp_path / "dwell.h5"
    args = _cluster_cli_args(ns, uid)
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["i0_model"] == "noise_model_per_energy"
    with h5py.File(out) as f:
        assert np.allclose(f["i0_counts"][()], live.i0_models[uid]["i0_counts"])
        assert json.loads(f.attrs["i0_model"])["flat_vs_used_max_rel_diff"] < 0.02
