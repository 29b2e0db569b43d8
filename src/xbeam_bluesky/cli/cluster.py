"""``xbeam cluster``: noise-grid clustering of an XAS-imaging stack (HDF5 file or a tiled run)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbeam_bluesky._outputs import atomic_output, check_output
from xbeam_bluesky.cli import CLIError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cluster`` sub-command."""
    p = subparsers.add_parser(
        "cluster",
        help="cluster an XAS-imaging stack into chemical phases (noise-defined grid, O(N))",
        description=(
            "Assign every pixel spectrum to sites built from a reference library (random mixtures, grouped by "
            "average linkage on the photon-noise separation D); compact regions no site explains open new sites. "
            "Writes labels (0 = unassigned), confidence, cluster spectra and area fractions to OUT.h5 and prints "
            "a JSON summary."
        ),
    )
    p.add_argument(
        "input",
        help="HDF5 file with /stack (energy, y, x) absorbance μt and /energy (eV), or the uid of a "
        "xanes_imaging run in tiled",
    )
    p.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    p.add_argument("--library", type=Path, help="reference library directory (default: bundled Fe K)")
    p.add_argument(
        "--references", help="comma-separated reference names to use (default: all in the library)"
    )
    p.add_argument(
        "--i0",
        metavar="COUNTS",
        help="incident counts per pixel per frame for the noise model: one number, or comma-separated values "
        "one per energy (default for a run: the counts per energy its start document records, replaced by the "
        "flat-field counts when those differ by more than 2 %%; for a file: the /stack attribute i0_counts)",
    )
    p.add_argument("--draws", type=int, default=10_000, help="random three-site mixtures (default 10000)")
    p.add_argument("--no-denoise", action="store_true", help="skip spatial denoising")
    p.add_argument("--no-discover", action="store_true", help="do not open sites for unexplained regions")
    p.add_argument("--window", type=int, default=5, help="denoising seed window side, pixels (default 5)")
    p.add_argument("--min-count", type=int, default=23, help="denoising seed threshold (default 23)")
    p.add_argument("--memory-mb", type=float, default=256.0, help="bound on one block read, MB (default 256)")
    p.add_argument("--dask", metavar="ADDRESS", help="run row blocks on this dask.distributed scheduler")
    p.add_argument("--data-dir", type=Path, help="xbeam data directory (tiled run input)")
    p.add_argument("--tiled-uri", help="tiled server URI (tiled run input; default: configured/embedded)")
    p.set_defaults(func=_run)


def _parse_i0(text: str) -> float | list[float]:
    """``--i0``: one number or comma-separated numbers (one per energy), each positive and finite."""
    import math

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(
            f"--i0 {text!r}: expected a number or comma-separated numbers (one per energy)"
        ) from None
    for i, v in enumerate(values):
        if not (math.isfinite(v) and v > 0):
            where = f" value {i + 1}" if len(values) > 1 else ""
            raise CLIError(f"--i0{where} {v!r}: expected positive counts per pixel per frame")
    return values[0] if len(values) == 1 else values


@dataclass
class _Input:
    """What ``xbeam cluster`` read: per-tile stacks, energies (eV), incident counts, tile centres (mm), pixel
    size (µm), how the incident counts were chosen, and the detector noise model (None: the sCMOS defaults)."""

    sources: list[Any]
    energies: Any
    i0: Any
    centers: list
    pixel_um: float | None
    i0_model: dict
    noise: Any = None


def _hdf5_input(path: Path, i0: Any) -> _Input:
    import h5py
    import numpy as np

    from xbeam_bluesky.clustering import HDF5Stack

    stack = HDF5Stack(path)
    with h5py.File(path, "r") as f:
        if "energy" not in f:
            raise CLIError(f"{path}: no dataset /energy (expected the energies in eV, one per /stack frame)")
        energies = np.asarray(f["energy"][()], dtype=float).ravel()
        attr_i0 = f["stack"].attrs.get("i0_counts")
    if energies.size != stack.shape[0]:
        raise CLIError(f"{path}: /energy has {energies.size} values but /stack has {stack.shape[0]} frames")
    if i0 is None and attr_i0 is None:
        raise CLIError(
            f"{path}: give --i0 (incident counts per pixel per frame); /stack has no i0_counts attribute"
        )
    value = i0 if i0 is not None else np.asarray(attr_i0, dtype=float)
    value = float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=float)
    source = "--i0" if i0 is not None else "/stack attribute i0_counts"
    return _Input(
        [stack],
        energies,
        value,
        [(0.0, 0.0)],
        None,
        {"source": source, "i0_counts": np.atleast_1d(value).tolist()},
    )


