"""The report of a strategy search: the best few trials, the spread of their refined parameters, and a
suspected-local-minimum flag.

Two strategies can reach almost the same Rwp with different structures (Ozaki et al. found an O x
coordinate off by 5 % of a behind a good Rwp). So the best ``k`` valid trials are compared: for each
refined parameter its range and standard deviation over those trials against its esd, and for each trial
the largest Cartesian shift (Å) of any atom from the consensus structure (the per-coordinate median of the
best trials). A trial whose atoms sit farther than ``shift_tolerance`` from the consensus is suspect; the
search flags a suspected local minimum when the best trial is.

The top trials can also agree with each other on a wrong answer: strategies that refine zero shift,
displacement and transparency together with the cell all drift to the same shifted cell. So the best
trial's cell is also compared with a reference refinement (the engine's default sequence): a lattice
parameter more than ``reference_tolerance`` combined esd away flags a suspected local minimum too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..lattice import metric_tensor

__all__ = ["parameter_values", "reference_differences", "structure_shifts", "summarize_top"]

_CELL = ("a", "b", "c", "alpha", "beta", "gamma")
#: instrument terms as result.json names them (a capillary's offsets are displace_x/displace_y, μR absorption)
_INSTRUMENT = (
    "zero",
    "displacement",
    "transparency",
    "displace_x",
    "displace_y",
    "absorption",
    "U",
    "V",
    "W",
    "X",
    "Y",
    "SH/L",
    "soller",
)


def parameter_values(summary: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Refined values and esds (0 where not refined) by name, from :meth:`RefinementResult.to_dict`.

    Names: ``phase:a`` … ``phase:gamma`` (Å, degrees), ``phase:label:x|y|z`` (fractional),
    ``phase:label:Uiso`` (Å²), ``phase:scale`` and the instrument terms (``zero`` deg, ``displacement`` μm,
    ``transparency``, ``U V W`` centideg², ``X Y`` centideg, ``SH/L``, ``soller`` deg on full-axial instruments).
    """
    out: dict[str, tuple[float, float]] = {}
    for ph in summary.get("phases", []):
        name = ph["name"]
        for k in _CELL:
            out[f"{name}:{k}"] = (float(ph["lattice"][k]), float(ph["lattice_esd"][k]))
        out[f"{name}:scale"] = (float(ph["scale"]), float(ph.get("scale_esd", 0.0)))
        for atom in ph["atoms"]:
            for axis, v, e in zip("xyz", atom["xyz"], atom["xyz_esd"], strict=True):
                out[f"{name}:{atom['label']}:{axis}"] = (float(v), float(e))
            out[f"{name}:{atom['label']}:Uiso"] = (float(atom["uiso"]), float(atom.get("uiso_esd", 0.0)))
    inst = summary.get("instrument", {})
    for k in _INSTRUMENT:
        if k in inst:
            out[k] = (float(inst[k]), float(inst.get(f"{k}_esd", 0.0)))
    return out


