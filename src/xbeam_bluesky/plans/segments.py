"""Detector file segments: one staged acquisition (one file) per contiguous block of a stream.

TiledWriter maps a StreamResource to a single stream, and an HDF5 StreamResource to its file from row 0. A
camera is therefore re-staged (a new file) whenever the stream it is read into changes; frames of one stream
spread over several files are joined by TiledWriter into one array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.protocols import Preparable, Readable
from bluesky.utils import MsgGenerator


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

    def _open(self, stream: str) -> MsgGenerator[None]:
        yield from bps.stage(self.detector)
        if isinstance(self.detector, Preparable):
            from ophyd_async.core import TriggerInfo

            yield from bps.prepare(self.detector, TriggerInfo(livetime=self.exposure_s), wait=True)
        self.stream = stream

    def read(self, readables: Sequence[Readable], stream: str) -> MsgGenerator[Any]:
        """Trigger and read ``readables`` into ``stream``, starting a new segment if the stream changed."""
        if stream != self.stream:
            yield from self.close()
            yield from self._open(stream)
        return (yield from bps.trigger_and_read(list(readables), name=stream))

    def close(self) -> MsgGenerator[None]:
        """Unstage the detector (closes its file); no-op when nothing is staged."""
        if self.stream is not None:
            self.stream = None
            yield from bps.unstage(self.detector)
