"""Powder pattern readers: GSAS STD/ESD/ALT/FXYE, xy/xye/csv, FullProf .dat, Bruker UXD and RAW.

Every reader returns a :class:`Pattern` with strictly increasing 2θ (deg), counts and their standard
uncertainties. Counting statistics (σ = √counts, at least 1) are assumed when a file gives no errors;
a file without errors that holds negative counts (background-subtracted data) is refused, since
√counts means nothing there. A text file with more than three columns needs a header naming them
(GSAS-II's CSV export: ``x, y_obs, weight, ...``; a weight column gives σ = 1/√w).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xbeam_bluesky._inputs import input_file
from xbeam_bluesky.errors import PatternFormatError

__all__ = ["Pattern", "read_pattern"]


@dataclass
class Pattern:
    """A measured powder pattern.

    Attributes
    ----------
    two_theta
        Strictly increasing 2θ (deg).
    counts
        Observed intensity (counts).
    sigma
        Standard uncertainty of each count; ``inf`` marks a point with no weight.
    source
        File it came from and its format.
    radiation
        "neutron" when the file says so (a GSAS .CWN file, or "neutron" in a GSAS title line), else "".
    """

    two_theta: np.ndarray
    counts: np.ndarray
    sigma: np.ndarray
    source: str = ""
    radiation: str = ""

    def __post_init__(self) -> None:
        self.two_theta = np.asarray(self.two_theta, dtype=float)
        self.counts = np.asarray(self.counts, dtype=float)
        self.sigma = np.asarray(self.sigma, dtype=float)
        where = self.source or "pattern"
        if not (self.two_theta.shape == self.counts.shape == self.sigma.shape) or self.two_theta.ndim != 1:
            raise PatternFormatError(f"{where}: 2θ, counts and sigma must be 1-D arrays of the same length")
        if self.two_theta.size < 10:
            raise PatternFormatError(
                f"{where}: only {self.two_theta.size} points; expected a powder pattern (≥ 10 points)"
            )
        if not np.all(np.isfinite(self.two_theta)):
            raise PatternFormatError(f"{where}: 2θ contains NaN or infinite values")
        bad = ~np.isfinite(self.counts)
        if np.any(bad):
            raise PatternFormatError(
                f"{where}: {int(bad.sum())} counts are NaN or infinite (first at 2θ = {self.two_theta[bad][0]:.4f} deg)"
            )
        steps = np.diff(self.two_theta)
        if np.any(steps <= 0):
            i = int(np.argmax(steps <= 0))
            raise PatternFormatError(
                f"{where}: 2θ is not strictly increasing (at point {i + 1}: {self.two_theta[i]:.5f} -> "
                f"{self.two_theta[i + 1]:.5f} deg)"
            )
        if self.two_theta[0] <= 0 or self.two_theta[-1] >= 180:
            raise PatternFormatError(
                f"{where}: 2θ must lie in (0, 180) deg, got {self.two_theta[0]}..{self.two_theta[-1]}"
            )
        if np.any(np.isnan(self.sigma)) or np.any(self.sigma <= 0):
            raise PatternFormatError(
                f"{where}: standard uncertainties must be positive (use inf for zero weight)"
            )
        if not np.any((self.counts > 0) & np.isfinite(self.sigma)):
            raise PatternFormatError(
                f"{where}: no weighted point has a positive count (an empty or all-zero pattern); "
                "expected measured intensities"
            )

    @property
    def weights(self) -> np.ndarray:
        """Least-squares weights 1/σ²."""
        return 1.0 / self.sigma**2

    def select(self, lo: float, hi: float) -> np.ndarray:
        """Boolean mask of the points with lo ≤ 2θ ≤ hi (deg)."""
        return (self.two_theta >= lo - 1e-9) & (self.two_theta <= hi + 1e-9)


def _counting_sigma(y: np.ndarray, p: Path) -> np.ndarray:
    """σ = √counts (at least 1) for a file without errors; negative counts (background-subtracted data)
    have no counting statistics, so they are refused."""
    neg = y < 0
    if np.any(neg):
        raise PatternFormatError(
            f"pattern file {p}: {int(neg.sum())} negative counts (min {y.min():g}) and no standard "
            "uncertainties: background-subtracted data need their esds (a 2θ, counts, esd file), √counts "
            "does not apply"
        )
    return np.sqrt(np.maximum(y, 1.0))


def read_pattern(path: str | Path) -> Pattern:
    """Read a powder pattern, detecting the format from the content (and the extension for ties).

    Supported: GSAS STD, ESD, ALT and FXYE (``BANK`` line), Bruker RAW (binary v1 ``RAW ``, v2 ``RAW2``,
    v3 ``RAW1.01``; not RAW4.00), Bruker
    UXD text (``_2THETA``/``_STEPSIZE`` keys), FullProf .dat (start/step/end line then counts),
    and 2- or 3-column text (xy, xye, csv; any delimiter; header and ``#``/``!`` comment lines skipped).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The content is in no known format, or the data are invalid (non-monotonic 2θ, NaN counts, ...).
    """
    p = input_file(path, "pattern file")
    raw = p.read_bytes()
    if raw[:4] in (b"RAW ", b"RAW2") or raw[:7] in (b"RAW1.01", b"RAW4.00"):
        return _read_bruker_raw(raw, p)
    if b"\x00" in raw[:2048]:
        raise PatternFormatError(
            f"pattern file {p}: binary content in no known format (expected Bruker RAW, or text)"
        )
    text = raw.decode("latin-1")
    if re.search(r"^BANK\s+\d+", text, re.M):
        return _read_gsas(text, p)
    if re.search(r"^\s*_(2THETA|STEPSIZE|START)\s*=", text, re.M | re.I):
        return _read_uxd(text, p)
    fullprof = _try_fullprof(text, p)
    if fullprof is not None:
        return fullprof
    return _read_columns(text, p)


# ---------------------------------------------------------------------------------------------- GSAS
def _read_gsas(text: str, p: Path) -> Pattern:
    lines = text.splitlines()
    bank_i = next(i for i, line in enumerate(lines) if re.match(r"^BANK\s+\d+", line))
    fields = lines[bank_i].split()
    try:
        nchan = int(fields[2])
        bintyp = fields[4].upper()
    except (IndexError, ValueError) as exc:
        raise PatternFormatError(f"pattern file {p}: malformed GSAS BANK line {lines[bank_i]!r}") from exc
    fmt = fields[-1].upper() if fields[-1].upper() in ("STD", "ESD", "ALT", "FXYE", "FXY") else "STD"
    radiation = "neutron" if p.suffix.lower() == ".cwn" or "neutron" in lines[0].lower() else ""
    body = [line for line in lines[bank_i + 1 :] if line.strip() and not line.startswith("#")]
    if fmt in ("FXYE", "FXY"):
        rows = np.array([[float(v) for v in line.split()[:3]] for line in body if len(line.split()) >= 2])
        x = rows[:, 0] / 100.0
        y = rows[:, 1]
        e = rows[:, 2] if rows.shape[1] > 2 else _counting_sigma(y, p)
        return Pattern(x, y, np.where(e > 0, e, np.inf), f"{p} (GSAS FXYE)", radiation)
    if bintyp not in ("CONST", "CONS") and fmt != "ALT":
        raise PatternFormatError(f"pattern file {p}: GSAS binning {bintyp!r} not supported (expected CONST)")
    if fmt == "ALT":
        xs, ys, es = [], [], []
        for line in body:
            for k in range(4):
                chunk = line[k * 20 : (k + 1) * 20]
                if not chunk.strip():
                    continue
                # GSAS ALT records (as GSAS-II reads them): 2θ in 1/32 centidegree, y and esd × 1000
                xs.append(float(chunk[0:8]) / 3200.0)
                ys.append(float(chunk[8:15]) / 1000.0)
                es.append(float(chunk[15:20]) / 1000.0)
        x, y, e = (np.array(v[:nchan]) for v in (xs, ys, es))
        return Pattern(x, y, np.where((e > 0) & (y > 0), e, np.inf), f"{p} (GSAS ALT)", radiation)
    start = float(fields[5]) / 100.0
    step = float(fields[6]) / 100.0
    x = start + step * np.arange(nchan)
    if fmt == "ESD":
        vals = []
        for line in body:
            for k in range(10):
                chunk = line[k * 8 : (k + 1) * 8]
                if chunk.strip():
                    vals.append(float(chunk))
        arr = np.array(vals[: 2 * nchan]).reshape(-1, 2)
        y, e = arr[:, 0], arr[:, 1]
        sigma = np.where((e > 0) & (y > 0), e, np.inf)  # as GSAS-II: y ≤ 0 carries no weight
        return Pattern(x[: len(y)], y, sigma, f"{p} (GSAS ESD)", radiation)
    ys, ns = [], []
    for line in body:
        for k in range(10):
            chunk = line[k * 8 : (k + 1) * 8]
            if not chunk.strip():
                continue
            nc = chunk[0:2].strip()
            ns.append(max(int(nc), 1) if nc else 1)
            ys.append(float(chunk[2:8]))
    y = np.array(ys[:nchan])
    n = np.array(ns[:nchan], dtype=float)
    if len(y) < nchan:
        raise PatternFormatError(
            f"pattern file {p}: GSAS STD holds {len(y)} values, BANK line promises {nchan}"
        )
    var = y / n
    sigma = np.where(
        var > 0, np.sqrt(np.maximum(var, 1e-300)), np.inf
    )  # zero counts carry no weight (as GSAS-II)
    return Pattern(x, y, sigma, f"{p} (GSAS STD)", radiation)


# --------------------------------------------------------------------------------------------- Bruker
def _read_bruker_raw(raw: bytes, p: Path) -> Pattern:
    head = raw[:7]
    if head == b"RAW1.01":
        return _read_raw_v3(raw, p)
    if raw[:4] == b"RAW ":
        return _read_raw_v1(raw, p)
    if raw[:4] == b"RAW2":
        return _read_raw_v2(raw, p)
    raise PatternFormatError(
        f"pattern file {p}: Bruker RAW variant {raw[:7]!r} not supported "
        "(supported: 'RAW ' v1, 'RAW2' v2, 'RAW1.01' v3; export RAW4.00 files to xy or UXD)"
    )


def _read_raw_v3(raw: bytes, p: Path) -> Pattern:
    """DIFFRAC-plus RAW (magic ``RAW1.01``): 712-byte file header, then ranges of float32 counts."""
    n_ranges = struct.unpack_from("<I", raw, 12)[0]
    pos = 712
    xs, ys = [], []
    for _ in range(max(n_ranges, 1)):
        if pos + 304 > len(raw):
            break
        header_len, steps = struct.unpack_from("<II", raw, pos)
        start_2theta = struct.unpack_from("<d", raw, pos + 16)[0]
        step = struct.unpack_from("<d", raw, pos + 176)[0]
        supp = struct.unpack_from("<I", raw, pos + 256)[0]
        data0 = pos + header_len + supp
        if header_len != 304 or step <= 0 or data0 + 4 * steps > len(raw):
            raise PatternFormatError(f"pattern file {p}: corrupt Bruker RAW1.01 range header at byte {pos}")
        ys.append(np.frombuffer(raw, dtype="<f4", count=steps, offset=data0).astype(float))
        xs.append(start_2theta + step * np.arange(steps))
        pos = data0 + 4 * steps
    if not xs:
        raise PatternFormatError(f"pattern file {p}: Bruker RAW1.01 without data ranges")
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Pattern(x, y, _counting_sigma(y, p), f"{p} (Bruker RAW1.01)")


def _read_raw_v1(raw: bytes, p: Path) -> Pattern:
    """DIFFRAC-AT RAW version 1 (magic ``RAW ``).

    Each range: uint32 steps, float32 time per step, float32 step, uint32 scan mode, 4 spare bytes,
    float32 start 2θ, float32 start θ, 32-byte sample name, float32 Kα1, Kα2, 72 spare bytes, uint32
    "another range follows", then float32 counts. Later ranges may repeat the ``RAW `` marker.
    """
    pos = 4
    xs, ys = [], []
    more = 1
    while more and pos + 144 <= len(raw):
        if xs and raw[pos : pos + 4] == b"RAW ":
            pos += 4
        steps = struct.unpack_from("<I", raw, pos)[0]
        step = struct.unpack_from("<f", raw, pos + 8)[0]
        start = struct.unpack_from("<f", raw, pos + 20)[0]
        more = struct.unpack_from("<I", raw, pos + 140)[0]
        if steps == 0 or step <= 0 or pos + 144 + 4 * steps > len(raw):
            raise PatternFormatError(f"pattern file {p}: corrupt Bruker RAW v1 range header at byte {pos}")
        ys.append(np.frombuffer(raw, dtype="<f4", count=steps, offset=pos + 144).astype(float))
        xs.append(start + step * np.arange(steps))
        pos += 144 + 4 * steps
    if not xs:
        raise PatternFormatError(f"pattern file {p}: Bruker RAW v1 without readable ranges")
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Pattern(x, y, _counting_sigma(y, p), f"{p} (Bruker RAW v1)")


def _read_raw_v2(raw: bytes, p: Path) -> Pattern:
    """DIFFRAC-AT RAW version 2 (magic ``RAW2``): uint16 range count at byte 4, ranges from byte 256.

    Range header: uint16 header length, uint16 steps, 4 spare bytes, float32 time per step, float32 step,
    float32 start 2θ, ...; counts (float32) follow the header.
    """
    n_ranges = struct.unpack_from("<H", raw, 4)[0]
    pos = 256
    xs, ys = [], []
    for _ in range(n_ranges):
        if pos + 48 > len(raw):
            break
        header_len, steps = struct.unpack_from("<HH", raw, pos)
        step, start = struct.unpack_from("<ff", raw, pos + 12)
        data0 = pos + header_len
        if header_len < 48 or step <= 0 or data0 + 4 * steps > len(raw):
            raise PatternFormatError(f"pattern file {p}: corrupt Bruker RAW2 range header at byte {pos}")
        ys.append(np.frombuffer(raw, dtype="<f4", count=steps, offset=data0).astype(float))
        xs.append(start + step * np.arange(steps))
        pos = data0 + 4 * steps
    if not xs:
        raise PatternFormatError(f"pattern file {p}: Bruker RAW2 without data ranges")
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Pattern(x, y, _counting_sigma(y, p), f"{p} (Bruker RAW2)")


def _read_uxd(text: str, p: Path) -> Pattern:
    keys: dict[str, float] = {}
    pairs: list[tuple[float, float]] = []
    counts: list[float] = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        m = re.match(r"_([A-Z0-9_]+)\s*=\s*(.*)$", s, re.I)
        if m:
            try:
                keys[m.group(1).upper()] = float(m.group(2).strip().strip("'\""))
            except ValueError:
                pass
            continue
        if s.startswith("_"):
            continue
        vals = [float(v) for v in re.split(r"[\s,;]+", s) if v]
        if len(vals) == 2 and "STEPSIZE" not in keys:
            pairs.append((vals[0], vals[1]))
        elif len(vals) == 2 and pairs:
            pairs.append((vals[0], vals[1]))
        else:
            counts.extend(vals)
    if pairs and not counts:
        arr = np.array(pairs)
        return Pattern(arr[:, 0], arr[:, 1], _counting_sigma(arr[:, 1], p), f"{p} (Bruker UXD)")
    if counts and "STEPSIZE" in keys and ("2THETA" in keys or "START" in keys):
        start = keys.get("2THETA", keys.get("START"))
        y = np.array(counts)
        x = start + keys["STEPSIZE"] * np.arange(len(y))
        return Pattern(x, y, _counting_sigma(y, p), f"{p} (Bruker UXD)")
    raise PatternFormatError(
        f"pattern file {p}: Bruker UXD without data (expected _2THETA/_STEPSIZE and counts)"
    )


# ---------------------------------------------------------------------------------------- text formats
_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _split(line: str) -> list[str]:
    return [t for t in re.split(r"[\s,;]+", line.strip()) if t]


def _try_fullprof(text: str, p: Path) -> Pattern | None:
    """FullProf free format: title line(s), a 'start step end' line, then counts (several per line)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "!"))]
    for i, line in enumerate(lines[:6]):
        toks = _split(line)
        if len(toks) >= 3 and all(_NUM.match(t) for t in toks[:3]):
            start, step, end = (float(t) for t in toks[:3])
            if not (0 < step < 5 and end > start):
                return None
            n = round((end - start) / step) + 1
            rest = [t for line2 in lines[i + 1 :] for t in _split(line2)]
            if len(rest) < n or not all(_NUM.match(t) for t in rest[:n]):
                return None
            if len(rest) != n and len(rest) != 2 * n:
                return None
            y = np.array([float(t) for t in rest[:n]])
            e = np.array([float(t) for t in rest[n : 2 * n]]) if len(rest) == 2 * n else _counting_sigma(y, p)
            x = start + step * np.arange(n)
            return Pattern(x, y, np.where(e > 0, e, np.inf), f"{p} (FullProf)")
        if len(toks) >= 2 and all(_NUM.match(t) for t in toks):
            return None
    return None


