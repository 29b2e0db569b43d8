"""The streaming assigner equals the published batch assignment, handles bad frames, and its statistics."""

from __future__ import annotations

import numpy as np
import pytest

from xbeam_bluesky.clustering import (
    FrameCorrection,
    Sites,
    StreamingAssigner,
    assign_spectra,
    sites_from_library,
    standardize,
)

SHAPE = (40, 50)


@pytest.fixture(scope="module")
def sites(library, energies, noise) -> Sites:
    refs = np.vstack(list(library.values()))
    return sites_from_library(energies, refs, list(library), i0_counts=2e4, noise=noise, n_draws=800, seed=1)


@pytest.fixture(scope="module")
def stack(sites, noise, noisy_absorbance) -> np.ndarray:
    """Pixels drawn as random convex mixtures of the references with thickness variation and noise."""
    rng = np.random.default_rng(5)
    n = SHAPE[0] * SHAPE[1]
    refs = sites.mu_t[:6]
    w = rng.dirichlet(np.full(6, 0.3), size=n)
    mu = (w @ refs) * rng.uniform(0.6, 1.4, size=(n, 1))
    return noisy_absorbance(mu, 2e4, noise).T.reshape(-1, *SHAPE)


def _stream(sites, frames, order, **kw) -> StreamingAssigner:
    a = StreamingAssigner(sites, SHAPE, buffer_frames=7, chunk_pixels=333, n_threads=2, **kw)
    for i in order:
        a.update(frames[i], i)
    return a


def test_streaming_equals_published_batch(sites, stack) -> None:
    order = np.random.default_rng(0).permutation(stack.shape[0])  # energies out of order
    a = _stream(sites, stack.astype(np.float32), order)
    result = a.finalize()
    expected = assign_spectra(stack.reshape(stack.shape[0], -1).T, sites).reshape(SHAPE)
    assert np.array_equal(result.labels, expected)
    assert len(np.unique(expected)) > 3
    # the per-pixel projections equal the direct ones up to float32 rounding
    coords, basis = a.coordinates()
    direct = basis @ stack.reshape(stack.shape[0], -1)
    assert np.allclose(coords, direct, rtol=1e-5, atol=1e-4)
    a.close()


@pytest.mark.parametrize("per_energy_flat", [False, True])
def test_raw_counts_with_dark_and_flat(sites, stack, per_energy_flat) -> None:
    rng = np.random.default_rng(8)
    dark = rng.uniform(90, 110, SHAPE)
    scale = rng.uniform(0.9, 1.1, (stack.shape[0], 1, 1)) if per_energy_flat else np.ones((1, 1, 1))
    flat = dark + 3e4 * rng.uniform(0.8, 1.0, SHAPE) * scale  # beam intensity varying with energy
    counts = np.round(dark + (flat - dark) * np.exp(-stack)).astype(np.uint16)
    correction = FrameCorrection(dark, flat if per_energy_flat else flat[0])
    a = _stream(sites, counts, range(stack.shape[0]), correction=correction)
    mu = -np.log((counts - dark) / (flat - dark))  # the correction done by hand, float64
    expected = assign_spectra(mu.reshape(mu.shape[0], -1).T, sites).reshape(SHAPE)
    assert np.mean(a.finalize().labels == expected) > 0.995  # float32 logarithm vs float64
    a.close()


def test_missing_frames_and_provisional_labels(sites, stack) -> None:
    keep = np.arange(0, stack.shape[0], 2)
    a = _stream(sites, stack, keep)
    sub = Sites(sites.energies[keep], sites.mu_t[:, keep], sites.names, sites.origin, sites.i0_counts,
                sites.noise, sites.groups)  # fmt: skip
    expected = assign_spectra(stack[keep].reshape(keep.size, -1).T, sub).reshape(SHAPE)
    assert np.array_equal(a.labels_now(), expected)
    result = a.finalize()
    assert np.array_equal(result.labels, expected)
    assert np.array_equal(result.energies_used, keep)
    a.close()


