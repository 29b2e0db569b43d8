"""The ``xbeam demo`` report: the conventional-grid baseline of the energy design and the one-page PNG.

Everything is read back from tiled (raw runs and analysis results), so the figure shows what was stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Fe K edge energy (eV) of the demo.
E0_EV = 7112.0


def conventional_baseline(edge_step_eV: float) -> list[float]:
    """A conventional imaging-beamline Fe K grid over the design's candidate range (eV): 10 eV pre-edge steps,
    ``edge_step_eV`` from E0 − 12 to E0 + 28 eV, 0.15 Å⁻¹ steps in k above, snapped to the candidate grid."""
    from xbeam_bluesky.planning import candidate_grid, conventional_grid, default_range

    grid = candidate_grid(*default_range(E0_EV))
    energies = conventional_grid(
        E0_EV, grid[0], grid[-1], pre_step_eV=10.0, edge_from_eV=-12.0, edge_to_eV=28.0,
        edge_step_eV=edge_step_eV, k_step_per_A=0.15, snap_to=grid,
    )  # fmt: skip
    return [float(e) for e in energies]


def _edge_jump_mosaic(run: Any) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    from xbeam_bluesky.spectra import correct_frame
    from xbeam_bluesky.storage import dark_mean, energies, flat_means, start_doc, tile_positions, tile_stack

    start = start_doc(run)
    e0 = start["e0"]
    positions = tile_positions(run)
    pixel_mm = start["tiles"]["pixel_size_um"] / 1000.0
    ny, nx = start["tiles"]["frame_shape"]
    cols = np.rint((positions[:, 0] - positions[:, 0].min()) / pixel_mm).astype(int)
    rows = np.rint((positions[:, 1] - positions[:, 1].min()) / pixel_mm).astype(int)
    mosaic = np.full((rows.max() + ny, cols.max() + nx), np.nan, dtype=np.float32)
    flats, dark = flat_means(run), dark_mean(run)
    e = energies(run)
    pre = np.flatnonzero(e < e0 - 10) if np.any(e < e0 - 10) else [int(np.argmin(e))]
    post = np.flatnonzero(e > e0 + 25) if np.any(e > e0 + 25) else [int(np.argmax(e))]
    for it in range(len(positions)):
        tile = tile_stack(run, it)
        mu = {
            int(ie): correct_frame(f, flats[int(ie)], dark)
            for f, ie in zip(tile.frames, tile.energy_index, strict=True)
        }
        jump = np.mean([mu[i] for i in post], axis=0) - np.mean([mu[i] for i in pre], axis=0)
        mosaic[rows[it] : rows[it] + ny, cols[it] : cols[it] + nx] = jump
    x0, y0 = positions[:, 0].min() - nx * pixel_mm / 2, positions[:, 1].min() - ny * pixel_mm / 2
    return mosaic, (x0, x0 + mosaic.shape[1] * pixel_mm, y0, y0 + mosaic.shape[0] * pixel_mm)


def short_name(name: str, width: int = 26) -> str:
    """A cluster name for a legend: the first member of a merged group, with the number of the others."""
    members = name.split("/")
    head = members[0].removeprefix("larch_")
    text = head if len(members) == 1 else f"{head} +{len(members) - 1}"
    return text if len(text) <= width else text[: width - 1] + "…"


def _message(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, wrap=True)
    ax.set_axis_off()


def _plot_frames(fig: Any, axes: Any, run: Any) -> None:
    from xbeam_bluesky.storage import start_doc, tile_stack

    start = start_doc(run)
    e0 = start["e0"]
    dwell = start["dwell"]
    stack = tile_stack(run, 0)
    picks = sorted({int(np.argmin(np.abs(stack.energies_eV - e))) for e in (e0 - 30, e0 + 5, e0 + 60)})
    for ax, k in zip(axes, picks + picks[-1:] * (3 - len(picks)), strict=True):
        ie = int(stack.energy_index[k])
        exposure = dwell[ie] if isinstance(dwell, list) else dwell
        im = ax.imshow(stack.frames[k], cmap="gray", origin="lower", interpolation="nearest")
        ax.set_title(f"raw frame, tile 0, {stack.energies_eV[k]:.1f} eV, {exposure:.2g} s", fontsize=11)
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
        fig.colorbar(im, ax=ax, shrink=0.85, label="counts (ADU)")


def _plot_clusters(fig: Any, ax_map: Any, ax_spec: Any, node: Any) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if node is None or node.metadata.get("status") != "success":
        reason = "no result" if node is None else node.metadata.get("error", "failed")
        _message(ax_map, f"live clustering: {reason}")
        _message(ax_spec, "")
        return
    md = node.metadata
    labels = np.asarray(node["labels"].read())
    spectra = np.asarray(node["spectra"].read())
    energies = np.asarray(node["energies"].read())
    clusters = md["summary"]["clusters"]
    colors = plt.get_cmap("tab10")(np.arange(10))
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, int)
    for i, c in enumerate(clusters):
        if c["label"] < lut.size:
            lut[c["label"]] = i + 1
    cmap = ListedColormap(np.vstack([[0.15, 0.15, 0.15, 1], colors[np.arange(max(len(clusters), 1)) % 10]]))
    p_mm = md["pixel_size_um"] / 1000.0
    x0, y0 = md["mosaic_origin_mm"]
    extent = (x0, x0 + labels.shape[1] * p_mm, y0, y0 + labels.shape[0] * p_mm)
    ax_map.imshow(lut[labels], cmap=cmap, vmin=0, vmax=max(len(clusters), 1), origin="lower", extent=extent,
                  interpolation="nearest")  # fmt: skip
    ax_map.set_title(f"live clustering: {len(clusters)} phases (mosaic)", fontsize=11)
    ax_map.set_xlabel("stage x (mm)")
    ax_map.set_ylabel("stage y (mm)")
    unassigned = md["summary"]["unassigned_fraction"]
    handles = [Patch(color=[0.15, 0.15, 0.15], label=f"unassigned  {100 * unassigned:.1f} %")]
    order = np.argsort(energies)
    for i, c in enumerate(clusters):
        color = colors[i % 10]
        label = f"{c['label']}: {short_name(c['name'])}  {100 * c['area_fraction']:.2f} %"
        handles.append(Patch(color=color, label=label))
        ax_spec.plot(energies[order], spectra[c["label"] - 1][order], "-", color=color, lw=1.5, label=label)
    ax_map.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncols=2 if len(handles) > 4 else 1,  # room for the XRD panel's title below
        fontsize=8,
        frameon=False,
        title="phase (nearest library references), area fraction",
        title_fontsize=9,
    )
    ax_spec.legend(loc="lower right", fontsize=8)
    ax_spec.set_title("cluster spectra (first singular vector)", fontsize=11)
    ax_spec.set_xlabel("energy (eV)")
    ax_spec.set_ylabel("μt")
    ax_spec.grid(alpha=0.3)


def _plot_design(ax: Any, design: dict[str, Any], comparison: dict[str, Any]) -> None:
    grid = np.asarray(comparison["grid_eV"])
    mean, std = np.asarray(comparison["prior_mean"]), np.asarray(comparison["prior_std"])
    ax.fill_between(grid, mean - std, mean + std, color="0.85", label="prior ±1σ (library)")
    ax.plot(grid, mean, color="0.3", lw=1.2, label="prior mean")
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("normalized μ")
    ax.set_ylim(min(-0.1, float((mean - std).min())), float((mean + std).max()) * 1.1)
    bars = ax.twinx()
    energies, dwell = np.asarray(design["energies_eV"]), np.asarray(design["dwell_s"])
    bars.vlines(energies, 0, dwell, color="tab:red", lw=2, label=f"design: {energies.size} energies")
    conv = np.asarray(comparison["energies_eV"])
    bars.plot(conv, np.full(conv.size, comparison["dwell_s"]), "|", color="tab:blue", ms=8,
              label=f"conventional: {conv.size} energies")  # fmt: skip
    bars.set_ylabel("dwell per energy (s)")
    bars.set_ylim(0, float(max(dwell.max(), comparison["dwell_s"])) * 2.2)
    same = "at the same beam time" if comparison["equal_time"] else "(conventional takes longer)"
    ax.set_title(
        f"energy design: expected RMSE {design['expected_rmse']:.4f}\n"
        f"conventional grid {same}: {comparison['expected_rmse']:.4f}",
        fontsize=10,
    )
    lines = ax.get_legend_handles_labels()
    more = bars.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=7.5, framealpha=0.9)


def _plot_xrd(ax: Any, node: Any, raw: Any) -> None:
    if node is None or node.metadata.get("status") != "success":
        ax.plot(raw.two_theta_deg, raw.counts, lw=0.7, color="k")
        reason = "no result" if node is None else node.metadata.get("error", "failed")
        ax.set_title(f"XRD {', '.join(raw.phases)}: auto-Rietveld {reason}", fontsize=11)
        return
    md = node.metadata
    tt = np.asarray(node["two_theta"].read())
    obs, calc = np.asarray(node["observed"].read()), np.asarray(node["calculated"].read())
    diff = np.asarray(node["difference"].read())
    ax.plot(tt, obs, ".", ms=1.5, color="k", label="observed")
    ax.plot(tt, calc, "-", lw=0.8, color="tab:red", label="calculated")
    if "background" in node:
        ax.plot(tt, np.asarray(node["background"].read()), "-", lw=0.8, color="tab:green", label="background")
    offset = -0.08 * obs.max() - np.abs(diff).max()
    ax.plot(tt, diff + offset, "-", lw=0.6, color="tab:blue", label="observed − calculated (offset)")
    cells = [f"{phase.get('name', '')} {lattice_text(phase)}" for phase in md["refinement"]["phases"]]
    ax.set_title(
        f"XRD ({raw.exposure_s:g} s) with auto-Rietveld fit: Rwp {md['rwp']:.2f} % after {md['n_trials']} "
        f"trials; " + "; ".join(cells),
        fontsize=10,
    )
    ax.set_xlabel("2θ (degrees)")
    ax.set_ylabel("counts")
    ax.legend(loc="upper right", fontsize=8, markerscale=4)


def lattice_text(phase: dict[str, Any]) -> str:
    """``a = 8.48003 ± 0.00002 Å, ...`` for a refined phase record."""
    lat, esd = phase.get("lattice", {}), phase.get("lattice_esd", {})
    return ", ".join(
        f"{k} = {lat[k]:.5f} ± {esd.get(k, float('nan')):.1g} Å" for k in ("a", "b", "c") if k in lat
    )


def write_report(
    path: Path,
    client: Any,
    uids: dict[str, str],
    clustering: Any,
    rietveld: Any,
    comparison: dict[str, Any],
) -> Path:
    """Write the one-page PNG report.

    Parameters
    ----------
    path : pathlib.Path
        PNG to write.
    client
        tiled catalog root.
    uids : dict
        ``{"xanes_imaging": uid, "xrd": uid}``.
    clustering, rietveld
        The analysis result nodes (or None).
    comparison : dict
        :func:`~xbeam_bluesky.planning.conventional_expected_rmse` of the run's design.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xbeam_bluesky.documents import n_tiles
    from xbeam_bluesky.storage import start_doc, xrd_pattern

    run = client[uids["xanes_imaging"]]
    start = start_doc(run)
    fig = plt.figure(figsize=(18, 17))
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1.15, 0.9], hspace=0.42, wspace=0.4, top=0.95)
    _plot_frames(fig, [fig.add_subplot(grid[0, i]) for i in range(3)], run)

    ax_jump = fig.add_subplot(grid[1, 0])
    mosaic, extent = _edge_jump_mosaic(run)
    im = ax_jump.imshow(mosaic, cmap="magma", origin="lower", extent=extent, interpolation="nearest")
    ax_jump.set_title(f"Fe edge jump Δμt, {n_tiles(start)} tiles", fontsize=11)
    ax_jump.set_xlabel("stage x (mm)")
    ax_jump.set_ylabel("stage y (mm)")
    fig.colorbar(im, ax=ax_jump, shrink=0.85, label="Δμt (post − pre edge)")
    _plot_clusters(fig, fig.add_subplot(grid[1, 1]), fig.add_subplot(grid[1, 2]), clustering)

    _plot_design(fig.add_subplot(grid[2, 0]), start["design"], comparison)
    _plot_xrd(fig.add_subplot(grid[2, 1:]), rietveld, xrd_pattern(client[uids["xrd"]]))
    fig.suptitle(
        f"xbeam demo — XANES imaging run {uids['xanes_imaging'][:8]} ({len(start['design']['energies_eV'])} "
        f"designed energies), XRD run {uids['xrd'][:8]}",
        fontsize=14,
        y=0.985,
    )
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
