"""Live noise-grid clustering of a running ``xanes_imaging`` run, frame by frame.

:class:`LiveClustering` is a ``(name, doc)`` callback (an ``event_model.DocumentRouter``). For a run with
``purpose="xanes_imaging"`` it pairs each StreamDatum (which HDF5 file and frame index) with its event
(``energy_index``, ``tile_index``) and puts a small reference to the frame on a bounded queue; the RunEngine
never waits for the analysis. A worker thread:

1. builds library sites on the run's energies for the provisional maps (start document: ``energies``, the
   incident counts — see :func:`run_incident_counts` — and optional ``clustering`` options);
2. averages the ``dark`` frames and the ``flat`` frames of each energy (:class:`~xbeam_bluesky.spectra.FrameMean`);
3. reads each ``primary`` frame from the detector's HDF5 file (SWMR) as it is written, converts it to
   absorbance with :func:`~xbeam_bluesky.spectra.correct_frame` (saturated or non-positive pixels become NaN and
   are masked) and adds it to its tile's :class:`~xbeam_bluesky.clustering.StreamingAssigner`;
4. every ``provisional_every`` frames of a tile refreshes its provisional label map
   (:attr:`LiveClustering.provisional`), publishes it to tiled (result kind ``"clustering_provisional"``, array
   ``tile_<t>`` overwritten in place, readable by any client during the run) and passes it to ``on_provisional``;
5. at the stop document clusters the run with the one pipeline of the project, :func:`run_pipeline` →
   :class:`~xbeam_bluesky.clustering.ClusteringPipeline`, on the frames read back from the files (the energies every
   tile has), exactly as ``xbeam cluster RUN`` does on the run read back from tiled: the same frame correction,
   frame means, incident counts (the flat-field counts per energy when they differ by > 2 % from the start
   document's), noise model and options, hence the same map. It writes an analysis result of kind
   ``"clustering"`` linked to the run (``raw_uid``): arrays ``labels``, ``raw_labels``, ``confidence``, ``novel``,
   ``masked``, ``spectra``, ``energies``, ``fractions``; in the metadata the summary, the noise and incident-count
   choices, the model error, the options and the lag statistics; and a PNG (mosaic with a legend, cluster
   spectra).

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from event_model import DocumentRouter

from xbeam_bluesky.callbacks.remote import LiveContext
from xbeam_bluesky.clustering import (
    ClusteringPipeline,
    ClusterResult,
    StackSource,
    StreamingAssigner,
    estimated_noise,
    incident_counts,
    sites_from_library,
)
from xbeam_bluesky.errors import ClusteringInputError
from xbeam_bluesky.spectra import (
    FrameMean,
    PhotonNoiseModel,
    absorbing_edge,
    aligned_library,
    correct_frame,
    load_library,
    noise_model,
)
from xbeam_bluesky.storage import write_analysis_result
from xbeam_bluesky.storage.results import ANALYSIS_CONTAINER

__all__ = [
    "DEFAULT_REFERENCES",
    "ClusteringOptions",
    "LiveClustering",
    "choose_incident_counts",
    "flat_incident_counts",
    "live_clustering",
    "run_incident_counts",
    "run_noise_model",
    "run_pipeline",
]

logger = logging.getLogger(__name__)

RESULT_KIND = "clustering"
#: Kind of the result holding the provisional per-tile label maps while a run goes.
PROVISIONAL_KIND = "clustering_provisional"

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
            raise ClusteringInputError(
                f"run {start.get('uid')}: noise_model.i0_counts_per_energy has {len(per_energy)} values for "
                f"{n} energies"
            )
        return np.asarray(per_energy, dtype=np.float64), "noise_model_per_energy"
    i0 = start.get("i0")
    if i0 is None:
        raise ClusteringInputError(
            f"run {start.get('uid')}: the start document has no i0 (incident counts per pixel)"
        )
    dwell = start.get("dwell")
    if isinstance(dwell, list | tuple) and len(set(dwell)) > 1:
        if len(dwell) != n:
            raise ClusteringInputError(
                f"run {start.get('uid')}: dwell has {len(dwell)} entries for {n} energies"
            )
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


#: Detector noise models a run can be clustered with (``None``: the model the run's camera recorded).
NOISE_KINDS: tuple[str, ...] = ("photon", "scmos", "estimate")


@dataclass(frozen=True)
class ClusteringOptions:
    """How a ``xanes_imaging`` run is clustered: the live callback and ``xbeam cluster RUN`` apply the same options
    through :func:`run_pipeline`, so the defaults here are the defaults of both.

    Attributes
    ----------
    references
        Reference names seeding and naming the sites; ``None``: the start document's ``clustering.references``,
        else :data:`DEFAULT_REFERENCES`.
    noise
        ``"photon"`` (gain 1), ``"scmos"`` (gain 9.31, offset −63), ``"estimate"`` (fitted to the data's own
        scatter), or ``None``: the model the run's camera recorded (``noise_model.gain``/``offset``), else the sCMOS
        one; the I0 term averaged over the run's ``n_flats`` flats (not for ``estimate``).
    i0
        Incident counts per pixel per frame (one number, or one per energy of the run); ``None``: the run's (see
        :func:`run_incident_counts`, replaced by the flat-field counts per energy when they differ by > 2 %).
    denoise, discover, window, min_count, split, baseline_degree, min_jump_od
        As :class:`~xbeam_bluesky.clustering.ClusteringPipeline`.
    element
        Absorbing element (``"Fe"``), ``"none"``, or ``None``: the element whose tabulated edge lies inside the
        run's energies (:func:`~xbeam_bluesky.spectra.absorbing_edge`).
    memory_mb
        Bound on one block read, MB.
    """

    references: tuple[str, ...] | None = None
    noise: str | None = None
    i0: float | tuple[float, ...] | None = None
    denoise: bool = True
    discover: bool = True
    window: int = 5
    min_count: int = 23
    element: str | None = None
    min_jump_od: float = 0.0
    split: bool = False
    baseline_degree: int = 1
    memory_mb: float = 256.0

    def __post_init__(self) -> None:
        if self.noise is not None and self.noise not in NOISE_KINDS:
            raise ClusteringInputError(
                f"noise = {self.noise!r}; expected one of {', '.join(NOISE_KINDS)} or None (the run's)"
            )
        if self.references is not None:
            object.__setattr__(self, "references", tuple(self.references))
        if self.i0 is not None and np.ndim(self.i0):
            object.__setattr__(self, "i0", tuple(float(v) for v in self.i0))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly options (recorded in the result)."""
        out = asdict(self)
        out["references"] = None if self.references is None else list(self.references)
        out["i0"] = list(self.i0) if isinstance(self.i0, tuple) else self.i0
        return out


