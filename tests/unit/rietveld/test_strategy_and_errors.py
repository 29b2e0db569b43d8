"""Strategy schema, staged behaviour, and the failure states."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xbeam_bluesky.rietveld import (
    BACKGROUND_TYPES,
    Instrument,
    Pattern,
    Refinement,
    Strategy,
    default_strategy,
    load_phase,
    read_pattern,
    simulate_pattern,
)
from xbeam_bluesky.rietveld._parameters import Param
from xbeam_bluesky.rietveld._solver import Singular, _check_rank


def test_strategy_json_round_trip_and_validation(tmp_path):
    s = default_strategy()
    f = tmp_path / "s.json"
    f.write_text(json.dumps(s.to_dict()))
    assert Strategy.from_json(f) == s
    with pytest.raises(ValueError, match="unknown parameter group 'cel'"):
        Strategy.from_dict({"stages": [{"refine": ["cel"]}]})
    with pytest.raises(ValueError, match="unknown keys"):
        Strategy.from_dict([{"refine": ["scale"], "colour": "red"}])
    with pytest.raises(ValueError, match="background type"):
        Strategy.from_dict([{"refine": ["background"], "background": {"type": "spline", "terms": 3}}])
    with pytest.raises(ValueError, match="range"):
        Strategy.from_dict([{"refine": ["scale"], "range": [50, 20]}])
    with pytest.raises(ValueError, match="at least one stage"):
        Strategy.from_dict({"stages": []})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Strategy.from_json(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def synthetic(data_dir):
    """A noiseless PbSO4 pattern simulated with known parameters (Kα doublet, lab profile)."""
    phase = load_phase(data_dir / "pbso4" / "PbSO4-Wyckoff.cif")
    x = np.arange(15.0, 90.0, 0.02)
    inst = Instrument.lab_cu_ka().with_changes(x=3.0, y=5.0)
    y = simulate_pattern([phase], x, instrument=inst, scales=[2e-3], background=50.0 + 0.2 * x)
    return phase, x, inst, y


@pytest.mark.parametrize("kind", BACKGROUND_TYPES)
def test_every_background_type_refines_a_simulated_pattern(synthetic, kind):
    phase, x, inst, y = synthetic
    pattern = Pattern(x, y, np.sqrt(y), "simulated")
    strategy = Strategy.from_dict(
        [{"refine": ["background", "scale"], "background": {"type": kind, "terms": 4}}]
    )
    res = Refinement(pattern, [phase], inst).run(strategy)
    assert res.ok
    assert res.rwp < 1.0  # a linear background is representable by every type to < 1 %
    assert res.phases[0]["scale"] == pytest.approx(2e-3, rel=2e-2)


def test_staged_refinement_recovers_perturbed_parameters(synthetic):
    phase, x, inst, y = synthetic
    pattern = Pattern(x, y, np.sqrt(y), "simulated")
    start = inst.with_changes(x=1.0, y=2.0, zero=0.0)
    ref = Refinement(pattern, [phase], start)
    strategy = Strategy.from_dict(
        [
            {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 3}},
            {"refine": ["cell", "zero"]},
            {"refine": ["X", "Y"]},
        ]
    )
    res = ref.run(strategy)
    assert res.ok and res.rwp < 0.1
    assert res.phases[0]["r_bragg"] < 0.1  # noiseless data, exact model: partitioned intensities agree
    assert res.instrument["X"] == pytest.approx(3.0, abs=0.02) and res.instrument["Y"] == pytest.approx(
        5.0, abs=0.05
    )
    assert res.instrument["zero"] == pytest.approx(0.0, abs=1e-4)
    assert res.phases[0]["lattice"]["a"] == pytest.approx(8.48, abs=1e-5)
    assert [s.refined for s in res.stages][-1] == [
        "X",
        "Y",
        "background",
        "cell",
        "scale",
        "zero",
    ]  # accumulated


def test_fix_removes_groups_and_singular_parameters_are_reported(tmp_path, synthetic):
    _, x, inst, y = synthetic
    cif = tmp_path / "ghost.cif"
    src = (
        "data_ghost\n_cell_length_a 8.48\n_cell_length_b 5.398\n_cell_length_c 6.958\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        "_symmetry_space_group_name_H-M 'P n m a'\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
        "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\n_atom_site_U_iso_or_equiv\n"
        "Pb Pb 0.1882 0.25 0.167 1.0 0.01\nS S 0.063 0.25 0.686 1.0 0.01\nXe Xe 0.3 0.1 0.2 0.0 0.01\n"
    )
    cif.write_text(src)
    phase = load_phase(cif)
    pattern = Pattern(x, y, np.sqrt(y), "simulated")
    res = Refinement(pattern, [phase], inst).run(
        Strategy.from_dict([{"refine": ["background", "scale"]}, {"refine": ["atoms_uiso"]}])
    )
    assert res.status == "singular" and not res.ok
    assert "ghost:Xe:Uiso" in res.message  # the zero-occupancy atom has no effect on the pattern
    res = Refinement(pattern, [phase], inst).run(
        Strategy.from_dict(
            [{"refine": ["background", "scale", "atoms_uiso"]}, {"fix": ["atoms_uiso"], "refine": ["cell"]}]
        )
    )
    assert res.status == "singular"  # the first stage already fails; the run stops there
    assert len(res.stages) == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("data_x\n_cell_length_a 5\nloop_\n_atom_site_label\n 'unterminated\n", "cannot be parsed|no block"),
        ("data_x\n_cell_length_a 5.0\n_cell_length_b 5.0\n_cell_length_c 5.0\n", "no block with atom sites"),
        (
            "data_x\n_cell_length_a 5\n_cell_length_b 5\n_cell_length_c 5\n_cell_angle_alpha 90\n_cell_angle_beta 90\n"
            "_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
            "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nQ1 Qq 0 0 0\n",
            "unknown element",
        ),
        (
            "data_x\n_cell_length_a 5\n_cell_length_b 5\n_cell_length_c 5\n_cell_angle_alpha 90\n_cell_angle_beta 90\n"
            "_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
            "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nC1 C 0 0 0\n",
            "space group",
        ),
    ],
)
def test_bad_cifs(tmp_path, text, match):
    f = tmp_path / "bad.cif"
    f.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_phase(f)
    assert "bad.cif" in str(info.value)


def test_phase_without_reflections_in_range(data_dir):
    pattern = read_pattern(data_dir / "lab6" / "LaB6_Jan2018.raw")
    lab6 = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    ref = Refinement(pattern, [lab6], Instrument.lab_cu_ka(), fit_range=(10.0, 20.0))  # LaB6 100 is at 21.3°
    with pytest.raises(ValueError, match="no reflections in the 2θ range"):
        ref.run()


def test_simulate_pattern_contract(data_dir):
    cif = data_dir / "lab6" / "LaB6_start.cif"
    x = np.arange(10.0, 60.0, 0.01)
    y1 = simulate_pattern([cif], x, scales=[1e-3])
    y2 = simulate_pattern([cif], x, scales=[2e-3], background=7.0)
    np.testing.assert_allclose(y2, 2 * y1 + 7.0, rtol=1e-12)
    # strongest line 110 sits at the Bragg angle for Kα1 (a = 4.15689 Å) plus FCJ/Kα2 pull < 0.02°
    two_theta_110 = 2 * np.degrees(np.arcsin(1.5405 / (2 * 4.15689 / np.sqrt(2))))
    assert x[np.argmax(y1)] == pytest.approx(two_theta_110, abs=0.02)
    mono = simulate_pattern([cif], x, instrument=Instrument.monochromatic(0.7), scales=[1e-3])
    t110 = 2 * np.degrees(np.arcsin(0.7 / (2 * 4.15689 / np.sqrt(2))))  # 13.68° at 0.7 Å (no Kα2)
    window = (x > t110 - 0.3) & (x < t110 + 0.3)
    assert x[window][np.argmax(mono[window])] == pytest.approx(t110, abs=0.011)
    with pytest.raises(ValueError, match="strictly increasing"):
        simulate_pattern([cif], x[::-1])
    with pytest.raises(ValueError, match="scales"):
        simulate_pattern([cif], x, scales=[1.0, 2.0])


def test_divergence_is_reported_not_silent(synthetic):
    phase, x, inst, y = synthetic
    from xbeam_bluesky.rietveld.model import initial_state

    start = initial_state([phase], inst)
    start.phases[0].a_free = start.phases[0].a_free / 1.25**2  # cell 25 % larger than the CIF's
    res = Refinement(Pattern(x, y, np.sqrt(y), "simulated"), [phase], inst).run(
        Strategy.from_dict([{"refine": ["background", "scale"]}, {"refine": ["cell"]}]), state=start
    )
    assert res.status == "diverged" and not res.ok
    assert "cell volume changed" in res.message and len(res.stages) == 1


def test_degenerate_background_terms_are_a_note_not_a_failure(synthetic):
    phase, x, inst, y = synthetic
    res = Refinement(Pattern(x, y, np.sqrt(y), "simulated"), [phase], inst).run(
        Strategy.from_dict(
            [
                {"refine": ["background", "scale"], "background": {"type": "q2_power", "terms": 15}},
                {"refine": ["cell"]},
            ]
        )
    )
    assert res.ok
    assert any("nearly degenerate" in w for w in res.warnings)


def test_steps_never_make_peak_widths_negative(synthetic):
    phase, x, inst, y = synthetic
    start = inst.with_changes(u=0.0, v=0.0, w=0.05, x=0.0, y=0.0)  # nearly zero widths: LM pushes towards < 0
    res = Refinement(Pattern(x, y, np.sqrt(y), "simulated"), [phase], start).run(
        Strategy.from_dict([{"refine": ["background", "scale"]}, {"refine": ["U", "V", "W", "X", "Y"]}])
    )
    calc, _ = Refinement(Pattern(x, y, np.sqrt(y), "s"), [phase], start).calculator((x[0], x[-1]))
    sig2, _, gam, _ = calc.width_minima(res.state, x[0], x[-1])
    assert sig2 >= 0 and gam >= 0
    assert res.instrument["X"] == pytest.approx(3.0, abs=0.05)  # the simulated Lorentzian terms come back


def test_a_singular_direction_names_every_parameter_in_it():
    """A null direction shared by four parameters names all four (fixing any one of them removes it)."""
    v = np.array([1.0, 1.0, 1.0, 1.0, 0.0]) / 2.0
    normal = np.eye(5) - np.outer(v, v)  # exactly one null direction, v
    params = [Param(name, "cell", 0) for name in ("A0", "A1", "A2", "zero", "scale")]
    with pytest.raises(Singular) as err:
        _check_rank(normal, params, set())
    assert sorted(err.value.names) == ["A0", "A1", "A2", "zero"]


def test_a_stage_stopped_at_its_cycle_limit_still_reports_a_singular_direction(tmp_path, synthetic):
    """Two Pb atoms (Pb, Pb2+) on one site refined as separate atoms (``shared_sites: false``): their Uiso
    columns are equal, a null direction (1, -1) of the normal matrix. A stage stopped at max_cycles while still
    improving must report it, not print esds from it."""
    _, x, inst, y = synthetic
    cif = tmp_path / "twin.cif"
    cif.write_text(
        "data_twin\n_cell_length_a 8.48\n_cell_length_b 5.398\n_cell_length_c 6.958\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        "_symmetry_space_group_name_H-M 'P n m a'\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
        "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n_atom_site_occupancy\n_atom_site_U_iso_or_equiv\n"
        "Pb1 Pb 0.1882 0.25 0.167 0.5 0.05\nPb2 Pb2+ 0.1882 0.25 0.167 0.5 0.05\nS S 0.063 0.25 0.686 1.0 0.01\n"
    )
    phase = load_phase(cif)
    pattern = Pattern(x, y, np.sqrt(y), "simulated")
    res = Refinement(pattern, [phase], inst).run(
        Strategy.from_dict(
            {
                "shared_sites": False,
                "stages": [{"refine": ["background", "scale"]}, {"refine": ["atoms_uiso"], "max_cycles": 1}],
            }
        )
    )
    assert res.status == "singular" and not res.ok
    assert "twin:Pb1:Uiso" in res.message and "twin:Pb2:Uiso" in res.message
