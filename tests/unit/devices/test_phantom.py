"""The phantom: requested vs measured phase fractions, tiling independence, Beer–Lambert inputs."""

import numpy as np
import pytest

from xbeam_bluesky.devices.sim.phantom import Phantom
from xbeam_bluesky.spectra import aligned_library, load_library


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return Phantom(width_mm=6.0, height_mm=4.0, seed=3)


def test_minority_fractions_match_request(phantom: Phantom) -> None:
    fractions = phantom.area_fractions(pixel_um=4.0)
    assert sum(fractions.values()) == pytest.approx(1.0)
    # Rendering of lobed inclusions on a 4 µm grid: within 5 % of the requested area.
    assert fractions["pyrite"] == pytest.approx(0.005, rel=0.05)
    assert fractions["iron metal"] == pytest.approx(0.001, rel=0.08)
    for name in ("hematite", "magnetite", "goethite", "fayalite", "hematite+magnetite"):
        assert fractions[name] > 0.02


def test_fraction_request_is_followed_when_changed() -> None:
    ph = Phantom(width_mm=4.0, height_mm=4.0, seed=1, minority_fractions=(0.02,))
    assert ph.phase_names[-1] == "pyrite"
    assert "iron metal" not in ph.phase_names
    assert ph.area_fractions(pixel_um=4.0)["pyrite"] == pytest.approx(0.02, rel=0.03)


def test_tiles_agree_where_they_overlap(phantom: Phantom) -> None:
    pixel = 2.0
    big = phantom.labels((0.3, -0.2), (120, 160), pixel)
    # A tile shifted by exactly 40 columns and 30 rows sees the same pixels.
    small = phantom.labels((0.3 + 40 * pixel / 1000, -0.2 + 30 * pixel / 1000), (60, 80), pixel)
    np.testing.assert_array_equal(big[30 + 30 : 30 + 90, 40 + 40 : 40 + 120], small)


def test_same_seed_same_sample_different_seed_different_sample() -> None:
    a = Phantom(width_mm=3.0, height_mm=3.0, seed=5).labels((0, 0), (64, 64), 10.0)
    b = Phantom(width_mm=3.0, height_mm=3.0, seed=5).labels((0, 0), (64, 64), 10.0)
    c = Phantom(width_mm=3.0, height_mm=3.0, seed=6).labels((0, 0), (64, 64), 10.0)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.2


def test_outside_the_sample_is_empty(phantom: Phantom) -> None:
    fov = phantom.field_of_view((10.0, 0.0), (16, 16), 5.0)
    assert (fov.labels == 0).all() and (fov.thickness == 0).all()
    mu = phantom.absorbance([7100.0, 7200.0], (10.0, 0.0), (16, 16), 5.0)
    assert mu.shape == (2, 16, 16) and mu.dtype == np.float32 and (mu == 0).all()


def test_absorbance_is_thickness_times_phase_spectrum(phantom: Phantom) -> None:
    energies = np.array([7100.0, 7130.0, 7180.0])
    fov = phantom.field_of_view((0.5, 0.5), (40, 50), 3.0)
    mu = phantom.absorbance(energies, (0.5, 0.5), (40, 50), 3.0)
    spectra = phantom.phase_spectra(energies)
    iy, ix = 17, 23
    label = fov.labels[iy, ix]
    np.testing.assert_allclose(mu[:, iy, ix], fov.thickness[iy, ix] * spectra[label - 1], rtol=1e-5)


def test_phase_spectra_come_from_the_reference_library(phantom: Phantom) -> None:
    grid = np.arange(7100.0, 7180.0, 0.5)
    ref = aligned_library([s for s in load_library() if s.name == "FeS2_rt_01"], grid).matrix[0]
    pyrite = phantom.normalized_spectra(grid)[phantom.phase_names.index("pyrite")]
    np.testing.assert_allclose(pyrite, ref, atol=0.02)
    mix = phantom.normalized_spectra(grid)[phantom.phase_names.index("hematite+magnetite")]
    hem = phantom.normalized_spectra(grid)[phantom.phase_names.index("hematite")]
    mag = phantom.normalized_spectra(grid)[phantom.phase_names.index("magnetite")]
    np.testing.assert_allclose(mix, 0.5 * hem + 0.5 * mag, atol=1e-9)


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="not found in the library"):
        Phantom(width_mm=2, height_mm=2, phases={"x": {"no_such_spectrum": 1.0}})
    with pytest.raises(ValueError, match="width_mm"):
        Phantom(width_mm=-1)
