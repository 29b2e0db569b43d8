"""The powder pattern model and its Jacobian.

y_calc(2θ) = background + Σ_phases S · Σ_hkl m |F|² LP · A · P_MD · profile(2θ − 2θ_hkl), for Kα1 and Kα2
(A the capillary's absorption in Debye–Scherrer geometry, 1 in Bragg–Brentano).

Intensity-like parameters (scale, atoms and occupancies through |F|², preferred orientation,
background) enter linearly through fixed peak shapes, so their Jacobian columns are
``shape_matrix @ dI/dp``; position and width parameters use analytic profile derivatives chained
through per-peak sensitivities (sparse matrix products). Only SH/L and the Soller aperture use a finite difference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .absorption import cylinder_transmission
from .background import background_basis, background_peaks
from .crystal import Phase, Reflections, generate_reflections
from .instrument import Instrument
from .lattice import cell_to_a, hkl_products
from .profile import LN2, PeakSet, ProfileTerms, evaluate_peaks
from .structure_factors import StructureFactors, structure_factors

__all__ = ["ModelState", "PatternCalculator", "PhaseState", "initial_state"]

RAD = np.pi / 180.0
SQRT8LN2 = np.sqrt(8.0 * LN2)
#: smallest Gaussian variance (centideg²) and Lorentzian FWHM (centideg) allowed in the model
MIN_SIG2 = 0.01
MIN_GAM = 0.01


@dataclass
class PhaseState:
    """Refinable values of one phase.

    Attributes
    ----------
    a_free
        Free lattice parameters; ``A = phase.lattice_matrix @ a_free`` (Å⁻²).
    scale
        Phase scale factor S.
    xyz, uiso
        Coordinates (fractional) and Uiso (Å²) per site.
    occupancy
        Site occupancy per site (fraction of the site, dimensionless), a copy of the CIF values at the start.
    po_ratio, po_axis
        March–Dollase ratio r (1 = random) and axis [h, k, l].
    strain_aniso, strain_axis
        Uniaxial microstrain broadening: an extra Lorentzian FWHM ``strain_aniso · tanθ · cos²φ``
        (centideg), φ the angle between the reflection's normal and the axis [h, k, l] (reciprocal
        lattice); with the isotropic ``Y tanθ`` it is the second-order form of GSAS-II's uniaxial
        microstrain (Y along the plane, Y + strain_aniso along the axis). The axis [0, 0, 0] makes it
        isotropic (cos²φ = 1): the phase's own microstrain on top of the common ``Y``. ``None``: none.
    refine_atoms
        The ``atoms_xyz`` and ``atoms_uiso`` groups refine this phase's atoms (``False``: they keep their
        values; a strategy stage's ``atom_phases``). Part of the state, so a warm start keeps the choice.
    """

    a_free: np.ndarray
    scale: float
    xyz: np.ndarray
    uiso: np.ndarray
    occupancy: np.ndarray
    po_ratio: float = 1.0
    po_axis: tuple[int, int, int] = (0, 0, 1)
    strain_aniso: float = 0.0
    strain_axis: tuple[int, int, int] | None = None  # None: no uniaxial strain for this phase
    refine_atoms: bool = True


@dataclass
class ModelState:
    """Every refinable value of a model (instrument, sample, background, phases).

    ``displacement`` and ``transparency`` are the two peak-shift terms of the geometry: Bragg–Brentano
    sample displacement (μm, GSAS-II "Shift") and transparency (GSAS-II "Transparency"); Debye–Scherrer
    capillary offsets (μm) perpendicular to the beam (GSAS-II "DisplaceX") and along it ("DisplaceY").
    ``background_peaks`` is (n, 3): position (deg), FWHM (deg), area (counts × deg) of each hump.
    """

    instrument: Instrument
    phases: list[PhaseState]
    displacement: float = 0.0
    transparency: float = 0.0
    background_kind: str = "chebyshev"
    background_coefs: np.ndarray = field(default_factory=lambda: np.zeros(1))
    background_peaks: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def copy(self) -> ModelState:
        """Deep copy."""
        return copy.deepcopy(self)


def initial_state(phases: list[Phase], instrument: Instrument) -> ModelState:
    """Starting values: the CIF cells and atoms, unit scales, the instrument's profile, flat background."""
    states = []
    for ph in phases:
        a_terms = cell_to_a(ph.cell)
        a_free = np.linalg.lstsq(ph.lattice_matrix, a_terms, rcond=None)[0]
        states.append(
            PhaseState(
                a_free=a_free,
                scale=1.0,
                xyz=ph.xyz.copy(),
                uiso=ph.uiso.copy(),
                occupancy=ph.occupancy.copy(),
            )
        )
    return ModelState(instrument=instrument, phases=states)


