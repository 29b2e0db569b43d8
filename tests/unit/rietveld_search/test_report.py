"""The top-trial report: parameter spreads and the suspected-local-minimum flag, on hand-made structures."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from xbeam_bluesky.rietveld.search import parameter_values, structure_shifts, summarize_top

A, B, C = 8.48, 5.40, 6.96


def _summary(o1_x: float = -0.094, a: float = A, a_esd: float = 1e-4) -> dict:
    def atom(label, xyz):
        return {
            "label": label,
            "xyz": list(xyz),
            "xyz_esd": [1e-3] * 3,
            "uiso": 0.01,
            "uiso_esd": 1e-3,
        }

    return {
        "phases": [
            {
                "name": "PbSO4",
                "lattice": {"a": a, "b": B, "c": C, "alpha": 90.0, "beta": 90.0, "gamma": 90.0},
                "lattice_esd": {"a": a_esd, "b": 1e-4, "c": 1e-4, "alpha": 0.0, "beta": 0.0, "gamma": 0.0},
                "scale": 1.0,
                "scale_esd": 0.01,
                "atoms": [atom("Pb", (0.188, 0.25, 0.167)), atom("O1", (o1_x, 0.25, 0.595))],
            }
        ],
        "instrument": {"U": 5.0, "U_esd": 0.5, "zero": 0.0},
    }


def test_shift_of_a_displaced_atom_is_its_cartesian_distance():
    same = [_summary(), _summary(), _summary(o1_x=-0.094 + 0.05)]
    shifts = structure_shifts(same)
    np.testing.assert_allclose(shifts, [0.0, 0.0, 0.05 * A], atol=1e-12)


def test_coordinates_are_compared_modulo_lattice_translations():
    wrapped = [_summary(o1_x=0.99), _summary(o1_x=-0.01), _summary(o1_x=0.0)]
    np.testing.assert_allclose(structure_shifts(wrapped), [0.0, 0.0, 0.01 * A], atol=1e-9)


def test_best_trial_far_from_the_consensus_is_flagged():
    # the paper's case: the lowest Rwp with O1 x off by 5 % of a, the next trials agree with each other
    trials = [
        {"number": 7, "rwp": 8.00, "params": {}, "summary": _summary(o1_x=-0.094 + 0.05)},
        {"number": 3, "rwp": 8.01, "params": {}, "summary": _summary()},
        {"number": 9, "rwp": 8.02, "params": {}, "summary": _summary()},
    ]
    report = summarize_top(trials, shift_tolerance=0.1)
    assert report["local_minimum_suspected"] is True
    assert [t["suspect"] for t in report["top"]] == [True, False, False]
    assert report["top"][0]["max_atom_shift_A"] == pytest.approx(0.05 * A)
    spread = {s["name"]: s for s in report["spreads"]}
    assert spread["PbSO4:O1:x"]["max"] - spread["PbSO4:O1:x"]["min"] == pytest.approx(0.05)
    assert spread["PbSO4:O1:x"]["spread_over_esd"] == pytest.approx(50.0)
    assert "PbSO4:alpha" not in spread  # fixed by symmetry: not reported


def test_agreeing_trials_are_not_flagged_and_spreads_are_measured_in_esds():
    trials = []
    for k, a in enumerate((A, A + 2e-4, A - 2e-4)):
        s = copy.deepcopy(_summary(o1_x=-0.094 + 0.001 * k, a=a))
        trials.append({"number": k, "rwp": 8.0 + k / 100, "params": {"k": k}, "summary": s})
    report = summarize_top(trials)
    assert report["local_minimum_suspected"] is False and not any(t["suspect"] for t in report["top"])
    spread = {s["name"]: s for s in report["spreads"]}
    assert spread["PbSO4:a"]["spread_over_esd"] == pytest.approx(4.0)
    assert spread["PbSO4:a"]["best"] == A and spread["PbSO4:a"]["std"] == pytest.approx(
        np.std([A, A + 2e-4, A - 2e-4])
    )
    assert report["top"][1]["params"] == {"k": 1}


def test_parameter_names_and_empty_report():
    names = parameter_values(_summary())
    assert names["PbSO4:O1:Uiso"] == (0.01, 1e-3) and names["U"] == (5.0, 0.5) and names["zero"] == (0.0, 0.0)
    assert summarize_top([]) == {
        "top": [],
        "spreads": [],
        "reference": [],
        "local_minimum_suspected": False,
        "local_minimum_reasons": [],
    }


def _consistent_trials(a: float) -> list[dict]:
    # the top trials agree with each other (no spread, no atom shift): only a reference can tell
    return [{"number": k, "rwp": 7.5 + k / 100, "params": {}, "summary": _summary(a=a)} for k in range(3)]


def test_consistent_but_shifted_cell_is_flagged_against_the_reference():
    # the benchmark's case: a 0.0055 Å below the default sequence's, esd 1e-4 Å in both fits
    reference = _summary(a=A)
    report = summarize_top(_consistent_trials(A - 0.0055), reference=reference, reference_tolerance=5.0)
    assert not any(t["suspect"] for t in report["top"])  # the spread-based check alone would not fire
    assert report["local_minimum_suspected"] is True
    (reason,) = report["local_minimum_reasons"]
    assert reason.startswith("PbSO4:a of the best trial differs from the default sequence's by -0.0055")
    diffs = {d["name"]: d for d in report["reference"]}
    assert diffs["PbSO4:a"]["over_esd"] == pytest.approx(-0.0055 / np.hypot(1e-4, 1e-4))
    assert diffs["PbSO4:b"]["difference"] == 0.0 and "PbSO4:alpha" not in diffs  # fixed by symmetry


def test_cell_agreeing_with_the_reference_is_not_flagged():
    reference = _summary(a=A)
    report = summarize_top(_consistent_trials(A + 3e-4), reference=reference, reference_tolerance=5.0)
    assert report["local_minimum_suspected"] is False and report["local_minimum_reasons"] == []
    assert report["reference"][0]["over_esd"] == pytest.approx(3e-4 / np.hypot(1e-4, 1e-4))
