"""Where the data bundled with the package are: crystal structures (CIF) and reference XAS spectra.

The one place that locates ``xbeam_bluesky/data`` (plans, the simulated and mock diffractometers and the automatic
Rietveld refinement all resolve bundled CIFs here). Pure Python, the lowest layer.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from xbeam_bluesky.errors import InputFileError

__all__ = ["CIF_DIR", "DATA_DIR", "XAS_DIR", "bundled_cifs", "resolve_cif"]

#: The package's data folder (inside the installed package).
DATA_DIR = Path(str(resources.files("xbeam_bluesky") / "data"))
#: Bundled crystal structures (provenance in ``SOURCES.txt`` there).
CIF_DIR = DATA_DIR / "cif"
#: Bundled reference XAS spectra, one folder per edge (``Fe_K``).
XAS_DIR = DATA_DIR / "xas"


def bundled_cifs() -> list[str]:
    """Names of the bundled CIFs, sorted."""
    return sorted(p.name for p in CIF_DIR.glob("*.cif"))


def resolve_cif(name: str) -> Path:
    """Path of a CIF given as a file path or as the name of a bundled CIF (``xbeam_bluesky/data/cif``).

    Raises
    ------
    InputFileError
        Naming the CIF and listing the bundled ones (a ``FileNotFoundError`` too).
    """
    path = Path(name)
    if path.is_file():
        return path
    if (CIF_DIR / name).is_file():
        return CIF_DIR / name
    raise InputFileError(f"CIF {name!r} is neither a file nor a bundled CIF (bundled: {bundled_cifs()})")
