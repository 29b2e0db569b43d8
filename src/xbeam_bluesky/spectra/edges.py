"""Tabulated K- and L3-edge energies of the first-row transition metals, and the edge inside a stack's energies."""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike

from xbeam_bluesky.errors import XbeamInputError

logger = logging.getLogger(__name__)

#: K-edge energies (eV) of the elemental metals (Bearden & Burr, as tabulated by Athena/xraydb).
K_EDGES_EV: dict[str, float] = {
    "Ti-K": 4966.0,
    "V-K": 5465.0,
    "Cr-K": 5989.0,
    "Mn-K": 6539.0,
    "Fe-K": 7112.0,
    "Co-K": 7709.0,
    "Ni-K": 8333.0,
    "Cu-K": 8979.0,
    "Zn-K": 9659.0,
}

#: L3-edge energies (eV) of the same metals (Bearden & Burr, X-ray Data Booklet table 1-1).
L3_EDGES_EV: dict[str, float] = {
    "Ti-L3": 453.8, "V-L3": 512.1, "Cr-L3": 574.1, "Mn-L3": 638.7, "Fe-L3": 706.8, "Co-L3": 778.1,
    "Ni-L3": 852.7, "Cu-L3": 932.7, "Zn-L3": 1021.8,
}  # fmt: skip


def edge_energy(edge: str) -> float:
    """Tabulated edge energy in eV for an edge name such as ``"Fe-K"`` or ``"Fe-L3"`` (case-insensitive)."""
    for name, energy in {**K_EDGES_EV, **L3_EDGES_EV}.items():
        if name.lower() == edge.strip().lower():
            return energy
    raise XbeamInputError(
        f"unknown absorption edge {edge!r}; expected one of {', '.join([*K_EDGES_EV, *L3_EDGES_EV])}"
    )


def absorbing_edge(energies: ArrayLike, element: str | None = None) -> tuple[str | None, float | None]:
    """The absorbing element of a stack and its edge energy.

    Parameters
    ----------
    energies
        The stack's energies, eV.
    element
        ``None``: the element whose one tabulated K or L3 edge lies inside the energies (none or several: no
        element). ``"none"``: no element. A symbol such as ``"Fe"``: that element, with its tabulated edge inside
        the energies if there is one (else ``None``: its jump is then detected with a library's shape).

    Returns
    -------
    element, edge_eV
        Element symbol (or ``None``) and edge energy in eV (or ``None``).
    """
    e = np.asarray(energies, dtype=float)
    lo, hi = float(np.min(e)), float(np.max(e))
    inside = {name: v for name, v in {**L3_EDGES_EV, **K_EDGES_EV}.items() if lo < v < hi}
    if element is not None:
        if element.strip().lower() == "none":
            return None, None
        symbol = element.strip().split("-")[0]
        edge = next((v for name, v in inside.items() if name.split("-")[0] == symbol), None)
        if edge is None:
            logger.info("element %s: no tabulated edge inside %.1f-%.1f eV; its jump is detected with the "
                        "library's shape", symbol, lo, hi)  # fmt: skip
        return symbol, edge
    if len(inside) != 1:
        logger.info(
            "no single tabulated edge inside %.1f-%.1f eV (%s): every pixel is clustered", lo, hi, inside
        )
        return None, None
    ((name, edge),) = inside.items()
    return name.split("-")[0], edge
