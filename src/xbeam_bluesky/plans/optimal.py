"""``optimal_xanes_imaging``: design the energies and the tiles at plan start, then run ``xanes_imaging``."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import numpy as np
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator

from xbeam_bluesky.documents import n_tiles, start_tile_positions
from xbeam_bluesky.errors import PlanArgumentError
from xbeam_bluesky.planning import (
    DEFAULT_MODEL_ERROR,
    DEFAULT_SEPARATION_MODEL_ERROR,
    DEFAULT_TARGET_SEPARATION,
    EnergyDesign,
    MapDesign,
    PhaseCandidates,
    ScanTimeModel,
    TransmissionNoise,
    candidate_grid,
    default_range,
    design_energies,
    design_map_energies,
    load_design,
    measured_units,
    phase_candidates,
    plan_tiles,
    prior_from_library,
    second_pass_candidates,
)
from xbeam_bluesky.plans.duration import estimate_duration
from xbeam_bluesky.plans.metadata import check_user_md
from xbeam_bluesky.plans.xanes_imaging import max_unsaturated_exposure_s, xanes_imaging
from xbeam_bluesky.protocols import (
    FrameTimed,
    HasLimits,
    ImagingCamera,
    NoiseReporting,
    SampleStage,
    ScanningMonochromator,
    TimedStage,
    XYStage,
    name_of,
)
from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, edge_energy, load_library

logger = logging.getLogger(__name__)

#: Points kept of the expected-error curve in the start document.
CURVE_POINTS_IN_START = 200
#: Weakest phase pairs of a map design kept in the start document.
PAIRS_IN_START = 100
#: Picks used when no stopping rule is given.
DEFAULT_N_POINTS = 100


def _candidate_grid(e0: float, e_range: Sequence[float] | None) -> np.ndarray:
    start, stop, step = default_range(e0) if e_range is None else (float(v) for v in e_range)
    if not (step > 0 and stop > start):
        raise PlanArgumentError(
            f"e_range = {e_range!r}; expected [start, stop, step] in eV with start < stop, step > 0"
        )
    return candidate_grid(start, stop, step)


def _darks_reserve_s(camera: Readable, n_darks: int, dwell: float) -> float:
    """Time (s) the budget keeps for the darks: they are exposed like the run's first frame, which the design
    decides; reserved at the camera's longest unsaturated exposure (no frame is longer), else the dwell unit."""
    longest = max_unsaturated_exposure_s(camera)
    exposure = dwell if longest is None else max(float(longest), dwell)
    return n_darks * (exposure + (float(camera.readout_s) if isinstance(camera, FrameTimed) else 0.0))


def _stage_time_per_energy(stage: Any, tiles: list[list[float]], flat_xy: Sequence[float] | None) -> float:
    """Stage motion (s) of one energy of ``xanes_imaging(order="energy")``: flat position, then every tile."""
    if not isinstance(stage, TimedStage):
        return 0.0
    path = ([list(flat_xy)] if flat_xy is not None else []) + tiles
    if flat_xy is not None:
        path.append(list(flat_xy))
    return float(sum(stage.move_time_s(tuple(a), tuple(b)) for a, b in itertools.pairwise(path)))


def _library_candidates(
    library: str | None, grid: np.ndarray, e0: float, phases: Sequence[str] | None, model_error: float
) -> PhaseCandidates:
    """The library's spectra on the candidate grid (only ``phases`` if given), grouped into phases."""
    aligned = aligned_library(load_library(library), grid, e0_ref=e0)
    names, matrix = list(aligned.names), aligned.matrix
    if phases is not None:
        missing = [p for p in phases if p not in names]
        if missing:
            raise PlanArgumentError(
                f"phases: {', '.join(missing)} not in the library {library or 'bundled Fe-K'} "
                f"(spectra covering {grid[0]:.1f}-{grid[-1]:.1f} eV: {', '.join(names)})"
            )
        matrix = matrix[[names.index(p) for p in phases]]
        names = list(phases)
    return phase_candidates(matrix, names, model_error=model_error)


def design_pairs(design: EnergyDesign | MapDesign | dict[str, Any]) -> list[dict[str, Any]]:
    """The phase pairs of a map design (empty for a spectrum design)."""
    return list((design if isinstance(design, dict) else design.to_dict()).get("pairs", []))


