"""Model features checked by recovering known parameters from simulated patterns, and anisotropic U."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from xbeam_bluesky.rietveld import Instrument, Pattern, Refinement, Strategy, load_phase, simulate_pattern
from xbeam_bluesky.rietveld.crystal import generate_reflections
from xbeam_bluesky.rietveld.lattice import cell_to_a, inv_d2
from xbeam_bluesky.rietveld.model import PatternCalculator, initial_state
from xbeam_bluesky.rietveld.structure_factors import structure_factors

ANISO_CIF = """data_aniso
_cell_length_a 8.48
_cell_length_b 5.398
_cell_length_c 6.958
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P n m a'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_U_iso_or_equiv
_atom_site_adp_type
Pb Pb 0.1882 0.25 0.167 1.0 0.02 Uani
O3 O 0.085 0.026 0.806 1.0 0.01 Uiso
loop_
_atom_site_aniso_label
_atom_site_aniso_U_11
_atom_site_aniso_U_22
_atom_site_aniso_U_33
_atom_site_aniso_U_12
_atom_site_aniso_U_13
_atom_site_aniso_U_23
Pb 0.030 0.015 0.020 0.0 0.004 0.0
"""


def test_anisotropic_u_matches_gemmi(tmp_path):
    f = tmp_path / "aniso.cif"
    f.write_text(ANISO_CIF)
    ph = load_phase(f)
    assert not np.isnan(ph.u_aniso[0, 0]) and np.isnan(ph.u_aniso[1, 0])
    a_terms = cell_to_a(ph.cell)
    refl = generate_reflections(ph, a_terms, 0.9)
    zeros = np.zeros(ph.n_sites)
    ours = structure_factors(ph, refl.hkl, inv_d2(refl.hkl, a_terms) / 4, ph.xyz, ph.uiso, zeros, zeros).f2
    st = gemmi.read_small_structure(str(f))
    st.change_occupancies_to_crystallographic()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    ref = np.array(
        [abs(calc.calculate_sf_from_small_structure(st, list(map(int, h)))) ** 2 for h in refl.hkl]
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def _simulate_state(phases, x, inst, mutate):
    st = initial_state(phases, inst)
    st.background_kind = "chebyshev"
    st.background_coefs = np.array([80.0])
    mutate(st)
    calc = PatternCalculator(x, phases, inst)
    calc.update_reflections(st)
    return calc.evaluate(st).y


@pytest.mark.slow
def test_two_phase_scales_and_weight_fractions(data_dir):
    pb = load_phase(data_dir / "pbso4" / "PbSO4-Wyckoff.cif")
    lab6 = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    x = np.arange(15.0, 100.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)
    scales = [3e-3, 5e-3]
    y = simulate_pattern([pb, lab6], x, instrument=inst, scales=scales, background=60.0)
    res = Refinement(Pattern(x, y, np.sqrt(y), "mixture"), [pb, lab6], inst).run(
        Strategy.from_dict(
            [{"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 2}}]
        )
    )
    assert res.rwp < 0.05
    got = [p["scale"] for p in res.phases]
    np.testing.assert_allclose(got, scales, rtol=1e-4)
    # Hill & Howard: W_p ∝ S_p · (Z M)_p · V_p, with Z M from the formula (PbSO4 Z=4, M=303.26; LaB6 Z=1, M=203.78)
    zmv = np.array(
        [4 * 303.26 * gemmi.UnitCell(*pb.cell).volume, 1 * 203.78 * gemmi.UnitCell(*lab6.cell).volume]
    )
    expected = np.array(scales) * zmv / np.sum(np.array(scales) * zmv)
    np.testing.assert_allclose([p["weight_fraction"] for p in res.phases], expected, rtol=1e-3)


def test_phases_with_the_same_name_keep_their_own_parameters(data_dir):
    """Two CIFs with one block name (``data_global`` is common): parameters and esds stay per phase."""
    x = np.arange(15.0, 100.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)
    cifs = (data_dir / "pbso4" / "PbSO4-Wyckoff.cif", data_dir / "lab6" / "LaB6_start.cif")
    y = simulate_pattern(
        [load_phase(c) for c in cifs], x, instrument=inst, scales=[3e-3, 5e-3], background=60.0
    )
    rng = np.random.default_rng(4)
    counts = rng.poisson(y).astype(float)
    pattern = Pattern(x, counts, np.sqrt(np.maximum(counts, 1.0)), "mixture")
    strategy = Strategy.from_dict([{"refine": ["background", "scale", "cell"]}])
    distinct = Refinement(pattern, [load_phase(c) for c in cifs], inst).run(strategy)
    same = Refinement(pattern, [load_phase(c, name="global") for c in cifs], inst).run(strategy)
    assert [p["name"] for p in same.phases] == ["global", "global_2"]
    assert "two phases are named 'global': the later one is called 'global_2'" in same.warnings
    for ours, reference in zip(same.phases, distinct.phases, strict=True):
        assert ours["scale_esd"] == pytest.approx(reference["scale_esd"], rel=1e-9)
        assert ours["lattice_esd"]["a"] == pytest.approx(reference["lattice_esd"]["a"], rel=1e-9)
    assert same.phases[0]["lattice_esd"]["a"] != pytest.approx(same.phases[1]["lattice_esd"]["a"])


@pytest.mark.slow
def test_preferred_orientation_and_transparency_are_recovered(pbso4_phase):
    x = np.arange(15.0, 110.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)

    def mutate(st):
        st.phases[0].scale = 2e-3
        st.phases[0].po_ratio = 0.8
        st.phases[0].po_axis = (0, 1, 0)
        st.transparency = 0.3

    y = _simulate_state([pbso4_phase], x, inst, mutate)
    ref = Refinement(Pattern(x, y, np.sqrt(y), "po"), [pbso4_phase], inst)
    res = ref.run(
        Strategy.from_dict(
            [
                {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 1}},
                {"refine": ["transparency"]},
                {"refine": ["preferred_orientation"], "po_axis": [0, 1, 0]},
            ]
        )
    )
    assert res.rwp < 0.05
    assert res.phases[0]["preferred_orientation"]["ratio"] == pytest.approx(0.8, abs=1e-3)
    assert res.instrument["transparency"] == pytest.approx(0.3, abs=2e-3)


def test_physical_warnings_are_reported(synthetic_lab6):
    x, y, inst, lab6 = synthetic_lab6
    start = initial_state([lab6], inst)
    start.phases[0].uiso = np.array([-0.004, 0.005])
    res = Refinement(Pattern(x, y, np.sqrt(y), "lab6"), [lab6], inst).run(
        Strategy.from_dict(
            [{"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 2}}]
        ),
        state=start,
    )
    assert any("negative Uiso for La1" in w for w in res.warnings)


@pytest.fixture(scope="module")
def synthetic_lab6(data_dir):
    lab6 = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    x = np.arange(20.0, 80.0, 0.02)
    inst = Instrument.lab_cu_ka()
    y = simulate_pattern([lab6], x, instrument=inst, scales=[1e-3], background=30.0)
    return x, y, inst, lab6


@pytest.mark.slow
def test_poisson_data_give_gof_one_and_truthful_esds(data_dir):
    """With the right model, GOF ≈ 1 and the true values lie within ~3 esd (statistical self-consistency)."""
    pb = load_phase(data_dir / "pbso4" / "PbSO4-Wyckoff.cif")
    lab6 = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    x = np.arange(15.0, 100.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)
    truth = simulate_pattern([pb, lab6], x, instrument=inst, scales=[3e-3, 5e-3], background=60.0 + 0.1 * x)
    counts = np.random.default_rng(7).poisson(truth).astype(float)
    res = Refinement(Pattern(x, counts, np.sqrt(np.maximum(counts, 1.0)), "poisson"), [pb, lab6], inst).run()
    assert res.ok
    assert 0.95 < res.gof < 1.05
    for phase, cell in zip(res.phases, (pb.cell, lab6.cell), strict=True):
        for i, key in enumerate(("a", "b", "c")):
            assert abs(phase["lattice"][key] - cell[i]) < 4 * phase["lattice_esd"][key], (phase["name"], key)
    assert abs(res.phases[0]["scale"] - 3e-3) < 4 * res.phases[0]["scale_esd"]
