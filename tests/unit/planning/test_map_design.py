"""Phase-map energy design: analytic separation cases, closed-form sums vs the clustering's D, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xbeam_bluesky.clustering import model_error_floor, separation_matrix, standardize, standardized_noise
from xbeam_bluesky.planning import (
    MapDesignError,
    ScanTimeModel,
    TransmissionNoise,
    design_map_energies,
    load_design,
    map_separations,
    phase_candidates,
)
from xbeam_bluesky.planning._map_design import _noise_weights, _PairSums
from xbeam_bluesky.spectra import PhotonNoiseModel

GRID = np.arange(7100.0, 7141.0, 1.0)
NOISE = TransmissionNoise(i0_counts_per_s=2e4, detector=PhotonNoiseModel(gain=1.0, offset=0.0))
TIME = ScanTimeModel(dwell_s=0.05, settle_s=0.1, speed_eV_per_s=20.0)


def edge(e0: float, width: float = 2.0) -> np.ndarray:
    return 0.5 + np.arctan((GRID - e0) / width) / np.pi


def test_two_spectra_differing_at_one_energy_get_the_dwell_there() -> None:
    a = edge(7118.0)
    b = a.copy()
    b[25] += 0.08  # only at 7125 eV
    c = phase_candidates(np.stack([a, b]), ["a", "b"], model_error=0.001)
    # 1 eV grid: screen every grid point (the default screen assumes features wider than 4 grid steps); photon
    # noise only (with the clustering's model-error floor, ε_i = e/sqrt(n), every extra channel lowers ε_i)
    d = design_map_energies(
        c, GRID, NOISE, TIME, target_separation=3.719, screen_stride=1, model_error_rms=0.0
    )
    # the only interior energy is the one where the spectra differ; the ends anchor the standardization
    assert list(d.energies_eV) == [GRID[0], GRID[25], GRID[-1]]
    assert d.min_separation >= 3.719
    assert d.weakest_pair["a"] == "a" and d.weakest_pair["b"] == "b"
    # the dwell split is the best one: brute force over splits of the same number of dwell units (steps of 2)
    units = np.round(d.dwell_s / TIME.dwell_s).astype(int)
    total, best = int(units.sum()), 0.0
    for k0 in range(1, total - 1, 2):
        for k1 in range(1, total - k0, 2):
            dwell = np.array([k0, k1, total - k0 - k1]) * TIME.dwell_s
            best = max(
                best, float(map_separations(c, GRID, d.energies_eV, dwell, NOISE, model_error_rms=0)[0])
            )
    assert d.min_separation >= 0.98 * best
    # and far better than the same time spread evenly over the whole grid
    even = np.full(GRID.size, d.dwell_s.sum() / GRID.size)
    assert d.min_separation > 3 * float(map_separations(c, GRID, GRID, even, NOISE, model_error_rms=0)[0])


@pytest.mark.parametrize("eps_rms", [0.0, 0.02, 0.1])
def test_sums_equal_the_clustering_separation_after_adds_repeats_and_removals(eps_rms: float) -> None:
    rng = np.random.default_rng(3)
    spectra = np.stack([edge(e0) for e0 in (7112.0, 7115.0, 7117.0, 7121.0)]) + rng.normal(
        0, 0.01, (4, GRID.size)
    )
    c = phase_candidates(spectra, list("pqrs"), model_error=0.0)
    thickness = np.array([0.5, 2.0])
    mu = NOISE.absorbance(c.spectra)
    sums = _PairSums(mu, c.pairs, thickness.size, eps_rms)
    counts = np.zeros(GRID.size, dtype=int)

    def change(ch: int, new: int) -> None:
        old = counts[ch]
        dw = _noise_weights(mu[:, ch], new, NOISE, TIME.dwell_s, thickness) - _noise_weights(
            mu[:, ch], old, NOISE, TIME.dwell_s, thickness
        )
        sums.add(ch, int(new > 0) - int(old > 0), dw)
        counts[ch] = new

    for ch, k in [(0, 1), (40, 2), (12, 3), (17, 1), (12, 7), (30, 5), (17, 0), (22, 4)]:
        change(ch, k)
    idx = np.flatnonzero(counts)
    dwell = counts[idx] * TIME.dwell_s
    direct = map_separations(c, GRID, GRID[idx], dwell, NOISE, thickness, model_error_rms=eps_rms)
    np.testing.assert_allclose(sums.separations(), direct, rtol=1e-9)
    # and map_separations itself is the clustering's separation_matrix at each thickness, with the
    # clustering's model-error floor on the measured energies
    mu_s = mu[:, idx]
    eps = model_error_floor(idx.size, eps_rms)
    expected = np.full(len(c.pairs), np.inf)
    for t in thickness:
        tau = standardized_noise(t * mu_s, NOISE.i0_counts_per_s * dwell, NOISE.detector, model_error=eps)
        d = separation_matrix(standardize(mu_s), tau)
        expected = np.minimum(expected, d[c.pairs[:, 0], c.pairs[:, 1]])
    np.testing.assert_allclose(direct, expected, rtol=1e-12)


def test_model_error_bounds_the_separation_at_high_dose() -> None:
    """With ε_i = e/sqrt(n) and no photon noise, D = (1 − r) / (e·sqrt(2(1 − r)/n)) = sqrt(n(1 − r)/2) / e."""
    a, b = edge(7112.0), edge(7114.0)
    c = phase_candidates(np.stack([a, b]), ["a", "b"], model_error=0.0)
    idx = np.array([0, 10, 12, 14, 16, 40])
    mu = NOISE.absorbance(c.spectra[:, idx])
    z = standardize(mu)
    r = float(z[0] @ z[1])
    limit = np.sqrt(idx.size * (1 - r) / 2) / 0.02
    d = [
        float(map_separations(c, GRID, GRID[idx], np.full(idx.size, t), NOISE, model_error_rms=0.02)[0])
        for t in (1.0, 1e3, 1e7)
    ]
    assert d[0] < d[1] < d[2] <= limit
    assert d[2] == pytest.approx(limit, rel=1e-4)
    photon_only = map_separations(c, GRID, GRID[idx], np.full(idx.size, 1e3), NOISE, model_error_rms=0.0)
    assert float(photon_only[0]) > 10 * limit  # without ε, D keeps growing as sqrt(dose)


def test_design_records_its_separations_and_time_and_replays(tmp_path) -> None:
    spectra = np.stack([edge(7112.0), edge(7114.0), edge(7114.0, 3.0)])
    c = phase_candidates(spectra, ["x", "y", "z"], mixtures=(0.5,))
    d = design_map_energies(c, GRID, NOISE, TIME, thickness=(0.7, 1.5), n_points=120)
    assert d.stop_reason == "n_points" and d.n_picks == 120
    assert d.total_time_s == pytest.approx(TIME.scan_time_s(d.energies_eV, d.dwell_s))
    path = d.save(tmp_path / "design.json")
    record = load_design(path)
    assert record["objective"] == "map"
    replay = map_separations(
        c,
        GRID,
        record["energies_eV"],
        record["dwell_s"],
        NOISE,
        record["thickness"],
        record["model_error_rms"],
    )
    assert record["model_error_rms"] == 0.02  # the clustering's floor by default
    assert replay.min() == pytest.approx(record["min_separation"], rel=1e-9)
    assert record["weakest_pair"]["separation"] == pytest.approx(replay.min(), rel=1e-9)
    # mixtures are candidates the end members must be told from
    assert any("0.50 x + 0.50 y" in (p["a"], p["b"]) for p in record["pairs"])
    assert json.loads(path.read_text())["pairs"][0] == record["weakest_pair"]


def test_more_time_separates_better() -> None:
    spectra = np.stack([edge(7112.0), edge(7113.0), edge(7120.0)])
    c = phase_candidates(spectra, ["u", "v", "w"])
    short = design_map_energies(c, GRID, NOISE, TIME, time_budget_s=3.0)
    long = design_map_energies(c, GRID, NOISE, TIME, time_budget_s=12.0)
    assert short.total_time_s <= 3.0 * (1 + 1e-9) and long.total_time_s <= 12.0 * (1 + 1e-9)
    assert long.min_separation > short.min_separation


def test_fewer_than_two_candidates() -> None:
    with pytest.raises(MapDesignError, match="at least two candidate phases"):
        phase_candidates(edge(7112.0)[None], ["only"])


def test_candidates_identical_within_model_error() -> None:
    a = edge(7112.0)
    with pytest.raises(MapDesignError, match="identical within the model error"):
        phase_candidates(np.stack([a, a + 0.002]), ["a", "a2"], model_error=0.01)
    c = phase_candidates(np.stack([a, a + 0.002, edge(7120.0)]), ["a", "a2", "b"], model_error=0.01)
    assert c.n_phases == 2 and c.phase_names[0] == "a/a2"
    assert {tuple(p) for p in c.pairs} == {(0, 2), (1, 2)}


def test_budget_too_small_for_the_closest_pair_names_it_and_the_time_needed() -> None:
    spectra = np.stack([edge(7112.0), edge(7112.6), edge(7125.0)])
    c = phase_candidates(spectra, ["near1", "near2", "far"])
    with pytest.raises(MapDesignError, match=r"'near1' / 'near2'.*needs about") as info:
        design_map_energies(c, GRID, NOISE, TIME, time_budget_s=4.0, target_separation=3.719)
    needed = float(str(info.value).split("needs about ")[1].split(" s")[0])
    ok = design_map_energies(c, GRID, NOISE, TIME, time_budget_s=needed * 1.05, target_separation=3.719)
    assert ok.min_separation >= 3.719


def test_bad_arguments() -> None:
    c = phase_candidates(np.stack([edge(7112.0), edge(7120.0)]), ["a", "b"])
    with pytest.raises(MapDesignError, match="stopping rule"):
        design_map_energies(c, GRID, NOISE, TIME)
    with pytest.raises(MapDesignError, match="too small for a phase map: three energies"):
        design_map_energies(c, GRID, NOISE, TIME, time_budget_s=0.01)
    with pytest.raises(MapDesignError, match="grid_eV"):
        design_map_energies(c, GRID[:-1], NOISE, TIME, n_points=10)
    with pytest.raises(MapDesignError, match="thickness"):
        design_map_energies(c, GRID, NOISE, TIME, n_points=10, thickness=(0.0,))


def test_second_pass_continues_from_the_measured_dwell() -> None:
    spectra = np.stack([edge(7112.0), edge(7114.0), edge(7120.0)])
    c = phase_candidates(spectra, ["u", "v", "w"])
    first = design_map_energies(c, GRID, NOISE, TIME, time_budget_s=4.0)
    units = np.zeros(GRID.size, dtype=int)
    units[np.searchsorted(GRID, first.energies_eV)] = np.round(first.dwell_s / TIME.dwell_s)
    second = design_map_energies(c, GRID, NOISE, TIME, time_budget_s=10.0, measured_units=units)
    after = np.zeros(GRID.size, dtype=int)
    after[np.searchsorted(GRID, second.energies_eV)] = np.round(second.dwell_s / TIME.dwell_s)
    assert np.all(after >= units) and after.sum() > units.sum()  # nothing measured is taken back
    assert second.total_time_s == pytest.approx(10.0, abs=0.2) and second.total_time_s <= 10.0 + 1e-9
    assert second.min_separation > first.min_separation
    with pytest.raises(MapDesignError, match="measured_units"):
        design_map_energies(c, GRID, NOISE, TIME, n_points=50, measured_units=units[:-1])


def test_design_charges_split_frames_and_stays_within_its_budget() -> None:
    """With a camera limit, the design's time is the run's: dwell beyond it costs a tour per extra frame."""
    spectra = np.stack([edge(7112.0), edge(7113.0), edge(7120.0)])
    c = phase_candidates(spectra, ["u", "v", "w"])
    split = ScanTimeModel(
        dwell_s=0.05, settle_s=0.1, speed_eV_per_s=20.0, max_exposure_s=0.2, split_overhead_s=0.5
    )
    d = design_map_energies(c, GRID, NOISE, split, time_budget_s=12.0)
    assert d.total_time_s == pytest.approx(split.scan_time_s(d.energies_eV, d.dwell_s))
    assert d.total_time_s <= 12.0 * (1 + 1e-9)
    free = design_map_energies(c, GRID, NOISE, TIME, time_budget_s=12.0)
    assert free.dwell_s.max() > 0.2  # without the limit the design piles dwell beyond it
    # a split frame dearer than the whole budget is never bought: every energy stays within one exposure
    dear = ScanTimeModel(
        dwell_s=0.05, settle_s=0.1, speed_eV_per_s=20.0, max_exposure_s=0.2, split_overhead_s=100.0
    )
    capped = design_map_energies(c, GRID, NOISE, dear, time_budget_s=12.0)
    assert capped.dwell_s.max() <= 0.2 + 1e-9 and capped.total_time_s <= 12.0 * (1 + 1e-9)
    assert capped.energies_eV.size > free.energies_eV.size  # the time goes to more energies instead


def test_without_the_grid_ends_the_design_stays_where_the_phases_differ() -> None:
    a = edge(7118.0)
    b = a.copy()
    b[25] += 0.08  # only at 7125 eV
    c = phase_candidates(np.stack([a, b]), ["a", "b"], model_error=0.001)
    kw = {"target_separation": 3.719, "screen_stride": 1, "model_error_rms": 0.0}
    ends = design_map_energies(c, GRID, NOISE, TIME, **kw)
    near = design_map_energies(c, GRID, NOISE, TIME, keep_ends=False, **kw)
    # the only difference is at 7125 eV: the design starts next to it (7124 and 7126 eV) and need not travel
    # to the grid's ends 7100 and 7140 eV; the anchors it keeps are its own choice
    assert (
        GRID[0] not in near.energies_eV and GRID[-1] not in near.energies_eV and GRID[25] in near.energies_eV
    )
    assert near.min_separation >= 3.719
    # here the grid's ends are the better anchors (the far pre- and post-edge widen ‖μt − mean‖, which lowers
    # every channel's standardized noise), so the design without them needs more time: 13.1 s vs 11.85 s
    assert ends.min_separation >= 3.719 and GRID[0] in ends.energies_eV
    replay = map_separations(c, GRID, near.energies_eV, near.dwell_s, NOISE, model_error_rms=0.0)
    assert float(replay.min()) == pytest.approx(near.min_separation, rel=1e-9)
