"""Live automatic Rietveld refinement: when an XRD run stops, search a refinement strategy and store the fit.

:class:`AutoRietveld` is a ``(name, doc)`` callback. On the stop document of a run with ``purpose="xrd"`` it
queues the run and returns at once; a worker thread then, one run at a time:

1. reads the pattern back from tiled (:func:`xbeam_bluesky.storage.xrd_pattern`), σ = √counts;
2. resolves the CIFs named in the start document's ``phases`` against ``cif_dir`` (default: the bundled
   ``xbeam_bluesky/data/cif``; absolute paths are used as they are);
3. runs the strategy search (:func:`xbeam_bluesky.rietveld.run_search`) in a worker *process*, warm-started
   from the best strategy of the previous run of the same sample (same ``sample`` and phases);
4. writes an analysis result of kind ``"rietveld"`` linked to the raw run: arrays ``two_theta``,
   ``observed``, ``calculated``, ``difference``, ``background``; metadata with the refined parameters and
   esds, R values, the strategy and the search report; the fit plot as PNG.

In-situ series: a run whose start document holds ``series`` (any name; ``series_value``, e.g. the
temperature, is recorded too) is refined like this only when it is the first of its series (same
``series`` and phases). Each later run of the series is one refinement with the series' best strategy,
started from the previous run's refined model, and its result names the previous result
(``series_previous_result``, ``series_previous_run``, ``series_index``). A run whose Rwp exceeds
``series_degrade_factor`` × the previous run's (or whose refinement fails) is searched afresh, and the
series continues from it.

Every failure — a CIF missing or unreadable, a run without a pattern, every trial invalid, a crashed worker —
becomes a result record with ``status="failed"`` and the reason, and is logged. The RunEngine never waits for
the refinement and never sees an exception; the raw run is never modified.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import queue
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xbeam_bluesky._procs import exit_with_creator, pool_initargs
from xbeam_bluesky.bundled import CIF_DIR
from xbeam_bluesky.documents import json_safe
from xbeam_bluesky.rietveld import Instrument, Pattern, Phase, SearchSettings, load_phase, read_instrument
from xbeam_bluesky.storage import write_analysis_result, xrd_pattern

if TYPE_CHECKING:
    from xbeam_bluesky.callbacks.remote import LiveContext

__all__ = ["AutoRietveld", "auto_rietveld"]

logger = logging.getLogger(__name__)

#: Default directory the CIF names of a run are resolved against.
RESULT_KIND = "rietveld"


class _Failure(Exception):
    """A run that cannot be refined; the message goes into the failure record."""


@dataclass
class _Job:
    start: dict[str, Any]
    stop: dict[str, Any]
    queued_at: float = field(default_factory=time.monotonic)


def _payload(result: Any, title: str) -> dict[str, Any]:
    """What is stored of a refinement: its summary, arrays, fit plot (PNG bytes) and final model."""
    from xbeam_bluesky.rietveld import plot_fit

    with tempfile.TemporaryDirectory() as tmp:
        png = plot_fit(result, Path(tmp) / "fit.png", title=f"{title}: Rwp {result.rwp:.2f} %").read_bytes()
    return {
        "refinement": result.to_dict(),
        "state": result.state,
        "arrays": {
            "two_theta": result.two_theta,
            "observed": result.observed,
            "calculated": result.calculated,
            "difference": result.observed - result.calculated,
            "background": result.background_curve,
        },
        "png": png,
    }


def _series_job(
    pattern: Pattern,
    phases: list[Phase],
    instrument: Instrument,
    fit_range: tuple[float, float] | None,
    strategy: dict[str, Any],
    state: Any,
    title: str,
) -> dict[str, Any]:
    """Worker-process side of a series run: one refinement with the series' strategy from ``state``."""
    from xbeam_bluesky.rietveld import Refinement, Strategy

    result = Refinement(pattern, phases, instrument, fit_range=fit_range).run(
        Strategy.from_dict(strategy), state
    )
    return {"ok": result.ok, "strategy": strategy, **_payload(result, title)}


def _search_job(
    pattern: Pattern,
    phases: list[Phase],
    instrument: Instrument,
    fit_range: tuple[float, float] | None,
    settings: SearchSettings,
    warm_start: list[dict[str, Any]],
    title: str,
) -> dict[str, Any]:
    """Worker-process side: run the search, return what is stored (arrays, metadata, PNG bytes)."""
    from xbeam_bluesky.rietveld import Refinement
    from xbeam_bluesky.rietveld.search import search_and_package

    packaged = search_and_package(
        Refinement(pattern, phases, instrument, fit_range=fit_range), settings=settings, warm_start=warm_start
    )
    if not packaged.ok:
        return {"ok": False, "search": packaged.summary, "failure": packaged.failure}
    search = packaged.search
    return {
        "ok": True,
        "search": packaged.summary,
        "strategy": packaged.strategy,
        "best_params": dict(search.best.params),
        **_payload(search.best_result, title),
    }