def _run_noise(start: dict, kind: str | None) -> PhotonNoiseModel:
    """The detector model of ``kind`` for a run (not ``estimate``), the I0 term over the run's flats."""
    if kind is None:
        return run_noise_model(start)
    return noise_model(kind, flat_frames=max(int(start.get("n_flats") or 1), 1))


def run_pipeline(
    start: dict,
    sources: Sequence[StackSource],
    energy_index: Sequence[int],
    flats: dict[int, np.ndarray],
    dark: np.ndarray | float,
    *,
    library_dir: str | Path | None = None,
    options: ClusteringOptions | None = None,
) -> tuple[ClusteringPipeline, dict[str, Any]]:
    """The :class:`~xbeam_bluesky.clustering.ClusteringPipeline` of a ``xanes_imaging`` run, live or read back.

    Parameters
    ----------
    start
        The run's start document.
    sources
        Its tiles as absorbance (by :func:`~xbeam_bluesky.spectra.correct_frame`), on the energies
        ``energy_index``; read only for ``noise="estimate"``.
    energy_index
        Indices into ``start["energies"]`` of the tiles' frames (every energy, or those every tile has).
    flats, dark
        Mean flat per energy index and mean dark (counts, :class:`~xbeam_bluesky.spectra.FrameMean`).
    library_dir
        Reference library (default: the bundled Fe K library).
    options
        How to cluster (default :class:`ClusteringOptions`).

    Returns
    -------
    pipeline, record
        The pipeline and a JSON record of the choices (``i0_model``, ``noise``, ``noise_model``, ``references``,
        ``element``, ``edge_ev``, ``energy_index``, ``options``).

    Raises
    ------
    ValueError
        Names the run and the input: incident counts missing or of the wrong length, references not in the
        library, fewer than 3 energies.
    """
    opts = options or ClusteringOptions()
    uid = start.get("uid")
    all_energies = np.asarray(start["energies"], dtype=float)
    keep = np.asarray(energy_index, dtype=int)
    if keep.size < 3:
        raise ClusteringInputError(
            f"run {uid}: {keep.size} energies measured in every tile; the clustering needs at least 3"
        )
    energies = all_energies[keep]
    if opts.i0 is not None:
        i0 = incident_counts(opts.i0, all_energies.size, f"run {uid}: i0 option")
        i0_model: dict[str, Any] = {"source": "i0 option", "i0_counts": np.atleast_1d(i0).tolist()}
    else:
        counts, source = run_incident_counts(start)
        i0, i0_model = choose_incident_counts(
            counts, source, flat_incident_counts(flats, dark, all_energies.size)
        )
    if np.ndim(i0):
        i0 = np.asarray(i0, dtype=float)[keep]
    memory = int(opts.memory_mb * 2**20)
    noise: Any
    if opts.noise == "estimate":
        ref = float(np.mean(i0))
        noise = estimated_noise(sources, energies, i0_ref=ref, memory_bytes=memory)
        i0, i0_model = (
            ref,
            {**i0_model, "source": f"estimated from the data (i0_ref = mean of {i0_model['source']})"},
        )
    else:
        noise = _run_noise(start, opts.noise)
    references = list(
        opts.references or (start.get("clustering") or {}).get("references") or DEFAULT_REFERENCES
    )
    lib = aligned_library(load_library(library_dir), energies)
    missing = sorted(set(references) - set(lib.names))
    if missing:
        raise ClusteringInputError(
            f"run {uid}: references {missing} not in the library (or not covering its energies "
            f"{energies.min():.1f}-{energies.max():.1f} eV)"
        )
    matrix = np.vstack([lib.matrix[lib.names.index(n)] for n in references])
    element, edge = absorbing_edge(energies, opts.element)
    pipeline = ClusteringPipeline(
        energies, i0, noise, tuple(references), matrix, denoise=opts.denoise, discover=opts.discover,
        window=opts.window, min_count=opts.min_count, memory_bytes=memory, element=element, edge_ev=edge,
        min_jump_od=opts.min_jump_od, split=opts.split, baseline_degree=opts.baseline_degree,
    )  # fmt: skip
    record = {
        "i0_model": i0_model,
        "noise": opts.noise or "run",
        "noise_model": noise.as_dict(),
        "references": references,
        "element": element,
        "edge_ev": edge,
        "energy_index": keep.tolist(),
        "options": opts.as_dict(),
    }
    return pipeline, record


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
    """Absorbance of one tile read back from the detector files, on the energies ``energy_index`` (a
    ``StackSource``): only the rows asked for are read, corrected by :func:`~xbeam_bluesky.spectra.correct_frame`
    with the run's mean dark and flats."""

    def __init__(
        self,
        frames: dict[int, _Frame],
        energy_index: Sequence[int],
        shape: tuple[int, int],
        dark: np.ndarray | float,
        flats: dict[int, np.ndarray],
    ) -> None:
        self.frames, self.energy_index = frames, list(energy_index)
        self._shape = (len(self.energy_index), *shape)
        self.dark, self.flats = dark, flats

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        out = np.empty((self._shape[0], y1 - y0, self._shape[2]), np.float32)
        dark = self.dark[y0:y1] if np.ndim(self.dark) else self.dark
        for k, ie in enumerate(self.energy_index):
            out[k] = correct_frame(_read_frame(self.frames[ie], (y0, y1)), self.flats[ie][y0:y1], dark)
        return out