def _run_input(args: argparse.Namespace) -> _Input:
    import numpy as np

    from xbeam_bluesky.callbacks.clustering import (
        choose_incident_counts,
        flat_incident_counts,
        run_incident_counts,
        run_noise_model,
    )
    from xbeam_bluesky.clustering import ArrayStack
    from xbeam_bluesky.storage import open_storage
    from xbeam_bluesky.storage.readback import (
        absorbance_stack,
        dark_mean,
        flat_means,
        start_doc,
        tile_positions,
    )

    storage = open_storage(data_dir=args.data_dir, uri=args.tiled_uri)
    try:
        if args.input not in storage.client:
            raise CLIError(f"{args.input!r} is neither an HDF5 file nor a run uid in {storage.uri}")
        run = storage.client[args.input]
        start = start_doc(run)
        if start.get("purpose") != "xanes_imaging":
            raise CLIError(f"run {args.input}: purpose {start.get('purpose')!r}; expected 'xanes_imaging'")
        positions = tile_positions(run)
        sources, energies = [], None
        for t in range(len(positions)):
            e, mu = absorbance_stack(run, t)
            if energies is not None and not np.array_equal(e, energies):
                raise CLIError(f"run {args.input}: tile {t} has a different set of energies than tile 0")
            energies = e
            sources.append(ArrayStack(mu))
        pixel = start.get("tiles", {}).get("pixel_size_um")
        if args.i0 is not None:
            i0, model = args.i0, {"source": "--i0", "i0_counts": np.atleast_1d(args.i0).tolist()}
        else:
            if (
                start.get("i0") is None
                and (start.get("noise_model") or {}).get("i0_counts_per_energy") is None
            ):
                raise CLIError(f"run {args.input}: give --i0; the start document has no i0")
            try:
                counts, source = run_incident_counts(start)
            except ValueError as exc:
                raise CLIError(str(exc)) from exc
            n = len(start["energies"])
            flats = flat_incident_counts(flat_means(run), dark_mean(run), n)
            i0, model = choose_incident_counts(counts, source, flats)
        if np.ndim(i0) == 1 and len(i0) != len(energies):
            raise CLIError(
                f"run {args.input}: {len(i0)} incident counts (one per energy of the run) but tile 0 has "
                f"{len(energies)} frames; give a single --i0"
            )
        return _Input(
            sources, energies, i0, [tuple(p) for p in positions], pixel, model, run_noise_model(start)
        )
    finally:
        storage.close()


def build_sites(
    sources: list[Any],
    energies: Any,
    i0: Any,
    library: Path | None,
    references: list[str] | None,
    draws: int,
    noise: Any = None,
) -> Any:
    """Library sites on the data's energies, scaled to the data's typical absorbance level and edge jump;
    ``noise`` is the detector's :class:`~xbeam_bluesky.spectra.PhotonNoiseModel` (None: the sCMOS defaults)."""
    import numpy as np

    from xbeam_bluesky.clustering import sites_from_library
    from xbeam_bluesky.spectra import PhotonNoiseModel, aligned_library, load_library

    lib = aligned_library(load_library(library), energies)
    names, matrix = list(lib.names), lib.matrix
    if references:
        missing = sorted(set(references) - set(names))
        if missing:
            raise CLIError(f"--references {missing} not found in the library (or not covering the energies)")
        keep = [names.index(r) for r in references]
        names, matrix = [names[k] for k in keep], matrix[keep]
    if not names:
        raise CLIError("the library has no spectrum covering the stack's energies")
    first = sources[0]
    sample = np.asarray(first.read_rows(0, min(first.shape[1], 64)), dtype=np.float64)
    spectra = sample.reshape(sample.shape[0], -1).T
    spectra = spectra[np.all(np.isfinite(spectra), axis=1)]
    spread = np.linalg.norm(spectra - spectra.mean(axis=1, keepdims=True), axis=1)
    spectra = spectra[spread > 0]
    if spectra.size == 0:
        raise CLIError("the stack's first rows hold no finite, non-flat spectrum to scale the library to")
    ref_spread = np.median(np.linalg.norm(matrix - matrix.mean(axis=1, keepdims=True), axis=1))
    jump = float(np.median(spread[spread > 0]) / ref_spread)
    offset = float(np.median(spectra.mean(axis=1)) - jump * matrix.mean())
    logger.info("library scaled to the data: edge jump %.3g, offset %.3g (μt)", jump, offset)
    try:
        return sites_from_library(
            energies, matrix, names, i0_counts=i0, noise=noise or PhotonNoiseModel(), mu_offset=offset, edge_jump=jump,
            n_draws=draws,
        )  # fmt: skip
    except ValueError as exc:
        if "i0_counts" in str(exc):
            raise CLIError(
                f"incident counts (--i0, the run or the /stack attribute i0_counts): {exc}"
            ) from exc
        raise


