"""The refined parameters of a refinement, driven by one table of parameter groups.

Each group of :data:`~xbeam_bluesky.rietveld.strategy.PARAMETER_GROUPS` is one row of ``_GROUPS``: the
parameters it contributes (names and bounds), how their values are read from and written to a
:class:`~xbeam_bluesky.rietveld.model.ModelState`, and how its Jacobian columns come from the model's blocks
(:meth:`~xbeam_bluesky.rietveld.model.PatternCalculator.evaluate`). :class:`ParameterMap` runs the table for
the groups a stage refines. Per-phase groups contribute one block per phase, in phase order; the values of a
(group, phase) block are contiguous, in the order of :data:`PARAMETER_GROUPS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from .crystal import Phase
from .model import ModelState
from .shared_sites import SiteTies
from .strategy import PARAMETER_GROUPS

__all__ = ["INSTRUMENT_FIELDS", "OccupancyMap", "Param", "ParameterMap", "occupancy_map"]

#: parameter groups that are one instrument field (group → :class:`Instrument` attribute)
INSTRUMENT_FIELDS = {
    "zero": "zero",
    "U": "u",
    "V": "v",
    "W": "w",
    "X": "x",
    "Y": "y",
    "SH/L": "sh_l",
    "soller": "soller",
    "absorption": "mu_r",
}
#: bounds (lower, upper) of the bounded instrument groups (SH/L dimensionless, Soller deg, μR dimensionless)
_INSTRUMENT_BOUNDS = {"SH/L": (1e-5, 0.2), "soller": (0.05, 20.0), "absorption": (0.0, 30.0)}


@dataclass
class Param:
    """One refined parameter: its name in the result, its group, its phase (index; None for global ones) and
    the bounds a least-squares step is clipped to."""

    name: str
    group: str
    phase: int | None
    lower: float = -np.inf
    upper: float = np.inf


@dataclass
class OccupancyMap:
    """The free occupancy parameters of one phase.

    A step moves the occupancies (site fractions, dimensionless) linearly:
    ``occupancy += matrix @ (t_new − occupancy[rep])``; a tied group's column has +1 on its first site
    and −1/(m−1) on its other m−1 sites, so the group's sum is kept.
    """

    names: list[str]  # parameter names, one per free parameter
    rep: np.ndarray  # (n_free,) index of the site whose occupancy each parameter is
    matrix: np.ndarray  # (n_sites, n_free)


def occupancy_map(ph: Phase, groups: list[list[int]]) -> OccupancyMap:
    """One free parameter per group of site indices: the first site's occupancy; the others share the
    opposite change equally, so each group's sum is kept."""
    matrix = np.zeros((ph.n_sites, len(groups)))
    for c, g in enumerate(groups):
        matrix[g[0], c] = 1.0
        matrix[g[1:], c] = -1.0 / max(len(g) - 1, 1)
    rep = np.array([g[0] for g in groups], dtype=int)
    return OccupancyMap([f"{ph.name}:{ph.labels[j]}:occ" for j in rep], rep, matrix)


def _occupancy_params(occ_map: OccupancyMap, occ: np.ndarray, k: int) -> list[Param]:
    """Parameters of ``occ_map`` with bounds that keep every site's occupancy in [0, 1]."""
    out = []
    for c, name in enumerate(occ_map.names):
        col = occ_map.matrix[:, c]
        rows = np.flatnonzero(col)
        ends = np.stack([(0.0 - occ[rows]) / col[rows], (1.0 - occ[rows]) / col[rows]])
        t = occ[occ_map.rep[c]]
        out.append(
            Param(name, "occupancy", k, t + float(ends.min(axis=0).max()), t + float(ends.max(axis=0).min()))
        )
    return out


