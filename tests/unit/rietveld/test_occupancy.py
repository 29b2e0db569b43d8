"""Site-occupancy refinement: structure factors, Jacobian, recovery from simulated data, ties, errors."""

from __future__ import annotations

import dataclasses

import gemmi
import numpy as np
import pytest

from xbeam_bluesky.rietveld import (
    Instrument,
    OccupancySpec,
    Pattern,
    Refinement,
    Strategy,
    load_phase,
    simulate_pattern,
)
from xbeam_bluesky.rietveld.crystal import generate_reflections
from xbeam_bluesky.rietveld.lattice import cell_to_a, inv_d2
from xbeam_bluesky.rietveld.model import PatternCalculator, initial_state
from xbeam_bluesky.rietveld.structure_factors import structure_factors

#: (Mg,Fe)O rock salt with Mg and Fe sharing the cation site (occupancies 0.7 / 0.3 in the CIF)
MIXED_CIF = """data_ferropericlase
_cell_length_a 4.25
_cell_length_b 4.25
_cell_length_c 4.25
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_U_iso_or_equiv
Mg1 Mg 0 0 0 0.7 0.006
Fe1 Fe 0 0 0 0.3 0.006
O1 O 0.5 0.5 0.5 1.0 0.008
"""


@pytest.fixture(scope="module")
def mixed_phase(tmp_path_factory):
    path = tmp_path_factory.mktemp("occ") / "fp.cif"
    path.write_text(MIXED_CIF)
    return load_phase(path)


def _poisson(phase, x, inst, scale, seed):
    truth = simulate_pattern([phase], x, instrument=inst, scales=[scale], background=80.0 + 0.1 * x)
    counts = np.random.default_rng(seed).poisson(truth).astype(float)
    return Pattern(x, counts, np.sqrt(np.maximum(counts, 1.0)), "poisson")


def test_f2_with_partial_occupancies_matches_gemmi(pbso4_phase, data_dir):
    ph = pbso4_phase
    a_terms = cell_to_a(ph.cell)
    refl = generate_reflections(ph, a_terms, 0.78)
    stol2 = inv_d2(refl.hkl, a_terms) / 4
    occ = ph.occupancy.copy()
    occ[[0, 3]] = [0.85, 0.6]  # Pb and O2
    zeros = np.zeros(ph.n_sites)
    ours = structure_factors(ph, refl.hkl, stol2, ph.xyz, ph.uiso, zeros, zeros, occupancy=occ).f2
    st = gemmi.read_small_structure(str(data_dir / "pbso4" / "PbSO4-Wyckoff.cif"))
    assert [s.label for s in st.sites] == ph.labels
    for site, o in zip(st.sites, occ, strict=True):
        site.occ = float(o)
    st.change_occupancies_to_crystallographic()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    ref = np.array(
        [abs(calc.calculate_sf_from_small_structure(st, list(map(int, h)))) ** 2 for h in refl.hkl]
    )
    full = structure_factors(ph, refl.hkl, stol2, ph.xyz, ph.uiso, zeros, zeros).f2
    assert np.abs(ours - full).max() > 0.05 * full.max()  # the occupancies matter
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-3)
    assert ph.occupancy[0] == 1.0  # the phase itself is untouched


def test_f2_occupancy_derivative_matches_finite_differences(pbso4_phase):
    ph = pbso4_phase
    a_terms = cell_to_a(ph.cell)
    refl = generate_reflections(ph, a_terms, 0.9)
    stol2 = inv_d2(refl.hkl, a_terms) / 4
    fp, fpp = ph.anomalous(1.5405)
    occ = np.array([0.85, 1.0, 0.0, 0.6, 0.9])  # includes an empty site: its derivative is not zero
    sf = structure_factors(ph, refl.hkl, stol2, ph.xyz, ph.uiso, fp, fpp, want_derivs=True, occupancy=occ)
    h = 1e-6
    for j in range(ph.n_sites):
        o = occ.copy()
        o[j] += h
        up = structure_factors(ph, refl.hkl, stol2, ph.xyz, ph.uiso, fp, fpp, occupancy=o).f2
        o[j] -= 2 * h
        dn = structure_factors(ph, refl.hkl, stol2, ph.xyz, ph.uiso, fp, fpp, occupancy=o).f2
        np.testing.assert_allclose(sf.d_occ[:, j], (up - dn) / (2 * h), rtol=1e-6, atol=1e-6 * sf.f2.max())
    assert np.abs(sf.d_occ[:, 2]).max() > 0


