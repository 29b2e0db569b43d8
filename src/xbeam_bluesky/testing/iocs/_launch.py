"""Start and stop the soft IOCs as subprocesses on free loopback ports, by process id.

Every IOC gets its own port (UDP search and TCP circuit), so a client finds each through
``EPICS_CA_ADDR_LIST="127.0.0.1:p1 127.0.0.1:p2 ..."`` with ``EPICS_CA_AUTO_ADDR_LIST=NO``
(:func:`client_environment`); nothing is broadcast and nothing leaves the host.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["IocProcess", "client_environment", "free_port"]


def free_port() -> int:
    """A port on 127.0.0.1 free for both TCP and UDP right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def client_environment(ports: Sequence[int]) -> dict[str, str]:
    """CA client settings that reach exactly the IOCs on ``ports`` of 127.0.0.1."""
    return {
        "EPICS_CA_ADDR_LIST": " ".join(f"127.0.0.1:{p}" for p in ports),
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
    }


class IocProcess:
    """One soft IOC subprocess: ``python -m xbeam_bluesky.testing.iocs.<module> --prefix ... --port ...``.

    Parameters
    ----------
    module
        IOC module name (``"motor"``, ``"camera"``, ...).
    prefix
        PV prefix.
    port
        CA server port (UDP and TCP).
    args
        Further command-line options of the IOC.
    env
        Extra environment (e.g. :func:`client_environment` for an IOC that reads other IOCs' PVs).
    log_path
        File receiving the IOC's stdout and stderr (default: discarded).
    """

    def __init__(
        self, module: str, prefix: str, port: int, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
        log_path: str | Path | None = None,
    ) -> None:  # fmt: skip
        self.module = module
        self.prefix = prefix
        self.port = int(port)
        self.args = list(args)
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path is not None else None
        self.process: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        """The command line that starts the IOC."""
        return [
            sys.executable, "-m", f"xbeam_bluesky.testing.iocs.{self.module}", "--prefix", self.prefix,
            "--port", str(self.port), "--interface", "127.0.0.1", *self.args,
        ]  # fmt: skip

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 60.0) -> IocProcess:
        """Start the IOC and wait until its CA server accepts connections.

        Raises
        ------
        RuntimeError
            The process exited, or did not listen on its port within ``timeout`` s (the message has its log).
        """
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> IocProcess:
        """Start the process without waiting (see :meth:`wait_ready`)."""
        if self.running():
            return self
        env = {**os.environ, **self.env}
        src = str(
            Path(__file__).resolve().parents[3]
        )  # this package's source tree wins over an installed one
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        log = open(self.log_path, "ab") if self.log_path is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> IocProcess:
        """Wait until the started process's CA server accepts connections on its port (see :meth:`start`)."""
        if self.process is None:
            raise RuntimeError(f"soft IOC {self.module} ({self.prefix}) was not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        tail = (
            self.log_path.read_text()[-2000:] if self.log_path is not None and self.log_path.exists() else ""
        )
        raise RuntimeError(
            f"soft IOC {self.module} ({self.prefix}) did not start listening on 127.0.0.1:{self.port} within "
            f"{timeout} s; command {' '.join(self.command)}\n{tail}"
        )

    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the IOC by its PID: SIGTERM (it closes its files), SIGKILL if still alive after ``timeout`` s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def kill(self) -> None:
        """Kill the IOC by its PID at once (SIGKILL: no clean-up, as a crash or a power cut)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10.0)
        self.process = None

    def restart(self, timeout: float = 60.0) -> IocProcess:
        """Stop and start again on the same port."""
        self.stop()
        return self.start(timeout)
