"""LiveContext.shared: a service kept across the runs of one context, never across contexts."""

from __future__ import annotations

import threading
import time

from xbeam_bluesky.callbacks.remote import LiveContext


def test_one_service_per_context_and_key() -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    a, b = LiveContext(), LiveContext()
    assert a.shared("svc", make) is a.shared("svc", make) is made[0]
    assert b.shared("svc", make) is made[1] and a.shared("other", make) is made[2]
    assert a == b  # the services are not part of the context's value


def test_concurrent_first_use_makes_one_service() -> None:
    context, made, start = LiveContext(), [], threading.Barrier(8)

    def make() -> object:
        time.sleep(0.05)  # slow enough that, unlocked, every thread would make its own
        made.append(object())
        return made[-1]

    def use() -> None:
        start.wait()
        context.shared("svc", make)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1
