"""Shared sites (solid solutions): La and Ca on the A site of La0.7Ca0.3MnO3 (Pnma), simulated pattern of known truth.

The truth CIF (tests/data/xrd/lcmo/LCMO_truth.cif) simulates the pattern; the refinement starts from
LCMO_start.cif (A-site position and Uiso, O positions and cell perturbed). The simulation uses a Lorentzian
profile (X 2, Y 4) the refinement starts without, so the profile is refined too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xbeam_bluesky.rietveld import (
    Instrument,
    Pattern,
    Refinement,
    SearchSettings,
    SearchSpace,
    Strategy,
    load_phase,
    run_search,
    simulate_pattern,
)
from xbeam_bluesky.rietveld.strategy import default_strategy
from xbeam_bluesky.rietveld.validity import (
    check_start_model,
    check_validity,
    nearest_neighbour_distances,
)


@pytest.fixture(scope="module")
def lcmo(data_dir):
    truth = load_phase(data_dir / "lcmo" / "LCMO_truth.cif")
    start = load_phase(data_dir / "lcmo" / "LCMO_start.cif")
    x = np.arange(20.0, 120.0, 0.02)
    inst = Instrument.lab_cu_ka()
    expected = simulate_pattern(
        [truth],
        x,
        instrument=dataclasses.replace(inst, x=2.0, y=4.0),
        scales=[2e-3],
        background=200 + 0.5 * x,
    )
    counts = np.random.default_rng(1).poisson(expected).astype(float)
    return truth, start, Pattern(x, counts, np.sqrt(np.maximum(counts, 1.0)), "simulated"), inst


def _within(value, esd, truth, n=3.0):
    return abs(value - truth) <= n * esd


def test_atoms_at_one_position_form_one_shared_site(lcmo):
    truth, start, _, _ = lcmo
    assert truth.shared_sites == [[0, 1], [2], [3], [4]]
    nn = nearest_neighbour_distances(truth, truth.cell, truth.xyz)
    # La1's nearest neighbour is an O (A–O ≈ 2.4 Å in the perovskite), not Ca1 on its own site
    assert nn[0] == pytest.approx(nn[1]) and 2.2 < nn[0] < 2.7
    assert check_start_model([start]) == {}


def test_default_sequence_refines_the_solid_solution_to_the_truth(lcmo):
    truth, start, pattern, inst = lcmo
    res = Refinement(pattern, [start], inst).run()
    assert res.ok
    assert res.rwp < 1.02 * res.rexp  # at the noise level
    la, ca = res.phases[0]["atoms"][:2]
    assert la["xyz"] == ca["xyz"] and la["uiso"] == ca["uiso"]  # tied, not merely close
    assert la["occupancy"] == 0.7 and ca["occupancy"] == 0.3  # occupancies not refined here
    for axis in (0, 2):  # x and z are free on 4c (x, 1/4, z)
        assert _within(la["xyz"][axis], la["xyz_esd"][axis], truth.xyz[0, axis])
    assert la["xyz_esd"][0] > 0 and _within(la["uiso"], la["uiso_esd"], truth.uiso[0])
    for name, value in zip("abc", truth.cell[:3], strict=False):
        assert _within(res.phases[0]["lattice"][name], res.phases[0]["lattice_esd"][name], value)
    assert check_validity(res.to_dict(), [start]) == []


def test_shared_site_occupancies_refine_with_their_sum_kept(lcmo):
    _, start, pattern, inst = lcmo
    occ = start.occupancy.copy()
    occ[:2] = [0.6, 0.4]  # truth 0.7 / 0.3
    wrong = dataclasses.replace(start, occupancy=occ)
    stages = default_strategy().to_dict()["stages"]
    stages.append(
        {"name": "A-site occupancy", "refine": ["occupancy"], "occupancy": {"sites": ["La1", "Ca1"]}}
    )
    res = Refinement(pattern, [wrong], inst).run(Strategy.from_dict(stages))
    assert res.ok
    la, ca = res.phases[0]["atoms"][:2]
    assert la["occupancy"] + ca["occupancy"] == pytest.approx(1.0, abs=1e-12)
    assert la["occupancy_esd"] > 0 and la["occupancy_esd"] == pytest.approx(ca["occupancy_esd"])
    assert _within(la["occupancy"], la["occupancy_esd"], 0.7)
    assert [p for p in res.parameter_names if p.endswith(":occ")] == ["LCMO:La1:occ"]


def test_without_the_ties_the_shared_atoms_drift_apart_and_validity_says_so(lcmo):
    """What ``--auto`` hit before: refined as separate atoms, Ca1 leaves La1's position (and its Uiso goes
    negative); the validity check names the split site instead of a misleading nearest-neighbour clash."""
    _, start, pattern, inst = lcmo
    doc = default_strategy().to_dict()
    doc["shared_sites"] = False
    res = Refinement(pattern, [start], inst).run(Strategy.from_dict(doc))
    la, ca = res.phases[0]["atoms"][:2]
    assert la["xyz"] != ca["xyz"]
    reasons = check_validity(res.to_dict(), [start])
    assert any("La1/Ca1: atoms of one shared site" in r for r in reasons)


def test_declared_shared_sites_snap_atoms_together(lcmo, tmp_path, data_dir):
    """Atoms 0.05 Å apart are not on one position by coordinates; declared in the strategy they are one site."""
    _, _, pattern, inst = lcmo
    text = (data_dir / "lcmo" / "LCMO_start.cif").read_text()
    cif = tmp_path / "split.cif"
    cif.write_text(text.replace("Ca1 Ca 0.0260 0.25 -0.0080", "Ca1 Ca 0.0350 0.25 -0.0080"))
    split = load_phase(cif)
    assert split.shared_sites[0] == [0]  # 0.049 Å apart: two sites by position
    doc = default_strategy().to_dict()
    doc["shared_sites"] = [["La1", "Ca1"]]
    res = Refinement(pattern, [split], inst).run(Strategy.from_dict(doc))
    la, ca = res.phases[0]["atoms"][:2]
    assert res.ok and la["xyz"] == ca["xyz"]
    with pytest.raises(ValueError, match="no site 'Sr1'"):
        Refinement(pattern, [split], inst).run(Strategy.from_dict({**doc, "shared_sites": [["La1", "Sr1"]]}))


def test_auto_search_refines_the_solid_solution(lcmo):
    """The issue: on a shared-site CIF every trial of ``--auto`` was invalid. Now trials are valid and the best
    one keeps the shared atoms together and recovers the A-site position."""
    truth, start, pattern, inst = lcmo
    refinement = Refinement(pattern, [start], inst)
    settings = SearchSettings(n_trials=6, n_jobs=1, seed=3, n_startup_trials=6)
    search = run_search(refinement, space=SearchSpace(*refinement.fit_range), settings=settings)
    assert search.start_problems == []
    assert search.best is not None and search.n_failed < search.n_trials
    assert not any("nearest neighbour" in r for t in search.trials for r in t.reasons)
    la, ca = search.best_result.phases[0]["atoms"][:2]
    assert la["xyz"] == ca["xyz"]
    assert abs(la["xyz"][0] - truth.xyz[0, 0]) < 5 * la["xyz_esd"][0]


def test_a_rule_the_cif_already_breaks_is_reported_once_and_not_held_against_trials(tmp_path, data_dir):
    text = (data_dir / "lcmo" / "LCMO_truth.cif").read_text()
    cif = tmp_path / "close.cif"
    # an extra H 0.5 Å from O1 (a hydride/hydroxyl model gone wrong, or a disordered fragment)
    cif.write_text(text + "H1 H 0.4920 0.25 0.1560 0.1 0.02\n")
    phase = load_phase(cif)
    problems = check_start_model([phase])
    assert list(problems) == ["LCMO:O1:min_distance", "LCMO:H1:min_distance"]
    d = (0.1560 - 0.0650) * 5.4695  # along c only: 0.498 Å
    assert f"{d:.3f} Å < 0.7 Å in the CIF" in problems["LCMO:H1:min_distance"]
    x = np.arange(20.0, 100.0, 0.02)
    y = simulate_pattern([phase], x, scales=[2e-3], background=100.0)
    res = Refinement(Pattern(x, y, np.sqrt(y), "simulated"), [phase]).run(
        Strategy.from_dict([{"refine": ["background", "scale"]}])
    )
    summary = res.to_dict()
    assert any(f"nearest neighbour at {d:.3f}" in r for r in check_validity(summary, [phase]))
    assert check_validity(summary, [phase], exempt=problems) == []
