"""The strategy search on real data: penalties, warm start, reproducibility, replay, beating the default."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xbeam_bluesky.rietveld import (
    Refinement,
    SearchSettings,
    SearchSpace,
    Strategy,
    ValidityLimits,
    load_phase,
    load_warm_start,
    read_instrument,
    read_pattern,
    run_search,
    strategy_document,
)

from .conftest import make_refinement


def _space(ref: Refinement) -> SearchSpace:
    return SearchSpace(*ref.fit_range)


def test_invalid_trials_get_the_capped_penalty_and_never_win(pbso4_refinement, monkeypatch):
    import xbeam_bluesky.rietveld.search._run as search_module

    real_check = search_module.check_validity

    def check(summary, phases, limits=None, exempt=None):  # the real checks, plus: cosine counts as invalid
        extra = ["flagged by the test"] if summary["background"]["type"] == "cosine" else []
        return real_check(summary, phases, limits, exempt) + extra

    monkeypatch.setattr(search_module, "check_validity", check)
    space = _space(pbso4_refinement)
    good = space.default_params()
    bad = good | {"background_type": "cosine"}
    settings = SearchSettings(n_trials=2, n_startup_trials=2, penalty_rwp=100.0)
    res = run_search(pbso4_refinement, settings=settings, warm_start=[bad, good])
    first, second = res.trials
    assert first.params == bad and not first.valid and first.reasons == ["flagged by the test"]
    assert first.rwp is not None and first.rwp < 100.0  # the refinement itself went fine ...
    assert first.objective == 100.0  # ... but the sampler is told the cap, not 1e9
    assert second.valid and second.objective == pytest.approx(second.rwp) and second.objective < 100.0
    assert res.best is second and res.n_failed == 1
    assert res.to_dict()["best_rwp"] == second.rwp


def test_every_trial_invalid_gives_no_best_and_the_reasons(pbso4_refinement):
    space = _space(pbso4_refinement)
    settings = SearchSettings(n_trials=2, n_startup_trials=2, limits=ValidityLimits(uiso_max=1e-9))
    res = run_search(pbso4_refinement, settings=settings, warm_start=[space.default_params()])
    assert res.best is None and res.best_result is None and res.best_strategy is None
    assert res.n_failed == res.n_trials == 2
    assert all(t.objective == settings.penalty_rwp for t in res.trials)
    assert any("Uiso" in r for r in res.failure_reasons())
    assert res.to_dict()["strategy"] is None and res.report["top"] == []


def test_search_and_package_gives_the_result_document_or_the_failure(pbso4_refinement):
    """The one "search, then package" function of ``xbeam refine --auto`` and ``AutoRietveld``."""
    from xbeam_bluesky.rietveld.search import search_and_package

    space = _space(pbso4_refinement)
    settings = SearchSettings(n_trials=1, n_startup_trials=1, start_from_default=False)
    done = search_and_package(
        pbso4_refinement, space=space, settings=settings, warm_start=[space.default_params()]
    )
    assert done.ok and done.failure == ""
    doc = done.document()
    best = done.search.best_result
    assert doc["rwp"] == best.rwp == doc["best_rwp"] and doc["phases"] == best.to_dict()["phases"]
    assert doc["wall_s"] == done.search.wall_s >= doc["refinement_wall_s"] == best.wall_s
    replay = pbso4_refinement.run(Strategy.from_dict(done.strategy))  # the strategy document replays
    assert replay.rwp == pytest.approx(best.rwp, rel=1e-9)
    bad = SearchSettings(
        n_trials=1, n_startup_trials=1, start_from_default=False, limits=ValidityLimits(uiso_max=1e-9)
    )
    failed = search_and_package(
        pbso4_refinement, space=space, settings=bad, warm_start=[space.default_params()]
    )
    assert not failed.ok and failed.strategy is None
    assert (
        failed.failure.startswith("every trial of the strategy search was invalid: 1× ")
        and "Uiso" in failed.failure
    )
    assert failed.document()["status"] == "failed" and failed.document()["message"] == failed.failure


def test_warm_start_evaluates_the_previous_best_first(pbso4_refinement, tmp_path):
    space = _space(pbso4_refinement)
    # zero shift instead of displacement (both together are degenerate: see test_degeneracy.py)
    previous = space.default_params() | {
        "background_type": "cosine",
        "background_terms": 8,
        "zero": True,
        "displacement": False,
    }
    res = run_search(
        pbso4_refinement,
        settings=SearchSettings(n_trials=2, n_startup_trials=2, seed=1, start_from_default=False),
        warm_start=[previous],
    )
    assert res.trials[0].params == previous and res.trials[0].warm_start
    assert not res.trials[1].warm_start and res.trials[1].params != previous
    # what a search saves is what a later search warm-starts from
    saved = tmp_path / "best.strategy.json"
    saved.write_text(json.dumps(strategy_document(space, res.trials[0])))
    points, history = load_warm_start(saved)
    assert points == [previous] and history == []
    result_json = tmp_path / "result.json"
    result_json.write_text(json.dumps(res.to_dict()))
    points, history = load_warm_start(result_json)
    assert points == [res.best.params] and [h["params"] for h in history] == [t.params for t in res.trials]


def test_warm_start_points_outside_the_space_are_skipped(pbso4_refinement, caplog):
    res = run_search(
        pbso4_refinement,
        settings=SearchSettings(n_trials=1, n_startup_trials=1, start_from_default=False),
        warm_start=[{"background_type": "spline"}],
    )
    assert not res.trials[0].warm_start
    assert "warm-start point outside the search space skipped" in caplog.text


def test_the_default_sequences_point_is_evaluated_first(pbso4_refinement):
    """start_from_default: the first trial is the default refinement's kept strategy as a point of the space
    (its grown background), and it reaches about the default's Rwp."""
    from xbeam_bluesky.rietveld.default_sequence import refine_default

    default, kept = refine_default(pbso4_refinement)
    terms = kept.stages[-1].background.terms
    assert terms > 6  # the default grew its background: the point must carry that, not the space's 6
    res = run_search(pbso4_refinement, settings=SearchSettings(n_trials=2, n_startup_trials=2, seed=1))
    first = res.trials[0]
    assert first.warm_start and first.params["background_terms"] == terms
    assert first.params["displacement"] and not first.params["zero"]
    assert abs(first.rwp - default.rwp) < 0.3, (first.rwp, default.rwp)
    assert not res.trials[1].warm_start


