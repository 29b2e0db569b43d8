"""Degenerate peak-shift parameters: the correlation check on real PbSO4 fits and on hand-made matrices.

Zero shift and sample displacement (∝ cos θ) both move every peak by almost the same Δ2θ over 16–158°, so a
fit refining both with the cell cannot tell them apart (measured |correlation| ≥ 0.999); the default
sequence (displacement only) stays far below the limit (measured ≤ 0.93).
"""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.rietveld import SearchSettings, SearchSpace
from xbeam_bluesky.rietveld.search._run import _evaluate_with
from xbeam_bluesky.rietveld.validity import ValidityLimits, check_degeneracy


@pytest.fixture(scope="module")
def default_fit(pbso4_refinement):
    return pbso4_refinement.run()


@pytest.fixture(scope="module")
def all_shifts_params(pbso4_refinement):
    space = SearchSpace(*pbso4_refinement.fit_range)
    return space, {**space.default_params(), "zero": True, "displacement": True, "transparency": True}


def test_correlation_matrix_of_a_refinement(default_fit):
    r = default_fit.correlation
    assert r.shape == (len(default_fit.parameter_names),) * 2
    np.testing.assert_allclose(np.diag(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(r, r.T, atol=1e-12)
    # r scaled back by the esds is the covariance; the esds are those reported for the instrument terms
    esd = np.sqrt(np.diag(default_fit.covariance))
    np.testing.assert_allclose(r * np.outer(esd, esd), default_fit.covariance, rtol=1e-10, atol=0)
    i = default_fit.parameter_names.index("displacement")
    assert esd[i] == pytest.approx(default_fit.instrument["displacement_esd"])


def test_default_sequence_is_not_degenerate(default_fit):
    assert check_degeneracy(default_fit.parameter_names, default_fit.correlation) == []


def test_zero_displacement_transparency_and_cell_together_are_rejected(pbso4_refinement, all_shifts_params):
    space, params = all_shifts_params
    result = pbso4_refinement.run(space.strategy(params))
    assert result.ok  # the fit itself finishes, with a lower Rwp than the default sequence...
    (reason,) = check_degeneracy(result.parameter_names, result.correlation)
    assert reason.startswith("degenerate parameters:") and "zero/displacement" in reason


def test_search_trial_with_all_shift_terms_is_penalised(pbso4_refinement, all_shifts_params):
    space, params = all_shifts_params
    ref = pbso4_refinement
    settings = SearchSettings(penalty_rwp=100.0)
    record, result = _evaluate_with(
        ref.pattern, ref.phases, ref.instrument, ref.fit_range, space, settings, {}, 0, params, False
    )
    assert not record.valid and record.objective == 100.0 and result is None
    assert record.rwp is not None and record.rwp < 10.0  # a good Rwp, judged invalid all the same
    assert any(r.startswith("degenerate parameters") for r in record.reasons)


def test_background_pairs_are_exempt_and_the_worst_pairs_are_named():
    names = ["background[0]", "background[1]", "zero", "displacement", "PbSO4:A0"]
    r = np.eye(5)
    r[0, 1] = r[1, 0] = 0.9999  # collinear background terms: tolerated
    assert check_degeneracy(names, r) == []
    r[2, 3] = r[3, 2] = -0.9995
    r[2, 4] = r[4, 2] = 0.995
    (reason,) = check_degeneracy(names, r)
    assert "2 pair(s) with |correlation| > 0.99" in reason
    assert reason.index("zero/displacement 0.9995") < reason.index("zero/PbSO4:A0 0.9950")
    assert check_degeneracy(names, r, ValidityLimits(max_correlation=0.9999)) == []
    assert check_degeneracy(names, None) == []
    r[4, :] = r[:, 4] = np.nan  # PbSO4:A0 without a positive variance: numerically singular
    assert "zero/PbSO4:A0 1.0000" in check_degeneracy(names, r, ValidityLimits(max_correlation=0.9999))[0]


def test_mismatched_correlation_matrix_is_a_clear_error():
    with pytest.raises(ValueError, match="shape \\(2, 2\\) for 3 parameter names"):
        check_degeneracy(["a", "b", "c"], np.eye(2))
