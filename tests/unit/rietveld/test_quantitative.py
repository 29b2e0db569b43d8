"""Quantitative phase analysis: Hill–Howard weight fractions and their esds.

Checked against independent expectations: the scale convention by a supercell (the same LaB6 described in a
cell twice as long must give the same weight per unit scale·ZMV), the esd propagation by Monte Carlo draws
from the covariance (volumes from the reciprocal metric, not through our code), and a simulated PbSO4 + 1 wt % LaB6 mixture.
"""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from xbeam_bluesky.rietveld import Instrument, Pattern, Refinement, load_phase, simulate_pattern
from xbeam_bluesky.rietveld.model import initial_state
from xbeam_bluesky.rietveld.quantitative import weight_fractions

#: formula masses (g/mol) and Z, from the chemical formulae: PbSO4 Z 4, LaB6 Z 1
_ZM = {"PbSO4": 4 * 303.26, "LaB6": 1 * 203.78}


@pytest.fixture(scope="module")
def mixture(data_dir):
    """PbSO4 with 1.00 wt % LaB6 (scales from Hill–Howard with formula masses), Poisson noise, default refinement."""
    pb = load_phase(data_dir / "pbso4" / "PbSO4-Wyckoff.cif")
    lab6 = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    zmv = np.array(
        [_ZM["PbSO4"] * gemmi.UnitCell(*pb.cell).volume, _ZM["LaB6"] * gemmi.UnitCell(*lab6.cell).volume]
    )
    w = np.array([0.99, 0.01])
    scales = 3e-3 * (w / zmv) / (w[0] / zmv[0])
    x = np.arange(15.0, 120.0, 0.02)
    truth_inst = Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)
    y = simulate_pattern([pb, lab6], x, instrument=truth_inst, scales=list(scales), background=300.0)
    counts = np.random.default_rng(2).poisson(y).astype(float)
    pattern = Pattern(x, counts, np.sqrt(np.maximum(counts, 1.0)), "simulated mixture")
    return pb, lab6, pattern, Refinement(pattern, [pb, lab6], Instrument.lab_cu_ka()).run()


def test_a_one_percent_minor_phase_is_recovered_within_its_esd(mixture):
    _, _, _, res = mixture
    assert res.ok
    pb, lab6 = res.phases
    assert pb["weight_fraction"] + lab6["weight_fraction"] == pytest.approx(1.0, abs=1e-12)
    assert 0 < lab6["weight_fraction_esd"] < 0.001
    assert abs(lab6["weight_fraction"] - 0.01) <= 3 * lab6["weight_fraction_esd"]
    assert abs(lab6["weight_fraction"] - 0.01) < 0.001  # 0.1 wt %
    assert pb["weight_fraction_esd"] == pytest.approx(lab6["weight_fraction_esd"])  # two phases: W1 = 1 − W2
    assert [p["weight_fraction_status"] for p in res.phases] == ["ok", "ok"]


def test_esds_match_monte_carlo_draws_from_the_covariance(mixture):
    """Draw scales and cell terms from the refined covariance; recompute W directly; compare spreads."""
    pb, lab6, _, res = mixture
    names = res.parameter_names
    phases = [pb, lab6]
    idx = [names.index(f"{ph.name}:scale") for ph in phases]
    a_idx = [
        [names.index(f"{ph.name}:A{i}") for i in range(len(ps.a_free))]
        for ph, ps in zip(phases, res.state.phases, strict=True)
    ]
    cols = idx + [i for a in a_idx for i in a]
    mean = np.array([ps.scale for ps in res.state.phases] + [v for ps in res.state.phases for v in ps.a_free])
    draws = np.random.default_rng(0).multivariate_normal(mean, res.covariance[np.ix_(cols, cols)], size=4000)
    w_minor = []
    for d in draws:
        masses = []
        off = len(phases)
        for k, (ph, ps) in enumerate(zip(phases, res.state.phases, strict=True)):
            n_a = len(ps.a_free)
            a_terms = ph.lattice_matrix @ d[off : off + n_a]
            off += n_a
            g = np.array(
                [
                    [a_terms[0], a_terms[3] / 2, a_terms[4] / 2],
                    [a_terms[3] / 2, a_terms[1], a_terms[5] / 2],
                    [a_terms[4] / 2, a_terms[5] / 2, a_terms[2]],
                ]
            )
            volume = 1.0 / np.sqrt(np.linalg.det(g))  # V = 1 / V*
            masses.append(d[k] * _ZM[ph.name] * volume)
        w_minor.append(masses[1] / sum(masses))
    assert res.phases[1]["weight_fraction_esd"] == pytest.approx(np.std(w_minor), rel=0.05)


def test_the_scale_convention_holds_for_a_supercell(tmp_path, data_dir):
    """LaB6 written in a P1 cell doubled along a is the same material: at scale S/4 (|F|² ×4 on the allowed
    reflections) it gives the same pattern, and Hill–Howard must give it the same weight per unit mass."""
    lab6 = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    a = lab6.cell[0]
    rows = []
    for j, lab in enumerate(lab6.labels):
        images = np.einsum("oij,j->oi", lab6.rotations, lab6.xyz[j]) + lab6.translations
        images -= np.floor(images + 1e-9)
        unique = np.unique(np.round(images, 6), axis=0)
        for n, p in enumerate(unique):
            for half in (0, 1):
                rows.append(
                    f"{lab}{n}{half} {lab6.elements[j]} {(p[0] + half) / 2:.6f} {p[1]:.6f} {p[2]:.6f} 1 {lab6.uiso[j]}"
                )
    cif = tmp_path / "super.cif"
    cif.write_text(
        f"data_super\n_cell_length_a {2 * a}\n_cell_length_b {a}\n_cell_length_c {a}\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\nloop_\n"
        "_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
        "_atom_site_occupancy\n_atom_site_U_iso_or_equiv\n" + "\n".join(rows) + "\n"
    )
    sup = load_phase(cif)
    assert sup.n_sites == 14
    x = np.arange(20.0, 90.0, 0.02)
    prim_y = simulate_pattern([lab6], x, scales=[1e-3])
    sup_y = simulate_pattern([sup], x, scales=[1e-3 / 4])
    np.testing.assert_allclose(sup_y, prim_y, rtol=1e-6, atol=1e-9 * prim_y.max())
    states = initial_state([lab6, sup], Instrument.lab_cu_ka()).phases
    states[0].scale, states[1].scale = 1e-3, 1e-3 / 4
    wf = weight_fractions([lab6, sup], states, {}, None)
    np.testing.assert_allclose(wf.fraction, [0.5, 0.5], rtol=1e-9)


def test_a_phase_absent_from_the_pattern_is_reported_not_hidden(data_dir):
    pb = load_phase(data_dir / "pbso4" / "PbSO4-Wyckoff.cif")
    lab6 = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    x = np.arange(15.0, 120.0, 0.02)
    y = simulate_pattern(
        [pb], x, instrument=Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0), scales=[3e-3], background=300.0
    )
    counts = np.random.default_rng(3).poisson(y).astype(float)
    res = Refinement(Pattern(x, counts, np.sqrt(np.maximum(counts, 1.0)), "PbSO4 only"), [pb, lab6]).run()
    lab = res.phases[1]
    assert lab["scale"] == 0.0 and lab["weight_fraction"] == 0.0
    assert lab["weight_fraction_status"] == "not_detected"
    assert any("phase 'LaB6': scale refined to 0" in w and "not detected" in w for w in res.warnings)
    assert res.to_dict()["phases"][1]["weight_fraction_status"] == "not_detected"
