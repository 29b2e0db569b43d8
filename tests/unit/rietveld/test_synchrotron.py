"""Debye–Scherrer (capillary) geometry, background peaks, uniaxial strain; CuCr2O4 + CuO from APS 11-BM."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate as si

from xbeam_bluesky.rietveld import Instrument, Strategy, load_phase, read_instrument, read_pattern
from xbeam_bluesky.rietveld.absorption import cylinder_transmission
from xbeam_bluesky.rietveld.model import PatternCalculator, initial_state
from xbeam_bluesky.rietveld.pattern_io import Pattern
from xbeam_bluesky.rietveld.refine import Refinement

# GSAS-II (git 013259a0) on the same data with the tutorial's recipe (tests/data/xrd/README.md)
GSAS2_CELL = {"a": (7.71270, 3e-5), "b": (8.54329, 4e-5), "c": (8.53643, 4e-5)}
GSAS2_CUO_WT = 1.11  # wt %


def test_cylinder_transmission_at_zero_angle_is_the_chord_integral():
    # at 2θ = 0 every ray crosses the full chord 2√(1 − y²) whatever its depth: a 1-D integral
    for mu_r in (0.05, 0.5, 1.0, 3.0):
        exact = si.quad(
            lambda y, m=mu_r: 2 * np.sqrt(1 - y * y) * np.exp(-2 * m * np.sqrt(1 - y * y)), -1, 1
        )[0]
        a, _ = cylinder_transmission(np.array([0.0]), mu_r)
        assert a[0] == pytest.approx(exact / np.pi, rel=2e-4)


def test_cylinder_transmission_limits_and_derivative():
    tth = np.array([5.0, 45.0, 90.0, 150.0])
    a0, _ = cylinder_transmission(tth, 0.0)
    assert np.allclose(a0, 1.0)
    # mean path length l_in + l_out at 2θ = 0 and 180 is 16/(3π) R (ITC C §6.3.3.3, first-order term)
    _, d_end = cylinder_transmission(np.array([0.0, 180.0]), 0.0)
    assert np.allclose(d_end, -16 / (3 * np.pi), rtol=1e-5)
    a1, d1 = cylinder_transmission(tth, 1.0)
    assert np.all(np.diff(a1) > 0)  # absorption is strongest at low angle
    h = 1e-5
    fd = (cylinder_transmission(tth, 1.0 + h)[0] - cylinder_transmission(tth, 1.0 - h)[0]) / (2 * h)
    assert np.allclose(d1, fd, rtol=1e-6)
    with pytest.raises(ValueError, match="mu_r"):
        cylinder_transmission(tth, -0.1)


def test_11bm_prm_reads_as_a_synchrotron_capillary(data_dir):
    inst = read_instrument(data_dir / "cucr2o4" / "OH_00.prm")
    assert inst.wavelength1 == pytest.approx(0.413263)
    assert inst.wavelength2 == 0.0 and inst.ratio == 0.0
    assert inst.polarization == pytest.approx(0.99)  # fixed-width ICONS (split() read 0 here)
    assert inst.geometry == "debye_scherrer" and inst.radiation == "xray"
    lab = read_instrument(data_dir / "pbso4" / "INST_XRY.PRM")
    assert (lab.geometry, lab.polarization, lab.ratio) == ("bragg_brentano", pytest.approx(0.7), 0.5)


def test_fxye_reads_as_is(data_dir):
    pat = read_pattern(data_dir / "cucr2o4" / "OH_00.fxye")
    assert len(pat.two_theta) == 12799
    assert pat.two_theta[0] == pytest.approx(0.5) and pat.two_theta[-1] == pytest.approx(26.096)
    assert pat.sigma[0] == pytest.approx(11.584726)


def test_instprm_geometry_keys(tmp_path):
    f = tmp_path / "cap.instprm"
    f.write_text(
        "#GSAS-II instrument parameter file\nType:PXC;Bank:1\nLam:0.45;Polariz.:0.95;U:1;V:0;W:0.1\n"
        "X:0.2;Y:0;Geometry:debye_scherrer;MuR:0.4\n"
    )
    inst = read_instrument(f)
    assert (inst.geometry, inst.mu_r) == ("debye_scherrer", pytest.approx(0.4))
    f.write_text("Type:PXC\nLam:0.45;Geometry:capillary\n")
    with pytest.raises(ValueError, match="Geometry 'capillary'"):
        read_instrument(f)


@pytest.fixture(scope="module")
def ds_setup(pbso4_phase):
    x = np.arange(4.0, 20.0, 0.005)
    inst = Instrument.monochromatic(0.5, geometry="debye_scherrer").with_changes(x=1.0, y=3.0, mu_r=0.8)
    pattern = Pattern(x, np.ones_like(x), np.ones_like(x), "dummy")
    ref = Refinement(pattern, [pbso4_phase], inst)
    st = initial_state([pbso4_phase], inst)
    st.background_coefs = np.array([100.0, 20.0, -5.0])
    st.background_peaks = np.array([[9.0, 3.0, 400.0]])
    st.displacement, st.transparency = 40.0, -25.0
    st.phases[0].strain_axis = (1, 0, 0)
    st.phases[0].strain_aniso = 1.5
    calc = PatternCalculator(x, [pbso4_phase], inst)
    calc.update_reflections(st)
    return ref, calc, st


@pytest.mark.parametrize(
    "group", ["absorption", "displacement", "transparency", "uniaxial_strain", "background"]
)
def test_debye_scherrer_jacobian_matches_finite_differences(ds_setup, group):
    ref, calc, st = ds_setup
    params = ref.parameters.params(st, {group})
    ev = calc.evaluate(st, frozenset({group}), jacobian=True)
    jac = ref.parameters.jacobian(ev.blocks, params)
    p0 = ref.parameters.get(st, params)
    for i in range(len(p0)):
        h = 1e-6 * max(abs(p0[i]), 1e-2)
        s1, s2 = st.copy(), st.copy()
        pp = p0.copy()
        pp[i] += h
        ref.parameters.set(s1, params, pp)
        pp[i] -= 2 * h
        ref.parameters.set(s2, params, pp)
        fd = (calc.evaluate(s1).y - calc.evaluate(s2).y) / (2 * h)
        tol = 2e-3 if group in ("absorption", "background") else 3e-2
        assert np.abs(jac[:, i] - fd).max() <= tol * np.abs(fd).max(), params[i].name


def test_capillary_offset_shift_is_the_geometric_one(ds_setup):
    """A capillary d μm off-axis perpendicular to the beam moves a peak by −(d/R) cos2θ rad; GSAS-II's
    DisplaceX (ours too) is 2d on that scale (its shift is −(0.09/πR)·Dx·cos2θ deg)."""
    _, calc, st = ds_setup
    s0, s1 = st.copy(), st.copy()
    s0.displacement = s0.transparency = 0.0
    s1.displacement, s1.transparency = 100.0, 0.0
    p0, p1 = calc.reflection_positions(0, s0), calc.reflection_positions(0, s1)
    tth = p0 - s0.instrument.zero
    expected = -np.degrees(0.5 * 100e-3 / st.instrument.goniometer_radius * np.cos(np.radians(tth)))
    assert np.allclose(p1 - p0, expected, rtol=1e-9)


def test_absorption_refuses_bragg_brentano(pbso4_phase):
    x = np.arange(18.0, 60.0, 0.02)
    pattern = Pattern(x, np.ones_like(x), np.ones_like(x), "dummy")
    ref = Refinement(pattern, [pbso4_phase], Instrument.lab_cu_ka())
    with pytest.raises(ValueError, match=r"absorption.*debye_scherrer"):
        ref.run(Strategy.from_dict([{"refine": ["scale", "absorption"]}]))
    with pytest.raises(ValueError, match="needs the debye_scherrer geometry"):
        Instrument.lab_cu_ka().with_changes(mu_r=0.5)


@pytest.fixture(scope="module")
def hump(pbso4_phase):
    """A simulated capillary pattern with a known amorphous hump (position, FWHM deg 2θ; area): pattern,
    instrument, the hump."""
    from xbeam_bluesky.rietveld.background import background_peaks

    x = np.arange(3.0, 25.0, 0.004)
    inst = Instrument.monochromatic(0.45, geometry="debye_scherrer").with_changes(x=0.5, y=2.0)
    truth = np.array([[6.3, 3.2, 1500.0]])
    st = initial_state([pbso4_phase], inst)
    st.phases[0].scale = 2e-4
    calc = PatternCalculator(x, [pbso4_phase], inst)
    calc.update_reflections(st)
    expected = calc.evaluate(st).y + 40.0 + background_peaks(x, truth)[0]
    y = np.random.default_rng(3).poisson(expected).astype(float)
    return Pattern(x, y, np.sqrt(np.maximum(y, 1.0)), "sim"), inst, truth


def test_background_peak_recovers_a_simulated_hump(pbso4_phase, hump):
    """A pattern with a known amorphous hump: the background peak finds its position, width and area."""
    pat, inst, truth = hump
    strategy = Strategy.from_dict(
        [
            {
                "refine": ["background", "scale"],
                "background": {"type": "chebyshev", "terms": 3, "peaks": [[8, 2]]},
            },
            {"refine": ["cell", "X", "Y"]},
        ]
    )
    res = Refinement(pat, [pbso4_phase], inst).run(strategy)
    assert res.ok, res.message
    pk = res.background["peaks"][0]
    for key, true in zip(("position", "fwhm", "area"), truth[0], strict=True):
        assert abs(pk[key] - true) <= 4 * pk[f"{key}_esd"] + 1e-3 * true, (key, pk)


def test_the_search_reference_default_refines_the_background_peaks_of_the_space(pbso4_phase, hump):
    """``--auto --background-peak``: the default sequence the search compares with (and starts from) has the
    humps too (it ignored them before)."""
    from xbeam_bluesky.rietveld import SearchSpace
    from xbeam_bluesky.rietveld.search._run import _reference

    pat, inst, truth = hump
    ref = Refinement(pat, [pbso4_phase], inst)
    summary, strategy = _reference(ref, SearchSpace(*ref.fit_range, background_peaks=((8.0, 2.0),)))
    assert strategy.stages[0].background.peaks == ((8.0, 2.0),)
    (pk,) = summary["background"]["peaks"]
    assert abs(pk["position"] - truth[0, 0]) <= 4 * pk["position_esd"] + 0.01, pk
    summary, _ = _reference(ref, SearchSpace(*ref.fit_range))
    assert "peaks" not in summary["background"]


@pytest.fixture(scope="module")
def cucr2o4_recipe(data_dir):
    d = data_dir / "cucr2o4"
    pattern = read_pattern(d / "OH_00.fxye")
    phases = [load_phase(d / "CuCr2O4.cif"), load_phase(d / "CuO.cif")]
    inst = read_instrument(d / "OH_00.prm")
    strategy = Strategy.from_json(d / "gsas2_recipe_strategy.json")
    return Refinement(pattern, phases, inst, fit_range=(4.5, 26.096)).run(strategy)


def test_cucr2o4_recipe_matches_gsas2(cucr2o4_recipe):
    res = cucr2o4_recipe
    assert res.ok, res.message
    assert res.instrument["geometry"] == "debye_scherrer"
    assert res.rwp <= 14.0  # GSAS-II 13.68 %
    spinel = next(p for p in res.phases if p["name"] == "CuCr2O4")
    for axis, (ref, ref_esd) in GSAS2_CELL.items():
        assert abs(spinel["lattice"][axis] - ref) <= 3 * max(ref_esd, spinel["lattice_esd"][axis]) + 2e-4, (
            axis
        )
    cuo = next(p for p in res.phases if p["name"] == "CuO")
    assert abs(100 * cuo["weight_fraction"] - GSAS2_CUO_WT) <= 0.3
    assert len(res.background["peaks"]) == 1


def test_stage_strain_axis_and_background_peaks_round_trip():
    d = [
        {
            "name": "s1",
            "refine": ["background", "scale"],
            "background": {"type": "chebyshev", "terms": 4, "peaks": [[5.0, 1.5]]},
        },
        {"name": "s2", "refine": ["uniaxial_strain"], "strain_axis": {"A": [0, 1, 0], "B": [0, 0, 0]}},
        {"name": "s3", "refine": ["uniaxial_strain"], "strain_axis": [1, 0, 0]},
    ]
    st = Strategy.from_dict(d)
    assert st.stages[0].background.peaks == ((5.0, 1.5),)
    assert Strategy.from_dict(st.to_dict()) == st
    with pytest.raises(ValueError, match=r"background peak .*position"):
        Strategy.from_dict([{"refine": ["background"], "background": {"peaks": [[-1.0, 2.0]]}}])
    with pytest.raises(ValueError, match="strain_axis"):
        Strategy.from_dict([{"refine": ["uniaxial_strain"], "strain_axis": "010"}])


def test_uniaxial_strain_needs_an_axis_and_a_known_phase(ds_setup, pbso4_phase):
    ref, _, _ = ds_setup
    with pytest.raises(ValueError, match="no stage gave a strain_axis"):
        ref.run(Strategy.from_dict([{"refine": ["scale", "uniaxial_strain"]}]))
    with pytest.raises(ValueError, match="strain_axis names no phase 'CuO'"):
        ref.run(
            Strategy.from_dict([{"refine": ["scale", "uniaxial_strain"], "strain_axis": {"CuO": [0, 0, 1]}}])
        )


def test_cli_background_peak_and_geometry_options(data_dir, tmp_path):
    import json

    from xbeam_bluesky.cli import main

    d = data_dir / "cucr2o4"
    out = tmp_path / "r.json"
    args = ["refine", str(d / "OH_00.fxye"), "--cif", str(d / "CuCr2O4.cif"), "--cif", str(d / "CuO.cif")]
    args += ["--instrument", str(d / "OH_00.prm"), "--range", "4.5:26.096", "--out", str(out)]
    assert main([*args, "--background-peak", "5:1.5", "--mu-r", "0.05"]) == 0
    res = json.loads(out.read_text())
    assert res["instrument"]["geometry"] == "debye_scherrer" and res["instrument"]["absorption"] == 0.05
    assert "displace_x" in res["instrument"] and "displacement" not in res["instrument"]
    assert len(res["background"]["peaks"]) == 1
    assert res["strategy"]["stages"][0]["background"]["peaks"] == [[5.0, 1.5]]
    assert main([*args, "--background-peak", "five"]) == 2
    assert main([*args, "--geometry", "bragg_brentano", "--mu-r", "0.3"]) == 2


def test_absorption_mu_r_is_recovered_from_a_simulated_capillary(pbso4_phase):
    """A pattern simulated with μR = 1.2: refining scale, background and absorption from μR = 0.3 finds it."""
    x = np.arange(5.0, 60.0, 0.01)
    truth = Instrument.monochromatic(0.6, geometry="debye_scherrer").with_changes(x=0.5, y=2.0, mu_r=1.2)
    y0 = simulate_counts(pbso4_phase, x, truth)
    y = np.random.default_rng(7).poisson(y0).astype(float)
    pat = Pattern(x, y, np.sqrt(np.maximum(y, 1.0)), "capillary")
    start = truth.with_changes(mu_r=0.3)
    strategy = Strategy.from_dict(
        [
            {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 2}},
            {"refine": ["absorption"], "max_cycles": 20},
        ]
    )
    res = Refinement(pat, [pbso4_phase], start).run(strategy)
    assert res.ok, res.message
    assert abs(res.instrument["absorption"] - 1.2) <= 4 * res.instrument["absorption_esd"]
    assert res.instrument["absorption_esd"] < 0.05


def simulate_counts(phase, x, inst):
    from xbeam_bluesky.rietveld import simulate_pattern

    return simulate_pattern([phase], x, instrument=inst, scales=[3e-3], background=20.0)


def _simulated_mixture(data_dir, cuo_strain: float | None):
    """CuCr2O4 + ~5 wt % CuO on a 0.45 Å capillary line; CuO with its own isotropic microstrain (or none)."""
    from xbeam_bluesky.rietveld.model import PatternCalculator, initial_state

    d = data_dir / "cucr2o4"
    phases = [load_phase(d / "CuCr2O4.cif"), load_phase(d / "CuO.cif")]
    for ph in phases:
        ph.uiso[:] = 0.005  # a physical truth (the CIF's spinel O starts at −0.004 Å²)
    x = np.arange(5.0, 26.0, 0.004)
    inst = Instrument.monochromatic(0.45, geometry="debye_scherrer").with_changes(x=0.5, y=1.0)
    st = initial_state(phases, inst)
    st.phases[0].scale, st.phases[1].scale = 1e-4, 2e-4
    if cuo_strain is not None:
        st.phases[1].strain_axis, st.phases[1].strain_aniso = (0, 0, 0), cuo_strain
    calc = PatternCalculator(x, phases, inst)
    calc.update_reflections(st)
    expected = calc.evaluate(st).y + 30.0
    y = np.random.default_rng(11).poisson(expected).astype(float)
    return Refinement(Pattern(x, y, np.sqrt(np.maximum(y, 1.0)), "sim"), phases, inst), st


@pytest.mark.slow
@pytest.mark.parametrize("truth", [None, 6.0])
def test_default_adds_per_phase_strain_only_when_the_simulation_has_it(data_dir, truth):
    """The default sequence's per-phase strain step: on a simulated mixture whose minor phase has its own
    isotropic microstrain it keeps a strain term on that phase and recovers the value; without it, none."""
    from xbeam_bluesky.rietveld.default_sequence import refine_default

    refinement, _ = _simulated_mixture(data_dir, truth)
    res, strategy = refine_default(refinement)
    assert res.ok, res.message
    names = [s.name for s in strategy.stages]
    cuo = next(p for p in res.phases if p["name"] == "CuO")
    if truth is None:
        assert not any(n.startswith("strain") for n in names), names
        return
    assert "strain CuO 000" in names, names
    got = cuo["uniaxial_strain"]
    assert got["axis"] == [0, 0, 0]
    assert abs(got["value"] - truth) <= 4 * got["esd"] + 0.05 * truth, got


@pytest.mark.slow
def test_cucr2o4_default_from_the_prm_alone_matches_gsas2(data_dir):
    """Issue 14: the default refinement (no strategy, no background peak) on 11-BM CuCr2O4 + CuO at 7 K."""
    from xbeam_bluesky.rietveld.default_sequence import refine_default

    d = data_dir / "cucr2o4"
    refinement = Refinement(
        read_pattern(d / "OH_00.fxye"),
        [load_phase(d / "CuCr2O4.cif"), load_phase(d / "CuO.cif")],
        read_instrument(d / "OH_00.prm"),
        fit_range=(4.5, 26.096),
    )
    res, _ = refine_default(refinement)
    assert res.ok, res.message
    assert res.rwp <= 14.0  # GSAS-II 13.68 %
    spinel = next(p for p in res.phases if p["name"] == "CuCr2O4")
    for axis, (ref, ref_esd) in GSAS2_CELL.items():
        err = abs(spinel["lattice"][axis] - ref)
        assert err <= 3 * max(ref_esd, spinel["lattice_esd"][axis]) + 2e-4, (axis, err)
    cuo = next(p for p in res.phases if p["name"] == "CuO")
    assert abs(100 * cuo["weight_fraction"] - GSAS2_CUO_WT) <= 0.3


@pytest.mark.slow
def test_cucr2o4_auto_search_from_the_prm_alone_matches_gsas2(data_dir):
    """Issue 14: ``--auto`` on 11-BM CuCr2O4 + 1 wt % CuO (was: every trial invalid). The minor phase keeps
    its CIF atoms, the spinel's capillary offset along the beam (degenerate with the cell at 4.5–26°) is not
    offered, and the best valid trial meets GSAS-II's cell and CuO fraction."""
    from xbeam_bluesky.rietveld import SearchSettings, problem_space, run_search

    d = data_dir / "cucr2o4"
    refinement = Refinement(
        read_pattern(d / "OH_00.fxye"),
        [load_phase(d / "CuCr2O4.cif"), load_phase(d / "CuO.cif")],
        read_instrument(d / "OH_00.prm"),
        fit_range=(4.5, 26.096),
    )
    space = problem_space(refinement)
    assert space.atom_phases == ("CuCr2O4",) and "transparency" in space.exclude
    assert [name for name, _ in space.strain_axes] == ["CuCr2O4", "CuO"]
    search = run_search(refinement, space=space, settings=SearchSettings(n_trials=12, seed=0))
    assert search.best is not None, search.failure_reasons()
    res = search.best.summary
    assert res["rwp"] <= 14.0  # GSAS-II 13.68 %
    spinel = next(p for p in res["phases"] if p["name"] == "CuCr2O4")
    for axis, (ref, ref_esd) in GSAS2_CELL.items():
        err = abs(spinel["lattice"][axis] - ref)
        assert err <= 3 * max(ref_esd, spinel["lattice_esd"][axis]) + 2e-4, (axis, err)
    cuo = next(p for p in res["phases"] if p["name"] == "CuO")
    assert abs(100 * cuo["weight_fraction"] - GSAS2_CUO_WT) <= 0.3
    assert [a["uiso"] for a in cuo["atoms"]] == pytest.approx([0.001, 0.001])  # the CIF's, not refined


