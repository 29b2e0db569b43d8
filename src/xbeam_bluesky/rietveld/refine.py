"""Staged weighted least-squares (Levenberg–Marquardt) Rietveld refinement.

Parse the inputs once with :class:`Refinement`, then call :meth:`Refinement.run` with as many
strategies as you like: each run works on a fresh copy of the starting model, and the object is
picklable (plain numpy data), so runs can go to worker processes.

The stages run here; the parameters of a stage come from one table of parameter groups
(:mod:`._parameters`), each stage is solved by :func:`._solver.levenberg_marquardt`, and the result is
assembled by :func:`._result.assemble_result`.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from threadpoolctl import threadpool_limits

from xbeam_bluesky.errors import PatternFormatError, RietveldInputError

from ._parameters import OccupancyMap, ParameterMap, occupancy_map
from ._result import RefinementResult, StageRecord, assemble_result, weighted_rwp
from ._solver import Singular, levenberg_marquardt
from .background import background_peaks
from .crystal import Phase
from .instrument import Instrument
from .lattice import a_to_cell
from .model import ModelState, PatternCalculator, initial_state
from .pattern_io import Pattern
from .shared_sites import SiteTies, resolve_site_groups
from .strategy import BackgroundSpec, OccupancySpec, Stage, Strategy, default_strategy

__all__ = ["Refinement"]


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
        #: the parameters of the current stage (its ties and occupancy maps are set by each run and stage)
        self.parameters = ParameterMap(
            self.phases, [SiteTies.build(ph, ph.shared_sites) for ph in self.phases], []
        )
        self.parameters.occ_maps = self._occupancy_maps((), "")
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

    def _occupancy_maps(self, specs: tuple[OccupancySpec, ...], where: str) -> list[OccupancyMap]:
        """Free occupancy parameters per phase for a stage's ``occupancy`` entries.

        No entries: every site of every phase; atoms of one shared site keep their occupancy sum.

        Raises
        ------
        ValueError
            An entry names a phase or site label that does not exist, omits the phase when there are
            several, or refines a site whose starting occupancy lies outside [0, 1].
        """
        if not specs:
            ties = self.parameters.ties
            return [occupancy_map(ph, t.groups) for ph, t in zip(self.phases, ties, strict=True)]
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
                shared = ([j for j in g if j in idx] for g in self.parameters.ties[k].groups)
                groups[k] = [g for g in shared if g]
            else:
                tied = [] if spec.tie_shared_sites is False else spec.tie_shared_sites
                grouped = [[ph.labels.index(lab) for lab in g] for g in tied]
                done = {j for g in grouped for j in g}
                groups[k] = sorted(grouped + [[j] for j in idx if j not in done], key=min)
        return [occupancy_map(ph, g) for ph, g in zip(self.phases, groups, strict=True)]

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
        self.parameters.ties = [
            SiteTies.build(ph, resolve_site_groups(ph, strategy.shared_sites)) for ph in self.phases
        ]
        # resolve every stage's occupancy sites first: a bad label fails before any work is done
        occ_maps = [
            self._occupancy_maps(stage.occupancy, f"strategy stage {stage.name!r}")
            if stage.occupancy
            else None
            for stage in strategy.stages
        ]
        self.parameters.occ_maps = self._occupancy_maps((), "")
        atom_phases = [self._atom_phase_indices(stage) for stage in strategy.stages]
        st = (state or self.initial).copy()
        for ph, ps, ties in zip(self.phases, st.phases, self.parameters.ties, strict=True):
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
                self.parameters.occ_maps = stage_occ
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
            except Singular as exc:
                status = "singular"
                message = f"stage {stage.name!r}: singular normal matrix; parameters without effect or fully correlated: {exc}"
                cycles, stage_status = 0, "singular"
            ev = calc.evaluate(st)
            rwp = weighted_rwp(y, ev.y, w)
            records.append(StageRecord(stage.name, sorted(active), rng, rwp, cycles, stage_status))
            bad = self._diverged(st, ev.y)
            if bad:
                status, message = "diverged", f"stage {stage.name!r}: {bad}"
            if status in ("singular", "diverged"):
                break
            status = stage_status  # the last stage decides between "converged" and "max_cycles"
        return assemble_result(
            self.pattern,
            self.parameters,
            calc,
            mask,
            st,
            active,
            records,
            status,
            message,
            time.perf_counter() - t0,
            self.fit_range,
            self._notes,
            self._phase_notes,
        )

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
        params = self.parameters.params(st, active)
        if not params:
            return 0, "converged"
        if {"scale", "occupancy"} <= active:
            self._check_occupancy_scale(st)
        return levenberg_marquardt(
            calc, st, frozenset(active), params, self.parameters, y, w, max_cycles, self._notes
        )

    def _check_occupancy_scale(self, st: ModelState) -> None:
        """Raise Singular when a phase's free occupancies can scale all its occupancies together.

        |F|² is homogeneous of degree 2 in the occupancies, so occupancies × c with the scale × 1/c²
        leave the pattern unchanged: an exact null direction of the normal matrix.
        """
        for ph, ps, occ_map in zip(self.phases, st.phases, self.parameters.occ_maps, strict=True):
            occ = ps.occupancy
            if not occ_map.names or not np.any(occ > 0):
                continue
            coef = np.linalg.lstsq(occ_map.matrix, occ, rcond=None)[0]
            if np.linalg.norm(occ_map.matrix @ coef - occ) <= 1e-9 * np.linalg.norm(occ):
                raise Singular(
                    [f"{ph.name}:scale", *occ_map.names],
                    f"scaling every occupancy of phase {ph.name!r} by c and its scale by 1/c² leaves the "
                    "pattern unchanged: fix the scale or leave a site's occupancy out",
                )

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
