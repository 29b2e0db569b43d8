"""A small live analysis used to test the out-of-process plumbing (imported by ``xbeam analysis-server --add``).

For every run it follows, it reads each frame of the ``primary`` stream from the detector's HDF5 file, exactly
as a real live analysis must (StreamResource + StreamDatum; frames are not in the documents), and at run stop
writes the per-frame mean counts to tiled as an analysis result of kind ``"probe"`` linked to the run.
"""

from __future__ import annotations

import h5py
import numpy as np
from event_model import DocumentRouter

from xbeam_bluesky.callbacks.remote import LiveContext
from xbeam_bluesky.storage import write_analysis_result


class FrameMeans(DocumentRouter):
    def __init__(self, context: LiveContext) -> None:
        super().__init__()
        self.client = context.results
        self.resources: dict[str, dict] = {}
        self.streams: dict[str, str] = {}
        self.means: list[float] = []
        self.start_doc: dict = {}

    def start(self, doc):
        self.start_doc = doc

    def descriptor(self, doc):
        self.streams[doc["uid"]] = doc["name"]

    def stream_resource(self, doc):
        self.resources[doc["uid"]] = doc

    def stream_datum(self, doc):
        if self.streams.get(doc["descriptor"]) != "primary":
            return
        resource = self.resources[doc["stream_resource"]]
        path = resource["uri"].removeprefix("file://localhost")
        with h5py.File(path, "r", swmr=True) as h5:
            data = h5[resource["parameters"]["dataset"]]
            data.refresh()
            for i in range(doc["indices"]["start"], doc["indices"]["stop"]):
                self.means.append(float(np.mean(data[i])))

    def stop(self, doc):
        write_analysis_result(
            self.client, self.start_doc["uid"], "probe", {"frame_means": np.asarray(self.means)},
            {"n_frames": len(self.means), "exit_status": doc["exit_status"]},
        )  # fmt: skip


def frame_means(context: LiveContext) -> FrameMeans:
    return FrameMeans(context)


def broken(context: LiveContext):
    def callback(name, doc):
        if name == "descriptor":
            raise RuntimeError("probe failure on purpose")

    return callback
