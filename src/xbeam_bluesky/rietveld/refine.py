"""Staged weighted least-squares (Levenberg–Marquardt) Rietveld refinement.

Parse the inputs once with :class:`Refinement`, then call :meth:`Refinement.run` with as many
strategies as you like: each run works on a fresh copy of the starting model, and the object is
picklable (plain numpy data), so runs can go to worker processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.linalg as sla
from threadpoolctl import threadpool_limits

from xbeam_bluesky.errors import PatternFormatError, RietveldInputError

from .background import background_peaks
from .crystal import Phase
from .instrument import Instrument
from .lattice import a_to_cell, metric_tensor
from .model import Evaluation, ModelState, PatternCalculator, initial_state
from .pattern_io import Pattern
from .quantitative import weight_fractions
from .shared_sites import SiteTies, resolve_site_groups
from .strategy import (
    PARAMETER_GROUPS,
    BackgroundSpec,
    OccupancySpec,
    Stage,
    Strategy,
    default_strategy,
)

__all__ = ["Refinement", "RefinementResult"]

#: stop a stage when the linearised model predicts a χ² reduction below this fraction
_PREDICTED_TOL = 1e-6
_INST_FIELDS = {
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
#: the names result.json gives the two sample-position terms in each geometry
_POSITION_NAMES = {
    "bragg_brentano": {"displacement": "displacement", "transparency": "transparency"},
    "debye_scherrer": {"displacement": "displace_x", "transparency": "displace_y"},
}


@dataclass
class _Param:
    name: str
    group: str
    phase: int | None
    lower: float = -np.inf
    upper: float = np.inf


@dataclass
class _OccupancyMap:
    """The free occupancy parameters of one phase.

    A step moves the occupancies (site fractions, dimensionless) linearly:
    ``occupancy += matrix @ (t_new − occupancy[rep])``; a tied group's column has +1 on its first site
    and −1/(m−1) on its other m−1 sites, so the group's sum is kept.
    """

    names: list[str]  # parameter names, one per free parameter
    rep: np.ndarray  # (n_free,) index of the site whose occupancy each parameter is
    matrix: np.ndarray  # (n_sites, n_free)


@dataclass
class StageRecord:
    """What one stage did."""

    name: str
    refined: list[str]
    range: tuple[float, float]
    rwp: float
    cycles: int
    status: str


@dataclass
class RefinementResult:
    """Outcome of one refinement run.

    ``status`` is "converged", "max_cycles" (stopped at the cycle limit, still improving),
    "singular" (a parameter has no effect or parameters are fully correlated) or "diverged"
    (non-finite values or unphysical cell); ``ok`` is False for the last two.
    """

    status: str
    message: str
    rwp: float
    rp: float
    rexp: float
    gof: float
    chi2: float
    n_points: int
    n_params: int
    n_reflections: int
    wall_s: float
    fit_range: tuple[float, float]
    stages: list[StageRecord]
    phases: list[dict[str, Any]]
    instrument: dict[str, Any]
    background: dict[str, Any]
    parameter_names: list[str]
    warnings: list[str]
    covariance: np.ndarray | None
    state: ModelState
    two_theta: np.ndarray = field(repr=False)
    observed: np.ndarray = field(repr=False)
    calculated: np.ndarray = field(repr=False)
    background_curve: np.ndarray = field(repr=False)
    sigma: np.ndarray = field(repr=False)
    ticks: list[np.ndarray] = field(repr=False)

    @property
    def ok(self) -> bool:
        """True unless the refinement diverged or hit a singular matrix."""
        return self.status in ("converged", "max_cycles")

    @property
    def correlation(self) -> np.ndarray | None:
        """Correlation matrix of the refined parameters (order of ``parameter_names``), None without a
        covariance: ``cov[i, j] / (esd[i] esd[j])``, dimensionless in [-1, 1]; NaN in the row and column of a
        parameter whose variance is not positive (a numerically singular normal matrix)."""
        if self.covariance is None:
            return None
        var = np.diag(self.covariance)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            d = np.sqrt(np.where(var > 0, var, np.nan))
            return np.clip(self.covariance / np.outer(d, d), -1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (R values in percent)."""
        return {
            "status": self.status,
            "message": self.message,
            "rwp": self.rwp,
            "rp": self.rp,
            "rexp": self.rexp,
            "gof": self.gof,
            "chi2": self.chi2,
            "n_points": self.n_points,
            "n_params": self.n_params,
            "n_reflections": self.n_reflections,
            "wall_s": self.wall_s,
            "fit_range": list(self.fit_range),
            "phases": self.phases,
            "instrument": self.instrument,
            "background": self.background,
            "warnings": self.warnings,
            "stages": [
                {
                    "name": s.name,
                    "refined": s.refined,
                    "range": list(s.range),
                    "rwp": s.rwp,
                    "cycles": s.cycles,
                    "status": s.status,
                }
                for s in self.stages
            ],
        }


class _Singular(Exception):
    def __init__(self, names: list[str], reason: str = ""):
        super().__init__(", ".join(names) + (f" ({reason})" if reason else ""))
        self.names = names


