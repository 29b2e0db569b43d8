"""Normalization, calibration and resampling against analytic spectra and the bundled foils."""

import numpy as np
import pytest
from scipy.special import erf

from xbeam_bluesky.spectra import (
    Spectrum,
    SpectrumFormatError,
    aligned_library,
    edge_energy,
    find_e0,
    load_library,
    normalize,
    resample,
)


def synthetic(e0=7120.0, step=2.5, width=1.5):
    """Error-function edge of known position and height on a sloping pre-edge line, flat above."""
    energy = np.arange(6950.0, 7500.0, 0.5)
    pre = 0.3 - 1e-4 * (energy - e0)
    edge = step * 0.5 * (1 + erf((energy - e0) / width))
    return Spectrum(energy=energy, mu=pre + edge, name="synthetic")


def test_find_e0_at_the_inflection_point():
    s = synthetic(e0=7120.0)
    assert find_e0(s.energy, s.mu) == pytest.approx(7120.0, abs=0.2)


def test_normalize_recovers_step_and_flattens():
    s = synthetic(step=2.5)
    n = normalize(s)
    assert n.edge_step == pytest.approx(2.5, rel=1e-3)
    assert np.abs(n.norm[s.energy < 7050]).max() < 0.01
    assert n.norm[s.energy > 7300].mean() == pytest.approx(1.0, abs=0.02)


def test_short_xanes_scan_still_normalizes():
    s = synthetic()
    keep = (s.energy > 7095) & (s.energy < 7200)
    n = normalize(Spectrum(energy=s.energy[keep], mu=s.mu[keep], name="short"))
    assert n.e0 == pytest.approx(7120.0, abs=0.3)


def test_no_edge_step_is_an_error():
    energy = np.linspace(7000, 7300, 200)
    with pytest.raises(SpectrumFormatError, match="expected a positive jump"):
        normalize(Spectrum(energy=energy, mu=-erf((energy - 7120) / 2), name="upside-down"), e0=7120.0)


def test_calibration_puts_every_foil_on_the_reference_edge():
    spectra = load_library()
    foils = [
        "Fe_metal_rt_01",
        "Fe_Foil_rt_2016Foils",
        "Hansel2001_Fe_foil_xanes_001",
        "xasref_Fe_foil",
        "larch_FeDem_Fe_foil",
    ]
    grid = np.arange(7076.2, 7181.25, 0.1)
    lib = aligned_library(spectra, grid)
    assert not lib.dropped and lib.matrix.shape == (102, 1051)
    e0 = dict(zip(lib.names, lib.e0, strict=True))
    for foil in foils:
        assert e0[foil] == pytest.approx(edge_energy("Fe-K"), abs=0.05), foil
    # Chemical shifts survive calibration: Fe(III) oxides sit ~13-16 eV above the metal.
    assert 10.0 < e0["Fe2O3_rt_01"] - e0["Fe_metal_rt_01"] < 18.0
    assert 10.0 < e0["Hematite_FeXANES"] - e0["Fe_metal_rt_01"] < 18.0


def test_edge_alignment_and_uncovered_spectra_are_dropped():
    spectra = load_library()
    lib = aligned_library(spectra, np.arange(7100.0, 7150.0, 0.5), align="edge", e0_ref=7112.0)
    assert np.allclose(lib.e0, 7112.0)
    wide = aligned_library(spectra, np.arange(6990.0, 7400.0, 1.0))
    assert "Hansel2001_goethite_xanes_003" in wide.dropped  # measured from 7062 eV only
    assert "does not cover" in wide.dropped["Hansel2001_goethite_xanes_003"]


def test_resample_interpolates_and_refuses_to_extrapolate():
    e = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(resample(e, 2 * e, np.array([1.5, 3.0])), [3.0, 6.0])
    with pytest.raises(SpectrumFormatError, match="does not cover"):
        resample(e, e, np.array([0.5, 2.0]))


def test_unknown_edge():
    with pytest.raises(ValueError, match="unknown absorption edge 'Xx-K'"):
        edge_energy("Xx-K")
