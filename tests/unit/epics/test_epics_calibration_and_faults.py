"""The ``[epics.camera]`` noise keys (CalibratedScmosCamera) and the motor fault checks, with mock signals."""

from __future__ import annotations

import asyncio
import math

import pytest
from bluesky.utils import FailedStatus
from ophyd_async.core import init_devices, set_mock_value

from xbeam_bluesky.devices.epics import (
    CalibratedScmosCamera,
    CameraNoise,
    EpicsAxis,
    EpicsScmosCamera,
    MotorFaultError,
    load_epics_config,
    make_epics_devices,
)
from xbeam_bluesky.devices.sim.camera_model import CameraModel
from xbeam_bluesky.protocols import ExposureLimited, NoiseReporting

BASE = """
[epics.mono]
prefix = "BL:DCM:"
{mono}
[epics.stage]
prefix = "BL:SMPL:"
[epics.camera]
prefix = "BL:CAM:"
write_dir = "{frames}"
{camera}
"""


def _config(tmp_path, camera: str = "", mono: str = ""):
    path = tmp_path / "xbeam.toml"
    path.write_text(BASE.format(frames=tmp_path, camera=camera, mono=mono))
    return path


def test_noise_keys_make_a_calibrated_camera_reporting_the_model(tmp_path):
    # the numbers a beamline would measure on the sim camera's physics: the reports must reproduce its model
    model = CameraModel(shape=(16, 20))
    peak = float(model.expected_frame(None, 1.0).max()) - model.dark_offset
    keys = (
        f"gain = {model.gain}\nread_noise = {model.read_noise}\ndark_offset = {model.dark_offset}\n"
        f"i0_counts_per_s = {model.i0_counts(1.0)}\npeak_counts_per_s = {peak}\n"
    )
    devices = make_epics_devices(load_epics_config(_config(tmp_path, keys)))
    camera = devices["camera"]
    assert isinstance(camera, CalibratedScmosCamera)
    assert isinstance(camera, NoiseReporting) and isinstance(camera, ExposureLimited)
    noise = camera.noise_metadata(0.25)
    assert noise["gain"] == model.gain and noise["offset"] == pytest.approx(model.read_noise**2)
    assert noise["i0_counts"] == pytest.approx(model.i0_counts(0.25))
    assert camera.max_unsaturated_exposure_s() == pytest.approx(model.max_unsaturated_exposure_s())


def test_without_noise_keys_the_camera_reports_nothing(tmp_path):
    camera = make_epics_devices(load_epics_config(_config(tmp_path)))["camera"]
    assert type(camera) is EpicsScmosCamera
    assert not isinstance(camera, NoiseReporting) and not isinstance(camera, ExposureLimited)


def test_calibrated_camera_without_peak_has_no_saturation_limit():
    noise = CameraNoise(gain=2.0, read_noise=1.5, dark_offset=50.0, i0_counts_per_s=1000.0)
    from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider

    camera = CalibratedScmosCamera("BL:CAM:", StaticPathProvider(UUIDFilenameProvider(), "/tmp"), noise)
    assert camera.max_unsaturated_exposure_s() is None
    assert camera.noise_metadata(2.0)["i0_counts"] == 2000.0


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        (
            "gain = 9.0\nread_noise = 2.0",
            r"noise keys \['gain', 'read_noise'\] given without \['dark_offset'",
        ),
        ("peak_counts_per_s = 10.0", "peak_counts_per_s needs the noise keys"),
        (
            "gain = 0\nread_noise = 2.0\ndark_offset = 100\ni0_counts_per_s = 10",
            "gain = 0.0; expected a positive",
        ),
        (
            "gain = 1\nread_noise = 2.0\ndark_offset = 100\ni0_counts_per_s = 10\npeak_counts_per_s = 5",
            "peak_counts_per_s = 5.0; expected a number >= i0_counts_per_s",
        ),
        ("gain = -1", r"\[epics.camera\] gain = -1; expected a non-negative number"),
    ],
)
def test_bad_noise_keys_are_named(tmp_path, camera, message):
    with pytest.raises(ValueError, match=message):
        load_epics_config(_config(tmp_path, camera))


