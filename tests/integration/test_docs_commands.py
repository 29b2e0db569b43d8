"""Every command in ``docs/beamline.md`` is run here, as written, with only ports and directories remapped.

The shell commands of the ``bash`` blocks run through ``bash -c`` from the repository root with ``HOME`` and the
data directory in a temporary directory; servers documented with a trailing ``&`` run in the background and are
stopped by PID. The ``python`` blocks run inside the IPython profile. A documented command that no test runs
fails :func:`test_every_documented_command_is_exercised`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xbeam_bluesky.testing.qserver import find_free_port

REPO = Path(__file__).parents[2]
DOC = REPO / "docs" / "beamline.md"
VENV_BIN = Path(sys.executable).parent


def _blocks(kind: str) -> list[list[str]]:
    """The code blocks of ``kind`` (``bash``/``python``) in the doc, as lists of non-empty lines."""
    blocks = re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


COMMANDS = [line for block in _blocks("bash") for line in block]
SESSION = _blocks("python")[0]
XRD_SESSION = _blocks("python")[1]
RESULTS_SESSION = _blocks("python")[2]


def _doc(prefix: str) -> list[str]:
    """The documented commands starting with ``prefix`` (at least one)."""
    found = [c for c in COMMANDS if c.startswith(prefix)]
    assert found, f"no command starting with {prefix!r} in {DOC}"
    return found


EXERCISED: set[str] = set()
#: The tests of this module that ran to completion (the coverage check needs all of them).
COMPLETED: set[str] = set()


class Shell:
    """Runs documented commands with ports remapped; background ones are stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.ports = {p: str(find_free_port()) for p in ("8000", "6379", "60615", "60625", "5577", "5578")}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XBEAM_")}
        self.env.update(HOME=str(tmp / "home"), XBEAM_DATA_DIR=str(tmp / "data"), IPYTHONDIR=str(tmp / "ipy"))
        (tmp / "home").mkdir()
        self.background: list[subprocess.Popen] = []
        self.tmp = tmp

    def remap(self, command: str) -> str:
        for old, new in self.ports.items():
            command = re.sub(rf"(?<![0-9]){old}(?![0-9])", new, command)
        return command

    def run(self, command: str, extra: str = "", timeout: float = 600.0, check: bool = True):
        EXERCISED.add(command)
        line = self.remap(command)
        if line.endswith("&"):
            proc = subprocess.Popen(
                ["bash", "-c", line[:-1]], cwd=REPO, env=self.env, stdout=open(self.tmp / f"bg{len(self.background)}.log", "w"),
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            self.background.append(proc)
            return proc
        result = subprocess.run(
            ["bash", "-c", line + extra],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    def stop(self) -> None:
        """Stop each background command's process group; what is left in the group when its leader has
        exited (e.g. a manager's worker, pool workers) is killed too."""
        for proc in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


@pytest.fixture
def shell(tmp_path):
    sh = Shell(tmp_path)
    yield sh
    sh.stop()


def _ipython_code(lines: list[str]) -> str:
    """Session lines joined for ``ipython -c``, each result printed."""
    return "; ".join(f"print(repr({line}))" for line in lines)


def _wait_for_port(port: str, timeout: float = 120.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", int(port))) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


@pytest.mark.slow
def test_install_and_configure(shell):
    (install,) = _doc("python3.11 -m venv")
    # The venv exists already: check the pip part builds this package's metadata and resolves it.
    pip = install.split("&& ", 1)[1]
    EXERCISED.add(install)
    result = subprocess.run(
        ["bash", "-c", f"{pip} --dry-run --no-deps -q"], cwd=REPO, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (configure,) = _doc("mkdir -p ~/.config/xbeam")
    shell.run(configure)
    from xbeam_bluesky.devices.epics import load_epics_config

    config = load_epics_config(shell.tmp / "home" / ".config" / "xbeam" / "config.toml")
    assert config.mono.prefix == "BL08:DCM:"
    COMPLETED.add("install")


@pytest.mark.slow
def test_profile_modes_and_session_commands(shell):
    (configure,) = _doc("mkdir -p ~/.config/xbeam")
    shell.run(configure)
    config = shell.tmp / "home" / ".config" / "xbeam" / "config.toml"
    # small frames keep the test fast: sim via [sim], mock via the camera shape
    text = config.read_text().replace("shape = [2048, 2048]", "shape = [8, 10]")
    config.write_text(
        "[sim]\nframe_shape = [24, 32]\ntime_scale = 0.0\n[live.rietveld]\nn_trials = 4\n" + text
    )
    (sim,) = [
        c
        for c in _doc(".venv/bin/ipython --profile-dir")
        if c == ".venv/bin/ipython --profile-dir=profiles/profile_xbeam"
    ]
    out = shell.run(sim, f" -c {_quote(_ipython_code(SESSION + XRD_SESSION))}").stdout
    assert "mode 'sim'" in out and "analysis: in this process" in out
    assert "DurationEstimate" in out  # the dry-run estimate, then the run uids
    assert len(re.findall(r"\('[0-9a-f-]{36}',\)", out)) == 3, out[-3000:]
    (mock,) = _doc("XBEAM_MODE=mock .venv/bin/ipython")
    out = shell.run(mock, f" -c {_quote(_ipython_code(SESSION))}").stdout
    assert "mode 'mock'" in out and "EpicsScmosCamera" in out
    assert len(re.findall(r"\('[0-9a-f-]{36}',\)", out)) == 2, out[-3000:]
    (real,) = _doc("XBEAM_MODE=real .venv/bin/ipython")
    result = shell.run(real, " -c 'print(1)'", check=False)
    assert (
        "NotConnectedError" in result.stdout + result.stderr
        and "BL08:DCM:Energy" in result.stdout + result.stderr
    )
    COMPLETED.add("profile")


def _quote(code: str) -> str:
    import shlex

    return shlex.quote(code)


@pytest.mark.slow
@pytest.mark.qserver
def test_queueserver_and_analysis_server_commands(shell):
    (configure,) = _doc("mkdir -p ~/.config/xbeam")
    shell.run(configure)
    config = shell.tmp / "home" / ".config" / "xbeam" / "config.toml"
    config.write_text("[sim]\nframe_shape = [24, 32]\ntime_scale = 0.0\n[live.rietveld]\nn_trials = 4\n")
    (serve,) = _doc(".venv/bin/xbeam serve")
    shell.run(serve)
    _wait_for_port(shell.ports["8000"])
    (redis,) = _doc(".venv/bin/redis-server")
    shell.run(redis)
    _wait_for_port(shell.ports["6379"])
    (manager,) = [c for c in COMMANDS if "start-re-manager" in c]
    shell.run(manager)
    _wait_for_port(shell.ports["60615"])
    qserver = _doc(".venv/bin/qserver ")
    outputs = {}
    for command in qserver[:-1]:  # all but "manager stop"
        outputs[command] = shell.run(command).stdout
        if "environment open" in command or "queue start" in command:
            _wait_idle(shell)
    history = outputs[next(c for c in qserver if "history get" in c)]
    assert history.count("'exit_status': 'completed'") == 2, history[-3000:]

    (regenerate,) = [c for c in COMMANDS if "qserver-list-plans-devices" in c]
    copy = shell.tmp / "qs"
    subprocess.run(["cp", "-r", str(REPO / "profiles" / "queueserver"), str(copy)], check=True)
    EXERCISED.add(regenerate)
    line = regenerate.replace("cd profiles/queueserver", f"cd {copy}").replace(
        "../../.venv/bin/", f"{VENV_BIN}/"
    )
    result = subprocess.run(["bash", "-c", line.removesuffix(" && cd ../..")], env=shell.env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "created successfully" in result.stdout + result.stderr

    (proxy,) = _doc(".venv/bin/bluesky-0MQ-proxy")
    shell.run(proxy)
    (server,) = _doc(".venv/bin/xbeam analysis-server")
    shell.run(server)
    _wait_for_log(shell, "listening to")
    (published,) = _doc("XBEAM_ZMQ_PROXY=")
    code = (
        "import time; time.sleep(1); uid = RE(xanes_imaging(camera, mono, stage, [7100.0, 7120.0, 7140.0], "
        "[[0.0, 0.0]], 0.01, shutter=shutter, n_darks=1, n_flats=1))[0]; print('UID', uid)"
    )
    out = shell.run(published, f" -c {_quote(code)}").stdout
    assert "published to the 0MQ proxy" in out
    uid = out.split("UID ")[1].split()[0]
    from tiled.client import from_uri

    from xbeam_bluesky.storage import analysis_results

    client = from_uri(f"http://127.0.0.1:{shell.ports['8000']}/api/v1", api_key="secret")
    deadline = time.monotonic() + 300
    while not [n for n in analysis_results(client, uid, "clustering") if "labels" in n]:
        assert time.monotonic() < deadline, "no clustering result from the analysis server"
        time.sleep(0.5)
    # the documented Python lines for finding results
    namespace = {"tiled_client": client, "uid": uid}
    exec(RESULTS_SESSION[0], namespace)
    kinds = eval(RESULTS_SESSION[1], namespace)
    assert kinds[-1] == "clustering" and set(kinds[:-1]) <= {"clustering_provisional"}, kinds
    shell.run(qserver[-1])  # manager stop
    COMPLETED.add("queueserver")


def _wait_idle(shell: Shell, timeout: float = 600.0) -> None:
    from bluesky_queueserver_api.zmq import REManagerAPI

    api = REManagerAPI(zmq_control_addr=f"tcp://127.0.0.1:{shell.ports['60615']}")
    try:
        api.wait_for_idle(timeout=timeout)
    finally:
        api.close()


def _wait_for_log(shell: Shell, text: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in log.read_text() for log in shell.tmp.glob("bg*.log")):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the background logs")


def test_every_documented_command_is_exercised():
    """Runs last in this module: every bash line of the doc went through a test above."""
    if COMPLETED != {"install", "profile", "queueserver"}:
        pytest.skip("needs every other test of this module to have run in this session")
    missing = [c for c in COMMANDS if c not in EXERCISED]
    assert not missing, f"documented but not exercised: {missing}"
