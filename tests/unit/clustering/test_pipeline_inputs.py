"""ClusteringPipeline: bad input gives a clear error naming it; dead pixels are masked and counted."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import ArrayStack, ClusteringPipeline, matched_scores, pipeline_from_library
from xbeam_bluesky.spectra import PhotonNoiseModel

NOISE = PhotonNoiseModel(gain=1.0, offset=0.0)


@pytest.fixture
def stack(energies, library, noisy_absorbance):
    names = list(library)[:3]
    truth = np.repeat(np.arange(3), 40 * 40 // 3 + 1)[: 40 * 40].reshape(40, 40)
    spectra = np.stack([library[n] for n in names])
    mu = (0.4 + 0.8 * spectra[truth]).transpose(2, 0, 1)
    return noisy_absorbance(mu, 1e4, NOISE).astype(np.float32), truth


def test_clusters_and_counts_dead_pixels(stack, energies, library):
    data, truth = stack
    data = data.copy()
    data[:, 0, :5] = 0.0  # dead pixels: constant spectra
    result = pipeline_from_library(energies, 1e4, NOISE, library).cluster([ArrayStack(data)])
    assert result.masked[0, :5].all() and result.labels[0, :5].tolist() == [0] * 5
    assert result.summary()["masked_pixels"] >= 5
    assert matched_scores(truth, result.labels, 3).macro_f1 > 0.99


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.__setitem__(3, np.nan), r"frame\(s\) \[3\].*no finite value"),
        (lambda d: d.__setitem__(7, 0.0), r"frame\(s\) \[7\].*same value"),
        (lambda d: d.__imul__(1000.0), "raw counts or a scaled absorbance"),
    ],
)
def test_bad_stacks_are_named(stack, energies, edit, message):
    data = stack[0].copy()
    edit(data)
    with pytest.raises(ValueError, match=message):
        pipeline_from_library(energies, 1e4, NOISE).cluster([ArrayStack(data)])


def test_bad_setup_is_named(energies, library):
    with pytest.raises(ValueError, match="need at least 3"):
        ClusteringPipeline(energies[:1], 1e4, NOISE)
    lib = np.stack(list(library.values()))
    lib[0, 5] = np.nan
    with pytest.raises(ValueError, match="not covering the energies"):
        ClusteringPipeline(energies, 1e4, NOISE, tuple(library), lib)
    with pytest.raises(ValueError, match="i0_counts"):
        ClusteringPipeline(energies, -1.0, NOISE)


def test_pixels_without_the_edge_are_no_fe_and_not_clustered(stack, energies, library, noisy_absorbance):
    """A band of pixels holding only a smooth non-resonant background (no Fe edge) becomes "no Fe"; the three
    phases elsewhere keep their partition and no chemical cluster reaches into the band."""
    _, truth = stack
    names = list(library)[:3]
    spectra = np.stack([library[n] for n in names])
    mu = (0.4 + 0.8 * spectra[truth]).transpose(2, 0, 1)
    band = np.zeros(truth.shape, bool)
    band[:, 30:] = True
    background = 0.4 + 0.3 * (energies.min() / energies) ** 3  # matrix absorption only, OD
    mu[:, band] = background[:, None]
    data = noisy_absorbance(mu, 1e4, NOISE).astype(np.float32)
    pipeline = pipeline_from_library(energies, 1e4, NOISE, library, element="Fe")
    result = pipeline.cluster([ArrayStack(data)])
    names_of = np.array(["unassigned", *result.cluster_names])[result.labels]
    assert np.mean(names_of[band] == "no Fe") > 0.99
    assert np.mean(names_of[~band] == "no Fe") < 0.01
    assert matched_scores(truth[~band], result.labels[~band], 3).macro_f1 > 0.99
    record = result.summary()["absorber_test"]
    assert record["class"] == "no Fe" and record["no_absorber_pixels"] == int((names_of == "no Fe").sum())


def test_three_energy_map_removes_only_the_constant(energies, library, noisy_absorbance, caplog):
    """A three-energy valence map (below, on and above the edge) leaves one degree of freedom after standardization:
    the straight-line baseline would take it, so the pipeline removes a constant only, says so and records it —
    and still separates phases whose edges differ."""
    names = list(library)[:3]
    pick = np.searchsorted(energies, [7110.0, 7124.0, 7160.0])
    spectra = np.stack([library[n][pick] for n in names])
    shape_z = spectra - spectra.mean(axis=1, keepdims=True)
    shape_z /= np.linalg.norm(shape_z, axis=1, keepdims=True)
    distinct = [0] + [i for i in (1, 2) if np.min(np.linalg.norm(shape_z[i] - shape_z[:i], axis=1)) > 0.05]
    truth = np.repeat(np.arange(len(distinct)), 40 * 40 // len(distinct) + 1)[: 40 * 40].reshape(40, 40)
    jump = np.where(np.arange(40)[None, :] < 4, 0.0, 0.8) * np.ones((40, 1))  # four columns hold no Fe
    mu = 0.4 + jump * spectra[distinct][truth].transpose(2, 0, 1)
    data = noisy_absorbance(mu, 1e5, NOISE).astype(np.float32)
    refs = spectra[distinct]
    with caplog.at_level("WARNING"):
        pipeline = ClusteringPipeline(
            energies[pick], 1e5, NOISE, tuple(np.array(names)[distinct]), refs, discover=False, denoise=False,
            element="Fe",
        )  # fmt: skip
        result = pipeline.cluster([ArrayStack(data)])
    assert "removing degree 0 instead" in caplog.text and "fitting 0" in caplog.text
    assert result.metadata["baseline_degree_removed"] == 0
    assert len(distinct) >= 2
    names_map = np.array(["masked", *result.sites.names, *result.class_names])[result.labels]
    assert np.mean(names_map[:, :4] == "no Fe") > 0.99 and np.mean(names_map[:, 4:] == "no Fe") < 0.01
    fe = np.s_[:, 4:]
    assert matched_scores(truth[fe], result.labels[fe], len(distinct)).macro_f1 > 0.95
