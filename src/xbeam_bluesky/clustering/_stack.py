"""Clustering a whole absorbance stack in row blocks with bounded memory (local or on a Dask cluster)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky._inputs import input_file
from xbeam_bluesky.errors import ClusteringInputError

from ._denoise import denoise_labels
from ._discovery import discover_sites
from ._mosaic import Mosaic, TileMap, stitch_tiles
from ._separation import standardize
from ._sites import Sites
from ._streaming import Assignment, StreamingAssigner
from ._summary import GramAccumulator, area_fractions

logger = logging.getLogger(__name__)


class StackSource(Protocol):
    """An absorbance stack (n_energies, ny, nx) readable by row blocks."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_energies, ny, nx)."""
        ...

    def read_rows(self, y0: int, y1: int) -> NDArray[np.floating]:
        """Absorbance μt of rows [y0, y1), shape (n_energies, y1 - y0, nx)."""
        ...


@dataclass(frozen=True)
class ArrayStack:
    """An in-memory absorbance stack (n_energies, ny, nx)."""

    stack: NDArray[np.floating]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_energies, ny, nx)."""
        return tuple(np.shape(self.stack))  # type: ignore[return-value]

    def read_rows(self, y0: int, y1: int) -> NDArray[np.floating]:
        """Rows [y0, y1) of every energy."""
        return np.asarray(self.stack[:, y0:y1])


@dataclass(frozen=True)
class HDF5Stack:
    """An absorbance stack in an HDF5 file, read lazily (picklable: reopened on each read).

    Attributes
    ----------
    path
        HDF5 file.
    dataset
        Dataset path of the (n_energies, ny, nx) stack.
    """

    path: Path
    dataset: str = "/stack"
    _shape: tuple[int, int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import h5py

        path = Path(self.path)
        input_file(path, "HDF5 file")
        with h5py.File(path, "r") as f:
            if self.dataset not in f:
                raise ClusteringInputError(
                    f"{path}: no dataset {self.dataset!r} (expected (energy, y, x) absorbance)"
                )
            shape = f[self.dataset].shape
        if len(shape) != 3:
            raise ClusteringInputError(f"{path}{self.dataset}: shape {shape}; expected 3-D (energy, y, x)")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_shape", tuple(int(s) for s in shape))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_energies, ny, nx)."""
        return self._shape

    def read_rows(self, y0: int, y1: int) -> NDArray[np.floating]:
        """Rows [y0, y1) of every energy."""
        import h5py

        with h5py.File(self.path, "r") as f:
            return f[self.dataset][:, y0:y1, :]


@dataclass(frozen=True)
class BlockResult:
    """Assignment of one row block (picklable, small: maps plus r × r matrices)."""

    y0: int
    labels: NDArray[np.int32]
    confidence: NDArray[np.float32]
    novel: NDArray[np.bool_]
    masked: NDArray[np.bool_]
    gram: GramAccumulator


def assign_block(source: StackSource, y0: int, y1: int, sites: Sites, n_threads: int = 1) -> BlockResult:
    """Assign rows [y0, y1) of a stack by adding its energy frames to a StreamingAssigner as one block.

    The same function runs locally and on Dask workers, so batch and live labels come from one code path. A
    source with a ``raw`` source and a ``pixel_transform`` (the baseline removal,
    :class:`~xbeam_bluesky.clustering._baseline.BaselineRemoved`) is read raw and transformed chunk by chunk
    inside the assignment: the same numbers without a second whole block in memory.
    """
    transform = getattr(source, "pixel_transform", None)
    block = (source.raw if transform is not None else source).read_rows(y0, y1)  # type: ignore[attr-defined]
    assigner = StreamingAssigner(sites, block.shape[1:], n_threads=n_threads)
    try:
        assigner.add_block(block, transform=transform)
        del block
        result = assigner.finalize()
        coords, basis = assigner.coordinates(dtype=np.float32)
    finally:
        assigner.close()
    gram = GramAccumulator(sites.n_clusters, basis)
    gram.add(result.labels, coords)
    return BlockResult(y0, result.labels, result.confidence, result.novel, result.masked, gram)


