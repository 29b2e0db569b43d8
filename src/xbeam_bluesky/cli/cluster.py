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
from xbeam_bluesky.cli._args import number
from xbeam_bluesky.errors import XbeamInputError

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
        help="a stack file — aXis2000 .hdr (+ its .xim images), multi-page .tif (+ --energies), NeXus NXstxm / "
        "Data Exchange .h5/.nxs, or HDF5 with /stack (energy, y, x) absorbance μt and /energy (eV) — or the uid "
        "of a xanes_imaging run in tiled",
    )
    p.add_argument(
        "--energies",
        type=Path,
        help="energy list (eV, one per line) of a TIFF stack (default: a .txt next to it)",
    )
    p.add_argument(
        "--tiff-kind",
        choices=("counts", "od"),
        default="counts",
        help="what a TIFF stack holds (default counts)",
    )
    p.add_argument(
        "--noise",
        choices=("photon", "scmos", "estimate"),
        help="detector noise model: photon (gain 1: STXM, photon-counting pixel detectors), scmos (gain 9.31, "
        "offset -63, flats averaged), estimate (fitted to the data's own scatter; needs no --i0). Default: photon "
        "for transmitted-count stacks, the run's model for a run, scmos for an absorbance HDF5",
    )
    p.add_argument(
        "--i0-region",
        default="auto",
        metavar="auto|Y0:Y1,X0:X1",
        help="for transmitted counts without I0: the off-sample region giving I0 per energy, 'auto' = the "
        "brightest --i0-fraction of the pixels (default), or a pixel box",
    )
    p.add_argument(
        "--i0-fraction",
        type=number(float, 0, 1, low_open=True),
        default=0.1,
        help="share of pixels in the automatic I0 region (default 0.1)",
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
        "flat-field counts when those differ by more than 2 %%; for transmitted counts: the I0 used for the OD; "
        "for an absorbance HDF5: the /stack attribute i0_counts); not used by --noise estimate",
    )
    p.add_argument("--no-denoise", action="store_true", help="skip spatial denoising")
    p.add_argument("--no-discover", action="store_true", help="do not open sites for unexplained regions")
    p.add_argument(
        "--window",
        type=number(int, 1, odd=True),
        default=5,
        help="denoising seed window side, pixels (default 5)",
    )
    p.add_argument(
        "--min-count", type=number(int, 1), default=23, help="denoising seed threshold (default 23)"
    )
    p.add_argument(
        "--element",
        help="absorbing element (e.g. Fe): pixels without a detected edge jump become 'no <element>' and are not "
        "clustered (default: the element whose tabulated K or L3 edge lies inside the stack's energies; 'none' "
        "clusters every pixel)",
    )
    p.add_argument(
        "--min-jump-od",
        type=float,
        default=0.0,
        help="OD floor on the edge jump besides its significance (3.09 standard errors; default 0: significance only)",
    )
    p.add_argument(
        "--split",
        action="store_true",
        help="split clusters whose spatially coherent parts differ beyond the noise of their means (one tile)",
    )
    p.add_argument(
        "--baseline-degree",
        type=int,
        choices=(0, 1, 2, 3),
        default=1,
        help="degree of each pixel's polynomial baseline in energy removed before clustering (default 1: a "
        "straight line, the slowly varying absorption of everything but the edge; 0: only a constant)",
    )
    p.add_argument(
        "--memory-mb",
        type=number(float, 0, low_open=True),
        default=256.0,
        help="bound on one block read, MB (default 256)",
    )
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
    size (µm), how the incident counts were chosen, the detector noise model (None: the sCMOS defaults), and for a
    run the pipeline and the record of :func:`~xbeam_bluesky.callbacks.run_pipeline`."""

    sources: list[Any]
    energies: Any
    i0: Any
    centers: list
    pixel_um: float | None
    i0_model: dict
    noise: Any = None
    pipeline: Any = None
    record: dict | None = None


def _i0_region(text: str, shape: tuple[int, int]) -> Any:
    """``--i0-region``: None for 'auto', else a (ny, nx) mask of the box ``Y0:Y1,X0:X1``."""
    import numpy as np

    if text == "auto":
        return None
    try:
        (y0, y1), (x0, x1) = ([int(v) for v in part.split(":")] for part in text.split(","))
    except ValueError:
        raise CLIError(f"--i0-region {text!r}: expected 'auto' or a pixel box Y0:Y1,X0:X1") from None
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    if not mask.any():
        raise CLIError(f"--i0-region {text!r}: the box holds no pixel of the {shape[0]}×{shape[1]} image")
    return mask


def _file_input(path: Path, args: argparse.Namespace) -> _Input:
    """A stack file: transmitted counts become OD with the format's I0 or the off-sample region's; the noise
    model is chosen by ``--noise`` (recorded in ``i0_model``)."""
    import numpy as np

    from xbeam_bluesky.clustering import ArrayStack
    from xbeam_bluesky.spectra import (
        IncidentCounts,
        bright_region_i0,
        estimate_noise,
        noise_model,
        optical_density,
        read_stack,
    )

    stack = read_stack(path, energies=args.energies, kind=args.tiff_kind)
    record: dict[str, Any] = {"file": stack.provenance}
    flats = 1
    if stack.kind == "counts":
        if stack.i0 is not None:
            incident = IncidentCounts(stack.i0, 1, f"{stack.provenance['format']} I0")
        else:
            try:
                incident = bright_region_i0(
                    stack.frames, mask=_i0_region(args.i0_region, stack.shape[1:]), fraction=args.i0_fraction
                )
            except XbeamInputError as exc:
                raise CLIError(f"{path}: {exc}") from exc
        od = optical_density(stack.frames, incident.counts)
        record["od_i0"] = incident.record()
        counts: Any = incident.counts
        source, flats = f"the I0 of the OD ({incident.source})", incident.n_pixels
    else:
        od = stack.frames
        counts = stack.i0
        source = "file I0 (" + str(stack.provenance.get("i0")) + ")"
    kind = args.noise or ("photon" if stack.kind == "counts" else "scmos")
    if args.i0 is not None:
        counts, source = args.i0, "--i0"
    if kind == "estimate":
        order = np.argsort(stack.energies, kind="stable")
        ref = float(np.mean(counts)) if counts is not None else 1.0
        try:
            model = estimate_noise(od[order], stack.energies[order], i0_ref=ref)
        except XbeamInputError as exc:
            raise CLIError(f"{path}: --noise estimate: {exc}") from exc
        counts, source = ref, "estimated from the data (i0_ref)"
    else:
        if counts is None:
            raise CLIError(
                f"{path}: give --i0 (incident counts per pixel per frame) for --noise {kind}; the file records "
                "none (or use --noise estimate)"
            )
        model = noise_model(kind, flat_frames=flats)
    value = float(counts) if np.ndim(counts) == 0 or np.size(counts) == 1 else np.asarray(counts, dtype=float)
    if np.ndim(value) == 0:
        value = float(np.ravel(value)[0])
    record.update(
        {
            "source": source,
            "i0_counts": np.atleast_1d(value).tolist(),
            "noise": kind,
            "noise_model": model.as_dict(),
        }
    )
    logger.info("noise model %s: %s", kind, model)
    return _Input([ArrayStack(od)], stack.energies, value, [(0.0, 0.0)], stack.pixel_um, record, model)


def _options(args: argparse.Namespace, references: list[str] | None) -> Any:
    """The command's options as the :class:`~xbeam_bluesky.callbacks.ClusteringOptions` the live callback uses."""
    from xbeam_bluesky.callbacks.clustering import ClusteringOptions

    return ClusteringOptions(
        references=tuple(references) if references else None, noise=args.noise, i0=args.i0,
        denoise=not args.no_denoise, discover=not args.no_discover, window=args.window, min_count=args.min_count,
        element=args.element, min_jump_od=args.min_jump_od, split=args.split, baseline_degree=args.baseline_degree,
        memory_mb=args.memory_mb,
    )  # fmt: skip


