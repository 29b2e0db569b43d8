"""The full axial-divergence model (Cheary & Coelho 1998): kernels, profiles, refinement, inputs."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.rietveld import (
    Instrument,
    Refinement,
    SearchSpace,
    Strategy,
    load_phase,
    read_instrument,
    simulate_pattern,
)
from xbeam_bluesky.rietveld.axial import AxialDivergence, axial_extent, axial_quadrature
from xbeam_bluesky.rietveld.pattern_io import Pattern
from xbeam_bluesky.rietveld.profile import PeakSet, _pv, evaluate_peaks, tch_mix

LAB = AxialDivergence(soller=2.5, source_length=12.0, sample_length=15.0, receiver_length=12.0, radius=200.0)


def _moments(pos: float, geom: AxialDivergence, n: int = 64) -> tuple[float, float]:
    offs, w = axial_quadrature(np.array([pos]), geom, n)
    mean = float(offs[0] @ w[0])
    return mean, float(np.sqrt(((offs[0] - mean) ** 2) @ w[0]))


@pytest.mark.parametrize("pos", [15.0, 40.0, 90.0, 150.0])
def test_mean_aberration_without_soller_limits_is_the_analytic_one(pos):
    """Uniform heights, no Soller cut: E[β₁β₂] = −Ls²/12R², E[β₁²] = (Lx²+Ls²)/12R², E[β₂²] = (Ls²+Lr²)/12R²."""
    lx, ls, lr, r = 10.0, 18.0, 14.0, 240.0
    geom = AxialDivergence(soller=1e6, source_length=lx, sample_length=ls, receiver_length=lr, radius=r)
    t = np.radians(pos)
    e_a = -(ls**2) / (12 * r**2)
    e_b = -((lx**2 + ls**2) + (ls**2 + lr**2)) / (24 * r**2)
    expected = np.degrees(e_a / np.sin(t) + e_b * np.cos(t) / np.sin(t))
    mean, _ = _moments(pos, geom)
    assert mean == pytest.approx(expected, rel=1e-3)


def _monte_carlo_aberrations(pos: float, n: int) -> np.ndarray:
    """2φ − 2θ (deg) of random rays through the LAB geometry: uniform heights, Soller transmission
    as acceptance, and the exact cos 2θ = cos β₁ cos β₂ cos 2φ + sin β₁ sin β₂ (no expansion)."""
    rng = np.random.default_rng(1)
    zx = rng.uniform(-6, 6, n)
    zs = rng.uniform(-7.5, 7.5, n)
    zr = rng.uniform(-6, 6, n)
    b1, b2 = np.arctan((zs - zx) / 200.0), np.arctan((zr - zs) / 200.0)
    ap = np.radians(2.5)
    keep = rng.uniform(size=n) < np.clip(1 - np.abs(b1) / ap, 0, None) * np.clip(1 - np.abs(b2) / ap, 0, None)
    b1, b2 = b1[keep], b2[keep]
    c = (np.cos(np.radians(pos)) - np.sin(b1) * np.sin(b2)) / (np.cos(b1) * np.cos(b2))
    return np.degrees(np.arccos(c)) - pos


@pytest.mark.parametrize("pos", [21.4, 60.0, 120.0])
def test_kernel_matches_monte_carlo_of_the_exact_ray_geometry(pos):
    """Independent check against random rays (exact geometry, no small-angle expansion)."""
    eps = _monte_carlo_aberrations(pos, 2_000_000)
    mean, std = _moments(pos, LAB)
    assert mean == pytest.approx(eps.mean(), rel=0.02)
    assert std == pytest.approx(eps.std(), rel=0.02)
    lo, hi = axial_extent(np.array([pos]), LAB)
    assert lo[0] <= np.quantile(eps, 0.001) and np.quantile(eps, 0.999) <= hi[0]
    # the tail points to low angle below 90° and to high angle above
    assert (mean < 0) == (pos < 90)


def test_quadrature_weights_are_a_distribution_inside_the_extent():
    pos = np.array([20.0, 45.0, 88.0, 135.0])
    lo, hi = axial_extent(pos, LAB)
    for n in (1, 4, 16, 64):
        offs, w = axial_quadrature(pos, LAB, n)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        assert np.all(w >= 0)
        assert np.all(offs >= lo[:, None] - 1e-12) and np.all(offs <= hi[:, None] + 1e-12)
        # the mean does not depend on the number of nodes
        np.testing.assert_allclose((offs * w).sum(axis=1), _moments_all(pos), rtol=1e-9, atol=1e-12)


def _moments_all(pos: np.ndarray) -> np.ndarray:
    offs, w = axial_quadrature(pos, LAB, 64)
    return (offs * w).sum(axis=1)


def test_wider_soller_slits_give_a_wider_aberration():
    stds = [_moments(25.0, AxialDivergence(s, 12.0, 15.0, 12.0, 200.0))[1] for s in (1.0, 2.5, 5.0)]
    assert stds[0] < stds[1] < stds[2]


@pytest.mark.parametrize("pos", [21.4, 100.0])
def test_profile_is_the_pseudo_voigt_convolved_with_the_ray_aberrations(pos):
    """Our quadrature profile against an average of pseudo-Voigts over Monte-Carlo ray aberrations."""
    fg, fl = np.array([0.05]), np.array([0.03])
    big, eta, *_ = tch_mix(fg, fl)
    eps = _monte_carlo_aberrations(pos, 40_000)
    x = np.linspace(pos - 0.6, pos + 0.6, 241)
    ref = np.array([_pv(xx - pos - eps, big, eta, False)[0].mean() for xx in x])
    t = evaluate_peaks(x, PeakSet(np.array([pos]), fg, fl, 0.0, axial=LAB), want_derivs=False)
    ours = np.zeros_like(x)
    ours[t.rows] = t.value
    np.testing.assert_allclose(ours, ref, atol=0.01 * ref.max())
    # and the aberration matters at this width: the symmetric profile is far off
    t0 = evaluate_peaks(x, PeakSet(np.array([pos]), fg, fl, 0.0), want_derivs=False)
    plain = np.zeros_like(x)
    plain[t0.rows] = t0.value
    assert np.abs(plain - ref).max() > 0.05 * ref.max()


@pytest.fixture(scope="module")
def lab6_cif(data_dir):
    return load_phase(data_dir / "lab6" / "LaB6_start.cif")


def test_refinement_recovers_the_soller_aperture_from_simulated_data(lab6_cif):
    truth = Instrument(u=3.0, v=-2.0, w=4.0, x=2.0, y=1.0, asymmetry="full_axial", soller=3.2)
    x = np.arange(18.0, 125.0, 0.01)
    expected = simulate_pattern([lab6_cif], x, instrument=truth, scales=[2e-2], background=200.0)
    y = np.random.default_rng(3).poisson(expected).astype(float)
    start = truth.with_changes(soller=2.0)
    strategy = Strategy.from_dict(
        [
            {"refine": ["background", "scale"], "background": {"type": "chebyshev", "terms": 3}},
            {"refine": ["cell", "soller"]},
        ]
    )
    res = Refinement(Pattern(x, y, np.sqrt(np.maximum(y, 1.0)), "sim"), [lab6_cif], start).run(strategy)
    assert res.ok, res.message
    assert abs(res.instrument["soller"] - 3.2) <= 3 * res.instrument["soller_esd"]
    assert res.instrument["soller_esd"] < 0.05
    a = res.phases[0]["lattice"]["a"]
    assert abs(a - lab6_cif.cell[0]) <= 3 * res.phases[0]["lattice_esd"]["a"]
    assert res.instrument["asymmetry"] == "full_axial" and "SH/L" in res.instrument


def test_refining_the_other_models_asymmetry_parameter_is_refused(lab6_cif):
    x = np.arange(18.0, 60.0, 0.02)
    y = simulate_pattern([lab6_cif], x, scales=[2e-2], background=100.0)
    pattern = Pattern(x, y, np.sqrt(y), "sim")
    with pytest.raises(ValueError, match=r"refines 'soller'.*asymmetry model is 'fcj'.*'SH/L'"):
        Refinement(pattern, [lab6_cif], Instrument()).run(
            Strategy.from_dict([{"refine": ["scale", "soller"]}])
        )
    axial = Instrument(asymmetry="full_axial")
    with pytest.raises(ValueError, match=r"refines 'SH/L'.*'full_axial'.*'soller'"):
        Refinement(pattern, [lab6_cif], axial).run(Strategy.from_dict([{"refine": ["scale", "SH/L"]}]))


def test_bad_geometry_and_model_names_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"asymmetry 'voigt'.*fcj, full_axial"):
        Instrument(asymmetry="voigt")
    with pytest.raises(ValueError, match=r"soller = -1\.0: expected a positive number"):
        Instrument(asymmetry="full_axial", soller=-1.0)
    Instrument(soller=-1.0)  # the geometry is unused (and unchecked) with FCJ
    bad = tmp_path / "bad.instprm"
    bad.write_text("Type:PXC\nLam1:1.5405;Asymmetry:fulaxial\n")
    with pytest.raises(ValueError, match=r"bad.instprm: Asymmetry 'fulaxial'"):
        read_instrument(bad)
    bad.write_text("Type:PXC\nLam1:1.5405;Asymmetry:full_axial;SampleLength:0\n")
    with pytest.raises(ValueError, match=r"bad.instprm: .*sample_length = 0.0"):
        read_instrument(bad)


def test_instprm_reads_the_slit_geometry(tmp_path):
    f = tmp_path / "lab.instprm"
    f.write_text(
        "#GSAS-II instrument parameter file\nType:PXC;Bank:1\nLam1:1.5405;Lam2:1.5443;I(L2)/I(L1):0.5\n"
        "U:2.0;V:-2.0;W:5.0;X:0.0;Y:0.0;SH/L:0.002\n"
        "Asymmetry:full_axial;Soller:2.3;SourceLength:12;SampleLength:20;ReceiverLength:15;GonioRadius:217.5\n"
    )
    inst = read_instrument(f)
    assert inst.asymmetry == "full_axial"
    assert inst.axial() == AxialDivergence(2.3, 12.0, 20.0, 15.0, 217.5)
    assert inst.asymmetry_parameter == "soller"
    assert inst.sh_l == 0.002  # still read, unused by the full axial model


@pytest.mark.parametrize("late", [False, True])
def test_search_space_switches_the_instruments_own_asymmetry_parameter(late):
    fcj = SearchSpace(20.0, 120.0)
    axial = SearchSpace(20.0, 120.0, asymmetry_parameter="soller")
    params = {**fcj.default_params(), "SH/L": True, "gaussian_after_atoms": late}
    stages_fcj = fcj.strategy(params).stages
    stages_axial = axial.strategy(params).stages
    assert [s.refine for s in stages_axial] == [
        tuple("soller" if g == "SH/L" else g for g in s.refine) for s in stages_fcj
    ]
    assert any("SH/L" in s.refine for s in stages_fcj)
    with pytest.raises(ValueError, match="asymmetry_parameter 'S/L'"):
        SearchSpace(20.0, 120.0, asymmetry_parameter="S/L")
