"""Reading the bundled reference spectra and malformed files."""

from pathlib import Path

import numpy as np
import pytest

from xbeam_bluesky.spectra import (
    SpectrumFormatError,
    bundled_library_dir,
    library_files,
    load_library,
    read_spectrum,
)

LIB = bundled_library_dir()


def test_xdi_raw_counts_give_log_ratio():
    s = read_spectrum(LIB / "Fe2O3_rt_01.xdi")
    assert s.kind == "counts"
    # First data line of the file: 6911.8277  272002.000000  121091.203452
    assert s.energy[0] == pytest.approx(6911.8277)
    assert s.mu[0] == pytest.approx(np.log(272002.0 / 121091.203452))
    assert s.i0[0] == 272002.0 and s.itrans.size == s.energy.size == 412


def test_xdi_column_order_is_read_from_header():
    # Column.2 is itrans and Column.3 is i0 in this file.
    s = read_spectrum(LIB / "Hansel2001_Fe_foil_xanes_001.xdi")
    first = next(
        line
        for line in (LIB / "Hansel2001_Fe_foil_xanes_001.xdi").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    _, itrans, i0 = (float(v) for v in first.split())
    assert s.mu[0] == pytest.approx(np.log(i0 / itrans))


def test_formats_and_kinds_of_the_bundled_library():
    spectra = {s.name: s for s in load_library()}
    assert len(spectra) == len(library_files(LIB)) == 102
    assert spectra["Aegirine_FeXANES_powder_avg"].kind == "normalized"  # ALS .e
    assert spectra["larch_FeDem_Hematite"].kind == "mu"
    foil = spectra["xasref_Fe_foil"]
    assert foil.kind == "mu" and foil.metadata["columns"] == ["energy", "mu", "dmude"]
    for s in spectra.values():
        assert np.all(np.diff(s.energy) > 0)
        assert 6800 < s.energy[0] < s.energy[-1] < 9000


def test_kev_repeats_and_reversed_order(tmp_path: Path):
    f = tmp_path / "scan.csv"
    f.write_text("# energy, mu\n7.120,0.5\n7.110,0.3\n7.110,0.1\n7.100,0.0\n")
    s = read_spectrum(f)
    np.testing.assert_allclose(s.energy, [7100.0, 7110.0, 7120.0])
    np.testing.assert_allclose(s.mu, [0.0, 0.2, 0.5])
    assert s.metadata["energy_unit_in_file"] == "keV"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("7100 0.1\n7110 nan\n7120 0.3\n", "non-finite value at point 1"),
        ("7100 0.1\n7120 0.3\n7110 0.2\n", r"increase strictly, but E\[2\]=7110"),
        ("7100 0.1\n7110 oops\n", "line 2 is not numeric"),
        ("7100\n7110\n", "one column only"),
        ("# only a header\n", "no numeric data"),
        ("7100 0.1 1\n7110 0.2\n", "line 2 has 2 columns, expected 3"),
    ],
)
def test_malformed_files_raise_naming_the_problem(tmp_path: Path, text: str, match: str):
    f = tmp_path / "bad.dat"
    f.write_text(text)
    with pytest.raises(SpectrumFormatError, match=match) as info:
        read_spectrum(f)
    assert "bad" in str(info.value)


def test_missing_file_and_directory(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nope\.xdi"):
        read_spectrum(tmp_path / "nope.xdi")
    with pytest.raises(FileNotFoundError, match="library directory not found"):
        load_library(tmp_path / "missing")


def test_library_skips_bad_files_unless_strict(tmp_path: Path):
    (tmp_path / "good.txt").write_text("7100 0.1\n7110 0.2\n7120 0.9\n")
    (tmp_path / "bad.txt").write_text("7100 0.1\n7090 0.2\n7120 0.9\n")
    (tmp_path / "README.txt").write_text("not a spectrum")
    assert [s.name for s in load_library(tmp_path)] == ["good"]
    with pytest.raises(SpectrumFormatError, match=r"bad\.txt"):
        load_library(tmp_path, strict=True)
