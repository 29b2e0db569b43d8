"""Shared sites: atoms of different elements on one crystallographic site refine as one atom.

A solid solution lists two (or more) atoms at one position with partial occupancies (La0.7Sr0.3 on the
perovskite A site). Refined independently, their coordinates and Uiso would be fully correlated and free to
drift apart. :class:`SiteTies` ties each group: one set of coordinate parameters (the first atom's
special-position basis) and one Uiso per group; every member follows it exactly. The occupancy ties (sum kept)
live in :mod:`~xbeam_bluesky.rietveld.refine` with the other occupancy constraints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbeam_bluesky.errors import RietveldInputError

from .crystal import Phase

__all__ = ["SiteTies", "resolve_site_groups"]


@dataclass
class SiteTies:
    """The tied coordinate and Uiso parameters of one phase.

    Attributes
    ----------
    groups
        Site indices per shared site (the first one is the representative), covering every site once.
    offsets
        Per site, the lattice translation (integers) from its group's representative in the CIF.
    xyz_map
        (n_site_coordinates, n_group_coordinates): the per-site free-coordinate shifts, in the order of
        the model's ``atoms_xyz`` Jacobian block, as a linear map of the tied ones.
    uiso_map
        (n_sites, n_groups): 1 where a site belongs to a group.
    """

    groups: list[list[int]]
    offsets: np.ndarray
    xyz_map: np.ndarray
    uiso_map: np.ndarray

    @classmethod
    def build(cls, phase: Phase, groups: list[list[int]]) -> SiteTies:
        """Ties for ``groups`` of ``phase`` (each member moves with its group's first site).

        Raises
        ------
        ValueError
            A member of a group has a different special-position basis from the group's first site (it sits
            on another Wyckoff position, so it cannot follow the first site's coordinate shifts).
        """
        n_cols = [b.shape[1] for b in phase.xyz_basis]
        starts = np.concatenate([[0], np.cumsum(n_cols)]).astype(int)
        group_cols = [n_cols[g[0]] for g in groups]
        gstarts = np.concatenate([[0], np.cumsum(group_cols)]).astype(int)
        xyz_map = np.zeros((int(starts[-1]), int(gstarts[-1])))
        uiso_map = np.zeros((phase.n_sites, len(groups)))
        offsets = np.zeros((phase.n_sites, 3))
        for c, g in enumerate(groups):
            rep = g[0]
            for j in g:
                if not np.allclose(phase.xyz_basis[j], phase.xyz_basis[rep], atol=1e-8):
                    raise RietveldInputError(
                        f"phase {phase.name!r}: sites {phase.labels[rep]!r} and {phase.labels[j]!r} are declared "
                        "one shared site but lie on different special positions; expected atoms at one position"
                    )
                d = phase.xyz[j] - phase.xyz[rep]
                offsets[j] = np.round(d)
                xyz_map[starts[j] : starts[j + 1], gstarts[c] : gstarts[c + 1]] = np.eye(n_cols[rep])
                uiso_map[j, c] = 1.0
        return cls(groups, offsets, xyz_map, uiso_map)

    @property
    def representatives(self) -> np.ndarray:
        """Index of each group's first site."""
        return np.array([g[0] for g in self.groups], dtype=int)

    def tied_xyz(self, phase: Phase, xyz: np.ndarray) -> np.ndarray:
        """The group coordinate parameters (shifts along each representative's basis) of coordinates ``xyz``."""
        parts = [np.linalg.pinv(phase.xyz_basis[j]) @ (xyz[j] - phase.xyz[j]) for j in self.representatives]
        return np.concatenate(parts) if parts else np.zeros(0)

    def set_xyz(self, phase: Phase, xyz: np.ndarray, values: np.ndarray) -> None:
        """Move every site of each group to its representative's new position (in place)."""
        i = 0
        for g in self.groups:
            rep = g[0]
            nb = phase.xyz_basis[rep].shape[1]
            pos = phase.xyz[rep] + phase.xyz_basis[rep] @ values[i : i + nb]
            i += nb
            for j in g:
                xyz[j] = pos + self.offsets[j]

    def snap(self, phase: Phase, xyz: np.ndarray, uiso: np.ndarray) -> list[str]:
        """Put every member on its representative's position and Uiso (in place); notes for changed Uiso."""
        notes = []
        self.set_xyz(phase, xyz, self.tied_xyz(phase, xyz))
        for g in self.groups:
            if len(g) > 1 and np.ptp(uiso[g]) > 1e-9:
                notes.append(
                    f"phase {phase.name!r}: shared site {'/'.join(phase.labels[j] for j in g)} had different Uiso "
                    f"({', '.join(f'{uiso[j]:g}' for j in g)} Å²); refined as one, starting from "
                    f"{phase.labels[g[0]]}'s"
                )
            uiso[g] = uiso[g[0]]
        return notes


def resolve_site_groups(phase: Phase, declared: bool | tuple[tuple[str, ...], ...]) -> list[list[int]]:
    """The shared-site groups of ``phase``: by position (``True``), none (``False``) or declared label groups.

    Declared groups not naming any of the phase's labels are ignored (they belong to another phase); a group
    naming only some of them is an error.

    Raises
    ------
    ValueError
        A declared group mixes this phase's labels with unknown ones, or a label is in two groups.
    """
    if declared is True:
        return phase.shared_sites
    groups: list[list[int]] = []
    if declared is not False:
        for names in declared:
            known = [lab for lab in names if lab in phase.labels]
            if not known:
                continue
            if len(known) != len(names):
                missing = [lab for lab in names if lab not in phase.labels]
                raise RietveldInputError(
                    f"shared_sites: phase {phase.name!r} has no site {', '.join(map(repr, missing))}; "
                    f"sites: {', '.join(phase.labels)}"
                )
            groups.append([phase.labels.index(lab) for lab in names])
    used = [j for g in groups for j in g]
    again = sorted({phase.labels[j] for j in used if used.count(j) > 1})
    if again:
        raise RietveldInputError(f"shared_sites: labels {', '.join(again)} are in more than one group")
    groups += [[j] for j in range(phase.n_sites) if j not in used]
    return sorted(groups, key=min)
