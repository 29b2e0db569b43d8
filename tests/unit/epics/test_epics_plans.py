"""The package's plans run unchanged on the EPICS device classes connected with mock signals."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from ophyd_async.core import get_mock_put, init_devices

from xbeam_bluesky.devices.epics import EpicsBeamlineConfig, make_epics_devices, mock_frame
from xbeam_bluesky.devices.epics._config import CameraConfig, MonoConfig, ShutterConfig, StageConfig
from xbeam_bluesky.plans.xanes_imaging import xanes_imaging


def test_xanes_imaging_on_mock_epics_devices(tmp_path):
    RE = RunEngine(call_returns_result=True)
    config = EpicsBeamlineConfig(
        mono=MonoConfig("BL:DCM:", limits_eV=(7000.0, 7300.0)),
        stage=StageConfig("BL:SMPL:", out_position_mm=(9.0, 0.5)),
        camera=CameraConfig("BL:CAM:", write_dir="/ioc/frames", shape=(4, 6), pixel_size_um=0.65),
        shutter=ShutterConfig("BL:SHTR:CMD"),
    )
    d = make_epics_devices(config, frames_dir=tmp_path)
    with init_devices(mock=True):
        mono, stage, camera, shutter = d["mono"], d["stage"], d["camera"], d["shutter"]
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    energies = [7100.0, 7112.0, 7130.0]
    tiles = [[0.0, 0.0], [0.4, 0.0]]
    RE(xanes_imaging(camera, mono, stage, energies, tiles, 0.001, shutter=shutter, n_darks=2, n_flats=1))

    start = next(doc for name, doc in docs if name == "start")
    assert start["purpose"] == "xanes_imaging"
    assert start["tiles"]["pixel_size_um"] == 0.65
    assert start["tiles"]["frame_shape"] == [4, 6]
    streams = {doc["uid"]: doc["name"] for name, doc in docs if name == "descriptor"}
    events = [doc for name, doc in docs if name == "event"]
    per_stream = {
        s: [e for e in events if streams[e["descriptor"]] == s] for s in ("dark", "flat", "primary")
    }
    assert [len(per_stream[s]) for s in ("dark", "flat", "primary")] == [2, 3, 6]
    # energy outer, tiles inner; each primary event carries the mono and stage readbacks the plan asked for
    measured = [(e["data"]["mono"], e["data"]["stage-x"]) for e in per_stream["primary"]]
    assert measured == pytest.approx([(e, t[0]) for e in energies for t in tiles])
    flats_x = {e["data"]["stage-x"] for e in per_stream["flat"]}
    assert flats_x == {9.0}
    # darks with the shutter closed, then opened again; mono back at its start energy (0 in a fresh mock)
    commands = [c.args[0].value for c in get_mock_put(shutter.command).call_args_list]
    assert commands[:2] == ["Closed", "Open"]
    assert get_mock_put(mono.user_setpoint).call_args.args[0] == 0.0

    # every frame is in the HDF5 file the documents point at, in acquisition order
    resources = [doc for name, doc in docs if name == "stream_resource"]
    paths = {Path(r["uri"].removeprefix("file://localhost")) for r in resources}
    assert all(p.parent == tmp_path for p in paths)
    frames = []
    for path in sorted(paths, key=lambda p: p.stat().st_mtime_ns):
        with h5py.File(path, "r") as h5:
            frames.append(h5["/entry/data/data"][()])
    stack = np.concatenate(frames)
    assert stack.shape == (11, 4, 6)
    np.testing.assert_array_equal(stack[-1], mock_frame(10, (4, 6)))
    n_datum = sum(d["indices"]["stop"] - d["indices"]["start"] for n, d in docs if n == "stream_datum")
    assert n_datum == 11


def test_limits_checked_before_any_motion(tmp_path):
    RunEngine()
    config = EpicsBeamlineConfig(
        mono=MonoConfig("BL:DCM:", limits_eV=(7000.0, 7300.0)),
        stage=StageConfig("BL:SMPL:"),
        camera=CameraConfig("BL:CAM:", write_dir=str(tmp_path), shape=(4, 6)),
        shutter=ShutterConfig("BL:SHTR:CMD"),
    )
    d = make_epics_devices(config)
    with init_devices(mock=True):
        mono, stage, camera, shutter = d["mono"], d["stage"], d["camera"], d["shutter"]
    RE = RunEngine()
    with pytest.raises(ValueError, match=r"energies\[1\] = 7400.0 eV is outside the limits of mono"):
        RE(xanes_imaging(camera, mono, stage, [7100.0, 7400.0], [[0.0, 0.0]], 0.01, shutter=shutter))
    assert get_mock_put(mono.user_setpoint).call_count == 0
    assert get_mock_put(stage.x.user_setpoint).call_count == 0
