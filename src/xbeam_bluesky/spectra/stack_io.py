"""Readers for measured spectromicroscopy stacks: aXis2000 ``.hdr``/``.xim``, multi-page TIFF, NeXus NXstxm,
Data Exchange and the project's ``/stack`` + ``/energy`` HDF5 layout.

Every reader returns a :class:`MeasuredStack` (energies in eV, frames (n_energies, ny, nx) as optical density or
transmitted counts, incident counts where the format has them, pixel size, provenance). Transmitted counts become
optical density with :func:`optical_density`, taking I0 from the format, from the user, or from the off-sample
(bright) region of each image as aXis2000 and MANTiS users do (:func:`bright_region_i0`).

Pure science: numpy, h5py, tifffile; no bluesky.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from xbeam_bluesky._inputs import input_file
from xbeam_bluesky.errors import StackFormatError

StackKind = Literal["od", "counts"]

#: File endings :func:`read_stack` understands (case-insensitive).
STACK_SUFFIXES: dict[str, str] = {
    ".hdr": "aXis2000 header (+ one .xim per energy)",
    ".tif": "multi-page TIFF (+ energy list)",
    ".tiff": "multi-page TIFF (+ energy list)",
    ".h5": "HDF5 (NXstxm, Data Exchange or /stack + /energy)",
    ".hdf5": "HDF5 (NXstxm, Data Exchange or /stack + /energy)",
    ".nxs": "NeXus NXstxm",
    ".hdf": "HDF5 (NXstxm, Data Exchange or /stack + /energy)",
}


#: Largest median |value| an absorbance stack can have: μt is typically 0–5; raw counts or a ×1000 absorbance
#: are far above (the clustering applies the same rule to the frames it samples).
MAX_MEDIAN_ABSORBANCE = 20.0


def _median_abs(frames: NDArray[np.float32], n_sample: int = 100_000) -> float:
    """Median |value| of the finite values among about ``n_sample`` evenly strided ones (0 if none is finite)."""
    flat = frames.reshape(-1)
    sample = np.abs(flat[:: max(1, flat.size // n_sample)])
    sample = sample[np.isfinite(sample)]
    return float(np.median(sample)) if sample.size else 0.0


@dataclass(frozen=True, eq=False)
class MeasuredStack:
    """An image stack as read from a file.

    Attributes
    ----------
    energies : numpy.ndarray
        Photon energy of each frame, eV, shape (n_energies,).
    frames : numpy.ndarray
        float32, shape (n_energies, ny, nx): optical density ``−ln(I/I0)`` when ``kind == "od"``, transmitted
        counts per pixel when ``kind == "counts"``.
    kind : {"od", "counts"}
        What ``frames`` holds.
    i0 : numpy.ndarray or None
        Incident counts per pixel per frame, one per energy, where the format records them (counts only).
    pixel_um : float or None
        Pixel size, µm.
    dwell_ms : float or numpy.ndarray or None
        Dwell (count time) per pixel, ms: one number or one per energy.
    provenance : dict
        The file, its format and what was read from it (JSON-friendly).
    """

    energies: NDArray[np.float64]
    frames: NDArray[np.float32]
    kind: StackKind
    i0: NDArray[np.float64] | None = None
    pixel_um: float | None = None
    dwell_ms: float | NDArray[np.float64] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.provenance.get("file", "stack")
        energies = np.asarray(self.energies, dtype=np.float64).ravel()
        frames = np.asarray(self.frames, dtype=np.float32)
        if frames.ndim != 3:
            raise StackFormatError(f"{where}: frames of shape {frames.shape}; expected 3-D (energy, y, x)")
        if energies.size != frames.shape[0]:
            raise StackFormatError(
                f"{where}: {energies.size} energies for {frames.shape[0]} frames; expected one energy per frame"
            )
        if not np.all(np.isfinite(energies) & (energies > 0)):
            raise StackFormatError(f"{where}: energies must be positive finite eV, got {energies[:5]}…")
        if self.kind not in ("od", "counts"):
            raise StackFormatError(f"{where}: kind={self.kind!r}; expected 'od' or 'counts'")
        if self.kind == "od":
            level = _median_abs(frames)
            if level > MAX_MEDIAN_ABSORBANCE:
                raise StackFormatError(
                    f"{where}: absorbance frames with median |value| {level:.4g}; expected absorbance "
                    f"μt = −ln(I/I0), typically 0–5 (median at most {MAX_MEDIAN_ABSORBANCE:g}). Is this raw counts "
                    "or a scaled absorbance? Store −ln(I/I0), or read the file as transmitted counts"
                )
        if self.i0 is not None:
            i0 = np.asarray(self.i0, dtype=np.float64).ravel()
            if i0.size != energies.size or not np.all(np.isfinite(i0) & (i0 > 0)):
                raise StackFormatError(
                    f"{where}: I0 must be {energies.size} positive finite counts (one per energy)"
                )
            object.__setattr__(self, "i0", i0)
        object.__setattr__(self, "energies", energies)
        object.__setattr__(self, "frames", frames)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_energies, ny, nx)."""
        return tuple(int(s) for s in self.frames.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- aXis2000 / ALS


def _points(text: str, name: str, path: Path) -> NDArray[np.float64]:
    """The ``Points = (n, v1, …, vn)`` list of the axis block named ``name``."""
    m = re.search(name + r"\s*=\s*\{[^{}]*?Points\s*=\s*\(([^)]*)\)", text, re.DOTALL)
    if m is None:
        raise StackFormatError(f"{path}: no {name} with a Points list; expected an aXis2000 ScanDefinition")
    values = np.array([float(v) for v in m.group(1).replace("\n", " ").split(",") if v.strip()])
    n = int(values[0])
    if values.size != n + 1:
        raise StackFormatError(f"{path}: {name} announces {n} points but lists {values.size - 1}")
    return values[1:]


def parse_axis2000_header(path: str | Path) -> dict[str, Any]:
    """Read the ScanDefinition of an aXis2000/ALS STXM ``.hdr`` file.

    Parameters
    ----------
    path : str or pathlib.Path
        The header.

    Returns
    -------
    dict
        ``x_um``, ``y_um`` (sample positions of the columns and rows, µm), ``energies`` (eV), ``dwell_ms``,
        ``label``, ``type`` and ``ring_current_mA`` (image number → storage-ring current as the header lists them,
        else None).

    Raises
    ------
    StackFormatError
        No ScanDefinition, or an axis without its points.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise StackFormatError(f"{path}: cannot read the header ({exc.strerror or exc})") from exc
    if "ScanDefinition" not in text:
        raise StackFormatError(f"{path}: no 'ScanDefinition'; expected an aXis2000/ALS STXM header")
    dwell = re.search(r"ScanDefinition\s*=\s*\{[^{}]*?Dwell\s*=\s*([-+.\deE]+)", text)
    label = re.search(r'Label\s*=\s*"([^"]*)"', text)
    kind = re.search(r'Type\s*=\s*"([^"]*)"', text)
    currents = {
        int(k): float(v)
        for k, v in re.findall(r"Image(\d+)\s*=\s*\{\s*StorageRingCurrent\s*=\s*([-+.\deE]+)", text)
    }
    return {
        "x_um": _points(text, "PAxis", path),
        "y_um": _points(text, "QAxis", path),
        "energies": _points(text, "StackAxis", path),
        "dwell_ms": float(dwell.group(1)) if dwell else None,
        "label": label.group(1) if label else path.name,
        "type": kind.group(1) if kind else None,
        "ring_current_mA": currents or None,
    }


def read_xim(path: str | Path, shape: tuple[int, int] | None = None) -> NDArray[np.float32]:
    """One aXis2000 ``.xim`` image: a whitespace-separated text matrix (rows = y).

    Parameters
    ----------
    path : str or pathlib.Path
        The image file.
    shape : tuple of int, optional
        Expected (ny, nx), e.g. from the header.

    Returns
    -------
    numpy.ndarray
        float32 image.
    """
    path = Path(path)
    try:
        image = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise StackFormatError(f"{path}: not an .xim text matrix of numbers ({exc})") from exc
    if shape is not None and image.shape != tuple(shape):
        raise StackFormatError(f"{path}: image of {image.shape[0]}×{image.shape[1]} (rows × columns); the header "
                               f"expects {shape[0]}×{shape[1]}")  # fmt: skip
    return image.astype(np.float32)


def read_axis2000(path: str | Path) -> MeasuredStack:
    """An aXis2000/ALS STXM stack: the ``.hdr`` header and its ``<stem>_aNNN.xim`` images (transmitted counts).

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.hdr`` file; the images are looked for next to it, numbered from ``_a000`` in energy order.

    Returns
    -------
    MeasuredStack
        ``kind="counts"``, no I0 (the header records none), pixel size from the x axis.
    """
    path = Path(path)
    header = parse_axis2000_header(path)
    ny, nx = header["y_um"].size, header["x_um"].size
    energies = header["energies"]
    digits = 3 if energies.size <= 1000 else len(str(energies.size - 1))
    files = [path.with_name(f"{path.stem}_a{k:0{digits}d}.xim") for k in range(energies.size)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise StackFormatError(
            f"{path}: the header lists {energies.size} energies but {len(missing)} images are missing "
            f"(first {missing[0]}); expected one {path.stem}_aNNN.xim per energy next to the header"
        )
    frames = np.stack([read_xim(f, (ny, nx)) for f in files])
    steps = np.abs(np.diff(header["x_um"]))
    return MeasuredStack(
        energies=energies,
        frames=frames,
        kind="counts",
        pixel_um=float(np.median(steps)) if steps.size else None,
        dwell_ms=header["dwell_ms"],
        provenance={"file": str(path), "format": "aXis2000 .hdr/.xim", "label": header["label"],
                    "images": len(files), "ring_current_mA": header["ring_current_mA"]},
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------- TIFF


def read_energy_list(path: str | Path) -> NDArray[np.float64]:
    """Energies (eV) from a text file: one per line, or the first column of a table; ``#`` lines are comments."""
    path = Path(path)
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#", delimiter=None)
    except (OSError, ValueError) as exc:
        raise StackFormatError(
            f"{path}: not an energy list ({exc}); expected one energy in eV per line"
        ) from exc
    energies = table[:, 0]
    if energies.size and np.nanmax(energies) < 100.0:
        energies = energies * 1000.0  # keV
    return energies


def read_tiff_stack(
    path: str | Path, energies: NDArray[np.float64] | str | Path | None = None, *, kind: StackKind = "counts"
) -> MeasuredStack:
    """A multi-page TIFF stack (one page per energy, as TXM and nanoprobe stacks are written).

    Parameters
    ----------
    path : str or pathlib.Path
        The TIFF file.
    energies : array_like or path, optional
        Energies in eV (or keV, all below 100) one per page, or a text file of them; default: a file next to the
        TIFF named ``<stem>.txt``, ``<stem>_energies.txt``, ``energies.txt`` or ``Energy.txt``.
    kind : {"counts", "od"}
        What the pages hold.

    Returns
    -------
    MeasuredStack
    """
    import tifffile

    path = Path(path)
    path = input_file(path, "TIFF stack")
    try:
        frames = np.asarray(tifffile.imread(path), dtype=np.float32)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise StackFormatError(f"{path}: not a readable TIFF ({exc})") from exc
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise StackFormatError(
            f"{path}: TIFF pages of shape {frames.shape}; expected (energy, y, x) grey pages"
        )
    source: str
    if energies is None:
        candidates = [path.with_suffix(".txt"), path.with_name(path.stem + "_energies.txt"),
                      path.with_name("energies.txt"), path.with_name("Energy.txt")]  # fmt: skip
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise StackFormatError(
                f"{path}: no energy list; give the energies (eV, one per page) or put them in "
                f"{candidates[0].name} or energies.txt next to the TIFF"
            )
        energies, source = read_energy_list(found), str(found)
    elif isinstance(energies, (str, Path)):
        energies, source = read_energy_list(energies), str(energies)
    else:
        energies, source = np.asarray(energies, dtype=np.float64), "given"
    if np.size(energies) != frames.shape[0]:
        raise StackFormatError(
            f"{path}: {frames.shape[0]} pages but {np.size(energies)} energies ({source}); expected one per page"
        )
    return MeasuredStack(
        energies=energies, frames=frames, kind=kind,
        provenance={"file": str(path), "format": "multi-page TIFF", "energies": source},
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------- HDF5


def _nx_entry(f: Any) -> Any | None:
    """The first NXentry whose definition is NXstxm (or that has data/data and data/energy)."""
    for name in f:
        group = f[name]
        if not hasattr(group, "keys"):
            continue
        definition = group.get("definition")
        text = definition[()] if definition is not None else b""
        text = text.decode() if isinstance(text, bytes) else str(text)
        if text == "NXstxm" or ("data" in group and "data/data" in group and "data/energy" in group):
            return group
    return None


def _read_nxstxm(f: Any, path: Path) -> MeasuredStack:
    entry = _nx_entry(f)
    data = entry["data"]
    frames = np.asarray(data["data"][()], dtype=np.float32)
    energies = np.asarray(data["energy"][()], dtype=np.float64).ravel()
    if frames.ndim != 3 or frames.shape[0] != energies.size:
        raise StackFormatError(
            f"{path}: {entry.name}/data/data has shape {frames.shape} for {energies.size} energies; expected an "
            "NXstxm image stack (energy, sample_y, sample_x)"
        )
    pixel = None
    if "sample_x" in data and data["sample_x"].size > 1:
        x = np.asarray(data["sample_x"][()], dtype=np.float64).ravel()
        unit = data["sample_x"].attrs.get("units", "um")
        unit = unit.decode() if isinstance(unit, bytes) else str(unit)
        scale = {"um": 1.0, "micron": 1.0, "µm": 1.0, "mm": 1e3, "nm": 1e-3, "m": 1e6}.get(unit, 1.0)
        pixel = float(np.median(np.abs(np.diff(x)))) * scale
    dwell = None
    if "count_time" in data:
        t = np.asarray(data["count_time"][()], dtype=np.float64)
        unit = data["count_time"].attrs.get("units", "s")
        unit = unit.decode() if isinstance(unit, bytes) else str(unit)
        t = t * {"s": 1e3, "ms": 1.0, "us": 1e-3}.get(unit, 1e3)
        dwell = float(t) if t.size == 1 else (t.ravel() if t.size == energies.size else float(np.median(t)))
    i0 = None
    if "control" in entry and "data" in entry["control"]:
        monitor = np.asarray(entry["control/data"][()], dtype=np.float64)
        if monitor.size == energies.size:
            i0 = monitor.ravel()
    return MeasuredStack(
        energies=energies, frames=frames, kind="counts", i0=i0, pixel_um=pixel, dwell_ms=dwell,
        provenance={"file": str(path), "format": "NeXus NXstxm", "entry": entry.name,
                    "i0": "control/data (NXmonitor)" if i0 is not None else None},
    )  # fmt: skip


def _read_data_exchange(f: Any, path: Path) -> MeasuredStack:
    exchange = f["exchange"]
    frames = np.asarray(exchange["data"][()], dtype=np.float32)
    if "energy" not in exchange:
        raise StackFormatError(f"{path}: /exchange has no 'energy'; expected the energy (eV) of each frame")
    energies = np.asarray(exchange["energy"][()], dtype=np.float64).ravel()
    if energies.size and energies.max() < 100.0:
        energies = energies * 1000.0
    kind: StackKind = "counts"
    i0 = None
    if "data_white" in exchange:
        white = np.asarray(exchange["data_white"][()], dtype=np.float64)
        dark = np.asarray(exchange["data_dark"][()], dtype=np.float64) if "data_dark" in exchange else 0.0
        if white.shape != frames.shape:
            raise StackFormatError(
                f"{path}: /exchange/data_white of shape {white.shape}; expected one flat per frame {frames.shape}"
            )
        flat = np.maximum(white - dark, 1.0)
        i0 = flat.reshape(flat.shape[0], -1).mean(axis=1)
        frames = (-np.log(np.maximum(frames - dark, 1.0) / flat)).astype(np.float32)
        kind = "od"
    return MeasuredStack(
        energies=energies, frames=frames, kind=kind, i0=i0,
        provenance={"file": str(path), "format": "Data Exchange",
                    "i0": "data_white (flat-field corrected per pixel)" if i0 is not None else None},
    )  # fmt: skip


def _read_xbeam_hdf5(f: Any, path: Path) -> MeasuredStack:
    if "energy" not in f:
        raise StackFormatError(
            f"{path}: no dataset /energy (expected the energies in eV, one per /stack frame)"
        )
    attr_i0 = f["stack"].attrs.get("i0_counts")
    energies = np.asarray(f["energy"][()], dtype=np.float64).ravel()
    i0 = None
    if attr_i0 is not None:
        i0 = np.broadcast_to(np.asarray(attr_i0, dtype=np.float64), energies.shape).copy()
    return MeasuredStack(
        energies=energies, frames=np.asarray(f["stack"][()], dtype=np.float32), kind="od", i0=i0,
        provenance={"file": str(path), "format": "xbeam HDF5 (/stack absorbance, /energy)",
                    "i0": "/stack attribute i0_counts" if i0 is not None else None},
    )  # fmt: skip


def read_hdf5_stack(path: str | Path) -> MeasuredStack:
    """An HDF5 stack: NeXus NXstxm (``entry/data/data``, ``energy``, ``sample_x/y``, ``count_time``, I0 from
    ``entry/control/data``), Data Exchange (``/exchange/data``, ``energy``, ``data_white``/``data_dark``) or the
    project's ``/stack`` (absorbance) + ``/energy`` layout, told apart by their contents."""
    import h5py

    path = Path(path)
    path = input_file(path, "stack file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StackFormatError(f"{path}: not an HDF5 file ({exc})") from exc
    with f:
        if _nx_entry(f) is not None:
            return _read_nxstxm(f, path)
        if "exchange" in f and "data" in f["exchange"]:
            return _read_data_exchange(f, path)
        if "stack" in f:
            return _read_xbeam_hdf5(f, path)
    raise StackFormatError(
        f"{path}: found none of an NXstxm entry (entry/data/data + energy), /exchange/data or /stack + /energy"
    )


def read_stack(path: str | Path, *, energies: Any = None, kind: StackKind | None = None) -> MeasuredStack:
    """Read a spectromicroscopy stack, choosing the reader by the file ending.

    Parameters
    ----------
    path : str or pathlib.Path
        ``.hdr`` (aXis2000 + ``.xim`` images), ``.tif``/``.tiff`` (multi-page, with an energy list), or
        ``.h5``/``.hdf5``/``.nxs``/``.hdf`` (NXstxm, Data Exchange or ``/stack`` + ``/energy``).
    energies : array_like or path, optional
        Energies for a TIFF stack (see :func:`read_tiff_stack`).
    kind : {"counts", "od"}, optional
        For a TIFF stack: what the pages hold (default counts).

    Returns
    -------
    MeasuredStack
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STACK_SUFFIXES:
        known = ", ".join(sorted(STACK_SUFFIXES))
        raise StackFormatError(
            f"{path}: unknown stack format {suffix or '(no ending)'!r}; expected one of {known}"
        )
    input_file(path, "HDF5 file" if suffix in (".h5", ".hdf5", ".nxs", ".hdf") else "stack file")
    if suffix == ".hdr":
        return read_axis2000(path)
    if suffix in (".tif", ".tiff"):
        return read_tiff_stack(path, energies, kind=kind or "counts")
    return read_hdf5_stack(path)


# ------------------------------------------------------------------------------------ transmission → OD


@dataclass(frozen=True)
class IncidentCounts:
    """I0 per energy and how it was obtained.

    Attributes
    ----------
    counts : numpy.ndarray
        Incident counts per pixel per frame, one per energy.
    n_pixels : int
        Pixels averaged into each value (1 when the value was given); the variance of the I0 estimate is that
        of one reading divided by this (the noise model's ``flat_frames``).
    source : str
        Where the values came from.
    mask : numpy.ndarray or None
        The (ny, nx) region used, when taken from the image.
    """

    counts: NDArray[np.float64]
    n_pixels: int
    source: str
    mask: NDArray[np.bool_] | None = None

    def record(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {"source": self.source, "n_pixels": self.n_pixels, "i0_counts": self.counts.tolist()}


def bright_region_i0(
    counts: NDArray[np.floating], *, mask: NDArray[np.bool_] | None = None, fraction: float = 0.1
) -> IncidentCounts:
    """I0 from the off-sample region of each image: the mean counts of the brightest pixels.

    Without ``mask``, the region is the ``fraction`` of pixels with the highest energy-averaged counts (the
    automatic bright-region choice of aXis2000/MANTiS users); pixels with a non-finite value are never used.

    Parameters
    ----------
    counts : numpy.ndarray
        Transmitted counts, shape (n_energies, ny, nx).
    mask : numpy.ndarray of bool, optional
        (ny, nx) region to use instead (a user ROI or mask).
    fraction : float
        Share of the pixels taken as the bright region, in (0, 1].

    Returns
    -------
    IncidentCounts
    """
    counts = np.asarray(counts)
    finite = np.all(np.isfinite(counts), axis=0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != counts.shape[1:]:
            raise StackFormatError(
                f"I0 region of shape {mask.shape}; expected the image shape {counts.shape[1:]}"
            )
        region, source = mask & finite, "user region"
    else:
        if not 0 < fraction <= 1:
            raise StackFormatError(f"I0 bright-region fraction {fraction!r}; expected a share in (0, 1]")
        mean = np.where(finite, np.nanmean(np.where(finite, counts, np.nan), axis=0), -np.inf)
        n = max(int(fraction * finite.sum() + 0.5), 1)
        threshold = np.sort(mean[finite])[-n] if finite.any() else np.inf
        region, source = finite & (mean >= threshold), f"brightest {fraction:.0%} of the pixels"
    if not region.any():
        raise StackFormatError("I0 region holds no pixel with finite counts; expected an off-sample region")
    values = counts[:, region].astype(np.float64).mean(axis=1)
    if not np.all(values > 0):
        k = int(np.flatnonzero(~(values > 0))[0])
        raise StackFormatError(f"I0 region: mean counts {values[k]!r} at frame {k}; expected positive counts")
    return IncidentCounts(values, int(region.sum()), source, region)


def optical_density(
    counts: NDArray[np.floating], i0: NDArray[np.floating], *, floor: float = 0.5
) -> NDArray[np.float32]:
    """OD = −ln(I / I0) per frame, with I clipped below at ``floor`` counts.

    Parameters
    ----------
    counts : numpy.ndarray
        Transmitted counts, shape (n_energies, ny, nx).
    i0 : numpy.ndarray
        Incident counts per energy, shape (n_energies,).
    floor : float
        Smallest count used in the logarithm (an empty pixel is not −∞).

    Returns
    -------
    numpy.ndarray
        float32 optical density, same shape as ``counts``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    i0 = np.asarray(i0, dtype=np.float64).reshape(-1, 1, 1)
    return (-np.log(np.maximum(counts, floor) / i0)).astype(np.float32)