def structure_shifts(summaries: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Largest Cartesian shift (Å) of any atom of each refined structure from their consensus.

    The consensus is the per-coordinate median of the structures (fractional coordinates wrapped
    next to the first structure's); distances use the first structure's cell.
    """
    if not summaries:
        return np.zeros(0)
    n_phases = len(summaries[0]["phases"])
    shifts = np.zeros(len(summaries))
    for k in range(n_phases):
        xyz = np.array([[a["xyz"] for a in s["phases"][k]["atoms"]] for s in summaries], dtype=float)
        if xyz.size == 0:
            continue
        xyz = xyz[0] + (xyz - xyz[0]) - np.round(xyz - xyz[0])
        consensus = np.median(xyz, axis=0)
        lat = summaries[0]["phases"][k]["lattice"]
        g = metric_tensor(np.array([lat[c] for c in _CELL]))
        d = xyz - consensus
        dist = np.sqrt(np.maximum(np.einsum("tai,ij,taj->ta", d, g, d), 0.0))
        shifts = np.maximum(shifts, dist.max(axis=1))
    return shifts


def reference_differences(summary: Mapping[str, Any], reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Lattice parameters of a refinement against a reference refinement of the same phases.

    Parameters
    ----------
    summary, reference
        :meth:`RefinementResult.to_dict` of the refinement and of the reference (same phase order).

    Returns
    -------
    list of dict
        Per refined lattice parameter (``phase:a`` … ``phase:gamma``; Å, degrees): ``value``, ``reference``,
        ``difference`` and ``over_esd`` = difference / √(esd² + reference esd²). Parameters without an esd in
        either refinement (fixed by symmetry) are left out.
    """
    out = []
    for ph, ref in zip(summary.get("phases", []), reference.get("phases", []), strict=False):
        for k in _CELL:
            esd = float(np.hypot(ph["lattice_esd"][k], ref["lattice_esd"][k]))
            if esd <= 0.0:
                continue
            diff = float(ph["lattice"][k]) - float(ref["lattice"][k])
            out.append(
                {
                    "name": f"{ph['name']}:{k}",
                    "value": float(ph["lattice"][k]),
                    "reference": float(ref["lattice"][k]),
                    "difference": diff,
                    "over_esd": diff / esd,
                }
            )
    return out


def summarize_top(
    trials: Sequence[Mapping[str, Any]],
    shift_tolerance: float = 0.1,
    reference: Mapping[str, Any] | None = None,
    reference_tolerance: float = 5.0,
) -> dict[str, Any]:
    """Report on the best valid trials (already sorted best first).

    Parameters
    ----------
    trials
        Each with ``number``, ``rwp``, ``params`` and ``summary`` (the refinement's JSON summary).
    shift_tolerance
        Largest acceptable atom shift (Å) from the consensus of the best trials.
    reference
        :meth:`RefinementResult.to_dict` of a reference refinement (the default sequence), or None.
    reference_tolerance
        Largest acceptable difference of a lattice parameter of the best trial from the reference, in
        combined esd.

    Returns
    -------
    dict
        ``top`` (number, Rwp, shift from consensus, suspect flag, parameters of the strategy), ``spreads``
        (per refined parameter: best value and esd, min, max, standard deviation, spread over esd),
        ``reference`` (:func:`reference_differences` of the best trial; empty without a reference),
        ``local_minimum_suspected`` (the best trial is suspect or its cell is off the reference) and
        ``local_minimum_reasons`` (why, one message each).
    """
    if not trials:
        return {
            "top": [],
            "spreads": [],
            "reference": [],
            "local_minimum_suspected": False,
            "local_minimum_reasons": [],
        }
    summaries = [t["summary"] for t in trials]
    shifts = structure_shifts(summaries)
    top = [
        {
            "number": int(t["number"]),
            "rwp": float(t["rwp"]),
            "max_atom_shift_A": float(s),
            "suspect": bool(s > shift_tolerance),
            "params": dict(t["params"]),
        }
        for t, s in zip(trials, shifts, strict=True)
    ]
    values = [parameter_values(s) for s in summaries]
    spreads = []
    for name, (best, esd) in values[0].items():
        column = np.array([v[name][0] for v in values if name in v])
        spread = float(column.max() - column.min())
        if spread == 0.0 and esd == 0.0:
            continue  # fixed by symmetry or never refined: nothing to report
        spreads.append(
            {
                "name": name,
                "best": best,
                "esd": esd,
                "min": float(column.min()),
                "max": float(column.max()),
                "std": float(column.std()),
                "spread_over_esd": spread / esd if esd > 0 else None,
            }
        )
    reasons = []
    if top[0]["suspect"]:
        reasons.append(
            f"the best trial's atoms sit {top[0]['max_atom_shift_A']:.3f} Å from the consensus of the best "
            f"{len(top)} trials (limit {shift_tolerance} Å)"
        )
    ref_diffs = [] if reference is None else reference_differences(summaries[0], reference)
    for d in ref_diffs:
        if abs(d["over_esd"]) > reference_tolerance:
            reasons.append(
                f"{d['name']} of the best trial differs from the default sequence's by {d['difference']:+.5g} "
                f"({d['over_esd']:+.1f} esd; limit {reference_tolerance:g} esd)"
            )
    return {
        "top": top,
        "spreads": spreads,
        "reference": ref_diffs,
        "local_minimum_suspected": bool(reasons),
        "local_minimum_reasons": reasons,
    }
