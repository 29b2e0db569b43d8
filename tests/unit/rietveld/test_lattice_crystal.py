"""Cell metrics, crystal-system constraints, site symmetry, reflection lists."""

from __future__ import annotations

import itertools

import gemmi
import numpy as np
import pytest

from xbeam_bluesky.rietveld import load_phase
from xbeam_bluesky.rietveld.crystal import generate_reflections
from xbeam_bluesky.rietveld.lattice import a_to_cell, cell_to_a, inv_d2, lattice_constraint_matrix


@pytest.mark.parametrize(
    "cell",
    [
        (8.48, 5.398, 6.958, 90, 90, 90),
        (9.372, 9.372, 6.886, 90, 90, 120),
        (5.1, 6.2, 7.3, 81.0, 97.5, 102.3),
    ],
)
def test_cell_a_round_trip_and_d_spacings_match_gemmi(cell):
    a_terms = cell_to_a(np.array(cell, dtype=float))
    np.testing.assert_allclose(a_to_cell(a_terms), cell, rtol=1e-12, atol=1e-9)
    uc = gemmi.UnitCell(*cell)
    hkl = np.array([[1, 0, 0], [1, 1, 1], [2, -1, 3], [0, 4, -2]])
    d_ref = np.array([uc.calculate_d(list(map(int, h))) for h in hkl])
    np.testing.assert_allclose(1 / np.sqrt(inv_d2(hkl, a_terms)), d_ref, rtol=1e-12)


def test_constraint_matrices_keep_the_crystal_system():
    hexa = cell_to_a(np.array([9.372, 9.372, 6.886, 90, 90, 120.0]))
    m = lattice_constraint_matrix("hexagonal")
    p = np.linalg.lstsq(m, hexa, rcond=None)[0]
    np.testing.assert_allclose(
        m @ p, hexa, rtol=1e-12, atol=1e-15
    )  # the hexagonal A lies in the constrained space
    cell = a_to_cell(m @ (p * [1.01, 0.99]))
    assert cell[0] == pytest.approx(cell[1]) and cell[5] == pytest.approx(120.0)
    assert lattice_constraint_matrix("cubic").shape == (6, 1)
    assert lattice_constraint_matrix("monoclinic", "b").shape == (6, 4)
    with pytest.raises(ValueError, match="crystal system"):
        lattice_constraint_matrix("decagonal")


def test_pbso4_site_symmetry(pbso4_phase):
    ph = pbso4_phase
    assert ph.space_group == "P n m a" and ph.crystal_system == "orthorhombic"
    np.testing.assert_array_equal(ph.multiplicity, [4, 4, 4, 4, 8])  # Wyckoff 4c x4, 8d
    # mirror sites (x, 1/4, z): only x and z free; general site O3: all three
    for j in range(4):
        np.testing.assert_allclose(ph.xyz_basis[j].T, [[1, 0, 0], [0, 0, 1]])
    assert ph.xyz_basis[4].shape == (3, 3)
    assert ph.cell_mass == pytest.approx(4 * 303.26, rel=1e-3)  # Z = 4, M = 303.26 g/mol


def test_special_positions_in_hexagonal_and_cubic(data_dir):
    fap = load_phase(data_dir / "fluorapatite" / "FAP_start.cif")
    # Ca1 at (1/3, 2/3, z) on 4f: only z free; F at (0, 0, 1/4) on 2a: fixed
    np.testing.assert_allclose(fap.xyz_basis[0].T, [[0, 0, 1]])
    assert fap.xyz_basis[3].shape == (3, 0)
    lab6 = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    np.testing.assert_array_equal(lab6.multiplicity, [1, 6])
    assert lab6.xyz_basis[0].shape == (3, 0) and lab6.xyz_basis[1].T.tolist() == [[1.0, 0.0, 0.0]]


def test_reflection_multiplicities_cover_every_allowed_hkl(pbso4_phase):
    """Σ multiplicities over unique reflections == number of allowed hkl in the sphere (brute force)."""
    ph = pbso4_phase
    a_terms = cell_to_a(ph.cell)
    d_min = 1.6
    refl = generate_reflections(ph, a_terms, d_min)
    ops = gemmi.SpaceGroup("P n m a").operations()
    count = 0
    for hkl in itertools.product(range(-6, 7), range(-4, 5), range(-5, 6)):
        if hkl == (0, 0, 0):
            continue
        if inv_d2(np.array([hkl]), a_terms)[0] <= 1 / d_min**2 and not ops.is_systematically_absent(
            list(hkl)
        ):
            count += 1
    assert refl.multiplicity.sum() == count
    # Pnma absences: 0kl with k+l odd, hk0 with h odd
    for h, k, l in refl.hkl:  # noqa: E741
        assert not (h == 0 and (k + l) % 2), (h, k, l)
        assert not (l == 0 and h % 2), (h, k, l)


def test_lab6_first_reflections():
    ph = load_phase(
        __import__("pathlib").Path(__file__).resolve().parents[2] / "data" / "xrd" / "lab6" / "LaB6_start.cif"
    )
    refl = generate_reflections(ph, cell_to_a(ph.cell), 1.5)
    first = {tuple(sorted(map(abs, h))): m for h, m in zip(refl.hkl, refl.multiplicity, strict=True)}
    assert (
        first[(0, 0, 1)] == 6 and first[(0, 1, 1)] == 12 and first[(1, 1, 1)] == 8 and first[(0, 1, 2)] == 24
    )
