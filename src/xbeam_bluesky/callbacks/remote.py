"""Live analyses routed on a run's ``purpose``, in-process or behind the bluesky 0MQ proxy.

One registry, :data:`LIVE_ANALYSES`, says which live analysis follows which kind of run. The same router feeds
the RunEngine in-process (``build_namespace``) and the out-of-process ``xbeam analysis-server``, which
subscribes to the bluesky 0MQ proxy with a :class:`bluesky.callbacks.zmq.RemoteDispatcher`, so heavy analysis
never shares a process with the RunEngine. Adding a live analysis is one line in :data:`LIVE_ANALYSES`.

A factory is ``factory(context: LiveContext) -> callback`` (a ``(name, doc)`` callable, usually an
``event_model.DocumentRouter``), called once per run whose start document has the matching ``purpose``.
Every callback runs inside a guard: an exception is logged with the run uid and that callback gets no further
documents of the run, while the RunEngine, the other callbacks and later runs carry on.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from event_model import RunRouter

from xbeam_bluesky.documents import PURPOSE_KEY, XANES_IMAGING, XRD
from xbeam_bluesky.errors import ConfigError

__all__ = [
    "LIVE_ANALYSES",
    "LiveContext",
    "live_router",
    "resolve_factories",
    "serve_remote",
]

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict], Any]
T = TypeVar("T")
Factory = Callable[["LiveContext"], Callback]

#: Run ``purpose`` → live-analysis factories (``"module:attribute"``), one line per analysis.
LIVE_ANALYSES: dict[str, tuple[str, ...]] = {
    XANES_IMAGING: ("xbeam_bluesky.callbacks.clustering:live_clustering",),
    XRD: ("xbeam_bluesky.callbacks.rietveld:auto_rietveld",),
}


@dataclass
class LiveContext:
    """What a live analysis needs besides the documents.

    Attributes
    ----------
    results
        Where results of record are written: a tiled client container (``raw_uid`` links them to the run),
        or ``None`` when results are only kept in memory.
    options
        Free per-analysis options (e.g. ``{"clustering": {"window": 5}}``), JSON-friendly.

    A factory called for every run either returns a new callback per run (``LiveClustering``) or one service
    it keeps across the runs of this context (``AutoRietveld``, whose runs queue and warm-start from each other):
    :meth:`shared` holds such services, so their lifetime is the context's, never a module's.
    """

    results: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)
    _shared: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def shared(self, key: str, make: Callable[[], T]) -> T:
        """The service ``key`` of this context, made by ``make()`` on first use (thread-safe)."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = make()
            return self._shared[key]


def _import(path: str) -> Factory:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise ConfigError(f"live-analysis factory {path!r}; expected 'package.module:attribute'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"live-analysis factory {path!r} cannot be imported: {exc}") from exc


def resolve_factories(
    extra: Mapping[str, Sequence[str | Factory]] | None = None,
    purposes: Sequence[str] | None = None,
) -> dict[str, list[Factory]]:
    """Import the factories of :data:`LIVE_ANALYSES` plus ``extra``, keyed by purpose.

    Parameters
    ----------
    extra
        Further factories by purpose, as ``"module:attribute"`` strings or callables.
    purposes
        Keep only these purposes (default: all).

    Raises
    ------
    ValueError
        If a factory path cannot be imported or a requested purpose has no entry.
    """
    table: dict[str, list[str | Factory]] = {k: list(v) for k, v in LIVE_ANALYSES.items()}
    for purpose, entries in (extra or {}).items():
        table.setdefault(purpose, []).extend(entries)
    if purposes is not None:
        unknown = sorted(set(purposes) - set(table))
        if unknown:
            raise ConfigError(f"unknown run purpose(s) {unknown}; expected some of {sorted(table)}")
        table = {k: v for k, v in table.items() if k in purposes}
    return {k: [e if callable(e) else _import(e) for e in v] for k, v in table.items()}


class _Guarded:
    """Forward documents to ``callback``; on its first exception log it and stop feeding it."""

    def __init__(self, callback: Callback, label: str, run_uid: str) -> None:
        self.callback, self.label, self.run_uid = callback, label, run_uid
        self.error: BaseException | None = None

    def __call__(self, name: str, doc: dict) -> None:
        if self.error is not None:
            return
        try:
            self.callback(name, doc)
        except Exception as exc:
            self.error = exc
            logger.exception(
                "live analysis %s failed on the %r document of run %s; it is skipped for the rest of this run",
                self.label,
                name,
                self.run_uid,
            )


def live_router(
    context: LiveContext,
    factories: Mapping[str, Sequence[Factory]] | None = None,
) -> RunRouter:
    """A ``RunRouter`` that starts the registered live analyses for each run, by its ``purpose``.

    Parameters
    ----------
    context
        Passed to every factory.
    factories
        Purpose → factories (default: :func:`resolve_factories` ()).
    """
    table = resolve_factories() if factories is None else factories

    def factory(name: str, start: dict) -> tuple[list[Callback], list]:
        callbacks: list[Callback] = []
        for make in table.get(start.get(PURPOSE_KEY, ""), ()):
            label = getattr(make, "__qualname__", repr(make))
            try:
                callbacks.append(_Guarded(make(context), label, start["uid"]))
            except Exception:
                logger.exception("live analysis %s could not start for run %s", label, start["uid"])
        if callbacks:
            logger.info("run %s (%s): %d live analyses", start["uid"], start.get(PURPOSE_KEY), len(callbacks))
        return callbacks, []

    return RunRouter([factory])


def serve_remote(
    proxy_address: str,
    callback: Callback,
    prefix: bytes = b"",
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Feed ``callback`` with the documents published through a bluesky 0MQ proxy until SIGTERM/SIGINT.

    Parameters
    ----------
    proxy_address
        The proxy's *out* address, ``"host:port"``.
    callback
        Receives every ``(name, doc)`` (e.g. :func:`live_router`).
    prefix
        Only documents published with this prefix (empty: all).
    on_ready
        Called once the subscription socket is connected.
    """
    from bluesky.callbacks.zmq import RemoteDispatcher

    dispatcher = RemoteDispatcher(proxy_address, prefix=prefix)
    dispatcher.subscribe(callback)
    if on_ready is not None:
        dispatcher.loop.call_soon(on_ready)

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        dispatcher.start()
    except KeyboardInterrupt:
        print("analysis server stopped", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