def test_occupancy_jacobian_block_with_ties_matches_finite_differences(pbso4_phase):
    ph = pbso4_phase
    x = np.arange(18.0, 60.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=3.0, y=4.0)
    ref = Refinement(Pattern(x, np.ones_like(x), np.ones_like(x), "dummy"), [ph], inst)
    # Pb on its own, O1 and O2 tied (an explicit group: the column moves them in opposite directions)
    spec = OccupancySpec(("Pb", "O1", "O2"), tie_shared_sites=(("O1", "O2"),))
    ref.parameters.occ_maps = ref._occupancy_maps((spec,), "test")
    st = initial_state([ph], inst)
    st.phases[0].occupancy = np.array([0.8, 1.0, 0.7, 0.5, 1.0])
    st.phases[0].scale = 1e-3
    calc = PatternCalculator(x, [ph], inst)
    calc.update_reflections(st)
    params = ref.parameters.params(st, {"occupancy"})
    assert [p.name for p in params] == ["PbSO4:Pb:occ", "PbSO4:O1:occ"]
    # bounds keep both tied sites in [0, 1]: O1 in [0.2, 1] so that O2 = 1.2 − O1 stays in [0.2, 1]
    assert (params[1].lower, params[1].upper) == pytest.approx((0.2, 1.0))
    ev = calc.evaluate(st, frozenset({"occupancy"}), jacobian=True)
    jac = ref.parameters.jacobian(ev.blocks, params)
    p0 = ref.parameters.get(st, params)
    h = 1e-6
    for i in range(len(p0)):
        s1, s2 = st.copy(), st.copy()
        pp = p0.copy()
        pp[i] += h
        ref.parameters.set(s1, params, pp)
        pp[i] -= 2 * h
        ref.parameters.set(s2, params, pp)
        assert s1.phases[0].occupancy[2] + s1.phases[0].occupancy[3] == pytest.approx(1.2, abs=1e-12)
        fd = (calc.evaluate(s1).y - calc.evaluate(s2).y) / (2 * h)
        assert np.abs(jac[:, i] - fd).max() <= 2e-3 * np.abs(fd).max(), params[i].name


def test_partial_occupancy_is_recovered_from_poisson_data(pbso4_phase):
    """PbSO4 simulated with Pb at 0.85 refines back from the CIF's 1.0 within 3 esd."""
    true_occ = pbso4_phase.occupancy.copy()
    true_occ[0] = 0.85
    truth = dataclasses.replace(pbso4_phase, occupancy=true_occ)
    x = np.arange(15.0, 100.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)
    pattern = _poisson(truth, x, inst, 3e-3, seed=11)
    ref = Refinement(pattern, [pbso4_phase], inst)
    strategy = Strategy.from_dict(
        [
            {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 3}},
            {"name": "occupancy", "refine": ["occupancy"], "occupancy": {"sites": ["Pb"]}},
        ]
    )
    res = ref.run(strategy)
    assert res.ok, res.message
    assert 0.9 < res.gof < 1.1
    pb = res.phases[0]["atoms"][0]
    assert 0 < pb["occupancy_esd"] < 0.02
    assert abs(pb["occupancy"] - 0.85) < 3 * pb["occupancy_esd"], pb
    assert res.phases[0]["atoms"][1]["occupancy"] == 1.0 and res.phases[0]["atoms"][1]["occupancy_esd"] == 0.0
    assert "PbSO4:Pb:occ" in res.parameter_names
    assert ref.initial.phases[0].occupancy[0] == 1.0 and pbso4_phase.occupancy[0] == 1.0  # start untouched
    assert not any("bound" in w for w in res.warnings)


def test_shared_site_is_tied_and_keeps_its_sum(mixed_phase):
    """Mg1/Fe1 on one site become one parameter; Mg + Fe stays 1 while Fe goes 0.3 → 0.45."""
    true_occ = np.array([0.55, 0.45, 1.0])
    x = np.arange(20.0, 130.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)
    pattern = _poisson(dataclasses.replace(mixed_phase, occupancy=true_occ), x, inst, 2e-2, seed=3)
    strategy = Strategy.from_dict(
        [
            {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 3}},
            {"refine": ["occupancy"], "occupancy": {"phase": "ferropericlase", "sites": ["Fe1", "Mg1"]}},
        ]
    )
    res = Refinement(pattern, [mixed_phase], inst).run(strategy)
    assert res.ok, res.message
    occ_names = [n for n in res.parameter_names if n.endswith(":occ")]
    assert occ_names == ["ferropericlase:Mg1:occ"]  # one free parameter for the tied pair
    mg, fe, o = res.phases[0]["atoms"]
    assert mg["occupancy"] + fe["occupancy"] == pytest.approx(1.0, abs=1e-12)
    assert fe["occupancy_esd"] == pytest.approx(mg["occupancy_esd"]) and fe["occupancy_esd"] > 0
    assert abs(fe["occupancy"] - 0.45) < 3 * fe["occupancy_esd"], fe
    assert o["occupancy"] == 1.0
    # without the tie both refine on their own: two parameters
    untied = Strategy.from_dict(
        [
            {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 3}},
            {"refine": ["occupancy"], "occupancy": {"sites": ["Fe1", "Mg1"], "tie_shared_sites": False}},
        ]
    )
    res = Refinement(pattern, [mixed_phase], inst).run(untied)
    assert [n for n in res.parameter_names if n.endswith(":occ")] == [
        "ferropericlase:Mg1:occ",
        "ferropericlase:Fe1:occ",
    ]


