"""Incident counts per energy (a per-energy dwell): τ, D, sites, streaming statistics and a phantom."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import (
    ArrayStack,
    Sites,
    StreamingAssigner,
    cluster_stack,
    directed_separation,
    photon_coefficients,
    sites_from_library,
    standardize,
    standardized_noise,
)
from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

# The energies and per-energy dwell (s) that `optimal_xanes_imaging` chose in `xbeam demo --dwell 0.05`
# (a repeated energy is a dwell split into two frames); incident counts 8129 ADU per 0.05 s of the sim camera.
DEMO_ENERGIES = np.array([
    7076.2, 7112.9, 7115.2, 7118.7, 7121.6, 7123.3, 7125.0, 7126.5, 7128.0, 7128.0, 7131.0, 7131.0, 7134.6,
    7134.6, 7136.4, 7138.3, 7141.0, 7141.0, 7145.9, 7145.9, 7150.0, 7150.0, 7152.3, 7154.6, 7157.1, 7159.4,
    7161.7, 7164.0, 7166.2, 7168.5, 7168.5, 7172.2, 7172.2, 7175.8, 7181.2,
])  # fmt: skip
DEMO_DWELL = np.array([
    0.05, 0.2, 0.25, 0.3, 0.3, 0.25, 0.3, 0.2, 0.175, 0.175, 0.2, 0.2, 0.2, 0.2, 0.25, 0.3, 0.175, 0.175, 0.2,
    0.2, 0.175, 0.175, 0.25, 0.3, 0.25, 0.3, 0.25, 0.3, 0.25, 0.175, 0.175, 0.175, 0.175, 0.3, 0.1,
])  # fmt: skip
DEMO_I0 = 8129.19 * DEMO_DWELL / 0.05


def test_tau_per_energy_is_the_scalar_formula_energy_by_energy(library, noise) -> None:
    mu = 0.4 + np.vstack([library["Fe2O3_rt_01"], library["FeS2_rt_01"]])
    i0 = np.random.default_rng(0).uniform(5e3, 8e4, mu.shape[1])
    tau = standardized_noise(mu, i0, noise)
    for i in range(mu.shape[1]):
        assert np.allclose(tau[:, i], standardized_noise(mu, float(i0[i]), noise)[:, i], rtol=1e-12)
    # equal values per energy are exactly the scalar
    assert np.array_equal(
        standardized_noise(mu, np.full(mu.shape[1], 2e4), noise), standardized_noise(mu, 2e4, noise)
    )


def test_separation_grows_as_sqrt_dwell_when_photon_limited(library) -> None:
    poisson = PhotonNoiseModel(gain=1.0, offset=0.0)  # Var(μt) = 1/I0 + 1/I: exactly ∝ 1/dwell
    p = 0.4 + library["Fe2O3_rt_01"]
    q = 0.4 + library["larch_FeDem_Goerthite"]
    zp, zq = standardize(np.vstack([p, q]))
    n = p.size
    base = 1e3  # counts in the shortest dwell

    def d(i0):
        return float(directed_separation(zp, zq, standardized_noise(p, i0, poisson)))

    d1 = d(base)
    assert d(np.full(n, 4 * base)) == pytest.approx(2 * d1, rel=1e-12)  # 4× dwell everywhere → 2× D
    dwell = np.where(np.arange(n) % 3 == 0, 1.0, 6.0)  # a dwell list (units of the shortest)
    tau_base = standardized_noise(p, base, poisson)
    expected = (1 - zp @ zq) / np.sqrt(np.sum((zp - zq) ** 2 * tau_base**2 / dwell))
    assert d(base * dwell) == pytest.approx(expected, rel=1e-12)
    # the old single-i0 model (shortest dwell) underestimates D; the longest dwell everywhere overestimates it
    assert d1 < d(base * dwell) < d(6 * base)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.full(5, 1e4), r"5 values for 60 energies"),
        (np.r_[np.full(59, 1e4), 0.0], r"i0_counts\[59\] = 0\.0"),
        (np.r_[-1.0, np.full(59, 1e4)], r"i0_counts\[0\] = -1\.0"),
        (np.r_[np.full(30, 1e4), np.nan, np.full(29, 1e4)], r"i0_counts\[30\] = nan"),
        (np.r_[np.full(59, 1e4), np.inf], r"i0_counts\[59\] = inf"),
        (0.0, r"i0_counts = 0\.0"),
        (np.ones((2, 60)), r"\(2, 60\) values for 60 energies"),
    ],
)
def test_bad_incident_counts_are_named(library, energies, noise, value, match) -> None:
    refs = np.vstack(list(library.values()))
    with pytest.raises(ValueError, match=match):
        sites_from_library(energies, refs, list(library), i0_counts=value, noise=noise, n_draws=10)
    with pytest.raises(ValueError, match=match):
        standardized_noise(0.4 + refs, value, noise)
    with pytest.raises(ValueError, match=match):
        Sites(energies, 0.4 + refs, tuple(library), ("library",) * len(library), value, noise)


def test_photon_coefficients_per_energy(noise) -> None:
    i0 = np.array([1e4, 3e4, 1e4, 5e4])
    coef = photon_coefficients(noise, i0)
    assert coef.shape == (3, 4)
    for i, v in enumerate(i0):
        assert np.allclose(coef[:, i], photon_coefficients(noise, float(v)), rtol=1e-12)
    mu = np.linspace(0.1, 2.5, 4)
    direct = noise.var_absorbance(i0, mu)
    assert np.allclose(coef[0] + coef[1] * np.exp(mu) + coef[2] * np.exp(2 * mu), direct, rtol=1e-9)


@pytest.fixture(scope="module")
def dwell_case(library, energies, noise, noisy_absorbance):
    """Sites and noisy mixture pixels measured with a per-energy dwell (10× at every second energy)."""
    i0 = np.where(np.arange(energies.size) % 2 == 0, 4e3, 4e4)
    refs = np.vstack(list(library.values()))
    sites = sites_from_library(energies, refs, list(library), i0_counts=i0, noise=noise, n_draws=800, seed=1)
    rng = np.random.default_rng(5)
    w = rng.dirichlet(np.full(6, 0.3), size=2000)
    mu = (w @ sites.mu_t[:6]) * rng.uniform(0.6, 1.4, size=(2000, 1))
    x = noisy_absorbance(mu, i0[None, :], noise).T.reshape(-1, 40, 50)
    return sites, x, i0


def test_confidence_uses_each_energys_noise(dwell_case) -> None:
    sites, x, i0 = dwell_case
    a = StreamingAssigner(sites, (40, 50), n_threads=2, chunk_pixels=333)
    for i, frame in enumerate(x):
        a.update(frame, i)
    result = a.finalize()
    a.close()
    pix = x.reshape(x.shape[0], -1).T
    rng = np.random.default_rng(1)
    for p in rng.choice(pix.shape[0], 25, replace=False):
        scores = sites.z @ pix[p]
        best = int(np.argmax(scores))
        other = sites.groups != sites.groups[best]
        second = np.flatnonzero(other)[np.argmax(scores[other])]
        model = pix[p].mean() + scores[best] * sites.z[best]
        var = sites.noise.var_absorbance(i0, model)  # each energy with its own incident counts
        margin = (scores[best] - scores[second]) / np.sqrt(
            np.sum((sites.z[best] - sites.z[second]) ** 2 * var)
        )
        assert result.confidence.ravel()[p] == pytest.approx(margin, rel=0.01)


def test_novelty_false_alarms_stay_near_one_percent_with_a_dwell_list(library, energies, noise,
                                                                      noisy_absorbance) -> None:  # fmt: skip
    i0 = np.where(np.arange(energies.size) % 2 == 0, 4e3, 4e4)
    site = 0.4 + library["Fe2O3_rt_01"]
    x = noisy_absorbance(np.tile(site * 1.1, (2000, 1)), i0[None, :], noise, seed=3).T.reshape(-1, 40, 50)
    rates = {}
    for name, counts in (("per-energy", i0), ("shortest", float(i0.min()))):
        sites = Sites(energies, site[None], ("hematite",), ("library",), counts, noise)
        a = StreamingAssigner(sites, (40, 50), n_threads=1)
        for i, frame in enumerate(x):
            a.update(frame, i)
        rates[name] = a.finalize().novel.mean()
        a.close()
    assert rates["per-energy"] < 0.04  # about the 1 % false-alarm rate of Φ⁻¹(0.99)
    assert rates["shortest"] == 0.0  # the old model thinks the data noisier than it is: novelty goes blind


def test_equal_per_energy_values_reproduce_the_scalar_path(
    library, energies, noise, noisy_absorbance
) -> None:
    refs = np.vstack(list(library.values()))
    kw = {"noise": noise, "n_draws": 300, "seed": 2}
    scalar = sites_from_library(energies, refs, list(library), i0_counts=2e4, **kw)
    vector = sites_from_library(energies, refs, list(library), i0_counts=np.full(energies.size, 2e4), **kw)
    assert np.array_equal(scalar.mu_t, vector.mu_t) and np.array_equal(scalar.groups, vector.groups)
    x = noisy_absorbance(np.tile(scalar.mu_t[7], (500, 1)), 2e4, noise).T.reshape(-1, 20, 25)
    out = []
    for s in (scalar, vector):
        result = cluster_stack(ArrayStack(x.astype(np.float32)), s, denoise=False, discover=False)
        out.append(result)
    assert np.array_equal(out[0].raw_labels, out[1].raw_labels)
    assert np.allclose(out[0].confidence, out[1].confidence, rtol=1e-6)
    assert np.array_equal(out[0].novel, out[1].novel)


def test_use_sites_swaps_in_sites_from_the_same_references(dwell_case, library, energies, noise) -> None:
    sites, x, i0 = dwell_case
    a = StreamingAssigner(sites, (40, 50), n_threads=1)
    for i, frame in enumerate(x):
        a.update(frame, i)
    refs = np.vstack(list(library.values()))
    rebuilt = sites_from_library(energies, refs, list(library), i0_counts=i0 * 1.5, noise=noise, n_draws=800,
                                 seed=1)  # fmt: skip
    a.use_sites(rebuilt)
    assert a.finalize().sites is rebuilt
    stranger = Sites(energies, np.sin(energies / 3.0)[None] + 2.0, ("x",), ("data",), 1e4, noise)
    with pytest.raises(ValueError, match="outside the accumulated subspace"):
        a.use_sites(stranger)
    a.close()


def test_phantom_phases_merged_by_one_i0_are_separated_per_energy() -> None:
    """The demo's design at 0.05 s: one i0 (shortest dwell) merges hematite, magnetite and goethite."""
    from xbeam_bluesky.devices.sim.phantom import Phantom

    noise = PhotonNoiseModel(gain=9.31, offset=4.0)  # the simulated camera
    names = ["Fe2O3_rt_01", "Fe3O4_rt_01", "larch_FeDem_Goerthite", "larch_ALS1032_Olivine_Fo0", "FeS2_rt_01",
             "Fe_metal_rt_01"]  # fmt: skip
    lib = aligned_library(load_library(), DEMO_ENERGIES)
    refs = np.vstack([lib.matrix[lib.names.index(n)] for n in names])
    phantom = Phantom(width_mm=2.0, height_mm=2.0, seed=0, domain_size_um=150, minority_fractions=())
    shape, pixel = (64, 64), 8.0
    mu = phantom.absorbance(DEMO_ENERGIES, (0.0, 0.0), shape, pixel)
    truth = phantom.labels((0.0, 0.0), shape, pixel)
    rng = np.random.default_rng(0)
    i0 = DEMO_I0[:, None, None]
    counts = noise.sample_counts(i0 * np.exp(-mu), rng)
    flat = noise.sample_counts(np.broadcast_to(i0, mu.shape), rng)
    x = np.log(np.maximum(flat, 1.0) / np.maximum(counts, 1.0)).astype(np.float32)
    phases = {name: phantom.phase_names.index(name) + 1 for name in ("hematite", "magnetite", "goethite")}
    assert all((truth == k).mean() > 0.1 for k in phases.values())

    def majority(result, k):
        values, n = np.unique(result.labels[truth == k], return_counts=True)
        return values[np.argmax(n)], n.max() / n.sum()

    kw = {"noise": noise, "n_draws": 500, "mu_offset": 0.4}
    old = cluster_stack(ArrayStack(x), sites_from_library(DEMO_ENERGIES, refs, names, i0_counts=DEMO_I0.min(),
                                                          **kw), discover=False)  # fmt: skip
    assert len({majority(old, k)[0] for k in phases.values()}) == 1  # all three in one cluster
    new = cluster_stack(ArrayStack(x), sites_from_library(DEMO_ENERGIES, refs, names, i0_counts=DEMO_I0, **kw),
                        discover=False)  # fmt: skip
    labels = {name: majority(new, k) for name, k in phases.items()}
    assert len({label for label, _ in labels.values()}) == 3
    assert all(share > 0.9 for _, share in labels.values())
    # area fractions: magnetite and goethite clusters match the phantom; hematite's cluster also holds the
    # 1:1 hematite+magnetite mixture domains (within the noise of a hematite-cluster site at this dose)
    mix = phantom.phase_names.index("hematite+magnetite") + 1
    expected = {
        "hematite": np.isin(truth, [phases["hematite"], mix]).mean(),
        "magnetite": (truth == phases["magnetite"]).mean(),
        "goethite": (truth == phases["goethite"]).mean(),
    }
    for name, (label, _) in labels.items():
        assert (new.labels == label).mean() == pytest.approx(expected[name], abs=0.015), name


def test_missing_energies_use_the_counts_of_the_energies_received(dwell_case) -> None:
    sites, x, i0 = dwell_case
    received = np.setdiff1d(np.arange(x.shape[0]), [3, 10, 11, 40])
    a = StreamingAssigner(sites, (40, 50), n_threads=1)
    for i in received:
        a.update(x[i], i)
    result = a.finalize()
    a.close()
    assert np.array_equal(result.energies_used, received)
    pix = x[received].reshape(received.size, -1).T
    z = standardize(sites.mu_t[:, received])
    for p in np.random.default_rng(2).choice(pix.shape[0], 10, replace=False):
        scores = z @ pix[p]
        best = int(np.argmax(scores))
        other = sites.groups != sites.groups[best]
        second = np.flatnonzero(other)[np.argmax(scores[other])]
        var = sites.noise.var_absorbance(i0[received], pix[p].mean() + scores[best] * z[best])
        margin = (scores[best] - scores[second]) / np.sqrt(np.sum((z[best] - z[second]) ** 2 * var))
        assert result.confidence.ravel()[p] == pytest.approx(margin, rel=0.01)