def _start_record(design: EnergyDesign | MapDesign | dict[str, Any]) -> dict[str, Any]:
    """The design as stored in the start document (error curve thinned, pick order dropped)."""
    record = dict(design if isinstance(design, dict) else design.to_dict())
    record.pop("pick_order_eV", None)
    curve = record.get("curve")
    if isinstance(curve, dict) and len(curve.get("time_s", [])) > CURVE_POINTS_IN_START:
        keep = np.unique(np.linspace(0, len(curve["time_s"]) - 1, CURVE_POINTS_IN_START).astype(int))
        record["curve"] = {k: [v[i] for i in keep] for k, v in curve.items()}
    if len(record.get("pairs", [])) > PAIRS_IN_START:
        record["pairs"] = record["pairs"][:PAIRS_IN_START]
        record["pairs_note"] = f"the {PAIRS_IN_START} weakest phase pairs of {len(design_pairs(design))}"
    return record


def optimal_xanes_imaging(
    camera: Readable,
    mono: Movable,
    stage: Readable,
    x_mm: Sequence[float] | None = None,
    y_mm: Sequence[float] | None = None,
    *,
    polygon_mm: Sequence[Sequence[float]] | None = None,
    tiles: Sequence[Sequence[float]] | None = None,
    design: str | dict | None = None,
    library: str | None = None,
    edge: str = "Fe-K",
    e_range: Sequence[float] | None = None,
    criterion: str = "A",
    objective: str = "spectrum",
    phases: Sequence[str] | None = None,
    target_separation: float | None = None,
    thickness: Sequence[float] = (1.0,),
    model_error: float = DEFAULT_MODEL_ERROR,
    model_error_rms: float = DEFAULT_SEPARATION_MODEL_ERROR,
    keep_ends: bool = True,
    n_points: int | None = None,
    time_budget_s: float | None = None,
    target_rmse: float | None = None,
    dwell: float = 0.05,
    mu_t_pre_edge: float = 0.5,
    edge_jump: float = 1.0,
    length_scale_eV: float | None = None,
    kernel: str = "warped",
    overlap: float | None = None,
    repeatability_um: float = 1.0,
    shutter: Movable | None = None,
    n_darks: int = 5,
    n_flats: int = 2,
    flat_position: Sequence[float] | None = None,
    adaptive: bool = False,
    first_pass_fraction: float = 0.3,
    results_client: Any = None,
    results_timeout_s: float = 600.0,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """XANES imaging at Bayesian-optimal energies over tiles covering a sample region.

    At plan start the energies are designed from a reference library (or read from a saved design) and the
    region is tiled from the camera's field of view; then :func:`xanes_imaging` runs with them and the design's
    per-energy dwell: a point the design picked ``k`` times is measured as one exposure of ``k × dwell`` at that
    energy (on every tile, with its flats). The start document's ``design`` field holds the full design
    record: library, prior (length scale, size), noise model, time model, criterion, expected error and its
    curve, compute time; ``time_estimate`` the run time estimated from the plan's messages before it starts
    (:func:`~xbeam_bluesky.plans.estimate_duration`).

    Parameters
    ----------
    camera : Readable
        Area detector (sim or real), with ``frame_shape``/``pixel_um`` for tiling and, optionally,
        ``noise_metadata(exposure_s)`` (gain, offset, ``i0_counts``) for the noise model.
    mono : Movable
        Monochromator energy in eV (``speed_eV_s``/``settle_s`` used for the time cost when present).
    stage : Readable
        Sample stage with ``x``/``y`` axes in mm (their ``limits`` are checked).
    x_mm, y_mm : [float, float], optional
        Rectangle to cover, [start, stop] in mm.
    polygon_mm : list of [float, float], optional
        Polygon to cover instead of the rectangle, mm.
    tiles : list of [float, float], optional
        Explicit tile centres in mm instead of a region; default: one tile at the current stage position.
    design : str or dict, optional
        A saved design (JSON path or dictionary from ``xbeam plan-energies``); skips the design step. Its
        ``dwell_s`` are the exposures per energy.
    library : str, optional
        Reference-library directory; default the bundled library of ``edge``.
    edge : str
        Absorption edge, e.g. ``"Fe-K"``.
    e_range : [float, float, float], optional
        Candidate grid [start, stop, step] in eV; default E0 − 35.8 to E0 + 69.2 eV in 0.1 eV steps.
    criterion : {"A", "D"}
        A-optimal (expected squared error) or D-optimal (information gain), per unit of beam time.
    objective : {"spectrum", "map"}
        ``"spectrum"``: the A-/D-optimal reconstruction design; ``"map"``: energies and dwell that separate the
        library's phases in the clustering's D per second (:func:`~xbeam_bluesky.planning.design_map_energies`).
    phases : list of str, optional
        Map objective: library spectra the map must tell apart (default all).
    target_separation : float, optional
        Map objective: stop when every phase pair reaches this D (default 3.719, the clustering's merge
        threshold, when no other stopping rule is given); with ``time_budget_s`` the run is refused if the budget
        cannot reach it (the error names the pair and the time it needs).
    thickness : list of float
        Map objective: thickness factors on the absorbance the pairs must be separated at, e.g. ``[0.5, 2]``.
    model_error : float
        Map objective: library spectra closer than this RMS (normalized units) are one phase.
    model_error_rms : float
        Map objective: model error ε of the design's D as a fraction of the spectrum's RMS (the clustering's
        floor 0.02 by default); the adaptive second pass uses the first pass's estimate when it is larger.
    keep_ends : bool
        Map objective: keep the two ends of the candidate grid (``False``: start where the library spectra differ
        and let the design drop the ends, saving monochromator travel). The adaptive first pass always keeps them
        (its cluster spectra are normalized there).
    n_points, time_budget_s, target_rmse : optional
        Stopping rule: picks, total run time in s (incl. flats, tiles and darks), or expected RMSE of the
        normalized spectrum. Default: 100 picks.
    dwell : float
        Dwell unit of the design: the exposure one pick adds at its energy, s.
    mu_t_pre_edge, edge_jump : float
        Expected sample absorbance below the edge and edge step (noise model).
    length_scale_eV : float, optional
        Fix the prior length scale in eV (default: fitted to the library).
    kernel : str
        Prior kernel: ``"warped"`` (default; RBF in a warped energy, warp fitted to the library) or
        ``"stationary"`` (METHODS §1 as published).
    overlap, repeatability_um : float
        Tile overlap fraction (default from the stage repeatability in µm).
    shutter, n_darks, n_flats, flat_position
        Passed to :func:`xanes_imaging`.
    adaptive : bool
        Two passes within ``time_budget_s`` (map objective): a first pass with the library map design for
        ``first_pass_fraction`` of the budget; when it ends, the live clustering's cluster spectra (read back from
        ``results_client``, the tiled container the :class:`~xbeam_bluesky.callbacks.LiveClustering` writes to)
        are reconstructed on the candidate grid and become the candidates of a second design that continues from
        the first pass's dwell for the rest of the budget; the second pass measures its new dwell. The second
        run's start document has ``adaptive`` (first-pass uid, cluster names, both designs' summaries).
        Returns the second run's uid.
    first_pass_fraction : float
        Share of ``time_budget_s`` for the first pass, in (0, 1).
    results_client : tiled container or str, optional
        Where the raw runs and the live clustering results are (``Storage.client``), or the URI of that tiled
        server (JSON-friendly, for the queueserver; an API key in the URI's query or ``TILED_API_KEY``); needed
        with ``adaptive``.
    results_timeout_s : float
        How long to wait for the first pass's clustering result, s.
    md : dict, optional
        Extra start-document metadata.

    Returns
    -------
    str
        The run uid.
    """
    if adaptive:
        return (
            yield from _adaptive_passes(
                camera, mono, stage, x_mm, y_mm, polygon_mm=polygon_mm, tiles=tiles, library=library, edge=edge,
                e_range=e_range, phases=phases, thickness=thickness, model_error=model_error,
                model_error_rms=model_error_rms,
                time_budget_s=time_budget_s, dwell=dwell, mu_t_pre_edge=mu_t_pre_edge, edge_jump=edge_jump,
                overlap=overlap, repeatability_um=repeatability_um, shutter=shutter, n_darks=n_darks,
                n_flats=n_flats, flat_position=flat_position, first_pass_fraction=first_pass_fraction,
                results_client=results_client, results_timeout_s=results_timeout_s, md=md,
            )
        )  # fmt: skip
    started = time.perf_counter()
    e0 = edge_energy(edge)
    if tiles is not None:
        tile_list = [[float(v) for v in t] for t in tiles]
        tile_record: dict[str, Any] = {"source": "explicit", "n_tiles": len(tile_list)}
    elif x_mm is not None or y_mm is not None or polygon_mm is not None:
        if not isinstance(camera, ImagingCamera):
            raise PlanArgumentError(
                f"camera {name_of(camera)!r} has no frame_shape/pixel_um to tile a region with; "
                "pass tiles=[[x, y], ...] in mm instead"
            )
        ny, nx = camera.frame_shape
        axes = {"x": stage.x, "y": stage.y} if isinstance(stage, XYStage) else {}
        limits = {
            axis: tuple(device.limits) for axis, device in axes.items() if isinstance(device, HasLimits)
        }
        tiling = plan_tiles(
            (int(nx), int(ny)),
            float(camera.pixel_um),
            x_mm=None if x_mm is None else (float(x_mm[0]), float(x_mm[1])),
            y_mm=None if y_mm is None else (float(y_mm[0]), float(y_mm[1])),
            polygon_mm=polygon_mm,
            overlap=overlap,
            repeatability_um=repeatability_um,
            stage_limits_mm=limits or None,
        )
        tile_list = tiling.centers_mm.tolist()
        tile_record = {"source": "tiling", **{k: v for k, v in tiling.to_dict().items() if k != "tiles"}}
    else:
        if not isinstance(stage, XYStage):
            raise PlanArgumentError(f"stage = {stage!r} has no x and y axes; expected a sample stage")
        x = yield from bps.rd(stage.x)
        y = yield from bps.rd(stage.y)
        tile_list = [[float(x), float(y)]]
        tile_record = {"source": "current position", "n_tiles": 1}

    if flat_position is not None:
        flat_xy: Sequence[float] | None = flat_position
    else:
        flat_xy = stage.out_position_mm if isinstance(stage, SampleStage) else None
    flat_xy = flat_xy if n_flats else None
    frames_per_entry = len(tile_list) + int(n_flats)
    readout = float(camera.readout_s) if isinstance(camera, FrameTimed) else 0.0
    noise_md: dict[str, float] = camera.noise_metadata(1.0) if isinstance(camera, NoiseReporting) else {}
    longest = max_unsaturated_exposure_s(camera)
    darks_s = _darks_reserve_s(camera, n_darks, dwell)

    if design is not None:
        record = load_design(design)
        source = design if isinstance(design, str) else "dict"
        energies = np.asarray(record["energies_eV"], dtype=float)
        dwells = np.asarray(record["dwell_s"], dtype=float)
        design_record = {**_start_record(record), "source": source}
    else:
        if objective not in ("spectrum", "map"):
            raise PlanArgumentError(f"objective = {objective!r}; expected 'spectrum' or 'map'")
        stops = (n_points, time_budget_s, target_rmse if objective == "spectrum" else target_separation)
        if all(v is None for v in stops):
            if objective == "spectrum":
                n_points = DEFAULT_N_POINTS
            else:
                target_separation = DEFAULT_TARGET_SEPARATION
        grid = _candidate_grid(e0, e_range)
        noise = TransmissionNoise(
            i0_counts_per_s=float(noise_md.get("i0_counts", TransmissionNoise.i0_counts_per_s)),
            mu_t_pre_edge=mu_t_pre_edge,
            edge_jump=edge_jump,
            detector=PhotonNoiseModel(
                gain=float(noise_md.get("gain", PhotonNoiseModel.gain)),
                offset=float(noise_md.get("offset", PhotonNoiseModel.offset)),
            ),
        )
        # A new energy costs the monochromator move and settle, the stage path through the flat position and
        # the tiles, and one readout per frame; a repeat pick lengthens the exposure of those frames_per_entry
        # frames by one dwell unit. An energy whose dwell passes the camera's unsaturated limit is measured as
        # several frames, each with the stage path and readouts again: the map design charges exactly that
        # (max_exposure_s, split_overhead_s: ceil(dwell / limit) − 1 extra tours); the spectrum design charges
        # it pro rata (dwell / limit of a tour per pick). Every cost is divided by frames_per_entry so that the
        # design's dwell unit stays the exposure of one frame.
        stage_s = _stage_time_per_energy(stage, tile_list, flat_xy)
        speed, settle = (
            (mono.speed_eV_s, mono.settle_s) if isinstance(mono, ScanningMonochromator) else (math.inf, 0.0)
        )
        tour_s = stage_s + frames_per_entry * readout
        new_energy_s = float(settle) + tour_s
        exact_splits = objective == "map" and longest is not None
        time_model = ScanTimeModel(
            dwell_s=dwell,
            settle_s=new_energy_s / frames_per_entry,
            speed_eV_per_s=float(speed) * frames_per_entry,
            pick_overhead_s=0.0
            if longest is None or exact_splits
            else tour_s / frames_per_entry * dwell / longest,
            max_exposure_s=longest if exact_splits else math.inf,  # type: ignore[arg-type]
            split_overhead_s=tour_s / frames_per_entry if exact_splits else 0.0,
        )
        budget = None
        if time_budget_s is not None:
            budget = (float(time_budget_s) - darks_s) / frames_per_entry
            shortest = time_model.scan_time_s(grid[[0, -1]], dwell) * frames_per_entry + darks_s
            if float(time_budget_s) < shortest:
                raise PlanArgumentError(
                    f"time_budget_s = {time_budget_s} s is too small for even the two end points on "
                    f"{len(tile_list)} tile(s) with {n_flats} flat(s) and {n_darks} dark(s): {shortest:.1f} s"
                )
        result: EnergyDesign | MapDesign
        if objective == "map":
            result = design_map_energies(
                _library_candidates(library, grid, e0, phases, model_error),
                grid,
                noise,
                time_model,
                thickness=thickness,
                model_error_rms=model_error_rms,
                keep_ends=keep_ends,
                n_points=n_points,
                time_budget_s=budget,
                target_separation=target_separation,
            )
        else:
            prior = prior_from_library(
                library, grid, e0_ref_eV=e0, length_scale_eV=length_scale_eV, kernel=kernel
            )
            result = design_energies(
                prior,
                noise,
                time_model,
                criterion=criterion,  # type: ignore[arg-type]
                n_points=n_points,
                time_budget_s=budget,
                target_rmse=target_rmse,
            )
        energies = result.energies_eV
        dwells = result.dwell_s
        design_record = {
            **_start_record(result),
            "source": "designed at plan start",
            "edge": edge,
            "time_scale_note": (
                f"time_model costs are per frame: each energy is {frames_per_entry} frames "
                f"({len(tile_list)} tiles + {n_flats} flats) of its dwell_s; settle_s holds the mono settle, "
                f"stage path and readouts of a new energy; run time = design time x {frames_per_entry} + darks"
            ),
        }
    # A dwell longer than the camera can expose without saturating is split into equal frames at that energy
    # (each with its flats and tiles again: the only case in which the run costs more than the design's time).
    splits = [1 if longest is None else max(1, math.ceil(float(d) / longest - 1e-9)) for d in dwells]
    design_record["dwell_unit_s"] = float(dwell)
    design_record["max_exposure_s"] = longest
    design_record["frames_per_energy"] = splits
    design_record["compute_s_total"] = time.perf_counter() - started
    energy_list = [float(e) for e, k in zip(energies, splits, strict=True) for _ in range(k)]
    dwell_list = [float(d) / k for d, k in zip(dwells, splits, strict=True) for _ in range(k)]
    if max(splits) > 1:
        logger.warning(
            "optimal_xanes_imaging: %d of %d energies need more exposure than the camera takes unsaturated "
            "(%.3g s): measured as several frames",
            sum(k > 1 for k in splits),
            len(splits),
            longest,
        )

    run_kwargs: dict[str, Any] = {
        "shutter": shutter,
        "n_darks": n_darks,
        "n_flats": n_flats,
        "flat_position": flat_position,
        "order": "energy",
        "edge": edge,
        "e0": e0,
    }
    estimate = estimate_duration(
        xanes_imaging(camera, mono, stage, energy_list, tile_list, dwell_list, **run_kwargs)
    ).as_dict()
    logger.info(
        "optimal_xanes_imaging: %d energies (%.3g s dwell on average), %d tiles, estimated %.0f s",
        energies.size,
        float(np.mean(dwell_list)),
        len(tile_list),
        estimate["total_s"],
    )
    start_md = {
        "plan_name": "optimal_xanes_imaging",
        "time_estimate": estimate,
        "tiling": tile_record,
        "plan_args_optimal": {
            "x_mm": None if x_mm is None else list(x_mm),
            "y_mm": None if y_mm is None else list(y_mm),
            "polygon_mm": None if polygon_mm is None else [list(p) for p in polygon_mm],
            "design": design if isinstance(design, str) else None,
            "library": library,
            "edge": edge,
            "e_range": None if e_range is None else list(e_range),
            "criterion": criterion,
            "objective": objective if design is None else None,
            "phases": None if phases is None else list(phases),
            "target_separation": target_separation,
            "thickness": list(thickness),
            "model_error": model_error,
            "model_error_rms": model_error_rms,
            "keep_ends": keep_ends,
            "n_points": n_points,
            "time_budget_s": time_budget_s,
            "target_rmse": target_rmse,
            "dwell": dwell,
        },
        **check_user_md(
            md, {"plan_name", "time_estimate", "tiling", "plan_args_optimal"}, "optimal_xanes_imaging"
        ),
    }
    return (
        yield from xanes_imaging(
            camera,
            mono,
            stage,
            energy_list,
            tile_list,
            dwell_list,
            design=design_record,
            md=start_md,
            **run_kwargs,
        )
    )


def _cluster_candidates(
    node: Any,
    design: dict[str, Any],
    library: str | None,
    e0: float,
    model_error: float,
    phases: Sequence[str] | None = None,
) -> tuple[PhaseCandidates, np.ndarray, str]:
    """Candidates of the second design on the design's candidate grid, and their source.

    The first pass's cluster spectra (a clustering result node); the library's phases when it gave fewer than two.
    """
    grid_md = design["candidate_grid"]
    grid = np.round(np.linspace(grid_md["start_eV"], grid_md["stop_eV"], int(grid_md["n"])), 6)
    energies = np.asarray(node["energies"].read(), dtype=float)
    spectra = np.asarray(node["spectra"].read(), dtype=float)
    names = list(node.metadata.get("cluster_names", [f"cluster {k + 1}" for k in range(len(spectra))]))
    dwell = np.interp(energies, design["energies_eV"], np.asarray(design["dwell_s"], dtype=float))
    prior = prior_from_library(library, grid, e0_ref_eV=e0)
    noise = TransmissionNoise.from_dict(design["noise"])
    fallback = _library_candidates(library, grid, e0, phases, model_error)
    candidates, source = second_pass_candidates(
        energies, spectra, names, prior, noise, dwell, fallback, model_error=model_error
    )
    return candidates, grid, source


def _first_pass_model_error(node: Any, default: float) -> float:
    """The model error (fraction of the spectrum RMS) the first pass's clustering estimated, else ``default``."""
    record = node.metadata.get("model_error")
    if isinstance(record, dict) and record.get("rms_fraction_of_spectrum_rms") is not None:
        return max(float(record["rms_fraction_of_spectrum_rms"]), default)
    return default


def _adaptive_passes(
    camera: Readable, mono: Movable, stage: Readable, x_mm: Any, y_mm: Any, *, time_budget_s: float | None,
    first_pass_fraction: float, results_client: Any, results_timeout_s: float, md: dict | None, **kw: Any,
) -> MsgGenerator[str]:  # fmt: skip
    """First pass with the library map design, then a second pass designed from its cluster spectra."""
    from xbeam_bluesky.storage import analysis_results

    if time_budget_s is None:
        raise PlanArgumentError("adaptive=True needs time_budget_s (the two passes share it)")
    if not 0 < first_pass_fraction < 1:
        raise PlanArgumentError(
            f"first_pass_fraction = {first_pass_fraction!r}; expected a share strictly between 0 and 1"
        )
    if results_client is None:
        raise PlanArgumentError(
            "adaptive=True needs results_client: the tiled container holding the runs and the live clustering "
            "results (Storage.client), from which the first pass's cluster spectra are read"
        )
    if isinstance(results_client, str):  # the queueserver passes JSON: the tiled server's URI
        from tiled.client import from_uri

        uri = results_client
        try:
            results_client = from_uri(uri)
        except Exception as exc:  # any failure to open it is the same input error
            raise PlanArgumentError(
                f"results_client = {uri.split('?')[0]!r}: cannot open this tiled server ({exc}); expected the URI "
                "of the tiled server the runs and the live clustering write to"
            ) from exc
    first_md = {**(md or {}), "adaptive": {"pass": 1, "first_pass_fraction": first_pass_fraction,
                                            "time_budget_s": time_budget_s}}  # fmt: skip
    uid1 = yield from optimal_xanes_imaging(
        camera, mono, stage, x_mm, y_mm, objective="map", time_budget_s=first_pass_fraction * time_budget_s,
        md=first_md, **kw,
    )  # fmt: skip

    def ready() -> list[Any]:  # the result container appears before its arrays are written
        found = analysis_results(results_client, uid1, kind="clustering")
        done = [n for n in found if n.metadata.get("status") == "failed" or {"spectra", "energies"} <= set(n)]
        return done

    waited = 0.0
    nodes = ready()
    while not nodes and waited < results_timeout_s:
        yield from bps.sleep(0.5)
        waited += 0.5
        nodes = ready()
    if not nodes or nodes[-1].metadata.get("status") == "failed":
        raise RuntimeError(
            f"adaptive: no clustering result for the first pass {uid1} after {results_timeout_s:g} s "
            "(is LiveClustering subscribed and writing to results_client?)"
        )
    start1 = results_client[uid1].metadata["start"]
    design1 = start1["design"]
    e0 = edge_energy(kw.get("edge", "Fe-K"))
    candidates, grid, source = _cluster_candidates(
        nodes[-1], design1, kw.get("library"), e0, kw["model_error"], kw.get("phases")
    )
    tm = ScanTimeModel.from_dict(design1["time_model"])
    frames = n_tiles(start1) + int(kw["n_flats"])
    darks_s = _darks_reserve_s(camera, kw["n_darks"], kw["dwell"])
    units = measured_units(grid, design1["energies_eV"], design1["dwell_s"], tm.dwell_s)
    eps = _first_pass_model_error(nodes[-1], kw["model_error_rms"])
    second = design_map_energies(
        candidates, grid, TransmissionNoise.from_dict(design1["noise"]), tm, thickness=kw["thickness"],
        model_error_rms=eps, time_budget_s=(time_budget_s - darks_s) / frames, measured_units=units,
    )  # fmt: skip
    extra = measured_units(grid, second.energies_eV, second.dwell_s, tm.dwell_s) - units
    new = np.flatnonzero(extra > 0)
    if new.size == 0:
        logger.warning("adaptive: the second design adds no dwell to the first pass; no second pass measured")
        return uid1
    record = {
        **second.to_dict(),
        "energies_eV": [float(grid[j]) for j in new],
        "dwell_s": [float(extra[j] * tm.dwell_s) for j in new],
        "combined_design": {"energies_eV": [float(e) for e in second.energies_eV],
                            "dwell_s": [float(d) for d in second.dwell_s]},
        "note": "energies_eV/dwell_s: what this pass adds to the first pass (combined_design: both passes)",
    }  # fmt: skip
    link = {"pass": 2, "first_pass_uid": uid1, "clustering_result": nodes[-1].item["id"], "model_error_rms": eps,
            "candidates": list(candidates.names), "candidates_from": source,
            "first_pass_design_min_separation": design1["min_separation"],
            "combined_min_separation": second.min_separation}  # fmt: skip
    pass_kw = {k: v for k, v in kw.items() if k in ("library", "edge", "shutter", "n_darks", "n_flats",
                                                    "flat_position", "thickness", "model_error",
                                                    "model_error_rms")}  # fmt: skip
    return (
        yield from optimal_xanes_imaging(
            camera, mono, stage, tiles=start_tile_positions(start1), design=record, dwell=kw["dwell"],
            md={**(md or {}), "adaptive": link}, **pass_kw,
        )
    )  # fmt: skip
