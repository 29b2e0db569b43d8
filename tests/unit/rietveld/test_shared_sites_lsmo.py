"""Shared site on a fully special position: La and Sr on the A site 6a of rhombohedral La0.7Sr0.3MnO3 (R -3 c).

The truth CIF (tests/data/xrd/lsmo/LSMO_truth.cif) simulates a Poisson-noised pattern; the refinements start
from LSMO_start.cif (A-site occupancies 0.6/0.4 instead of 0.7/0.3, A-site Uiso, O x and the cell perturbed).
Unlike La/Ca in Pnma (test_shared_sites.py) the shared site has no free coordinate, La and Sr differ by 19
electrons, and the occupancies are refined on request (``occupancy=``, CLI ``--occupancy``) with their sum kept.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from xbeam_bluesky.cli import main
from xbeam_bluesky.rietveld import (
    Instrument,
    OccupancySpec,
    Pattern,
    Refinement,
    SearchSettings,
    load_phase,
    problem_space,
    run_search,
    simulate_pattern,
)
from xbeam_bluesky.rietveld.default_sequence import refine_default
from xbeam_bluesky.rietveld.validity import check_validity

A_SITE = (OccupancySpec(("La1", "Sr1")),)


@pytest.fixture(scope="module")
def lsmo(data_dir):
    truth = load_phase(data_dir / "lsmo" / "LSMO_truth.cif")
    start = load_phase(data_dir / "lsmo" / "LSMO_start.cif")
    x = np.arange(15.0, 130.0, 0.02)
    inst = Instrument.lab_cu_ka()
    expected = simulate_pattern(
        [truth],
        x,
        instrument=dataclasses.replace(inst, x=1.5, y=3.0),
        scales=[3e-3],
        background=150 + 0.4 * x,
    )
    counts = np.random.default_rng(7).poisson(expected).astype(float)
    return truth, start, Pattern(x, counts, np.sqrt(np.maximum(counts, 1.0)), "simulated"), inst


def _check_truth(res, truth, start, n_esd=3.0):
    """Occupancies (sum kept), O x, Uiso and the cell within ``n_esd`` esds of the truth; a valid model."""
    phase = res.phases[0]
    la, sr, mn, o = phase["atoms"]
    assert la["xyz"] == sr["xyz"] == [0.0, 0.0, 0.25] and la["uiso"] == sr["uiso"]
    assert la["occupancy"] + sr["occupancy"] == pytest.approx(1.0, abs=1e-12)
    assert 0 < la["occupancy_esd"] == pytest.approx(sr["occupancy_esd"])
    assert abs(la["occupancy"] - truth.occupancy[0]) <= n_esd * la["occupancy_esd"]
    assert mn["occupancy"] == o["occupancy"] == 1.0 and mn["occupancy_esd"] == o["occupancy_esd"] == 0.0
    assert 0 < o["xyz_esd"][0] and abs(o["xyz"][0] - truth.xyz[3, 0]) <= n_esd * o["xyz_esd"][0]
    for j, atom in enumerate((la, mn, o)):
        k = (0, 2, 3)[j]
        assert abs(atom["uiso"] - truth.uiso[k]) <= n_esd * atom["uiso_esd"], atom["label"]
    for name, value in zip("ac", truth.cell[[0, 2]], strict=True):
        assert abs(phase["lattice"][name] - value) <= n_esd * phase["lattice_esd"][name], name
    assert check_validity(res.to_dict(), [start]) == []


def test_the_a_site_is_one_shared_site_without_free_coordinates(lsmo):
    truth, start, _, _ = lsmo
    assert truth.shared_sites == start.shared_sites == [[0, 1], [2], [3]]
    assert [b.shape[1] for b in start.xyz_basis] == [0, 0, 0, 1]  # only O x (18e: x, 0, 1/4) is free


def test_default_with_the_occupancy_request_recovers_the_truth(lsmo):
    truth, start, pattern, inst = lsmo
    res, strategy = refine_default(Refinement(pattern, [start], inst), occupancy=A_SITE)
    assert res.ok and res.rwp < 1.02 * res.rexp  # at the noise level
    _check_truth(res, truth, start)
    assert [p for p in res.parameter_names if p.endswith(":occ")] == ["LSMO:La1:occ"]
    # the occupancy request is part of the kept strategy: replaying it gives the same fit
    replay = Refinement(pattern, [start], inst).run(strategy)
    assert replay.rwp == pytest.approx(res.rwp, rel=1e-6)


def test_without_the_request_the_cif_occupancies_stay_and_the_fit_is_worse(lsmo):
    _, start, pattern, inst = lsmo
    res = Refinement(pattern, [start], inst).run()
    la, sr = res.phases[0]["atoms"][:2]
    assert (la["occupancy"], sr["occupancy"]) == (0.6, 0.4)
    assert res.rwp > 1.05 * res.rexp


def test_auto_search_recovers_the_truth_and_no_trial_breaks_the_shared_site(lsmo):
    truth, start, pattern, inst = lsmo
    refinement = Refinement(pattern, [start], inst)
    space = problem_space(refinement, occupancy=A_SITE)
    assert space.occupancy == A_SITE
    assert space.exclusive_shifts == (("zero", "displacement"),)  # lab cos θ and zero alike over 15–130°
    settings = SearchSettings(n_trials=8, n_jobs=1, seed=0, n_startup_trials=8)
    search = run_search(refinement, space=space, settings=settings)
    assert search.start_problems == []
    assert search.best is not None and search.n_failed < search.n_trials
    reasons = [r for t in search.trials for r in t.reasons]
    assert not any("nearest neighbour" in r or "shared site" in r or "occupanc" in r for r in reasons)
    assert any("occupancy" in st.refine and st.occupancy == A_SITE for st in search.best_strategy.stages)
    _check_truth(search.best_result, truth, start)
    assert not search.report["local_minimum_suspected"]


def test_cli_occupancy_option(lsmo, data_dir, tmp_path, capsys):
    truth, _, pattern, _ = lsmo
    xye = tmp_path / "lsmo.xye"
    np.savetxt(xye, np.column_stack([pattern.two_theta, pattern.counts, pattern.sigma]), fmt="%.4f")
    cif = str(data_dir / "lsmo" / "LSMO_start.cif")
    out = tmp_path / "r.json"
    args = ["refine", str(xye), "--cif", cif, "--out", str(out)]
    assert main([*args, "--occupancy", "LSMO:La1,Sr1"]) == 0
    atoms = json.loads(out.read_text())["phases"][0]["atoms"]
    assert abs(atoms[0]["occupancy"] - truth.occupancy[0]) <= 3 * atoms[0]["occupancy_esd"]
    assert main([*args, "--occupancy", "La1,Ba1"]) == 2
    assert "no site 'Ba1'" in capsys.readouterr().err
    strategy = tmp_path / "s.json"
    strategy.write_text('{"stages": [{"refine": ["background", "scale"]}]}')
    assert main([*args, "--occupancy", "La1,Sr1", "--strategy", str(strategy)]) == 2
    assert "--occupancy applies to the default sequence and --auto" in capsys.readouterr().err
