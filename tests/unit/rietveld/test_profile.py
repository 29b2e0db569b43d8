"""Peak profile: normalisation, TCH limits, analytic derivatives, FCJ against direct integration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from xbeam_bluesky.rietveld.profile import PeakSet, _pv, evaluate_peaks, peak_windows, tch_mix

LN2 = np.log(2)


def _profile(x, pos, fg, fl, shl):
    t = evaluate_peaks(x, PeakSet(np.array([pos]), np.array([fg]), np.array([fl]), shl), want_derivs=True)
    y = np.zeros_like(x)
    y[t.rows] = t.value
    return y, t


def test_tch_limits():
    big, eta, *_ = tch_mix(np.array([0.1]), np.array([1e-9]))
    assert big[0] == pytest.approx(0.1, rel=1e-6) and eta[0] == pytest.approx(0.0, abs=1e-6)
    big, eta, *_ = tch_mix(np.array([1e-9]), np.array([0.1]))
    assert big[0] == pytest.approx(0.1, rel=1e-6) and eta[0] == pytest.approx(1.0, abs=1e-4)


def test_pseudo_voigt_has_unit_area_and_the_stated_fwhm():
    for eta in (0.0, 0.4, 1.0):
        val = lambda d, eta=eta: _pv(np.array([d]), np.array([0.1]), np.array([eta]), False)[0][0]  # noqa: E731
        core = integrate.quad(val, -1.0, 1.0, points=[0.0], limit=500)[0]
        tails = 2 * integrate.quad(val, 1.0, np.inf, limit=500)[0]
        area = core + tails
        assert area == pytest.approx(1.0, abs=2e-4)
        assert val(0.05) == pytest.approx(0.5 * val(0.0), rel=1e-9)  # half maximum at FWHM/2


def test_symmetric_profile_derivatives_match_finite_differences():
    x = np.linspace(28, 32, 801)
    pos, fg, fl = 30.0, 0.08, 0.05
    _, t = _profile(x, pos, fg, fl, 0.0)
    h = 1e-6
    for k, args in enumerate([(pos + h, fg, fl), (pos, fg + h, fl), (pos, fg, fl + h)]):
        up, _ = _profile(x, *args, 0.0)
        dn, _ = _profile(x, *(a - 2 * h if i == k else a for i, a in enumerate(args)), 0.0)
        analytic = np.zeros_like(x)
        analytic[t.rows] = (t.d_pos, t.d_fwhm_g, t.d_fwhm_l)[k]
        np.testing.assert_allclose(analytic, (up - dn) / (2 * h), atol=1e-4 * np.abs(analytic).max())


@pytest.mark.parametrize("pos", [12.0, 25.0, 140.0])
def test_fcj_profile_matches_direct_integration_of_the_fcj_weights(pos):
    """Our Gauss–Legendre FCJ sum against scipy quad of ∫ G(δ) pV(x−δ) dδ / ∫ G(δ) dδ."""
    shl, fg, fl = 0.04, 0.06, 0.03
    c2 = np.cos(np.radians(pos))
    emin = np.degrees(np.arccos(np.sqrt(1 + shl**2) * c2))

    def weight(delta):
        cd = np.cos(np.radians(delta))
        f = abs(c2) / np.sqrt(max(cd * cd - c2 * c2, 1e-300))
        return (shl * f - 1.0) / abs(cd)  # FCJ eq. 7a, S/L = H/L

    big, eta, *_ = tch_mix(np.array([fg]), np.array([fl]))

    def pv(d):
        return _pv(np.array([d]), big, eta, False)[0][0]

    lo, hi = sorted((emin, pos))
    norm = integrate.quad(weight, lo, hi, limit=200)[0]
    x = np.array([pos - 0.4, pos - 0.15, pos - 0.05, pos, pos + 0.03, pos + 0.1])
    ref = np.array(
        [integrate.quad(lambda d, xx=xx: weight(d) * pv(xx - d), lo, hi, limit=400)[0] / norm for xx in x]
    )
    grid = np.sort(np.concatenate([x, np.linspace(pos - 3, pos + 3, 50)]))
    y, _ = _profile(grid, pos, fg, fl, shl)
    ours = y[np.searchsorted(grid, x)]
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=2e-3 * ref.max())
    assert abs(pos - emin) > 0.5 * fg  # the asymmetry is comparable to the peak width here
    # tails beyond 2 FWHM + 5 asymmetry widths (centroid-shifted pseudo-Voigt there): within 3 % locally
    reach = 5 * abs(pos - emin) + 2 * big[0]
    low, high = peak_windows(PeakSet(np.array([pos]), np.array([fg]), np.array([fl]), shl))
    far = [
        pos + s * d
        for s, w in ((-1, low[0]), (1, high[0]))
        for d in (reach + 0.05, reach + 0.2)
        if d < w - 0.02
    ]
    if far:
        far = np.array(far)
        ref_far = np.array(
            [
                integrate.quad(lambda d, xx=xx: weight(d) * pv(xx - d), lo, hi, limit=400)[0] / norm
                for xx in far
            ]
        )
        grid = np.sort(np.concatenate([far, np.linspace(pos - 3, pos + 3, 50)]))
        y, _ = _profile(grid, pos, fg, fl, shl)
        np.testing.assert_allclose(y[np.searchsorted(grid, far)], ref_far, rtol=0.03)


def test_window_is_gsas_cutoff():
    x = np.linspace(10, 50, 40001)
    _, t = _profile(x, 30.0, 0.1, 0.0001, 0.0)
    lo, hi = x[t.rows.min()], x[t.rows.max()]
    assert lo == pytest.approx(30 - 10 * 0.1, abs=2e-3) and hi == pytest.approx(30 + 15 * 0.1, abs=2e-3)