def test_all_occupancies_with_the_scale_report_the_degeneracy(pbso4_phase):
    x = np.arange(15.0, 90.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)
    pattern = _poisson(pbso4_phase, x, inst, 3e-3, seed=5)
    res = Refinement(pattern, [pbso4_phase], inst).run(
        Strategy.from_dict(
            [
                {"refine": ["background", "scale"]},
                {"name": "occ", "refine": ["occupancy"], "occupancy": {"sites": pbso4_phase.labels}},
            ]
        )
    )
    assert res.status == "singular" and not res.ok
    assert "stage 'occ'" in res.message and "PbSO4:scale" in res.message
    for lab in pbso4_phase.labels:
        assert f"PbSO4:{lab}:occ" in res.message
    assert "scaling every occupancy" in res.message
    # leaving one site out lifts the degeneracy
    res = Refinement(pattern, [pbso4_phase], inst).run(
        Strategy.from_dict(
            [{"refine": ["background", "scale", "occupancy"], "occupancy": {"sites": ["Pb", "S"]}}]
        )
    )
    assert res.ok, res.message


def test_occupancy_strategy_round_trip_and_errors(pbso4_phase, mixed_phase):
    s = Strategy.from_dict(
        [
            {"refine": ["scale"]},
            {"refine": ["occupancy"], "occupancy": {"sites": ["Fe1", "Mg1"]}},
            {
                "refine": ["atoms_uiso"],
                "occupancy": [
                    {
                        "phase": "ferropericlase",
                        "sites": ["Fe1", "Mg1"],
                        "tie_shared_sites": [["Fe1", "Mg1"]],
                    },
                    {"phase": "PbSO4", "sites": ["Pb"], "tie_shared_sites": False},
                ],
            },
        ]
    )
    assert Strategy.from_dict(s.to_dict()) == s
    assert s.to_dict()["stages"][1]["occupancy"] == {"sites": ["Fe1", "Mg1"]}
    assert s.stages[2].occupancy[0].tie_shared_sites == (("Fe1", "Mg1"),)
    with pytest.raises(ValueError, match="does not refine 'occupancy'"):
        Strategy.from_dict([{"refine": ["scale"], "occupancy": {"sites": ["Pb"]}}])
    with pytest.raises(ValueError, match="tied labels O1 are not among the refined sites"):
        Strategy.from_dict(
            [{"refine": ["occupancy"], "occupancy": {"sites": ["Pb"], "tie_shared_sites": [["Pb", "O1"]]}}]
        )
    with pytest.raises(ValueError, match="unknown occupancy keys"):
        Strategy.from_dict([{"refine": ["occupancy"], "occupancy": {"sites": ["Pb"], "site": "Pb"}}])
    with pytest.raises(ValueError, match="needs 'sites'"):
        Strategy.from_dict([{"refine": ["occupancy"], "occupancy": {"phase": "PbSO4"}}])
    with pytest.raises(ValueError, match="need a 'phase' each"):
        Strategy.from_dict([{"refine": ["occupancy"], "occupancy": [{"sites": ["Pb"]}, {"sites": ["S"]}]}])

    x = np.arange(15.0, 90.0, 0.05)
    pattern = Pattern(x, np.ones_like(x), np.ones_like(x), "dummy")
    one = Refinement(pattern, [pbso4_phase])
    with pytest.raises(
        ValueError, match=r"stage 'occ': occupancy: phase 'PbSO4' has no site 'Fe9'; sites: Pb, S"
    ):
        one.run(
            Strategy.from_dict(
                [{"name": "occ", "refine": ["occupancy"], "occupancy": {"sites": ["Pb", "Fe9"]}}]
            )
        )
    with pytest.raises(ValueError, match="no phase named 'olivine'; phases: PbSO4"):
        one.run(
            Strategy.from_dict(
                [{"refine": ["occupancy"], "occupancy": {"phase": "olivine", "sites": ["Fe1"]}}]
            )
        )
    two = Refinement(pattern, [pbso4_phase, mixed_phase])
    with pytest.raises(ValueError, match="several phases \\(PbSO4, ferropericlase\\); name one with 'phase'"):
        two.run(Strategy.from_dict([{"refine": ["occupancy"], "occupancy": {"sites": ["Pb"]}}]))
