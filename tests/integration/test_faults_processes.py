"""Issue 17, "Also": a test run leaves no process behind.

Pool workers end with the process that created them (even mid-computation, even behind a forkserver), and the
suite's end-of-session check finds and names a process a test orphaned.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

CREATOR = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from xbeam_bluesky._procs import exit_with_creator, pool_initargs

def busy():
    print(os.getpid(), flush=True)
    time.sleep(600)  # a long computation that never looks at its parent

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    kwargs = dict(initializer=exit_with_creator, initargs=pool_initargs()) if sys.argv[1] == "watched" else {}
    pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, **kwargs)
    pool.submit(busy)
    time.sleep(600)
"""


def _worker_of_killed_creator(tmp_path: Path, mode: str) -> psutil.Process:
    """Start a creator whose pool worker runs a long job, kill the creator (SIGKILL); return the worker."""
    script = tmp_path / "creator.py"
    script.write_text(CREATOR)
    creator = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True)
    worker = psutil.Process(int(creator.stdout.readline()))
    creator.kill()
    creator.wait()
    return worker


def _ended(proc: psutil.Process, within_s: float) -> bool:
    """True once ``proc`` has exited (gone, or a zombie waiting for pytest, its subreaper, to reap it)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("mode", ["watched", "plain"])
def test_pool_worker_ends_with_its_creator(tmp_path, mode) -> None:
    worker = _worker_of_killed_creator(tmp_path, mode)
    try:
        if mode == "watched":
            assert _ended(worker, within_s=60)  # the watch thread ends it (its job sleeps for 10 minutes)
        else:  # the control: without the initializer the orphan goes on
            assert not _ended(worker, within_s=3)
    finally:
        if not _ended(worker, within_s=0):
            worker.kill()
        psutil.wait_procs([worker], timeout=10)


def test_session_check_names_and_kills_an_orphan(tmp_path) -> None:
    """A scratch suite with this conftest whose test orphans a process (double fork): the run fails naming it."""
    shutil.copy(Path(__file__).parents[1] / "conftest.py", tmp_path / "conftest.py")
    marker = f"orphan-{tmp_path.name}"
    (tmp_path / "test_leak.py").write_text(
        textwrap.dedent(f"""
        import subprocess

        def test_leaks():
            subprocess.run(["bash", "-c", "exec -a {marker} sleep 600 &"], check=True)
        """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout
    assert "1 passed" in result.stdout
    assert "the tests left 1 process(es) running (now killed)" in result.stdout
    assert marker in result.stdout
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
