"""The strategy space of the Bayesian strategy search (BBO-Rietveld, Ozaki et al. 2020, with our changes).

A point of the space is a flat dict of parameters (what optuna samples); :meth:`SearchSpace.strategy` turns
it into an engine :class:`~xbeam_bluesky.rietveld.Strategy`, staged as in the paper with refine flags that
only accumulate:

1. background + scale over the 2θ range [lb, ub] (lb in [min, max − w], ub in [lb + w], max], w = 20°),
   background type and number of terms chosen;
2. cell (always), zero shift (on/off);
3. sample displacement and transparency (each on/off; Bragg–Brentano, instead of the paper's
   Debye–Scherrer displacements);
4. the profile terms U V W X Y SH/L (each on/off) and, optionally, March–Dollase preferred orientation;
5. all atoms: coordinates and Uiso (of every phase, or of ``atom_phases`` only: the major phases of a mixture);
6. the full 2θ range, refined again — the Rwp of this stage is the objective.

One addition to the paper's space: ``gaussian_after_atoms`` moves the Gaussian and asymmetry terms
(U V W SH/L) to a stage after the atoms, as in the usual manual recipe (and our default sequence); the
Lorentzian X Y stay before the atoms. With it the default sequence is (nearly) a point of the space.

For a mixture, ``strain_axes`` adds one switch per phase, ``strain:<phase>``: no per-phase microstrain, or the
``uniaxial_strain`` term along one of the offered axes ([0, 0, 0] = isotropic), refined in a stage after the
profile terms. ``background_peaks`` (broad humps: amorphous scattering, a capillary) are in the first stage's
background of every point, and ``occupancy`` (site occupancies refined on request, a shared site keeping its
sum) in the atoms stage of every point. ``exclusive_shifts`` names pairs of shift terms that move the peaks
alike over the range (zero shift and a capillary's DisplaceX at low angles): a point switching both on
refines only the second. Without these (one phase, no humps) the space is the one of earlier versions, so
saved strategies still warm-start.

The range of stages 1–5 is sampled as two fractions in [0, 1] so the space is static (multivariate TPE
needs that). Every stage carries its explicit 2θ range, so a saved strategy replays identically whatever
``--range`` the replay is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from xbeam_bluesky.errors import RietveldInputError

from ..background import BACKGROUND_TYPES
from ..strategy import BackgroundSpec, OccupancySpec, Stage, Strategy

__all__ = ["PROFILE_TERMS", "SearchSpace"]

#: Profile terms the search switches on or off (GSAS conventions, see :class:`Instrument`).
PROFILE_TERMS = ("U", "V", "W", "X", "Y", "SH/L")
_SHIFT_TERMS = ("zero", "displacement", "transparency")
_GAUSSIAN = ("U", "V", "W", "SH/L")
_OPTIONAL = (*_SHIFT_TERMS, *PROFILE_TERMS, "preferred_orientation")
_NO_PO = "none"
_NO_STRAIN = "none"
_STRAIN = "strain:"


def _axis_key(axis: tuple[int, int, int]) -> str:
    return ",".join(str(int(v)) for v in axis)


@dataclass(frozen=True)
class SearchSpace:
    """The strategy space for one pattern.

    Parameters
    ----------
    two_theta_min, two_theta_max
        The full 2θ range (deg) of the final stage — the range the objective Rwp is computed on.
    min_width
        Smallest width (deg) of the range of the first stages (the paper's 20°).
    background_types
        Background functions to choose from.
    max_background_terms
        Largest number of background terms (the paper's 15).
    po_axes
        March–Dollase axes [h, k, l] the search may switch on; empty = no preferred-orientation option.
    stage_cycles
        Maximum least-squares cycles of each stage before the last (GSAS-II's BBO runs used 8).
    final_cycles
        Maximum cycles of the final full-range stage.
    exclude
        Terms never refined (removed from the space), among ``zero``, ``displacement``, ``transparency``,
        ``U V W X Y SH/L`` and ``preferred_orientation`` — e.g. ``("zero",)`` for a calibrated goniometer.
    asymmetry_parameter
        What the ``SH/L`` switch refines: "SH/L" for an FCJ instrument, "soller" for the full axial model
        (:attr:`Instrument.asymmetry_parameter`).
    atom_phases
        Phases whose atoms the atoms stage refines; ``None`` = every phase.
    strain_axes
        ``((phase, (axis, ...)), ...)``: the phases offered a per-phase microstrain switch and the axes
        [h, k, l] it chooses from ([0, 0, 0] = isotropic); empty = no switch.
    background_peaks
        Background humps ``(position, fwhm)`` (deg 2θ) in the first stage's background.
    occupancy
        Site occupancies the atoms stage refines in every point (a solid solution's shared site, its sum
        kept); empty = occupancies fixed.
    exclusive_shifts
        Pairs ``(dropped, kept)`` of shift terms never refined together: a point switching both on refines
        ``kept`` only (the pair moves the peaks alike over the range, e.g. ``("zero", "displacement")`` for a
        capillary at 4.5–26° 2θ; see :func:`~xbeam_bluesky.rietveld.search.degenerate_shift_pairs`).
    """

    two_theta_min: float
    two_theta_max: float
    min_width: float = 20.0
    background_types: tuple[str, ...] = BACKGROUND_TYPES
    max_background_terms: int = 15
    po_axes: tuple[tuple[int, int, int], ...] = ((0, 0, 1),)
    stage_cycles: int = 6
    final_cycles: int = 15
    exclude: tuple[str, ...] = ()
    asymmetry_parameter: str = "SH/L"
    atom_phases: tuple[str, ...] | None = None
    strain_axes: tuple[tuple[str, tuple[tuple[int, int, int], ...]], ...] = ()
    background_peaks: tuple[tuple[float, float], ...] = ()
    occupancy: tuple[OccupancySpec, ...] = ()
    exclusive_shifts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        lo, hi = self.two_theta_min, self.two_theta_max
        if not 0 < lo < hi < 180:
            raise RietveldInputError(
                f"search space: 2θ range {lo}..{hi} deg must satisfy 0 < min < max < 180"
            )
        if not 0 < self.min_width <= hi - lo:
            raise RietveldInputError(
                f"search space: min_width {self.min_width} deg must be positive and at most the range width "
                f"{hi - lo:.3f} deg"
            )
        unknown = set(self.background_types) - set(BACKGROUND_TYPES)
        if not self.background_types or unknown:
            raise RietveldInputError(
                f"search space: background_types {self.background_types!r}; expected a non-empty subset of "
                f"{BACKGROUND_TYPES}"
            )
        if not 1 <= self.max_background_terms <= 36:
            raise RietveldInputError(
                f"search space: max_background_terms {self.max_background_terms}; expected 1..36"
            )
        if self.stage_cycles < 1 or self.final_cycles < 1:
            raise RietveldInputError("search space: stage_cycles and final_cycles must be positive integers")
        unknown_terms = set(self.exclude) - set(_OPTIONAL)
        if unknown_terms:
            raise RietveldInputError(
                f"search space: cannot exclude {sorted(unknown_terms)}; expected some of {list(_OPTIONAL)}"
            )
        if self.asymmetry_parameter not in ("SH/L", "soller"):
            raise RietveldInputError(
                f"search space: asymmetry_parameter {self.asymmetry_parameter!r}; expected 'SH/L' or 'soller'"
            )
        for axis in self.po_axes:
            if len(axis) != 3 or not any(axis):
                raise RietveldInputError(
                    f"search space: preferred-orientation axis {axis!r}; expected a non-zero [h, k, l]"
                )
        if self.atom_phases is not None and not self.atom_phases:
            raise RietveldInputError(
                "search space: atom_phases is empty; expected phase names or None (every phase)"
            )
        for name, axes in self.strain_axes:
            if not axes or any(len(a) != 3 for a in axes):
                raise RietveldInputError(
                    f"search space: strain axes of phase {name!r}: {axes!r}; expected a non-empty list of "
                    "[h, k, l] ([0, 0, 0] = isotropic)"
                )
        BackgroundSpec("chebyshev", 1, self.background_peaks)  # checks the humps
        for pair in self.exclusive_shifts:
            if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(_SHIFT_TERMS):
                raise RietveldInputError(
                    f"search space: exclusive_shifts pair {pair!r}; expected two different terms of {_SHIFT_TERMS}"
                )

    # ------------------------------------------------------------------ sampling
    def distributions(self) -> dict[str, BaseDistribution]:
        """The optuna distributions of the space (pass to ``study.ask``)."""
        dists: dict[str, BaseDistribution] = {
            "range_lo": FloatDistribution(0.0, 1.0),
            "range_hi": FloatDistribution(0.0, 1.0),
            "background_type": CategoricalDistribution(list(self.background_types)),
            "background_terms": IntDistribution(1, self.max_background_terms),
        }
        for name in (*_SHIFT_TERMS, *PROFILE_TERMS, "gaussian_after_atoms"):
            if name not in self.exclude:
                dists[name] = CategoricalDistribution([False, True])
        if self._po_allowed:
            dists["preferred_orientation"] = CategoricalDistribution(
                [_NO_PO, *(_axis_key(a) for a in self.po_axes)]
            )
        for name, axes in self.strain_axes:
            dists[_STRAIN + name] = CategoricalDistribution([_NO_STRAIN, *(_axis_key(a) for a in axes)])
        return dists

    def default_params(self) -> dict[str, Any]:
        """The point closest to the engine's default sequence (full range, Chebyshev 6, displacement, U V W X Y).

        A natural first trial to enqueue: the search then starts from what a scientist would do first.
        """
        params: dict[str, Any] = {
            "range_lo": 0.0,
            "range_hi": 1.0,
            "background_type": "chebyshev"
            if "chebyshev" in self.background_types
            else self.background_types[0],
            "background_terms": min(6, self.max_background_terms),
            "zero": False,
            "displacement": True,
            "transparency": False,
            "U": True,
            "V": True,
            "W": True,
            "X": True,
            "Y": True,
            "SH/L": False,
            "gaussian_after_atoms": True,
        }
        if self._po_allowed:
            params["preferred_orientation"] = _NO_PO
        for name, _ in self.strain_axes:
            params[_STRAIN + name] = _NO_STRAIN
        return {k: v for k, v in params.items() if k not in self.exclude}

    @property
    def _po_allowed(self) -> bool:
        return bool(self.po_axes) and "preferred_orientation" not in self.exclude

    # ------------------------------------------------------------------ point → strategy
    def first_range(self, params: Mapping[str, Any]) -> tuple[float, float]:
        """The 2θ range (deg) of stages 1–5 for a point, rounded to 0.01°."""
        lo_all, hi_all, width = self.two_theta_min, self.two_theta_max, self.min_width
        u_lo = _fraction(params, "range_lo")
        u_hi = _fraction(params, "range_hi")
        lo = lo_all + u_lo * (hi_all - lo_all - width)
        hi = lo + width + u_hi * (hi_all - lo - width)
        lo, hi = round(lo, 2), round(hi, 2)
        return max(lo, round(lo_all, 2)), min(hi, round(hi_all, 2))

    def strategy(self, params: Mapping[str, Any]) -> Strategy:
        """The staged strategy of a point of the space.

        Raises
        ------
        ValueError
            A parameter is missing or out of the space (naming it).
        """
        missing = [k for k in self.default_params() if k not in params]
        if missing:
            raise RietveldInputError(f"strategy parameters: missing {missing}")
        bkg_type = str(params["background_type"])
        if bkg_type not in self.background_types:
            raise RietveldInputError(
                f"strategy parameter background_type {bkg_type!r}; expected one of {self.background_types}"
            )
        terms = int(params["background_terms"])
        if not 1 <= terms <= self.max_background_terms:
            raise RietveldInputError(
                f"strategy parameter background_terms {terms}; expected 1..{self.max_background_terms}"
            )
        stray = [k for k in self.exclude if params.get(k) not in (None, False, _NO_PO)]
        if stray:
            raise RietveldInputError(
                f"strategy parameters: {stray} switched on but excluded from the search space"
            )
        params = {**{k: _NO_PO if k == "preferred_orientation" else False for k in self.exclude}, **params}
        first = self.first_range(params)
        full = (round(self.two_theta_min, 6), round(self.two_theta_max, 6))
        n = self.stage_cycles
        shift_on = {t: bool(params[t]) for t in _SHIFT_TERMS}
        for dropped, kept in self.exclusive_shifts:
            if shift_on[dropped] and shift_on[kept]:
                shift_on[dropped] = False
        stages = [
            Stage(
                name="background+scale",
                refine=("background", "scale"),
                background=BackgroundSpec(bkg_type, terms, self.background_peaks),
                range=first,
                max_cycles=n,
            ),
            Stage(
                name="cell" + ("+zero" if shift_on["zero"] else ""),
                refine=("cell", "zero") if shift_on["zero"] else ("cell",),
                range=first,
                max_cycles=n,
            ),
        ]
        shifts = tuple(t for t in ("displacement", "transparency") if shift_on[t])
        if shifts:
            stages.append(Stage(name="+".join(shifts), refine=shifts, range=first, max_cycles=n))
        profile = tuple(t for t in PROFILE_TERMS if params[t])
        late = tuple(t for t in profile if t in _GAUSSIAN) if params["gaussian_after_atoms"] else ()
        profile = tuple(t for t in profile if t not in late)
        if self.asymmetry_parameter != "SH/L":
            profile, late = (
                tuple(self.asymmetry_parameter if t == "SH/L" else t for t in ts) for ts in (profile, late)
            )
        po = str(params.get("preferred_orientation", _NO_PO))
        po_axis = None
        if po != _NO_PO:
            keys = {_axis_key(a): a for a in self.po_axes}
            if po not in keys:
                raise RietveldInputError(
                    f"strategy parameter preferred_orientation {po!r}; expected one of {[_NO_PO, *keys]}"
                )
            po_axis = keys[po]
            profile = (*profile, "preferred_orientation")
        if profile:
            stages.append(
                Stage(
                    name="profile " + " ".join(profile).replace("preferred_orientation", "PO"),
                    refine=profile,
                    range=first,
                    po_axis=po_axis,
                    max_cycles=n,
                )
            )
        strain = self._strain_choice(params)
        if strain:
            stages.append(
                Stage(
                    name="strain " + ", ".join(f"{nm} {''.join(map(str, ax))}" for nm, ax in strain),
                    refine=("uniaxial_strain",),
                    strain_axis=strain,
                    range=first,
                    max_cycles=n,
                )
            )
        stages.append(
            Stage(
                name="atoms" + (" + occupancy" if self.occupancy else ""),
                refine=("atoms_xyz", "atoms_uiso", "occupancy")
                if self.occupancy
                else ("atoms_xyz", "atoms_uiso"),
                range=first,
                max_cycles=n,
                occupancy=self.occupancy,
                atom_phases=self.atom_phases,
            )
        )
        if late:
            stages.append(Stage(name="profile " + " ".join(late), refine=late, range=first, max_cycles=n))
        stages.append(Stage(name="full range", refine=(), range=full, max_cycles=self.final_cycles))
        return Strategy(tuple(stages))

    def point_from_strategy(self, strategy: Strategy) -> dict[str, Any] | None:
        """The point of the space nearest a staged strategy (e.g. the default sequence's kept stages): its
        last background, the shift and profile terms it refines, its preferred-orientation and per-phase
        strain axes; the first stages on the full range. ``None`` if that is no point of this space."""
        params = self.default_params()
        refined: set[str] = set()
        for stage in strategy.stages:
            refined |= set(stage.refine)
            if stage.background is not None:
                if stage.background.type in self.background_types:
                    params["background_type"] = stage.background.type
                params["background_terms"] = min(stage.background.terms, self.max_background_terms)
            if (
                stage.strain_axis is not None
                and stage.strain_axis
                and isinstance(stage.strain_axis[0], tuple)
            ):
                for name, axis in stage.strain_axis:  # type: ignore[misc]
                    params[_STRAIN + name] = _axis_key(axis)
            if "preferred_orientation" in stage.refine and stage.po_axis is not None and self._po_allowed:
                params["preferred_orientation"] = _axis_key(stage.po_axis)
        for term in (*_SHIFT_TERMS, *PROFILE_TERMS):
            if term in params:
                key = self.asymmetry_parameter if term == "SH/L" else term
                params[term] = key in refined
        return params if self.contains(params) else None

    def _strain_choice(self, params: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, int, int]], ...]:
        """The per-phase strain axes a point switches on (phase, axis), in the order of ``strain_axes``."""
        out = []
        for name, axes in self.strain_axes:
            value = str(params.get(_STRAIN + name, _NO_STRAIN))
            if value == _NO_STRAIN:
                continue
            keys = {_axis_key(a): a for a in axes}
            if value not in keys:
                raise RietveldInputError(
                    f"strategy parameter {_STRAIN + name} {value!r}; expected one of {[_NO_STRAIN, *keys]}"
                )
            out.append((name, tuple(int(v) for v in keys[value])))
        return tuple(out)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored with a saved strategy so a warm start knows the space it came from)."""
        extra: dict[str, Any] = {}
        if self.atom_phases is not None:
            extra["atom_phases"] = list(self.atom_phases)
        if self.strain_axes:
            extra["strain_axes"] = {name: [list(a) for a in axes] for name, axes in self.strain_axes}
        if self.background_peaks:
            extra["background_peaks"] = [list(p) for p in self.background_peaks]
        if self.occupancy:
            extra["occupancy"] = [o.to_dict() for o in self.occupancy]
        if self.exclusive_shifts:
            extra["exclusive_shifts"] = [list(p) for p in self.exclusive_shifts]
        return extra | {
            "two_theta_min": self.two_theta_min,
            "two_theta_max": self.two_theta_max,
            "min_width": self.min_width,
            "background_types": list(self.background_types),
            "max_background_terms": self.max_background_terms,
            "po_axes": [list(a) for a in self.po_axes],
            "stage_cycles": self.stage_cycles,
            "final_cycles": self.final_cycles,
            "exclude": list(self.exclude),
            "asymmetry_parameter": self.asymmetry_parameter,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["background_types"] = tuple(d.get("background_types", BACKGROUND_TYPES))
        d["po_axes"] = tuple(tuple(int(v) for v in a) for a in d.get("po_axes", ((0, 0, 1),)))
        d["exclude"] = tuple(d.get("exclude", ()))
        if d.get("atom_phases") is not None:
            d["atom_phases"] = tuple(str(n) for n in d["atom_phases"])
        d["strain_axes"] = tuple(
            (str(name), tuple(tuple(int(v) for v in a) for a in axes))
            for name, axes in dict(d.get("strain_axes", {})).items()
        )
        d["background_peaks"] = tuple((float(p), float(f)) for p, f in d.get("background_peaks", ()))
        d["occupancy"] = tuple(
            OccupancySpec.from_dict(o, "search space: occupancy") for o in d.get("occupancy", ())
        )
        d["exclusive_shifts"] = tuple((str(a), str(b)) for a, b in d.get("exclusive_shifts", ()))
        return cls(**d)

    def contains(self, params: Mapping[str, Any]) -> bool:
        """True if ``params`` is a valid point of this space (e.g. a warm start from another run)."""
        if set(params) != set(self.distributions()):
            return False
        try:
            self.strategy(params)
        except (ValueError, KeyError, TypeError):
            return False
        return True


def _fraction(params: Mapping[str, Any], key: str) -> float:
    value = float(params[key])
    if not 0.0 <= value <= 1.0:
        raise RietveldInputError(f"strategy parameter {key} = {value}; expected a fraction in [0, 1]")
    return value