def _read_frame(frame: _Frame, rows: tuple[int, int] | None = None) -> np.ndarray:
    """One frame (or its rows ``y0:y1``) from the detector's HDF5 file, opened SWMR."""
    with h5py.File(frame.path, "r", swmr=True) as f:
        data = f[frame.dataset]
        data.refresh()
        if frame.index >= data.shape[0]:
            raise ValueError(f"frame {frame.index} not yet in {frame.path} ({data.shape[0]} written)")
        if rows is not None and data.ndim == 3:  # (frames, y, x): read the rows only
            return np.asarray(data[frame.index, rows[0] : rows[1]])
        image = np.asarray(data[frame.index]).reshape(data.shape[-2:])
        return image if rows is None else image[rows[0] : rows[1]]


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
        Reference names seeding and naming the sites (default: the start document's ``clustering.references``,
        else :data:`DEFAULT_REFERENCES`).
    n_draws, mu_offset, edge_jump
        Random three-site mixtures and the sample's expected absorbance below the edge and edge jump (μt) of the
        library sites that make the provisional maps.
    noise, i0, denoise, discover, window, min_count, element, min_jump_od, split, baseline_degree, memory_mb
        The final clustering, as :class:`ClusteringOptions` (the options of ``xbeam cluster RUN``).
    queue_size
        Frames that may wait for the worker; beyond that a frame is recorded as dropped (with a warning).
    lag_warning_s
        Log a warning when the oldest waiting frame is older than this (s).
    provisional_every
        Refresh a tile's provisional map after this many of its frames (and publish it to tiled).
    publish_provisional
        Write the provisional maps to tiled (result kind ``"clustering_provisional"``, one array ``tile_<t>`` per
        tile, overwritten in place) so that a client can read them while the run goes.
    on_provisional
        Called as ``on_provisional(tile_index, labels, n_energies_received)`` from the worker thread, after the
        map was published.
    n_threads
        Threads per tile assigner and of the final clustering.
    single_run
        The worker thread ends after the first run (for per-run factories such as :func:`live_clustering`).

    Attributes
    ----------
    options
        The :class:`ClusteringOptions` of the final clustering.
    provisional
        Latest provisional label map per tile of the current run.
    results
        Run uid → :class:`~xbeam_bluesky.clustering.ClusterResult` of finished runs.
    frame_errors
        Run uid → messages for frames that could not be used (each names the run, sequence number, energy
        and tile).
    i0_models
        Run uid → the incident-count model of the noise (``source``: ``"flats"``,
        ``"noise_model_per_energy"``, ``"i0_scaled_by_dwell"``, ``"i0"`` or ``"i0 option"``; ``i0_counts`` used;
        the flat-field counts per energy measured), also written to the result metadata as ``i0_model``.
    records
        Run uid → the record of :func:`run_pipeline` (noise model, references, element, energies, options).
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
        noise: str | None = None,
        i0: float | Sequence[float] | None = None,
        denoise: bool = True,
        discover: bool = True,
        window: int = 5,
        min_count: int = 23,
        element: str | None = None,
        min_jump_od: float = 0.0,
        split: bool = False,
        baseline_degree: int = 1,
        memory_mb: float = 256.0,
        queue_size: int = 10_000,
        lag_warning_s: float = 5.0,
        provisional_every: int = 10,
        publish_provisional: bool = True,
        on_provisional: Callable[[int, np.ndarray, int], None] | None = None,
        n_threads: int = 2,
        single_run: bool = False,
    ) -> None:
        super().__init__()
        self.client = client
        self.library_dir = library_dir
        self.references = tuple(references) if references else None
        self.site_options = {"n_draws": n_draws, "mu_offset": mu_offset, "edge_jump": edge_jump}
        self.options = ClusteringOptions(
            references=self.references, noise=noise, i0=i0, denoise=denoise, discover=discover, window=window,
            min_count=min_count, element=element, min_jump_od=min_jump_od, split=split,
            baseline_degree=baseline_degree, memory_mb=memory_mb,
        )  # fmt: skip
        self.lag_warning_s = lag_warning_s
        self.provisional_every = max(1, provisional_every)
        self.publish_provisional = publish_provisional
        self.on_provisional = on_provisional
        self.n_threads = n_threads
        self.provisional: dict[int, np.ndarray] = {}
        self.results: dict[str, ClusterResult] = {}
        self.frame_errors: dict[str, list[str]] = {}
        self.i0_models: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.queue_size = queue_size
        self.single_run = single_run
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._reset()

    @property
    def window(self) -> int:
        """Denoising seed window (pixels) of the final clustering."""
        return self.options.window

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
                    state = self._begin_or_refusal(item[1])
                elif kind == "frame" and "sites" in state:
                    self._frame(state, item[1])
                elif kind == "stop" and state:
                    if "sites" in state:
                        self._finish(state, item[1], item[2])
                    else:  # refused at its start: the record says why
                        self._write_failure(state, item[1], state["error"])
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

    def _begin_or_refusal(self, start: dict) -> dict[str, Any]:
        """The run's state from :meth:`_begin`; for a run that cannot be clustered (e.g. fewer than 3 energies,
        no incident counts, unknown references) a state without ``sites`` holding the reason, so its frames are
        skipped and its stop writes a ``status="failed"`` record."""
        try:
            return self._begin(start)
        except Exception as exc:
            logger.warning("live clustering cannot cluster run %s: %s", start.get("uid"), exc)
            return {"start": start, "error": f"{type(exc).__name__}: {exc}", "errors": [], "max_lag_s": 0.0,
                    "max_lag_frames": 0}  # fmt: skip

    def _begin(self, start: dict) -> dict[str, Any]:
        md = start.get("clustering", {}) or {}
        energies = np.asarray(start["energies"], dtype=float)
        if energies.size < 3:
            raise ClusteringInputError(
                f"run {start.get('uid')}: {energies.size} energies; the clustering needs at least 3"
            )
        tiles = np.asarray(start["tiles"]["positions"], dtype=float).reshape(-1, 2)
        state: dict[str, Any] = {
            "start": start, "energies": energies, "tiles": tiles, "pixel_um": start["tiles"].get("pixel_size_um"),
            "dark_mean": FrameMean(), "flat_means": {}, "flats": {}, "waiting": [], "assigners": {}, "frames": {},
            "counts": {}, "errors": [], "max_lag_s": 0.0, "max_lag_frames": 0, "error": None,
            "provisional_node": None, "provisional_tiles": {}, "provisional_errors": 0,
        }  # fmt: skip
        i0, _ = run_incident_counts(start)
        references = list(self.references or md.get("references") or DEFAULT_REFERENCES)
        lib = aligned_library(load_library(self.library_dir), energies)
        missing = sorted(set(references) - set(lib.names))
        if missing:
            raise ClusteringInputError(
                f"run {start['uid']}: references {missing} not in the library (or not covering it)"
            )
        refs = np.vstack([lib.matrix[lib.names.index(n)] for n in references])
        opts = {**self.site_options, **{k: md[k] for k in ("n_draws", "mu_offset", "edge_jump") if k in md}}
        # the provisional maps: library sites with the run's recorded noise (the final map is the pipeline's)
        state["sites"] = sites_from_library(
            energies, refs, references, i0_counts=i0, noise=run_noise_model(start), **opts
        )
        return state

    def _frame(self, state: dict[str, Any], frame: _Frame) -> None:
        lag_s = time.monotonic() - frame.queued_at
        state["max_lag_s"] = max(state["max_lag_s"], lag_s)
        state["max_lag_frames"] = max(state["max_lag_frames"], self._queue.qsize())
        if lag_s > self.lag_warning_s:
            logger.warning(
                "live clustering of run %s is %.1f s (%d frames) behind", state["start"]["uid"], lag_s,
                self._queue.qsize(),
            )  # fmt: skip
        counts = _read_frame(frame)
        if frame.stream == "dark":
            state["dark_mean"].add(counts)
            return
        if frame.stream == "flat":
            acc = state["flat_means"].setdefault(frame.energy_index, FrameMean())
            acc.add(counts)
            state["flats"][frame.energy_index] = acc.mean()
            waiting, state["waiting"] = state["waiting"], []
            for f in waiting:
                self._primary(state, f, _read_frame(f))
            return
        self._primary(state, frame, counts)

    def _primary(self, state: dict[str, Any], frame: _Frame, counts: np.ndarray) -> None:
        uid = state["start"]["uid"]
        if "dark" not in state:  # the darks come first: their mean is fixed at the first sample frame
            state["dark"] = state["dark_mean"].mean() if state["dark_mean"].n else 0.0
        if frame.energy_index not in state["flats"]:
            state["waiting"].append(frame)  # its flat has not arrived yet
            return
        tile = frame.tile_index
        if not 0 <= tile < len(state["tiles"]) or not 0 <= frame.energy_index < len(state["energies"]):
            state["errors"].append(f"run {uid} frame seq_num {frame.seq_num}: tile {tile} / energy "
                                   f"{frame.energy_index} outside the start document's lists")  # fmt: skip
            return
        try:
            if np.ndim(state["dark"]) and counts.shape != state["dark"].shape:
                raise ValueError(f"shape {counts.shape}, expected {state['dark'].shape}")
            if counts.shape != state["flats"][frame.energy_index].shape:
                raise ValueError(f"shape {counts.shape}, expected {state['flats'][frame.energy_index].shape}")
            assigner = state["assigners"].get(tile)
            if assigner is None:
                assigner = StreamingAssigner(
                    state["sites"], counts.shape, buffer_frames=8, n_threads=self.n_threads
                )
                state["assigners"][tile] = assigner
                state["frames"][tile] = {}
            mu = correct_frame(counts, state["flats"][frame.energy_index], state["dark"])
            assigner.update(mu, frame.energy_index)
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
            self._publish_provisional(state, tile, labels, n)
            if self.on_provisional is not None:
                self.on_provisional(tile, labels, n)

    def _publish_provisional(self, state: dict[str, Any], tile: int, labels: np.ndarray, n: int) -> None:
        """Write (or overwrite in place) the provisional map of one tile in tiled; a failure is logged and counted,
        never raised (the final map does not depend on it)."""
        if self.client is None or not self.publish_provisional:
            return
        key = f"tile_{tile}"
        small = labels.astype(np.uint16)  # ≤ 65535 clusters: a quarter of int64, half of int32
        try:
            node = state["provisional_node"]
            state["provisional_tiles"][str(tile)] = n
            md = {"status": "running", "cluster_names": list(state["sites"].cluster_names),
                  "energies_received": dict(state["provisional_tiles"]), "n_energies": len(state["energies"]),
                  "note": "provisional labels per tile (library sites, no denoising); the final map is the "
                          "result of kind 'clustering'"}  # fmt: skip
            if node is None:
                uid = write_analysis_result(
                    self.client, state["start"]["uid"], PROVISIONAL_KIND, {key: small}, md
                )
                state["provisional_node"] = self.client[ANALYSIS_CONTAINER][uid]
                return
            if key in node:
                node[key].write(small)
            else:
                node.write_array(small, key=key)
            node.update_metadata(metadata={**node.metadata, **md})
        except Exception:
            state["provisional_errors"] += 1
            logger.exception("live clustering could not publish the provisional map of tile %d", tile)

    def _finish(self, state: dict[str, Any], stop: dict, dropped: list[str]) -> None:
        uid = state["start"]["uid"]
        for f in state["waiting"]:
            state["errors"].append(
                f"run {uid} frame seq_num {f.seq_num}: no flat for energy {f.energy_index}"
            )
        self.frame_errors[uid] = list(state["errors"])
        for assigner in state["assigners"].values():
            assigner.close()
        if not state["assigners"]:
            raise ClusteringInputError(f"run {uid}: no primary frame could be clustered")
        tiles = sorted(state["assigners"])
        n = len(state["energies"])
        common = [ie for ie in range(n) if all(ie in state["frames"][t] for t in tiles)]
        if len(common) < n:
            logger.warning("live clustering of run %s: energies %s are missing in some tile; the map uses the %d "
                           "energies every tile has", uid, sorted(set(range(n)) - set(common)), len(common))  # fmt: skip
        shape = next(iter(state["flats"].values())).shape
        sources = [
            _RunFrames(state["frames"][t], common, shape, state["dark"], state["flats"]) for t in tiles
        ]
        pipeline, record = run_pipeline(
            state["start"], sources, common, state["flats"], state["dark"], library_dir=self.library_dir,
            options=self.options,
        )  # fmt: skip
        state["record"], state["i0_model"] = record, record["i0_model"]
        result = pipeline.cluster(sources, centers_mm=[tuple(state["tiles"][t]) for t in tiles],
                                  pixel_um=state["pixel_um"], n_threads=self.n_threads)  # fmt: skip
        self.results[uid] = result
        self.i0_models[uid] = record["i0_model"]
        self.records[uid] = record
        final_uid = self._write(state, stop, result, dropped)
        node = state["provisional_node"]
        if node is not None:
            try:
                node.update_metadata(
                    metadata={**node.metadata, "status": "final", "final_result_uid": final_uid}
                )
            except Exception:
                logger.exception("live clustering could not mark the provisional maps of run %s final", uid)

    def _metadata(self, state: dict[str, Any], stop: dict, dropped: list[str]) -> dict[str, Any]:
        record = state.get("record") or {}
        return {
            "status": "success",
            "exit_status": stop.get("exit_status"),
            "dropped_frames": dropped,
            "frame_errors": state["errors"],
            "max_lag_s": round(state["max_lag_s"], 3),
            "max_lag_frames": state["max_lag_frames"],
            "provisional_publish_errors": state.get("provisional_errors", 0),
            "i0_model": state.get("i0_model"),
            "noise": record.get("noise"),
            "noise_model": record.get("noise_model"),
            "references": record.get("references"),
            "element": record.get("element"),
            "energy_index": record.get("energy_index"),
            "parameters": {**self.site_options, **self.options.as_dict()},
        }

    def _write(
        self, state: dict[str, Any], stop: dict, result: ClusterResult, dropped: list[str]
    ) -> str | None:
        if self.client is None:
            return None
        summary = result.summary()
        energies = np.asarray(result.sites.energies, dtype=float)
        arrays = {
            "labels": result.labels,
            "raw_labels": result.raw_labels,
            "confidence": result.confidence,
            "novel": result.novel.astype(np.uint8),
            "masked": result.masked.astype(np.uint8),
            "spectra": np.nan_to_num(result.spectra, nan=0.0),
            "energies": energies,
            "fractions": np.asarray(result.fractions["fractions"]),
        }
        metadata = {
            **self._metadata(state, stop, dropped),
            "summary": summary,
            "cluster_names": list(result.sites.cluster_names),
            "class_names": list(result.class_names),
            "model_error": result.metadata.get("model_error"),
            "mosaic_origin_mm": list(result.mosaic.origin_mm),
            "pixel_size_um": state["pixel_um"],
        }
        return write_analysis_result(self.client, state["start"]["uid"], RESULT_KIND, arrays, metadata,
                                     png=render_png(result, energies, state["start"]["uid"]))  # fmt: skip

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
    lut = np.zeros(len(result.cluster_names) + 1, int)  # the sites' clusters, then classes such as "no Fe"
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
        if c["label"] <= len(result.spectra):  # classes without a site ("no Fe") have no spectrum
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
