"""Full-field XANES imaging: an energy series of transmission frames over several stage tiles."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Preparable, Readable, Triggerable, WritesStreamAssets
from bluesky.utils import MsgGenerator
from ophyd import Signal

from xbeam_bluesky.documents import (
    DARK_STREAM,
    ENERGY_INDEX_KEY,
    EXPOSURE_KEY,
    FLAT_STREAM,
    PRIMARY_STREAM,
    PURPOSE_KEY,
    TILE_INDEX_KEY,
    XANES_IMAGING,
    XanesDataKeys,
    json_safe,
)
from xbeam_bluesky.errors import PlanArgumentError
from xbeam_bluesky.plans.layout import ORDERS
from xbeam_bluesky.plans.metadata import WRAPPER_KEYS, check_user_md
from xbeam_bluesky.plans.segments import DetectorSegments, lean_mv
from xbeam_bluesky.protocols import (
    ExposureLimited,
    HasLimits,
    ImagingCamera,
    LimitedAxis,
    Named,
    NoiseReporting,
    SampleStage,
    XYStage,
    name_of,
)
from xbeam_bluesky.spectra import edge_energy


def _limits(device: Any) -> tuple[float, float] | None:
    limits = device.limits if isinstance(device, HasLimits) else None
    if limits is None or len(limits) != 2 or limits[0] >= limits[1]:  # (0, 0) = no limits for ophyd motors
        return None
    return float(limits[0]), float(limits[1])


def _check_within(device: Any, value: float, what: str) -> None:
    limits = _limits(device)
    if limits is not None and not limits[0] <= value <= limits[1]:
        units = device.units if isinstance(device, LimitedAxis) else ""
        raise PlanArgumentError(
            f"{what} {value} {units} is outside the limits of {name_of(device)}: "
            f"[{limits[0]}, {limits[1]}] {units}"
        )


def _as_xy(value: Any, what: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        raise PlanArgumentError(f"{what} = {value!r}; expected an [x, y] pair of numbers in mm") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise PlanArgumentError(f"{what} = {value!r}; expected finite numbers in mm")
    return x, y


def validate_xanes_imaging(
    camera: Any,
    mono: Any,
    stage: Any,
    energies: Sequence[float],
    tiles: Sequence[Sequence[float]],
    dwell: float | Sequence[float],
    *,
    shutter: Any = None,
    n_darks: int = 5,
    n_flats: int = 2,
    flat_position: Sequence[float] | None = None,
    order: str = "energy",
) -> tuple[list[float], list[tuple[float, float]], tuple[float, float] | None, list[float]]:
    """Check the arguments of :func:`xanes_imaging` without moving anything.

    Returns
    -------
    energies, tiles, flat_position, dwells
        Normalized values (floats; (x, y) tuples; None when no flats are taken; the exposure in s of each
        energy, one entry per energy also when ``dwell`` is a single number).

    Raises
    ------
    ValueError
        Naming the offending value and the limit or the expected form.
    """
    check_slots(camera, mono, stage, shutter)
    if isinstance(energies, str | bytes) or not hasattr(energies, "__iter__"):
        raise PlanArgumentError(f"energies = {energies!r}; expected a list of energies in eV")
    energies_f = []
    for i, e in enumerate(energies):
        try:
            value = float(e)
        except (TypeError, ValueError):
            raise PlanArgumentError(f"energies[{i}] = {e!r}; expected a number in eV") from None
        if not math.isfinite(value):
            raise PlanArgumentError(f"energies[{i}] = {e!r}; expected a finite energy in eV")
        _check_within(mono, value, f"energies[{i}] =")
        energies_f.append(value)
    if not energies_f:
        raise PlanArgumentError("energies is empty; expected at least one energy in eV")
    tiles_f = [_as_xy(t, f"tiles[{i}]") for i, t in enumerate(list(tiles))]
    if not tiles_f:
        raise PlanArgumentError("tiles is empty; expected at least one [x, y] stage position in mm")
    for i, (x, y) in enumerate(tiles_f):
        _check_within(stage.x, x, f"tiles[{i}] x =")
        _check_within(stage.y, y, f"tiles[{i}] y =")
    dwells = _dwell_per_energy(dwell, len(energies_f))
    longest = max_unsaturated_exposure_s(camera)
    if longest is not None and max(dwells) > longest:
        i = dwells.index(max(dwells))
        what = f"dwell[{i}]" if len(set(dwells)) > 1 else "dwell"
        raise PlanArgumentError(
            f"{what} = {dwells[i]} s saturates camera {name_of(camera)!r}: its brightest "
            f"open-beam pixel would pass 90 % of full scale above {longest:.3g} s; use shorter exposures "
            "(measure an energy twice for more photons)"
        )
    if len(set(dwells)) > 1 and not isinstance(camera, Preparable):
        raise PlanArgumentError(
            f"dwell differs between energies but camera {name_of(camera)!r} is not Preparable: "
            "its exposure cannot be set per energy; pass a single dwell"
        )
    if order not in ORDERS:
        raise PlanArgumentError(f"order = {order!r}; expected one of {ORDERS}")
    if int(n_darks) != n_darks or n_darks < 0 or int(n_flats) != n_flats or n_flats < 0:
        raise PlanArgumentError(
            f"n_darks = {n_darks!r}, n_flats = {n_flats!r}; expected non-negative integers"
        )
    if n_darks and shutter is None:
        raise PlanArgumentError(
            f"n_darks = {n_darks} but no shutter was given; pass shutter=... or n_darks=0"
        )
    flat_xy = None
    if n_flats:
        if flat_position is None:
            flat_position = stage.out_position_mm if isinstance(stage, SampleStage) else None
            if flat_position is None:
                raise PlanArgumentError(
                    f"n_flats = {n_flats} needs flat_position=[x, y] (sample out of the beam, mm); "
                    f"{name_of(stage)} has no out_position_mm"
                )
        flat_xy = _as_xy(flat_position, "flat_position")
        _check_within(stage.x, flat_xy[0], "flat_position x =")
        _check_within(stage.y, flat_xy[1], "flat_position y =")
    for device, what in ((camera, "camera"), (mono, "mono"), (stage, "stage")):
        if not isinstance(device, Readable):
            raise PlanArgumentError(f"{what} = {device!r} is not a bluesky Readable device")
    return energies_f, tiles_f, flat_xy, dwells


def _name(device: Any) -> str:
    return f"{(device.name if isinstance(device, Named) else None) or repr(device)} ({type(device).__name__})"


def check_slots(camera: Any, mono: Any, stage: Any, shutter: Any = None) -> None:
    """Check that each device fits its slot before anything moves.

    camera: Readable, Triggerable and writing its frames as stream assets (an area detector); mono: Readable
    and Movable; stage: Readable with Movable ``x`` and ``y`` axes; shutter (optional): Movable; no device in two
    slots.

    Raises
    ------
    PlanArgumentError
        Naming the slot, the device and what the slot needs.
    """
    from xbeam_bluesky.errors import PlanArgumentError

    need = {
        "camera": (camera, (Readable, Triggerable, WritesStreamAssets), "an area detector (Readable, Triggerable, "
                   "writing frames to files: WritesStreamAssets)"),
        "mono": (mono, (Readable, Movable), "a Readable, Movable monochromator (energy in eV)"),
        "stage": (stage, (Readable,), "a Readable sample stage with Movable x and y axes (mm)"),
    }  # fmt: skip
    if shutter is not None:
        need["shutter"] = (shutter, (Movable,), "a Movable shutter ('open' / 'closed')")
    for slot, (device, protocols, what) in need.items():
        if slot != "shutter" and not isinstance(device, Readable):
            raise PlanArgumentError(f"{slot} = {device!r} is not a bluesky Readable device")
        if not all(isinstance(device, p) for p in protocols):
            raise PlanArgumentError(f"{slot} = {_name(device)} is not {what}")
    for axis in ("x", "y"):
        if not isinstance(getattr(stage, axis, None), Movable):
            raise PlanArgumentError(
                f"stage = {_name(stage)} has no Movable {axis} axis; expected a sample stage"
            )
    slots = [(slot, device) for slot, (device, _, _) in need.items()]
    for i, (slot, device) in enumerate(slots):
        for other, again in slots[i + 1 :]:
            if device is again:
                raise PlanArgumentError(f"{_name(device)} is given as both {slot} and {other}")


def max_unsaturated_exposure_s(camera: Any, margin: float = 0.9) -> float | None:
    """Longest exposure (s) at which the brightest open-beam pixel stays below ``margin`` × saturation.

    Asks cameras that can tell (:class:`~xbeam_bluesky.protocols.ExposureLimited`, as the simulated sCMOS with its
    detector model); None for a camera that cannot (e.g. EPICS cameras), in which case nothing is checked.
    """
    return camera.max_unsaturated_exposure_s(margin) if isinstance(camera, ExposureLimited) else None


def _positive_seconds(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def _dwell_per_energy(dwell: Any, n_energies: int) -> list[float]:
    """Exposure (s) of every energy from a single dwell or a list with one entry per energy."""
    if not isinstance(dwell, numbers.Real | str | bytes) and hasattr(dwell, "__iter__"):
        dwell = list(dwell)
        if len(dwell) != n_energies:
            raise PlanArgumentError(
                f"dwell has {len(dwell)} entries but energies has {n_energies}; expected one exposure (s) "
                "per energy, or a single number for all"
            )
        for i, value in enumerate(dwell):
            if not _positive_seconds(value):
                raise PlanArgumentError(f"dwell[{i}] = {value!r}; expected a positive exposure time in s")
        return [float(v) for v in dwell]
    if not _positive_seconds(dwell):
        raise PlanArgumentError(
            f"dwell = {dwell!r}; expected a positive exposure time in s (or a list, one per energy)"
        )
    return [float(dwell)] * n_energies


def xanes_imaging(
    camera: Readable,
    mono: Movable,
    stage: Readable,
    energies: Sequence[float],
    tiles: Sequence[Sequence[float]],
    dwell: float | Sequence[float],
    *,
    shutter: Movable | None = None,
    n_darks: int = 5,
    n_flats: int = 2,
    flat_position: Sequence[float] | None = None,
    order: str = "energy",
    edge: str = "Fe-K",
    e0: float | None = None,
    design: dict | None = None,
    pixel_size_um: float | None = None,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Full-field XANES imaging over a list of energies and stage tiles.

    Dark frames first (shutter closed), then for each energy flat frames (sample moved to ``flat_position``)
    and one frame per tile (``order="energy"``); or, with ``order="tile"``, flats at every energy first and
    then the whole energy list at each tile. The monochromator and the stage return to their start positions
    at the end, also after a failure. All arguments are checked before anything moves.

    Parameters
    ----------
    camera : Readable
        Area detector (ophyd-async ``StandardDetector``: stage → new file, ``prepare`` sets the exposure).
    mono : Movable
        Monochromator energy in eV.
    stage : Readable
        Sample stage with ``x`` and ``y`` Movable axes in mm.
    energies : list of float
        Photon energies in eV, measured in this order (a repeated energy is measured again).
    tiles : list of [float, float]
        Stage positions [x, y] in mm, the centre of each field of view.
    dwell : float or list of float
        Exposure per frame in s: one number for every energy, or one entry per energy (the camera is prepared
        with the exposure of each energy before its flats and frames; darks use the first energy's). A list of
        the wrong length or a non-positive entry raises before anything moves.
    shutter : Movable, optional
        Beam shutter (``"closed"`` for darks); required when ``n_darks > 0``.
    n_darks : int
        Dark frames at the start (stream ``dark``).
    n_flats : int
        Flat frames per energy (stream ``flat``), sample at ``flat_position``.
    flat_position : [float, float], optional
        Stage [x, y] in mm with the sample out of the beam; default: the stage's ``out_position_mm``.
    order : {"energy", "tile"}
        Outer loop of the acquisition.
    edge : str
        Absorption edge, e.g. ``"Fe-K"``.
    e0 : float, optional
        Edge energy in eV (default: the tabulated energy of ``edge``).
    design : dict, optional
        Provenance of the energy list (the planner's design record), stored as is.
    pixel_size_um : float, optional
        Pixel size at the sample in µm (default: the camera's ``pixel_um``).
    md : dict, optional
        Extra start-document metadata; a key the plan writes itself (``purpose``, ``energies``, ...) raises
        ``PlanArgumentError`` naming it.

    Returns
    -------
    str
        The run uid.

    Notes
    -----
    Every event of every stream carries the camera frame, the monochromator readback, the stage x/y readbacks,
    the fields ``energy_index`` / ``tile_index`` (−1 where not applicable: darks have both −1, flats a
    tile index of −1) and ``exposure_s``, the exposure the camera was prepared with for that frame. The start
    document holds ``purpose="xanes_imaging"``, ``energies``, ``dwell`` (a number, or the list with one
    exposure per energy), ``order``,
    ``tiles = {"positions", "pixel_size_um", "frame_shape"}``, ``edge``, ``e0``, ``design``, ``n_darks``,
    ``n_flats``, ``flat_position``, ``noise_model`` (camera gain/read noise/dark offset and ``i0_counts``)
    and ``data_keys`` naming the event fields. With a dwell list ``noise_model`` and ``i0`` are those of the
    shortest dwell (the noisiest frames) and ``noise_model["i0_counts_per_energy"]`` lists every energy's.
    """
    energies_f, tiles_f, flat_xy, dwells = validate_xanes_imaging(
        camera, mono, stage, energies, tiles, dwell,
        shutter=shutter, n_darks=n_darks, n_flats=n_flats, flat_position=flat_position, order=order,
    )  # fmt: skip
    e0_value = float(e0) if e0 is not None else edge_energy(edge)
    energy_index = Signal(name=ENERGY_INDEX_KEY, value=-1)
    tile_index = Signal(name=TILE_INDEX_KEY, value=-1)
    frame_shape = camera.frame_shape if isinstance(camera, ImagingCamera) else None
    if pixel_size_um is not None:
        pixel: float | None = pixel_size_um
    else:
        pixel = camera.pixel_um if isinstance(camera, ImagingCamera) else None
    per_energy = not isinstance(dwell, numbers.Real)
    dwell_md: float | list[float] = dwells if per_energy else dwells[0]
    noise = camera.noise_metadata(min(dwells)) if isinstance(camera, NoiseReporting) else None
    if noise is not None and per_energy:
        noise["i0_counts_per_energy"] = [camera.noise_metadata(d)["i0_counts"] for d in dwells]
    exposure_tag = Signal(name=EXPOSURE_KEY, value=dwells[0])
    n_primary = len(energies_f) * len(tiles_f)
    if not (isinstance(stage, XYStage) and isinstance(mono, Named)):  # checked by validate_xanes_imaging
        raise TypeError(f"stage = {stage!r}, mono = {mono!r}; expected an x/y sample stage and a named mono")
    x_axis, y_axis = stage.x, stage.y
    start_md: dict[str, Any] = {
        PURPOSE_KEY: XANES_IMAGING,
        "plan_name": "xanes_imaging",
        "plan_args": json_safe(
            {
                "camera": camera,
                "mono": mono,
                "stage": stage,
                "energies": energies_f,
                "tiles": [list(t) for t in tiles_f],
                "dwell": dwell_md,
                "shutter": shutter,
                "n_darks": n_darks,
                "n_flats": n_flats,
                "flat_position": flat_xy and list(flat_xy),
                "order": order,
                "edge": edge,
                "e0": e0_value,
            }
        ),
        "detectors": [camera.name],
        "motors": [mono.name, x_axis.name, y_axis.name],
        "num_points": n_primary,
        "num_intervals": n_primary - 1,
        "hints": {"dimensions": [([mono.name], PRIMARY_STREAM)]},
        "edge": edge,
        "e0": e0_value,
        "energies": energies_f,
        "dwell": dwell_md,
        "order": order,
        "tiles": {
            "positions": [list(t) for t in tiles_f],
            "pixel_size_um": pixel,
            "frame_shape": list(frame_shape) if frame_shape else None,
        },
        "frame_shape": list(frame_shape) if frame_shape else None,
        "design": json_safe(design) if design is not None else None,
        "n_darks": int(n_darks),
        "n_flats": int(n_flats),
        "flat_position": list(flat_xy) if flat_xy else None,
        "noise_model": noise,
        "i0": noise.get("i0_counts") if noise else None,
        "data_keys": XanesDataKeys(
            frame=camera.name,
            energy=mono.name,
            x=x_axis.name,
            y=y_axis.name,
            energy_index=ENERGY_INDEX_KEY,
            tile_index=TILE_INDEX_KEY,
            exposure_s=EXPOSURE_KEY,
        ),
    }
    wrapper_md = {k: v for k, v in (md or {}).items() if k in WRAPPER_KEYS}
    user_md = check_user_md(
        {k: v for k, v in (md or {}).items() if k not in WRAPPER_KEYS}, start_md, "xanes_imaging"
    )
    start_md.update(wrapper_md)
    start_md.update(user_md)
    readables = [camera, mono, stage, energy_index, tile_index, exposure_tag]
    segments = DetectorSegments(camera, dwells[0])

    def expose(seconds: float) -> MsgGenerator[None]:
        """Make ``seconds`` the camera exposure: of the open segment now, of later segments when they open."""
        if seconds == segments.exposure_s:
            return
        segments.exposure_s = seconds
        if segments.stream is not None and isinstance(camera, Preparable):
            from ophyd_async.core import TriggerInfo

            yield from bps.prepare(camera, TriggerInfo(livetime=seconds), wait=True)
        yield from lean_mv(exposure_tag, seconds)

    def take(stream: str, ie: int, it: int, count: int = 1) -> MsgGenerator[None]:
        yield from expose(dwells[ie] if ie >= 0 else dwells[0])
        yield from lean_mv(energy_index, ie, tile_index, it)
        for _ in range(count):
            yield from segments.read(readables, stream)

    def move_stage(xy: tuple[float, float]) -> MsgGenerator[None]:
        yield from lean_mv(x_axis, xy[0], y_axis, xy[1])

    def body() -> MsgGenerator[str]:
        uid = yield from bps.open_run(start_md)
        if n_darks:
            yield from bps.mv(shutter, "closed")
            yield from take(DARK_STREAM, -1, -1, n_darks)
            yield from bps.mv(shutter, "open")
        if order == "energy":
            for ie, energy in enumerate(energies_f):
                yield from bps.mv(mono, energy)
                if flat_xy is not None:
                    yield from move_stage(flat_xy)
                    yield from take(FLAT_STREAM, ie, -1, n_flats)
                for it, xy in enumerate(tiles_f):
                    yield from move_stage(xy)
                    yield from take(PRIMARY_STREAM, ie, it)
        else:
            if flat_xy is not None:
                yield from move_stage(flat_xy)
                for ie, energy in enumerate(energies_f):
                    yield from bps.mv(mono, energy)
                    yield from take(FLAT_STREAM, ie, -1, n_flats)
            for it, xy in enumerate(tiles_f):
                yield from move_stage(xy)
                for ie, energy in enumerate(energies_f):
                    yield from lean_mv(mono, energy)
                    yield from take(PRIMARY_STREAM, ie, it)
        yield from segments.close()
        yield from bps.close_run()
        return uid

    start_energy = yield from bps.rd(mono, default_value=None)
    start_x = yield from bps.rd(x_axis, default_value=None)
    start_y = yield from bps.rd(y_axis, default_value=None)

    def restore() -> MsgGenerator[None]:
        yield from segments.close()
        if start_energy is not None:
            yield from bps.mv(mono, start_energy)
        if start_x is not None and start_y is not None:
            yield from move_stage((start_x, start_y))
        if shutter is not None and n_darks:
            yield from bps.mv(shutter, "open")

    baseline = [d for d in (mono, stage, shutter) if d is not None]
    plan = bpp.baseline_wrapper(body(), baseline)
    return (yield from bpp.finalize_wrapper(plan, restore()))
