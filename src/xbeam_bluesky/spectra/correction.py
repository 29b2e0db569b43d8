"""The one frame correction of the project: raw detector counts to absorbance μt, and the frame averages it uses.

Every reader of transmission frames (the live clustering callback reading the detector files, the tiled read-back
behind ``xbeam cluster RUN``, the demo report) goes through :func:`correct_frame` and :class:`FrameMean`, so the same
counts give bit-identical absorbance wherever they are read.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Raw reading at or above which a pixel is saturated (a 16-bit camera's full scale).
SATURATION_COUNTS = 65535.0


def correct_frame(
    counts: ArrayLike,
    flat: ArrayLike,
    dark: ArrayLike | float = 0.0,
    *,
    saturation: float | None = SATURATION_COUNTS,
) -> NDArray[np.float32]:
    """Absorbance μt = ln((flat − dark) / (counts − dark)) of one transmission frame, with a saturation mask.

    Parameters
    ----------
    counts
        Sample reading, detector counts (ADU), any shape (a frame (ny, nx) or rows of one).
    flat
        Open-beam (flat-field) reading, counts, broadcastable to ``counts`` (a mean of flats: :class:`FrameMean`).
    dark
        Dark (shutter closed) reading, counts, broadcastable to ``counts``; 0 for none.
    saturation
        Raw ``counts`` at or above this value are saturated; ``None``: no saturation mask.

    Returns
    -------
    numpy.ndarray
        float32 μt, the shape of ``counts``. NaN where the pixel cannot be measured: saturated, dark-corrected
        sample or flat counts ≤ 0, or a non-finite input. Downstream (the clustering) masks NaN pixels; no value is
        clipped, so an empty pixel is never a fake high absorbance.

    Raises
    ------
    ValueError
        If ``flat`` or ``dark`` does not broadcast to the shape of ``counts``.
    """
    raw = np.asarray(counts)
    try:
        dark32 = np.broadcast_to(np.asarray(dark, dtype=np.float32), raw.shape)
        flat32 = np.broadcast_to(np.asarray(flat, dtype=np.float32), raw.shape)
    except ValueError:
        raise ValueError(
            f"correct_frame: counts of shape {raw.shape}, flat {np.shape(flat)}, dark {np.shape(dark)}; expected a "
            "flat and a dark of the frame's shape (or scalars)"
        ) from None
    sample = raw.astype(np.float32) - dark32
    open_beam = flat32 - dark32
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.log(open_beam / sample)
    bad = ~(sample > 0) | ~(open_beam > 0) | ~np.isfinite(mu)
    if saturation is not None:
        bad |= raw >= saturation
    mu[bad] = np.nan
    return mu.astype(np.float32, copy=False)


class FrameMean:
    """Running mean of detector frames (darks, or the flats of one energy), accumulated in float64.

    Frames added one at a time (live) or all at once (:meth:`of`, read back) give the same float32 mean: both add
    the frames in the order given.
    """

    def __init__(self) -> None:
        self._sum: NDArray[np.float64] | None = None
        self.n = 0

    def add(self, frame: ArrayLike) -> None:
        """Add one frame (counts, shape (ny, nx)).

        Raises
        ------
        ValueError
            If the frame's shape differs from the frames added before.
        """
        f = np.asarray(frame, dtype=np.float64)
        if self._sum is None:
            self._sum = f.copy()
        elif f.shape != self._sum.shape:
            raise ValueError(f"FrameMean: frame of shape {f.shape}, the frames before are {self._sum.shape}")
        else:
            self._sum += f
        self.n += 1

    def mean(self) -> NDArray[np.float32]:
        """The mean frame (counts, float32).

        Raises
        ------
        ValueError
            If no frame was added.
        """
        if self._sum is None:
            raise ValueError("FrameMean: no frame added")
        return (self._sum / self.n).astype(np.float32)

    @classmethod
    def of(cls, frames: ArrayLike) -> NDArray[np.float32]:
        """Mean of a stack of frames (n, ny, nx), added in order."""
        acc = cls()
        for frame in np.asarray(frames):
            acc.add(frame)
        return acc.mean()
