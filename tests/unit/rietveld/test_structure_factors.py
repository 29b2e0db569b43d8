"""Structure factors against independent calculators, and their derivatives."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from xbeam_bluesky.rietveld.crystal import generate_reflections
from xbeam_bluesky.rietveld.lattice import cell_to_a, inv_d2
from xbeam_bluesky.rietveld.structure_factors import structure_factors


@pytest.fixture(scope="module")
def pbso4_refl(pbso4_phase):
    refl = generate_reflections(pbso4_phase, cell_to_a(pbso4_phase.cell), 0.78)
    stol2 = inv_d2(refl.hkl, cell_to_a(pbso4_phase.cell)) / 4
    return refl, stol2


def test_f2_matches_gemmi_calculator(pbso4_phase, pbso4_refl, data_dir):
    """Without anomalous terms our |F|² equals gemmi's StructureFactorCalculatorX (IT92, B = 8π²U)."""
    ph = pbso4_phase
    refl, stol2 = pbso4_refl
    zeros = np.zeros(ph.n_sites)
    ours = structure_factors(ph, refl.hkl, stol2, ph.xyz, ph.uiso, zeros, zeros).f2
    st = gemmi.read_small_structure(str(data_dir / "pbso4" / "PbSO4-Wyckoff.cif"))
    # gemmi sums every symmetry image, so sites on special positions need their occupancy divided
    st.change_occupancies_to_crystallographic()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    ref = np.array(
        [abs(calc.calculate_sf_from_small_structure(st, list(map(int, h)))) ** 2 for h in refl.hkl]
    )
    assert len(ref) > 350  # the PbSO4 reflections to 159° 2θ at Cu Kα
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-3)


def test_f2_with_anomalous_matches_a_direct_sum_over_the_unit_cell(pbso4_phase, pbso4_refl, data_dir):
    """Plain direct sum over all atoms of the cell (gemmi's expansion) with f0 + f' + i f''."""
    ph = pbso4_phase
    refl, stol2 = pbso4_refl
    fp, fpp = ph.anomalous(1.5405)
    assert fpp[0] > 5  # Pb at Cu Kα: f'' ≈ 8.5 e
    ours = structure_factors(ph, refl.hkl, stol2, ph.xyz, ph.uiso, fp, fpp).f2
    st = gemmi.read_small_structure(str(data_dir / "pbso4" / "PbSO4-Wyckoff.cif"))
    anom = {el: (a, b) for el, a, b in zip(ph.elements, fp, fpp, strict=True)}
    sites = st.get_all_unit_cell_sites()
    h = refl.hkl.astype(float)
    f_plus = np.zeros(len(h), complex)
    f_minus = np.zeros(len(h), complex)
    for s in sites:
        f0 = np.array([s.element.it92.calculate_sf(float(x)) for x in stol2])
        a, b = anom[s.element.name]
        f = (f0 + a + 1j * b) * s.occ * np.exp(-8 * np.pi**2 * s.u_iso * stol2)
        phase = 2 * np.pi * (h @ np.array([s.fract.x, s.fract.y, s.fract.z]))
        f_plus += f * np.exp(1j * phase)
        f_minus += f * np.exp(-1j * phase)
    ref = 0.5 * (abs(f_plus) ** 2 + abs(f_minus) ** 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)


def test_f2_derivatives_match_finite_differences(pbso4_phase, pbso4_refl):
    ph = pbso4_phase
    refl, stol2 = pbso4_refl
    fp, fpp = ph.anomalous(1.5405)
    sf = structure_factors(ph, refl.hkl, stol2, ph.xyz, ph.uiso, fp, fpp, want_derivs=True)
    h = 1e-6
    for j, c in [(0, 0), (1, 2), (4, 1), (4, 2)]:
        xyz = ph.xyz.copy()
        xyz[j, c] += h
        up = structure_factors(ph, refl.hkl, stol2, xyz, ph.uiso, fp, fpp).f2
        xyz[j, c] -= 2 * h
        dn = structure_factors(ph, refl.hkl, stol2, xyz, ph.uiso, fp, fpp).f2
        np.testing.assert_allclose(
            sf.d_xyz[:, j, c],
            (up - dn) / (2 * h),
            rtol=1e-4,
            atol=1e-2 * np.abs(sf.d_xyz[:, j, c]).max() * 1e-3,
        )
    for j in range(ph.n_sites):
        u = ph.uiso.copy()
        u[j] += h
        up = structure_factors(ph, refl.hkl, stol2, ph.xyz, u, fp, fpp).f2
        u[j] -= 2 * h
        dn = structure_factors(ph, refl.hkl, stol2, ph.xyz, u, fp, fpp).f2
        np.testing.assert_allclose(
            sf.d_uiso[:, j], (up - dn) / (2 * h), rtol=1e-5, atol=1e-6 * np.abs(sf.d_uiso).max()
        )