def test_bad_pixels_are_masked_and_the_rest_assigned(sites, stack) -> None:
    frames = stack.astype(np.float32).copy()
    frames[3, 0, 0] = np.nan
    frames[7, 1, 1] = np.inf
    frames[:, 2, 2] = 0.0  # dead pixel: flat spectrum
    a = _stream(sites, frames, range(frames.shape[0]))
    result = a.finalize()
    assert result.labels[0, 0] == result.labels[1, 1] == result.labels[2, 2] == 0
    assert result.masked.sum() == 3
    expected = assign_spectra(stack.reshape(stack.shape[0], -1).T, sites).reshape(SHAPE)
    ok = ~result.masked
    assert np.array_equal(result.labels[ok], expected[ok])
    a.close()


def test_saturated_and_dark_pixels_with_correction(sites) -> None:
    dark, flat = np.full(SHAPE, 100.0), np.full(SHAPE, 30000.0)
    a = StreamingAssigner(sites, SHAPE, correction=FrameCorrection(dark, flat), n_threads=1)
    rng = np.random.default_rng(0)
    for i in range(sites.n_energies):
        frame = rng.integers(5000, 20000, SHAPE).astype(np.uint16)
        frame[0, 0] = 65535 if i == 4 else frame[0, 0]  # saturated once
        frame[1, 0] = 50  # below the dark level: no transmitted signal
        a.update(frame, i)
    result = a.finalize()
    assert result.masked[0, 0] and result.masked[1, 0] and result.masked.sum() == 2
    a.close()


def test_bad_frames_raise_clear_errors(sites) -> None:
    a = StreamingAssigner(sites, SHAPE, n_threads=1)
    with pytest.raises(ValueError, match=r"energy index 3: shape \(4, 5\)"):
        a.update(np.zeros((4, 5)), 3)
    with pytest.raises(ValueError, match="outside"):
        a.update(np.zeros(SHAPE), sites.n_energies)
    a.update(np.ones(SHAPE), 2)
    with pytest.raises(ValueError, match="already added"):
        a.update(np.ones(SHAPE), 2)
    with pytest.raises(ValueError, match="need at least 3"):
        a.finalize()
    a.close()


def test_confidence_is_the_noise_margin(sites, stack) -> None:
    a = _stream(sites, stack, range(stack.shape[0]))
    result = a.finalize()
    x = stack.reshape(stack.shape[0], -1).T
    z = sites.z
    rng = np.random.default_rng(1)
    for p in rng.choice(x.shape[0], 25, replace=False):
        scores = z @ x[p]
        best = int(np.argmax(scores))
        other = sites.groups != sites.groups[best]
        second = np.flatnonzero(other)[np.argmax(scores[other])]
        model = x[p].mean() + scores[best] * z[best]  # the best-site fit of the pixel
        var = sites.noise.var_absorbance(sites.i0_counts, model)
        margin = (scores[best] - scores[second]) / np.sqrt(np.sum((z[best] - z[second]) ** 2 * var))
        assert result.confidence.ravel()[p] == pytest.approx(margin, rel=0.01)


def test_novel_flags_unexplained_pixels(sites, library, noise, energies, noisy_absorbance) -> None:
    only_two = Sites(energies, sites.mu_t[:2], sites.names[:2], ("library",) * 2, sites.i0_counts, noise)
    mu = np.vstack([np.tile(only_two.mu_t[0], (1000, 1)), np.tile(0.5 + library["FeS2_rt_01"], (1000, 1))])
    x = noisy_absorbance(mu * 1.1, 2e4, noise, seed=3).T.reshape(-1, 40, 50)
    a = StreamingAssigner(only_two, (40, 50), n_threads=1)
    for i, frame in enumerate(x):
        a.update(frame, i)
    novel = a.finalize().novel.ravel()
    assert novel[1000:].mean() > 0.95  # pyrite is explained by neither site
    assert novel[:1000].mean() < 0.04  # the site itself: about the 1 % false-alarm rate of Φ⁻¹(0.99)
    a.close()


def test_streaming_rank_is_low(sites) -> None:
    a = StreamingAssigner(sites, SHAPE, n_threads=1)
    assert len(sites) > 20
    assert a.rank <= 6 + 2  # references + constant + background shape
    a.close()
    z = standardize(sites.mu_t)
    assert np.linalg.matrix_rank(z, tol=1e-8) <= 6