def dask_map(client: Any) -> Any:
    """A ``map_fn`` running jobs on a ``dask.distributed.Client`` (results as they finish)."""
    from dask.distributed import as_completed

    def map_fn(function: Any, jobs: list) -> Any:
        futures = client.map(function, jobs, pure=False)
        for future in as_completed(futures):
            yield future.result()

    return map_fn


def write_result(path: Path, result: Any, energies: Any, i0_model: dict | None = None) -> None:
    """Write labels, confidence, spectra and the summary to an HDF5 file."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=result.labels, compression="gzip")
        f.create_dataset("raw_labels", data=result.raw_labels, compression="gzip")
        f.create_dataset("confidence", data=result.confidence, compression="gzip")
        f.create_dataset("novel", data=result.novel, compression="gzip")
        f.create_dataset("masked", data=result.masked, compression="gzip")
        f["spectra"] = result.spectra
        f["energy"] = np.asarray(energies, dtype=float)
        f["cluster_names"] = np.array(result.sites.cluster_names, dtype=h5py.string_dtype())
        f["site_spectra"] = result.sites.mu_t
        f["site_groups"] = result.sites.groups
        f["i0_counts"] = np.atleast_1d(result.sites.i0_counts)
        if i0_model is not None:
            f.attrs["i0_model"] = json.dumps(i0_model)
        f.attrs["summary"] = json.dumps(result.summary())
        f.attrs["labels"] = "0 = unassigned/masked; k = cluster k (cluster_names[k-1], spectra[k-1])"


def _run(args: argparse.Namespace) -> int:
    from xbeam_bluesky.clustering import cluster_tiles

    path = Path(args.input)
    out = check_output(args.out, [path] if path.exists() else [])
    if args.i0 is not None:
        args.i0 = _parse_i0(args.i0)
    if path.suffix.lower() in (".h5", ".hdf5", ".nxs") or path.exists():
        data = _hdf5_input(path, args.i0)
    else:
        data = _run_input(args)
    references = [r.strip() for r in args.references.split(",")] if args.references else None
    sites = build_sites(
        data.sources, data.energies, data.i0, args.library, references, args.draws, data.noise
    )
    client = None
    if args.dask:
        from dask.distributed import Client

        try:
            client = Client(args.dask, timeout=30)
        except OSError as exc:
            raise CLIError(f"--dask {args.dask}: cannot reach the scheduler ({exc})") from exc
    try:
        result = cluster_tiles(
            data.sources, sites, centers_mm=data.centers, pixel_um=data.pixel_um, denoise=not args.no_denoise,
            discover=not args.no_discover, window=args.window, min_count=args.min_count,
            memory_bytes=int(args.memory_mb * 2**20), map_fn=dask_map(client) if client else None,
            n_threads=1 if client else 2,
        )  # fmt: skip
    finally:
        if client is not None:
            client.close()
    with atomic_output(out) as tmp:
        write_result(tmp, result, data.energies, data.i0_model)
    print(json.dumps({**result.summary(), "i0_model": data.i0_model["source"], "out": str(args.out)}))
    return 0
