"""Bad structure and instrument inputs: each a clear error naming the file or atom and what was expected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xbeam_bluesky.rietveld import Instrument, Pattern, Refinement, load_phase, simulate_pattern

_HEAD = (
    "data_x\n_cell_length_a {a}\n_cell_length_b {b}\n_cell_length_c {c}\n_cell_angle_alpha 90\n"
    "_cell_angle_beta 90\n_cell_angle_gamma {gamma}\n_symmetry_space_group_name_H-M '{sg}'\nloop_\n"
    "_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
    "_atom_site_occupancy\n_atom_site_U_iso_or_equiv\n"
)


def _cif(tmp_path, atoms: str, a=4.0, b=4.0, c=4.0, gamma=90, sg="P m -3 m"):
    path = tmp_path / "bad.cif"
    path.write_text(_HEAD.format(a=a, b=b, c=c, gamma=gamma, sg=sg) + atoms)
    return path


def _error(path) -> str:
    with pytest.raises(ValueError) as info:
        load_phase(path)
    msg = str(info.value)
    assert "bad.cif" in msg  # every message names the file
    return msg


def test_a_cell_that_contradicts_its_space_group_is_refused_not_symmetrised(tmp_path):
    msg = _error(_cif(tmp_path, "La1 La 0 0 0 1 0.005\n", b=4.1))
    assert "contradicts space group P m -3 m" in msg and "a = b = c" in msg and "b 4.1" in msg
    msg = _error(_cif(tmp_path, "C1 C 0 0 0 1 0.005\n", a=3.0, b=3.0, c=5.0, gamma=90, sg="P 63/m"))
    assert "hexagonal" in msg and "γ = 120°" in msg


def test_a_question_mark_coordinate_names_the_atom(tmp_path):
    msg = _error(_cif(tmp_path, "La1 La 0 0 0 1 0.005\nB1 B ? 0.5 0.5 1 0.005\n"))
    assert "site 'B1'" in msg and "_atom_site_fract_x" in msg and "'?'" in msg


def test_occupancy_above_one_on_a_site_and_on_a_shared_site(tmp_path):
    msg = _error(_cif(tmp_path, "La1 La 0 0 0 1.2 0.005\n"))
    assert "site 'La1' has occupancy 1.2" in msg and "[0, 1]" in msg
    msg = _error(_cif(tmp_path, "La1 La 0 0 0 0.8 0.005\nSr1 Sr 0 0 0 0.4 0.005\n"))
    assert "'La1', 'Sr1' share one position" in msg and "summing to 1.2" in msg
    # rounding in a CIF is tolerated: 0.333 + 0.667 = 1.000, 0.7 + 0.3004 within 0.005
    assert load_phase(_cif(tmp_path, "La1 La 0 0 0 0.7 0.005\nSr1 Sr 0 0 0 0.3004 0.005\n")).n_sites == 2


def test_a_duplicated_atom_or_label(tmp_path):
    msg = _error(_cif(tmp_path, "La1 La 0 0 0 0.5 0.005\nLa2 La 0 0 0 0.5 0.005\n"))
    assert "duplicated atom" in msg and "'La1', 'La2'" in msg
    msg = _error(_cif(tmp_path, "La1 La 0 0 0 1 0.005\nLa1 B 0.5 0.5 0.5 1 0.005\n"))
    assert "'La1' used more than once" in msg


def test_a_negative_uiso_names_the_atom_and_is_kept(tmp_path):
    """Published CIFs carry small negative Uiso: warned once, naming the atom, and loaded as given."""
    with pytest.warns(UserWarning, match=r"site 'B1' has Uiso -0.01 Å², unphysical"):
        phase = load_phase(_cif(tmp_path, "La1 La 0 0 0 1 0.005\nB1 B 0.5 0.5 0.5 1 -0.01\n"))
    assert phase.uiso[list(phase.labels).index("B1")] == pytest.approx(-0.01)


@pytest.mark.parametrize(("field", "value"), [("wavelength1", float("nan")), ("wavelength1", -1.54)])
def test_a_nan_or_negative_wavelength_is_a_bad_input_not_singular(data_dir, field, value):
    phase = load_phase(data_dir / "lab6" / "LaB6_start.cif")
    x = np.arange(20.0, 80.0, 0.02)
    y = simulate_pattern([phase], x, background=50.0)
    inst = dataclasses.replace(Instrument.lab_cu_ka(), **{field: value})
    with pytest.raises(ValueError, match=r"wavelength1 .* expected a positive wavelength"):
        Refinement(Pattern(x, y, np.sqrt(y), "simulated"), [phase], inst)
    bad2 = dataclasses.replace(Instrument.lab_cu_ka(), wavelength2=float("nan"))
    with pytest.raises(ValueError, match="wavelength2 nan"):
        Refinement(Pattern(x, y, np.sqrt(y), "simulated"), [phase], bad2)
