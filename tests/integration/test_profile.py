"""The IPython profile: a real ``ipython --profile-dir=profiles/profile_xbeam`` session runs plans into tiled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
PROFILE = REPO / "profiles" / "profile_xbeam"
IPYTHON = Path(sys.executable).with_name("ipython")


def _ipython(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [str(IPYTHON), f"--profile-dir={PROFILE}", "--no-banner", "--colors=nocolor", "-c", code]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "xbeam.toml"
    config.write_text("[sim]\nframe_shape = [16, 20]\ntime_scale = 0.0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XBEAM_")}
    env.update(
        XBEAM_DATA_DIR=str(tmp_path / "data"), XBEAM_CONFIG=str(config), IPYTHONDIR=str(tmp_path / "ipy")
    )
    return env


@pytest.mark.slow
def test_sim_profile_runs_plans_into_tiled(env, tmp_path):
    code = (
        "uid = RE(xrd_powder(xrd, 0.1, ['PbSO4-Wyckoff.cif']))[0]; print('UID', uid); "
        "print('RUNS', uid in tiled_client); print('LIVE', live_router is not None); "
        "print('PROGRESS', type(RE.waiting_hook).__name__); "
        "RE(bps.mv(shutter, 'closed', mono, 7150.0)); print('MOVED', bps is not None); "
        "print('DRY', len(list(summarize_plan(xanes_imaging(camera, mono, stage, [7100.0], [[0, 0]], 0.1, "
        "shutter=shutter)) or [])))"
    )
    result = _ipython(code, env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "xbeam-bluesky — mode 'sim'" in out  # the banner
    assert f"detector files in {tmp_path / 'data' / 'detectors'}" in out
    assert "xrd → auto_rietveld" in out and "xanes_imaging → live_clustering" in out
    assert "RUNS True" in out and "LIVE True" in out and "PROGRESS ProgressBarManager" in out
    assert "MOVED True" in out  # the progress bar skips the shutter's string positions instead of failing
    uid = out.split("UID ")[1].split()[0]
    # The run persists in the data directory: a new embedded server on it finds the run.
    from xbeam_bluesky.storage import open_storage

    with open_storage(data_dir=tmp_path / "data") as storage:
        assert storage.client[uid].start["purpose"] == "xrd"


@pytest.mark.slow
def test_mock_profile_uses_epics_classes(env, tmp_path):
    example = (REPO / "profiles" / "xbeam.example.toml").read_text()
    config = Path(env["XBEAM_CONFIG"])
    config.write_text(example.replace("shape = [2048, 2048]", "shape = [8, 10]"))
    env["XBEAM_MODE"] = "mock"
    code = (
        "uid = RE(xanes_imaging(camera, mono, stage, [7100.0, 7120.0], [[0, 0]], 0.01, shutter=shutter, "
        "n_darks=1, n_flats=1))[0]; "
        "from xbeam_bluesky.storage import read_frames; print('SHAPE', read_frames(tiled_client[uid]).shape); "
        "print('PV', mono.user_setpoint.source)"
    )
    result = _ipython(code, env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mode 'mock'" in result.stdout and "camera (EpicsScmosCamera)" in result.stdout
    assert "SHAPE (2, 8, 10)" in result.stdout
    assert "PV mock+ca://BL08:DCM:Energy.VAL" in result.stdout


def test_real_mode_without_iocs_names_the_pvs(tmp_path):
    """No IOC answers: building the real namespace fails naming the PVs that did not connect."""
    from ophyd_async.core import NotConnectedError

    from xbeam_bluesky.startup import build_namespace

    config = tmp_path / "xbeam.toml"
    config.write_text((REPO / "profiles" / "xbeam.example.toml").read_text())
    with pytest.raises(NotConnectedError, match="BL08:DCM:Energy"):
        build_namespace("real", config_path=config, data_dir=tmp_path / "data", connect_timeout=0.5)
