"""Instrument parameters (GSAS-II conventions) and their readers (GSAS .PRM, GSAS-II .instprm)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from xbeam_bluesky._inputs import input_file
from xbeam_bluesky.errors import RietveldInputError

from .axial import AxialDivergence

__all__ = ["ASYMMETRY_MODELS", "GEOMETRIES", "RADIATIONS", "Instrument", "read_instrument"]

#: axial-divergence (peak asymmetry) models an instrument can use
ASYMMETRY_MODELS = ("fcj", "full_axial")
#: diffraction geometries: flat plate in reflection, or capillary in transmission
GEOMETRIES = ("bragg_brentano", "debye_scherrer")
#: probes the engine can be told about (it computes X-ray scattering only)
RADIATIONS = ("xray", "neutron")
#: polarisation fraction from which a single-wavelength .PRM is taken for a synchrotron capillary line
_SYNCHROTRON_POLARIZATION = 0.9


@dataclass(frozen=True)
class Instrument:
    """A constant-wavelength diffractometer, in GSAS-II's units.

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
    geometry
        "bragg_brentano" (flat plate in reflection: peak shifts from the sample displacement and the
        transparency, no absorption correction) or "debye_scherrer" (capillary in transmission: peak
        shifts from the capillary's offsets perpendicular to and along the beam, GSAS-II DisplaceX and
        DisplaceY, and the cylindrical absorption correction for ``mu_r``).
    mu_r
        μR of the capillary (linear absorption coefficient × radius, dimensionless), "debye_scherrer" only.
    radiation
        "xray" or "neutron" (GSAS HTYPE PX../PN..., GSAS-II Type PX./PN.): the engine computes X-ray
        structure factors only, so a neutron instrument is refused by the refinement.
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
    geometry: str = "bragg_brentano"
    mu_r: float = 0.0
    radiation: str = "xray"
    source: str = "lab Cu Kα defaults (GSAS-II 'CuKa lab data')"

    def __post_init__(self) -> None:
        if self.asymmetry not in ASYMMETRY_MODELS:
            raise RietveldInputError(
                f"instrument asymmetry {self.asymmetry!r}: expected one of {', '.join(ASYMMETRY_MODELS)}"
            )
        if self.asymmetry == "full_axial":
            self.axial()  # validates the geometry
        if self.geometry not in GEOMETRIES:
            raise RietveldInputError(
                f"instrument geometry {self.geometry!r}: expected one of {', '.join(GEOMETRIES)}"
            )
        if self.radiation not in RADIATIONS:
            raise RietveldInputError(
                f"instrument radiation {self.radiation!r}: expected one of {', '.join(RADIATIONS)}"
            )
        if not 0.0 <= self.mu_r <= 30.0:
            raise RietveldInputError(
                f"instrument mu_r {self.mu_r!r}: expected μR between 0 and 30 (dimensionless)"
            )
        if self.mu_r > 0 and self.geometry != "debye_scherrer":
            raise RietveldInputError(
                f"instrument mu_r {self.mu_r}: the cylindrical absorption correction needs the "
                "debye_scherrer geometry (a thick flat Bragg–Brentano sample needs none)"
            )

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
    def monochromatic(
        cls, wavelength: float, polarization: float = 0.99, geometry: str = "bragg_brentano"
    ) -> Instrument:
        """A single-wavelength (synchrotron) instrument with the default profile terms."""
        return cls(
            wavelength1=wavelength,
            wavelength2=0.0,
            ratio=0.0,
            polarization=polarization,
            geometry=geometry,
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
    polarisation and Kα2 ratio from the fixed-width ``ICONS`` fields, U, V, W from ``PRCF11`` and X, Y
    from ``PRCF12``, and use SH/L = 0.002 (GSAS-II ignores the PRM's S/L, H/L terms). The radiation comes
    from ``HTYPE`` (PX.. X-ray, PN.. neutron). A .PRM does not state the sample geometry (the lab and
    the 11-BM files both say HTYPE PXCR), so it is inferred: a single wavelength with polarisation
    ≥ 0.9 is a synchrotron beam, measured on a capillary in Debye–Scherrer geometry; a Kα1/Kα2 tube is
    Bragg–Brentano. A GSAS-II ``.instprm`` may state it (xbeam keys ``Geometry:debye_scherrer``,
    ``MuR:0.3``); otherwise the same rule applies. Override with :meth:`Instrument.with_changes`.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is neither format, or lacks the wavelength.
    """
    p = input_file(path, "instrument parameter file")
    text = p.read_text(errors="replace")
    if (
        re.search(r"^INS\s+\d*\s*ICONS", text, re.M)
        or "INS   BANK" in text
        or re.search(r"^INS ", text, re.M)
    ):
        return _read_prm(text, p)
    if re.search(r"Lam(1)?\s*:", text):
        return _read_instprm(text, p)
    raise RietveldInputError(
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
    icons = re.search(r"^INS\s+1\s*ICONS(.*)$", text, re.M)
    if not icons:
        raise RietveldInputError(f"instrument file {p}: GSAS .PRM without an ICONS line (wavelengths)")
    # fixed-width fields after "INS  1 ICONS": LAM1 [0:10], LAM2 [10:20], ZERO [20:30], POLA [40:50],
    # IPOLA [50:55], KRATIO [55:65] (GSAS-II reads the same columns; blank fields make split() unsafe)
    line = icons.group(1)
    try:
        lam1 = _field(line, 0, 10, None)
        lam2 = _field(line, 10, 20, 0.0)
        pola = _field(line, 40, 50, 0.7)
        ratio = _field(line, 55, 65, 0.5)
    except ValueError as exc:
        raise RietveldInputError(
            f"instrument file {p}: malformed ICONS line {line.strip()!r}: {exc}"
        ) from exc
    m_htype = re.search(r"^INS\s+HTYPE\s+(\S+)", text, re.M)
    htype = m_htype.group(1).upper() if m_htype else "PXC"
    radiation = "neutron" if htype[1:2] == "N" else "xray"
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
        geometry=_inferred_geometry(lam2, pola),
        radiation=radiation,
        source=str(p),
    )


def _field(line: str, lo: int, hi: int, default: float | None) -> float:
    """A fixed-width number of a GSAS record (``default`` when blank; required when ``default`` is None)."""
    text = line[lo:hi].strip()
    if not text:
        if default is None:
            raise ValueError(f"columns {lo}-{hi} are blank")
        return default
    return float(text)


def _inferred_geometry(lam2: float, polarization: float) -> str:
    """Debye–Scherrer for a single-wavelength, strongly polarised (synchrotron) beam, else Bragg–Brentano."""
    if lam2 <= 0 and polarization >= _SYNCHROTRON_POLARIZATION:
        return "debye_scherrer"
    return "bragg_brentano"


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
    # xbeam extension: capillary μR (GSAS-II keeps it in its sample parameters, "Absorption")
    "MuR": "mu_r",
}


def _read_instprm(text: str, p: Path) -> Instrument:
    values: dict[str, float] = {}
    asymmetry = "fcj"
    geometry = ""
    radiation = "xray"
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
                    raise RietveldInputError(
                        f"instrument file {p}: Asymmetry {asymmetry!r}: expected one of {', '.join(ASYMMETRY_MODELS)}"
                    )
            elif key == "Geometry":
                geometry = val.strip()
                if geometry not in GEOMETRIES:
                    raise RietveldInputError(
                        f"instrument file {p}: Geometry {geometry!r}: expected one of {', '.join(GEOMETRIES)}"
                    )
            elif key == "Type":
                radiation = "neutron" if val.strip().upper()[1:2] == "N" else "xray"
            elif key in _INSTPRM_KEYS:
                try:
                    values[_INSTPRM_KEYS[key]] = float(val.split(",")[0])
                except ValueError as exc:
                    raise RietveldInputError(
                        f"instrument file {p}: value of {key!r} is not a number: {val!r}"
                    ) from exc
    if "wavelength1" not in values:
        raise RietveldInputError(f"instrument file {p}: no Lam1 (or Lam) wavelength")
    if "wavelength2" not in values:
        values["wavelength2"] = 0.0
        values["ratio"] = 0.0
    if not geometry:
        geometry = _inferred_geometry(values["wavelength2"], values.get("polarization", 0.7))
    try:
        return Instrument(
            **values, asymmetry=asymmetry, geometry=geometry, radiation=radiation, source=str(p)
        )
    except ValueError as exc:
        raise RietveldInputError(f"instrument file {p}: {exc}") from exc
