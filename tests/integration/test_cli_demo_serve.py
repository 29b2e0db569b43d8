"""``xbeam demo`` end to end on a small beamline, and ``xbeam serve`` of its data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from xbeam_bluesky.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("demo")
    return data_dir


def test_demo_writes_runs_analyses_and_report(demo_dir, capsys) -> None:
    args = ["demo", "--data-dir", str(demo_dir), "--frame-size", "32", "--pixel-um", "20", "--trials", "6",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = dict(
        line.split(": ", 1) for line in out.splitlines() if line.startswith(("run ", "report", "result "))
    )
    xanes_uid, xrd_uid = lines["run xanes_imaging"], lines["run xrd"]
    report = demo_dir / "reports" / lines["report"].rsplit("/", 1)[-1]
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "expected RMSE of the normalized spectrum" in out and "clusters (area fractions)" in out

    from xbeam_bluesky.storage import analysis_results, frame_table, open_storage, read_frames, xrd_pattern

    with open_storage(data_dir=demo_dir) as storage:  # the catalog persists across server restarts
        client = storage.client
        run = client[xanes_uid]
        start = run.metadata["start"]
        design = start["design"]
        n_entries = len(start["energies"])  # design energies, a dwell past saturation split into frames
        assert start["purpose"] == "xanes_imaging" and start["plan_name"] == "optimal_xanes_imaging"
        assert len(start["tiles"]["positions"]) == 4 and n_entries == sum(design["frames_per_energy"])
        assert 10 <= len(design["energies_eV"]) <= 60 and design["expected_rmse"] < design["prior_rmse"]
        assert read_frames(run).shape == (4 * n_entries, 32, 32)
        assert read_frames(run, "flat").shape == (2 * n_entries, 32, 32)
        assert read_frames(run, "dark").shape == (5, 32, 32)
        # Adjacent tiles of a 2x2 mosaic: ±half a field of view (32 px × 20 µm) around the origin.
        positions = np.unique(np.c_[frame_table(run).x_mm, frame_table(run).y_mm], axis=0)
        np.testing.assert_allclose(positions, [[-0.32, -0.32], [-0.32, 0.32], [0.32, -0.32], [0.32, 0.32]])
        pattern = xrd_pattern(client[xrd_uid])
        assert pattern.counts.max() > 1e4  # a realistic pattern: ~5e4 counts at the strongest peak in 1 s

        # live clustering of the imaging run, linked to it, with the phases of the phantom
        (clusters,) = analysis_results(client, xanes_uid, "clustering")
        md = clusters.metadata
        assert md["raw_uid"] == xanes_uid and md["status"] == "success", md.get("error")
        assert lines["result clustering"].startswith(f"analysis/{md['result_uid']}")
        labels = clusters["labels"].read()
        assert labels.shape == (64, 64)  # 2 x 2 tiles of 32 px, stitched
        assert md["summary"]["n_clusters"] >= 2
        fractions = [c["area_fraction"] for c in md["summary"]["clusters"]]
        assert sum(fractions) + md["summary"]["unassigned_fraction"] == pytest.approx(1.0, abs=1e-6)
        assert len(np.unique(labels[labels > 0])) == md["summary"]["n_clusters"]

        # auto-Rietveld of the XRD run, linked to it: a good fit of the simulated PbSO4
        (fit,) = analysis_results(client, xrd_uid, "rietveld")
        md = fit.metadata
        assert md["raw_uid"] == xrd_uid and md["status"] == "success", md.get("error")
        assert lines["result rietveld"].startswith(f"analysis/{md['result_uid']}")
        assert np.isfinite(md["rwp"]) and 0 < md["rwp"] < 30
        assert md["refinement"]["phases"][0]["lattice"]["a"] == pytest.approx(8.48, abs=0.02)
        assert md["n_trials"] == 6


def test_demo_rejects_bad_options(capsys, tmp_path) -> None:
    assert main(["demo", "--data-dir", str(tmp_path), "--frame-size", "8"]) == 2
    assert "--frame-size 8: expected 16 to 4096 pixels" in capsys.readouterr().err


def test_serve_serves_the_demo_catalog(demo_dir) -> None:
    from tiled.client import from_uri

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from xbeam_bluesky.cli import main; sys.exit(main())",
            "serve",
            "--data-dir",
            str(demo_dir),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        uri = None
        deadline = time.monotonic() + 120
        while uri is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("API:"):
                uri = line.split(":", 1)[1].strip()
        assert uri, proc.stderr.read() if proc.poll() is not None else "no URI printed"
        client = from_uri(uri)
        purposes = sorted(
            node.metadata["start"]["purpose"] for key, node in client.items() if key != "analysis"
        )
        assert purposes == ["xanes_imaging", "xrd"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
