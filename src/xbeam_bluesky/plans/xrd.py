"""Powder diffraction: one or more 1D patterns of the sample, tagged for automatic Rietveld refinement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from xbeam_bluesky.bundled import resolve_cif
from xbeam_bluesky.documents import PURPOSE_KEY, XRD, XrdDataKeys
from xbeam_bluesky.plans.metadata import check_user_md
from xbeam_bluesky.protocols import HasExposure


def validate_xrd_powder(detector: Any, exposure: float, phases: Sequence[str], num: int) -> list[str]:
    """Check the arguments of :func:`xrd_powder`; returns the phases as a list of str."""
    if not isinstance(detector, Readable):
        raise ValueError(f"detector = {detector!r} is not a bluesky Readable device")
    if not (isinstance(exposure, int | float) and math.isfinite(exposure) and exposure > 0):
        raise ValueError(f"exposure = {exposure!r}; expected a positive time in s")
    if isinstance(phases, str) or not phases:
        raise ValueError(f"phases = {phases!r}; expected a non-empty list of CIF names")
    for phase in phases:
        resolve_cif(str(phase))
    if int(num) != num or num < 1:
        raise ValueError(f"num = {num!r}; expected a positive integer")
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
        ``XbeamInputError`` naming it.

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
