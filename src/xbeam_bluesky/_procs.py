"""Worker processes that never outlive the process that created them.

A ``ProcessPoolExecutor`` worker busy in a long computation does not notice that its creator is gone (an RE
worker stopped by the queueserver, a killed ``xbeam`` command): it runs on as an orphan, and a nested pool's
workers with it. :func:`exit_with_creator` is a pool initializer that watches the creator from a daemon thread
and ends the worker as soon as the creator no longer runs. It works for every start method (``fork``,
``spawn``, ``forkserver``): the worker's parent is the forkserver in the last case, so the parent alone is
not the right process to watch.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["exit_with_creator", "pool_initargs"]

#: Seconds between two looks at the creator.
WATCH_INTERVAL_S = 0.5


def _running(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (exited, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3]
    return state not in (b"Z", b"X")


def _watch(creator_pid: int) -> None:
    while _running(creator_pid):
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)


def exit_with_creator(creator_pid: int) -> None:
    """Pool initializer: end this worker process when process ``creator_pid`` stops running.

    Parameters
    ----------
    creator_pid : int
        The process id of the pool's creator (``os.getpid()`` where the pool is made); see
        :func:`pool_initargs`.
    """
    threading.Thread(target=_watch, args=(creator_pid,), name="exit-with-creator", daemon=True).start()


def pool_initargs() -> tuple[int]:
    """``initargs`` for :func:`exit_with_creator` in the process that creates the pool."""
    return (os.getpid(),)
