"""xrd_powder into tiled, analysis results linked to raw runs, databroker access, configuration errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from xbeam_bluesky.config import load_config
from xbeam_bluesky.errors import OutputPathError
from xbeam_bluesky.plans import estimate_duration, xanes_imaging, xrd_powder
from xbeam_bluesky.storage import (
    analysis_results,
    ensure_writable,
    open_storage,
    read_frames,
    result_png,
    write_analysis_result,
    xrd_pattern,
)


def test_xrd_run_reads_back_the_pattern(tiled_RE, tiled_storage, sim_beamline) -> None:
    xrd = sim_beamline.xrd
    (uid,) = tiled_RE(xrd_powder(xrd, 0.01, ["PbSO4-Wyckoff.cif"], num=3, sample="PbSO4 test"))
    run = tiled_storage.client[uid]
    start = run.metadata["start"]
    assert start["purpose"] == "xrd" and start["phases"] == ["PbSO4-Wyckoff.cif"]
    assert start["cif_paths"][0].endswith("data/cif/PbSO4-Wyckoff.cif") and start["sample"] == "PbSO4 test"
    pattern = xrd_pattern(run)
    np.testing.assert_allclose(pattern.two_theta_deg, xrd.two_theta_deg)
    assert pattern.counts_per_event.shape == (3, xrd.two_theta_deg.size)
    assert pattern.exposure_s == pytest.approx(0.03)
    expected = xrd.expected_counts(0.03)
    # Summed Poisson counts: the total agrees within a few σ and strong peaks sit where the model has them.
    assert pattern.counts.sum() == pytest.approx(expected.sum(), abs=5 * np.sqrt(expected.sum()))
    assert np.argmax(pattern.counts) == np.argmax(expected)
    strong = expected > 1000
    assert np.all(np.abs(pattern.counts[strong] - expected[strong]) < 6 * np.sqrt(expected[strong]))


def test_xrd_bad_input_is_named(RE, sim_beamline) -> None:
    with pytest.raises(FileNotFoundError, match=r"CIF 'nothing\.cif' is neither a file nor a bundled CIF"):
        RE(xrd_powder(sim_beamline.xrd, 1.0, ["nothing.cif"]))
    with pytest.raises(ValueError, match="exposure = -1"):
        RE(xrd_powder(sim_beamline.xrd, -1, ["PbSO4-Wyckoff.cif"]))
    with pytest.raises(ValueError, match="expected a non-empty list of CIF names"):
        RE(xrd_powder(sim_beamline.xrd, 1.0, "PbSO4-Wyckoff.cif"))


def test_xrd_duration_is_the_exposure(RE, sim_beamline) -> None:
    estimate = estimate_duration(
        xrd_powder(sim_beamline.xrd, 2.0, ["PbSO4-Wyckoff.cif"], num=3), overhead_per_frame_s=0
    )
    assert estimate.frames == 3 and estimate.total_s == pytest.approx(6.0)


def test_analysis_result_linked_to_raw_run(tiled_RE, tiled_storage, sim_beamline) -> None:
    bl = sim_beamline
    (uid,) = tiled_RE(xanes_imaging(bl.camera, bl.mono, bl.stage, [7110.0], [[0.0, 0.0]], 0.01, n_darks=0))
    client = tiled_storage.client
    labels = np.arange(12, dtype=np.int32).reshape(3, 4)
    spectra = np.linspace(0, 1, 10).reshape(2, 5)
    png = b"\x89PNG\r\n\x1a\nnot-really-a-png"
    rid = write_analysis_result(client, uid, "clustering", {"labels": labels, "spectra": spectra},
                                {"n_clusters": 2, "thresholds": [2.326, 3.719]}, png=png)  # fmt: skip
    (node,) = analysis_results(client, uid)
    assert node.metadata["raw_uid"] == uid and node.metadata["kind"] == "clustering"
    assert node.metadata["result_uid"] == rid and node.metadata["n_clusters"] == 2
    np.testing.assert_array_equal(node["labels"].read(), labels)
    assert node["labels"].read().dtype == np.int32
    np.testing.assert_allclose(node["spectra"].read(), spectra)
    assert result_png(node) == png
    assert analysis_results(client, uid, kind="rietveld") == []
    assert client[uid].metadata["start"]["uid"] == uid  # the raw run is untouched and still there
    with pytest.raises(ValueError, match="raw_uid"):
        write_analysis_result(client, "", "clustering", {}, {})


def test_runs_are_readable_through_databroker(tiled_RE, tiled_storage, sim_beamline) -> None:
    import databroker.client

    bl = sim_beamline
    (uid,) = tiled_RE(xanes_imaging(bl.camera, bl.mono, bl.stage, [7110.0, 7120.0], [[0.0, 0.0]], 0.01,
                                    n_darks=0, n_flats=1))  # fmt: skip
    run = tiled_storage.client[uid]
    assert isinstance(run, databroker.client.BlueskyRun)
    v2 = run.v2  # databroker's v2 API (as in databroker 1.x)
    assert v2.metadata["start"]["purpose"] == "xanes_imaging"
    data = v2.primary.read()
    np.testing.assert_allclose(data["mono"].values, [7110.0, 7120.0])
    assert data["camera"].shape == (2, 1, 32, 40) and data["camera"].dtype == np.uint16
    assert v2.flat.read()["camera"].shape == (2, 1, 32, 40)
    # Using the v2 view must not break the read-back helpers on runs fetched afterwards.
    assert read_frames(tiled_storage.client[uid]).shape == (2, 32, 40)


def test_unwritable_data_dir_is_a_clear_error(tmp_path) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-dir"
        blocked.write_text("x")
        target = blocked / "data"
    else:
        blocked = tmp_path / "ro"
        blocked.mkdir()
        blocked.chmod(0o500)
        target = blocked / "data"
    with pytest.raises(OutputPathError, match=f"data directory {target} is not writable"):
        ensure_writable(target)
    with pytest.raises(OutputPathError, match="not writable"):
        open_storage(data_dir=target)


def test_config_file_and_environment(tmp_path, monkeypatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('data_dir = "/somewhere"\ntiled_uri = "http://tiled:8000/api/v1"\n')
    monkeypatch.delenv("XBEAM_DATA_DIR", raising=False)
    monkeypatch.delenv("XBEAM_TILED_URI", raising=False)
    loaded = load_config(config)
    assert str(loaded.data_dir) == "/somewhere" and loaded.tiled_uri == "http://tiled:8000/api/v1"
    monkeypatch.setenv("XBEAM_DATA_DIR", str(tmp_path / "env"))
    assert load_config(config).data_dir == tmp_path / "env"
    assert load_config(config).detector_dir == tmp_path / "env" / "detectors"
    config.write_text("data_dir = [unclosed\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(config)
    config.write_text('datadir = "/x"\n')
    with pytest.raises(ValueError, match=r"unknown keys \['datadir'\]"):
        load_config(config)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    # relative paths of the live analyses are relative to the config file, not to the working directory
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "xbeam.toml"
    config.write_text(
        '[live.rietveld]\ninstrument = "station.instprm"\ncif_dir = "/abs/cifs"\nn_trials = 4\n'
        '[live.clustering]\nlibrary_dir = "../spectra"\n'
    )
    monkeypatch.chdir(tmp_path)
    live = load_config(config).live
    assert live["rietveld"] == {
        "instrument": str(tmp_path / "etc" / "station.instprm"), "cif_dir": "/abs/cifs", "n_trials": 4,
    }  # fmt: skip
    assert live["clustering"]["library_dir"] == str(tmp_path / "spectra")
