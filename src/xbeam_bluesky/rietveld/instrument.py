"""Instrument parameters (GSAS-II conventions) and their readers (GSAS .PRM, GSAS-II .instprm)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .axial import AxialDivergence

__all__ = ["ASYMMETRY_MODELS", "Instrument", "read_instrument"]

#: axial-divergence (peak asymmetry) models an instrument can use
ASYMMETRY_MODELS = ("fcj", "full_axial")


@dataclass(frozen=True)
class Instrument:
    """A constant-wavelength Bragg–Brentano diffractometer, in GSAS-II's units.

    Attributes
    ----------
    wavelength1, wavelength2
        Kα1 and Kα2 wavelengths (Å); ``wavelength2 = 0`` for a monochromatic beam.
    ratio
        I(Kα2)/I(Kα1).
    polarization
        GSAS-II polarisation fraction P in LP = [(1 − P) cos²2θ + P] / (2 sin²θ cosθ) (0.7 lab, ~0.99 synchrotron).
    zero
        Zero shift (deg 2θ), added to every peak position.
    u, v, w
        Gaussian variance terms (centidegrees²): σ² = U tan²θ + V tanθ + W.
    x, y
        Lorentzian FWHM terms (centidegrees): γ = X / cosθ + Y tanθ.
    sh_l
        FCJ axial asymmetry S/L + H/L (used when ``asymmetry`` is "fcj").
    goniometer_radius
        Goniometer radius (mm), scales the sample displacement shift and the axial divergence.
    asymmetry
        Axial-divergence model: "fcj" (Finger–Cox–Jephcoat, one parameter SH/L, GSAS-II's) or
        "full_axial" (Cheary–Coelho full axial model from the slit geometry below, see
        :mod:`~xbeam_bluesky.rietveld.axial`).
    soller
        Angular aperture of the primary and secondary Soller slits (deg), "full_axial" only.
    source_length, sample_length, receiver_length
        Axial lengths of the tube focus, the illuminated sample and the receiving slit (mm),
        "full_axial" only; the defaults 12, 15, 12 mm and 2.5° Sollers are a typical lab
        diffractometer with a long-fine-focus tube.
    source
        Where these values came from (file path, or "lab Cu Kα defaults").
    """

    wavelength1: float = 1.5405
    wavelength2: float = 1.5443
    ratio: float = 0.5
    polarization: float = 0.7
    zero: float = 0.0
    u: float = 2.0
    v: float = -2.0
    w: float = 5.0
    x: float = 0.0
    y: float = 0.0
    sh_l: float = 0.002
    goniometer_radius: float = 200.0
    asymmetry: str = "fcj"
    soller: float = 2.5
    source_length: float = 12.0
    sample_length: float = 15.0
    receiver_length: float = 12.0
    source: str = "lab Cu Kα defaults (GSAS-II 'CuKa lab data')"

    def __post_init__(self) -> None:
        if self.asymmetry not in ASYMMETRY_MODELS:
            raise ValueError(
                f"instrument asymmetry {self.asymmetry!r}: expected one of {', '.join(ASYMMETRY_MODELS)}"
            )
        if self.asymmetry == "full_axial":
            self.axial()  # validates the geometry

    @property
    def asymmetry_parameter(self) -> str:
        """The refinable parameter of the asymmetry model: "SH/L" (fcj) or "soller" (full_axial)."""
        return "soller" if self.asymmetry == "full_axial" else "SH/L"

    def axial(self) -> AxialDivergence | None:
        """The axial geometry when ``asymmetry`` is "full_axial", else None."""
        if self.asymmetry != "full_axial":
            return None
        return AxialDivergence(
            soller=self.soller,
            source_length=self.source_length,
            sample_length=self.sample_length,
            receiver_length=self.receiver_length,
            radius=self.goniometer_radius,
        )

    @classmethod
    def lab_cu_ka(cls) -> Instrument:
        """Lab Cu Kα defaults: Kα1 1.5405 Å, Kα2 1.5443 Å, ratio 0.5, P 0.7, U V W 2 −2 5, SH/L 0.002."""
        return cls()

    @classmethod
    def monochromatic(cls, wavelength: float, polarization: float = 0.99) -> Instrument:
        """A single-wavelength (synchrotron) instrument with the default profile terms."""
        return cls(
            wavelength1=wavelength,
            wavelength2=0.0,
            ratio=0.0,
            polarization=polarization,
            source=f"monochromatic {wavelength} Å",
        )

    def with_changes(self, **changes: float | str) -> Instrument:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, float | str]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


def read_instrument(path: str | Path) -> Instrument:
    """Read a GSAS .PRM/.prm/.ins or a GSAS-II .instprm instrument parameter file.

    For old GSAS .PRM files we do what GSAS-II does when it imports them: take the wavelengths,
    polarisation and Kα2 ratio from ``ICONS``, U, V, W from ``PRCF11`` and X, Y from ``PRCF12``,
    and use SH/L = 0.002 (GSAS-II ignores the PRM's S/L, H/L terms).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is neither format, or lacks the wavelength.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"instrument parameter file not found: {p}")
    text = p.read_text(errors="replace")
    if (
        re.search(r"^INS\s+\d*\s*ICONS", text, re.M)
        or "INS   BANK" in text
        or re.search(r"^INS ", text, re.M)
    ):
        return _read_prm(text, p)
    if re.search(r"Lam(1)?\s*:", text):
        return _read_instprm(text, p)
    raise ValueError(
        f"instrument file {p}: not a GSAS .PRM nor a GSAS-II .instprm file (no ICONS or Lam1 entry)"
    )


def _read_prm(text: str, p: Path) -> Instrument:
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("INS"):
            continue
        m = re.match(r"INS\s+\d+\s*(\S+)\s*(.*)$", line)
        if m:
            key = m.group(1)
            fields[key] = m.group(2).split()
            # "PRCF11" is written as "PRCF1" + "1"; keep both spellings.
    icons = fields.get("ICONS")
    if not icons:
        raise ValueError(f"instrument file {p}: GSAS .PRM without an ICONS line (wavelengths)")
    try:
        lam1 = float(icons[0])
        lam2 = float(icons[1]) if len(icons) > 1 else 0.0
        pola = float(icons[4]) if len(icons) > 4 else 0.7
        ratio = float(icons[6]) if len(icons) > 6 else 0.5
    except ValueError as exc:
        raise ValueError(f"instrument file {p}: malformed ICONS line {icons}") from exc
    prof1 = _prcf(text, "11")
    prof2 = _prcf(text, "12")
    u, v, w = prof1[0:3] if len(prof1) >= 3 else [2.0, -2.0, 5.0]
    x, y = prof2[0:2] if len(prof2) >= 2 else (0.0, 0.0)
    return Instrument(
        wavelength1=lam1,
        wavelength2=lam2 if lam2 > 0 else 0.0,
        ratio=ratio if lam2 > 0 else 0.0,
        polarization=pola,
        u=u,
        v=v,
        w=w,
        x=x,
        y=y,
        sh_l=0.002,
        source=str(p),
    )


def _prcf(text: str, suffix: str) -> list[float]:
    m = re.search(rf"^INS\s+1PRCF{suffix}\s+(.*)$", text, re.M)
    if not m:
        return []
    vals = []
    for tok in m.group(1).split():
        try:
            vals.append(float(tok))
        except ValueError:
            break
    return vals


_INSTPRM_KEYS = {
    "Lam1": "wavelength1",
    "Lam": "wavelength1",
    "Lam2": "wavelength2",
    "I(L2)/I(L1)": "ratio",
    "Polariz.": "polarization",
    "Zero": "zero",
    "U": "u",
    "V": "v",
    "W": "w",
    "X": "x",
    "Y": "y",
    "SH/L": "sh_l",
    # xbeam extensions (GSAS-II has no full axial model): the Cheary–Coelho slit geometry
    "Soller": "soller",
    "SourceLength": "source_length",
    "SampleLength": "sample_length",
    "ReceiverLength": "receiver_length",
    "GonioRadius": "goniometer_radius",
}


def _read_instprm(text: str, p: Path) -> Instrument:
    values: dict[str, float] = {}
    asymmetry = "fcj"
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        for item in line.split(";"):
            if ":" not in item:
                continue
            key, _, val = item.partition(":")
            key = key.strip()
            if key == "Asymmetry":
                asymmetry = val.strip()
                if asymmetry not in ASYMMETRY_MODELS:
                    raise ValueError(
                        f"instrument file {p}: Asymmetry {asymmetry!r}: expected one of {', '.join(ASYMMETRY_MODELS)}"
                    )
            elif key in _INSTPRM_KEYS:
                try:
                    values[_INSTPRM_KEYS[key]] = float(val.split(",")[0])
                except ValueError as exc:
                    raise ValueError(
                        f"instrument file {p}: value of {key!r} is not a number: {val!r}"
                    ) from exc
    if "wavelength1" not in values:
        raise ValueError(f"instrument file {p}: no Lam1 (or Lam) wavelength")
    if "wavelength2" not in values:
        values["wavelength2"] = 0.0
        values["ratio"] = 0.0
    try:
        return Instrument(**values, asymmetry=asymmetry, source=str(p))
    except ValueError as exc:
        raise ValueError(f"instrument file {p}: {exc}") from exc
