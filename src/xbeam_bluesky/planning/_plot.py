"""Figures of energy designs: the spectrum objective (prior, points, dwell, error curve) and the phase-map one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from xbeam_bluesky.planning._design import EnergyDesign
from xbeam_bluesky.planning._map_design import MapDesign, PhaseCandidates
from xbeam_bluesky.planning._prior import GaussianProcessPrior


def plot_design(design: EnergyDesign, prior: GaussianProcessPrior, path: str | Path) -> Path:
    """Save a three-panel PNG/PDF/SVG (by suffix) of the design and return its path.

    Top: prior mean ± 1 std over the candidate grid with the chosen energies. Middle: dwell per energy (s).
    Bottom: expected RMSE versus beam time, with its bias and variance parts at the checkpoints.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.asarray(prior.energies_eV)
    mean, std = np.asarray(prior.mean), np.asarray(prior.std)
    fig, (ax0, ax1, ax2) = plt.subplots(3, 1, figsize=(8, 9), gridspec_kw={"height_ratios": [3, 1.4, 2]})
    ax0.fill_between(e, mean - std, mean + std, color="tab:blue", alpha=0.25, label="prior ± 1 std")
    ax0.plot(e, mean, color="tab:blue", label=f"prior mean ({len(prior.names)} spectra)")
    ax0.plot(
        design.energies_eV,
        np.interp(design.energies_eV, e, mean),
        "o",
        ms=3,
        color="tab:red",
        label=f"{design.energies_eV.size} design energies",
    )
    ax0.set_ylabel("normalized μ" if prior.units == "normalized" else "μt")
    ax0.set_title(
        f"{design.criterion}-optimal design: {design.total_time_s:.1f} s, expected RMSE {design.expected_rmse:.4f}"
    )
    ax0.legend(loc="lower right", fontsize=8)
    ax1.vlines(design.energies_eV, 0, design.dwell_s, color="tab:red")
    ax1.set_ylabel("dwell (s)")
    ax1.set_xlabel("energy (eV)")
    ax1.set_xlim(ax0.get_xlim())
    ax2.plot(design.curve["time_s"], design.curve["expected_rmse"], color="k", label="expected RMSE")
    bv = design.bias_variance
    ax2.plot(bv["time_s"], bv["bias_rmse"], "s--", ms=4, color="tab:orange", label="bias part")
    ax2.plot(bv["time_s"], bv["variance_rmse"], "^--", ms=4, color="tab:green", label="variance part")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("beam time (s)")
    ax2.set_ylabel("RMSE (normalized)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_map_design(
    design: MapDesign, candidates: PhaseCandidates, grid_eV: NDArray, path: str | Path
) -> Path:
    """Save a three-panel figure of a phase-map design and return its path.

    Top: the candidate spectra with the chosen energies. Middle: dwell per energy (s). Bottom: the weakest
    phase pairs' expected separation D with the target.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.asarray(grid_eV)
    fig, (ax0, ax1, ax2) = plt.subplots(3, 1, figsize=(8, 10), gridspec_kw={"height_ratios": [3, 1.4, 2.4]})
    for name, spectrum, kind in zip(candidates.names, candidates.spectra, candidates.kind, strict=True):
        mixture = kind == "mixture"
        ax0.plot(
            e,
            spectrum,
            lw=0.6 if mixture else 1.0,
            alpha=0.4 if mixture else 0.9,
            label=None if mixture else name,
        )
    for energy in design.energies_eV:
        ax0.axvline(energy, color="tab:red", lw=0.6, alpha=0.6)
    ax0.set_ylabel("normalized μ")
    if len(candidates.names) <= 12:
        ax0.legend(fontsize=7, loc="lower right")
    ax0.set_title(
        f"phase-map design: {design.energies_eV.size} energies, {design.total_time_s:.1f} s, "
        f"{candidates.n_phases} phases, weakest D = {design.min_separation:.2f}"
    )
    ax1.vlines(design.energies_eV, 0, design.dwell_s, color="tab:red")
    ax1.set_ylabel("dwell (s)")
    ax1.set_xlabel("energy (eV)")
    ax1.set_xlim(ax0.get_xlim())
    weakest = design.pairs[:12][::-1]
    ax2.barh(
        [f"{p['a']} / {p['b']}"[:60] for p in weakest], [p["separation"] for p in weakest], color="tab:blue"
    )
    if design.target_separation is not None:
        ax2.axvline(
            design.target_separation, color="k", ls="--", label=f"target D = {design.target_separation:g}"
        )
        ax2.legend(fontsize=8)
    ax2.set_xlabel("expected separation D (weakest pairs)")
    ax2.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
