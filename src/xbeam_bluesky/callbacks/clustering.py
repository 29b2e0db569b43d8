"""Live noise-grid clustering of a running ``xanes_imaging`` run, frame by frame.

:class:`LiveClustering` is a ``(name, doc)`` callback (an ``event_model.DocumentRouter``). For a run with
``purpose="xanes_imaging"`` it pairs each StreamDatum (which HDF5 file and frame index) with its event
(``energy_index``, ``tile_index``) and puts a small reference to the frame on a bounded queue; the RunEngine
never waits for the analysis. A worker thread:

1. builds the sites from the reference library on the run's energies (start document: ``energies``,
   the incident counts per energy — see :func:`run_incident_counts` — and optional ``clustering`` options)
   while the darks and flats are taken;
2. averages the ``dark`` frames and the ``flat`` frames of each energy;
3. reads each ``primary`` frame from the detector's HDF5 file (SWMR) as it is written, converts it to
   absorbance μt = −ln((I − dark)/(flat − dark)) (saturated or non-positive pixels become NaN and are masked)
   and adds it to its tile's :class:`~xbeam_bluesky.clustering.StreamingAssigner`;
4. keeps provisional label maps per tile (:attr:`LiveClustering.provisional`), refreshed every
   ``provisional_every`` frames of a tile and passed to ``on_provisional`` if given;
5. at the stop document finalizes every tile, opens sites for compact unexplained regions (re-reading those
   rows from the files; if any open, every tile is re-assigned so labels stay exact), stitches the tiles into a
   mosaic by stage position, denoises it (before that, when the flats of every energy were received and their
   mean counts differ from the incident counts the sites were built with by more than 2 %, the sites are
   rebuilt with the flat-field counts per energy), and writes an analysis result of kind ``"clustering"`` linked to the
   run (``raw_uid``): arrays ``labels``, ``raw_labels``, ``confidence``, ``novel``, ``masked``, ``spectra``,
   ``energies``, ``fractions``, a summary and the lag statistics in the metadata, and a PNG (mosaic with a
   legend, cluster spectra).

If the worker falls behind, the lag (frames queued, seconds behind) is logged and recorded; a frame that
cannot be queued (queue full) or read (wrong shape, missing flat) is counted and named in the result, never
dropped silently. Every failure becomes a result with ``status="failed"`` and the reason.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from event_model import DocumentRouter

from xbeam_bluesky.callbacks.remote import LiveContext
from xbeam_bluesky.clustering import (
    Assignment,
    ClusterResult,
    GramAccumulator,
    Sites,
    StreamingAssigner,
    assemble_result,
    cluster_tiles,
    discover_sites,
    sites_from_library,
)
from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library
from xbeam_bluesky.storage import write_analysis_result

__all__ = [
    "DEFAULT_REFERENCES",
    "LiveClustering",
    "choose_incident_counts",
    "flat_incident_counts",
    "live_clustering",
    "run_incident_counts",
    "run_noise_model",
]

logger = logging.getLogger(__name__)

RESULT_KIND = "clustering"

#: Fe K references used when the run names none (``clustering.references`` in the start document or options).
DEFAULT_REFERENCES: tuple[str, ...] = (
    "Fe2O3_rt_01",
    "Fe3O4_rt_01",
    "larch_FeDem_Goerthite",
    "larch_ALS1032_Olivine_Fo0",
    "FeS2_rt_01",
    "Fe_metal_rt_01",
    "FeO_rt_01",
    "larch_FeDem_Ferrihydrite",
)


#: Relative difference between the flat-field counts and the incident counts the sites were built with above
#: which the sites are rebuilt with the flat-field counts at the end of the run.
FLAT_I0_TOLERANCE = 0.02


def run_incident_counts(start: dict) -> tuple[float | np.ndarray, str]:
    """Incident counts per pixel per frame for the noise model, from a ``xanes_imaging`` start document.

    In order of preference: ``noise_model["i0_counts_per_energy"]`` (the camera's open-beam counts at each
    energy's exposure, recorded by the plan for a dwell list); ``i0`` scaled by ``dwell[i] / min(dwell)`` when
    ``dwell`` is a list (``i0`` is that of the shortest dwell); ``i0`` for every energy.

    Returns
    -------
    i0, model
        A number or one value per energy, and the name of the model used (``"noise_model_per_energy"``,
        ``"i0_scaled_by_dwell"`` or ``"i0"``).

    Raises
    ------
    ValueError
        If the start document has no ``i0`` or the per-energy values do not match ``energies``.
    """
    n = len(start["energies"])
    per_energy = (start.get("noise_model") or {}).get("i0_counts_per_energy")
    if per_energy is not None:
        if len(per_energy) != n:
            raise ValueError(
                f"run {start.get('uid')}: noise_model.i0_counts_per_energy has {len(per_energy)} values for "
                f"{n} energies"
            )
        return np.asarray(per_energy, dtype=np.float64), "noise_model_per_energy"
    i0 = start.get("i0")
    if i0 is None:
        raise ValueError(f"run {start.get('uid')}: the start document has no i0 (incident counts per pixel)")
    dwell = start.get("dwell")
    if isinstance(dwell, list | tuple) and len(set(dwell)) > 1:
        if len(dwell) != n:
            raise ValueError(f"run {start.get('uid')}: dwell has {len(dwell)} entries for {n} energies")
        d = np.asarray(dwell, dtype=np.float64)
        return float(i0) * d / d.min(), "i0_scaled_by_dwell"
    return float(i0), "i0"


def run_noise_model(start: dict) -> PhotonNoiseModel:
    """Detector noise model of a ``xanes_imaging`` run: the camera's recorded gain and variance offset
    (``noise_model.gain`` / ``noise_model.offset``, written by cameras that know them, e.g. the sim sCMOS) or the
    sCMOS defaults of :class:`PhotonNoiseModel`, with the I0 term averaged over the run's ``n_flats`` flats."""
    recorded = start.get("noise_model") or {}
    defaults = PhotonNoiseModel()
    return PhotonNoiseModel(
        gain=float(recorded.get("gain", defaults.gain)),
        offset=float(recorded.get("offset", defaults.offset)),
        flat_frames=max(int(start.get("n_flats") or 1), 1),
    )


def flat_incident_counts(
    flats: dict[int, np.ndarray], dark: np.ndarray | float, n_energies: int
) -> np.ndarray | None:
    """Mean dark-subtracted flat counts per energy (unsaturated finite pixels); None if an energy has no flat."""
    if any(ie not in flats for ie in range(n_energies)):
        return None
    out = np.empty(n_energies)
    for ie in range(n_energies):
        flat = np.asarray(flats[ie], dtype=np.float64)
        with np.errstate(all="ignore"):
            values = (flat - dark)[(flat < 65535) & np.isfinite(flat)]
        out[ie] = float(values.mean()) if values.size else np.nan
    return out


def choose_incident_counts(
    start_counts: float | np.ndarray, start_model: str, flat_counts: np.ndarray | None
) -> tuple[float | np.ndarray, dict[str, Any]]:
    """The incident counts to use and a JSON record of the choice.

    The flat-field counts per energy replace the start document's when they are all valid and differ from
    them by more than :data:`FLAT_I0_TOLERANCE` at some energy (e.g. beam decay, an energy-dependent flux, or a
    start document without per-energy counts).
    """
    model: dict[str, Any] = {"source": start_model, "i0_counts": np.atleast_1d(start_counts).tolist(),
                             "flat_i0_counts": None}  # fmt: skip
    if flat_counts is None:
        return start_counts, model
    model["flat_i0_counts"] = np.round(flat_counts, 3).tolist()
    if not np.all(np.isfinite(flat_counts) & (flat_counts > 0)):
        return start_counts, model
    used = np.broadcast_to(np.asarray(start_counts, dtype=np.float64), flat_counts.shape)
    worst = float(np.max(np.abs(flat_counts / used - 1.0)))
    model["flat_vs_used_max_rel_diff"] = round(worst, 5)
    if worst <= FLAT_I0_TOLERANCE:
        return start_counts, model
    model.update(source="flats", i0_counts=np.round(flat_counts, 3).tolist())
    return flat_counts, model


@dataclass(frozen=True)
class _Frame:
    stream: str
    path: str
    dataset: str
    index: int
    seq_num: int
    energy_index: int
    tile_index: int
    queued_at: float


class _RunFrames:
    """Absorbance of one tile read back from the detector files (a ``StackSource`` for re-assignment)."""

    def __init__(
        self, frames: dict[int, _Frame], n_energies: int, shape: tuple[int, int], owner: LiveClustering
    ) -> None:
        self.frames, self._shape, self.owner = frames, (n_energies, *shape), owner

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        out = np.full((self._shape[0], y1 - y0, self._shape[2]), np.nan, np.float32)
        for ie, frame in self.frames.items():
            out[ie] = self.owner._absorbance(self.owner._read(frame)[y0:y1], ie, (y0, y1))
        return out


class LiveClustering(DocumentRouter):
    """Cluster the frames of ``xanes_imaging`` runs while they are acquired (see the module docstring).

    Parameters
    ----------
    client
        tiled container receiving the results (``Storage.client``); ``None`` keeps them in memory only
        (:attr:`results`).
    library_dir
        Reference library directory (default: the bundled Fe K library).
    references
        Reference names to build sites from (default :data:`DEFAULT_REFERENCES`, or the start document's
        ``clustering.references``).
    n_draws
        Random three-site mixtures for the sites (the publication uses 10 000).
    mu_offset, edge_jump
        Expected absorbance below the edge and edge jump of the sample (μt), for the noise model of the sites.
    denoise, discover, window, min_count
        Spatial denoising, discovery of new sites, and their seed window (pixels) and threshold.
    queue_size
        Frames that may wait for the worker; beyond that a frame is recorded as dropped (with a warning).
    lag_warning_s
        Log a warning when the oldest waiting frame is older than this (s).
    provisional_every
        Refresh a tile's provisional map after this many of its frames.
    on_provisional
        Called as ``on_provisional(tile_index, labels, n_energies_received)`` from the worker thread.
    n_threads
        Threads per tile assigner.
    single_run
        The worker thread ends after the first run (for per-run factories such as :func:`live_clustering`).

    Attributes
    ----------
    provisional
        Latest provisional label map per tile of the current run.
    results
        Run uid → :class:`~xbeam_bluesky.clustering.ClusterResult` of finished runs.
    frame_errors
        Run uid → messages for frames that could not be used (each names the run, sequence number, energy
        and tile).
    i0_models
        Run uid → the incident-count model of the noise (``source``: ``"flats"``,
        ``"noise_model_per_energy"``, ``"i0_scaled_by_dwell"`` or ``"i0"``; ``i0_counts`` used; the flat-field
        counts per energy measured), also written to the result metadata as ``i0_model``.
    dropped
        Frames of the current run that never reached the worker (queue full, frame or event missing).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        library_dir: str | Path | None = None,
        references: Sequence[str] | None = None,
        n_draws: int = 2000,
        mu_offset: float = 0.4,
        edge_jump: float = 1.0,
        denoise: bool = True,
        discover: bool = True,
        window: int = 5,
        min_count: int = 23,
        queue_size: int = 10_000,
        lag_warning_s: float = 5.0,
        provisional_every: int = 10,
        on_provisional: Callable[[int, np.ndarray, int], None] | None = None,
        n_threads: int = 2,
        single_run: bool = False,
    ) -> None:
        super().__init__()
        self.client = client
        self.library_dir = library_dir
        self.references = tuple(references) if references else None
        self.options = {"n_draws": n_draws, "mu_offset": mu_offset, "edge_jump": edge_jump}
        self.denoise, self.discover, self.window, self.min_count = denoise, discover, window, min_count
        self.lag_warning_s = lag_warning_s
        self.provisional_every = max(1, provisional_every)
        self.on_provisional = on_provisional
        self.n_threads = n_threads
        self.provisional: dict[int, np.ndarray] = {}
        self.results: dict[str, ClusterResult] = {}
        self.frame_errors: dict[str, list[str]] = {}
        self.i0_models: dict[str, dict[str, Any]] = {}
        self.queue_size = queue_size
        self.single_run = single_run
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._reset()

    # ------------------------------------------------------------ document side (RunEngine thread)
    def _reset(self) -> None:
        self._active = False
        self._start: dict[str, Any] = {}
        self._streams: dict[str, str] = {}
        self._resources: dict[str, dict] = {}
        self._located: dict[tuple[str, int], tuple[str, str, int]] = {}
        self._indexed: dict[tuple[str, int], tuple[int, int]] = {}
        self._keys: dict[str, str] = {}
        self.dropped: list[str] = []

    def start(self, doc: dict) -> None:
        self._reset()
        if doc.get("purpose") != "xanes_imaging":
            return
        self._active = True
        self._start = doc
        self._keys = {"energy_index": "energy_index", "tile_index": "tile_index", **doc.get("data_keys", {})}
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="xbeam-live-clustering", daemon=True)
            self._worker.start()
        self._put(("start", doc))

    def descriptor(self, doc: dict) -> None:
        if self._active:
            self._streams[doc["uid"]] = doc.get("name", "primary")

    def stream_resource(self, doc: dict) -> None:
        if self._active:
            self._resources[doc["uid"]] = doc

    def stream_datum(self, doc: dict) -> None:
        if not self._active:
            return
        resource = self._resources.get(doc["stream_resource"])
        if resource is None or resource.get("data_key") != self._keys.get("frame", resource.get("data_key")):
            return
        path = resource["uri"].removeprefix("file://localhost")
        dataset = resource.get("parameters", {}).get("dataset", "/entry/data/data")
        seq0, index0 = doc["seq_nums"]["start"], doc["indices"]["start"]
        for k in range(doc["indices"]["stop"] - index0):
            key = (doc["descriptor"], seq0 + k)
            self._located[key] = (path, dataset, index0 + k)
            self._pair(key)

    def event(self, doc: dict) -> dict:
        if self._active and self._streams.get(doc["descriptor"]) in ("dark", "flat", "primary"):
            data = doc["data"]
            key = (doc["descriptor"], doc["seq_num"])
            self._indexed[key] = (
                int(data.get(self._keys["energy_index"], -1)),
                int(data.get(self._keys["tile_index"], -1)),
            )
            self._pair(key)
        return doc

    def _pair(self, key: tuple[str, int]) -> None:
        if key in self._located and key in self._indexed:
            path, dataset, index = self._located.pop(key)
            ie, it = self._indexed.pop(key)
            stream = self._streams[key[0]]
            self._put(("frame", _Frame(stream, path, dataset, index, key[1], ie, it, time.monotonic())))

    def stop(self, doc: dict) -> None:
        if not self._active:
            return
        for key in sorted(set(self._located) | set(self._indexed)):
            self.dropped.append(f"{self._streams.get(key[0], '?')} seq_num {key[1]}: frame or event missing")
        self._put(("stop", doc, list(self.dropped)))
        self._active = False

    def _put(self, item: tuple) -> None:
        """Queue without ever blocking; frames beyond ``queue_size`` waiting are recorded as dropped."""
        if item[0] == "frame" and self._queue.qsize() >= self.queue_size:
            f = item[1]
            msg = f"{f.stream} seq_num {f.seq_num} (energy {f.energy_index}, tile {f.tile_index}): queue full"
            self.dropped.append(msg)
            logger.warning("live clustering of run %s dropped a frame: %s", self._start.get("uid"), msg)
            return
        self._queue.put_nowait(item)

    # ------------------------------------------------------------ public helpers
    @property
    def lag_frames(self) -> int:
        """Frames waiting for the worker."""
        return self._queue.qsize()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued document is processed; True if done within ``timeout`` (s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # ------------------------------------------------------------ worker side
    def _work(self) -> None:
        state: dict[str, Any] = {}
        while True:
            item = self._queue.get()
            try:
                kind = item[0]
                if kind == "start":
                    state = self._begin(item[1])
                elif kind == "frame" and state:
                    self._frame(state, item[1])
                elif kind == "stop" and state:
                    self._finish(state, item[1], item[2])
                    state = {}
                    if self.single_run:
                        return
            except Exception as exc:  # never let the worker die: record the failure for this run
                logger.exception("live clustering failed on a %r item", item[0])
                if state:
                    state["error"] = f"{type(exc).__name__}: {exc}"
                    if item[0] == "stop":
                        self._write_failure(state, item[1], state["error"])
                        state = {}
                        if self.single_run:
                            return
            finally:
                self._queue.task_done()

    def _begin(self, start: dict) -> dict[str, Any]:
        md = start.get("clustering", {}) or {}
        energies = np.asarray(start["energies"], dtype=float)
        tiles = np.asarray(start["tiles"]["positions"], dtype=float).reshape(-1, 2)
        state: dict[str, Any] = {
            "start": start, "energies": energies, "tiles": tiles, "pixel_um": start["tiles"].get("pixel_size_um"),
            "dark_sum": None, "dark_n": 0, "flats": {}, "waiting": [], "assigners": {}, "frames": {},
            "counts": {}, "errors": [], "max_lag_s": 0.0, "max_lag_frames": 0, "error": None,
        }  # fmt: skip
        i0, i0_model = run_incident_counts(start)
        references = list(md.get("references") or self.references or DEFAULT_REFERENCES)
        lib = aligned_library(load_library(self.library_dir), energies)
        missing = sorted(set(references) - set(lib.names))
        if missing:
            raise ValueError(
                f"run {start['uid']}: references {missing} not in the library (or not covering it)"
            )
        refs = np.vstack([lib.matrix[lib.names.index(n)] for n in references])
        opts = {**self.options, **{k: md[k] for k in ("n_draws", "mu_offset", "edge_jump") if k in md}}
        noise = run_noise_model(start)
        state["noise_model"] = noise.as_dict()
        state["build_sites"] = lambda counts: sites_from_library(
            energies, refs, references, i0_counts=counts, noise=noise, **opts
        )
        state["sites"] = state["build_sites"](i0)
        state["i0"] = i0
        state["i0_model"] = {"source": i0_model, "i0_counts": np.atleast_1d(i0).tolist()}
        return state

    def _sites_from_flats(self, state: dict[str, Any]) -> None:
        """Rebuild the sites with the flat-field counts per energy when they differ from the ones used."""
        n = len(state["energies"])
        measured = flat_incident_counts(state["flats"], state["dark"], n) if "dark" in state else None
        counts, model = choose_incident_counts(state["i0"], state["i0_model"]["source"], measured)
        state["i0_model"] = model
        if model["source"] != "flats":
            return
        sites = state["build_sites"](counts)
        for assigner in state["assigners"].values():
            assigner.use_sites(sites)
        state["sites"] = sites
        logger.info(
            "live clustering of run %s: sites rebuilt with the flat-field counts per energy (up to %.1f %% from "
            "the start document's)", state["start"]["uid"], 100 * model["flat_vs_used_max_rel_diff"],
        )  # fmt: skip

    def _read(self, frame: _Frame) -> np.ndarray:
        with h5py.File(frame.path, "r", swmr=True) as f:
            data = f[frame.dataset]
            data.refresh()
            if frame.index >= data.shape[0]:
                raise ValueError(f"frame {frame.index} not yet in {frame.path} ({data.shape[0]} written)")
            return np.asarray(data[frame.index]).reshape(data.shape[-2:])

    def _absorbance(
        self, counts: np.ndarray, energy_index: int, rows: tuple[int, int] | None = None
    ) -> np.ndarray:
        state = self._state
        sl = slice(*rows) if rows is not None else slice(None)
        dark = state["dark"][sl]
        flat = state["flats"][energy_index][sl] - dark
        with np.errstate(all="ignore"):
            mu = np.log(flat / (counts.astype(np.float32) - dark))
        mu[(counts >= 65535) | ~np.isfinite(mu)] = np.nan
        return mu.astype(np.float32)

    def _frame(self, state: dict[str, Any], frame: _Frame) -> None:
        self._state = state
        lag_s = time.monotonic() - frame.queued_at
        state["max_lag_s"] = max(state["max_lag_s"], lag_s)
        state["max_lag_frames"] = max(state["max_lag_frames"], self._queue.qsize())
        if lag_s > self.lag_warning_s:
            logger.warning(
                "live clustering of run %s is %.1f s (%d frames) behind", state["start"]["uid"], lag_s,
                self._queue.qsize(),
            )  # fmt: skip
        counts = self._read(frame)
        if frame.stream == "dark":
            state["dark_sum"] = counts.astype(np.float64) + (
                0 if state["dark_sum"] is None else state["dark_sum"]
            )
            state["dark_n"] += 1
            return
        if frame.stream == "flat":
            total, n = state["flats_acc"] if "flats_acc" in state else ({}, {})
            total[frame.energy_index] = total.get(frame.energy_index, 0) + counts.astype(np.float64)
            n[frame.energy_index] = n.get(frame.energy_index, 0) + 1
            state["flats_acc"] = (total, n)
            state["flats"][frame.energy_index] = (total[frame.energy_index] / n[frame.energy_index]).astype(
                np.float32
            )
            waiting, state["waiting"] = state["waiting"], []
            for f in waiting:
                self._primary(state, f, self._read(f))
            return
        self._primary(state, frame, counts)

    def _primary(self, state: dict[str, Any], frame: _Frame, counts: np.ndarray) -> None:
        uid = state["start"]["uid"]
        if "dark" not in state:
            state["dark"] = (
                (state["dark_sum"] / state["dark_n"]).astype(np.float32)
                if state["dark_n"]
                else np.zeros(counts.shape, np.float32)
            )
        if frame.energy_index not in state["flats"]:
            state["waiting"].append(frame)  # its flat has not arrived yet
            return
        tile = frame.tile_index
        if not 0 <= tile < len(state["tiles"]) or not 0 <= frame.energy_index < len(state["energies"]):
            state["errors"].append(f"run {uid} frame seq_num {frame.seq_num}: tile {tile} / energy "
                                   f"{frame.energy_index} outside the start document's lists")  # fmt: skip
            return
        try:
            if counts.shape != state["dark"].shape:
                raise ValueError(f"shape {counts.shape}, expected {state['dark'].shape}")
            assigner = state["assigners"].get(tile)
            if assigner is None:
                assigner = StreamingAssigner(
                    state["sites"], counts.shape, buffer_frames=8, n_threads=self.n_threads
                )
                state["assigners"][tile] = assigner
                state["frames"][tile] = {}
            assigner.update(self._absorbance(counts, frame.energy_index), frame.energy_index)
        except ValueError as exc:
            msg = f"run {uid} frame seq_num {frame.seq_num} (energy {frame.energy_index}, tile {tile}): {exc}"
            state["errors"].append(msg)
            logger.error("live clustering: %s", msg)
            return
        state["frames"][tile][frame.energy_index] = frame
        n = state["counts"][tile] = state["counts"].get(tile, 0) + 1
        if n % self.provisional_every == 0 or n == len(state["energies"]):
            labels = assigner.labels_now()
            with self._lock:
                self.provisional[tile] = labels
            if self.on_provisional is not None:
                self.on_provisional(tile, labels, n)

    def _finish(self, state: dict[str, Any], stop: dict, dropped: list[str]) -> None:
        self._state = state
        uid = state["start"]["uid"]
        for f in state["waiting"]:
            state["errors"].append(
                f"run {uid} frame seq_num {f.seq_num}: no flat for energy {f.energy_index}"
            )
        self.frame_errors[uid] = list(state["errors"])
        if not state["assigners"]:
            raise ValueError(f"run {uid}: no primary frame could be clustered")
        tiles = sorted(state["assigners"])
        self._sites_from_flats(state)
        sites: Sites = state["sites"]
        assignments: list[Assignment] = []
        gram: GramAccumulator | None = None
        for t in tiles:
            assigner = state["assigners"][t]
            assignments.append(assigner.finalize())
            coords, basis = assigner.coordinates()
            g = GramAccumulator(sites.n_clusters, basis)
            g.add(assignments[-1].labels, coords)
            if gram is None:
                gram = g
            elif g.basis.shape == gram.basis.shape and np.allclose(g.basis, gram.basis):
                gram.merge(g)  # tiles missing energies have another basis: they add labels, not spectra
            assigner.close()
        shape = assignments[0].labels.shape
        sources = [_RunFrames(state["frames"][t], len(state["energies"]), shape, self) for t in tiles]
        centers = [tuple(state["tiles"][t]) for t in tiles]
        extended = sites
        if self.discover and all(len(state["frames"][t]) == len(state["energies"]) for t in tiles):
            for src, a in zip(sources, assignments, strict=True):
                extended = discover_sites(extended, a.novel, src.read_rows, window=self.window,
                                          min_count=self.min_count)  # fmt: skip
        common = {"centers_mm": centers, "pixel_um": state["pixel_um"], "denoise": self.denoise,
                  "window": self.window, "min_count": self.min_count}  # fmt: skip
        if len(extended) > len(sites):  # new sites: re-assign every tile from the files, labels stay exact
            result = cluster_tiles(sources, extended, discover=False, n_threads=self.n_threads, **common)
        else:
            assert gram is not None
            result = assemble_result(assignments, gram, sites, **common)
        self.results[uid] = result
        self.i0_models[uid] = state["i0_model"]
        self._write(state, stop, result, dropped)

    def _metadata(self, state: dict[str, Any], stop: dict, dropped: list[str]) -> dict[str, Any]:
        return {
            "status": "success",
            "exit_status": stop.get("exit_status"),
            "dropped_frames": dropped,
            "frame_errors": state["errors"],
            "max_lag_s": round(state["max_lag_s"], 3),
            "max_lag_frames": state["max_lag_frames"],
            "i0_model": state.get("i0_model"),
            "noise_model": state.get("noise_model"),
            "parameters": {
                **self.options,
                "denoise": self.denoise,
                "discover": self.discover,
                "window": self.window,
                "min_count": self.min_count,
            },
        }

    def _write(self, state: dict[str, Any], stop: dict, result: ClusterResult, dropped: list[str]) -> None:
        if self.client is None:
            return
        summary = result.summary()
        arrays = {
            "labels": result.labels,
            "raw_labels": result.raw_labels,
            "confidence": result.confidence,
            "novel": result.novel.astype(np.uint8),
            "masked": result.masked.astype(np.uint8),
            "spectra": np.nan_to_num(result.spectra, nan=0.0),
            "energies": state["energies"],
            "fractions": np.asarray(result.fractions["fractions"]),
        }
        metadata = {
            **self._metadata(state, stop, dropped),
            "summary": summary,
            "cluster_names": list(result.sites.cluster_names),
            "mosaic_origin_mm": list(result.mosaic.origin_mm),
            "pixel_size_um": state["pixel_um"],
        }
        write_analysis_result(self.client, state["start"]["uid"], RESULT_KIND, arrays, metadata,
                              png=render_png(result, state["energies"], state["start"]["uid"]))  # fmt: skip

    def _write_failure(self, state: dict[str, Any], stop: dict, reason: str) -> None:
        if self.client is None:
            return
        try:
            md = {**self._metadata(state, stop, []), "status": "failed", "error": reason}
            write_analysis_result(self.client, state["start"]["uid"], RESULT_KIND, {}, md)
        except Exception:
            logger.exception("live clustering could not record the failure of run %s", state["start"]["uid"])


def render_png(result: ClusterResult, energies: np.ndarray, title: str) -> bytes:
    """The mosaic with a legend (cluster name, area fraction) and the cluster spectra, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    summary = result.summary()
    present = [c["label"] for c in summary["clusters"]]
    colors = plt.get_cmap("tab20")(np.arange(20))
    lut = np.zeros(result.sites.n_clusters + 1, int)
    for i, k in enumerate(present):
        lut[k] = i + 1
    cmap = ListedColormap(np.vstack([[0, 0, 0, 1], colors[np.arange(max(len(present), 1)) % 20]]))
    fig, (ax_map, ax_spec) = plt.subplots(1, 2, figsize=(12, 5))
    ax_map.imshow(lut[result.labels], cmap=cmap, vmin=0, vmax=max(len(present), 1), interpolation="nearest")
    ax_map.set_title(f"clusters of run {title[:8]}")
    ax_map.set_axis_off()
    handles = []
    order = np.argsort(energies)
    for i, c in enumerate(summary["clusters"]):
        color = colors[i % 20]
        label = f"{c['label']}: {c['name'][:28]} ({100 * c['area_fraction']:.2f} %)"
        handles.append(Patch(color=color, label=label))
        ax_spec.plot(energies[order], result.spectra[c["label"] - 1][order], color=color, label=label)
    ax_map.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(0, -0.02), fontsize=7, ncol=2, frameon=False
    )
    ax_spec.set_xlabel("energy (eV)")
    ax_spec.set_ylabel("μt (cluster spectrum)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def live_clustering(context: LiveContext) -> LiveClustering:
    """Factory for :data:`xbeam_bluesky.callbacks.remote.LIVE_ANALYSES` (options under ``"clustering"``)."""
    options = dict((context.options or {}).get("clustering") or {})
    return LiveClustering(context.results, single_run=True, **options)
