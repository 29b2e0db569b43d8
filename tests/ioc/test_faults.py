"""Faults on the wire in ``mode="real"``: motors that stall or hit a limit switch, a camera IOC that dies or
cannot write, an IOC restarted between runs. Each run that fails is closed with ``exit_status="fail"`` and the
reason, and the RunEngine takes the next plan."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from bluesky.utils import FailedStatus

from xbeam_bluesky.devices.epics import CameraFaultError, MotorFaultError
from xbeam_bluesky.storage import read_frames

from .conftest import STAGE_VELOCITY_MM_S, STALL_TIMEOUT_S

pytestmark = pytest.mark.ioc

ENERGIES = [7100.0, 7112.0, 7130.0]
TILES = [[0.0, 0.0], [0.4, 0.0]]


def _caput(pv: str, value) -> None:
    """Put ``value`` (a string goes to a char-waveform long string, as areaDetector's text records)."""
    import aioca
    from bluesky.run_engine import call_in_bluesky_event_loop

    kwargs = {"datatype": aioca.DBR_CHAR_STR} if isinstance(value, str) else {}
    call_in_bluesky_event_loop(aioca.caput(pv, value, wait=True, **kwargs))


def _caget(pv: str) -> float:
    import aioca
    from bluesky.run_engine import call_in_bluesky_event_loop

    return float(call_in_bluesky_event_loop(aioca.caget(pv)))


def _xanes(ns, **kwargs):
    options = {"shutter": ns["shutter"], "n_darks": 1, "n_flats": 1, **kwargs}
    return ns["xanes_imaging"](ns["camera"], ns["mono"], ns["stage"], ENERGIES, TILES, 0.02, **options)


def _run_failing(ns, plan, error):
    """Run ``plan``, expect ``error``; the uid and stop document of the run it opened."""
    docs: list = []
    token = ns["RE"].subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        with pytest.raises(Exception) as info:
            ns["RE"](plan)
    finally:
        ns["RE"].unsubscribe(token)
    chain = [info.value, info.value.__cause__, info.value.__context__]
    assert any(isinstance(e, error) for e in chain), repr(info.value)
    (start,) = [d for n, d in docs if n == "start"]
    (stop,) = [d for n, d in docs if n == "stop"]
    return start["uid"], stop


@pytest.fixture
def stage_x(real_ns, soft_iocs):
    """The stage's x axis; afterwards: no fault injected, fault cleared, back at 0 mm."""
    axis = real_ns["stage"].x
    yield axis
    _caput("T:X:SimStall", 0)
    _caput("T:X:SimHighSwitch", math.nan)
    axis.clear_fault()
    real_ns["RE"](real_ns["bps"].mv(axis, 0.0))


def test_limit_switch_stops_the_plan_and_the_axis(real_ns, stage_x):
    ns = real_ns
    _caput("T:X:SimHighSwitch", 3.0)  # the flats are taken at x = 6 mm: the way there crosses the switch
    uid, stop = _run_failing(ns, _xanes(ns), MotorFaultError)
    assert stop["exit_status"] == "fail"
    assert "T:X.HLS = 1" in stop["reason"] and "limit switch at 3.0" in stop["reason"], stop["reason"]
    assert ns["tiled_client"][uid].metadata["stop"]["reason"] == stop["reason"]
    # the axis stayed on the switch: the plan's clean-up (back to the start) did not drive it further
    assert _caget("T:X.RBV") == 3.0 and _caget("T:X.HLS") == 1
    assert stage_x.fault is not None
    with pytest.raises(FailedStatus, match="faulted earlier") as refused:
        ns["RE"](ns["bps"].mv(stage_x, 0.0))
    assert isinstance(refused.value.__cause__, MotorFaultError)
    # the RunEngine is usable: y still moves, and x after the fault is cleared
    ns["RE"](ns["bps"].mv(ns["stage"].y, 0.5))
    assert _caget("T:Y.RBV") == 0.5
    _caput("T:X:SimHighSwitch", math.nan)
    stage_x.clear_fault()
    ns["RE"](ns["bps"].mv(stage_x, 0.0, ns["stage"].y, 0.0))
    assert _caget("T:X.RBV") == 0.0


def test_stalled_motor_is_stopped_within_the_stated_timeout(real_ns, stage_x):
    ns = real_ns
    _caput("T:X:SimStall", 1)
    t0 = time.monotonic()
    uid, stop = _run_failing(ns, _xanes(ns, n_darks=0), MotorFaultError)
    elapsed = time.monotonic() - t0
    assert stop["exit_status"] == "fail"
    assert "T:X: the move to 6.0 did not finish (DMOV stayed 0)" in stop["reason"]
    assert "stopped (STOP = 1)" in stop["reason"]
    # stopped: done moving, where it stalled (the start), not still trying
    assert _caget("T:X.DMOV") == 1 and _caget("T:X.RBV") == 0.0
    # the stall was declared after |Δ|/VELO + 2·ACCL + stall_timeout_s (6 mm at 100 mm/s, ACCL 0.1 s)
    stated = 6.0 / STAGE_VELOCITY_MM_S + 2 * 0.1 + STALL_TIMEOUT_S
    assert elapsed >= stated
    assert f"within {stated:.3g} s" in stop["reason"]
    assert "flat" not in ns["tiled_client"][uid]  # no frame taken where the sample was not


def test_camera_ioc_killed_mid_run(real_ns, soft_iocs):
    ns, camera_ioc = real_ns, soft_iocs["camera"]
    primary: list = []

    def kill_after_one_frame(name, doc):
        if name == "event" and doc["descriptor"] in descriptors:
            primary.append(doc)
            if len(primary) == 1:
                camera_ioc.kill()  # SIGKILL: no clean-up, as a crash

    descriptors: set = set()
    token = ns["RE"].subscribe(
        lambda name, doc: (
            descriptors.add(doc["uid"]) if name == "descriptor" and doc["name"] == "primary" else None
        )
    )
    kill_token = ns["RE"].subscribe(kill_after_one_frame)
    try:
        uid, stop = _run_failing(ns, _xanes(ns), CameraFaultError)
    finally:
        ns["RE"].unsubscribe(token)
        ns["RE"].unsubscribe(kill_token)
    assert stop["exit_status"] == "fail"
    # the IOC died between two frames: the next one finds it gone, within the stated probe time
    assert (
        "T:CAM:cam1:: the camera IOC is not connected (no update of T:CAM:cam1:DetectorState_RBV"
        in stop["reason"]
    )
    assert "it was stopped or crashed" in stop["reason"]
    # the frames written before the crash are readable through tiled, from the file the IOC left open
    run = ns["tiled_client"][uid]
    frames = read_frames(run)
    assert frames.shape == (1, 32, 40) and frames.mean() > 1000
    # the mono and the stage went back to where the run started (the clean-up does not need the camera)
    assert _caget("T:DCM:Energy.RBV") == pytest.approx(7100.0) and _caget("T:X.RBV") == 0.0
    # the IOC comes back on its port; the same devices reconnect and the next run succeeds
    camera_ioc.start()
    (again,) = ns["RE"](_xanes(ns))
    assert ns["tiled_client"][again].metadata["stop"]["exit_status"] == "success"
    assert read_frames(ns["tiled_client"][again]).shape[0] == len(ENERGIES) * len(TILES)


def test_hdf5_write_error_is_named(real_ns, soft_iocs):
    ns = real_ns
    _caput("T:CAM:HDF1:SimWriteError", "No space left on device (test)")
    t0 = time.monotonic()
    uid, stop = _run_failing(ns, _xanes(ns), CameraFaultError)
    assert stop["exit_status"] == "fail"
    assert "T:CAM:HDF1:WriteStatus = Write error: No space left on device (test)" in stop["reason"]
    assert time.monotonic() - t0 < 10.0  # reported when the plugin says so, not after the frame timeout
    assert "dark" not in ns["tiled_client"][uid]  # the first (dark) frame was the one not written


def test_iocs_restarted_between_runs(real_ns, soft_iocs, soft_beamline):
    ns = real_ns
    (first,) = ns["RE"](_xanes(ns))
    before = soft_beamline.pids()
    soft_beamline.stop()  # every IOC, by PID
    soft_beamline.start()  # same ports, new processes
    assert set(soft_beamline.pids().values()).isdisjoint(before.values())
    (second,) = ns["RE"](_xanes(ns))  # the devices of the namespace reconnect by themselves
    for uid in (first, second):
        run = ns["tiled_client"][uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        assert read_frames(run).shape[0] == len(ENERGIES) * len(TILES)
        assert np.isfinite(read_frames(run)).all()
