"""The ``xbeam refine`` command line contract."""

from __future__ import annotations

import json

import pytest

from xbeam_bluesky.cli import main


@pytest.mark.slow
def test_refine_pbso4_writes_result_and_plot(tmp_path, data_dir, capsys):
    d = data_dir / "pbso4"
    out = tmp_path / "result.json"
    plot = tmp_path / "fit.png"
    rc = main(
        [
            "refine",
            str(d / "PBSO4.XRA"),
            "--cif",
            str(d / "PbSO4-Wyckoff.cif"),
            "--instrument",
            str(d / "INST_XRY.PRM"),
            "--range",
            "16:158.4",
            "--plot",
            str(plot),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    for key in ("rwp", "rp", "gof", "phases", "n_points", "n_reflections", "wall_s"):
        assert key in res
    assert res["rwp"] <= 10.5 and res["n_reflections"] == 383
    phase = res["phases"][0]
    assert set(phase["lattice"]) == {"a", "b", "c", "alpha", "beta", "gamma"} == set(phase["lattice_esd"])
    assert {"label", "xyz", "uiso"} <= set(phase["atoms"][0])
    assert res["instrument_defaults_used"] is False
    assert plot.stat().st_size > 10_000
    assert "Rwp" in capsys.readouterr().out
    # without --strategy: the grown default sequence, and result.json records the stages it kept, which
    # replay to the same fit
    from xbeam_bluesky.rietveld import Refinement, load_phase, read_instrument, read_pattern
    from xbeam_bluesky.rietveld.default_sequence import refine_default

    refinement = Refinement(
        read_pattern(d / "PBSO4.XRA"),
        [load_phase(d / "PbSO4-Wyckoff.cif")],
        read_instrument(d / "INST_XRY.PRM"),
        fit_range=(16.0, 158.4),
    )
    direct, strategy = refine_default(refinement)
    assert res["strategy"] == strategy.to_dict()
    assert res["rwp"] == pytest.approx(direct.rwp, rel=1e-9)
    replay = tmp_path / "replay.json"
    (tmp_path / "strategy.json").write_text(json.dumps(res["strategy"]))
    args = ["refine", str(d / "PBSO4.XRA"), "--cif", str(d / "PbSO4-Wyckoff.cif")]
    args += ["--instrument", str(d / "INST_XRY.PRM"), "--range", "16:158.4"]
    assert main([*args, "--strategy", str(tmp_path / "strategy.json"), "--out", str(replay)]) == 0
    assert json.loads(replay.read_text())["rwp"] == pytest.approx(res["rwp"], abs=1e-3)


def test_refine_with_strategy_and_default_instrument(tmp_path, data_dir, capsys):
    strategy = tmp_path / "s.json"
    strategy.write_text(
        json.dumps(
            {
                "stages": [
                    {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 4}},
                    {"refine": ["cell", "zero"]},
                ]
            }
        )
    )
    out = tmp_path / "r.json"
    rc = main(
        [
            "refine",
            str(data_dir / "lab6" / "LaB6_Jan2018.raw"),
            "--cif",
            str(data_dir / "lab6" / "LaB6_start.cif"),
            "--strategy",
            str(strategy),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["instrument_defaults_used"] is True and "defaults" in res["instrument"]["source"]
    assert "lab Cu Kα defaults" in capsys.readouterr().err
    assert [s["refined"] for s in res["stages"]] == [
        ["background", "scale"],
        ["background", "cell", "scale", "zero"],
    ]
    assert res["strategy"]["stages"][1]["refine"] == ["cell", "zero"]
    # the result.json itself replays exactly
    again = tmp_path / "again.json"
    rc = main(
        [
            "refine",
            str(data_dir / "lab6" / "LaB6_Jan2018.raw"),
            "--cif",
            str(data_dir / "lab6" / "LaB6_start.cif"),
            "--strategy",
            str(out),
            "--out",
            str(again),
        ]
    )
    assert rc == 0 and json.loads(again.read_text())["rwp"] == res["rwp"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [(["--range", "30"], "MIN:MAX"), (["--range", "50:20"], "MIN < MAX")],
)
def test_refine_user_errors_exit_2(tmp_path, data_dir, capsys, extra, match):
    rc = main(
        [
            "refine",
            str(data_dir / "lab6" / "LaB6_Jan2018.raw"),
            "--cif",
            str(data_dir / "lab6" / "LaB6_start.cif"),
            "--out",
            str(tmp_path / "r.json"),
            *extra,
        ]
    )
    assert rc == 2
    assert match in capsys.readouterr().err


def test_refine_unknown_pattern_format_exit_2(tmp_path, data_dir, capsys):
    bad = tmp_path / "junk.bin"
    bad.write_bytes(b"\x00\x07junk" * 100)
    rc = main(
        [
            "refine",
            str(bad),
            "--cif",
            str(data_dir / "lab6" / "LaB6_start.cif"),
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "junk.bin" in err and "no known format" in err and "Traceback" not in err


def test_refine_failure_state_exits_1_and_still_writes_json(tmp_path, data_dir, capsys):
    cif = tmp_path / "ghost.cif"
    cif.write_text(
        (data_dir / "lab6" / "LaB6_start.cif").read_text() + "Xe1 Xe 0.25 0.25 0.25 0.0 0.01\n"
    )  # a zero-occupancy atom: its Uiso has no effect -> singular
    strategy = tmp_path / "s.json"
    strategy.write_text(json.dumps([{"refine": ["background", "scale"]}, {"refine": ["atoms_uiso"]}]))
    out = tmp_path / "r.json"
    rc = main(
        [
            "refine",
            str(data_dir / "lab6" / "LaB6_Jan2018.raw"),
            "--cif",
            str(cif),
            "--strategy",
            str(strategy),
            "--out",
            str(out),
        ]
    )
    assert rc == 1
    res = json.loads(out.read_text())
    assert res["status"] == "singular" and "Xe1:Uiso" in res["message"]
    assert "refinement failed" in capsys.readouterr().err


def test_refine_with_a_full_axial_instrument_file(tmp_path, data_dir):
    """The .instprm's xbeam keys select the full axial model; the strategy refines its Soller aperture,
    and a strategy refining SH/L with that instrument is a bad-input error (exit 2) naming both."""
    d = data_dir / "lab6"
    inst = tmp_path / "axial.instprm"
    inst.write_text(
        (d / "CuKa_lab_default.instprm").read_text()
        + "Asymmetry:full_axial;Soller:2.5;SourceLength:12;SampleLength:15;ReceiverLength:12\n"
    )
    strategy = tmp_path / "s.json"
    stages = [
        {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 8}},
        {"refine": ["cell", "displacement"]},
        {"refine": ["X", "Y", "soller"]},
    ]
    strategy.write_text(json.dumps({"stages": stages}))
    out = tmp_path / "r.json"
    args = [
        "refine",
        str(d / "NIST660CBI.gsas"),
        "--cif",
        str(d / "LaB6_start.cif"),
        "--instrument",
        str(inst),
    ]
    rc = main([*args, "--range", "20:125", "--strategy", str(strategy), "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["instrument"]["asymmetry"] == "full_axial"
    assert res["instrument"]["sample_length_mm"] == 15.0 and res["instrument"]["soller_esd"] > 0
    assert 1.0 < res["instrument"]["soller"] < 5.0
    stages[2]["refine"] = ["X", "Y", "SH/L"]
    strategy.write_text(json.dumps({"stages": stages}))
    assert main([*args, "--strategy", str(strategy), "--out", str(out)]) == 2


def test_the_refine_cli_modules_do_not_import_each_other_in_a_cycle():
    """``cli/refine.py`` imports ``refine_auto`` and ``refine_sequential``; they take the shared inputs from
    ``cli/_refine_inputs.py`` and import nothing of ``cli/refine.py``, not even inside a function."""
    import ast
    from pathlib import Path

    import xbeam_bluesky.cli as cli

    folder = Path(cli.__file__).parent
    for module in ("refine_auto", "refine_sequential", "_refine_inputs"):
        tree = ast.parse((folder / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "xbeam_bluesky.cli.refine" not in imported, module
