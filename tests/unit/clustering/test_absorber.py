"""No-absorber class: the jump test is calibrated by the noise, blind to offsets and smooth thickness backgrounds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from xbeam_bluesky.clustering import AbsorberInputError, absorber_test, label_no_absorber, no_absorber_name


def _scene(energies: np.ndarray, library: dict[str, np.ndarray], seed: int = 0):
    """Hematite/magnetite halves with a thickness map, a no-Fe band with a non-resonant matrix, offsets."""
    ny, nx = 60, 80
    yy, xx = np.mgrid[:ny, :nx]
    fe = 0.2 + 1.5 * np.exp(-((xx - 40) ** 2 + (yy - 30) ** 2) / 900.0)  # Fe thickness map, edge-step units
    fe[:, :15] = 0.0  # no Fe: left band
    phase = np.where(xx < 48, "Fe2O3_rt_01", "Fe3O4_rt_01")
    matrix = 0.5 + 0.01 * yy  # non-Fe matrix OD at the first energy, falling as (E0/E)^3
    offset = 0.3 * np.sin(xx / 7.0)  # per-pixel offset (e.g. a support of varying thickness)
    mu = np.empty((energies.size, ny, nx))
    for name in ("Fe2O3_rt_01", "Fe3O4_rt_01"):
        sel = phase == name
        mu[:, sel] = library[name][:, None] * fe[sel][None, :]
    mu += matrix[None] * (energies[0] / energies)[:, None, None] ** 3 + offset[None]
    return mu, fe


def test_jump_is_unbiased_and_its_error_calibrated(energies, library, noise, noisy_absorbance) -> None:
    mu, fe = _scene(energies, library)
    refs = np.stack([library["Fe2O3_rt_01"], library["Fe3O4_rt_01"]])
    test = absorber_test(energies, references=refs, element="Fe")
    i0 = 2e4
    noiseless, _ = test.jump(mu, 0.0)
    for seed in range(3):
        od = noisy_absorbance(mu, i0, noise, seed=seed)
        jump, sigma = test.jump(od, noise.var_absorbance(i0, od))
        # with or without Fe, the estimate scatters about the noiseless jump by its own standard error
        for where in (fe == 0, fe > 0):
            pull = (jump[where] - noiseless[where]) / sigma[where]
            assert abs(pull.mean()) < 0.15 and 0.85 < pull.std() < 1.15
    # the library spectra are normalized to a unit step: the jump is the Fe map up to the shapes' step ratio
    ratio = noiseless[fe > 0] / fe[fe > 0]
    assert np.ptp(ratio) < 0.2 * ratio.mean()
    assert np.all(np.abs(noiseless[fe == 0]) < 1e-9)  # the matrix background and offsets give no jump


def test_no_fe_band_detected_and_offsets_do_not_change_the_map(
    energies, library, noise, noisy_absorbance
) -> None:
    mu, fe = _scene(energies, library)
    od = noisy_absorbance(mu, 2e4, noise, seed=7)
    var = noise.var_absorbance(2e4, od)
    for test in (
        absorber_test(
            energies, references=np.stack([library["Fe2O3_rt_01"], library["Fe3O4_rt_01"]]), element="Fe"
        ),
        absorber_test(energies, edge_ev=7112.0, element="Fe"),
    ):
        present = test.absorbing(od, var)
        assert present[fe > 0].all()
        false = present[fe == 0].mean()
        assert false <= 5 * test.false_detection_rate + 2 / (fe == 0).sum()
        # a pre-edge-subtracted stack (each pixel's mean of the first 8 energies removed): same map
        subtracted = od - od[:8].mean(axis=0, keepdims=True)
        assert np.array_equal(test.absorbing(subtracted, var), present)
        labels = label_no_absorber(np.ones(fe.shape, np.int32), present, n_clusters=3)
        assert (
            set(np.unique(labels[fe == 0])) <= {1, 4}
            and np.mean(labels[fe == 0] == 4) >= 1 - 5 * test.false_detection_rate - 0.01
        )
        assert np.all(labels[fe > 0] == 1)


def test_detection_threshold_and_floor() -> None:
    e = np.linspace(700.0, 730.0, 40)
    test = absorber_test(e, edge_ev=708.0, z_threshold=2.0, min_jump_od=0.05)
    assert test.false_detection_rate == pytest.approx(norm.sf(2.0))
    step = np.arctan(e - 708.0) / np.pi + 0.5
    stack = np.stack([0.03 * step, 0.06 * step, 0.2 * step], axis=1)  # three noiseless pixels
    jump, _ = test.jump(stack, 0.0)
    assert np.allclose(jump, [0.03, 0.06, 0.2])
    assert test.absorbing(stack, 1e-6).tolist() == [
        False,
        True,
        True,
    ]  # 0.03 OD is significant but below the floor
    channel_var = (0.05 / np.linalg.norm(test.weights)) ** 2  # σ_J = ‖w‖ σ = 0.05 OD: 2σ_J = 0.1
    assert np.allclose(test.jump(stack, channel_var)[1], 0.05)
    assert test.absorbing(stack, channel_var).tolist() == [False, False, True]


def test_names_and_bad_input() -> None:
    assert no_absorber_name("Fe") == "no Fe" and no_absorber_name("Fe-L3") == "no Fe"
    assert no_absorber_name(None) == "no absorber"
    e = np.linspace(700.0, 730.0, 40)
    with pytest.raises(AbsorberInputError, match="edge energy"):
        absorber_test(e)
    with pytest.raises(AbsorberInputError, match="inside the energies"):
        absorber_test(e, edge_ev=750.0)
    with pytest.raises(AbsorberInputError, match="energies"):
        absorber_test([708.0], edge_ev=708.0)
    with pytest.raises(AbsorberInputError, match="references"):
        absorber_test(e, references=np.ones((2, 39)))
    with pytest.raises(AbsorberInputError, match="no edge step"):
        absorber_test(e, references=np.ones((1, 40)))
    test = absorber_test(e, edge_ev=708.0)
    with pytest.raises(AbsorberInputError, match="40 energies"):
        test.jump(np.zeros((39, 3)), 1.0)
    with pytest.raises(AbsorberInputError, match="variance"):
        test.jump(np.zeros((40, 3)), np.ones(7))
    nan_pixel = np.zeros((40, 2))
    nan_pixel[5, 0] = np.nan
    assert test.absorbing(nan_pixel + (np.arctan(e - 708.0) / np.pi + 0.5)[:, None], 1e-6).tolist() == [
        False,
        True,
    ]
    with pytest.raises(AbsorberInputError, match="shape"):
        label_no_absorber(np.ones((2, 2)), np.ones((3, 2), bool), 1)
