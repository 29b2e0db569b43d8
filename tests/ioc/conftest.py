"""Soft IOCs for the Channel Access tests: one soft beamline per session on free loopback ports, stopped by PID.

The CA client settings (``EPICS_CA_ADDR_LIST`` = the IOCs' ports, ``EPICS_CA_AUTO_ADDR_LIST=NO``) are put into
this process's environment before the first CA context is created (libca reads them then); one spare port in
the list has no IOC, for the "IOC not running" test. A test that kills or restarts an IOC leaves it on the same
port; the ``soft_iocs`` fixture starts again whatever is not running before each test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xbeam_bluesky.testing.iocs._launch import free_port
from xbeam_bluesky.testing.iocs.beamline import SoftBeamline

SHAPE = (32, 40)
SEED = 7
PIXEL_UM = 10.0
SAMPLE_MM = (4.0, 4.0)
PREFIXES = {"mono": "T:DCM:", "stage": "T:", "shutter": "T:SHTR:", "camera": "T:CAM:", "xrd": "T:XRD:"}
#: Fast motors, so a run is dominated by the CA traffic and the frames, not by the travel.
STAGE_VELOCITY_MM_S = 100.0
MONO_VELOCITY_EV_S = 500.0
#: [live.rietveld] options of the real-mode namespace (a short search: the PbSO4 pattern refines in seconds).
RIETVELD = {"n_trials": 4, "seed": 0}
#: A move taking this much longer than its trapezoid is a stall (s).
STALL_TIMEOUT_S = 1.0


@pytest.fixture(scope="session")
def soft_beamline(tmp_path_factory) -> SoftBeamline:
    """The soft beamline (not started: see ``soft_iocs``)."""
    root = tmp_path_factory.mktemp("soft-beamline")
    return SoftBeamline(
        root / "frames", frame_shape=SHAPE, pixel_size_um=PIXEL_UM, sample_size_mm=SAMPLE_MM, seed=SEED,
        stage_velocity_mm_s=STAGE_VELOCITY_MM_S, mono_velocity_eV_s=MONO_VELOCITY_EV_S, log_dir=root / "logs",
        prefixes=dict(PREFIXES), stall_timeout_s=STALL_TIMEOUT_S,
    )  # fmt: skip


@pytest.fixture(scope="session")
def ioc_ports(soft_beamline) -> dict[str, int]:
    return {**soft_beamline.ports, "spare": free_port()}


@pytest.fixture(scope="session")
def ca_environment(ioc_ports):
    from xbeam_bluesky.testing.iocs._launch import client_environment

    env = client_environment(list(ioc_ports.values()))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def _running_beamline(soft_beamline, ca_environment):
    soft_beamline.start()
    try:
        yield soft_beamline
    finally:
        pids = list(soft_beamline.pids().values())
        soft_beamline.stop()
        for pid in pids:  # nothing left behind
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture
def soft_iocs(_running_beamline):
    """Every IOC of the soft beamline running (a test before may have killed one); yields them by name."""
    _running_beamline.start()
    return _running_beamline.iocs


@pytest.fixture(scope="session")
def RE(_running_beamline):
    """One RunEngine (and its event loop, which the CA client binds to) for every test of the session."""
    from bluesky import RunEngine

    return RunEngine()


@pytest.fixture(scope="session")
def real_ns(RE, _running_beamline, tmp_path_factory):
    """``build_namespace("real")`` on the session RunEngine, configured by the soft beamline's config file."""
    from xbeam_bluesky.startup import build_namespace

    root = tmp_path_factory.mktemp("real-mode")
    config = _running_beamline.write_config(root / "xbeam.toml", rietveld=RIETVELD)
    ns = build_namespace("real", RE=RE, config_path=config, data_dir=root / "data", connect_timeout=5.0)
    yield ns
    ns["storage"].close()