@dataclass
class _PhaseCalc:
    """Per-phase intermediate results of one evaluation."""

    refl: Reflections
    hp: np.ndarray  # (n_refl, 6) hkl products
    q: np.ndarray  # 1/d²
    tth: np.ndarray  # Bragg 2θ (deg) for λ1
    pos1: np.ndarray
    intensity: np.ndarray  # I per reflection (Kα1), scale included
    i_noscale: np.ndarray
    f2: np.ndarray
    lp: np.ndarray  # Lorentz–polarisation × absorption
    po: np.ndarray
    sf: StructureFactors | None
    d_po: np.ndarray | None
    d_absorb: np.ndarray  # d ln A / dμR per reflection (0 without absorption)
    cos2_strain: np.ndarray  # cos²φ to the uniaxial strain axis per reflection


class PatternCalculator:
    """Evaluates the pattern (and Jacobian) over a fixed 2θ grid for a fixed set of phases.

    Parameters
    ----------
    two_theta
        Sorted 2θ grid (deg).
    phases
        Phases (static data).
    instrument
        Provides the fixed wavelengths (the refinable profile terms live in :class:`ModelState`).
    margin
        Reflections are generated for 2θ up to this far outside the grid (deg).
    """

    def __init__(
        self, two_theta: np.ndarray, phases: list[Phase], instrument: Instrument, margin: float = 3.0
    ):
        self.x = np.asarray(two_theta, dtype=float)
        self.phases = phases
        self.lam1 = instrument.wavelength1
        self.lam2 = instrument.wavelength2 if instrument.ratio > 0 and instrument.wavelength2 > 0 else 0.0
        self.margin = margin
        self.fp_fpp = [ph.anomalous(self.lam1) for ph in phases]
        self.reflections: list[Reflections] = []
        self._bkg_cache: dict[tuple[str, int], np.ndarray] = {}

    def update_reflections(self, state: ModelState) -> None:
        """(Re)generate reflection lists for the current cells."""
        lam_max = max(self.lam1, self.lam2)
        hi = min(float(self.x[-1]) + self.margin, 179.0)
        lo = max(float(self.x[0]) - self.margin, 0.5)
        d_min = lam_max / (2.0 * np.sin(np.radians(hi / 2.0)))
        d_max = self.lam1 / (2.0 * np.sin(np.radians(lo / 2.0)))
        self.reflections = []
        for ph, ps in zip(self.phases, state.phases, strict=True):
            a_terms = ph.lattice_matrix @ ps.a_free
            self.reflections.append(generate_reflections(ph, a_terms, d_min, d_max))

    def background_matrix(self, kind: str, n_terms: int) -> np.ndarray:
        """Cached background basis over this grid."""
        key = (kind, n_terms)
        if key not in self._bkg_cache:
            self._bkg_cache[key] = background_basis(kind, n_terms, self.x, self.lam1)
        return self._bkg_cache[key]

    # ------------------------------------------------------------------ forward model
    def reflection_positions(self, k: int, state: ModelState) -> np.ndarray:
        """Kα1 peak positions (deg 2θ, shifts included) of phase ``k``'s current reflection list."""
        return self._phase_calc(k, state, False, False).pos1

    def _phase_calc(
        self, k: int, state: ModelState, want_atoms: bool, want_po: bool, want_strain: bool = False
    ) -> _PhaseCalc:
        ph = self.phases[k]
        ps = state.phases[k]
        inst = state.instrument
        refl = self.reflections[k]
        hp = hkl_products(refl.hkl)
        q = hp @ (ph.lattice_matrix @ ps.a_free)
        sin_t = np.clip(self.lam1 * np.sqrt(np.maximum(q, 0.0)) / 2.0, 0.0, 0.999999)
        tth = 2.0 * np.degrees(np.arcsin(sin_t))
        cos_t = np.sqrt(1.0 - sin_t**2)
        fp, fpp = self.fp_fpp[k]
        sf = structure_factors(
            ph, refl.hkl, q / 4.0, ps.xyz, ps.uiso, fp, fpp, want_derivs=want_atoms, occupancy=ps.occupancy
        )
        c2t = np.cos(np.radians(tth))
        p = inst.polarization
        lp = ((1.0 - p) * c2t**2 + p) / (2.0 * sin_t**2 * cos_t)
        d_absorb = np.zeros(len(tth))
        if inst.geometry == "debye_scherrer":
            absorb, da = cylinder_transmission(tth, inst.mu_r)
            lp = lp * absorb
            d_absorb = da / absorb
        po, d_po = self._march_dollase(ph, ps, refl, want_po)
        i_noscale = refl.multiplicity * sf.f2 * lp * po
        pos1 = tth + inst.zero + _shift(state, tth)
        cos2 = (
            self._axis_cos2(ph, ps, refl.hkl, ps.strain_axis)
            if ps.strain_axis is not None and (ps.strain_aniso != 0.0 or want_strain)
            else np.zeros(len(tth))
        )
        return _PhaseCalc(
            refl=refl,
            hp=hp,
            q=q,
            tth=tth,
            pos1=pos1,
            intensity=ps.scale * i_noscale,
            i_noscale=i_noscale,
            f2=sf.f2,
            lp=lp,
            po=po,
            sf=sf if want_atoms else None,
            d_po=d_po,
            d_absorb=d_absorb,
            cos2_strain=cos2,
        )

    @staticmethod
    def _axis_cos2(ph: Phase, ps: PhaseState, hkl: np.ndarray, axis: tuple[int, int, int]) -> np.ndarray:
        """cos² of the angle between each reflection's normal and the reciprocal-lattice direction ``axis``;
        all ones for the axis [0, 0, 0] (isotropic: the phase's own microstrain on top of the common Y)."""
        if not any(axis):
            return np.ones(len(hkl))
        a_terms = ph.lattice_matrix @ ps.a_free
        gs = np.array(
            [
                [a_terms[0], a_terms[3] / 2, a_terms[4] / 2],
                [a_terms[3] / 2, a_terms[1], a_terms[5] / 2],
                [a_terms[4] / 2, a_terms[5] / 2, a_terms[2]],
            ]
        )
        ax = np.asarray(axis, dtype=float)
        h = np.asarray(hkl, dtype=float)
        num = h @ gs @ ax
        den = np.einsum("ri,ij,rj->r", h, gs, h) * (ax @ gs @ ax)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.clip(np.where(den > 0, num * num / den, 0.0), 0.0, 1.0)

    def _march_dollase(
        self, ph: Phase, ps: PhaseState, refl: Reflections, want_deriv: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        n = len(refl.hkl)
        if ps.po_ratio == 1.0 and not want_deriv:
            return np.ones(n), None
        a_terms = ph.lattice_matrix @ ps.a_free
        gs = np.array(
            [
                [a_terms[0], a_terms[3] / 2, a_terms[4] / 2],
                [a_terms[3] / 2, a_terms[1], a_terms[5] / 2],
                [a_terms[4] / 2, a_terms[5] / 2, a_terms[2]],
            ]
        )
        axis = np.asarray(ps.po_axis, dtype=float)
        eq = refl.equivalents  # (n, n_rot, 3)
        num = np.einsum("hri,ij,j->hr", eq, gs, axis)
        den = np.sqrt(np.einsum("hri,ij,hrj->hr", eq, gs, eq) * (axis @ gs @ axis))
        cos2 = np.clip((num / den) ** 2, 0.0, 1.0)
        sin2 = 1.0 - cos2
        r = ps.po_ratio
        base = r * r * cos2 + sin2 / r
        po = np.mean(base**-1.5, axis=1)
        if not want_deriv:
            return po, None
        d = np.mean(-1.5 * base**-2.5 * (2.0 * r * cos2 - sin2 / r**2), axis=1)
        return po, d

    def widths(
        self, state: ModelState, pos1: np.ndarray, aniso: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """Gaussian and Lorentzian FWHM (deg) at the peak positions, and the σ² (centideg²) before clamping.

        ``aniso`` is each peak's uniaxial-strain coefficient (centideg, multiplies tanθ), default none.
        """
        inst = state.instrument
        th = np.radians(pos1 / 2.0)
        tan_t = np.tan(th)
        cos_t = np.cos(th)
        sig2 = inst.u * tan_t**2 + inst.v * tan_t + inst.w
        gam = inst.x / cos_t + (inst.y + (0.0 if aniso is None else aniso)) * tan_t
        fg = SQRT8LN2 * np.sqrt(np.maximum(sig2, MIN_SIG2)) / 100.0
        fl = np.maximum(gam, MIN_GAM) / 100.0
        return fg, fl, sig2, gam, tan_t, cos_t

    @staticmethod
    def width_minima(state: ModelState, lo: float, hi: float) -> tuple[float, float, float, float]:
        """Exact minima over 2θ ∈ [lo, hi] of σ² (centideg²) and γ (centideg), and where they occur (deg).

        σ² = U t² + V t + W is a parabola in t = tanθ; γ = X/cosθ + Y tanθ has its only stationary
        point at sinθ = −Y/X.
        """
        inst = state.instrument
        th = np.radians(np.array([lo, hi]) / 2.0)
        t_cands = list(np.tan(th))
        if inst.u != 0:
            tv = -inst.v / (2.0 * inst.u)
            if t_cands[0] < tv < t_cands[1]:
                t_cands.append(tv)
        t = np.array(t_cands)
        sig2 = inst.u * t**2 + inst.v * t + inst.w
        i = int(np.argmin(sig2))
        th_cands = list(th)
        if inst.x != 0 and -1.0 < -inst.y / inst.x < 1.0:
            tc = np.arcsin(-inst.y / inst.x)
            if th[0] < tc < th[1]:
                th_cands.append(tc)
        tc = np.array(th_cands)
        gam = inst.x / np.cos(tc) + inst.y * np.tan(tc)
        j = int(np.argmin(gam))
        return (
            float(sig2[i]),
            2.0 * float(np.degrees(np.arctan(t[i]))),
            float(gam[j]),
            2.0 * float(np.degrees(tc[j])),
        )

    def evaluate(
        self, state: ModelState, groups: frozenset[str] = frozenset(), jacobian: bool = False
    ) -> Evaluation:
        """Compute the pattern and, if asked, the Jacobian blocks for the refined groups.

        Returns
        -------
        Evaluation
            y (total), background, per-phase components, and a dict of Jacobian blocks.
        """
        inst = state.instrument
        want_atoms = jacobian and bool(groups & {"atoms_xyz", "atoms_uiso", "occupancy"})
        want_po = jacobian and "preferred_orientation" in groups
        want_strain = jacobian and "uniaxial_strain" in groups
        pcs = [self._phase_calc(k, state, want_atoms, want_po, want_strain) for k in range(len(self.phases))]
        lam_ratio = 360.0 * (self.lam2 - self.lam1) / (np.pi * self.lam1) if self.lam2 else 0.0
        pos_list, int_list, phase_of, refl_of, dpos2 = [], [], [], [], []
        for k, pc in enumerate(pcs):
            n = len(pc.pos1)
            pos_list.append(pc.pos1)
            int_list.append(pc.intensity)
            phase_of.append(np.full(n, k))
            refl_of.append(np.arange(n))
            dpos2.append(np.ones(n))
        if self.lam2:
            for k, pc in enumerate(pcs):
                n = len(pc.pos1)
                half = np.radians(pc.pos1 / 2.0)
                pos_list.append(pc.pos1 + lam_ratio * np.tan(half))
                int_list.append(inst.ratio * pc.intensity)
                phase_of.append(np.full(n, k))
                refl_of.append(np.arange(n))
                dpos2.append(1.0 + lam_ratio * (np.pi / 360.0) / np.cos(half) ** 2)
        pos = np.concatenate(pos_list) if pos_list else np.zeros(0)
        inten = np.concatenate(int_list) if int_list else np.zeros(0)
        phase_of_a = np.concatenate(phase_of) if phase_of else np.zeros(0, int)
        refl_of_a = np.concatenate(refl_of) if refl_of else np.zeros(0, int)
        dpos2_a = np.concatenate(dpos2) if dpos2 else np.zeros(0)
        pos1_all = np.concatenate([pc.pos1 for pc in pcs] * (2 if self.lam2 else 1)) if pcs else np.zeros(0)
        aniso = (
            np.concatenate(
                [state.phases[k].strain_aniso * pc.cos2_strain for k, pc in enumerate(pcs)]
                * (2 if self.lam2 else 1)
            )
            if pcs
            else np.zeros(0)
        )
        fg, fl, sig2, gam, tan_t, cos_t = self.widths(state, pos1_all, aniso)
        peaks = PeakSet(pos=pos, fwhm_g=fg, fwhm_l=fl, shl=max(inst.sh_l, 0.0), axial=inst.axial())
        terms = evaluate_peaks(self.x, peaks, want_derivs=jacobian)
        shape = terms.matrix(terms.value, len(self.x))
        nb = len(state.background_coefs)
        bmat = self.background_matrix(state.background_kind, nb)
        ybkg = bmat @ state.background_coefs
        if len(state.background_peaks):
            hump, d_hump = background_peaks(self.x, state.background_peaks)
            ybkg = ybkg + hump
            bmat = np.hstack([bmat, d_hump])  # the background block: coefficients, then peak parameters
        comps = []
        for k in range(len(pcs)):
            comps.append(shape @ np.where(phase_of_a == k, inten, 0.0))
        y = ybkg + (np.sum(comps, axis=0) if comps else 0.0)
        ev = Evaluation(
            y=y,
            background=ybkg,
            components=comps,
            pcs=pcs,
            peak_pos=pos,
            peak_phase=phase_of_a,
            peak_refl=refl_of_a,
            peak_intensity=inten,
            shape=shape,
        )
        if not jacobian:
            return ev
        ev.blocks = self._jacobian_blocks(
            state,
            groups,
            pcs,
            terms,
            shape,
            inten,
            phase_of_a,
            refl_of_a,
            dpos2_a,
            sig2,
            gam,
            tan_t,
            cos_t,
            bmat,
            peaks,
        )
        return ev

    def _jacobian_blocks(
        self,
        state: ModelState,
        groups: frozenset[str],
        pcs: list[_PhaseCalc],
        terms: ProfileTerms,
        shape: sp.csc_matrix,
        inten: np.ndarray,
        phase_of: np.ndarray,
        refl_of: np.ndarray,
        dpos2: np.ndarray,
        sig2: np.ndarray,
        gam: np.ndarray,
        tan_t: np.ndarray,
        cos_t: np.ndarray,
        bmat: np.ndarray,
        peaks: PeakSet,
    ) -> dict[str, np.ndarray]:
        inst = state.instrument
        n = len(self.x)
        blocks: dict[str, np.ndarray] = {}
        ratio_peak = np.where(np.arange(len(inten)) >= sum(len(pc.pos1) for pc in pcs), inst.ratio, 1.0)
        if "background" in groups:
            blocks["background"] = bmat
        if "scale" in groups:
            cols = []
            for k, pc in enumerate(pcs):
                sel = phase_of == k
                i_ns = np.zeros(len(inten))
                i_ns[sel] = pc.i_noscale[refl_of[sel]]
                cols.append(shape @ (i_ns * ratio_peak))
            blocks["scale"] = np.stack(cols, axis=1)
        # intensity derivatives through |F|² and PO: shape @ dI_peak
        for k, pc in enumerate(pcs):
            ps = state.phases[k]
            ph = self.phases[k]
            sel = phase_of == k
            fac = np.zeros(len(inten))
            fac[sel] = (ps.scale * pc.refl.multiplicity * pc.lp * pc.po)[refl_of[sel]] * ratio_peak[sel]
            if "atoms_xyz" in groups:
                # d|F|²/d(free coordinate) per reflection, all sites at once: (n_refl, n_free)
                dref = np.concatenate(
                    [pc.sf.d_xyz[:, j, :] @ ph.xyz_basis[j] for j in range(ph.n_sites)], axis=1
                )
                dpk = np.zeros((len(inten), dref.shape[1]))
                dpk[sel] = dref[refl_of[sel]]
                blocks[f"atoms_xyz:{k}"] = shape @ (fac[:, None] * dpk)
            if "atoms_uiso" in groups:
                dpk = np.zeros((len(inten), ph.n_sites))
                dpk[sel] = pc.sf.d_uiso[refl_of[sel]]
                blocks[f"atoms_uiso:{k}"] = shape @ (fac[:, None] * dpk)
            if "occupancy" in groups:
                # every site's column; the refinement combines them through its occupancy constraints
                dpk = np.zeros((len(inten), ph.n_sites))
                dpk[sel] = pc.sf.d_occ[refl_of[sel]]
                blocks[f"occupancy:{k}"] = shape @ (fac[:, None] * dpk)
            if "preferred_orientation" in groups:
                dpk = np.zeros(len(inten))
                dpk[sel] = (ps.scale * pc.refl.multiplicity * pc.lp * pc.f2 * pc.d_po)[
                    refl_of[sel]
                ] * ratio_peak[sel]
                blocks[f"preferred_orientation:{k}"] = (shape @ dpk)[:, None]
        if "absorption" in groups:
            dln = np.concatenate([pc.d_absorb for pc in pcs] * (2 if self.lam2 else 1))
            blocks["absorption"] = (shape @ (inten * dln))[:, None]  # peaks are in the same order
        # position parameters
        pos_groups = groups & {"cell", "zero", "displacement", "transparency"}
        if pos_groups:
            dmat = terms.matrix(terms.d_pos * inten[_pair_peaks(terms)], n)
            tth_all = np.concatenate([pc.tth for pc in pcs] * (2 if self.lam2 else 1))
            d_disp, d_transp = _shift_derivatives(state, tth_all)
            if "zero" in groups:
                blocks["zero"] = (dmat @ dpos2)[:, None]
            if "displacement" in groups:
                blocks["displacement"] = (dmat @ (dpos2 * d_disp))[:, None]
            if "transparency" in groups:
                blocks["transparency"] = (dmat @ (dpos2 * d_transp))[:, None]
            if "cell" in groups:
                for k, pc in enumerate(pcs):
                    ph = self.phases[k]
                    sel = phase_of == k
                    cos_t2 = np.cos(np.radians(pc.tth / 2.0))
                    with np.errstate(divide="ignore", invalid="ignore"):
                        dtth_dq = np.where(
                            pc.q > 0, np.degrees(self.lam1 / (2.0 * np.sqrt(pc.q) * cos_t2)), 0.0
                        )
                    dq_da = pc.hp @ ph.lattice_matrix  # (n_refl, n_free)
                    dpk = np.zeros((len(inten), dq_da.shape[1]))
                    dpk[sel] = (dtth_dq[:, None] * dq_da)[refl_of[sel]]
                    blocks[f"cell:{k}"] = dmat @ (dpos2[:, None] * dpk)
        width_groups = groups & {"U", "V", "W", "X", "Y", "uniaxial_strain"}
        if width_groups:
            pp = _pair_peaks(terms)
            gmat = terms.matrix(terms.d_fwhm_g * inten[pp], n)
            lmat = terms.matrix(terms.d_fwhm_l * inten[pp], n)
            safe = np.maximum(sig2, MIN_SIG2)
            # derivatives as if unclamped, so a width term at its floor can still move away from it
            dfg_dsig2 = SQRT8LN2 / (2.0 * np.sqrt(safe)) / 100.0
            live_l = np.full(len(gam), 0.01)
            if "U" in groups:
                blocks["U"] = (gmat @ (dfg_dsig2 * tan_t**2))[:, None]
            if "V" in groups:
                blocks["V"] = (gmat @ (dfg_dsig2 * tan_t))[:, None]
            if "W" in groups:
                blocks["W"] = (gmat @ dfg_dsig2)[:, None]
            if "X" in groups:
                blocks["X"] = (lmat @ (live_l / cos_t))[:, None]
            if "Y" in groups:
                blocks["Y"] = (lmat @ (live_l * tan_t))[:, None]
            if "uniaxial_strain" in groups:
                cos2 = np.concatenate([pc.cos2_strain for pc in pcs] * (2 if self.lam2 else 1))
                for k in range(len(pcs)):
                    blocks[f"uniaxial_strain:{k}"] = (lmat @ (live_l * tan_t * cos2 * (phase_of == k)))[
                        :, None
                    ]
        if "SH/L" in groups:
            # the asymmetry grows like (SH/L)², so a forward step comparable to SH/L itself is needed
            h = max(2e-3, 0.2 * abs(inst.sh_l))
            shifted = PeakSet(pos=peaks.pos, fwhm_g=peaks.fwhm_g, fwhm_l=peaks.fwhm_l, shl=peaks.shl + h)
            t2 = evaluate_peaks(self.x, shifted, want_derivs=False)
            y2 = t2.matrix(t2.value, n) @ inten
            blocks["SH/L"] = ((y2 - shape @ inten) / h)[:, None]
        if "soller" in groups:
            # the aberration's width is set by the aperture until the slit lengths take over
            h = max(1e-3, 0.02 * inst.soller)
            wider = inst.with_changes(soller=inst.soller + h).axial()
            shifted = PeakSet(
                pos=peaks.pos, fwhm_g=peaks.fwhm_g, fwhm_l=peaks.fwhm_l, shl=peaks.shl, axial=wider
            )
            t2 = evaluate_peaks(self.x, shifted, want_derivs=False)
            y2 = t2.matrix(t2.value, n) @ inten
            blocks["soller"] = ((y2 - shape @ inten) / h)[:, None]
        return blocks


def _shift(state: ModelState, tth: np.ndarray) -> np.ndarray:
    """Peak shift (deg 2θ) from the geometry's two sample-position terms at Bragg angles ``tth`` (deg).

    Bragg–Brentano (GSAS-II): −(0.36/πR)·s·cosθ − (0.09/πR)·100·T·sin2θ, s the displacement (μm), T the
    transparency, R the goniometer radius (mm). Debye–Scherrer (GSAS-II's DisplaceX, DisplaceY):
    −(0.09/πR)(Dx cos2θ + Dy sin2θ) deg. A capillary off the axis by d (μm) perpendicular to the beam
    shifts a ray by −(d/R)cos2θ rad = −(0.18/πR)·d·cos2θ deg, so GSAS-II's (and our) Dx is twice the
    geometric offset; we keep GSAS-II's scale so that values compare one to one.
    """
    d_disp, d_transp = _shift_derivatives(state, tth)
    return d_disp * state.displacement + d_transp * state.transparency


def _shift_derivatives(state: ModelState, tth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d(shift)/d(displacement) and d(shift)/d(transparency) (deg per unit) at Bragg angles ``tth`` (deg)."""
    inst = state.instrument
    radius = inst.goniometer_radius
    t = np.radians(tth)
    const = 9.0e-2 / (np.pi * radius)
    if inst.geometry == "debye_scherrer":
        return -const * np.cos(t), -const * np.sin(t)
    return -const * 4.0 * np.cos(t / 2.0), -const * 100.0 * np.sin(t)


def _pair_peaks(terms: ProfileTerms) -> np.ndarray:
    counts = np.diff(terms.indptr)
    return np.repeat(np.arange(len(counts)), counts)


@dataclass
class Evaluation:
    """The result of one model evaluation."""

    y: np.ndarray
    background: np.ndarray
    components: list[np.ndarray]
    pcs: list[_PhaseCalc]
    peak_pos: np.ndarray
    peak_phase: np.ndarray
    peak_refl: np.ndarray
    peak_intensity: np.ndarray
    shape: sp.csc_matrix
    blocks: dict[str, np.ndarray] = field(default_factory=dict)
