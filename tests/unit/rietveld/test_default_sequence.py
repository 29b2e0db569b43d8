"""The default refinement's decisions: background terms grown by Hamilton's test, preferred orientation tried
when the residual asks for it, each kept only if it converges, stays physical and is significant.

Simulated PbSO4 patterns whose truth is known (March–Dollase ratio, background shape) and the real data.
"""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.rietveld import Instrument, Pattern, Refinement
from xbeam_bluesky.rietveld.default_sequence import refine_default
from xbeam_bluesky.rietveld.model import PatternCalculator, initial_state


def _simulate(phase, x, inst, background, po_ratio=1.0, po_axis=(0, 0, 1), seed=0):
    st = initial_state([phase], inst)
    st.phases[0].scale = 2e-3
    st.phases[0].po_ratio = po_ratio
    st.phases[0].po_axis = po_axis
    calc = PatternCalculator(x, [phase], inst)
    calc.update_reflections(st)
    y = calc.evaluate(st).y + background
    counts = np.random.default_rng(seed).poisson(y).astype(float)
    return Pattern(x, counts, np.sqrt(np.maximum(counts, 1.0)), "simulated")


@pytest.fixture(scope="module")
def setup(pbso4_phase):
    x = np.arange(15.0, 120.0, 0.02)
    return pbso4_phase, x, Instrument.lab_cu_ka().with_changes(x=2.0, y=3.0)


def _esd(res, name):
    i = res.parameter_names.index(name)
    return float(np.sqrt(res.covariance[i, i]))


def test_preferred_orientation_is_added_when_the_residual_asks_and_recovers_the_truth(setup):
    phase, x, inst = setup
    pattern = _simulate(phase, x, inst, 200.0, po_ratio=0.85)
    res, strategy = refine_default(Refinement(pattern, [phase], inst))
    assert res.ok and res.stages[-1].name == "preferred orientation 001"
    assert strategy.stages[-1].po_axis == (0, 0, 1)
    ratio = res.phases[0]["preferred_orientation"]["ratio"]
    assert abs(ratio - 0.85) <= 3 * _esd(res, "PbSO4:MD_ratio")
    assert res.rwp < 1.02 * res.rexp


def test_no_preferred_orientation_or_extra_background_without_evidence(setup):
    phase, x, inst = setup
    pattern = _simulate(phase, x, inst, 200.0, seed=1)  # random powder, flat background
    res, strategy = refine_default(Refinement(pattern, [phase], inst))
    assert res.ok
    assert [s.name for s in res.stages] == [s.name for s in strategy.stages]
    assert not any("preferred" in s.name or "terms" in s.name for s in res.stages)
    assert len(res.background["coefficients"]) == 6
    assert res.phases[0]["preferred_orientation"]["ratio"] == 1.0


def test_background_terms_grow_while_they_are_significant(setup):
    phase, x, inst = setup
    wavy = 300.0 + 400.0 * np.exp(-(x - 15.0) / 12.0) + 40.0 * np.sin(x / 6.0)  # needs more than 6 terms
    pattern = _simulate(phase, x, inst, wavy, seed=2)
    res, strategy = refine_default(Refinement(pattern, [phase], inst))
    assert res.ok
    grown = [s for s in strategy.stages[1:] if s.background is not None]
    assert len(grown) == 1 and grown[0].name.startswith("profile U V W, background")
    assert grown[0].background.terms > 6
    assert len(res.background["coefficients"]) == grown[0].background.terms
    assert res.rwp < 1.03 * res.rexp
    # the strategy it returns replays to the same fit
    again = Refinement(pattern, [phase], inst).run(strategy)
    assert again.rwp == pytest.approx(res.rwp, abs=0.05)


def test_run_without_a_strategy_is_the_default_refinement(setup):
    phase, x, inst = setup
    pattern = _simulate(phase, x, inst, 200.0, po_ratio=0.85, seed=3)
    ref = Refinement(pattern, [phase], inst)
    assert ref.run().rwp == pytest.approx(refine_default(ref)[0].rwp, rel=1e-12)


def test_the_result_times_the_whole_default_refinement(setup, monkeypatch):
    """``wall_s`` of the default refinement covers every run it made (it was the last stage's only)."""
    phase, x, inst = setup
    ref = Refinement(_simulate(phase, x, inst, 100.0 + 0.5 * x), [phase], inst)
    walls = []
    run = Refinement._run

    def timed(self, strategy, state):
        res = run(self, strategy, state)
        walls.append(res.wall_s)
        return res

    monkeypatch.setattr(Refinement, "_run", timed)
    res, _ = refine_default(ref)
    assert len(walls) >= 2 and res.wall_s >= sum(walls)