class Refinement:
    """A refinement problem: one pattern, one or more phases, an instrument.

    Parameters
    ----------
    pattern
        The measured pattern.
    phases
        Phases to refine (from :func:`load_phase`).
    instrument
        Instrument parameters; ``None`` uses :meth:`Instrument.lab_cu_ka` (stated in the result).
    fit_range
        Default 2θ range (deg) for stages that name none; ``None`` = the whole pattern.
    """

    def __init__(
        self,
        pattern: Pattern,
        phases: list[Phase],
        instrument: Instrument | None = None,
        fit_range: tuple[float, float] | None = None,
    ):
        if not phases:
            raise RietveldInputError("refinement: at least one phase (CIF) is required")
        self.pattern = pattern
        self.phases, self._phase_notes = _unique_phase_names(list(phases))
        self.instrument = instrument or Instrument.lab_cu_ka()
        if self.instrument.radiation != "xray":
            raise RietveldInputError(
                f"instrument {self.instrument.source}: {self.instrument.radiation} radiation, but the engine "
                "computes X-ray structure factors only (give an X-ray instrument file, e.g. GSAS HTYPE PXC)"
            )
        if pattern.radiation == "neutron":
            raise PatternFormatError(
                f"pattern {pattern.source}: neutron data, but the engine computes X-ray form factors only "
                "(neutron scattering lengths are not modelled)"
            )
        _check_wavelengths(self.instrument)
        x = pattern.two_theta
        if fit_range is None:
            fit_range = (float(x[0]), float(x[-1]))
        lo, hi = fit_range
        if not (lo < hi) or hi < x[0] or lo > x[-1]:
            raise RietveldInputError(
                f"fit range {fit_range}: must overlap the pattern's 2θ range {x[0]:.3f}..{x[-1]:.3f} deg"
            )
        self.fit_range = (max(lo, float(x[0])), min(hi, float(x[-1])))
        self.initial = initial_state(self.phases, self.instrument)
        self._ties = [SiteTies.build(ph, ph.shared_sites) for ph in self.phases]
        self._occ_maps = self._occupancy_maps((), "")
        self._calcs: dict[tuple[float, float], tuple[PatternCalculator, np.ndarray]] = {}

    # ------------------------------------------------------------------ set-up helpers
    def calculator(self, rng: tuple[float, float]) -> tuple[PatternCalculator, np.ndarray]:
        """The pattern calculator for a 2θ range (cached) and the mask of the pattern points it covers."""
        key = (round(rng[0], 6), round(rng[1], 6))
        if key not in self._calcs:
            mask = self.pattern.select(*rng) & np.isfinite(self.pattern.sigma)
            if mask.sum() < 10:
                raise RietveldInputError(f"2θ range {rng}: fewer than 10 weighted data points inside")
            self._calcs[key] = (
                PatternCalculator(self.pattern.two_theta[mask], self.phases, self.instrument),
                mask,
            )
        return self._calcs[key]

    def _occupancy_maps(self, specs: tuple[OccupancySpec, ...], where: str) -> list[_OccupancyMap]:
        """Free occupancy parameters per phase for a stage's ``occupancy`` entries.

        No entries: every site of every phase; atoms of one shared site keep their occupancy sum.

        Raises
        ------
        ValueError
            An entry names a phase or site label that does not exist, omits the phase when there are
            several, or refines a site whose starting occupancy lies outside [0, 1].
        """
        if not specs:
            return [_occupancy_map(ph, t.groups) for ph, t in zip(self.phases, self._ties, strict=True)]
        names = [ph.name for ph in self.phases]
        groups: list[list[list[int]]] = [[] for _ in self.phases]
        for spec in specs:
            if spec.phase is None:
                if len(self.phases) > 1:
                    raise RietveldInputError(
                        f"{where}: occupancy: several phases ({', '.join(names)}); name one with 'phase'"
                    )
                k = 0
            elif spec.phase in names:
                k = names.index(spec.phase)
            else:
                raise RietveldInputError(
                    f"{where}: occupancy: no phase named {spec.phase!r}; phases: {', '.join(names)}"
                )
            ph = self.phases[k]
            unknown = [lab for lab in spec.sites if lab not in ph.labels]
            if unknown:
                raise RietveldInputError(
                    f"{where}: occupancy: phase {ph.name!r} has no site {', '.join(map(repr, unknown))}; "
                    f"sites: {', '.join(ph.labels)}"
                )
            idx = sorted(ph.labels.index(lab) for lab in spec.sites)
            outside = [ph.labels[j] for j in idx if not 0.0 <= ph.occupancy[j] <= 1.0]
            if outside:
                raise RietveldInputError(
                    f"{where}: occupancy: phase {ph.name!r}: sites {', '.join(outside)} start outside [0, 1]"
                )
            if spec.tie_shared_sites is True:
                shared = ([j for j in g if j in idx] for g in self._ties[k].groups)
                groups[k] = [g for g in shared if g]
            else:
                tied = [] if spec.tie_shared_sites is False else spec.tie_shared_sites
                grouped = [[ph.labels.index(lab) for lab in g] for g in tied]
                done = {j for g in grouped for j in g}
                groups[k] = sorted(grouped + [[j] for j in idx if j not in done], key=min)
        return [_occupancy_map(ph, g) for ph, g in zip(self.phases, groups, strict=True)]

    def _params(self, state: ModelState, groups: set[str]) -> list[_Param]:
        out: list[_Param] = []
        for g in PARAMETER_GROUPS:
            if g not in groups:
                continue
            if g == "background":
                out += [_Param(f"background[{i}]", g, None) for i in range(len(state.background_coefs))]
                for i in range(len(state.background_peaks)):
                    out += [
                        _Param(f"background_peak[{i}]:position", g, None, 0.1, 179.9),
                        _Param(f"background_peak[{i}]:fwhm", g, None, 0.05, 120.0),
                        _Param(f"background_peak[{i}]:area", g, None, 0.0),
                    ]
            elif g in ("zero", "displacement", "transparency", "U", "V", "W", "X", "Y"):
                out.append(_Param(g, g, None))
            elif g == "SH/L":
                out.append(_Param(g, g, None, 1e-5, 0.2))
            elif g == "soller":
                out.append(_Param(g, g, None, 0.05, 20.0))
            elif g == "absorption":
                out.append(_Param(g, g, None, 0.0, 30.0))
            else:
                for k, ph in enumerate(self.phases):
                    nm = ph.name
                    if g == "scale":
                        out.append(_Param(f"{nm}:scale", g, k, 0.0))
                    elif g == "cell":
                        out += [_Param(f"{nm}:A{i}", g, k, 0.0) for i in range(ph.lattice_matrix.shape[1])]
                    elif g == "preferred_orientation":
                        out.append(_Param(f"{nm}:MD_ratio", g, k, 0.05, 20.0))
                    elif g == "uniaxial_strain" and state.phases[k].strain_axis is not None:
                        out.append(_Param(f"{nm}:uniaxial_strain", g, k))
                    elif g in ("atoms_xyz", "atoms_uiso") and not state.phases[k].refine_atoms:
                        continue
                    elif g == "atoms_xyz":  # one set per shared site, named by its first atom
                        for j in self._ties[k].representatives:
                            out += [
                                _Param(f"{nm}:{ph.labels[j]}:xyz{b}", g, k)
                                for b in range(ph.xyz_basis[j].shape[1])
                            ]
                    elif g == "atoms_uiso":
                        out += [
                            _Param(f"{nm}:{ph.labels[j]}:Uiso", g, k, -0.05, 0.5)
                            for j in self._ties[k].representatives
                        ]
                    elif g == "occupancy":
                        out += _occupancy_params(self._occ_maps[k], state.phases[k].occupancy, k)
        return out

    def _get(self, state: ModelState, params: list[_Param]) -> np.ndarray:
        vals: list[float] = []
        seen: set[tuple[str, int | None]] = set()
        for p in params:
            key = (p.group, p.phase)
            if key in seen:
                continue
            seen.add(key)
            vals += list(self._group_values(state, p.group, p.phase))
        return np.array(vals, dtype=float)

    def _group_values(self, state: ModelState, g: str, k: int | None) -> np.ndarray:
        if g == "background":
            return np.concatenate([state.background_coefs, state.background_peaks.ravel()])
        if g in _INST_FIELDS:
            return np.array([getattr(state.instrument, _INST_FIELDS[g])])
        if g in ("displacement", "transparency"):
            return np.array([getattr(state, g)])
        ps = state.phases[k]
        ph = self.phases[k]
        if g == "scale":
            return np.array([ps.scale])
        if g == "cell":
            return ps.a_free
        if g == "preferred_orientation":
            return np.array([ps.po_ratio])
        if g == "uniaxial_strain":
            return np.array([ps.strain_aniso])
        if g == "occupancy":
            return ps.occupancy[self._occ_maps[k].rep]
        if g == "atoms_xyz":
            return self._ties[k].tied_xyz(ph, ps.xyz)
        return ps.uiso[self._ties[k].representatives]

    def _set(self, state: ModelState, params: list[_Param], vec: np.ndarray) -> None:
        i = 0
        seen: set[tuple[str, int | None]] = set()
        inst_changes: dict[str, float] = {}
        for p in params:
            key = (p.group, p.phase)
            if key in seen:
                continue
            seen.add(key)
            n = len(self._group_values(state, p.group, p.phase))
            v = vec[i : i + n]
            i += n
            g, k = p.group, p.phase
            if g == "background":
                nc = len(state.background_coefs)
                state.background_coefs = v[:nc].copy()
                state.background_peaks = v[nc:].reshape(-1, 3).copy()
            elif g in _INST_FIELDS:
                inst_changes[_INST_FIELDS[g]] = float(v[0])
            elif g in ("displacement", "transparency"):
                setattr(state, g, float(v[0]))
            else:
                ps = state.phases[k]
                ph = self.phases[k]
                if g == "scale":
                    ps.scale = float(v[0])
                elif g == "cell":
                    ps.a_free = v.copy()
                elif g == "preferred_orientation":
                    ps.po_ratio = float(v[0])
                elif g == "uniaxial_strain":
                    ps.strain_aniso = float(v[0])
                elif g == "atoms_xyz":
                    self._ties[k].set_xyz(ph, ps.xyz, v)
                elif g == "occupancy":
                    occ_map = self._occ_maps[k]
                    ps.occupancy = ps.occupancy + occ_map.matrix @ (v - ps.occupancy[occ_map.rep])
                else:
                    ps.uiso = self._ties[k].uiso_map @ v
        if inst_changes:
            state.instrument = replace(state.instrument, **inst_changes)

    def _jacobian(self, blocks: dict[str, np.ndarray], params: list[_Param]) -> np.ndarray:
        cols = []
        seen: set[tuple[str, int | None]] = set()
        for p in params:
            key = (p.group, p.phase)
            if key in seen:
                continue
            seen.add(key)
            if p.group == "scale":
                cols.append(blocks["scale"][:, [p.phase]])
            elif p.group == "occupancy":
                cols.append(blocks[f"occupancy:{p.phase}"] @ self._occ_maps[p.phase].matrix)
            elif p.group == "atoms_xyz":
                cols.append(blocks[f"atoms_xyz:{p.phase}"] @ self._ties[p.phase].xyz_map)
            elif p.group == "atoms_uiso":
                cols.append(blocks[f"atoms_uiso:{p.phase}"] @ self._ties[p.phase].uiso_map)
            elif p.phase is not None and p.group != "scale":
                cols.append(blocks[f"{p.group}:{p.phase}"])
            else:
                cols.append(blocks[p.group])
        return np.concatenate(cols, axis=1)

    # ------------------------------------------------------------------ the run
    def run(self, strategy: Strategy | None = None, state: ModelState | None = None) -> RefinementResult:
        """Run a staged refinement on a copy of the starting model (or of ``state``).

        Parameters
        ----------
        strategy
            Stages to run; default: :func:`~xbeam_bluesky.rietveld.default_sequence.refine_default` (the
            :func:`default_strategy` stages, then background growth and preferred orientation when the
            data ask for them).
        state
            Starting values; default the CIF/instrument values.
        """
        # our matrices are small (points × tens of parameters): threaded BLAS only adds contention,
        # which on a busy machine made runs several times slower
        with threadpool_limits(limits=1, user_api="blas"):
            if strategy is None:
                from .default_sequence import refine_default  # it builds on this module

                return refine_default(self, state)[0]
            return self._run(strategy, state)

    def _run(self, strategy: Strategy | None, state: ModelState | None) -> RefinementResult:
        t0 = time.perf_counter()
        self._notes: set[str] = set()
        strategy = strategy or default_strategy()
        self._check_asymmetry_parameter(strategy, (state or self.initial).instrument)
        self._check_geometry_parameters(strategy, (state or self.initial).instrument)
        self._ties = [
            SiteTies.build(ph, resolve_site_groups(ph, strategy.shared_sites)) for ph in self.phases
        ]
        # resolve every stage's occupancy sites first: a bad label fails before any work is done
        occ_maps = [
            self._occupancy_maps(stage.occupancy, f"strategy stage {stage.name!r}")
            if stage.occupancy
            else None
            for stage in strategy.stages
        ]
        self._occ_maps = self._occupancy_maps((), "")
        atom_phases = [self._atom_phase_indices(stage) for stage in strategy.stages]
        st = (state or self.initial).copy()
        for ph, ps, ties in zip(self.phases, st.phases, self._ties, strict=True):
            self._notes.update(ties.snap(ph, ps.xyz, ps.uiso))
        active: set[str] = set()
        bkg = BackgroundSpec()
        bkg_key: tuple | None = None
        records: list[StageRecord] = []
        status, message = "converged", ""
        first = True
        calc = mask = None
        for stage, stage_occ, stage_atoms in zip(strategy.stages, occ_maps, atom_phases, strict=True):
            if stage_occ is not None:
                self._occ_maps = stage_occ
            if stage_atoms is not None:
                for k, ps in enumerate(st.phases):
                    ps.refine_atoms = k in stage_atoms
            active |= set(stage.refine)
            active -= set(stage.fix)
            rng = stage.range or self.fit_range
            if stage.background is not None:
                bkg = stage.background
            if stage.po_axis is not None:
                for ps in st.phases:
                    ps.po_axis = stage.po_axis
            if stage.strain_axis is not None:
                self._set_strain_axes(st, stage)
            if "uniaxial_strain" in active and all(ps.strain_axis is None for ps in st.phases):
                raise RietveldInputError(
                    f"strategy stage {stage.name!r} refines 'uniaxial_strain' but no stage gave a strain_axis"
                )
            calc, mask = self.calculator(rng)
            calc.update_reflections(st)
            self._check_reflections(calc, st, rng)
            y = self.pattern.counts[mask]
            w = self.pattern.weights[mask]
            if bkg_key != (bkg, rng):
                self._linear_start(calc, st, bkg, y, w, scales=first)
                bkg_key = (bkg, rng)
                first = False
            try:
                cycles, stage_status = self._lm(calc, st, active, y, w, stage.max_cycles)
            except _Singular as exc:
                status = "singular"
                message = f"stage {stage.name!r}: singular normal matrix; parameters without effect or fully correlated: {exc}"
                cycles, stage_status = 0, "singular"
            ev = calc.evaluate(st)
            rwp = _rwp(y, ev.y, w)
            records.append(StageRecord(stage.name, sorted(active), rng, rwp, cycles, stage_status))
            bad = self._diverged(st, ev.y)
            if bad:
                status, message = "diverged", f"stage {stage.name!r}: {bad}"
            if status in ("singular", "diverged"):
                break
            status = stage_status  # the last stage decides between "converged" and "max_cycles"
        return self._result(calc, mask, st, active, records, status, message, time.perf_counter() - t0)

    @staticmethod
    def _check_asymmetry_parameter(strategy: Strategy, inst: Instrument) -> None:
        """Refining the other model's asymmetry parameter would silently do nothing: refuse it."""
        own = inst.asymmetry_parameter
        for stage in strategy.stages:
            wrong = [g for g in ("SH/L", "soller") if g in stage.refine and g != own]
            if wrong:
                raise RietveldInputError(
                    f"strategy stage {stage.name!r} refines {wrong[0]!r}, but the instrument's asymmetry model "
                    f"is {inst.asymmetry!r}, whose parameter is {own!r}"
                )

    def _atom_phase_indices(self, stage: Stage) -> frozenset[int] | None:
        """The phases (indices) a stage's ``atom_phases`` names; ``None`` if it names none."""
        if stage.atom_phases is None:
            return None
        names = [ph.name for ph in self.phases]
        unknown = [n for n in stage.atom_phases if n not in names]
        if unknown:
            raise RietveldInputError(
                f"strategy stage {stage.name!r}: atom_phases names no phase {', '.join(map(repr, unknown))}; "
                f"phases: {', '.join(names)}"
            )
        return frozenset(names.index(n) for n in stage.atom_phases)

    def _set_strain_axes(self, st: ModelState, stage: Stage) -> None:
        """Apply a stage's ``strain_axis`` (one axis for every phase, or per named phase)."""
        sa = stage.strain_axis
        if sa and isinstance(sa[0], tuple):
            names = [ph.name for ph in self.phases]
            for name, axis in sa:
                if name not in names:
                    raise RietveldInputError(
                        f"strategy stage {stage.name!r}: strain_axis names no phase {name!r}; phases: "
                        f"{', '.join(names)}"
                    )
                st.phases[names.index(name)].strain_axis = axis
        else:
            for ps in st.phases:
                ps.strain_axis = sa

    @staticmethod
    def _check_geometry_parameters(strategy: Strategy, inst: Instrument) -> None:
        """The capillary absorption exists only in Debye–Scherrer geometry: refuse it on a flat plate."""
        if inst.geometry == "debye_scherrer":
            return
        for stage in strategy.stages:
            if "absorption" in stage.refine:
                raise RietveldInputError(
                    f"strategy stage {stage.name!r} refines 'absorption' (capillary μR), but the instrument "
                    f"geometry is {inst.geometry!r}; it exists only in debye_scherrer geometry"
                )

    def _check_reflections(self, calc: PatternCalculator, st: ModelState, rng: tuple[float, float]) -> None:
        for k, ph in enumerate(self.phases):
            pos = calc.reflection_positions(k, st)
            if not np.any((pos >= rng[0]) & (pos <= rng[1])):
                raise RietveldInputError(
                    f"phase {ph.name!r}: no reflections in the 2θ range {rng[0]:.3f}..{rng[1]:.3f} deg "
                    f"(wavelength {calc.lam1} Å)"
                )

    def _linear_start(
        self,
        calc: PatternCalculator,
        st: ModelState,
        bkg: BackgroundSpec,
        y: np.ndarray,
        w: np.ndarray,
        scales: bool,
    ) -> None:
        """Background coefficients (and, at the start, phase scales) by linear least squares."""
        st.background_kind = bkg.type
        st.background_coefs = np.zeros(bkg.terms)
        if len(st.background_peaks) != len(bkg.peaks):  # a warm start keeps its refined humps
            st.background_peaks = np.array([[p, f, 0.0] for p, f in bkg.peaks]).reshape(-1, 3)
        st.background_peaks[:, 2] = 0.0
        basis = calc.background_matrix(bkg.type, bkg.terms)
        if len(bkg.peaks):
            unit = st.background_peaks.copy()
            unit[:, 2] = 1.0
            basis = np.hstack([basis, background_peaks(calc.x, unit)[1][:, 2::3]])
        ev = calc.evaluate(st)
        sw = np.sqrt(w)
        if scales:
            comps = [c / max(ps.scale, 1e-300) for c, ps in zip(ev.components, st.phases, strict=True)]
            a = np.column_stack([basis, *comps])
            sol = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)[0]
            s = sol[basis.shape[1] :]
            if np.all(s > 0):
                for ps, v in zip(st.phases, s, strict=True):
                    ps.scale = float(v)
                self._set_linear_background(st, sol[: basis.shape[1]], bkg.terms)
                return
            # a negative scale: one common factor on the current scales, then the background under it
            factor = float(max(np.sum(w * y * ev.y) / max(np.sum(w * ev.y * ev.y), 1e-300), 1e-12))
            for ps in st.phases:
                ps.scale *= factor
            ev = calc.evaluate(st)
        resid = y - (ev.y - ev.background)
        self._set_linear_background(
            st, np.linalg.lstsq(basis * sw[:, None], resid * sw, rcond=None)[0], bkg.terms
        )

    @staticmethod
    def _set_linear_background(st: ModelState, sol: np.ndarray, n_terms: int) -> None:
        """Store linearly solved background coefficients and hump areas (a negative area starts small)."""
        st.background_coefs = sol[:n_terms].copy()
        areas = sol[n_terms:]
        if len(areas):
            st.background_peaks[:, 2] = np.where(areas > 0, areas, 1e-3 * np.abs(areas).max() + 1e-9)

    def _lm(
        self,
        calc: PatternCalculator,
        st: ModelState,
        active: set[str],
        y: np.ndarray,
        w: np.ndarray,
        max_cycles: int,
    ) -> tuple[int, str]:
        """Levenberg–Marquardt on the active groups (in place); returns (accepted cycles, stage status)."""
        params = self._params(st, active)
        if not params:
            return 0, "converged"
        if {"scale", "occupancy"} <= active:
            self._check_occupancy_scale(st)
        groups = frozenset(active)
        lower = np.array([p.lower for p in params])
        upper = np.array([p.upper for p in params])
        sw = np.sqrt(w)
        ev = calc.evaluate(st, groups, jacobian=True)
        r = y - ev.y
        chi2 = float(np.sum(w * r * r))
        lam = 1e-3
        cycles = 0
        feasible = self._widths_feasible(calc, st)
        while cycles < max_cycles:
            jw, normal, d, ns = self._scaled_normal(ev.blocks, params, sw)
            grad = jw.T @ (sw * r)
            gs = grad / d
            p0 = self._get(st, params)
            accepted = False
            # the first trial of a cycle usually succeeds: evaluate it with the Jacobian straight away
            first_try = True
            while lam < 1e8:
                try:
                    step = sla.solve(ns + lam * np.eye(len(gs)), gs, assume_a="pos") / d
                except (sla.LinAlgError, ValueError):
                    lam *= 10.0
                    continue
                p1 = np.clip(p0 + step, lower, upper)
                taken = p1 - p0
                # reduction of χ² predicted by the linearised model; if negligible, we are at the minimum
                predicted = 2.0 * float(grad @ taken) - float(taken @ normal @ taken)
                if predicted < _PREDICTED_TOL * chi2:
                    break
                trial = st.copy()
                self._set(trial, params, p1)
                if feasible and not self._widths_feasible(calc, trial):
                    lam *= 10.0  # the step would make a peak width negative somewhere: shorten it
                    continue
                ev_t = calc.evaluate(trial, groups, jacobian=first_try)
                first_try = False
                r_t = y - ev_t.y
                chi2_t = float(np.sum(w * r_t * r_t))
                if np.isfinite(chi2_t) and chi2_t < chi2:
                    accepted = True
                    break
                lam *= 10.0
            if not accepted:
                self._check_rank(ns, params)
                return cycles, "converged"
            cycles += 1
            rel = (chi2 - chi2_t) / chi2
            self._set(st, params, p1)
            chi2, r = chi2_t, r_t
            lam = max(lam * 0.1, 1e-7)
            if rel < 1e-4:
                self._check_rank(ns, params)
                return cycles, "converged"
            ev = ev_t if ev_t.blocks else calc.evaluate(st, groups, jacobian=True)
        # stopped while still improving: a null direction would still make the esds meaningless
        self._check_rank(self._scaled_normal(ev.blocks, params, sw)[3], params)
        return cycles, "max_cycles"

    def _scaled_normal(
        self, blocks: dict[str, np.ndarray], params: list[_Param], sw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Weighted Jacobian, normal matrix, its column scales √diag and the scaled normal matrix.

        Raises _Singular for parameters whose Jacobian column is zero (they do not change the pattern).
        """
        jw = self._jacobian(blocks, params) * sw[:, None]
        normal = jw.T @ jw
        d = np.sqrt(np.diag(normal))
        dead = d <= 1e-12 * max(float(d.max()), 1e-300)
        if np.any(dead):
            raise _Singular([p.name for p, z in zip(params, dead, strict=True) if z])
        return jw, normal, d, normal / np.outer(d, d)

    @staticmethod
    def _widths_feasible(calc: PatternCalculator, st: ModelState) -> bool:
        """True if the Gaussian variance and Lorentzian FWHM are non-negative over the fitted range."""
        sig2, _, gam, _ = calc.width_minima(st, float(calc.x[0]), float(calc.x[-1]))
        return sig2 >= 0.0 and gam >= 0.0

    def _check_occupancy_scale(self, st: ModelState) -> None:
        """Raise _Singular when a phase's free occupancies can scale all its occupancies together.

        |F|² is homogeneous of degree 2 in the occupancies, so occupancies × c with the scale × 1/c²
        leave the pattern unchanged: an exact null direction of the normal matrix.
        """
        for ph, ps, occ_map in zip(self.phases, st.phases, self._occ_maps, strict=True):
            occ = ps.occupancy
            if not occ_map.names or not np.any(occ > 0):
                continue
            coef = np.linalg.lstsq(occ_map.matrix, occ, rcond=None)[0]
            if np.linalg.norm(occ_map.matrix @ coef - occ) <= 1e-9 * np.linalg.norm(occ):
                raise _Singular(
                    [f"{ph.name}:scale", *occ_map.names],
                    f"scaling every occupancy of phase {ph.name!r} by c and its scale by 1/c² leaves the "
                    "pattern unchanged: fix the scale or leave a site's occupancy out",
                )

    def _check_rank(self, ns: np.ndarray, params: list[_Param]) -> None:
        """Raise _Singular for (near-)null directions of the scaled normal matrix.

        Near-degeneracies among background coefficients alone (high-order power series) are tolerated
        and noted: they do not affect the fit, only the background coefficients' esds.
        """
        evals, evecs = np.linalg.eigh(ns)
        tiny = np.flatnonzero(evals < 1e-13 * max(evals[-1], 1e-300))
        for i in tiny:
            vec = evecs[:, i]
            involved = [params[j] for j in np.argsort(-np.abs(vec)) if abs(vec[j]) > 0.05]
            if involved and all(p.group == "background" for p in involved):
                self._notes.add(
                    "background coefficients are nearly degenerate (too many terms for this range)"
                )
                continue
            raise _Singular([p.name for p in involved])  # every parameter of the null direction

    def _diverged(self, st: ModelState, ycalc: np.ndarray) -> str:
        if not np.all(np.isfinite(ycalc)):
            return "the calculated pattern is not finite"
        for ph, ps in zip(self.phases, st.phases, strict=True):
            a_terms = ph.lattice_matrix @ ps.a_free
            if not np.all(np.isfinite(a_terms)) or np.any(a_terms[:3] <= 0):
                return f"phase {ph.name!r}: the cell became invalid"
            vol0 = np.prod(ph.cell[:3])
            vol = np.prod(a_to_cell(a_terms)[:3])
            if abs(vol / vol0 - 1.0) > 0.2:
                return f"phase {ph.name!r}: cell volume changed by more than 20 % ({vol / vol0 - 1:+.1%})"
            if not np.all(np.isfinite(ps.xyz)) or not np.all(np.isfinite(ps.uiso)):
                return f"phase {ph.name!r}: non-finite atomic parameters"
        return ""

    # ------------------------------------------------------------------ results
    def _result(
        self,
        calc: PatternCalculator,
        mask: np.ndarray,
        st: ModelState,
        active: set[str],
        records: list[StageRecord],
        status: str,
        message: str,
        wall: float,
    ) -> RefinementResult:
        y = self.pattern.counts[mask]
        w = self.pattern.weights[mask]
        sig = self.pattern.sigma[mask]
        params = self._params(st, active)
        groups = frozenset(active)
        ev = calc.evaluate(st, groups, jacobian=bool(params))
        r = y - ev.y
        chi2 = float(np.sum(w * r * r))
        n = int(np.count_nonzero(w > 0))
        npar = len(params)
        dof = max(n - npar, 1)
        sum_wy2 = float(np.sum(w * y * y))
        cov = None
        if params and status != "singular":
            jw = self._jacobian(ev.blocks, params) * np.sqrt(w)[:, None]
            normal = jw.T @ jw
            d = np.sqrt(np.diag(normal))
            try:
                cov = np.linalg.inv(normal / np.outer(d, d)) / np.outer(d, d) * (chi2 / dof)
            except np.linalg.LinAlgError:
                cov = None
        esd = self._esd_lookup(params, cov)
        rng = records[-1].range if records else self.fit_range
        phases_out, n_refl_total = self._phase_summaries(ev, st, y, rng, esd, cov, params)
        inst = st.instrument
        inst_out = {
            "source": inst.source,
            "wavelength1": inst.wavelength1,
            "wavelength2": inst.wavelength2,
            "ratio": inst.ratio,
            "polarization": inst.polarization,
            "goniometer_radius_mm": inst.goniometer_radius,
            "asymmetry": inst.asymmetry,
            "geometry": inst.geometry,
        }
        for g, f in _INST_FIELDS.items():
            if (g == "soller" and inst.asymmetry != "full_axial") or (
                g == "absorption" and inst.geometry != "debye_scherrer"
            ):
                continue
            inst_out[g] = getattr(inst, f)
            if g in esd:
                inst_out[f"{g}_esd"] = esd[g]
        if inst.asymmetry == "full_axial":
            inst_out.update(
                source_length_mm=inst.source_length,
                sample_length_mm=inst.sample_length,
                receiver_length_mm=inst.receiver_length,
            )
        for g, name in _POSITION_NAMES[inst.geometry].items():
            inst_out[name] = getattr(st, g)
            if g in esd:
                inst_out[f"{name}_esd"] = esd[g]
        if status == "converged" and not message:
            message = "refinement converged"
        elif status == "max_cycles" and not message:
            message = "stopped at the cycle limit of a stage while still improving"
        ticks = [pc.pos1[(pc.pos1 >= rng[0]) & (pc.pos1 <= rng[1])] for pc in ev.pcs]
        warnings = self._phase_notes + sorted(self._notes) + self._physical_checks(calc, st, params, rng)
        return RefinementResult(
            status=status,
            message=message,
            rwp=100.0 * float(np.sqrt(chi2 / sum_wy2)),
            rp=100.0 * float(np.sum(np.abs(r)) / np.sum(np.abs(y))),
            rexp=100.0 * float(np.sqrt(dof / sum_wy2)),
            gof=float(np.sqrt(chi2 / dof)),
            chi2=chi2,
            n_points=n,
            n_params=npar,
            n_reflections=n_refl_total,
            wall_s=wall,
            fit_range=rng,
            stages=records,
            phases=phases_out,
            instrument=inst_out,
            background=_background_summary(st, esd),
            parameter_names=[p.name for p in params],
            warnings=warnings,
            covariance=cov,
            state=st,
            two_theta=calc.x,
            observed=y,
            calculated=ev.y,
            background_curve=ev.background,
            sigma=sig,
            ticks=ticks,
        )

    def _physical_checks(
        self, calc: PatternCalculator, st: ModelState, params: list[_Param], rng: tuple[float, float]
    ) -> list[str]:
        """Physically suspicious results worth a look (not failures)."""
        out = []
        for ph, ps in zip(self.phases, st.phases, strict=True):
            neg = [lab for lab, u in zip(ph.labels, ps.uiso, strict=True) if u < 0]
            if neg:
                out.append(f"phase {ph.name!r}: negative Uiso for {', '.join(neg)}")
        sig2, at_s, gam, at_g = calc.width_minima(st, rng[0], rng[1])
        if sig2 < 0:
            out.append(
                f"U, V, W give a negative Gaussian variance ({sig2:.3g} centideg² at 2θ {at_s:.1f} deg)"
            )
        if gam < 0:
            out.append(f"X, Y give a negative Lorentzian width ({gam:.3g} centideg at 2θ {at_g:.1f} deg)")
        vec = self._get(st, params) if params else np.zeros(0)
        for p, v in zip(params, vec, strict=True):
            if (np.isfinite(p.lower) and v <= p.lower + 1e-12) or (
                np.isfinite(p.upper) and v >= p.upper - 1e-12
            ):
                out.append(f"parameter {p.name} is at its bound ({v:g})")
        return out

    @staticmethod
    def _esd_lookup(params: list[_Param], cov: np.ndarray | None) -> dict[str, float]:
        if cov is None:
            return {}
        return {p.name: float(np.sqrt(max(cov[i, i], 0.0))) for i, p in enumerate(params)}

    def _phase_summaries(
        self,
        ev: Evaluation,
        st: ModelState,
        y: np.ndarray,
        rng: tuple[float, float],
        esd: dict[str, float],
        cov: np.ndarray | None,
        params: list[_Param],
    ) -> tuple[list[dict[str, Any]], int]:
        out = []
        total_refl = 0
        index = {p.name: i for i, p in enumerate(params)}
        yb = ev.background
        net_calc = ev.y - yb
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(net_calc > 1e-9 * max(float(net_calc.max()), 1e-300), (y - yb) / net_calc, 0.0)
        contrib = ev.shape.multiply(ev.peak_intensity[None, :]).tocsc()
        iobs_peak = contrib.T @ ratio
        icalc_peak = np.asarray(contrib.sum(axis=0)).ravel()
        for k, ph in enumerate(self.phases):
            ps = st.phases[k]
            pc = ev.pcs[k]
            a_terms = ph.lattice_matrix @ ps.a_free
            cell = a_to_cell(a_terms)
            cell_esd = np.zeros(6)
            names = [f"{ph.name}:A{i}" for i in range(len(ps.a_free))]
            if cov is not None and all(nm in index for nm in names):
                idx = [index[nm] for nm in names]
                jac = np.zeros((6, len(idx)))
                for c, _i in enumerate(idx):
                    h = 1e-7 * max(abs(ps.a_free[c]), 1e-6)
                    pp = ps.a_free.copy()
                    pp[c] += h
                    jac[:, c] = (a_to_cell(ph.lattice_matrix @ pp) - cell) / h
                cell_esd = np.sqrt(np.maximum(np.diag(jac @ cov[np.ix_(idx, idx)] @ jac.T), 0.0))
            in_range = (pc.pos1 >= rng[0]) & (pc.pos1 <= rng[1])
            n_refl = int(np.count_nonzero(in_range))
            total_refl += n_refl
            sel = ev.peak_phase == k
            iobs = np.bincount(ev.peak_refl[sel], weights=iobs_peak[sel], minlength=len(pc.pos1))
            icalc = np.bincount(ev.peak_refl[sel], weights=icalc_peak[sel], minlength=len(pc.pos1))
            denom = float(np.sum(np.abs(iobs[in_range])))
            r_bragg = (
                100.0 * float(np.sum(np.abs(iobs[in_range] - icalc[in_range]))) / denom
                if denom > 0
                else float("nan")
            )
            occ_esd = np.zeros(ph.n_sites)
            occ_map = self._occ_maps[k]
            if cov is not None and occ_map.names and all(nm in index for nm in occ_map.names):
                idx = [index[nm] for nm in occ_map.names]
                var = np.diag(occ_map.matrix @ cov[np.ix_(idx, idx)] @ occ_map.matrix.T)
                occ_esd = np.sqrt(np.maximum(var, 0.0))
            atoms = []
            rep_label = {j: ph.labels[g[0]] for g in self._ties[k].groups for j in g}  # shared sites
            for j, lab in enumerate(ph.labels):
                xyz_esd = np.zeros(3)
                nb = ph.xyz_basis[j].shape[1]
                xnames = [f"{ph.name}:{rep_label[j]}:xyz{b}" for b in range(nb)]
                if cov is not None and nb and all(nm in index for nm in xnames):
                    idx = [index[nm] for nm in xnames]
                    basis = ph.xyz_basis[j]
                    xyz_esd = np.sqrt(np.maximum(np.diag(basis @ cov[np.ix_(idx, idx)] @ basis.T), 0.0))
                atoms.append(
                    {
                        "label": lab,
                        "element": ph.elements[j],
                        "xyz": [float(v) for v in ps.xyz[j]],
                        "xyz_esd": [float(v) for v in xyz_esd],
                        "uiso": float(ps.uiso[j]),
                        "uiso_esd": esd.get(f"{ph.name}:{rep_label[j]}:Uiso", 0.0),
                        "occupancy": float(ps.occupancy[j]),
                        "occupancy_esd": float(occ_esd[j]),
                    }
                )
            vol = float(np.sqrt(np.linalg.det(metric_tensor(cell))))
            out.append(
                {
                    "name": ph.name,
                    "space_group": ph.space_group,
                    "lattice": dict(
                        zip(("a", "b", "c", "alpha", "beta", "gamma"), map(float, cell), strict=True)
                    ),
                    "lattice_esd": dict(
                        zip(("a", "b", "c", "alpha", "beta", "gamma"), map(float, cell_esd), strict=True)
                    ),
                    "volume": vol,
                    "scale": ps.scale,
                    "scale_esd": esd.get(f"{ph.name}:scale", 0.0),
                    "r_bragg": r_bragg,
                    "n_reflections": n_refl,
                    "preferred_orientation": {"ratio": ps.po_ratio, "axis": list(ps.po_axis)},
                    "uniaxial_strain": {
                        "value": ps.strain_aniso,
                        "esd": esd.get(f"{ph.name}:uniaxial_strain", 0.0),
                        "axis": None if ps.strain_axis is None else list(ps.strain_axis),
                    },
                    "atoms": atoms,
                }
            )
        wf = weight_fractions(self.phases, st.phases, index, cov)  # Hill–Howard, esds from the covariance
        for o, w, w_esd, w_status in zip(out, wf.fraction, wf.esd, wf.status, strict=True):
            o.update(
                weight_fraction=float(w), weight_fraction_esd=float(w_esd), weight_fraction_status=w_status
            )
        self._notes.update(wf.warnings)
        return out, total_refl


def _background_summary(st: ModelState, esd: dict[str, float]) -> dict[str, Any]:
    """The background function's coefficients and each background peak with its esds."""
    out: dict[str, Any] = {
        "type": st.background_kind,
        "coefficients": [float(c) for c in st.background_coefs],
    }
    if len(st.background_peaks):
        out["peaks"] = [
            {
                **{k: float(v) for k, v in zip(("position", "fwhm", "area"), pk, strict=True)},
                **{
                    f"{k}_esd": esd.get(f"background_peak[{i}]:{k}", 0.0)
                    for k in ("position", "fwhm", "area")
                },
            }
            for i, pk in enumerate(st.background_peaks)
        ]
    return out


def _occupancy_map(ph: Phase, groups: list[list[int]]) -> _OccupancyMap:
    """One free parameter per group of site indices: the first site's occupancy; the others share the
    opposite change equally, so each group's sum is kept."""
    matrix = np.zeros((ph.n_sites, len(groups)))
    for c, g in enumerate(groups):
        matrix[g[0], c] = 1.0
        matrix[g[1:], c] = -1.0 / max(len(g) - 1, 1)
    rep = np.array([g[0] for g in groups], dtype=int)
    return _OccupancyMap([f"{ph.name}:{ph.labels[j]}:occ" for j in rep], rep, matrix)


def _occupancy_params(occ_map: _OccupancyMap, occ: np.ndarray, k: int) -> list[_Param]:
    """Parameters of ``occ_map`` with bounds that keep every site's occupancy in [0, 1]."""
    out = []
    for c, name in enumerate(occ_map.names):
        col = occ_map.matrix[:, c]
        rows = np.flatnonzero(col)
        ends = np.stack([(0.0 - occ[rows]) / col[rows], (1.0 - occ[rows]) / col[rows]])
        t = occ[occ_map.rep[c]]
        out.append(
            _Param(name, "occupancy", k, t + float(ends.min(axis=0).max()), t + float(ends.max(axis=0).min()))
        )
    return out


def _check_wavelengths(inst: Instrument) -> None:
    """A NaN, zero or negative wavelength (or Kα2 ratio) is a bad input, not a singular refinement."""
    lam1, lam2, ratio = inst.wavelength1, inst.wavelength2, inst.ratio
    if not (np.isfinite(lam1) and lam1 > 0):
        raise RietveldInputError(
            f"instrument {inst.source!r}: wavelength1 {lam1!r} Å; expected a positive wavelength"
        )
    if not (np.isfinite(lam2) and lam2 >= 0) or not (np.isfinite(ratio) and ratio >= 0):
        raise RietveldInputError(
            f"instrument {inst.source!r}: wavelength2 {lam2!r} Å, ratio {ratio!r}; expected a wavelength ≥ 0 "
            "(0 = monochromatic) and an intensity ratio ≥ 0"
        )


def _unique_phase_names(phases: list[Phase]) -> tuple[list[Phase], list[str]]:
    """The phases with unique names, and a note for each renamed one.

    Parameter names and esds are keyed by the phase name (``"PbSO4:a"``), so two CIFs with the same block name
    (``data_global`` is common in database CIFs) would share them; a repeated name gets ``_2``, ``_3``, ….
    """
    out: list[Phase] = []
    notes: list[str] = []
    used: set[str] = set()
    for ph in phases:
        name, k = ph.name, 2
        while name in used:
            name, k = f"{ph.name}_{k}", k + 1
        if name != ph.name:
            notes.append(f"two phases are named {ph.name!r}: the later one is called {name!r}")
            ph = replace(ph, name=name)
        used.add(name)
        out.append(ph)
    return out, notes


def _rwp(y: np.ndarray, yc: np.ndarray, w: np.ndarray) -> float:
    return 100.0 * float(np.sqrt(np.sum(w * (y - yc) ** 2) / np.sum(w * y * y)))