@dataclass(frozen=True)
class ClusterResult:
    """Cluster maps and summaries of one stack or mosaic.

    Attributes
    ----------
    labels
        Final labels (ny, nx) int32, 0 = unassigned/masked (denoised unless disabled).
    raw_labels
        Labels before spatial denoising.
    confidence
        D margin between the best and second site (float32).
    novel
        Pixels no site explains within the noise.
    masked
        Pixels with NaN/Inf/saturated/dead values or flat spectra.
    spectra
        Cluster spectra (n_clusters, n_energies), absorbance, NaN for empty clusters.
    fractions
        Output of :func:`area_fractions`.
    sites
        The final sites (library, mixtures and any found in the data).
    mosaic
        Placement of the tiles (offsets, covered pixels, origin in mm).
    metadata
        How the result was made (JSON-friendly), e.g. the model error the pipeline estimated.
    class_names
        Names of the labels after the sites' clusters (K + 1, …), e.g. ``"no Fe"``: evidence classes with no site.
    """

    labels: NDArray[np.int32]
    raw_labels: NDArray[np.int32]
    confidence: NDArray[np.float32]
    novel: NDArray[np.bool_]
    masked: NDArray[np.bool_]
    spectra: NDArray[np.float64]
    fractions: dict[str, Any]
    sites: Sites
    mosaic: Mosaic
    metadata: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()

    @property
    def cluster_names(self) -> tuple[str, ...]:
        """Name of every label 1, 2, …: the sites' clusters, then ``class_names``."""
        return self.sites.cluster_names + self.class_names

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary: clusters present, names, area fractions, masked and novel counts."""
        names = self.cluster_names
        origin = self.sites.cluster_origin + ("evidence",) * len(self.class_names)
        present = [k for k in range(1, len(names) + 1) if self.fractions["counts"][k] > 0]
        return {
            "n_sites": len(self.sites),
            "n_clusters": len(present),
            "clusters": [
                {
                    "label": k,
                    "name": names[k - 1],
                    "origin": origin[k - 1],
                    "area_fraction": self.fractions["fractions"][k - 1],
                    "pixels": self.fractions["counts"][k],
                }
                for k in present
            ],
            "unassigned_fraction": self.fractions["unassigned"],
            "masked_pixels": int(self.masked.sum()),
            "novel_pixels": int(self.novel.sum()),
            **{k: v for k, v in self.metadata.items() if k != "model_error"},
            **(
                {"model_error_rms": self.metadata["model_error"]["rms_fraction_of_spectrum_rms"]}
                if "model_error" in self.metadata
                else {}
            ),
        }


MapFunction = Callable[..., Iterable[BlockResult]]


def row_blocks(source_shape: Sequence[int], memory_bytes: int = 256 * 2**20) -> list[tuple[int, int]]:
    """Row blocks (y0, y1) whose float32 block (n_energies × rows × nx) fits in ``memory_bytes``."""
    n_e, ny, nx = source_shape
    rows = max(1, min(ny, memory_bytes // max(1, 4 * n_e * nx)))
    return [(y, min(y + rows, ny)) for y in range(0, ny, rows)]


def _assign_all(
    sources: Sequence[StackSource],
    sites: Sites,
    memory_bytes: int,
    map_fn: MapFunction | None,
    n_threads: int,
) -> tuple[list[Assignment], GramAccumulator]:
    maps = [
        Assignment(
            np.zeros(s.shape[1:], np.int32),
            np.zeros(s.shape[1:], np.float32),
            np.zeros(s.shape[1:], bool),
            np.zeros(s.shape[1:], bool),
            sites,
            np.arange(sites.n_energies),
        )
        for s in sources
    ]
    jobs = [(t, y0, y1) for t, s in enumerate(sources) for y0, y1 in row_blocks(s.shape, memory_bytes)]
    gram: GramAccumulator | None = None

    def run(job: tuple[int, int, int]) -> tuple[int, BlockResult]:
        tile, y0, y1 = job
        return tile, assign_block(sources[tile], y0, y1, sites, n_threads)

    for tile, res in (map_fn or map)(run, jobs):
        rows = slice(res.y0, res.y0 + res.labels.shape[0])
        m = maps[tile]
        m.labels[rows], m.confidence[rows], m.novel[rows], m.masked[rows] = (
            res.labels,
            res.confidence,
            res.novel,
            res.masked,
        )
        if gram is None:
            gram = res.gram
        else:
            gram.merge(res.gram)
    assert gram is not None
    return maps, gram


def cluster_tiles(
    sources: Sequence[StackSource],
    sites: Sites,
    *,
    centers_mm: Sequence[tuple[float, float]] | None = None,
    pixel_um: float | None = None,
    denoise: bool = True,
    discover: bool = True,
    window: int = 5,
    min_count: int = 23,
    memory_bytes: int = 256 * 2**20,
    map_fn: MapFunction | None = None,
    n_threads: int = 2,
) -> ClusterResult:
    """Cluster one or more tiles (absorbance stacks) in row blocks with bounded memory.

    Pass 1 assigns every block of every tile to ``sites`` (streaming its frames). If ``discover``,
    compact regions of novel pixels open new sites (their spectra re-read from the sources, tile after
    tile, so a phase seen in two tiles opens one site) and, when any were opened, pass 2 re-assigns every
    block to the extended sites so all labels are exact. Tiles are stitched by stage position
    (:func:`stitch_tiles`), the map spatially denoised, and cluster spectra (first singular vector of the
    members before denoising) and area fractions computed.

    Parameters
    ----------
    sources
        Tiles, each (n_energies, ny, nx) absorbance μt on the sites' energy grid.
    sites
        Sites to start from.
    centers_mm, pixel_um
        Stage position (x, y) of each tile centre (mm) and the pixel size (µm); needed for several tiles.
    denoise
        Apply spatial denoising.
    discover
        Open sites from the data for phases no site explains.
    window, min_count
        Denoising (and discovery) seed window side and threshold.
    memory_bytes
        Bound on the float32 block read at once (per worker).
    map_fn
        ``map``-like ``map_fn(function, jobs)`` running the block jobs (e.g. on a Dask cluster); the
        built-in ``map`` when ``None``.
    n_threads
        Threads per block assignment.
    """
    if not sources:
        raise ClusteringInputError("cluster_tiles: no tiles given")
    for i, src in enumerate(sources):
        if src.shape[0] != sites.n_energies:
            raise ClusteringInputError(
                f"tile {i}: stack has {src.shape[0]} energies but the sites have {sites.n_energies}"
            )
    if len(sources) > 1 and (centers_mm is None or pixel_um is None or len(centers_mm) != len(sources)):
        raise ClusteringInputError("cluster_tiles: several tiles need centers_mm (one per tile) and pixel_um")
    maps, gram = _assign_all(sources, sites, memory_bytes, map_fn, n_threads)
    if discover:
        extended = sites
        for src, m in zip(sources, maps, strict=True):
            extended = discover_sites(extended, m.novel, src.read_rows, window=window, min_count=min_count)
        if len(extended) > len(sites):
            sites = extended
            maps, gram = _assign_all(sources, sites, memory_bytes, map_fn, n_threads)
    return assemble_result(
        maps, gram, sites, centers_mm=centers_mm, pixel_um=pixel_um, denoise=denoise, window=window,
        min_count=min_count,
    )  # fmt: skip


def assemble_result(
    assignments: Sequence[Assignment],
    gram: GramAccumulator,
    sites: Sites,
    *,
    centers_mm: Sequence[tuple[float, float]] | None = None,
    pixel_um: float | None = None,
    denoise: bool = True,
    window: int = 5,
    min_count: int = 23,
) -> ClusterResult:
    """Stitch tile assignments by stage position, denoise, and add cluster spectra and area fractions.

    Parameters
    ----------
    assignments
        One per tile, all against ``sites``.
    gram
        Member second moments summed over the tiles (gives the cluster spectra).
    sites
        The sites the labels refer to.
    centers_mm, pixel_um
        Tile centres (x, y) in mm and the pixel size in µm (one tile may omit them).
    denoise, window, min_count
        Spatial denoising and its seed window and threshold.
    """
    maps = assignments
    centers = centers_mm if centers_mm is not None else [(0.0, 0.0)] * len(maps)
    pixel = pixel_um if pixel_um is not None else 1.0
    if len(maps) == 1:  # one tile: its maps are the mosaic (no copies: they are O(N) for large stacks)
        m = maps[0]
        ny, nx = m.labels.shape
        origin = (centers[0][0] - nx * pixel / 2000, centers[0][1] - ny * pixel / 2000)
        covered = np.broadcast_to(np.True_, m.labels.shape)
        layers = {"novel": m.novel, "masked": m.masked}
        mosaic = Mosaic(m.labels, m.confidence, covered, origin, float(pixel), layers, ((0, 0),))
    else:
        mosaic = stitch_tiles(
            [
                TileMap(m.labels, m.confidence, tuple(c), {"novel": m.novel, "masked": m.masked})
                for m, c in zip(maps, centers, strict=True)
            ],
            pixel,
        )
    raw = mosaic.labels
    # clust-map: denoising keeps cleared regions the assignment supports with high confidence (one argument)
    final = (
        denoise_labels(raw, window=window, min_count=min_count, confidence=mosaic.confidence)
        if denoise
        else raw
    )
    return ClusterResult(
        labels=final,
        raw_labels=raw,
        confidence=mosaic.confidence,
        novel=mosaic.layers["novel"],
        masked=mosaic.layers["masked"],
        spectra=gram.spectra(),
        fractions=area_fractions(final if len(maps) == 1 else final[mosaic.covered], sites.n_clusters),
        sites=sites,
        mosaic=mosaic,
    )


def cluster_stack(source: StackSource, sites: Sites, **kwargs: Any) -> ClusterResult:
    """Cluster one absorbance stack: :func:`cluster_tiles` with a single tile (same keyword arguments)."""
    return cluster_tiles([source], sites, **kwargs)


def assign_spectra(spectra: ArrayLike, sites: Sites) -> NDArray[np.int32]:
    """The published assignment: each spectrum to the site of highest Pearson correlation.

    Direct O(N·K·E) evaluation in float64, used as the reference the streaming assigner must match.

    Parameters
    ----------
    spectra
        Absorbance spectra, shape (n, n_energies).
    sites
        Sites.

    Returns
    -------
    labels
        Cluster of the best site (1..n_clusters), 0 for spectra with NaN/Inf or zero variance.
    """
    x = np.asarray(spectra, dtype=np.float64)
    ok = np.all(np.isfinite(x), axis=1)
    z = standardize(np.where(ok[:, None], x, 0.0))
    ok &= np.any(z != 0, axis=1)
    return np.where(ok, sites.groups[np.argmax(z @ sites.z.T, axis=1)], 0).astype(np.int32)
