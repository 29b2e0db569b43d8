"""A smooth per-pixel baseline, removed before the clustering: the non-resonant absorption of everything else in the
beam path (matrix, support, other elements) varies slowly with energy, differently from pixel to pixel.

On the real ALS Fe L-edge STXM stack, the residuals of a two-reference fit of the Fe-bearing pixels beyond their
noise have one dominant component (188 × the noise variance; the next 28 and 15), and that component is a linear
function of energy (correlation 0.93): a per-pixel baseline slope, the reason reference spectra are quoted "with a
linear pre-edge removed". Standardization (subtracting the mean) already removes a constant; with ``degree`` 1 the
slope is removed too, so spectra that differ only by a linear baseline are the same spectrum. See
``docs/decisions/clustering-baseline.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import ClusteringInputError

from ._stack import StackSource

#: Bytes of a block processed at once by :class:`BaselineRemoved` (fits in a core's L2 cache).
CHUNK_BYTES = 2 * 2**20


def baseline_basis(energies: ArrayLike, degree: int) -> NDArray[np.float64]:
    """Orthonormal basis of the polynomials of ``degree`` in energy on the given energies.

    Parameters
    ----------
    energies
        eV, shape (n_energies,).
    degree
        Polynomial degree (0 = a constant, 1 = a straight line); needs ``degree + 3`` energies or more.

    Returns
    -------
    numpy.ndarray
        Shape (n_energies, degree + 1), orthonormal columns.
    """
    e = np.asarray(energies, dtype=np.float64).ravel()
    if not (isinstance(degree, int | np.integer) and 0 <= degree <= 3):
        raise ClusteringInputError(f"baseline degree {degree!r}: expected an integer 0–3")
    if e.size < degree + 3:
        raise ClusteringInputError(
            f"baseline degree {degree} needs at least {degree + 3} energies, the stack has {e.size}"
        )
    x = (e - e.mean()) / (np.ptp(e) or 1.0)
    q, _ = np.linalg.qr(np.vander(x, degree + 1, increasing=True))
    return q


def remove_baseline(spectra: ArrayLike, basis: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    """Spectra minus their least-squares baseline in ``basis``, plus their mean (the absorbance level is kept, so a
    photon-noise model still sees the right transmitted counts).

    The basis's first column is the constant (:func:`baseline_basis`), so removing the fit and adding the mean back
    is removing the projection on the other columns: x − Q₁ Q₁ᵀ x.

    Parameters
    ----------
    spectra
        Absorbance μt (dimensionless), energies along ``axis``.
    basis
        :func:`baseline_basis` on the same energies.
    axis
        Energy axis.

    Returns
    -------
    numpy.ndarray
        Same shape as ``spectra``; a pixel with a non-finite value stays non-finite.
    """
    s = np.moveaxis(np.asarray(spectra, dtype=np.float64), axis, -1)
    q1 = basis[:, 1:]
    return np.moveaxis(s - (s @ q1) @ q1.T, -1, axis)


@dataclass(frozen=True)
class BaselineRemoved:
    """A stack source read with each pixel's baseline removed (:func:`remove_baseline`), in float32."""

    source: StackSource
    basis: NDArray[np.float64]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.source.shape

    def read_rows(self, y0: int, y1: int) -> NDArray[np.floating]:
        """Rows [y0, y1) with the baseline removed, float32 (n_energies, y1 − y0, nx): one new block, the source's
        rows are not changed (one rank-``degree`` product along energy, no float64 copy of the block).

        The pixels are processed ``CHUNK_BYTES`` of the block at a time (:meth:`pixel_transform`), so the
        intermediate products stay in cache instead of making whole-block passes through memory."""
        block = np.asarray(self.source.read_rows(y0, y1), dtype=np.float32)
        flat = block.reshape(block.shape[0], -1)
        out = np.empty_like(flat)
        width = max(256, CHUNK_BYTES // (4 * max(1, flat.shape[0])))
        for s in range(0, flat.shape[1], width):
            self.pixel_transform(flat[:, s : s + width], out=out[:, s : s + width])
        return out.reshape(block.shape)

    @property
    def raw(self) -> StackSource:
        """The source read before the baseline removal (see :meth:`pixel_transform`)."""
        return self.source

    def pixel_transform(
        self, spectra: NDArray[np.float32], out: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        """The baseline removal of a chunk of pixels (n_energies, pixels) float32 of :attr:`raw`'s absorbance.

        Lets a reader of :attr:`raw` remove the baseline chunk by chunk where it uses the pixels
        (:func:`~xbeam_bluesky.clustering.assign_block` does, inside its worker threads) instead of a whole new
        block being made first; ``out`` (same shape, float32) receives the result when given.
        """
        q1 = np.ascontiguousarray(self.basis[:, 1:], dtype=np.float32)
        x = np.asarray(spectra, dtype=np.float32)
        out = np.matmul(-q1, q1.T @ x, out=out)  # minus the fit, the mean kept (basis column 0)
        out += x
        return out
