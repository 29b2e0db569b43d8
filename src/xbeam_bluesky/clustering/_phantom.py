"""A phantom built from measured spectra held out of the clustering library, and its one-to-one scores.

The bundled Fe K library holds two kinds of collections: the ALS beamline 10.3.2 mineral spectra (the
``ALS1032_mineral_library`` directory and the ``larch_ALS1032_*`` files, the same measurements exported twice)
and everything else (XASDataLibrary, the larch FeDem project, xasref). The phantom's phases come from the
first; the clustering library is the second, so no phantom spectrum is in the library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from xbeam_bluesky.errors import ClusteringInputError

#: The phantom's phases (ALS 10.3.2 names) and their nominal area fractions; the last two are the minorities.
#: Almandine has no spectrum within 1 − r = 0.02 of it in the other collections: a phase absent from the library.
PHASES: tuple[tuple[str, float], ...] = (
    ("Hematite_FeXANES", 0.16),
    ("Goethite_FeXANES", 0.16),
    ("Lepidocrocite_Borch_FeEXAFS_overabs", 0.14),
    ("magnetite_syn_FeEXAFS_TEY001", 0.14),
    ("Chromite_Nico_FeXANES", 0.14),
    ("ilmenite_FeXANES_generic", 0.13),
    ("Cubanite_FeXANES_powder_avg", 0.124),
    ("Siderite_FeXANES_ITFA0", 0.005),
    ("Almandine_Waychunas_FeXANES", 0.001),
)


def is_als1032(library_path: str, name: str) -> bool:
    """True for spectra of the ALS 10.3.2 collection (held out of the clustering library)."""
    return library_path.startswith("ALS1032_mineral_library/") or name.startswith("larch_ALS1032_")


def split_library(energies: ArrayLike) -> tuple[dict[str, NDArray], dict[str, NDArray]]:
    """(phantom spectra, clustering library): normalized μ on ``energies`` by name, split by collection."""
    from xbeam_bluesky.spectra import aligned_library, load_library

    spectra = load_library()
    held = aligned_library([s for s in spectra if is_als1032(s.metadata["library_path"], s.name)], energies)
    rest = aligned_library(
        [s for s in spectra if not is_als1032(s.metadata["library_path"], s.name)], energies
    )
    return dict(zip(held.names, held.matrix, strict=True)), dict(zip(rest.names, rest.matrix, strict=True))


@dataclass(frozen=True)
class MeasuredPhantom:
    """Noise-free absorbance of the phantom and its truth.

    Attributes
    ----------
    energies
        eV, shape (n_energies,).
    mu_t
        Absorbance, shape (n_energies, ny, nx): offset + jump · normalized μ of the pixel's phase.
    truth
        Phase index (0..n_phases-1) per pixel, shape (ny, nx).
    names
        Phase names.
    """

    energies: NDArray[np.float64]
    mu_t: NDArray[np.float32]
    truth: NDArray[np.int32]
    names: tuple[str, ...]

    def measure(self, photons: float, seed: int = 0, flat_frames: int = 10) -> NDArray[np.float32]:
        """Absorbance measured by photon counting with ``photons`` incident photons per pixel per energy.

        The flat is the mean of ``flat_frames`` open-beam frames. Returns float32 (n_energies, ny, nx).
        """
        rng = np.random.default_rng(seed)
        out = np.empty(self.mu_t.shape, dtype=np.float32)
        for i, mu in enumerate(self.mu_t):
            counts = rng.poisson(photons * np.exp(-mu.astype(np.float64)))
            flat = rng.poisson(photons * flat_frames, size=mu.shape) / flat_frames
            out[i] = np.log(np.maximum(flat, 0.5) / np.maximum(counts, 0.5))
        return out


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, scale_px: float) -> NDArray[np.float64]:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), scale_px, mode="wrap")
    return (f - f.min()) / max(float(np.ptp(f)), 1e-12)


def held_out_phantom(
    energies: ArrayLike,
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int = 0,
    phases: Sequence[tuple[str, float]] = PHASES,
    jump_range: tuple[float, float] = (0.5, 1.2),
    offset_range: tuple[float, float] = (0.2, 0.8),
) -> MeasuredPhantom:
    """A phase map of measured ALS 10.3.2 spectra with a thickness (edge-jump) map and per-pixel offsets.

    Majors fill Voronoi cells (three cells per phase, sized to the nominal fractions by area ordering);
    minorities are discs (radius 5 pixels) inside the majors, at their nominal area fraction. μt =
    offset(x, y) + jump(x, y) · μ_norm(E), jump and offset smooth random fields in the given ranges, on
    ``energies`` (eV; the dose tests use the 81-energy conventional grid
    ``conventional_grid(7112, 7090, 7180, edge_step_eV=1)``).
    """
    energies = np.asarray(energies, dtype=np.float64)
    held, _ = split_library(energies)
    missing = [name for name, _ in phases if name not in held]
    if missing:
        raise ClusteringInputError(
            f"held_out_phantom: phases {missing} not in the ALS 10.3.2 collection on this grid"
        )
    rng = np.random.default_rng(seed)
    ny, nx = shape
    fractions = np.array([f for _, f in phases])
    minor = fractions < 0.01
    major_idx = np.flatnonzero(~minor)
    n_cells = 3 * major_idx.size
    yy, xx = np.mgrid[0:ny, 0:nx]
    pts = rng.uniform([0, 0], [ny, nx], size=(n_cells, 2))
    d2 = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    cell = np.argmin(d2, axis=-1)
    # assign cells to majors so each major's area is near its share: largest cells first, greedy
    area = np.bincount(cell.ravel(), minlength=n_cells).astype(float)
    target = fractions[major_idx] / fractions[major_idx].sum() * ny * nx
    got = np.zeros(major_idx.size)
    cell_phase = np.zeros(n_cells, dtype=np.int32)
    for c in np.argsort(area)[::-1]:
        p = int(np.argmax(target - got))
        cell_phase[c] = major_idx[p]
        got[p] += area[c]
    truth = cell_phase[cell].astype(np.int32)
    radius = 5.0  # minority inclusions: discs of 81 pixels, larger than the 5×5 denoising window
    for p in np.flatnonzero(minor):
        n_discs = max(1, round(fractions[p] * ny * nx / (np.pi * radius**2)))
        placed = 0
        while placed < n_discs:
            cy, cx = rng.uniform(radius + 1, ny - radius - 1), rng.uniform(radius + 1, nx - radius - 1)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            if np.isin(truth[disc], np.flatnonzero(minor)).any():
                continue
            truth[disc] = p
            placed += 1
    lo, hi = jump_range
    jump = lo + (hi - lo) * _smooth_field(shape, rng, max(ny, nx) / 6)
    lo, hi = offset_range
    offset = lo + (hi - lo) * _smooth_field(shape, rng, max(ny, nx) / 5)
    spectra = np.stack([held[name] for name, _ in phases])  # (P, E)
    mu = np.empty((energies.size, ny, nx), dtype=np.float32)
    for i in range(energies.size):  # one energy at a time: memory stays one float32 stack
        mu[i] = offset + jump * spectra[truth, i]
    return MeasuredPhantom(energies, mu, truth, tuple(n for n, _ in phases))


@dataclass(frozen=True)
class MatchedScores:
    """One-to-one (Hungarian) match of clusters to phases and the per-phase scores.

    Attributes
    ----------
    macro_f1
        Mean F1 over phases (a phase without a cluster scores 0).
    recall, precision, f1
        Per phase, shape (n_phases,).
    cluster_of_phase
        Matched cluster label per phase (0 = none).
    """

    macro_f1: float
    recall: NDArray[np.float64]
    precision: NDArray[np.float64]
    f1: NDArray[np.float64]
    cluster_of_phase: NDArray[np.int64]


def matched_scores(truth: ArrayLike, labels: ArrayLike, n_phases: int) -> MatchedScores:
    """Match cluster labels (0 = unassigned, counts as wrong) one-to-one to phases by the Hungarian algorithm
    on the confusion matrix, and score each phase."""
    t = np.asarray(truth).ravel()
    lab = np.asarray(labels).ravel()
    n_lab = int(lab.max(initial=0)) + 1
    conf = np.zeros((n_phases, n_lab), dtype=np.int64)
    np.add.at(conf, (t, lab), 1)
    rows, cols = linear_sum_assignment(-conf[:, 1:])
    cluster = np.zeros(n_phases, dtype=np.int64)
    cluster[rows] = cols + 1
    size_phase = conf.sum(axis=1).astype(float)
    size_cluster = conf.sum(axis=0).astype(float)
    tp = np.where(cluster > 0, conf[np.arange(n_phases), cluster], 0).astype(float)
    recall = tp / np.maximum(size_phase, 1)
    precision = np.where(cluster > 0, tp / np.maximum(size_cluster[cluster], 1), 0.0)
    f1 = np.where(tp > 0, 2 * tp / (size_phase + np.where(cluster > 0, size_cluster[cluster], 0)), 0.0)
    return MatchedScores(float(f1.mean()), recall, precision, f1, cluster)
