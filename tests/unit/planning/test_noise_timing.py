"""Noise model in normalized units, its count-level simulation, and the scan time model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xbeam_bluesky.planning import ScanTimeModel, TransmissionNoise
from xbeam_bluesky.spectra import PhotonNoiseModel


def test_variance_is_the_photon_counting_formula():
    noise = TransmissionNoise(
        i0_counts_per_s=1e5, mu_t_pre_edge=0.4, edge_jump=0.8, detector=PhotonNoiseModel(2.0, 0.0)
    )
    f = np.array([0.0, 1.0])
    i0 = 1e5 * 0.5
    i = i0 * np.exp(-(0.4 + 0.8 * f))
    expected = (2.0 / i0 + 2.0 / i) / 0.8**2
    np.testing.assert_allclose(noise.variance(f, 0.5), expected, rtol=1e-12)


def test_simulated_counts_have_the_model_variance():
    noise = TransmissionNoise(i0_counts_per_s=2e5, mu_t_pre_edge=0.5, edge_jump=1.0)
    rng = np.random.default_rng(1)
    f = np.full(200_000, 0.7)
    samples = noise.simulate(f, 0.05, rng)
    assert samples.mean() == pytest.approx(0.7, abs=2e-3)
    assert samples.var() == pytest.approx(float(noise.variance(0.7, 0.05)), rel=0.03)


def test_bad_noise_parameters():
    with pytest.raises(ValueError, match="i0_counts_per_s"):
        TransmissionNoise(i0_counts_per_s=0.0)
    with pytest.raises(ValueError, match="edge_jump"):
        TransmissionNoise(edge_jump=-1.0)


def test_scan_time_counts_moves_settles_and_dwell():
    tm = ScanTimeModel(dwell_s=0.1, settle_s=0.5, speed_eV_per_s=10.0, move_overhead_s=0.2)
    e = np.array([7130.0, 7100.0, 7110.0])
    # sorted 7100, 7110, 7130: moves 0.2 + 1.0 and 0.2 + 2.0; settles 3 × 0.5; dwell 0.1 + 0.2 + 0.3
    assert tm.scan_time_s(e, [0.3, 0.1, 0.2]) == pytest.approx(0.6 + 3.4 + 1.5)


def test_pick_overhead_counts_every_dwell_unit():
    tm = ScanTimeModel(dwell_s=0.1, pick_overhead_s=0.01)
    # 3 + 1 picks: 0.4 s dwell, 4 × 0.01 s overhead, no settle, instant moves
    assert tm.scan_time_s([7100.0, 7110.0], [0.3, 0.1]) == pytest.approx(0.44)
    assert tm.pick_cost_s == pytest.approx(0.11)


def test_insertion_overhead_between_neighbours():
    tm = ScanTimeModel(settle_s=0.5, speed_eV_per_s=10.0, move_overhead_s=0.2)
    sel = [7100.0, 7130.0]
    extra = tm.insertion_overhead_s([7100.0, 7110.0, 7140.0], sel)
    # a repeat costs nothing; inside: one more move overhead (distance unchanged) + settle; outside: a move + settle
    np.testing.assert_allclose(extra, [0.0, 0.2 + 0.5, 0.2 + 1.0 + 0.5])


def test_time_model_validation_and_round_trip():
    with pytest.raises(ValueError, match="dwell_s"):
        ScanTimeModel(dwell_s=0.0)
    with pytest.raises(ValueError, match="speed_eV_per_s"):
        ScanTimeModel(speed_eV_per_s=-1.0)
    tm = ScanTimeModel(dwell_s=0.2, settle_s=0.1)
    assert tm.to_dict()["speed_eV_per_s"] == "inf"
    assert ScanTimeModel.from_dict(tm.to_dict()) == tm
    assert math.isinf(ScanTimeModel.from_dict(tm.to_dict()).speed_eV_per_s)


def test_split_frames_are_charged_per_extra_frame():
    # max exposure 0.31 s: 0.3 s is one frame, 0.35 s two, 0.93 s three (one tour of 2 s per extra frame)
    m = ScanTimeModel(dwell_s=0.05, settle_s=0.1, max_exposure_s=0.31, split_overhead_s=2.0)
    np.testing.assert_array_equal(m.extra_frames([0.05, 0.3, 0.31, 0.35, 0.93]), [0, 0, 0, 1, 2])
    assert m.scan_time_s([7100.0, 7110.0], [0.3, 0.35]) == pytest.approx(0.65 + 2.0 + 0.2)
    # one more unit at 6 units (0.30 s) crosses into a second frame; at 7 units it does not
    np.testing.assert_allclose(m.dwell_cost_s([6, 7, 0], [1, 1, 7]), [0.05 + 2.0, 0.05, 0.35 + 2.0])
    assert ScanTimeModel.from_dict(m.to_dict()) == m
    assert ScanTimeModel.from_dict(ScanTimeModel().to_dict()).max_exposure_s == math.inf
    with pytest.raises(ValueError, match="max_exposure_s"):
        ScanTimeModel(max_exposure_s=0.0)
