"""Powder diffraction: one or more 1D patterns of the sample, tagged for automatic Rietveld refinement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable, Triggerable
from bluesky.utils import MsgGenerator

from xbeam_bluesky.bundled import resolve_cif
from xbeam_bluesky.documents import PURPOSE_KEY, XRD, XrdDataKeys
from xbeam_bluesky.errors import PlanArgumentError
from xbeam_bluesky.plans.metadata import check_user_md
from xbeam_bluesky.protocols import HasExposure, PowderDetector, name_of


def validate_xrd_powder(detector: Any, exposure: float, phases: Sequence[str], num: int) -> list[str]:
    """Check the arguments of :func:`xrd_powder` before anything moves; returns the phases as a list of str.

    The detector must be a Readable, Triggerable :class:`~xbeam_bluesky.protocols.PowderDetector`; every CIF is
    read and validated by the Rietveld CIF reader (:func:`~xbeam_bluesky.rietveld.load_phase`), so a malformed
    CIF is refused before the measurement rather than found by the refinement after it.

    Raises
    ------
    PlanArgumentError
        Naming the argument and what was expected.
    CifError, InputFileError
        A CIF that is missing or cannot be used (the message names the file).
    """
    from xbeam_bluesky.rietveld import load_phase

    if not isinstance(detector, Readable):
        raise PlanArgumentError(f"detector = {detector!r} is not a bluesky Readable device")
    if not (isinstance(detector, Triggerable) and isinstance(detector, PowderDetector)):
        raise PlanArgumentError(
            f"detector = {name_of(detector)!r} ({type(detector).__name__}) is not a powder detector: expected a "
            "Triggerable device with two_theta and counts signals and an exposure (e.g. the camera is an "
            "imaging detector; pass the diffractometer, e.g. xrd)"
        )
    if not (isinstance(exposure, int | float) and math.isfinite(exposure) and exposure > 0):
        raise PlanArgumentError(f"exposure = {exposure!r}; expected a positive time in s")
    if isinstance(phases, str) or not phases:
        raise PlanArgumentError(f"phases = {phases!r}; expected a non-empty list of CIF names")
    for phase in phases:
        load_phase(resolve_cif(str(phase)))
    if int(num) != num or num < 1:
        raise PlanArgumentError(f"num = {num!r}; expected a positive integer")
    return [str(p) for p in phases]


def xrd_powder(
    detector: Readable,
    exposure: float,
    phases: Sequence[str],
    *,
    num: int = 1,
    sample: str = "",
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Measure ``num`` powder patterns of ``exposure`` seconds each.

    Parameters
    ----------
    detector : Readable
        Powder diffractometer reading a 2θ grid (degrees) and counts; its ``exposure`` signal, if it has one,
        is set to ``exposure``.
    exposure : float
        Counting time per pattern in s.
    phases : list of str
        CIF files (paths or names of bundled CIFs) of the phases expected in the sample; recorded for the
        automatic Rietveld refinement.
    num : int
        Number of patterns (events of the ``primary`` stream).
    sample : str
        Sample description.
    md : dict, optional
        Extra start-document metadata; a key the plan writes itself (``purpose``, ``phases``, ...) raises
        ``PlanArgumentError`` naming it.

    Returns
    -------
    str
        The run uid.

    Notes
    -----
    Start document: ``purpose="xrd"``, ``phases`` (as given), ``cif_paths`` (resolved), ``exposure``, ``sample``
    and ``data_keys = {"two_theta": ..., "counts": ...}`` naming the event fields.
    """
    phases_l = validate_xrd_powder(detector, exposure, phases, num)
    name = detector.name
    start_md: dict[str, Any] = {
        PURPOSE_KEY: XRD,
        "plan_name": "xrd_powder",
        "plan_args": {
            "detector": repr(name),
            "exposure": float(exposure),
            "phases": phases_l,
            "num": int(num),
        },
        "detectors": [name],
        "motors": [],
        "num_points": int(num),
        "num_intervals": int(num) - 1,
        "hints": {"dimensions": [(["time"], "primary")]},
        "phases": phases_l,
        "cif_paths": [str(resolve_cif(p)) for p in phases_l],
        "exposure": float(exposure),
        "sample": sample,
        "data_keys": XrdDataKeys(two_theta=f"{name}-two_theta", counts=f"{name}-counts"),
    }
    start_md.update(check_user_md(md, start_md, "xrd_powder"))

    @bpp.run_decorator(md=start_md)
    def body() -> MsgGenerator[None]:
        if isinstance(detector, HasExposure):
            yield from bps.mv(detector.exposure, float(exposure))
        for _ in range(int(num)):
            yield from bps.trigger_and_read([detector])

    return (yield from bpp.stage_wrapper(body(), [detector]))
