"""Issue 17, data lost 1: the tiled server dies mid-run; the run is spooled and replayed, nothing is lost."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xbeam_bluesky.errors import StorageUnavailableError
from xbeam_bluesky.plans import acquisition_order, xanes_imaging
from xbeam_bluesky.storage import (
    frame_table,
    open_storage,
    read_frames,
    read_spool,
    replay_spool,
    tile_stack,
)
from xbeam_bluesky.testing import make_test_beamline

ENERGIES = [7100.0, 7112.5, 7125.0, 7150.0]
TILES = [[0.0, 0.0], [0.32, 0.0], [0.0, 0.4], [0.32, 0.4]]
KEY = "faultstestkey0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data_dir: Path, port: int) -> subprocess.Popen:
    """``xbeam serve`` in a subprocess; returns once it prints its API line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from xbeam_bluesky.cli import main; sys.exit(main())", "serve",
         "--data-dir", str(data_dir), "--port", str(port), "--api-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("API:"):
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"xbeam serve did not start: {proc.stderr.read()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _digests(frames: np.ndarray) -> list[str]:
    return sorted(hashlib.sha1(np.ascontiguousarray(f).tobytes()).hexdigest() for f in frames)


@pytest.fixture
def shorter_retries(monkeypatch):
    """tiled retries a dead server for 45 s per request; 5 s is enough to see the failure here."""
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_TIMEOUT", 5.0)


def test_server_killed_mid_run_loses_nothing(RE, tmp_path, caplog, shorter_retries) -> None:
    import h5py

    data_dir, port = tmp_path / "data", _free_port()
    uri = f"http://127.0.0.1:{port}/api/v1"
    server = _serve(data_dir, port)
    storage = open_storage(data_dir=data_dir, uri=uri, api_key=KEY)
    try:
        bl = make_test_beamline(storage.detector_dir)
        n_events = 0

        def kill_after_fifth_frame(name, doc):
            nonlocal n_events
            if name == "event" and doc["descriptor"] in primary_descriptor:
                n_events += 1
                if n_events == 5:
                    server.kill()
                    server.wait()

        primary_descriptor = []
        RE.subscribe(
            lambda n, d: (
                primary_descriptor.append(d["uid"]) if n == "descriptor" and d["name"] == "primary" else None
            )
        )
        RE.subscribe(kill_after_fifth_frame)
        RE.subscribe(storage.writer)
        with caplog.at_level(logging.WARNING, logger="xbeam_bluesky.storage.spool"):
            (uid,) = RE(
                xanes_imaging(bl.camera, bl.mono, bl.stage, ENERGIES, TILES, 0.05, shutter=bl.shutter,
                              n_darks=1, n_flats=1)
            )  # fmt: skip
        assert n_events == 16 and server.poll() is not None  # the plan went on after the server died
        failures = [r.getMessage() for r in caplog.records if "failed at the" in r.getMessage()]
        assert len(failures) == 1 and uid in failures[0] and str(port) in failures[0]
        spool = storage.spool_dir / f"{uid}.jsonl"
        docs = read_spool(spool)
        assert docs[0][0] == "start" and docs[-1][0] == "stop"
        assert docs[-1][1]["exit_status"] == "success"
        assert (
            sum(1 for name, _ in docs if name == "event") == 16 + 4 + 1 + 2
        )  # primary, flat, dark, baseline

        with pytest.raises(StorageUnavailableError, match=f"127.0.0.1:{port}/api/v1 is unreachable"):
            open_storage(data_dir=data_dir, uri=uri, api_key=KEY)  # at once, not after half a minute
        port = _free_port()  # the old port can stay in TIME_WAIT; a restarted server on a new one
        server = _serve(data_dir, port)
        with caplog.at_level(logging.WARNING, logger="xbeam_bluesky.storage.server"):
            again = open_storage(data_dir=data_dir, uri=f"http://127.0.0.1:{port}/api/v1", api_key=KEY)
        assert not spool.exists() and any(uid in r.getMessage() for r in caplog.records)
        run = again.client[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        table = frame_table(run)
        expected = acquisition_order(len(ENERGIES), len(TILES), "energy")
        assert list(zip(table.energy_index, table.tile_index, strict=True)) == expected
        np.testing.assert_allclose(table.energy_eV, [ENERGIES[ie] for ie, _ in expected])
        np.testing.assert_allclose(np.c_[table.x_mm, table.y_mm], [TILES[it] for _, it in expected])
        for it in range(len(TILES)):
            stack = tile_stack(run, it)
            np.testing.assert_array_equal(stack.energies_eV, ENERGIES)
            assert stack.frames.shape == (len(ENERGIES), 32, 40)
        # every frame in tiled is one of the frames the camera wrote to disk, and none is missing
        on_disk = []
        for name in glob.glob(str(storage.detector_dir / "**" / "*.h5"), recursive=True):
            with h5py.File(name, "r") as f:
                f.visititems(
                    lambda _, obj: (
                        on_disk.extend(obj[()]) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None
                    )
                )
        in_tiled = np.concatenate([read_frames(run, s) for s in ("primary", "flat", "dark")])
        assert len(in_tiled) == 21
        assert _digests(in_tiled) == _digests(np.asarray(on_disk))
        again.close()
    finally:
        storage.close()
        _stop(server)


def test_spool_without_stop_is_closed_as_failed(tmp_path) -> None:
    """A process that died mid-run leaves a spool without a stop document (and maybe a cut last line)."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    data_dir = tmp_path / "data"
    with open_storage(data_dir=data_dir) as storage:
        docs = []
        RunEngine(call_returns_result=False)(count([det], 3), lambda n, d: docs.append((n, d)))
        path = storage.spool_dir / f"{docs[0][1]['uid']}.jsonl"
        import json

        lines = [json.dumps({"name": n, "doc": d}) for n, d in docs if n != "stop"]
        path.write_text("\n".join(lines) + '\n{"name": "event", "doc": {"uid"')  # cut while writing
        uid = replay_spool(path, storage.client)
        run = storage.client[uid]
        assert run.metadata["stop"]["exit_status"] == "fail"
        assert "ended before the stop document" in run.metadata["stop"]["reason"]
        np.testing.assert_allclose(
            run["primary"]["det"].read(), [d["data"]["det"] for n, d in docs if n == "event"]
        )
        assert not path.exists()