def _run_input(args: argparse.Namespace, references: list[str] | None) -> _Input:
    """A tiled run: its tiles corrected as the live callback corrects them, clustered by the same
    :func:`~xbeam_bluesky.callbacks.run_pipeline` (same defaults: the run's references, noise model, counts)."""
    import numpy as np

    from xbeam_bluesky.callbacks.clustering import run_pipeline
    from xbeam_bluesky.clustering import ArrayStack
    from xbeam_bluesky.spectra import correct_frame
    from xbeam_bluesky.storage import open_storage
    from xbeam_bluesky.storage.readback import (
        dark_mean,
        flat_means,
        start_doc,
        tile_positions,
        tile_stack,
    )

    storage = open_storage(data_dir=args.data_dir, uri=args.tiled_uri)
    try:
        if args.input not in storage.client:
            raise CLIError(f"{args.input!r} is neither an HDF5 file nor a run uid in {storage.uri}")
        run = storage.client[args.input]
        start = start_doc(run)
        if start.get("purpose") != "xanes_imaging":
            raise CLIError(f"run {args.input}: purpose {start.get('purpose')!r}; expected 'xanes_imaging'")
        if args.i0 is None and start.get("i0") is None and \
                (start.get("noise_model") or {}).get("i0_counts_per_energy") is None:  # fmt: skip
            raise CLIError(f"run {args.input}: give --i0; the start document has no i0")
        positions = tile_positions(run)
        dark, flats = dark_mean(run), flat_means(run)
        sources, index = [], None
        for t in range(len(positions)):
            stack = tile_stack(run, t)
            if index is not None and not np.array_equal(stack.energy_index, index):
                raise CLIError(f"run {args.input}: tile {t} has a different set of energies than tile 0")
            index = stack.energy_index
            missing = sorted(set(index.tolist()) - set(flats))
            if missing:
                raise CLIError(f"run {args.input}: no flat frames for energy indices {missing}")
            mu = np.stack(
                [correct_frame(f, flats[int(ie)], dark) for f, ie in zip(stack.frames, index, strict=True)]
            )
            sources.append(ArrayStack(mu))
        assert index is not None
        pipeline, record = run_pipeline(
            start, sources, index.tolist(), flats, dark, library_dir=args.library,
            options=_options(args, references),
        )  # fmt: skip
        pixel = start.get("tiles", {}).get("pixel_size_um")
        return _Input(sources, pipeline.energies, pipeline.i0_counts, [tuple(p) for p in positions], pixel,
                      {**record["i0_model"], "noise": record["noise"], "noise_model": record["noise_model"]},
                      pipeline.noise, pipeline, record)  # fmt: skip
    finally:
        storage.close()


