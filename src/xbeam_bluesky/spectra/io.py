"""Readers for measured absorption spectra (XDI, Athena/ALS ``.e``, two- and three-column text)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from xbeam_bluesky._inputs import input_file
from xbeam_bluesky.bundled import XAS_DIR
from xbeam_bluesky.errors import InputFileError
from xbeam_bluesky.spectra.model import Spectrum, SpectrumFormatError, SpectrumKind

logger = logging.getLogger(__name__)

#: File endings read by :func:`load_library` (case-insensitive); ``.xsp``/``.xas`` are aXis2000 spectra and
#: ``.t``/``.r`` the two-column (energy, OD) region spectra STXM analyses export.
SPECTRUM_SUFFIXES: frozenset[str] = frozenset(
    {".xdi", ".xd", ".e", ".txt", ".dat", ".xmu", ".nor", ".csv", ".chi", ".xsp", ".xas", ".t", ".r"}
)
#: Files in a library directory that are documentation or incident spectra, never references.
_NOT_SPECTRA = re.compile(r"^(sources|readme|license|licence|calibration|i0[._]|energy\.)", re.IGNORECASE)
_SPLIT = re.compile(r"[\s,;]+")
_I0_NAMES = {"i0", "io", "izero"}
_IT_NAMES = {"itrans", "it", "i1", "itr"}
_MU_NAMES = {"mu", "xmu", "mutrans", "mu_trans", "value", "mu(e)", "absorbance"}
_NORM_NAMES = {"norm", "normalized", "flat", "mu_norm", "norm(e)"}


def bundled_library_dir(edge: str = "Fe-K") -> Path:
    """Directory of the reference spectra bundled with the package.

    Parameters
    ----------
    edge : str
        Absorption edge as ``"<Element>-K"``; only ``"Fe-K"`` is bundled.

    Returns
    -------
    pathlib.Path
        The directory (inside the installed package).
    """
    folder = edge.replace("-", "_")
    path = XAS_DIR / folder
    if not path.is_dir():
        raise InputFileError(
            f"no bundled reference library for edge {edge!r} (expected {path}); bundled: Fe-K"
        )
    return path


def _column_names(header: list[str], ncols: int) -> list[str]:
    """Column names from an XDI ``Column.N`` header or a last comment line of ``ncols`` words."""
    xdi: dict[int, str] = {}
    for line in header:
        m = re.match(r"#\s*Column\.(\d+)\s*:\s*(\S+)", line, re.IGNORECASE)
        if m:
            xdi[int(m.group(1))] = m.group(2).lower()
    if xdi:
        return [xdi.get(i + 1, f"col{i + 1}") for i in range(ncols)]
    if header:
        words = header[-1].lstrip("#%").split()
        if len(words) == ncols and not any(re.match(r"^[-+]?\d", w) or w.endswith(":") for w in words):
            return ["energy" if w.lower().startswith("energy") else w.lower() for w in words]
    return [f"col{i + 1}" for i in range(ncols)]


def _header_metadata(header: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for line in header:
        m = re.match(r"#%?\s*([A-Za-z][\w.&/ ]*?)\s*[:=]\s*(.*)$", line)
        if m and not m.group(1).lower().startswith("column"):
            key = m.group(1).strip()
            meta[key] = (meta[key] + " " + m.group(2).strip()) if key in meta else m.group(2).strip()
    return meta


def _read_table(path: Path) -> tuple[list[str], np.ndarray]:
    """Split a text file into header lines and a float table (rows × columns)."""
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise SpectrumFormatError(f"{path}: cannot read spectrum file ({exc.strerror or exc})") from exc
    header: list[str] = []
    rows: list[list[float]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            header.append(line)
            continue
        words = [w for w in _SPLIT.split(line) if w]
        try:
            values = [float(w) for w in words]
        except ValueError:
            if rows:
                raise SpectrumFormatError(
                    f"{path}: line {lineno} is not numeric ({line[:60]!r}); expected columns of numbers "
                    "after the header"
                ) from None
            header.append("#" + line)
            continue
        if rows and len(values) != len(rows[0]):
            raise SpectrumFormatError(
                f"{path}: line {lineno} has {len(values)} columns, expected {len(rows[0])} like the lines before"
            )
        rows.append(values)
    if not rows:
        raise SpectrumFormatError(f"{path}: no numeric data found; expected columns 'energy value ...'")
    table = np.asarray(rows, dtype=np.float64)
    if table.shape[1] < 2:
        raise SpectrumFormatError(f"{path}: one column only; expected at least energy and one value column")
    return header, table


def _kind_and_columns(
    names: list[str], header: list[str], path: Path
) -> tuple[SpectrumKind, int, int | None, int | None]:
    """Decide the spectrum kind and which columns hold μ (or i0 and itrans)."""
    i0 = next((i for i, n in enumerate(names) if n in _I0_NAMES), None)
    it = next((i for i, n in enumerate(names) if n in _IT_NAMES), None)
    if i0 is not None and it is not None:
        return "counts", -1, i0, it
    norm = next((i for i, n in enumerate(names) if n in _NORM_NAMES), None)
    if norm is not None:
        return "normalized", norm, None, None
    mu = next((i for i, n in enumerate(names) if n in _MU_NAMES), 1)
    text = " ".join(header).lower()
    # Athena/ALS ``.e`` exports hold normalized mu(E), with or without a ``#%`` header.
    if path.suffix.lower() == ".e" or ("normalized" in text and "un-normalized" not in text):
        return "normalized", mu, None, None
    return "mu", mu, None, None


def read_spectrum(path: str | Path, *, kind: SpectrumKind | None = None) -> Spectrum:
    """Read one absorption spectrum file.

    Formats: XDI (``# Column.N:`` headers; raw ``i0``/``itrans`` counts become μ = ln(i0/itrans)), Athena/ALS
    ``.e`` files (``#%`` headers, normalized μ), and two- or three-column text (energy, μ[, dμ]) with any
    whitespace, comma or semicolon delimiter and ``#`` comment lines. Energies in keV (all below 100) are
    converted to eV; repeated energies are averaged; a scan recorded downwards is reversed.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.
    kind : {"counts", "mu", "normalized"}, optional
        Override the detected kind of the value column.

    Returns
    -------
    Spectrum
        Energies in eV, strictly increasing.

    Raises
    ------
    SpectrumFormatError
        The file is unreadable, has no numeric table, non-finite values, non-positive counts, or
        energies that are neither increasing nor decreasing; the message names the file and line or point.
    """
    path = input_file(path, "spectrum file")
    header, table = _read_table(path)
    names = _column_names(header, table.shape[1])
    detected, mu_col, i0_col, it_col = _kind_and_columns(names, header, path)
    energy = table[:, 0].copy()
    meta: dict[str, object] = {"columns": names, **_header_metadata(header)}
    if np.nanmax(np.abs(energy)) < 100.0:
        energy *= 1000.0
        meta["energy_unit_in_file"] = "keV"
    i0 = itrans = None
    if detected == "counts":
        i0, itrans = table[:, i0_col], table[:, it_col]
        if (i0 <= 0).any() or (itrans <= 0).any():
            j = int(np.flatnonzero((i0 <= 0) | (itrans <= 0))[0])
            raise SpectrumFormatError(
                f"{path}: counts must be positive for mu = ln(i0/itrans); point {j} has i0={i0[j]}, itrans={itrans[j]}"
            )
        mu = np.log(i0 / itrans)
    else:
        mu = table[:, mu_col]
    if energy.size > 1 and (np.diff(energy) <= 0).all():
        energy, mu = energy[::-1], mu[::-1]
        i0 = None if i0 is None else i0[::-1]
        itrans = None if itrans is None else itrans[::-1]
    finite = np.isfinite(energy)
    if not finite.all():
        j = int(np.flatnonzero(~finite)[0])
        raise SpectrumFormatError(
            f"{path}: energy at point {j} is {energy[j]!r}; expected a finite number in eV"
        )
    energy, mu, i0, itrans = _merge_repeats(energy, mu, i0, itrans)
    return Spectrum(
        energy=energy,
        mu=mu,
        name=path.stem,
        kind=kind or detected,
        path=path,
        i0=i0,
        itrans=itrans,
        metadata=meta,
    )


def _merge_repeats(
    energy: np.ndarray, mu: np.ndarray, i0: np.ndarray | None, itrans: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Average points recorded at exactly the same energy (consecutive repeats)."""
    if energy.size < 2 or not (np.diff(energy) == 0).any():
        return energy, mu, i0, itrans
    starts = np.concatenate([[True], np.diff(energy) != 0])
    group = np.cumsum(starts) - 1
    count = np.bincount(group)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values) / count

    return (
        energy[starts],
        mean(mu),
        None if i0 is None else np.bincount(group, weights=i0),
        None if itrans is None else np.bincount(group, weights=itrans),
    )


def library_files(directory: str | Path) -> list[Path]:
    """Spectrum files below ``directory`` (recursively), sorted, documentation files excluded."""
    root = Path(directory)
    if not root.is_dir():
        raise InputFileError(f"spectrum library directory not found: {root}")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in SPECTRUM_SUFFIXES and not _NOT_SPECTRA.match(p.name)
    )


def load_library(
    directory: str | Path | None = None, *, strict: bool = False, files: Iterable[Path] | None = None
) -> list[Spectrum]:
    """Read every spectrum of a reference library.

    Parameters
    ----------
    directory : str or pathlib.Path, optional
        Library directory, searched recursively; ``None`` means the bundled Fe K library.
    strict : bool
        Raise on the first unreadable file instead of skipping it with a logged warning.
    files : iterable of pathlib.Path, optional
        Read exactly these files instead of listing ``directory``.

    Returns
    -------
    list of Spectrum
        In file-name order. Each spectrum's ``metadata["library_path"]`` is its path relative to the library.
    """
    root = bundled_library_dir() if directory is None else Path(directory)
    spectra: list[Spectrum] = []
    for path in files if files is not None else library_files(root):
        try:
            spectrum = read_spectrum(path)
        except SpectrumFormatError as exc:
            if strict:
                raise
            logger.warning("skipping %s", exc)
            continue
        try:
            spectrum.metadata["library_path"] = path.relative_to(root).as_posix()
        except ValueError:
            spectrum.metadata["library_path"] = path.name
        spectra.append(spectrum)
    return spectra
