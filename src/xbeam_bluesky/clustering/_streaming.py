"""Per-frame streaming assignment of pixels to sites, in a low-rank subspace of the site spectra."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from ._noise_sums import NoiseSums, photon_coefficients
from ._separation import ACCEPT_THRESHOLD, standardize
from ._sites import Sites

#: A function of a chunk of pixel spectra (n_frames, pixels) float32 writing its result into ``out``.
PixelTransform = Callable[..., NDArray[np.float32]]


@dataclass(frozen=True)
class FrameCorrection:
    """Dark and flat correction turning raw counts into absorbance μt = −ln((I − dark) / (flat − dark)).

    Attributes
    ----------
    dark
        Dark image (counts), shape (ny, nx).
    flat
        Flat (open-beam) image (counts), shape (ny, nx) for all energies, or (n_energies, ny, nx).
    saturation
        Raw counts at or above this value mark the pixel as saturated (masked); ``None`` disables it.
    """

    dark: NDArray[np.float32]
    flat: NDArray[np.float32]
    saturation: float | None = 65535.0

    def __post_init__(self) -> None:
        dark = np.ascontiguousarray(self.dark, dtype=np.float32)
        flat = np.ascontiguousarray(self.flat, dtype=np.float32)
        if dark.ndim != 2:
            raise ValueError(f"FrameCorrection: dark must be 2-D (ny, nx), got shape {dark.shape}")
        if flat.shape[-2:] != dark.shape or flat.ndim not in (2, 3):
            raise ValueError(
                f"FrameCorrection: flat must be (ny, nx) or (n_energies, ny, nx) matching dark {dark.shape}, "
                f"got {flat.shape}"
            )
        object.__setattr__(self, "dark", dark)
        object.__setattr__(self, "flat", flat)


@dataclass(frozen=True)
class Assignment:
    """Result of assigning every pixel of one tile to a site.

    Attributes
    ----------
    labels
        Cluster label per pixel (1..n_clusters, the group of the best site), 0 = masked/dead/unassigned;
        shape (ny, nx), int32.
    confidence
        D margin between the best site and the best site of any other cluster, in units of the pixel's
        photon noise (float32; 0 where label is 0, +inf with a single cluster).
    novel
        True where no site explains the pixel within the noise (χ² excess above the acceptance threshold).
    masked
        True where a frame had NaN/Inf, a saturated or dead pixel, or the spectrum is flat.
    sites
        The sites the labels refer to.
    energies_used
        Indices of the energies that contributed (all of them unless frames were missing).
    """

    labels: NDArray[np.int32]
    confidence: NDArray[np.float32]
    novel: NDArray[np.bool_]
    masked: NDArray[np.bool_]
    sites: Sites
    energies_used: NDArray[np.intp]


def _subspace_basis(z: NDArray[np.float64], background: NDArray[np.float64]) -> NDArray[np.float64]:
    """Orthonormal rows spanning the site vectors, the constant vector and the background shapes."""
    n_e = z.shape[1]
    stack = np.vstack([np.full((1, n_e), 1.0 / np.sqrt(n_e)), z, background])
    _, s, vt = np.linalg.svd(stack, full_matrices=False)
    rank = int(np.sum(s > s[0] * 1e-9))
    return vt[:rank]


class StreamingAssigner:
    """Assign pixels to sites while energy frames arrive, one frame at a time, in any order.

    Because sites are zero-mean and unit-norm, the published assignment argmax_k z_k·x equals
    argmax_k Σ_i z_k,i x_i, a sum over energy frames. The site vectors span a subspace of rank
    r ≪ K (library mixtures), so instead of K sums per pixel the assigner keeps the r projections
    onto an orthonormal basis U of span{z_k} ∪ {1} plus Σx² per pixel; scores z_k·x = C_k·(U x)
    are formed only when labels are asked for. Frames are buffered and added with one matrix
    product per buffer, in pixel chunks shared by a thread pool.

    Parameters
    ----------
    sites
        Sites to assign to (their energy grid defines ``energy_index``).
    shape
        Frame shape (ny, nx) in pixels.
    correction
        Dark/flat correction for raw-count frames; ``None`` when frames are already absorbance μt.
    buffer_frames
        Frames buffered before one accumulation pass.
    chunk_pixels
        Pixels per work item.
    n_threads
        Worker threads for the accumulation.
    background_powers
        Smooth non-resonant background shapes (E₀/E)ⁿ, E₀ the first energy, allowed on top of a site
        before a pixel counts as novel (they never change the labels).
    """

    def __init__(
        self,
        sites: Sites,
        shape: tuple[int, int],
        *,
        correction: FrameCorrection | None = None,
        buffer_frames: int = 16,
        chunk_pixels: int = 32768,
        n_threads: int = 2,
        background_powers: tuple[float, ...] = (3.0,),
    ) -> None:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape: expected (ny, nx) with positive sizes, got {shape}")
        if correction is not None and correction.dark.shape != tuple(shape):
            raise ValueError(f"correction: dark shape {correction.dark.shape} does not match frames {shape}")
        if (
            correction is not None
            and correction.flat.ndim == 3
            and correction.flat.shape[0] != sites.n_energies
        ):
            raise ValueError(f"correction: {correction.flat.shape[0]} flats for {sites.n_energies} energies")
        self.sites = sites
        self.shape = (int(shape[0]), int(shape[1]))
        self.n_pixels = self.shape[0] * self.shape[1]
        self.correction = correction
        e = sites.energies
        self._background = np.array([(e[0] / e) ** n for n in background_powers]).reshape(-1, e.size)
        with threadpool_limits(1, user_api="blas"):  # small SVD: BLAS threads only contend
            self._basis = _subspace_basis(sites.z, self._background)
        self._basis32 = self._basis.astype(np.float32)
        self._acc = np.zeros((self._basis.shape[0], self.n_pixels), dtype=np.float32)
        self._sq = np.zeros(self.n_pixels)
        self._bad = np.zeros(self.n_pixels, dtype=bool)
        self._received = np.zeros(sites.n_energies, dtype=bool)
        self._buffer_frames = int(buffer_frames)
        self._buffer: NDArray | None = None
        self._pending: list[int] = []
        self._chunk_pixels = int(chunk_pixels)
        self._chunks = [
            (s, min(s + chunk_pixels, self.n_pixels)) for s in range(0, self.n_pixels, chunk_pixels)
        ]
        self._pool = ThreadPoolExecutor(max(1, n_threads), thread_name_prefix="xbeam-cluster")
        self._log_flat = None
        if correction is not None and correction.flat.ndim == 2:
            with np.errstate(all="ignore"):
                self._log_flat = np.log(correction.flat - correction.dark).ravel()
        self._lock = threading.Lock()
        self._local = threading.local()

    def use_sites(self, sites: Sites) -> None:
        """Replace the sites (e.g. rebuilt with measured per-energy incident counts) without losing frames.

        The accumulated projections stay valid when every new site lies in the span of the basis, which holds
        for sites built from the same references (mixtures of them); labels, confidence and novelty are then
        computed against ``sites``.

        Raises
        ------
        ValueError
            If the energies differ or a new site is outside the accumulated subspace.
        """
        if sites.energies.shape != self.sites.energies.shape or not np.allclose(
            sites.energies, self.sites.energies
        ):
            raise ValueError("use_sites: the new sites are on another energy grid")
        residual = sites.z - (sites.z @ self._basis.T) @ self._basis
        worst = float(np.abs(residual).max(initial=0.0))
        if worst > 1e-6:
            raise ValueError(
                f"use_sites: a new site is outside the accumulated subspace (residual {worst:.2g}); "
                "assign the frames again instead"
            )
        with self._lock:
            self.sites = sites

    @property
    def rank(self) -> int:
        """Dimension r of the accumulated subspace (per-pixel numbers kept: r + 1)."""
        return self._basis.shape[0]

    @property
    def n_received(self) -> int:
        """Number of energy frames accumulated or buffered so far."""
        return int(self._received.sum()) + len(self._pending)

    def update(self, frame: ArrayLike, energy_index: int) -> None:
        """Add one energy frame.

        Parameters
        ----------
        frame
            Raw counts (with a ``correction``) or absorbance μt, shape ``shape``.
        energy_index
            Index of the frame's energy on the sites' energy grid.

        Raises
        ------
        ValueError
            If the frame has the wrong shape, the index is out of range, or the energy was already added.
        """
        arr = np.asarray(frame)
        idx = int(energy_index)
        if arr.shape != self.shape:
            raise ValueError(f"frame for energy index {idx}: shape {arr.shape}, expected {self.shape}")
        if not 0 <= idx < self.sites.n_energies:
            raise ValueError(f"energy_index {idx} outside 0..{self.sites.n_energies - 1}")
        with self._lock:
            if self._received[idx] or idx in self._pending:
                raise ValueError(f"energy_index {idx}: a frame for this energy was already added")
            if self._buffer is None:
                dtype = np.float32 if arr.dtype.kind == "f" else arr.dtype
                self._buffer = np.empty((self._buffer_frames, self.n_pixels), dtype=dtype)
            self._buffer[len(self._pending)] = arr.reshape(-1)
            self._pending.append(idx)
            if len(self._pending) == self._buffer_frames:
                self._flush()

    def add_block(
        self,
        frames: ArrayLike,
        energy_indices: ArrayLike | None = None,
        *,
        transform: PixelTransform | None = None,
    ) -> None:
        """Add several energy frames at once (e.g. a stack's row block), without copying them into the buffer.

        Gives the same sums as :meth:`update` frame by frame (up to float32 rounding: one matrix product over
        all the frames instead of one per buffer of frames).

        Parameters
        ----------
        frames
            Raw counts (with a ``correction``) or absorbance μt, shape (n_frames, ny, nx) with (ny, nx) =
            ``shape``.
        energy_indices
            Index on the sites' energy grid of each frame, shape (n_frames,); ``None`` = 0, 1, …, n_frames − 1.
        transform
            Applied to each chunk of pixels (n_frames, pixels) float32 of absorbance before it is accumulated,
            e.g. :meth:`~xbeam_bluesky.clustering._baseline.BaselineRemoved.pixel_transform` (called as
            ``transform(chunk, out=work_array)``, in the worker threads); absorbance frames only (no
            ``correction``).

        Raises
        ------
        ValueError
            If the frames have the wrong shape, an index is out of range or repeated, an energy was already
            added, or a ``transform`` is given to an assigner of raw counts.
        """
        arr = np.asarray(frames)
        if transform is not None and self.correction is not None:
            raise ValueError(
                "add_block: a transform needs absorbance frames; this assigner corrects raw counts"
            )
        if arr.ndim != 3 or arr.shape[1:] != self.shape:
            raise ValueError(f"add_block: frames of shape {arr.shape}, expected (n_frames, {self.shape[0]}, "
                             f"{self.shape[1]})")  # fmt: skip
        idx = np.arange(arr.shape[0]) if energy_indices is None else np.asarray(energy_indices, dtype=np.intp)
        if idx.shape != (arr.shape[0],):
            raise ValueError(f"add_block: {idx.size} energy indices for {arr.shape[0]} frames")
        bad = idx[(idx < 0) | (idx >= self.sites.n_energies)]
        if bad.size:
            raise ValueError(f"energy_index {int(bad[0])} outside 0..{self.sites.n_energies - 1}")
        if np.unique(idx).size != idx.size:
            raise ValueError(f"add_block: energy indices {idx.tolist()} repeat an energy")
        if idx.size == 0:
            return
        with self._lock:
            seen = idx[self._received[idx] | np.isin(idx, self._pending)]
            if seen.size:
                raise ValueError(f"energy_index {int(seen[0])}: a frame for this energy was already added")
            self._flush()
            flat = arr.reshape(arr.shape[0], -1)
            # pixel chunks of the same work-array size as a buffer flush (n_frames × width float32)
            width = max(1024, self._chunk_pixels * self._buffer_frames // idx.size)
            chunks = [(s, min(s + width, self.n_pixels)) for s in range(0, self.n_pixels, width)]
            self._accumulate_all(flat, idx, chunks, transform)
            self._received[idx] = True

    def flush(self) -> None:
        """Accumulate buffered frames now (labels asked for later include them)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        idx = np.asarray(self._pending)
        assert self._buffer is not None
        self._accumulate_all(self._buffer, idx, self._chunks)
        self._received[idx] = True
        self._pending.clear()

    def _accumulate_all(
        self,
        frames: NDArray,
        idx: NDArray[np.intp],
        chunks: list[tuple[int, int]],
        transform: PixelTransform | None = None,
    ) -> None:
        """Add ``frames`` (≥ len(idx) rows, n_pixels columns; row j is energy ``idx[j]``) chunk by chunk."""
        u = np.ascontiguousarray(self._basis32[:, idx])
        # one BLAS thread per worker: the pool already uses the cores, nested BLAS threads only contend
        with threadpool_limits(1, user_api="blas"):
            list(self._pool.map(lambda c: self._accumulate(frames, c[0], c[1], idx, u, transform), chunks))

    def _scratch(
        self, n: int, width: int
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Per-thread work arrays (reused: no allocation per chunk)."""
        local = self._local
        blk = getattr(local, "blk", None)
        if blk is None or blk.size < n * width or local.proj.shape[1] < width:
            size = max(n * width, 0 if blk is None else blk.size)
            local.blk = np.empty(size, np.float32)
            local.tmp = np.empty(size, np.float32)
            local.proj = np.empty((self._basis.shape[0], width), np.float32)
        return (
            local.blk[: n * width].reshape(n, width),
            local.tmp[: n * width].reshape(n, width),
            local.proj[:, :width],
        )

    def _accumulate(
        self,
        frames: NDArray,
        s: int,
        e: int,
        idx: NDArray[np.intp],
        u: NDArray[np.float32],
        transform: PixelTransform | None = None,
    ) -> None:
        n = len(idx)
        blk, tmp, proj = self._scratch(n, e - s)
        corr = self.correction
        if transform is not None:
            blk = transform(np.asarray(frames[:n, s:e], dtype=np.float32), out=blk)
        elif corr is None and frames.dtype == np.float32:
            blk = frames[:n, s:e]  # absorbance read in place (never written)
        else:
            np.copyto(blk, frames[:n, s:e])  # to float32 in the reused work array
        bad = np.zeros(e - s, dtype=bool)
        with np.errstate(all="ignore"):
            if corr is not None:
                if corr.saturation is not None:
                    bad |= np.maximum.reduce(blk, axis=0) >= corr.saturation
                blk -= corr.dark.reshape(-1)[s:e]
                np.log(blk, out=blk)
                if self._log_flat is not None:
                    np.subtract(self._log_flat[s:e], blk, out=blk)
                else:
                    flat = corr.flat.reshape(corr.flat.shape[0], -1)[idx, s:e] - corr.dark.reshape(-1)[s:e]
                    np.subtract(np.log(flat), blk, out=blk)
        sq = np.add.reduce(np.square(blk, out=tmp), axis=0)
        np.matmul(u, blk, out=proj)  # column j of the product depends on pixel j only
        finite = np.isfinite(sq)  # any NaN/Inf frame value makes the pixel's sum non-finite
        if not finite.all():
            proj[:, ~finite] = 0.0
            sq[~finite] = 0.0
            bad |= ~finite
        self._acc[:, s:e] += proj
        self._sq[s:e] += sq
        if bad.any():
            self._bad[s:e] |= bad

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True)

    # ---------------------------------------------------------------- labels
    def _restricted(self) -> tuple[NDArray, NDArray, NDArray, NDArray]:
        """Basis algebra for the energies received so far.

        Returns T (coordinates = T @ acc in an orthonormal basis Q of the received energies), Q,
        the site coordinates C (K × r') and the coordinates w of the constant vector.
        """
        rec = np.flatnonzero(self._received)
        u_r = self._basis[:, rec]
        w_, s_, vt = np.linalg.svd(u_r, full_matrices=False)
        keep = s_ > s_[0] * 1e-9
        q = vt[keep]
        t = (w_[:, keep] / s_[keep]).T
        z_r = standardize(self.sites.mu_t[:, rec])
        return t, q, z_r @ q.T, q @ np.ones(len(rec))

    def coordinates(
        self, dtype: type[np.floating] = np.float64
    ) -> tuple[NDArray[np.floating], NDArray[np.float64]]:
        """Per-pixel coordinates of the spectra in an orthonormal basis of the received energies.

        Parameters
        ----------
        dtype
            Of the coordinates: float64, or float32 (half the memory; the accumulated sums are float32 anyway).

        Returns
        -------
        coords
            Shape (r', n_pixels), absorbance units.
        basis
            Orthonormal rows Q over the received energies, shape (r', n_received); x ≈ Qᵀ coords.
        """
        self.flush()
        t, q, _, _ = self._restricted()
        with threadpool_limits(1, user_api="blas"):
            if np.dtype(dtype) == np.float32:
                return t.astype(np.float32) @ self._acc, q
            return t @ self._acc.astype(np.float64), q

    def labels_now(self) -> NDArray[np.int32]:
        """Provisional labels from the energies received so far (final once all have arrived)."""
        self.flush()
        if not self._received.any():
            return np.zeros(self.shape, dtype=np.int32)
        t, _, c, w = self._restricted()
        n_rec = int(self._received.sum())
        out = np.zeros(self.n_pixels, dtype=np.int32)

        def chunk_labels(s: int, e: int) -> None:
            p = t @ self._acc[:, s:e].astype(np.float64)
            css = self._sq[s:e] - (w @ p) ** 2 / n_rec
            ok = ~self._bad[s:e] & (css > 1e-12 * n_rec)
            out[s:e] = np.where(ok, self.sites.groups[np.argmax(p.T @ c.T, axis=1)], 0)

        with threadpool_limits(1, user_api="blas"):
            list(self._pool.map(lambda ch: chunk_labels(*ch), self._chunks))
        return out.reshape(self.shape)

    def _background_coords(
        self, z_r: NDArray[np.float64], q: NDArray[np.float64], rec: NDArray[np.intp]
    ) -> list[NDArray[np.float64]]:
        """For each background shape, coordinates (K × r') of its part orthogonal to 1 and each site."""
        out = []
        for phi in self._background[:, rec]:
            phi = phi - phi.mean()
            per_site = phi[None, :] - (z_r @ phi)[:, None] * z_r
            norms = np.linalg.norm(per_site, axis=1, keepdims=True)
            per_site = np.where(norms > 1e-12, per_site / np.where(norms > 1e-12, norms, 1.0), 0.0)
            out.append(per_site @ q.T)
        return out

    def finalize(self, *, novel_threshold: float = ACCEPT_THRESHOLD) -> Assignment:
        """Labels, confidence (D margin) and novel flags from everything received.

        Missing energies are handled exactly: sites are re-standardized on the energies received.

        Parameters
        ----------
        novel_threshold
            A pixel whose residual from its best site exceeds the photon-noise expectation by more than
            this many standard deviations is flagged novel.
        """
        self.flush()
        rec = np.flatnonzero(self._received)
        if rec.size < 3:
            raise ValueError(f"finalize: only {rec.size} energy frames received; need at least 3")
        with threadpool_limits(1, user_api="blas"):
            t, q, c, w = self._restricted()
        z_r = c @ q  # restandardized sites on received energies, (K, n_rec)
        n_rec = rec.size
        c_bg = self._background_coords(z_r, q, rec)
        groups = self.sites.groups
        single = self.sites.n_clusters == 1
        same_group = groups[:, None] == groups[None, :]  # (K, K): site pairs of one cluster
        # pass 1: best site, best site of another cluster, amplitudes and residual per pixel
        n = self.n_pixels
        best, second = np.zeros(n, np.intp), np.zeros(n, np.intp)
        s_best, s_second = np.zeros(n), np.zeros(n)
        mean, rss = np.zeros(n), np.zeros(n)
        ok = np.zeros(n, bool)

        def first_pass(s: int, e: int) -> None:
            p = t @ self._acc[:, s:e].astype(np.float64)
            mean[s:e] = (w @ p) / n_rec
            css = self._sq[s:e] - mean[s:e] ** 2 * n_rec
            ok[s:e] = ~self._bad[s:e] & (css > 1e-12 * n_rec)
            scores = p.T.astype(np.float32) @ c32.T  # (pixels, K), contiguous along sites
            b = np.argmax(scores, axis=1)
            best[s:e], s_best[s:e] = b, np.einsum("rn,nr->n", p, c[b])  # the winner's score in float64
            if not single:
                scores[same_group[b]] = -np.inf
                b2 = np.argmax(scores, axis=1)
                second[s:e], s_second[s:e] = b2, np.einsum("rn,nr->n", p, c[b2])
            r = css - s_best[s:e] ** 2
            for cb in c_bg:
                r -= np.einsum("nr,rn->n", cb[b], p) ** 2
            rss[s:e] = np.maximum(r, 0.0)

        # pass 2: photon-noise sums along each pixel's best site, from tables over the amplitude
        conf = np.zeros(n, dtype=np.float32)
        novel = np.zeros(n, dtype=bool)

        def second_pass(s: int, e: int, sums: NoiseSums) -> None:
            sl = slice(s, e)
            at = sums.grid_position(s_best[sl])  # shared by both sums
            total, squares = sums.residual_moments(best[sl], mean[sl], s_best[sl], at=at)
            with np.errstate(all="ignore"):
                excess = (rss[sl] - total * (n_rec - 2) / n_rec) / np.sqrt(2.0 * squares)
                if single:
                    margin = np.full(e - s, np.inf)
                else:
                    pair = sums.pair_variance(best[sl], second[sl], mean[sl], s_best[sl], at=at)
                    margin = (s_best[sl] - s_second[sl]) / np.sqrt(pair)
            conf[sl] = np.where(ok[sl], margin, 0.0)
            novel[sl] = ok[sl] & (excess > novel_threshold)

        c32 = c.astype(np.float32)
        small = [(s, min(s + 32768, n)) for s in range(0, n, 32768)]  # few work items: less pool overhead
        with threadpool_limits(1, user_api="blas"):
            list(self._pool.map(lambda ch: first_pass(*ch), small))
            if ok.any():  # a tile with no valid pixel (all dead or saturated) stays all unassigned
                coef = photon_coefficients(self.sites.noise, self.sites.i0_counts)
                if coef.ndim == 2:  # per-energy incident counts: those of the energies received
                    coef = coef[:, rec]
                pairs = np.stack([best[ok], second[ok]], axis=1) if not single else np.zeros((0, 2), np.intp)
                sums = NoiseSums(
                    z_r, coef, s_best[ok].max(initial=0), pairs, model_error=self.sites.model_error[rec]
                )
                list(self._pool.map(lambda ch: second_pass(*ch, sums), small))
        labels = np.where(ok, groups[best], 0).astype(np.int32)
        masked = self._bad | ~ok
        return Assignment(
            labels.reshape(self.shape),
            conf.reshape(self.shape),
            novel.reshape(self.shape),
            masked.reshape(self.shape),
            self.sites,
            rec,
        )
