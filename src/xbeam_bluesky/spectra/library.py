"""Reference libraries on a common energy scale: calibration shifts, normalization, resampling."""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xbeam_bluesky.errors import XbeamInputError
from xbeam_bluesky.spectra.io import read_spectrum
from xbeam_bluesky.spectra.model import Spectrum, SpectrumFormatError
from xbeam_bluesky.spectra.normalize import find_e0, normalize, resample

logger = logging.getLogger(__name__)

#: Name of the optional calibration file in a library directory.
CALIBRATION_FILE = "calibration.json"


def _calibration_file(spectrum: Spectrum) -> Path | None:
    """The nearest ``calibration.json`` in the spectrum's directory or a parent of it."""
    if spectrum.path is None:
        return None
    for parent in spectrum.path.resolve().parents:
        candidate = parent / CALIBRATION_FILE
        if candidate.is_file():
            return candidate
    return None


def calibration_shifts(spectra: Sequence[Spectrum]) -> dict[str, float]:
    """Energy shift (eV, to add) per spectrum from the library's ``calibration.json``.

    A library directory may hold ``calibration.json``:
    ``{"reference_e0_eV": 7112.0, "groups": [{"files": GLOB, "foil": FILE} | {"files": GLOB, "shift_eV": S}]}``
    — the spectra matching ``files`` (path relative to the library) are shifted so that their group's foil, read
    from the same library, has its E0 (:func:`find_e0`) at ``reference_e0_eV``, or by the fixed ``shift_eV``.
    Spectra without a calibration file or group get 0.

    Parameters
    ----------
    spectra : sequence of Spectrum
        Spectra read with :func:`~xbeam_bluesky.spectra.load_library` (their ``metadata["library_path"]``).

    Returns
    -------
    dict
        Spectrum name → shift in eV.
    """
    shifts: dict[str, float] = {}
    by_path = {s.metadata.get("library_path"): s for s in spectra}
    cache: dict[Path, tuple[float, list[dict]]] = {}
    for spectrum in spectra:
        calib = _calibration_file(spectrum)
        shifts[spectrum.name] = 0.0
        if calib is None:
            continue
        if calib not in cache:
            try:
                doc = json.loads(calib.read_text())
                cache[calib] = (float(doc["reference_e0_eV"]), list(doc["groups"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise SpectrumFormatError(
                    f"{calib}: not a valid calibration file ({exc}); expected reference_e0_eV and groups"
                ) from exc
        reference, groups = cache[calib]
        rel = spectrum.path.resolve().relative_to(calib.parent).as_posix()
        for group in groups:
            if not fnmatch.fnmatch(rel, group["files"]):
                continue
            if "shift_eV" in group:
                shifts[spectrum.name] = float(group["shift_eV"])
            else:
                foil = by_path.get(group["foil"])
                if foil is None:
                    foil = read_spectrum(calib.parent / group["foil"])
                shifts[spectrum.name] = reference - find_e0(foil.energy, foil.mu)
            break
    return shifts


@dataclass(frozen=True, eq=False)
class AlignedLibrary:
    """Normalized reference spectra on one energy grid.

    Unpacks as ``names, matrix = aligned_library(...)``.

    Attributes
    ----------
    names : list of str
        Spectrum names, one per row of ``matrix``.
    matrix : numpy.ndarray
        Normalized μ, shape (n_spectra, n_grid).
    grid : numpy.ndarray
        Energies in eV.
    e0 : numpy.ndarray
        Each spectrum's edge energy after its shift, eV.
    shifts : dict
        Energy shift applied per name, eV.
    dropped : dict
        Name → reason, for spectra left out (not covering the grid, not normalizable).
    normalization : str
        ``"edge"`` (pre-edge line removed, divided by the edge step) or ``"none"`` (as measured, e.g. OD).
    """

    names: list[str]
    matrix: np.ndarray
    grid: np.ndarray
    e0: np.ndarray
    shifts: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    normalization: str = "edge"

    def __iter__(self) -> Iterator:
        return iter((self.names, self.matrix))


def aligned_library(
    spectra: Sequence[Spectrum],
    grid: np.ndarray,
    *,
    align: str = "calibration",
    e0_ref: float = 7112.0,
    normalization: str = "auto",
) -> AlignedLibrary:
    """Normalize, put on a common energy scale and resample a set of reference spectra.

    Parameters
    ----------
    spectra : sequence of Spectrum
        Reference spectra (e.g. from :func:`~xbeam_bluesky.spectra.load_library`).
    grid : numpy.ndarray
        Target energies in eV.
    align : {"calibration", "edge", "none"}
        ``"calibration"``: shift by the library's ``calibration.json`` (keeps chemical shifts; spectra without one
        are used as measured); ``"edge"``: shift every spectrum so its own E0 is ``e0_ref`` (removes chemical
        shifts, use only for uncalibrated mixed sources); ``"none"``: as measured.
    e0_ref : float
        Reference edge energy in eV for ``align="edge"``.
    normalization : {"auto", "edge", "none"}
        ``"edge"``: Athena pre/post-edge normalization (needs points 10 eV below and 25 eV above E0; spectra
        without them are dropped); ``"none"``: the spectra as given (e.g. OD on the stack's own energies: any edge,
        K or L, any range); ``"auto"``: ``"edge"`` when every spectrum covering the grid can be normalized, else
        ``"none"`` for all (one convention per library; recorded in ``normalization``).

    Returns
    -------
    AlignedLibrary
        Spectra that cannot be normalized or do not cover ``grid`` after shifting are left out and listed in
        ``dropped`` (and logged).
    """
    if align not in ("calibration", "edge", "none"):
        raise XbeamInputError(f"align={align!r}; expected 'calibration', 'edge' or 'none'")
    if normalization not in ("auto", "edge", "none"):
        raise XbeamInputError(f"normalization={normalization!r}; expected 'auto', 'edge' or 'none'")
    if normalization == "auto":
        library = _aligned(spectra, grid, align, e0_ref, "edge")
        if any("normalize" in reason for reason in library.dropped.values()):
            logger.info(
                "library: edge normalization impossible for some references; using them as given (OD)"
            )
            library = _aligned(spectra, grid, align, e0_ref, "none")
    else:
        library = _aligned(spectra, grid, align, e0_ref, normalization)
    for reason in library.dropped.values():
        logger.info("library: leaving out %s", reason)
    return library


def _aligned(
    spectra: Sequence[Spectrum], grid: np.ndarray, align: str, e0_ref: float, normalization: str
) -> AlignedLibrary:
    """:func:`aligned_library` for one normalization ("edge" or "none"), without logging."""
    grid = np.asarray(grid, dtype=np.float64)
    shifts = calibration_shifts(spectra) if align == "calibration" else {}
    names: list[str] = []
    rows: list[np.ndarray] = []
    e0s: list[float] = []
    dropped: dict[str, str] = {}
    applied: dict[str, float] = {}
    for spectrum in spectra:
        try:
            if normalization == "edge":
                norm = normalize(spectrum)
                e0, values = norm.e0, norm.norm
            else:
                e0, values = find_e0(spectrum.energy, spectrum.mu), spectrum.mu
            shift = e0_ref - e0 if align == "edge" else shifts.get(spectrum.name, 0.0)
            rows.append(resample(spectrum.energy + shift, values, grid, name=spectrum.name))
        except SpectrumFormatError as exc:
            dropped[spectrum.name] = str(exc)
            continue
        names.append(spectrum.name)
        e0s.append(e0 + shift)
        applied[spectrum.name] = shift
    matrix = np.vstack(rows) if rows else np.empty((0, grid.size))
    return AlignedLibrary(
        names=names, matrix=matrix, grid=grid, e0=np.asarray(e0s), shifts=applied, dropped=dropped,
        normalization=normalization,
    )  # fmt: skip