def test_a_tile_without_any_valid_pixel_is_all_unassigned(sites, stack) -> None:
    """A fully saturated or dead tile gives label 0 everywhere instead of failing the whole map."""
    frames = np.zeros_like(stack, dtype=np.float32)  # every pixel dead (flat spectrum)
    a = _stream(sites, frames, range(frames.shape[0]))
    result = a.finalize()
    assert not result.labels.any() and result.masked.all()
    assert not result.novel.any() and not result.confidence.any()
    a.close()


def test_a_block_of_frames_equals_the_frames_one_by_one(sites, stack) -> None:
    frames = stack.astype(np.float32)
    frames[3, 2, 7] = np.nan  # a dead pixel in one frame
    one = _stream(sites, frames, range(frames.shape[0]))
    block = StreamingAssigner(sites, SHAPE, buffer_frames=7, chunk_pixels=333, n_threads=2)
    order = np.random.default_rng(1).permutation(frames.shape[0])
    block.add_block(frames[order[:20]], order[:20])  # two blocks, energies out of order
    block.add_block(frames[order[20:]], order[20:])
    a, b = one.finalize(), block.finalize()
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.masked, b.masked) and b.masked[2, 7]
    assert np.array_equal(a.novel, b.novel)
    np.testing.assert_allclose(a.confidence, b.confidence, rtol=1e-4, atol=1e-4)
    valid = ~a.masked.ravel()  # a masked pixel's partial sums depend on how its frames were batched
    np.testing.assert_allclose(
        one.coordinates()[0][:, valid], block.coordinates(np.float32)[0][:, valid], rtol=1e-5, atol=1e-4
    )
    assert not np.isnan(frames[3, 2, 6]) and np.isnan(frames[3, 2, 7])  # the caller's frames are not changed
    for assigner in (one, block):
        assigner.close()


def test_a_block_with_a_pixel_transform_equals_the_transformed_block(sites, stack, energies) -> None:
    from xbeam_bluesky.clustering import ArrayStack
    from xbeam_bluesky.clustering._baseline import BaselineRemoved, baseline_basis

    source = BaselineRemoved(ArrayStack(stack.astype(np.float32)), baseline_basis(energies, 1))
    direct = StreamingAssigner(sites, SHAPE, n_threads=2)
    direct.add_block(source.read_rows(0, SHAPE[0]))
    fused = StreamingAssigner(sites, SHAPE, n_threads=2)
    fused.add_block(source.raw.read_rows(0, SHAPE[0]), transform=source.pixel_transform)
    assert np.array_equal(direct.finalize().labels, fused.finalize().labels)
    np.testing.assert_allclose(direct.coordinates()[0], fused.coordinates()[0], rtol=1e-5, atol=1e-5)
    for assigner in (direct, fused):
        assigner.close()


def test_bad_blocks_raise_clear_errors(sites, stack) -> None:
    a = StreamingAssigner(sites, SHAPE, n_threads=1)
    frames = stack.astype(np.float32)
    with pytest.raises(ValueError, match="frames of shape"):
        a.add_block(frames[:, :5])
    with pytest.raises(ValueError, match="2 energy indices for 3 frames"):
        a.add_block(frames[:3], [0, 1])
    with pytest.raises(ValueError, match="repeat an energy"):
        a.add_block(frames[:2], [4, 4])
    with pytest.raises(ValueError, match="outside"):
        a.add_block(frames[:1], [sites.n_energies])
    a.update(frames[0], 0)
    with pytest.raises(ValueError, match="energy_index 0: a frame for this energy was already added"):
        a.add_block(frames[:2])
    a.close()
    counts = StreamingAssigner(
        sites, SHAPE, correction=FrameCorrection(np.zeros(SHAPE), np.ones(SHAPE)), n_threads=1
    )
    with pytest.raises(ValueError, match="transform needs absorbance"):
        counts.add_block(frames[:2], transform=lambda x, out=None: x)
    counts.close()
