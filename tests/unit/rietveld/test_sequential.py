"""Sequential refinement: a simulated orthorhombic → tetragonal series (b − c → 0) of CuCr2O4 on 11-BM."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from xbeam_bluesky.rietveld import Strategy, load_phase, read_instrument
from xbeam_bluesky.rietveld.pattern_io import Pattern
from xbeam_bluesky.rietveld.sequential import plot_series, refine_series, series_value
from xbeam_bluesky.rietveld.simulate import simulate_pattern

STRATEGY = Strategy.from_dict(
    [
        {
            "name": "bkg+scale",
            "refine": ["background", "scale"],
            "background": {"type": "chebyshev", "terms": 3},
        },
        {"name": "cell", "refine": ["cell"], "max_cycles": 10},
        {"name": "profile", "refine": ["X", "Y"], "max_cycles": 10},
    ]
)


def lattice_curve(temps: np.ndarray) -> np.ndarray:
    """a, b, c (Å) of a spinel that is orthorhombic below 120 K (b − c ∝ √(1 − T/Tc)) and tetragonal above."""
    a = 7.7127 + 2.0e-5 * temps
    split = 0.0069 * np.sqrt(np.clip(1.0 - temps / 120.0, 0.0, None))
    mean = 8.5399 + 1.5e-5 * temps
    return np.stack([a, mean + split / 2, mean - split / 2], axis=1)


@pytest.fixture(scope="module")
def series(data_dir):
    d = data_dir / "cucr2o4"
    phase = load_phase(d / "CuCr2O4.cif")
    inst = read_instrument(d / "OH_00.prm").with_changes(x=0.2, y=6.0)
    x = np.arange(6.0, 18.0, 0.004)
    temps = np.array([7.0, 40.0, 80.0, 110.0, 150.0, 250.0])
    truth = lattice_curve(temps)
    rng = np.random.default_rng(14)
    patterns = []
    for cell in truth:
        ph = replace(phase, cell=np.array([*cell, 90.0, 90.0, 90.0]))
        y = rng.poisson(simulate_pattern([ph], x, instrument=inst, scales=[2e-3], background=30.0)).astype(
            float
        )
        patterns.append(Pattern(x, y, np.sqrt(np.maximum(y, 1.0)), "simulated"))
    result = refine_series(patterns, [phase], inst, values=temps, strategy=STRATEGY)
    return temps, truth, result


def test_series_recovers_the_simulated_lattice_curve_within_esds(series):
    temps, truth, result = series
    assert [r.ok for r in result.results] == [True] * len(temps)
    assert result.restarted == [""] * len(temps)  # every warm start was kept
    table = result.table()
    col = table["phases"]["CuCr2O4"]
    for j, axis in enumerate("abc"):
        err = np.abs(np.array(col[axis]) - truth[:, j])
        assert np.all(err <= 3 * np.array(col[f"{axis}_esd"])), (axis, err, col[f"{axis}_esd"])
    split = np.array(col["b"]) - np.array(col["c"])
    assert split[0] > 0.006 and abs(split[-1]) < 3 * np.hypot(col["b_esd"][-1], col["c_esd"][-1])


def test_plot_and_table(series, tmp_path):
    temps, _, result = series
    plot_series(result, tmp_path / "series.png", "T (K)")
    assert (tmp_path / "series.png").stat().st_size > 10_000
    assert result.table()["value"] == list(temps)


def test_degraded_fit_is_redone_from_the_cif_model(series, data_dir):
    """A pattern whose Rwp jumps beyond the stated limit (100× fewer counts: ~10× the Rwp) is redone cold."""
    _, _, result = series
    phase = load_phase(data_dir / "cucr2o4" / "CuCr2O4.cif")
    inst = read_instrument(data_dir / "cucr2o4" / "OH_00.prm").with_changes(x=0.2, y=6.0)
    first = result.results[0]
    p0 = Pattern(first.two_theta, first.observed, first.sigma, "bright")
    y = np.random.default_rng(1).poisson(first.calculated / 100.0).astype(float)
    p1 = Pattern(p0.two_theta, y, np.sqrt(np.maximum(y, 1.0)), "faint")
    seq = refine_series([p0, p1], [phase], inst, strategy=STRATEGY)
    assert seq.restarted[0] == ""
    assert "limit 1.3×): redone from the CIF model" in seq.restarted[1]
    assert seq.results[1].ok and seq.results[1].rwp > 1.3 * seq.results[0].rwp


def test_series_value_from_the_11bm_header(data_dir):
    assert series_value(data_dir / "cucr2o4" / "OH_00.fxye", "Temp (K)") == pytest.approx(6.778)
    with pytest.raises(ValueError, match="no series value 'Pressure'"):
        series_value(data_dir / "cucr2o4" / "OH_00.fxye", "Pressure")


def test_bad_arguments(data_dir):
    phase = load_phase(data_dir / "cucr2o4" / "CuCr2O4.cif")
    inst = read_instrument(data_dir / "cucr2o4" / "OH_00.prm")
    with pytest.raises(ValueError, match="no patterns"):
        refine_series([], [phase], inst)
    x = np.arange(6.0, 18.0, 0.01)
    pat = Pattern(x, np.ones_like(x), np.ones_like(x), "x")
    with pytest.raises(ValueError, match="2 series values for 1 patterns"):
        refine_series([pat], [phase], inst, values=[1, 2])
    with pytest.raises(ValueError, match="degrade_factor"):
        refine_series([pat], [phase], inst, degrade_factor=0.9)


def test_cli_sequential_orders_by_header_and_writes_the_table(series, tmp_path, data_dir):
    import json

    from xbeam_bluesky.cli import main

    temps, truth, result = series
    # written in reverse temperature order, named so that name order is wrong too
    for k, (t, res) in enumerate(zip(temps, result.results, strict=True)):
        rows = "\n".join(
            f"{x:.4f} {y:.1f} {s:.4f}" for x, y, s in zip(res.two_theta, res.observed, res.sigma, strict=True)
        )
        (tmp_path / f"scan_{len(temps) - k:02d}.xye").write_text(f"# Temp (K) = {t}\n{rows}\n")
    (tmp_path / "strategy.json").write_text(json.dumps(STRATEGY.to_dict()))
    d = data_dir / "cucr2o4"
    out = tmp_path / "table.json"
    code = main(
        [
            "refine",
            "--sequential",
            str(tmp_path / "scan_*.xye"),
            "--cif",
            str(d / "CuCr2O4.cif"),
            "--instrument",
            str(d / "OH_00.prm"),
            "--strategy",
            str(tmp_path / "strategy.json"),
            "--series-key",
            "Temp (K)",
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "series.png"),
        ]
    )
    assert code == 0
    table = json.loads(out.read_text())
    assert [p["value"] for p in table["patterns"]] == list(temps)
    for p, cell in zip(table["patterns"], truth, strict=True):
        ph = p["phases"][0]
        assert {"rwp", "file"} <= set(p) and {"lattice", "lattice_esd", "weight_fraction"} <= set(ph)
        assert abs(ph["lattice"]["b"] - cell[1]) <= 3 * ph["lattice_esd"]["b"]
    assert table["parametric"]["phases"]["CuCr2O4"]["b"] == [
        p["phases"][0]["lattice"]["b"] for p in table["patterns"]
    ]
    assert (tmp_path / "series.png").is_file()


def test_strategy_search_runs_once_and_again_after_a_degraded_fit(series, data_dir):
    """find_strategy is called for the first pattern, reused, and called again when a fit degrades."""
    _, _, result = series
    base = result.results[0]
    calls: list[str] = []

    def find(refinement):
        calls.append(refinement.pattern.source)
        return STRATEGY

    first = Pattern(base.two_theta, base.observed, base.sigma, "p0")
    second = Pattern(result.results[1].two_theta, result.results[1].observed, result.results[1].sigma, "p1")
    y = np.random.default_rng(2).poisson(base.calculated / 100.0).astype(float)
    faint = Pattern(first.two_theta, y, np.sqrt(np.maximum(y, 1.0)), "p2-faint")
    d = data_dir / "cucr2o4"
    seq = refine_series(
        [first, second, faint],
        [load_phase(d / "CuCr2O4.cif")],
        read_instrument(d / "OH_00.prm").with_changes(x=0.2, y=6.0),
        find_strategy=find,
    )
    assert calls == ["p0", "p2-faint"]
    assert seq.restarted[:2] == ["", ""] and "after a new strategy search" in seq.restarted[2]


@pytest.mark.slow
def test_cli_sequential_auto_searches_the_first_pattern_only(tmp_path, data_dir, capsys):
    import json
    import shutil

    from xbeam_bluesky.cli import main

    d = data_dir / "pbso4"
    for name in ("p1.xra", "p2.xra"):
        shutil.copy(d / "PBSO4.XRA", tmp_path / name)
    out = tmp_path / "table.json"
    code = main(
        [
            "refine",
            "--sequential",
            str(tmp_path / "p1.xra"),
            str(tmp_path / "p2.xra"),
            "--cif",
            str(d / "PbSO4-Wyckoff.cif"),
            "--instrument",
            str(d / "INST_XRY.PRM"),
            "--range",
            "16:158.4",
            "--auto",
            "--trials",
            "4",
            "--jobs",
            "1",
            "--series-values",
            "300,310",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("best strategy Rwp") == 1  # one search, on the first pattern
    table = json.loads(out.read_text())
    assert [p["value"] for p in table["patterns"]] == [300.0, 310.0]
    # the same data warm-started from its own result: same fit, no restart
    r1, r2 = (p["rwp"] for p in table["patterns"])
    assert r2 <= r1 + 1e-6 and table["patterns"][1]["restarted"] == ""