def test_stall_timeout_is_read_and_checked(tmp_path):
    config = load_epics_config(_config(tmp_path, mono="stall_timeout_s = 2.5"))
    assert config.mono.stall_timeout_s == 2.5 and config.stage.stall_timeout_s == 5.0
    assert make_epics_devices(config)["mono"].stall_timeout_s == 2.5
    with pytest.raises(ValueError, match=r"\[epics.mono\] stall_timeout_s = 0; expected a positive time"):
        load_epics_config(_config(tmp_path, mono="stall_timeout_s = 0"))


@pytest.fixture
def axis(RE):
    with init_devices(mock=True):
        motor = EpicsAxis("BL:AX", (-10.0, 10.0), "mm", stall_timeout_s=0.2)
    set_mock_value(motor.velocity, 5.0)
    set_mock_value(motor.dial_high_limit_travel, 10.0)
    set_mock_value(motor.dial_low_limit_travel, -10.0)
    set_mock_value(motor.high_limit_travel, 10.0)
    set_mock_value(motor.low_limit_travel, -10.0)
    return motor


def _run(coro):
    from bluesky.run_engine import call_in_bluesky_event_loop

    return call_in_bluesky_event_loop(coro)


def _move(axis, position: float) -> None:
    async def move() -> None:
        await axis.set(position)

    _run(move())


def test_limit_switch_after_a_move_is_a_fault_that_latches(axis):
    from ophyd_async.core import callback_on_mock_put

    def hit_switch(value):  # the motor stops on the high limit switch at 2 mm
        set_mock_value(axis.user_readback, 2.0)
        set_mock_value(axis.high_limit_switch, 1)

    callback_on_mock_put(axis.user_setpoint, hit_switch)
    with pytest.raises(MotorFaultError, match=r"BL:AX.HLS = 1: .* limit switch at 2.0 on the way to 5.0"):
        _move(axis, 5.0)
    assert axis.fault is not None
    with pytest.raises(MotorFaultError, match="faulted earlier"):
        _move(axis, 0.0)
    axis.clear_fault()
    set_mock_value(axis.high_limit_switch, 0)
    callback_on_mock_put(axis.user_setpoint, lambda value: set_mock_value(axis.user_readback, value))
    _move(axis, 0.0)
    assert _run(axis.user_readback.get_value()) == 0.0


def test_a_move_that_does_not_complete_is_a_stall_and_the_motor_is_stopped(axis):
    from ophyd_async.core import callback_on_mock_put, get_mock_put

    async def never_done(value):
        await asyncio.sleep(60)

    callback_on_mock_put(axis.user_setpoint, never_done)
    with pytest.raises(MotorFaultError, match=r"move to 1.0 did not finish \(DMOV stayed 0\) within 0.4 s"):
        _move(axis, 1.0)  # 1 mm at 5 mm/s + 2 × 0 s ACCL + 0.2 s
    get_mock_put(axis.motor_stop).assert_called_once_with(1)


def test_refused_target_lvio_is_a_fault(axis):
    from ophyd_async.core import callback_on_mock_put

    callback_on_mock_put(axis.user_setpoint, lambda value: set_mock_value(axis.limit_violation, 1))
    with pytest.raises(MotorFaultError, match=r"BL:AX.LVIO = 1: the IOC refused the move to 3.0"):
        _move(axis, 3.0)


def test_zero_velocity_is_named(axis):
    set_mock_value(axis.velocity, 0.0)
    with pytest.raises(MotorFaultError, match=r"BL:AX.VELO = 0.0"):
        _move(axis, 1.0)
    assert math.isclose(_run(axis.user_readback.get_value()), 0.0)


def test_plan_sees_the_fault_as_a_failed_status(RE, axis):
    from ophyd_async.core import callback_on_mock_put

    callback_on_mock_put(axis.user_setpoint, lambda value: set_mock_value(axis.limit_violation, 1))
    import bluesky.plan_stubs as bps

    with pytest.raises(FailedStatus) as info:
        RE(bps.mv(axis, 3.0))
    assert isinstance(info.value.__cause__, MotorFaultError)
