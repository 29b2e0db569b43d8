"""Detector file segments: one staged acquisition (one file) per contiguous block of a stream.

TiledWriter maps a StreamResource to a single stream, and an HDF5 StreamResource to its file from row 0. A
camera is therefore re-staged (a new file) whenever the stream it is read into changes; frames of one stream
spread over several files are joined by TiledWriter into one array.

The per-frame path (:func:`lean_mv`, :meth:`DetectorSegments.read`) emits the same messages as ``bps.mv`` and
``bps.trigger_and_read`` without their per-call plan wrappers (each formats a stack trace), which keeps the
software overhead per frame small at high frame rates.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.protocols import Preparable, Readable, Triggerable
from bluesky.utils import Msg, MsgGenerator

_groups = itertools.count()


def lean_mv(*args: Any) -> MsgGenerator[None]:
    """``bps.mv(obj1, value1, obj2, value2, ...)``: set all in parallel and wait for all."""
    group = f"xbeam-mv-{next(_groups)}"
    for obj, value in zip(args[::2], args[1::2], strict=True):
        yield Msg("set", obj, value, group=group)
    yield Msg("wait", None, group=group)


class DetectorSegments:
    """Stage/prepare/unstage a detector around each block of reads into one stream.

    Parameters
    ----------
    detector : Readable
        The detector; if it is ``Preparable`` (ophyd-async) it is prepared with
        ``TriggerInfo(livetime=exposure_s)`` after every stage.
    exposure_s : float
        Exposure per frame in s.
    """

    def __init__(self, detector: Any, exposure_s: float) -> None:
        self.detector = detector
        self.exposure_s = float(exposure_s)
        self.stream: str | None = None
        self._plan_for: tuple[int, ...] = ()
        self._triggerable: list[Any] = []

    def _open(self, stream: str) -> MsgGenerator[None]:
        yield from bps.stage(self.detector)
        if isinstance(self.detector, Preparable):
            from ophyd_async.core import TriggerInfo

            yield from bps.prepare(self.detector, TriggerInfo(livetime=self.exposure_s), wait=True)
        self.stream = stream

    def read(self, readables: Sequence[Readable], stream: str) -> MsgGenerator[dict]:
        """Trigger and read ``readables`` into one event of ``stream`` (as ``bps.trigger_and_read``), starting a
        new segment if the stream changed."""
        if stream != self.stream:
            yield from self.close()
            yield from self._open(stream)
        key = tuple(id(r) for r in readables)
        if key != self._plan_for:
            self._plan_for = key
            self._triggerable = [r for r in readables if isinstance(r, Triggerable)]
        group = f"xbeam-trigger-{next(_groups)}"
        for obj in self._triggerable:
            yield Msg("trigger", obj, group=group)
        if self._triggerable:
            yield Msg("wait", None, group=group)
        yield Msg("create", None, name=stream)
        readings: dict = {}
        try:
            for obj in readables:
                reading = yield Msg("read", obj)
                if reading is not None:
                    readings.update(reading)
        except BaseException:
            yield Msg("drop")
            raise
        yield Msg("save")
        return readings

    def close(self) -> MsgGenerator[None]:
        """Unstage the detector (closes its file); no-op when nothing is staged."""
        if self.stream is not None:
            self.stream = None
            yield from bps.unstage(self.detector)
