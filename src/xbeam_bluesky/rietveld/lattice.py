"""Unit-cell metrics and crystal-system constraints.

The lattice is refined through the reciprocal metric tensor in GSAS-II's ``A`` form,
``1/d² = A0 h² + A1 k² + A2 l² + A3 hk + A4 hl + A5 kl`` (Å⁻²), which makes d-spacings linear in the
parameters. Crystal-system constraints are a fixed matrix ``M`` with ``A = M @ p``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "a_to_cell",
    "cell_to_a",
    "inv_d2",
    "lattice_constraint_matrix",
    "metric_tensor",
]


def metric_tensor(cell: np.ndarray) -> np.ndarray:
    """Direct metric tensor G (Å²) of a cell (a, b, c in Å; α, β, γ in degrees)."""
    a, b, c, al, be, ga = np.asarray(cell, dtype=float)
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    return np.array(
        [
            [a * a, a * b * cg, a * c * cb],
            [a * b * cg, b * b, b * c * ca],
            [a * c * cb, b * c * ca, c * c],
        ]
    )


def cell_to_a(cell: np.ndarray) -> np.ndarray:
    """Cell (Å, degrees) to the six ``A`` terms of the reciprocal metric tensor (Å⁻²)."""
    gs = np.linalg.inv(metric_tensor(cell))
    return np.array([gs[0, 0], gs[1, 1], gs[2, 2], 2 * gs[0, 1], 2 * gs[0, 2], 2 * gs[1, 2]])


def a_to_cell(a_terms: np.ndarray) -> np.ndarray:
    """The six ``A`` terms (Å⁻²) back to a cell (a, b, c in Å; α, β, γ in degrees)."""
    a0, a1, a2, a3, a4, a5 = np.asarray(a_terms, dtype=float)
    gs = np.array([[a0, a3 / 2, a4 / 2], [a3 / 2, a1, a5 / 2], [a4 / 2, a5 / 2, a2]])
    g = np.linalg.inv(gs)
    lengths = np.sqrt(np.diag(g))
    alpha = np.degrees(np.arccos(g[1, 2] / (lengths[1] * lengths[2])))
    beta = np.degrees(np.arccos(g[0, 2] / (lengths[0] * lengths[2])))
    gamma = np.degrees(np.arccos(g[0, 1] / (lengths[0] * lengths[1])))
    return np.array([*lengths, alpha, beta, gamma])


def inv_d2(hkl: np.ndarray, a_terms: np.ndarray) -> np.ndarray:
    """1/d² (Å⁻²) for integer reflections ``hkl`` (n, 3)."""
    return hkl_products(hkl) @ np.asarray(a_terms, dtype=float)


def hkl_products(hkl: np.ndarray) -> np.ndarray:
    """The (n, 6) design matrix [h², k², l², hk, hl, kl] so that ``1/d² = hkl_products @ A``."""
    h, k, l = np.asarray(hkl, dtype=float).T  # noqa: E741
    return np.stack([h * h, k * k, l * l, h * k, h * l, k * l], axis=1)


def lattice_constraint_matrix(
    crystal_system: str, unique_axis: str = "b", rhombohedral: bool = False
) -> np.ndarray:
    """Matrix ``M`` (6, n_free) mapping the free lattice parameters to the six ``A`` terms.

    Parameters
    ----------
    crystal_system
        One of triclinic, monoclinic, orthorhombic, tetragonal, trigonal, hexagonal, cubic.
    unique_axis
        Monoclinic unique axis ("a", "b" or "c").
    rhombohedral
        True for a trigonal group in rhombohedral axes (a = b = c, α = β = γ).
    """
    system = crystal_system.lower()
    e = np.eye(6)
    if system == "triclinic":
        return e
    if system == "monoclinic":
        extra = {"a": 5, "b": 4, "c": 3}[unique_axis]
        return e[:, [0, 1, 2, extra]]
    if system == "orthorhombic":
        return e[:, [0, 1, 2]]
    if system == "tetragonal":
        return np.stack([e[0] + e[1], e[2]], axis=1)
    if system in ("trigonal", "hexagonal"):
        if rhombohedral:
            return np.stack([e[0] + e[1] + e[2], e[3] + e[4] + e[5]], axis=1)
        return np.stack([e[0] + e[1] + e[3], e[2]], axis=1)
    if system == "cubic":
        return (e[0] + e[1] + e[2])[:, None]
    raise ValueError(f"unknown crystal system {crystal_system!r}")
