"""EPICS device classes connected with mock signals: the IOC-like mock behaviour and the TOML config."""

from __future__ import annotations

from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.utils import FailedStatus
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, get_mock_put, init_devices

from xbeam_bluesky.devices.epics import (
    EpicsMonochromator,
    EpicsSampleStage,
    EpicsScmosCamera,
    EpicsShutter,
    ShutterState,
    load_epics_config,
    make_epics_devices,
    mock_frame,
)

EXAMPLE_TOML = Path(__file__).parents[3] / "profiles" / "xbeam.example.toml"


@pytest.fixture
def RE():
    return RunEngine(call_returns_result=True)


@pytest.fixture
def devices(RE, tmp_path):
    with init_devices(mock=True):
        camera = EpicsScmosCamera(
            "BL:CAM:", StaticPathProvider(UUIDFilenameProvider(), tmp_path), shape=(6, 10), readout_time=0.002
        )
        mono = EpicsMonochromator("BL:DCM:Energy", limits_eV=(7000.0, 7300.0))
        stage = EpicsSampleStage("BL:SMPL:X", "BL:SMPL:Y", out_position_mm=(12.0, 0.0))
        shutter = EpicsShutter("BL:SHTR:CMD")
    return camera, mono, stage, shutter


def test_pv_names_follow_prefixes(devices):
    camera, mono, stage, shutter = devices
    assert mono.user_setpoint.source == "mock+ca://BL:DCM:Energy.VAL"
    assert stage.x.user_readback.source == "mock+ca://BL:SMPL:X.RBV"
    assert camera.driver.acquire_time.source == "mock+ca://BL:CAM:cam1:AcquireTime_RBV"
    assert camera.hdf.capture.source == "mock+ca://BL:CAM:HDF1:Capture_RBV"
    assert shutter.status.source == "mock+ca://BL:SHTR:CMD_RBV"


def test_count_writes_frames_through_the_hdf5_plugin(RE, devices, tmp_path):
    camera, mono, *_ = devices
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(bps.mv(camera.exposure, 0.001))
    RE(bp.scan([camera], mono, 7100.0, 7120.0, 3))
    names = [n for n, _ in docs]
    assert names.count("event") == 3
    assert names.count("stream_datum") == 3
    (resource,) = [d for n, d in docs if n == "stream_resource"]
    assert resource["mimetype"] == "application/x-hdf5"
    assert resource["parameters"]["dataset"] == "/entry/data/data"
    (descriptor,) = [d for n, d in docs if n == "descriptor"]
    assert descriptor["data_keys"]["camera"]["shape"][-2:] == [6, 10]
    assert descriptor["data_keys"]["camera"]["dtype_numpy"] == "<u2"
    path = Path(resource["uri"].removeprefix("file://localhost"))
    assert path.parent == tmp_path
    with h5py.File(path, "r") as h5:
        frames = h5["/entry/data/data"][()]
    assert frames.shape == (3, 6, 10)
    np.testing.assert_array_equal(frames[2], mock_frame(2, (6, 10)))
    energies = [d["data"]["mono"] for n, d in docs if n == "event"]
    assert energies == pytest.approx([7100.0, 7110.0, 7120.0])
    assert get_mock_put(camera.driver.acquire_time).call_args.args[0] == pytest.approx(0.001)


def test_motion_limits_and_shutter(RE, devices):
    _, mono, stage, shutter = devices
    RE(bps.mv(stage.x, 3.5, stage.y, -2.0))
    assert RE(bps.rd(stage.x)).plan_result == pytest.approx(3.5)
    with pytest.raises(ValueError, match=r"7400.0 eV is outside the limits \[7000.0, 7300.0\] eV"):
        mono.check_position(7400.0)
    RE(bps.mv(shutter, "closed"))
    assert RE(bps.rd(shutter.status)).plan_result == ShutterState.CLOSED
    RE(bps.mv(shutter, "open"))
    assert get_mock_put(shutter.command).call_args.args[0] == ShutterState.OPEN
    with pytest.raises(FailedStatus, match="shutter position 'half'; expected 'open' or 'closed'"):
        RE(bps.mv(shutter, "half"))


def test_example_config_builds_devices():
    config = load_epics_config(EXAMPLE_TOML)
    devices = make_epics_devices(config)
    assert sorted(devices) == ["camera", "mono", "shutter", "stage", "xrd"]
    assert devices["mono"].user_setpoint.source == "ca://BL08:DCM:Energy.VAL"
    assert devices["mono"].limits == (6500.0, 9000.0)
    assert devices["camera"].frame_shape == (2048, 2048)
    assert devices["stage"].out_position_mm == (14.0, 0.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[epics.mono]\nprefix = 'A:'\n", r"missing section \[epics.stage\]"),
        ("x = 1\n", r"no \[epics\] table"),
        ("[epics.mono]\nprefx = 'A:'\n", r"\[epics.mono\] has unknown key\(s\) \['prefx'\]"),
        ("[epics.mono]\nenergy = 'E'\n", r"\[epics.mono\] is missing required key\(s\) \['prefix'\]"),
        ("[epics.mono]\nprefix = 'A:'\nlimits_eV = [1]\n", r"limits_eV = \[1\]; expected a pair of numbers"),
        ("[epics.mono]\nprefix = 3\n", r"prefix = 3; expected a non-empty string"),
        ("[epics\n", "not valid TOML"),
    ],
)
def test_bad_config_is_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_epics_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.toml does not exist"):
        load_epics_config(tmp_path / "nope.toml")