def test_bad_warm_start_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="warm-start file not found"):
        load_warm_start(tmp_path / "nope.json")
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"stages": [{"refine": ["scale"]}]}))
    with pytest.raises(ValueError, match="no 'search' block"):
        load_warm_start(plain)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_trials": 0}, "n_trials = 0"),
        ({"n_jobs": 0}, "n_jobs = 0"),
        ({"timeout_s": -1.0}, "timeout_s = -1.0"),
        ({"penalty_rwp": 0.0}, "penalty_rwp = 0.0"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchSettings(**kwargs)


@pytest.mark.slow
def test_parallel_search_is_reproducible_and_replays(pbso4_refinement):
    settings = SearchSettings(n_trials=4, n_jobs=2, n_startup_trials=2, seed=7)
    a = run_search(pbso4_refinement, settings=settings)
    b = run_search(pbso4_refinement, settings=settings)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    np.testing.assert_allclose([t.objective for t in a.trials], [t.objective for t in b.trials], rtol=1e-9)
    # the best strategy, written as JSON and read back, gives the same Rwp on a fresh refinement
    strategy = Strategy.from_dict(json.loads(json.dumps(strategy_document(a.space, a.best))))
    again = make_refinement("pbso4").run(strategy)
    assert again.rwp == pytest.approx(a.best.rwp, rel=1e-9)
    assert a.best_result.rwp == pytest.approx(a.best.rwp, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["pbso4", "fluorapatite"])
def test_search_beats_the_default_sequence_with_a_small_budget(dataset):
    ref = make_refinement(dataset)
    default = ref.run()
    res = run_search(ref, settings=SearchSettings(n_trials=16, n_jobs=2, n_startup_trials=8, seed=0))
    assert res.best is not None
    assert res.best.rwp <= default.rwp, (res.best.rwp, default.rwp)
    assert all(t.objective == res.settings.penalty_rwp for t in res.trials if not t.valid)
    assert all(t.objective < res.settings.penalty_rwp for t in res.trials if t.valid)
    # the winner is physically valid and its report is complete
    assert res.best.valid and res.report["top"][0]["number"] == res.best.number
    assert {s["name"] for s in res.report["spreads"]} >= {f"{ref.phases[0].name}:a", "U"}


def test_search_on_a_full_axial_instrument_refines_the_soller_aperture(data_dir):
    """With a full-axial instrument the default space's SH/L switch refines ``soller``, and the report's
    parameter spreads include it."""
    d = data_dir / "lab6"
    inst = read_instrument(d / "CuKa_lab_default.instprm").with_changes(asymmetry="full_axial")
    ref = Refinement(
        read_pattern(d / "NIST660CBI.gsas"), [load_phase(d / "LaB6_start.cif")], inst, fit_range=(20.0, 125.0)
    )
    point = SearchSpace(*ref.fit_range).default_params() | {"SH/L": True}
    res = run_search(ref, settings=SearchSettings(n_trials=1, n_startup_trials=1), warm_start=[point])
    (trial,) = res.trials
    assert trial.valid, trial.reasons
    assert any("soller" in s.refine for s in res.best_strategy.stages)
    assert not any("SH/L" in s.refine for s in res.best_strategy.stages)
    assert res.best_result.instrument["soller_esd"] > 0
    assert "soller" in [s["name"] for s in res.report["spreads"]]
