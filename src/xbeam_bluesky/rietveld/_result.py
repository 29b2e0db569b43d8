"""What a refinement reports: :class:`RefinementResult` and its assembly from the final model.

:func:`assemble_result` computes the R values, the covariance (inverse normal matrix scaled by χ²/(N−P)) and
the esds, the per-phase summaries (cell with esds, R_Bragg, atoms, weight fractions by Hill–Howard), the
instrument and background blocks, and the warnings worth a look.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._parameters import INSTRUMENT_FIELDS, Param, ParameterMap
from .lattice import a_to_cell, metric_tensor
from .model import Evaluation, ModelState, PatternCalculator
from .pattern_io import Pattern
from .quantitative import weight_fractions

__all__ = ["RefinementResult", "StageRecord", "assemble_result", "weighted_rwp"]

#: the names result.json gives the two sample-position terms in each geometry
_POSITION_NAMES = {
    "bragg_brentano": {"displacement": "displacement", "transparency": "transparency"},
    "debye_scherrer": {"displacement": "displace_x", "transparency": "displace_y"},
}


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


def assemble_result(
    pattern: Pattern,
    pmap: ParameterMap,
    calc: PatternCalculator,
    mask: np.ndarray,
    st: ModelState,
    active: set[str],
    records: list[StageRecord],
    status: str,
    message: str,
    wall: float,
    fit_range: tuple[float, float],
    notes: set[str],
    phase_notes: list[str],
) -> RefinementResult:
    """The result of a run that ended with model ``st`` on the points ``mask`` of ``pattern``.

    Parameters
    ----------
    pmap
        The parameters (ties, occupancy maps) of the last stage.
    calc, mask
        The last stage's calculator and the pattern points it covers.
    active
        The groups refined at the end (their covariance gives the esds).
    records, status, message
        What the stages did and how the run ended.
    wall
        Wall time of the run (s).
    fit_range
        The run's 2θ range (deg), used when no stage ran.
    notes
        Remarks collected during the run (updated with the weight-fraction warnings).
    phase_notes
        Remarks about the inputs (renamed phases), first in the warnings.
    """
    y = pattern.counts[mask]
    w = pattern.weights[mask]
    sig = pattern.sigma[mask]
    params = pmap.params(st, active)
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
        jw = pmap.jacobian(ev.blocks, params) * np.sqrt(w)[:, None]
        normal = jw.T @ jw
        d = np.sqrt(np.diag(normal))
        try:
            cov = np.linalg.inv(normal / np.outer(d, d)) / np.outer(d, d) * (chi2 / dof)
        except np.linalg.LinAlgError:
            cov = None
    esd = _esd_lookup(params, cov)
    rng = records[-1].range if records else fit_range
    phases_out, n_refl_total = _phase_summaries(pmap, notes, ev, st, y, rng, esd, cov, params)
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
    for g, f in INSTRUMENT_FIELDS.items():
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
    warnings = phase_notes + sorted(notes) + _physical_checks(pmap, calc, st, params, rng)
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
    pmap: ParameterMap, calc: PatternCalculator, st: ModelState, params: list[Param], rng: tuple[float, float]
) -> list[str]:
    """Physically suspicious results worth a look (not failures)."""
    out = []
    for ph, ps in zip(pmap.phases, st.phases, strict=True):
        neg = [lab for lab, u in zip(ph.labels, ps.uiso, strict=True) if u < 0]
        if neg:
            out.append(f"phase {ph.name!r}: negative Uiso for {', '.join(neg)}")
    sig2, at_s, gam, at_g = calc.width_minima(st, rng[0], rng[1])
    if sig2 < 0:
        out.append(f"U, V, W give a negative Gaussian variance ({sig2:.3g} centideg² at 2θ {at_s:.1f} deg)")
    if gam < 0:
        out.append(f"X, Y give a negative Lorentzian width ({gam:.3g} centideg at 2θ {at_g:.1f} deg)")
    vec = pmap.get(st, params) if params else np.zeros(0)
    for p, v in zip(params, vec, strict=True):
        if (np.isfinite(p.lower) and v <= p.lower + 1e-12) or (np.isfinite(p.upper) and v >= p.upper - 1e-12):
            out.append(f"parameter {p.name} is at its bound ({v:g})")
    return out


def _esd_lookup(params: list[Param], cov: np.ndarray | None) -> dict[str, float]:
    if cov is None:
        return {}
    return {p.name: float(np.sqrt(max(cov[i, i], 0.0))) for i, p in enumerate(params)}


def _phase_summaries(
    pmap: ParameterMap,
    notes: set[str],
    ev: Evaluation,
    st: ModelState,
    y: np.ndarray,
    rng: tuple[float, float],
    esd: dict[str, float],
    cov: np.ndarray | None,
    params: list[Param],
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
    for k, ph in enumerate(pmap.phases):
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
        occ_map = pmap.occ_maps[k]
        if cov is not None and occ_map.names and all(nm in index for nm in occ_map.names):
            idx = [index[nm] for nm in occ_map.names]
            var = np.diag(occ_map.matrix @ cov[np.ix_(idx, idx)] @ occ_map.matrix.T)
            occ_esd = np.sqrt(np.maximum(var, 0.0))
        atoms = []
        rep_label = {j: ph.labels[g[0]] for g in pmap.ties[k].groups for j in g}  # shared sites
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
    wf = weight_fractions(pmap.phases, st.phases, index, cov)  # Hill–Howard, esds from the covariance
    for o, w, w_esd, w_status in zip(out, wf.fraction, wf.esd, wf.status, strict=True):
        o.update(weight_fraction=float(w), weight_fraction_esd=float(w_esd), weight_fraction_status=w_status)
    notes.update(wf.warnings)
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


def weighted_rwp(y: np.ndarray, yc: np.ndarray, w: np.ndarray) -> float:
    return 100.0 * float(np.sqrt(np.sum(w * (y - yc) ** 2) / np.sum(w * y * y)))
