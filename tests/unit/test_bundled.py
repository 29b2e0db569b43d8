"""The bundled data are found in one place, and every reader finds them there."""

from __future__ import annotations

import pytest

from xbeam_bluesky.bundled import CIF_DIR, XAS_DIR, bundled_cifs, resolve_cif
from xbeam_bluesky.devices.sim.diffractometer import CIF_DIR as SIM_CIF_DIR
from xbeam_bluesky.plans import resolve_cif as plans_resolve_cif
from xbeam_bluesky.spectra import bundled_library_dir


def test_bundled_folders_hold_the_data_and_their_provenance() -> None:
    assert (CIF_DIR / "SOURCES.txt").is_file() and (XAS_DIR / "Fe_K").is_dir()
    assert "PbSO4-Wyckoff.cif" in bundled_cifs() and all(name.endswith(".cif") for name in bundled_cifs())
    assert SIM_CIF_DIR == CIF_DIR and bundled_library_dir("Fe-K") == XAS_DIR / "Fe_K"


def test_resolve_cif_prefers_a_file_then_the_bundle(tmp_path) -> None:
    own = tmp_path / "PbSO4-Wyckoff.cif"
    own.write_text("data_test\n")
    assert resolve_cif(str(own)) == own
    assert resolve_cif("PbSO4-Wyckoff.cif") == CIF_DIR / "PbSO4-Wyckoff.cif"
    assert plans_resolve_cif is resolve_cif
    with pytest.raises(FileNotFoundError, match=r"'nothing\.cif' is neither a file nor a bundled CIF"):
        resolve_cif("nothing.cif")