_COUNT_NAMES = {"y", "y_obs", "yobs", "iobs", "i", "int", "intensity", "counts", "count"}
_SIGMA_NAMES = {"e", "esd", "sigma", "sig", "s", "err", "error", "y_esd", "dy", "sigma_y", "y_sigma"}
_WEIGHT_NAMES = {"w", "weight", "wt", "y_weight", "weights"}


def _read_columns(text: str, p: Path) -> Pattern:
    rows: list[list[float]] = []
    header: list[str] = []
    started = False
    for ln, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith(("!", "//", ";")) or (started and s.startswith("#")):
            continue
        toks = _split(s)
        if all(_NUM.match(t) or t.lower() == "nan" for t in toks) and len(toks) >= 2:
            rows.append([float(t) for t in toks])
            started = True
        elif started:
            raise PatternFormatError(f"pattern file {p}: line {ln} is not numeric data: {s[:60]!r}")
        else:
            header = [t.lower().strip("#\"'") for t in _split(s.lstrip("#"))]
    if not rows:
        raise PatternFormatError(
            f"pattern file {p}: no known format (expected GSAS, Bruker RAW/UXD, FullProf .dat, or 2-3 numeric "
            "columns 2θ, counts[, sigma])"
        )
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise PatternFormatError(f"pattern file {p}: rows have different numbers of columns {sorted(widths)}")
    arr = np.array(rows)
    x = arr[:, 0]
    if arr.shape[1] <= 3:
        y = arr[:, 1]
        if arr.shape[1] == 3 and len(header) == 3 and header[2] in _WEIGHT_NAMES:
            return Pattern(x, y, _weight_sigma(arr[:, 2]), f"{p} (columns, weights)")
        e = arr[:, 2] if arr.shape[1] > 2 else _counting_sigma(y, p)
        return Pattern(x, y, np.where(e > 0, e, np.inf), f"{p} (columns)")
    # more than three columns (e.g. GSAS-II's CSV export x, y_obs, weight, y_calc, y_bkg): the header decides
    if len(header) != arr.shape[1]:
        raise PatternFormatError(
            f"pattern file {p}: {arr.shape[1]} numeric columns and no header line naming them; expected 2θ, "
            "counts[, sigma], or a header such as 'x, y_obs, weight, y_calc, y_bkg' (GSAS-II CSV)"
        )
    i_y = next((i for i, h in enumerate(header) if i > 0 and h in _COUNT_NAMES), None)
    i_w = next((i for i, h in enumerate(header) if h in _WEIGHT_NAMES), None)
    i_e = next((i for i, h in enumerate(header) if h in _SIGMA_NAMES), None)
    if i_y is None or (i_w is None and i_e is None):
        raise PatternFormatError(
            f"pattern file {p}: header {header} names no counts column ({', '.join(sorted(_COUNT_NAMES))}) "
            f"or no weight/esd column ({', '.join(sorted(_WEIGHT_NAMES | _SIGMA_NAMES))})"
        )
    y = arr[:, i_y]
    if i_e is not None:
        e = arr[:, i_e]
        return Pattern(x, y, np.where(e > 0, e, np.inf), f"{p} (columns: esd {header[i_e]!r})")
    return Pattern(x, y, _weight_sigma(arr[:, i_w]), f"{p} (columns: weight {header[i_w]!r})")


def _weight_sigma(w: np.ndarray) -> np.ndarray:
    """σ = 1/√w from least-squares weights; a zero weight is a point without weight."""
    with np.errstate(divide="ignore"):
        return np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), np.inf)
