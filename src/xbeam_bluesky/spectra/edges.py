"""Tabulated K-edge energies of the first-row transition metals."""

from __future__ import annotations

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


def edge_energy(edge: str) -> float:
    """Tabulated edge energy in eV for an edge name such as ``"Fe-K"`` (case-insensitive)."""
    for name, energy in K_EDGES_EV.items():
        if name.lower() == edge.strip().lower():
            return energy
    raise ValueError(f"unknown absorption edge {edge!r}; expected one of {', '.join(K_EDGES_EV)}")
