"""Shared pytest fixtures.

Fixtures (use them by name in any test):

``RE``
    A fresh ``bluesky.RunEngine`` (function scope). Create it before any ophyd-async device.
``tiled_storage``
    An embedded tiled server (``SimpleTiledServer``) on a session temporary directory, as a
    :class:`xbeam_bluesky.storage.Storage` (``.client``, ``.writer``, ``.detector_dir``). Session scope: tests
    must not assume the catalog is empty (use the uids their runs return).
``sim_beamline``
    The small simulated beamline of :func:`xbeam_bluesky.testing.make_test_beamline` (32×40 frames, 10 µm
    pixels, 4 mm × 4 mm phantom, instantaneous motion), connected, writing into ``tiled_storage.detector_dir``.
``tiled_RE``
    ``RE`` with ``tiled_storage.writer`` subscribed: runs land in ``tiled_storage.client``.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def RE():
    from bluesky import RunEngine

    engine = RunEngine(call_returns_result=False)
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture(scope="session")
def tiled_storage(tmp_path_factory):
    from xbeam_bluesky.testing import open_test_storage

    storage = open_test_storage(tmp_path_factory.mktemp("xbeam-data"))
    yield storage
    storage.close()


@pytest.fixture
def sim_beamline(RE, tiled_storage):
    from xbeam_bluesky.testing import make_test_beamline

    return make_test_beamline(tiled_storage.detector_dir)


@pytest.fixture
def tiled_RE(RE, tiled_storage):
    RE.subscribe(tiled_storage.writer)
    return RE


def pytest_configure(config):
    """Make pytest a child subreaper (Linux): a process orphaned by a test (its parent exited without stopping
    it, e.g. a process-pool worker of a stopped RE worker) is re-parented to pytest instead of init, so the
    check at the end of the session sees it."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        pr_set_child_subreaper = 36
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _own_mp_helpers() -> tuple[int | None, int | None]:
    """Process ids of this interpreter's multiprocessing forkserver and resource tracker (they exit only
    when pytest does; they are not a leak of a test). Orphaned helpers of other processes are not these."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    return (
        getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
        getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
    )


def pytest_sessionfinish(session, exitstatus):
    """Fail the run, naming them, if processes started by the tests are still alive at the end.

    pytest is a child subreaper (:func:`pytest_configure`), so orphans are among its children too. Children
    get 10 s to exit (servers shutting down); survivors are reported, then killed so they do not outlive
    pytest (a multiprocessing forkserver was once found 36 minutes after the suite).
    """
    import psutil

    me = psutil.Process()
    children = me.children(recursive=True)
    forkserver, tracker = _own_mp_helpers()
    # the forkserver is stopped (idle pool workers forked from it exit with it); the resource tracker is left to
    # exit with pytest: killed, it is relaunched at exit and prints a KeyError for every semaphore unregistered
    own_helpers = [p for p in children if p.pid == forkserver]
    for proc in own_helpers:
        proc.kill()
    psutil.wait_procs(own_helpers, timeout=5)
    children = [p for p in children if p not in own_helpers and p.pid != tracker]
    _, alive = psutil.wait_procs(children, timeout=10)
    names = []
    for proc in alive:
        try:
            names.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=5)  # reap them (pytest is their parent or subreaper)
    if names:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        report = "\n  ".join(names)
        print(f"\nERROR: the tests left {len(names)} process(es) running (now killed):\n  {report}")