def dask_map(client: Any) -> Any:
    """A ``map_fn`` running jobs on a ``dask.distributed.Client`` (results as they finish)."""
    from dask.distributed import as_completed

    def map_fn(function: Any, jobs: list) -> Any:
        futures = client.map(function, jobs, pure=False)
        for future in as_completed(futures):
            yield future.result()

    return map_fn


def write_result(
    path: Path, result: Any, energies: Any, i0_model: dict | None = None, record: dict | None = None
) -> None:
    """Write labels, confidence, spectra and the summary to an HDF5 file (with the record of the choices of
    :func:`~xbeam_bluesky.callbacks.run_pipeline` for a run)."""
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
        f["cluster_names"] = np.array(result.cluster_names, dtype=h5py.string_dtype())
        f["site_spectra"] = result.sites.mu_t
        f["site_groups"] = result.sites.groups
        f["i0_counts"] = np.atleast_1d(result.sites.i0_counts)
        if i0_model is not None:
            f.attrs["i0_model"] = json.dumps(i0_model)
        if record is not None:
            f.attrs["clustering_record"] = json.dumps(record)
        f.attrs["summary"] = json.dumps(result.summary())
        f.attrs["labels"] = "0 = unassigned/masked; k = cluster k (cluster_names[k-1], spectra[k-1])"


def _pipeline(data: _Input, args: argparse.Namespace, references: list[str] | None) -> Any:
    """The :class:`~xbeam_bluesky.clustering.ClusteringPipeline` of this command: sites from the data, the library
    (``--library``, ``--references``) seeding and naming them."""
    from xbeam_bluesky.clustering import ClusteringPipeline
    from xbeam_bluesky.spectra import PhotonNoiseModel, absorbing_edge, aligned_library, load_library

    lib = aligned_library(load_library(args.library), data.energies)
    names, matrix = list(lib.names), lib.matrix
    if references:
        missing = sorted(set(references) - set(names))
        if missing:
            raise CLIError(f"--references {missing} not found in the library (or not covering the energies)")
        keep = [names.index(r) for r in references]
        names, matrix = [names[k] for k in keep], matrix[keep]
    element, edge = absorbing_edge(data.energies, args.element)
    try:
        return ClusteringPipeline(
            data.energies, data.i0, data.noise or PhotonNoiseModel(), tuple(names), matrix,
            denoise=not args.no_denoise, discover=not args.no_discover, window=args.window,
            min_count=args.min_count, memory_bytes=int(args.memory_mb * 2**20),
            element=element, edge_ev=edge, min_jump_od=args.min_jump_od, split=args.split,
            baseline_degree=args.baseline_degree,
        )  # fmt: skip
    except XbeamInputError as exc:
        if "i0_counts" in str(exc):
            raise CLIError(
                f"incident counts (--i0, the run or the /stack attribute i0_counts): {exc}"
            ) from exc
        raise


def _run(args: argparse.Namespace) -> int:
    path = Path(args.input)
    out = check_output(args.out, [path] if path.exists() else [])
    if args.i0 is not None:
        args.i0 = _parse_i0(args.i0)
    from xbeam_bluesky.spectra.stack_io import STACK_SUFFIXES

    references = [r.strip() for r in args.references.split(",")] if args.references else None
    if path.exists() or path.suffix.lower() in STACK_SUFFIXES:
        data = _file_input(path, args)
        pipeline = _pipeline(data, args, references)
    else:
        data = _run_input(args, references)
        pipeline = data.pipeline
    client = None
    if args.dask:
        from dask.distributed import Client

        try:
            client = Client(args.dask, timeout=30)
        except OSError as exc:
            raise CLIError(f"--dask {args.dask}: cannot reach the scheduler ({exc})") from exc
    try:
        result = pipeline.cluster(
            data.sources, centers_mm=data.centers, pixel_um=data.pixel_um,
            map_fn=dask_map(client) if client else None, n_threads=1 if client else 2,
        )  # fmt: skip
    finally:
        if client is not None:
            client.close()
    with atomic_output(out) as tmp:
        write_result(tmp, result, data.energies, data.i0_model, data.record)
    print(json.dumps({**result.summary(), "i0_model": data.i0_model["source"],
                      "noise": data.i0_model.get("noise", "run"), "out": str(args.out)}))  # fmt: skip
    return 0
