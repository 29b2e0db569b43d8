"""Bad pattern input (issue 17, pattern side): one test per class, each with a clear, specific error."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.rietveld import Refinement, load_phase, read_instrument, read_pattern
from xbeam_bluesky.rietveld.pattern_io import Pattern

X = np.arange(10.0, 60.0, 0.02)


def _write(path, rows, header=""):
    path.write_text(header + "\n".join(" ".join(f"{v:.6g}" for v in r) for r in rows) + "\n")
    return path


def test_background_subtracted_pattern_without_esds_is_refused(tmp_path):
    y = 50 * np.sin(X) ** 2 - 10  # negative where the background was taken off
    f = _write(tmp_path / "sub.xy", zip(X, y, strict=True))
    with pytest.raises(ValueError, match=r"negative counts .* need their esds"):
        read_pattern(f)


def test_background_subtracted_pattern_keeps_the_files_esds(tmp_path):
    y = 50 * np.sin(X) ** 2 - 10
    e = np.full_like(X, 3.5)
    pat = read_pattern(_write(tmp_path / "sub.xye", zip(X, y, e, strict=True)))
    assert np.all(pat.sigma == 3.5)  # negative points keep their stated esd, not σ = 1


def test_gsas2_csv_weight_column_is_read_as_a_weight(tmp_path):
    y = 100 + 50 * np.sin(X) ** 2
    w = 1.0 / y  # GSAS-II's weight 1/σ² for counting statistics
    rows = zip(X, y, w, 0.9 * y, np.full_like(X, 80.0), strict=True)
    f = _write(tmp_path / "g2.csv", rows, header='"x","y_obs","weight","y_calc","y_bkg"\n')
    pat = read_pattern(f)
    assert np.allclose(pat.sigma, np.sqrt(y))
    assert "weight" in pat.source


def test_four_unnamed_columns_are_refused(tmp_path):
    y = 100 + 50 * np.sin(X) ** 2
    f = _write(tmp_path / "four.dat", zip(X, y, 1.0 / y, y, strict=True))
    with pytest.raises(ValueError, match="4 numeric columns and no header"):
        read_pattern(f)


def test_neutron_instrument_on_xray_engine_is_refused(data_dir):
    pat = read_pattern(data_dir / "pbso4" / "PBSO4.XRA")
    inst = read_instrument(data_dir / "pbso4" / "inst_d1a.prm")  # HTYPE PNCR
    assert inst.radiation == "neutron"
    with pytest.raises(ValueError, match=r"neutron radiation.*X-ray structure factors only"):
        Refinement(pat, [load_phase(data_dir / "pbso4" / "PbSO4-Wyckoff.cif")], inst)


def test_neutron_pattern_with_xray_form_factors_is_refused(data_dir):
    pat = read_pattern(data_dir / "pbso4" / "PBSO4.CWN")
    assert pat.radiation == "neutron"
    inst = read_instrument(data_dir / "pbso4" / "INST_XRY.PRM")
    with pytest.raises(ValueError, match=r"neutron data.*X-ray form factors only"):
        Refinement(pat, [load_phase(data_dir / "pbso4" / "PbSO4-Wyckoff.cif")], inst)


def test_all_zero_pattern_is_refused(tmp_path):
    f = _write(tmp_path / "zero.xy", zip(X, np.zeros_like(X), strict=True))
    with pytest.raises(ValueError, match="no weighted point has a positive count"):
        read_pattern(f)
    with pytest.raises(ValueError, match="no weighted point has a positive count"):
        Pattern(X, np.zeros_like(X), np.ones_like(X), "zeros")


def test_cli_reports_bad_patterns_with_exit_2(tmp_path, data_dir, capsys):
    from xbeam_bluesky.cli import main

    f = _write(tmp_path / "zero.xy", zip(X, np.zeros_like(X), strict=True))
    code = main(
        [
            "refine",
            str(f),
            "--cif",
            str(data_dir / "pbso4" / "PbSO4-Wyckoff.cif"),
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 2
    assert "positive count" in capsys.readouterr().err
