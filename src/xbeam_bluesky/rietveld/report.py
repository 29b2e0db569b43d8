"""Refinement reports: the plot of observed, calculated, difference and reflection ticks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._result import RefinementResult

__all__ = ["plot_fit"]


def plot_fit(result: RefinementResult, path: str | Path, title: str | None = None) -> Path:
    """Save the Rietveld plot (observed points, calculated and background curves, difference, ticks).

    Parameters
    ----------
    result
        A finished refinement.
    path
        Output image file (format from the extension, e.g. ``fit.png``).
    title
        Plot title; default lists the phases and Rwp.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = result.two_theta
    yo = result.observed
    yc = result.calculated
    diff = yo - yc
    fig, ax = plt.subplots(figsize=(11, 5.5), constrained_layout=True)
    ax.plot(x, yo, "+", ms=3, color="tab:blue", label="observed")
    ax.plot(x, yc, "-", lw=0.9, color="tab:red", label="calculated")
    ax.plot(x, result.background_curve, "-", lw=0.7, color="tab:green", label="background")
    span = float(np.nanmax(yo) - np.nanmin(yo)) or 1.0
    offset = float(np.nanmin(yo)) - 0.15 * span
    ax.plot(x, diff + offset, "-", lw=0.7, color="0.3", label="difference")
    colors = ["tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive"]
    for k, (ticks, phase) in enumerate(zip(result.ticks, result.phases, strict=True)):
        level = offset - 0.10 * span * (k + 1) + 0.5 * float(np.min(diff))
        ax.plot(
            ticks,
            np.full(len(ticks), level),
            "|",
            ms=8,
            color=colors[k % len(colors)],
            label=f"{phase['name']} reflections",
        )
    names = ", ".join(p["name"] for p in result.phases)
    ax.set_title(title or f"{names}: Rwp {result.rwp:.2f} %, GOF {result.gof:.2f} ({result.status})")
    ax.set_xlabel("2θ (deg)")
    ax.set_ylabel("counts")
    ax.set_xlim(float(x[0]), float(x[-1]))
    ax.legend(loc="upper right", fontsize=8)
    out = Path(path)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
