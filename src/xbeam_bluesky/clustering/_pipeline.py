"""One clustering pipeline: sites from the data (a library only seeds and names them), model error estimated
from the data, then the O(N) assignment of every pixel."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import ClusteringInputError
from xbeam_bluesky.spectra.noise import EstimatedNoiseModel, estimate_noise

from ._absorber import AbsorberTest, absorber_test
from ._baseline import BaselineRemoved, baseline_basis, remove_baseline
from ._denoise import denoise_labels, novel_fraction_check
from ._discovery import partition_spectra
from ._model_error import MODEL_ERROR_FLOOR_RMS, estimate_model_error, model_error_floor
from ._mosaic import Mosaic
from ._separation import AbsorbanceNoise, incident_counts, standardize, standardized_noise
from ._sites import Sites
from ._split import split_clusters
from ._stack import ClusterResult, MapFunction, StackSource, cluster_tiles, row_blocks
from ._summary import area_fractions

logger = logging.getLogger(__name__)

#: Largest 1 − r between a cluster's spectrum and a library spectrum for the cluster to take its name: the
#: spread between measurements of one compound in different collections of the bundled Fe K library
#: (hematite 0.0006, goethite 0.0018, magnetite 0.0024, siderite 0.0040 on the 81-energy grid).
NAME_TOLERANCE = 0.005


@dataclass(frozen=True)
class DataSites:
    """Sites found in the data and how they were found.

    Attributes
    ----------
    sites
        One site per phase found (its members' mean absorbance), each its own cluster.
    model_error
        ε per energy on the standardized scale (dimensionless), estimated from the data.
    n_pixels
        Pixels of the subsample the partition used.
    """

    sites: Sites
    model_error: NDArray[np.float64]
    n_pixels: int


@dataclass(frozen=True)
class ClusteringPipeline:
    """Cluster absorbance stacks: the same object serves the batch CLI and notebooks.

    1. A random subsample of pixels (``subsample``, read in bounded row blocks) is partitioned into phases by
       the noise alone (:func:`~xbeam_bluesky.clustering.partition_spectra`), seeded by the library when one is
       given, with model error at its floor.
    2. The model error ε is estimated from the members' spread around their centres beyond photon noise
       (:func:`~xbeam_bluesky.clustering.estimate_model_error`), the partition repeated with it, and ε estimated
       once more (recorded).
    3. Each phase's mean absorbance becomes a site; a site within ``name_tolerance`` (1 − r) of a library
       spectrum takes its name, else it is ``unknown N``.
    4. Every pixel is assigned (:func:`~xbeam_bluesky.clustering.cluster_tiles`: O(N), bounded memory), with
       discovery of compact unexplained regions and spatial denoising.

    Attributes
    ----------
    energies
        eV, shape (n_energies,).
    i0_counts
        Incident counts per pixel per frame (one number or one per energy).
    noise
        Detector noise model.
    library_names, library
        Reference names and normalized μ on ``energies`` (shape (n_ref, n_energies)); empty for none.
    subsample
        Pixels partitioned (bounds the partition's time and memory).
    model_error_floor
        Smallest ε as a fraction of a spectrum's RMS deviation from its mean.
    name_tolerance
        Largest 1 − r to a library spectrum for a cluster to take its name.
    max_clusters
        Most clusters (bounds the number of sites at any dose).
    denoise, discover, window, min_count
        As :func:`~xbeam_bluesky.clustering.cluster_tiles`.
    memory_bytes
        Bound on one block read.
    seed
        Seed of the subsample.
    element, edge_ev
        Absorbing element (e.g. ``"Fe"``): pixels whose edge jump is not detected
        (:func:`~xbeam_bluesky.clustering.absorber_test` with the library as the resonant shape, or an arctan step
        at ``edge_ev`` eV without a library) are labelled ``"no <element>"`` and take no part in the clustering.
        ``None``: every pixel is clustered.
    min_jump_od
        OD floor on the edge jump next to its significance (0 = significance only, Φ⁻¹(0.999)).
    baseline_degree
        Degree of the per-pixel polynomial baseline in energy removed before the clustering
        (:mod:`~xbeam_bluesky.clustering._baseline`): 1 (default) removes a straight line, the slowly varying
        absorption of everything but the edge (on the real STXM stack the dominant spread of one phase's spectra);
        0 only the constant that standardization removes anyway. The library is treated the same way. A stack
        with fewer than ``baseline_degree + 3`` energies gets the largest degree it allows (logged, and recorded
        as ``baseline_degree_removed``).
    split
        Split clusters whose spatially coherent parts differ beyond the noise of their means plus ε
        (:func:`~xbeam_bluesky.clustering.split_clusters`; one tile only, which is then read whole). Off by
        default: on the real STXM stack every cluster splits (T 22–44 against 2.9) with ε at its floor.
    """

    energies: NDArray[np.float64]
    i0_counts: float | NDArray[np.float64]
    noise: AbsorbanceNoise
    library_names: tuple[str, ...] = ()
    library: NDArray[np.float64] | None = None
    subsample: int = 20_000
    model_error_floor: float = MODEL_ERROR_FLOOR_RMS
    name_tolerance: float = NAME_TOLERANCE
    max_clusters: int = 64
    denoise: bool = True
    discover: bool = True
    window: int = 5
    min_count: int = 23
    memory_bytes: int = 256 * 2**20
    seed: int = 0
    element: str | None = None
    edge_ev: float | None = None
    min_jump_od: float = 0.0
    split: bool = False
    baseline_degree: int = 1
    _basis: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _library_z: NDArray[np.float64] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        energies = np.asarray(self.energies, dtype=np.float64).ravel()
        if energies.size < 3:
            raise ClusteringInputError(f"ClusteringPipeline: {energies.size} energies; need at least 3")
        object.__setattr__(self, "energies", energies)
        object.__setattr__(self, "i0_counts", incident_counts(self.i0_counts, energies.size))
        lib = np.empty((0, energies.size)) if self.library is None else np.atleast_2d(self.library)
        if lib.shape[1] != energies.size or lib.shape[0] != len(self.library_names):
            raise ClusteringInputError(
                f"ClusteringPipeline: library of shape {lib.shape} with {len(self.library_names)} names; "
                f"expected one normalized spectrum per name on the {energies.size} energies"
            )
        if not np.all(np.isfinite(lib)):
            raise ClusteringInputError(
                "ClusteringPipeline: library contains NaN or Inf (not covering the energies?)"
            )
        object.__setattr__(self, "library", lib)
        if self.baseline_degree > energies.size - 3:  # a three-energy map keeps its one degree of freedom
            logger.warning(
                "baseline degree %d needs %d energies, the stack has %d: removing degree %d instead",
                self.baseline_degree, self.baseline_degree + 3, energies.size, energies.size - 3,
            )  # fmt: skip
            object.__setattr__(self, "baseline_degree", energies.size - 3)
        basis = baseline_basis(energies, self.baseline_degree)
        object.__setattr__(self, "_basis", basis)
        object.__setattr__(self, "_library_z", standardize(remove_baseline(lib, basis)) if len(lib) else None)
        if self.subsample < 100:
            raise ClusteringInputError(
                f"ClusteringPipeline: subsample={self.subsample}; expected ≥ 100 pixels"
            )

    # ------------------------------------------------------------------ no absorber
    def absorber(self) -> AbsorberTest | None:
        """The edge-jump detection of ``element`` on the pipeline's energies (``None`` without an element)."""
        if self.element is None:
            return None
        refs = self.library if len(self.library) else None
        if refs is None and self.edge_ev is None:
            raise ClusteringInputError(
                f"ClusteringPipeline: element={self.element!r} needs a library or edge_ev to detect its edge jump"
            )
        return absorber_test(
            self.energies, references=refs, edge_ev=self.edge_ev, element=self.element,
            min_jump_od=self.min_jump_od,
        )  # fmt: skip

    def absorbing(self, source: StackSource, test: AbsorberTest) -> NDArray[np.int8]:
        """Edge-jump map of one tile (ny, nx): 1 detected, 0 not detected, −1 not testable (a non-finite channel);
        read in bounded row blocks, the variance from the noise model."""
        out = np.full(source.shape[1:], -1, dtype=np.int8)
        i0 = np.reshape(self.i0_counts, (-1, 1, 1)) if np.ndim(self.i0_counts) else self.i0_counts
        for y0, y1 in row_blocks(source.shape, self.memory_bytes):
            block = np.asarray(source.read_rows(y0, y1), dtype=np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                var = np.asarray(self.noise.var_absorbance(i0, block), dtype=np.float64)
            jump, sigma = test.jump(block, np.where(np.isfinite(var), var, np.inf))
            out[y0:y1] = np.where(np.isfinite(jump), test.decide(jump, sigma), -1)
        return out

    # ------------------------------------------------------------------ subsample
    def _sample(self, sources: Sequence[StackSource]) -> NDArray[np.float64]:
        """Up to ``subsample`` finite, non-flat pixel spectra drawn uniformly from all tiles (row blocks)."""
        total = sum(s.shape[1] * s.shape[2] for s in sources)
        rate = min(1.0, self.subsample / max(total, 1))
        rng = np.random.default_rng(self.seed)
        picked = []
        for src in sources:
            nx = src.shape[2]
            for y0, y1 in row_blocks(src.shape, self.memory_bytes):
                take = np.flatnonzero(rng.random((y1 - y0) * nx) < rate)
                block = src.read_rows(y0, y1)  # only the picked pixels are gathered and converted
                picked.append(np.asarray(block[:, take // nx, take % nx], dtype=np.float64).T)
        x = np.concatenate(picked) if picked else np.empty((0, len(self.energies)))
        self._check_frames(x)
        ok = np.all(np.isfinite(x), axis=1) & (np.ptp(x, axis=1) > 0)
        return x if ok.all() else x[ok]

    def _check_frames(self, x: NDArray[np.float64]) -> None:
        """Rules on the subsample (pixels × energies): an energy with no finite value or one constant value over
        every pixel (an all-zero or missing frame), and values that are not absorbance (raw counts, scaled μt)."""
        finite = np.isfinite(x)
        every = bool(finite.all())  # the usual case: no masked copies of the subsample needed
        hi = (
            x.max(axis=0, initial=-np.inf)
            if every
            else np.max(np.where(finite, x, -np.inf), axis=0, initial=-np.inf)
        )
        lo = (
            x.min(axis=0, initial=np.inf)
            if every
            else np.min(np.where(finite, x, np.inf), axis=0, initial=np.inf)
        )
        for what, bad in (
            ("no finite value (all NaN/Inf)", ~finite.any(axis=0)),
            ("the same value in every sampled pixel (an all-zero or missing frame?)",
             finite.any(axis=0) & (hi == lo)),
        ):  # fmt: skip
            idx = np.flatnonzero(bad)
            if idx.size:
                raise ClusteringInputError(
                    f"stack frame(s) {idx[:5].tolist()} (energies {self.energies[idx[:5]].round(2).tolist()} eV) "
                    f"have {what}; remove or re-measure them"
                )
        level = float(np.median(np.abs(x if every else x[finite]))) if finite.any() else 0.0
        if level > 20.0:
            raise ClusteringInputError(
                f"stack values have median |value| {level:.4g}: expected absorbance μt = −ln(I/I0) (typically "
                "0–5); is this raw counts or a scaled absorbance? Correct the frames with dark and flat first"
            )

    def data_sites(self, sources: Sequence[StackSource]) -> DataSites:
        """Partition a subsample of the tiles into phases and estimate the model error (steps 1–3)."""
        for i, src in enumerate(sources):
            if src.shape[0] != len(self.energies):
                raise ClusteringInputError(
                    f"tile {i}: {src.shape[0]} energies, the pipeline has {len(self.energies)}"
                )
        x = self._sample(sources)  # raw: the frame checks see the data as measured
        if self.baseline_degree >= 1:
            x = remove_baseline(x, self._basis)
        if x.shape[0] < 8:
            raise ClusteringInputError(
                f"the stack has {x.shape[0]} finite, non-flat pixel spectra in its subsample; need at least 8"
            )
        z = standardize(x)
        tau_photon = standardized_noise(x, self.i0_counts, self.noise)
        floor = model_error_floor(len(self.energies), self.model_error_floor)
        seeds = self._library_z
        photon2 = tau_photon**2
        tau = np.sqrt(photon2 + floor**2)
        centers, labels = partition_spectra(z, tau, seeds, max_clusters=self.max_clusters)
        eps = estimate_model_error(z, tau_photon, centers, labels, floor=floor)
        np.add(photon2, eps**2, out=tau)
        np.sqrt(tau, out=tau)
        centers, labels = partition_spectra(z, tau, centers, max_clusters=self.max_clusters)
        eps = estimate_model_error(z, tau_photon, centers, labels, floor=floor)
        mu = np.stack([x[labels == k].mean(axis=0) for k in range(len(centers))])
        names, origin = self._names(standardize(mu))
        sites = Sites(self.energies, mu, names, origin, self.i0_counts, self.noise, model_error=eps)
        logger.info(
            "data sites: %d phases from %d pixels, model error RMS·sqrt(E) %.4f",
            len(sites), x.shape[0], float(np.sqrt(np.mean(eps**2) * len(eps))),
        )  # fmt: skip
        return DataSites(sites, eps, int(x.shape[0]))

    def _names(self, z_sites: NDArray[np.float64]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        names: list[str] = []
        origin: list[str] = []
        n_unknown = 0
        if len(self.library):
            corr = z_sites @ self._library_z.T
            nearest = np.argmax(corr, axis=1)
        for k in range(len(z_sites)):
            if len(self.library) and 1.0 - corr[k, nearest[k]] <= self.name_tolerance:
                name = self.library_names[nearest[k]]
                repeats = sum(n == name or n.startswith(f"{name} (") for n in names)
                names.append(name if repeats == 0 else f"{name} ({repeats + 1})")
                origin.append("library")
            else:
                n_unknown += 1
                names.append(f"unknown {n_unknown}")
                origin.append("data")
        return tuple(names), tuple(origin)

    def _prepared(self, sources: Sequence[StackSource]) -> list[StackSource]:
        """The tiles as the clustering reads them: each pixel's baseline removed (``baseline_degree`` ≥ 1)."""
        if self.baseline_degree < 1:
            return list(sources)
        return [BaselineRemoved(src, self._basis) for src in sources]

    # ------------------------------------------------------------------ everything
    def cluster(
        self,
        sources: Sequence[StackSource],
        *,
        centers_mm: Sequence[tuple[float, float]] | None = None,
        pixel_um: float | None = None,
        map_fn: MapFunction | None = None,
        n_threads: int = 2,
    ) -> ClusterResult:
        """Cluster one or more tiles (steps 1–4); the result's ``metadata`` records the model error and the
        absorber test.

        With an ``element``, the pixels without a detected edge jump are read as masked (NaN) by every step, so
        they seed no site, do not enter ε or the subsample, open no site by discovery and are not denoised into;
        they are then labelled ``"no <element>"`` (label K + 1), a label denoising never changes.
        """
        test = self.absorber()
        absorbing = [self.absorbing(src, test) for src in sources] if test is not None else None
        work = (
            [_DetectedOnly(src, ab) for src, ab in zip(sources, absorbing, strict=True)]
            if absorbing is not None
            else list(sources)
        )
        found = self.data_sites(work)
        work = self._prepared(work)
        result = cluster_tiles(
            work, found.sites, centers_mm=centers_mm, pixel_um=pixel_um, denoise=False,
            discover=self.discover, window=self.window, min_count=self.min_count,
            memory_bytes=self.memory_bytes, map_fn=map_fn, n_threads=n_threads,
        )  # fmt: skip
        raw = result.raw_labels
        extra: tuple[str, ...] = ()
        fixed = None
        metadata: dict[str, Any] = {}
        n_sites = result.sites.n_clusters
        if self.split and len(work) == 1:
            # the whole tile in memory (E × ny × nx float32): the split compares domains across the map
            names = result.sites.cluster_names
            raw, tests = split_clusters(
                work[0].read_rows(0, work[0].shape[1]), raw, np.arange(1, n_sites + 1), names=names,
                next_label=n_sites + 1, window=self.window, model_error=found.model_error, seed=self.seed,
            )  # fmt: skip
            extra = tuple(f"{t.name} (split)" for t in tests if t.new_label is not None)
            metadata["split_tests"] = [t.as_dict() for t in tests]
        if test is not None and absorbing is not None:
            state = _place(result.mosaic, absorbing)
            detected, fixed = state == 1, state == 0
            label = n_sites + len(extra) + 1
            raw = np.where(fixed, label, raw).astype(np.int32)
            extra = (*extra, test.name)
            metadata["absorber_test"] = {
                "element": test.element,
                "class": test.name,
                "label": label,
                "z_threshold": test.z_threshold,
                "false_detection_rate": test.false_detection_rate,
                "min_jump_od": test.min_jump_od,
                "shape": "library references (unit step, mean)"
                if len(self.library)
                else f"arctan at {self.edge_ev} eV",
                "absorbing_pixels": int(detected.sum()),
                "no_absorber_pixels": int(fixed.sum()),
            }
        final = (
            denoise_labels(
                raw, window=self.window, min_count=self.min_count, confidence=result.confidence, fixed=fixed
            )
            if self.denoise
            else raw
        )
        n_classes = result.sites.n_clusters + len(extra)
        fractions = area_fractions(final if len(sources) == 1 else final[result.mosaic.covered], n_classes)
        result = dataclasses.replace(
            result, labels=final, raw_labels=raw, fractions=fractions, class_names=extra
        )
        eps = found.model_error
        considered = ~result.masked & (True if fixed is None else ~fixed)
        metadata |= novel_fraction_check(result.novel, considered)
        metadata |= {
            "sites_from": "data" if not len(self.library) else "data seeded by the library",
            "subsample_pixels": found.n_pixels,
            "baseline_degree_removed": self.baseline_degree,
            "model_error": {
                "per_energy": eps.tolist(),
                "rms_fraction_of_spectrum_rms": float(np.sqrt(np.mean(eps**2) * len(eps))),
                "floor_fraction_of_spectrum_rms": float(self.model_error_floor),
                "units": "standardized spectrum (fraction of ||mu_t - mean||), added in quadrature to photon noise",
            },
        }
        return dataclasses.replace(result, metadata={**result.metadata, **metadata})


@dataclass(frozen=True)
class _DetectedOnly:
    """A tile read with NaN where the absorbing element is not detected (those pixels are masked downstream)."""

    source: StackSource
    state: NDArray[np.int8]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.source.shape

    def read_rows(self, y0: int, y1: int) -> NDArray[np.floating]:
        block = np.asarray(self.source.read_rows(y0, y1), dtype=np.float32)
        return np.where(self.state[y0:y1] == 1, block, np.float32(np.nan))


def _place(mosaic: Mosaic, tiles: Sequence[NDArray[np.int8]]) -> NDArray[np.int8]:
    """Tile maps placed at the mosaic's offsets (the largest value where tiles overlap; −1 where none covers)."""
    if len(tiles) == 1 and tiles[0].shape == mosaic.labels.shape:
        return tiles[0]
    out = np.full(mosaic.labels.shape, -1, dtype=np.int8)
    for tile, (r, c) in zip(tiles, mosaic.offsets, strict=True):
        view = out[r : r + tile.shape[0], c : c + tile.shape[1]]
        np.maximum(view, tile, out=view)
    return out


def pipeline_from_library(
    energies: ArrayLike,
    i0_counts: float | ArrayLike,
    noise: AbsorbanceNoise,
    library: dict[str, NDArray[np.float64]] | None = None,
    **options: Any,
) -> ClusteringPipeline:
    """A :class:`ClusteringPipeline` from a name → normalized μ mapping (``None`` or empty: no library)."""
    lib = library or {}
    matrix = np.stack(list(lib.values())) if lib else None
    return ClusteringPipeline(np.asarray(energies, float), i0_counts, noise, tuple(lib), matrix, **options)  # type: ignore[arg-type]


def estimated_noise(
    sources: Sequence[StackSource],
    energies: ArrayLike,
    *,
    i0_ref: float = 1.0,
    max_pixels: int = 20_000,
    memory_bytes: int = 256 * 2**20,
    seed: int = 0,
) -> EstimatedNoiseModel:
    """The noise of absorbance tiles estimated from their own scatter (``--noise estimate``): up to ``max_pixels``
    pixels drawn uniformly over the tiles in bounded row blocks, sorted by energy, fitted by
    :func:`~xbeam_bluesky.spectra.estimate_noise`.

    Parameters
    ----------
    sources
        Absorbance tiles (n_energies, ny, nx).
    energies
        eV, one per frame (any order).
    i0_ref
        Incident counts the data were measured with (1 when unknown).
    max_pixels, memory_bytes, seed
        Pixels drawn, bound on one block read (bytes), and the draw's seed.

    Raises
    ------
    ValueError
        Too few finite pixels to fit (names the cause).
    """
    e = np.asarray(energies, dtype=np.float64)
    total = sum(s.shape[1] * s.shape[2] for s in sources)
    rate = min(1.0, max_pixels / max(total, 1))
    rng = np.random.default_rng(seed)
    picked = []
    for src in sources:
        nx = src.shape[2]
        for y0, y1 in row_blocks(src.shape, memory_bytes):
            take = np.flatnonzero(rng.random((y1 - y0) * nx) < rate)
            block = np.asarray(src.read_rows(y0, y1))
            picked.append(np.asarray(block[:, take // nx, take % nx], dtype=np.float64))
    od = np.concatenate(picked, axis=1) if picked else np.empty((e.size, 0))
    order = np.argsort(e, kind="stable")
    return estimate_noise(od[order], e[order], i0_ref=i0_ref, max_pixels=max_pixels, seed=seed)
