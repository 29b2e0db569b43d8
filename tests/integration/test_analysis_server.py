"""``xbeam analysis-server`` behind a real ``bluesky-0MQ-proxy``: documents out of the RunEngine process, results
back into tiled, linked to the raw run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xbeam_bluesky.storage import analysis_results, read_frames, start_embedded_server
from xbeam_bluesky.testing.qserver import find_free_port

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120.0) -> str:
    """Read ``proc``'s stdout until a line containing ``text`` (the server prints it once subscribed)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"{text!r} not printed; output so far:\n{''.join(seen)}")


def _wait_for_results(client, uid: str, kind: str, key: str, timeout: float = 120.0) -> list:
    """Results of ``kind`` for run ``uid`` once their array ``key`` is written (containers come first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = analysis_results(client, uid, kind)
        if found and all(key in node for node in found):
            return found
        time.sleep(0.25)
    raise AssertionError(f"no {kind!r} result for run {uid} within {timeout} s")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """A tiled server, a bluesky 0MQ proxy and ``xbeam analysis-server``, as three separate processes' worth."""
    root = tmp_path_factory.mktemp("remote")
    server = start_embedded_server(root / "data")
    port_in, port_out = find_free_port(), find_free_port()
    proxy = subprocess.Popen(
        [str(BIN / "bluesky-0MQ-proxy"), "--in-address", f"127.0.0.1:{port_in}",
         "--out-address", f"127.0.0.1:{port_out}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("XBEAM_CONFIG", None)
    analysis = subprocess.Popen(
        [str(BIN / "xbeam"), "analysis-server", "--proxy", f"127.0.0.1:{port_out}",
         "--tiled-uri", server.uri, "--add", "xanes_imaging=remote_probe:broken",
         "--add", "xanes_imaging=remote_probe:frame_means"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        ready = _wait_for_line(analysis, "listening to")
        yield {"server": server, "root": root, "port_in": port_in, "analysis": analysis, "ready": ready}
    finally:
        for proc in (analysis, proxy):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        server.close()


@pytest.mark.slow
def test_results_written_by_the_remote_server(services, tmp_path):
    from xbeam_bluesky.startup import build_namespace

    assert "results to http://127.0.0.1" in services["ready"] and "api_key" not in services["ready"]
    assert "live_clustering" in services["ready"] and "auto_rietveld" in services["ready"]
    ns = build_namespace(
        "sim", data_dir=services["root"] / "data", tiled_uri=services["server"].uri, frame_shape=(12, 16),
        publish_to=f"127.0.0.1:{services['port_in']}",
    )  # fmt: skip
    assert ns["live_router"] is None  # the analyses run in the server, not here
    assert "published to the 0MQ proxy" in ns["banner"]
    time.sleep(0.5)  # a 0MQ PUB socket drops what it sends before its connection is up
    energies = [7100.0, 7125.0, 7150.0]
    uid = ns["RE"](
        ns["xanes_imaging"](ns["camera"], ns["mono"], ns["stage"], energies, [[0.0, 0.0], [1.0, 0.0]], 0.01,
                            shutter=ns["shutter"], n_darks=1, n_flats=1)
    )[0]  # fmt: skip
    (result,) = _wait_for_results(ns["tiled_client"], uid, "probe", "frame_means")
    assert result.metadata["exit_status"] == "success"
    # The server read the frames from the HDF5 files; tiled reads them through its own adapter: same numbers.
    frames = read_frames(ns["tiled_client"][uid], "primary")
    assert frames.shape == (6, 12, 16)
    np.testing.assert_allclose(result["frame_means"].read(), frames.reshape(6, -1).mean(axis=1))
    # The registered live clustering ran in the server too and wrote its maps, linked to the run.
    (clusters,) = _wait_for_results(ns["tiled_client"], uid, "clustering", "labels")
    assert clusters.metadata["raw_uid"] == uid
    # The deliberately broken analysis failed without taking the server (or the other analyses) down.
    assert services["analysis"].poll() is None
    ns["publisher"].close()


@pytest.mark.slow
def test_server_stops_cleanly_on_sigterm(services):
    analysis = services["analysis"]
    analysis.send_signal(signal.SIGTERM)
    output, _ = analysis.communicate(timeout=60)
    assert analysis.returncode == 0
    assert "probe failure on purpose" in output  # the broken analysis was logged with its traceback
    assert "analysis server stopped" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--proxy", "localhost"], "--proxy 'localhost'; expected HOST:PORT"),
        (["--proxy", "127.0.0.1:1", "--add", "xrd"], "--add 'xrd'; expected PURPOSE=package.module:factory"),
        (
            ["--proxy", "127.0.0.1:1", "--add", "xrd=nowhere.module:f"],
            "'nowhere.module:f' cannot be imported",
        ),
        (["--proxy", "127.0.0.1:1", "--purpose", "tomography"], "unknown run purpose(s) ['tomography']"),
    ],
)
def test_bad_arguments_are_named(args, message, capsys, monkeypatch):
    from xbeam_bluesky.cli import main

    monkeypatch.delenv("XBEAM_TILED_URI", raising=False)
    assert main(["analysis-server", *args]) == 2
    assert message in capsys.readouterr().err


def test_unreachable_tiled_is_a_clear_error(capsys, monkeypatch, tmp_path):
    from xbeam_bluesky.cli import main

    monkeypatch.setenv("XBEAM_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("XBEAM_TILED_URI", raising=False)
    port = find_free_port()
    assert (
        main(["analysis-server", "--proxy", "127.0.0.1:1", "--tiled-uri", f"http://127.0.0.1:{port}/api/v1"])
        == 2
    )
    assert f"tiled server http://127.0.0.1:{port}/api/v1 is not reachable" in capsys.readouterr().err
