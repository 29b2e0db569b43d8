"""Soft IOCs for the Channel Access tests: started once per session on free loopback ports, stopped by PID.

The CA client settings (``EPICS_CA_ADDR_LIST`` = the IOCs' ports, ``EPICS_CA_AUTO_ADDR_LIST=NO``) are put into
this process's environment before the first CA context is created (libca reads them then); one spare port in
the list has no IOC, for the "IOC not running" test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xbeam_bluesky.testing.iocs._launch import IocProcess, client_environment, free_port

SHAPE = (32, 40)
SEED = 7


@pytest.fixture(scope="session")
def ioc_ports() -> dict[str, int]:
    return {name: free_port() for name in ("motor", "shutter", "camera", "spare")}


@pytest.fixture(scope="session")
def ca_environment(ioc_ports):
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
def soft_iocs(tmp_path_factory, ioc_ports, ca_environment):
    """Motor (T:X, T:Y), shutter (T:SHTR:) and camera (T:CAM:) IOCs; yields them by name."""
    logs = tmp_path_factory.mktemp("ioc-logs")
    iocs = {
        "motor": IocProcess("motor", "T:", ioc_ports["motor"], ["--axis", "X:-15:15", "--axis", "Y:-10:10"],
                            log_path=logs / "motor.log"),
        "shutter": IocProcess("shutter", "T:SHTR:", ioc_ports["shutter"], log_path=logs / "shutter.log"),
        "camera": IocProcess(
            "camera", "T:CAM:", ioc_ports["camera"],
            ["--shape", *map(str, SHAPE), "--pixel-um", "10", "--sample-mm", "4", "4", "--seed", str(SEED),
             "--x-pv", "T:X.RBV", "--y-pv", "T:Y.RBV", "--shutter-pv", "T:SHTR:STS"],
            env=ca_environment, log_path=logs / "camera.log",
        ),
    }  # fmt: skip
    for ioc in iocs.values():
        ioc.spawn()
    try:
        for ioc in iocs.values():
            ioc.wait_ready()
        yield iocs
    finally:
        pids = [ioc.pid for ioc in iocs.values() if ioc.pid is not None]
        for ioc in iocs.values():
            ioc.stop()
        for pid in pids:  # nothing left behind
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture(scope="session")
def RE(soft_iocs):
    """One RunEngine (and its event loop, which the CA client binds to) for every test of the session."""
    from bluesky import RunEngine

    return RunEngine()
