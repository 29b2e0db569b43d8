"""The strategy space: points → staged strategies, ranges, JSON round trip, bad points."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from xbeam_bluesky.rietveld import SearchSpace, Strategy, TrialRecord, strategy_document

SPACE = SearchSpace(16.0, 158.4)


def _random_points(n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return [study.ask(SPACE.distributions()).params for _ in range(n)]


def test_first_range_corners_follow_the_paper():
    p = SPACE.default_params()
    assert SPACE.first_range({**p, "range_lo": 0.0, "range_hi": 1.0}) == (16.0, 158.4)
    assert SPACE.first_range({**p, "range_lo": 0.0, "range_hi": 0.0}) == (
        16.0,
        36.0,
    )  # lb = min, ub = lb + 20
    assert SPACE.first_range({**p, "range_lo": 1.0, "range_hi": 0.0}) == (138.4, 158.4)  # lb = max - 20


def test_every_sampled_point_is_a_valid_staged_strategy():
    for params in _random_points(200):
        strategy = SPACE.strategy(params)
        lo, hi = SPACE.first_range(params)
        assert 16.0 <= lo and hi <= 158.4 and hi - lo >= 20.0 - 0.011
        stages = strategy.stages
        assert all(s.range is not None for s in stages)  # replays the same under any --range
        assert stages[0].refine == ("background", "scale") and stages[0].range == (lo, hi)
        assert stages[0].background.type == params["background_type"]
        assert stages[0].background.terms == params["background_terms"]
        assert "cell" in stages[1].refine and ("zero" in stages[1].refine) == params["zero"]
        assert stages[-1].range == (16.0, 158.4) and stages[-1].refine == ()
        refined = {g for s in stages for g in s.refine}
        for term in ("displacement", "transparency", "U", "V", "W", "X", "Y", "SH/L"):
            assert (term in refined) == params[term], term
        assert ("preferred_orientation" in refined) == (params["preferred_orientation"] != "none")
        assert {"atoms_xyz", "atoms_uiso", "scale", "cell"} <= refined
        names = [s.name for s in stages]
        late = [t for t in ("U", "V", "W", "SH/L") if params[t]]
        if params["gaussian_after_atoms"] and late:
            assert names.index("profile " + " ".join(late)) > names.index("atoms")


def test_strategy_document_round_trips_through_the_engine_reader():
    params = _random_points(1, seed=3)[0]
    record = TrialRecord(0, params, 9.0, 9.0, True, [], 1.0)
    doc = strategy_document(SPACE, record)
    assert Strategy.from_dict(doc).to_dict() == SPACE.strategy(params).to_dict()
    assert doc["search"]["params"] == params and doc["search"]["rwp"] == 9.0
    assert SearchSpace.from_dict(json.loads(json.dumps(doc["search"]["space"]))) == SPACE


def test_default_point_is_in_the_space_and_close_to_the_default_sequence():
    p = SPACE.default_params()
    assert SPACE.contains(p)
    stages = SPACE.strategy(p).stages
    assert [s.name for s in stages] == [
        "background+scale", "cell", "displacement", "profile X Y", "atoms", "profile U V W", "full range"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"background_type": "spline"}, "background_type 'spline'"),
        ({"background_terms": 40}, "background_terms 40"),
        ({"range_lo": 1.5}, "range_lo = 1.5"),
        ({"preferred_orientation": "1,1,1"}, "preferred_orientation '1,1,1'"),
    ],
)
def test_points_outside_the_space_are_named(change, message):
    params = {**SPACE.default_params(), **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SPACE.strategy(params)
    assert not SPACE.contains(params)


def test_missing_parameter_and_foreign_points():
    params = SPACE.default_params()
    del params["zero"]
    with pytest.raises(ValueError, match=r"missing \['zero'\]"):
        SPACE.strategy(params)
    assert not SPACE.contains({**SPACE.default_params(), "unknown": 1})


def test_bad_space_definitions():
    with pytest.raises(ValueError, match="0 < min < max < 180"):
        SearchSpace(50.0, 40.0)
    with pytest.raises(ValueError, match="min_width 30"):
        SearchSpace(10.0, 30.0, min_width=30.0)
    with pytest.raises(ValueError, match="background_types"):
        SearchSpace(10.0, 100.0, background_types=("spline",))


def test_distributions_match_the_default_point():
    assert set(SPACE.distributions()) == set(SPACE.default_params())
    no_po = SearchSpace(10.0, 100.0, po_axes=())
    assert "preferred_orientation" not in no_po.distributions()
    assert np.isclose(
        no_po.first_range({**no_po.default_params(), "range_lo": 0.5, "range_hi": 0.5})[0], 45.0
    )


def test_excluded_terms_leave_the_space_and_are_never_refined():
    space = SearchSpace(16.0, 158.4, exclude=("zero", "transparency", "preferred_orientation"))
    assert {"zero", "transparency", "preferred_orientation"}.isdisjoint(space.distributions())
    assert set(space.default_params()) == set(space.distributions())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(50):
        params = study.ask(space.distributions()).params
        refined = {g for s in space.strategy(params).stages for g in s.refine}
        assert {"zero", "transparency", "preferred_orientation"}.isdisjoint(refined)
    with pytest.raises(ValueError, match=r"\['zero'\] switched on but excluded"):
        space.strategy({**space.default_params(), "zero": True})
    with pytest.raises(ValueError, match=r"cannot exclude \['cell'\]"):
        SearchSpace(16.0, 158.4, exclude=("cell",))
    assert SearchSpace.from_dict(space.to_dict()) == space