def test_zero_shift_and_displace_x_are_degenerate_at_low_angles_and_never_refined_together(data_dir):
    """At 4.5–26° 2θ a capillary's DisplaceX (∝ cos 2θ) moves the peaks like a zero shift: refined together
    with the cell their correlation is 1.000, so the search space refines DisplaceX alone when a point switches
    both on (the lab PbSO4 range keeps both: its pairs are left to the correlation rule)."""
    from xbeam_bluesky.rietveld import SearchSpace, problem_space
    from xbeam_bluesky.rietveld.search import degenerate_shift_pairs
    from xbeam_bluesky.rietveld.validity import check_degeneracy

    d = data_dir / "cucr2o4"
    refinement = Refinement(
        read_pattern(d / "OH_00.fxye"),
        [load_phase(d / "CuCr2O4.cif"), load_phase(d / "CuO.cif")],
        read_instrument(d / "OH_00.prm"),
        fit_range=(4.5, 26.096),
    )
    assert degenerate_shift_pairs(refinement) == (("zero", "displacement"),)
    both = Strategy.from_dict(
        [
            {"refine": ["background", "scale"], "max_cycles": 5},
            {"refine": ["cell", "zero", "displacement", "X", "Y"], "max_cycles": 8},
        ]
    )
    res = refinement.run(both)
    (reason,) = check_degeneracy(res.parameter_names, res.correlation)
    assert "zero/displacement" in reason
    space = problem_space(refinement, exclude=("U", "V", "W", "SH/L"))
    assert space.exclusive_shifts == (("zero", "displacement"),)
    stages = space.strategy({**space.default_params(), "zero": True, "displacement": True}).stages
    refined = {g for st in stages for g in st.refine}
    assert "displacement" in refined and "zero" not in refined
    assert SearchSpace.from_dict(space.to_dict()) == space
    lab = Refinement(
        read_pattern(data_dir / "pbso4" / "PBSO4.XRA"),
        [load_phase(data_dir / "pbso4" / "PbSO4-Wyckoff.cif")],
        read_instrument(data_dir / "pbso4" / "INST_XRY.PRM"),
        fit_range=(16.0, 158.4),
    )
    assert degenerate_shift_pairs(lab) == ()
    with pytest.raises(ValueError, match="exclusive_shifts pair"):
        SearchSpace(4.5, 26.0, exclusive_shifts=(("zero", "cell"),))


def test_atom_phases_round_trip_and_unknown_phase_is_named(ds_setup):
    ref, _, _ = ds_setup
    st = Strategy.from_dict([{"refine": ["scale", "atoms_uiso"], "atom_phases": ["PbSO4"]}])
    assert st.stages[0].atom_phases == ("PbSO4",) and Strategy.from_dict(st.to_dict()) == st
    with pytest.raises(ValueError, match="atom_phases names no phase 'CuO'"):
        ref.run(Strategy.from_dict([{"refine": ["scale", "atoms_uiso"], "atom_phases": ["CuO"]}]))
    with pytest.raises(ValueError, match="atom_phases"):
        Strategy.from_dict([{"refine": ["scale"], "atom_phases": "PbSO4"}])