class ParameterMap:
    """The parameters of the groups a stage refines, their values in a model state and their Jacobian.

    Parameters
    ----------
    phases
        The refinement's phases.
    ties
        Per phase, the shared-site ties (one coordinate set and one Uiso per shared site).
    occ_maps
        Per phase, the free occupancy parameters of the current stage.
    """

    def __init__(self, phases: list[Phase], ties: list[SiteTies], occ_maps: list[OccupancyMap]):
        self.phases = phases
        self.ties = ties
        self.occ_maps = occ_maps

    def params(self, state: ModelState, groups: set[str] | frozenset[str]) -> list[Param]:
        """The parameters of ``groups`` (in the order of :data:`PARAMETER_GROUPS`, then phase order)."""
        out: list[Param] = []
        for name in PARAMETER_GROUPS:
            if name not in groups:
                continue
            row = _GROUPS[name]
            for k in range(len(self.phases)) if row.per_phase else (None,):
                out += row.params(self, state, k)
        return out

    def get(self, state: ModelState, params: list[Param]) -> np.ndarray:
        """The values of ``params`` in ``state``."""
        parts = [_GROUPS[g].get(self, state, k) for g, k, _ in _blocks(params)]
        return np.array([v for part in parts for v in part], dtype=float)

    def set(self, state: ModelState, params: list[Param], vec: np.ndarray) -> None:
        """Write the values ``vec`` of ``params`` into ``state`` (in place; instrument fields in one change)."""
        i = 0
        inst_changes: dict[str, float] = {}
        for g, k, n in _blocks(params):
            v = vec[i : i + n]
            i += n
            if g in INSTRUMENT_FIELDS:
                inst_changes[INSTRUMENT_FIELDS[g]] = float(v[0])
            else:
                _GROUPS[g].set(self, state, k, v)
        if inst_changes:
            state.instrument = replace(state.instrument, **inst_changes)

    def jacobian(self, blocks: dict[str, np.ndarray], params: list[Param]) -> np.ndarray:
        """d(pattern)/d(params), (n_points, n_params), from the model's Jacobian blocks."""
        return np.concatenate([_GROUPS[g].block(self, blocks, k) for g, k, _ in _blocks(params)], axis=1)


def _blocks(params: list[Param]) -> Iterator[tuple[str, int | None, int]]:
    """(group, phase, number of parameters) of each contiguous block of ``params``."""
    counts: dict[tuple[str, int | None], int] = {}
    for p in params:
        counts[(p.group, p.phase)] = counts.get((p.group, p.phase), 0) + 1
    for (g, k), n in counts.items():
        yield g, k, n


# ---------------------------------------------------------------------- the table
_Params = Callable[[ParameterMap, ModelState, int | None], list[Param]]
_Get = Callable[[ParameterMap, ModelState, int | None], np.ndarray]
_Set = Callable[[ParameterMap, ModelState, int | None, np.ndarray], None]
_Block = Callable[[ParameterMap, dict[str, np.ndarray], int | None], np.ndarray]


@dataclass(frozen=True)
class _Group:
    """One parameter group: its parameters, values, setter and Jacobian columns (``phase`` is an index for
    per-phase groups, None otherwise). Instrument groups are set by :meth:`ParameterMap.set` directly."""

    params: _Params
    get: _Get
    set: _Set | None
    block: _Block
    per_phase: bool = False


def _instrument_group(name: str) -> _Group:
    field = INSTRUMENT_FIELDS[name]
    lower, upper = _INSTRUMENT_BOUNDS.get(name, (-np.inf, np.inf))
    return _Group(
        params=lambda m, st, k: [Param(name, name, None, lower, upper)],
        get=lambda m, st, k: np.array([getattr(st.instrument, field)]),
        set=None,
        block=lambda m, blocks, k: blocks[name],
    )


def _sample_group(name: str) -> _Group:
    """A sample-position shift stored on the state (displacement, transparency; μm)."""

    def set_(m: ParameterMap, st: ModelState, k: int | None, v: np.ndarray) -> None:
        setattr(st, name, float(v[0]))

    return _Group(
        params=lambda m, st, k: [Param(name, name, None)],
        get=lambda m, st, k: np.array([getattr(st, name)]),
        set=set_,
        block=lambda m, blocks, k: blocks[name],
    )


def _background_params(m: ParameterMap, st: ModelState, k: int | None) -> list[Param]:
    out = [Param(f"background[{i}]", "background", None) for i in range(len(st.background_coefs))]
    for i in range(len(st.background_peaks)):
        out += [
            Param(f"background_peak[{i}]:position", "background", None, 0.1, 179.9),
            Param(f"background_peak[{i}]:fwhm", "background", None, 0.05, 120.0),
            Param(f"background_peak[{i}]:area", "background", None, 0.0),
        ]
    return out


def _set_background(m: ParameterMap, st: ModelState, k: int | None, v: np.ndarray) -> None:
    nc = len(st.background_coefs)
    st.background_coefs = v[:nc].copy()
    st.background_peaks = v[nc:].reshape(-1, 3).copy()


def _phase_scalar(
    group: str, suffix: str, attr: str, lower: float = -np.inf, upper: float = np.inf
) -> _Group:
    """A per-phase scalar of the phase state (``attr``), named ``<phase>:<suffix>``."""

    def set_(m: ParameterMap, st: ModelState, k: int | None, v: np.ndarray) -> None:
        setattr(st.phases[k], attr, float(v[0]))

    return _Group(
        params=lambda m, st, k: [Param(f"{m.phases[k].name}:{suffix}", group, k, lower, upper)],
        get=lambda m, st, k: np.array([getattr(st.phases[k], attr)]),
        set=set_,
        block=lambda m, blocks, k: blocks[f"{group}:{k}"],
        per_phase=True,
    )


