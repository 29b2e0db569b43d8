"""The EPICS device classes over real Channel Access, against the caproto soft IOCs of ``testing.iocs``."""

from __future__ import annotations

import asyncio
import time

import h5py
import numpy as np
import pytest
from ophyd_async.core import NotConnectedError, StaticPathProvider, UUIDFilenameProvider

from xbeam_bluesky.devices.epics import EpicsAxis, EpicsScmosCamera, EpicsShutter
from xbeam_bluesky.devices.sim.camera_model import CameraModel
from xbeam_bluesky.devices.sim.phantom import Phantom
from xbeam_bluesky.testing.iocs.camera import PhantomRenderer
from xbeam_bluesky.testing.iocs.motor import move_time, trapezoid_position

from .conftest import SEED, SHAPE

pytestmark = pytest.mark.ioc


def test_trapezoid_profile_analytic():
    # 10 mm at 5 mm/s with 0.5 s ramps: 0.625 mm after 0.5 s, 2.5 s in total, symmetric
    assert trapezoid_position(10.0, 5.0, 0.5, 0.5) == pytest.approx(1.25)
    assert move_time(10.0, 5.0, 0.5) == pytest.approx(2.5)
    assert trapezoid_position(10.0, 5.0, 0.5, 2.5) == pytest.approx(10.0)
    assert trapezoid_position(-10.0, 5.0, 0.5, 1.25) == pytest.approx(-5.0)
    # too short to reach the speed: a triangle, half the distance at half the time
    t = move_time(1.0, 5.0, 0.5)
    assert t == pytest.approx(2 * np.sqrt(1.0 / 10.0))
    assert trapezoid_position(1.0, 5.0, 0.5, t / 2) == pytest.approx(0.5)


def _run(coro):
    from bluesky.run_engine import call_in_bluesky_event_loop

    return call_in_bluesky_event_loop(coro)


def test_motor_record_moves_take_time_stop_and_limits(RE, soft_iocs):
    async def scenario():
        axis = EpicsAxis("T:X", (-15.0, 15.0), "mm", name="x")
        await axis.connect(timeout=5)
        velocity = await axis.velocity.get_value()
        await axis.velocity.set(5.0)
        await axis.acceleration_time.set(0.1)
        try:
            await moves(axis)
        finally:
            await axis.velocity.set(velocity)
            await axis.set(0.0)

    async def moves(axis):
        t0 = time.monotonic()
        await axis.set(2.0)
        elapsed = time.monotonic() - t0
        done, position = await axis.motor_done_move.get_value(), await axis.user_readback.get_value()
        # the put completes when the move is done: 2 mm at 5 mm/s + 0.1 s ramps = 0.5 s
        assert elapsed >= 0.45
        assert (done, position) == (1, 2.0)
        status = axis.set(-2.0)
        await asyncio.sleep(0.3)
        await axis.stop()
        with pytest.raises(Exception, match="stopped"):
            await status
        await asyncio.sleep(0.1)
        stopped_at = await axis.user_readback.get_value()
        assert -2.0 < stopped_at < 2.0  # stopped on the way
        assert await axis.motor_done_move.get_value() == 1
        with pytest.raises(Exception, match="limits"):
            await axis.set(50.0)  # beyond HLM: refused before any motion
        assert await axis.user_readback.get_value() == stopped_at

    _run(scenario())


def test_shutter_status_follows_command(RE, soft_iocs):
    async def scenario():
        shutter = EpicsShutter("T:SHTR:CMD", "T:SHTR:STS", name="shutter")
        await shutter.connect(timeout=5)
        await shutter.set("open")
        assert await shutter.is_open()
        await shutter.set("closed")
        assert not await shutter.is_open()

    _run(scenario())


def test_camera_writes_phantom_frames_over_ca(RE, soft_iocs, tmp_path):
    import bluesky.plans as bp
    from ophyd_async.core import init_devices

    soft_iocs["camera"].restart()  # a fresh noise stream (earlier tests took frames)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    with init_devices():
        camera = EpicsScmosCamera(
            "T:CAM:", StaticPathProvider(UUIDFilenameProvider(), tmp_path), shape=SHAPE, readout_time=0.0
        )
    _run(_put("T:SHTR:CMD", "Open"))
    time.sleep(0.3)  # the status follows after 50 ms
    x, y, energy = _run(_get("T:X.RBV")), _run(_get("T:Y.RBV")), _run(_get("T:DCM:Energy.RBV"))
    RE(bp.count([camera], 3))
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path, "r", swmr=True) as h5:
        frames = h5["/entry/data/data"][()]
    # the same frames as the simulated camera renders at the beam state the IOC reads over CA (stage x/y of
    # the motor IOC, the mono energy, shutter open)
    renderer = PhantomRenderer(
        CameraModel(shape=SHAPE, pixel_size_um=10.0, flat_seed=SEED), Phantom(width_mm=4, height_mm=4, seed=SEED),
        SEED,
    )  # fmt: skip
    exposure = _run(_get("T:CAM:cam1:AcquireTime_RBV"))
    expected = np.stack([renderer.render(energy, (x, y), exposure, True) for _ in range(3)])
    assert expected.mean() > 1000  # open beam through the phantom, not dark frames
    assert frames.shape == (3, *SHAPE)
    np.testing.assert_array_equal(frames, expected)
    resources = [doc for name, doc in docs if name == "stream_resource"]
    assert resources[0]["uri"].endswith(path.name)


async def _put(pv: str, value) -> None:
    import aioca

    await aioca.caput(pv, value, wait=True)


async def _get(pv: str) -> float:
    import aioca

    return float(await aioca.caget(pv))


def test_wrong_file_path_is_named(RE, soft_iocs, tmp_path):
    import bluesky.plans as bp
    from ophyd_async.core import init_devices

    missing = tmp_path / "not-there"
    with init_devices():
        camera = EpicsScmosCamera("T:CAM:", StaticPathProvider(UUIDFilenameProvider(), missing), shape=SHAPE)
    with pytest.raises(Exception) as info:
        RE(bp.count([camera], 1))
    assert str(missing) in repr(info.value) or str(missing) in str(info.value.__cause__)


def test_ioc_not_running_names_pvs_within_timeout(RE, soft_iocs, ioc_ports):
    # the spare port is in EPICS_CA_ADDR_LIST but no IOC serves it: the search goes unanswered
    async def scenario():
        axis = EpicsAxis("NOIOC:X", (-1.0, 1.0), "mm", name="x")
        t0 = time.monotonic()
        with pytest.raises(NotConnectedError) as info:
            await axis.connect(timeout=2.0)
        return time.monotonic() - t0, str(info.value)

    elapsed, message = _run(scenario())
    assert "NOIOC:X.VAL" in message or "NOIOC:X" in message
    assert elapsed < 2.0 + 3.0  # the stated timeout plus connection bookkeeping