class AutoRietveld:
    """Refine every XRD run automatically when it stops (see the module docstring).

    Parameters
    ----------
    client
        tiled container holding the runs and receiving the results (``Storage.client``).
    cif_dir
        Directory the CIF names in a run's ``phases`` are resolved against (default: bundled CIFs).
    instrument
        Instrument parameters (an :class:`~xbeam_bluesky.rietveld.Instrument` or a .PRM/.instprm path);
        default lab Cu Kα, as the simulated diffractometer.
    settings
        Search budget and parallelism (default: 40 trials, one process, seed 0).
    fit_range
        2θ range (deg) of the final fit; default the whole pattern.
    fetch_timeout_s
        How long to wait for the run to be complete in tiled (when documents arrive through a proxy, tiled
        may lag behind).
    series_degrade_factor
        A warm-started run of a series whose Rwp exceeds this factor × the previous run's is searched afresh.
    """

    def __init__(
        self,
        client: Any,
        *,
        cif_dir: str | Path | None = None,
        instrument: Instrument | str | Path | None = None,
        settings: SearchSettings | None = None,
        fit_range: tuple[float, float] | None = None,
        fetch_timeout_s: float = 30.0,
        series_degrade_factor: float = 1.3,
    ) -> None:
        if client is None:
            raise ValueError(
                "AutoRietveld: client is None; expected the tiled container results are written to"
            )
        self.client = client
        self.cif_dir = Path(cif_dir) if cif_dir is not None else CIF_DIR
        if isinstance(instrument, str | Path):
            instrument = read_instrument(instrument)
        self.instrument = instrument or Instrument.lab_cu_ka()
        self.settings = settings or SearchSettings(n_trials=40, n_jobs=1)
        self.fit_range = fit_range
        self.fetch_timeout_s = float(fetch_timeout_s)
        if not series_degrade_factor > 1.0:
            raise ValueError(
                f"AutoRietveld: series_degrade_factor {series_degrade_factor!r}: expected a factor > 1"
            )
        self.series_degrade_factor = float(series_degrade_factor)
        #: per (series, phases): the last run's uid, result uid, Rwp, strategy, refined model and index
        self._series: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        #: (run uid, result uid, status) of every run handled, in order.
        self.handled: list[tuple[str, str | None, str]] = []
        self._starts: dict[str, dict[str, Any]] = {}
        self._best_by_sample: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pool: ProcessPoolExecutor | None = None
        self._thread = threading.Thread(target=self._work, name="auto-rietveld", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ document side (RunEngine thread)
    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Receive a document; never raises, never blocks."""
        try:
            if name == "start" and doc.get("purpose") == "xrd":
                self._starts[doc["uid"]] = doc
            elif name == "stop":
                start = self._starts.pop(doc.get("run_start", ""), None)
                if start is not None:
                    self._queue.put(_Job(start, doc))
                    logger.info(
                        "auto-rietveld: run %s queued (%d waiting)", start["uid"], self._queue.qsize()
                    )
        except Exception:
            logger.exception("auto-rietveld: could not handle the %r document", name)

    @property
    def pending(self) -> int:
        """Runs queued or being refined."""
        return self._queue.unfinished_tasks

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued run is handled; True if done within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        """Stop the worker thread after the queued runs and shut down the worker process."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._handle(job)
            except Exception:  # the thread must survive anything
                logger.exception("auto-rietveld: unexpected error")
            finally:
                self._queue.task_done()

    def _handle(self, job: _Job) -> None:
        uid = job.start["uid"]
        base = {
            "sample": job.start.get("sample", ""),
            "phases": list(job.start.get("phases", [])),
            "cif_dir": str(self.cif_dir),
            "run_exit_status": job.stop.get("exit_status"),
            "queued_s": time.monotonic() - job.queued_at,
        }
        t0 = time.perf_counter()
        try:
            phases, cif_paths = self._phases(job.start)
            base["cif_paths"] = [str(p) for p in cif_paths]
            pattern = self._pattern(uid)
            key = (str(base["sample"]), tuple(base["phases"]))
            title = str(base["sample"] or uid[:8])
            series = job.start.get("series")
            skey = (str(series), tuple(base["phases"])) if series is not None else None
            out = self._series_run(skey, job.start, pattern, phases, title, base) if skey else None
            if out is None:
                warm = [self._best_by_sample[key]] if key in self._best_by_sample else []
                base["warm_start"] = bool(warm)
                args = (pattern, phases, self.instrument, self.fit_range, self.settings, warm, title)
                out = self._run_in_worker(_search_job, args)
        except _Failure as exc:
            self._fail(uid, str(exc), base)
            return
        if "search" not in out:  # a warm-started run of a series
            self._store(uid, out, base, t0, skey)
            return
        base["search"] = out["search"]
        if not out["ok"]:
            self._fail(uid, out["failure"], base)
            return
        self._best_by_sample[key] = out["best_params"]
        if skey is not None:
            base.setdefault("series_index", 0)
        ref = out["refinement"]
        metadata = {
            **base,
            "status": "success",
            "rwp": ref["rwp"],
            "rp": ref["rp"],
            "gof": ref["gof"],
            "refinement": ref,
            "strategy": out["strategy"],
            "n_trials": out["search"]["n_trials"],
            "n_failed": out["search"]["n_failed"],
            "local_minimum_suspected": out["search"]["local_minimum_suspected"],
            "wall_s": time.perf_counter() - t0,
        }
        result_uid = self._write_success(uid, out, metadata)
        if skey is not None:
            self._remember_series(skey, uid, result_uid, out, base["series_index"])
        logger.info(
            "auto-rietveld: run %s refined, Rwp %.2f %% after %d trials (%d invalid)%s; result %s",
            uid,
            ref["rwp"],
            metadata["n_trials"],
            metadata["n_failed"],
            ", warm start" if base["warm_start"] else "",
            result_uid,
        )

    def _series_run(
        self,
        skey: tuple[str, tuple[str, ...]],
        start: dict[str, Any],
        pattern: Pattern,
        phases: list[Phase],
        title: str,
        base: dict[str, Any],
    ) -> dict[str, Any] | None:
        """A later run of a series: one warm-started refinement; None (search instead) for the first run or
        when the fit degraded beyond the limit."""
        base["series"] = skey[0]
        base["series_value"] = start.get("series_value")
        prev = self._series.get(skey)
        if prev is None:
            return None
        base.update(
            series_index=prev["index"] + 1,
            series_previous_run=prev["run"],
            series_previous_result=prev["result"],
        )
        args = (pattern, phases, self.instrument, self.fit_range, prev["strategy"], prev["state"], title)
        out = self._run_in_worker(_series_job, args)
        rwp = out["refinement"]["rwp"]
        limit = self.series_degrade_factor * prev["rwp"]
        if out["ok"] and math.isfinite(rwp) and rwp <= limit:
            return out
        base["series_restart"] = (
            f"warm start {out['refinement']['status']}, Rwp {rwp:.2f} % > {self.series_degrade_factor:g} × "
            f"{prev['rwp']:.2f} %: strategy searched afresh"
        )
        return None

    def _store(
        self,
        uid: str,
        out: dict[str, Any],
        base: dict[str, Any],
        t0: float,
        skey: tuple[str, tuple[str, ...]],
    ) -> None:
        """Write the result of a warm-started series run and remember it for the next run of the series."""
        ref = out["refinement"]
        metadata = {
            **base,
            "status": "success",
            "warm_start": True,
            "rwp": ref["rwp"],
            "rp": ref["rp"],
            "gof": ref["gof"],
            "refinement": ref,
            "strategy": out["strategy"],
            "wall_s": time.perf_counter() - t0,
        }
        result_uid = self._write_success(uid, out, metadata)
        self._remember_series(skey, uid, result_uid, out, base["series_index"])
        logger.info(
            "auto-rietveld: run %s (series %s #%d) refined from run %s, Rwp %.2f %%; result %s",
            uid,
            skey[0],
            base["series_index"],
            base["series_previous_run"],
            ref["rwp"],
            result_uid,
        )

    def _remember_series(
        self, skey: tuple[str, tuple[str, ...]], uid: str, result_uid: str, out: dict[str, Any], index: int
    ) -> None:
        self._series[skey] = {
            "run": uid,
            "result": result_uid,
            "rwp": out["refinement"]["rwp"],
            "strategy": out["strategy"],
            "state": out["state"],
            "index": index,
        }

    def _fail(self, uid: str, reason: str, base: dict[str, Any]) -> None:
        logger.error("auto-rietveld: run %s not refined: %s", uid, reason)
        try:
            result_uid = write_analysis_result(
                self.client,
                uid,
                RESULT_KIND,
                {},
                json_safe({**base, "status": "failed", "error": reason}, nonfinite_to_none=True),
            )
        except Exception:
            logger.exception("auto-rietveld: could not store the failure record of run %s", uid)
            result_uid = None
        self.handled.append((uid, result_uid, "failed"))

    def _phases(self, start: dict[str, Any]) -> tuple[list[Phase], list[Path]]:
        names = start.get("phases")
        if not names or isinstance(names, str):
            raise _Failure(
                f"the run's start document names no phases (phases = {names!r}); expected CIF names"
            )
        phases, paths = [], []
        for name in names:
            path = Path(str(name))
            if not path.is_absolute():
                path = self.cif_dir / path
            if not path.is_file():
                available = (
                    sorted(p.name for p in self.cif_dir.glob("*.cif")) if self.cif_dir.is_dir() else []
                )
                raise _Failure(
                    f"CIF {name!r} named in the run metadata not found in {self.cif_dir} (available: {available})"
                )
            try:
                phases.append(load_phase(path))
            except (ValueError, OSError) as exc:
                raise _Failure(f"CIF {name!r} ({path}) is unreadable: {exc}") from exc
            paths.append(path)
        return phases, paths

    def _pattern(self, uid: str) -> Pattern:
        deadline = time.monotonic() + self.fetch_timeout_s
        while True:
            try:
                run = self.client[uid]
                if run.metadata.get("stop") is not None:
                    break
            except KeyError:
                pass
            if time.monotonic() > deadline:
                raise _Failure(f"run {uid} is not complete in tiled after {self.fetch_timeout_s:.0f} s")
            time.sleep(0.2)
        try:
            xrd = xrd_pattern(run)
        except (KeyError, ValueError, IndexError) as exc:
            raise _Failure(f"no powder pattern in run {uid}: {exc!r}") from exc
        counts = np.asarray(xrd.counts, dtype=float)
        if counts.size == 0 or not np.any(counts > 0):
            raise _Failure(f"no powder pattern in run {uid}: the counts are empty or all zero")
        try:
            return Pattern(xrd.two_theta_deg, counts, np.sqrt(np.maximum(counts, 1.0)), source=f"run {uid}")
        except ValueError as exc:
            raise _Failure(f"the powder pattern of run {uid} is not usable: {exc}") from exc

    def _run_in_worker(self, job: Any, args: tuple[Any, ...]) -> dict[str, Any]:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=ctx, initializer=exit_with_creator, initargs=pool_initargs()
            )
        try:
            return self._pool.submit(job, *args).result()
        except BrokenProcessPool as exc:
            self._pool = None
            raise _Failure(f"the refinement worker process died ({exc})") from exc
        except Exception as exc:  # whatever the search raised becomes the failure record
            raise _Failure(f"the refinement failed: {type(exc).__name__}: {exc}") from exc

    def _write_success(self, uid: str, out: dict[str, Any], metadata: dict[str, Any]) -> str:
        """Write a refined run's arrays, fit plot and metadata to tiled, linked to run ``uid``; the result's uid."""
        result_uid = write_analysis_result(
            self.client,
            uid,
            RESULT_KIND,
            out["arrays"],
            json_safe(metadata, nonfinite_to_none=True),
            png=out["png"],
        )
        self.handled.append((uid, result_uid, "success"))
        return result_uid


def auto_rietveld(context: LiveContext) -> AutoRietveld:
    """Live-analysis factory (:data:`xbeam_bluesky.callbacks.remote.LIVE_ANALYSES`): one
    :class:`AutoRietveld` per context (:meth:`LiveContext.shared`), so runs queue behind each other and
    warm-start from each other.

    ``context.options["rietveld"]`` may hold ``cif_dir``, ``instrument`` (path), ``fit_range``,
    ``fetch_timeout_s`` and the :class:`~xbeam_bluesky.rietveld.SearchSettings` fields ``n_trials``,
    ``n_jobs``, ``seed``, ``timeout_s``.
    """

    def make() -> AutoRietveld:
        opts = dict(context.options.get("rietveld", {}))
        search_keys = ("n_trials", "n_jobs", "seed", "timeout_s")
        settings = replace(
            SearchSettings(n_trials=40, n_jobs=1), **{k: opts.pop(k) for k in search_keys if k in opts}
        )
        if "fit_range" in opts and opts["fit_range"] is not None:
            opts["fit_range"] = tuple(opts["fit_range"])
        return AutoRietveld(context.results, settings=settings, **opts)

    return context.shared("auto_rietveld", make)