def _set_cell(m: ParameterMap, st: ModelState, k: int | None, v: np.ndarray) -> None:
    st.phases[k].a_free = v.copy()


def _strain_params(m: ParameterMap, st: ModelState, k: int | None) -> list[Param]:
    if st.phases[k].strain_axis is None:
        return []
    return [Param(f"{m.phases[k].name}:uniaxial_strain", "uniaxial_strain", k)]


def _xyz_params(m: ParameterMap, st: ModelState, k: int | None) -> list[Param]:
    """One set per shared site, along its first atom's special-position directions, named by that atom."""
    if not st.phases[k].refine_atoms:
        return []
    ph = m.phases[k]
    return [
        Param(f"{ph.name}:{ph.labels[j]}:xyz{b}", "atoms_xyz", k)
        for j in m.ties[k].representatives
        for b in range(ph.xyz_basis[j].shape[1])
    ]


def _set_xyz(m: ParameterMap, st: ModelState, k: int | None, v: np.ndarray) -> None:
    m.ties[k].set_xyz(m.phases[k], st.phases[k].xyz, v)


def _uiso_params(m: ParameterMap, st: ModelState, k: int | None) -> list[Param]:
    if not st.phases[k].refine_atoms:
        return []
    ph = m.phases[k]
    return [
        Param(f"{ph.name}:{ph.labels[j]}:Uiso", "atoms_uiso", k, -0.05, 0.5)
        for j in m.ties[k].representatives
    ]


def _set_uiso(m: ParameterMap, st: ModelState, k: int | None, v: np.ndarray) -> None:
    st.phases[k].uiso = m.ties[k].uiso_map @ v


def _set_occupancy(m: ParameterMap, st: ModelState, k: int | None, v: np.ndarray) -> None:
    ps, occ_map = st.phases[k], m.occ_maps[k]
    ps.occupancy = ps.occupancy + occ_map.matrix @ (v - ps.occupancy[occ_map.rep])


_GROUPS: dict[str, _Group] = {
    "background": _Group(
        params=_background_params,
        get=lambda m, st, k: np.concatenate([st.background_coefs, st.background_peaks.ravel()]),
        set=_set_background,
        block=lambda m, blocks, k: blocks["background"],
    ),
    **{g: _instrument_group(g) for g in INSTRUMENT_FIELDS},
    **{g: _sample_group(g) for g in ("displacement", "transparency")},
    "scale": _Group(
        params=lambda m, st, k: [Param(f"{m.phases[k].name}:scale", "scale", k, 0.0)],
        get=lambda m, st, k: np.array([st.phases[k].scale]),
        set=lambda m, st, k, v: setattr(st.phases[k], "scale", float(v[0])),
        block=lambda m, blocks, k: blocks["scale"][:, [k]],
        per_phase=True,
    ),
    "cell": _Group(
        params=lambda m, st, k: [
            Param(f"{m.phases[k].name}:A{i}", "cell", k, 0.0)
            for i in range(m.phases[k].lattice_matrix.shape[1])
        ],
        get=lambda m, st, k: st.phases[k].a_free,
        set=_set_cell,
        block=lambda m, blocks, k: blocks[f"cell:{k}"],
        per_phase=True,
    ),
    "preferred_orientation": _phase_scalar("preferred_orientation", "MD_ratio", "po_ratio", 0.05, 20.0),
    "uniaxial_strain": replace(
        _phase_scalar("uniaxial_strain", "uniaxial_strain", "strain_aniso"), params=_strain_params
    ),
    "atoms_xyz": _Group(
        params=_xyz_params,
        get=lambda m, st, k: m.ties[k].tied_xyz(m.phases[k], st.phases[k].xyz),
        set=_set_xyz,
        block=lambda m, blocks, k: blocks[f"atoms_xyz:{k}"] @ m.ties[k].xyz_map,
        per_phase=True,
    ),
    "atoms_uiso": _Group(
        params=_uiso_params,
        get=lambda m, st, k: st.phases[k].uiso[m.ties[k].representatives],
        set=_set_uiso,
        block=lambda m, blocks, k: blocks[f"atoms_uiso:{k}"] @ m.ties[k].uiso_map,
        per_phase=True,
    ),
    "occupancy": _Group(
        params=lambda m, st, k: _occupancy_params(m.occ_maps[k], st.phases[k].occupancy, k),
        get=lambda m, st, k: st.phases[k].occupancy[m.occ_maps[k].rep],
        set=_set_occupancy,
        block=lambda m, blocks, k: blocks[f"occupancy:{k}"] @ m.occ_maps[k].matrix,
        per_phase=True,
    ),
}
