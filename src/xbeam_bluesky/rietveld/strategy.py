"""Refinement strategies as data: a JSON-serialisable sequence of stages.

A stage names the parameter groups to refine; refine flags accumulate from stage to stage unless a
stage lists a group under ``fix``. Schema (see docs/rietveld.md)::

    {"stages": [
        {"name": "bkg+scale", "refine": ["background", "scale"],
         "background": {"type": "chebyshev", "terms": 6}, "range": [16.0, 158.4], "max_cycles": 10},
        {"refine": ["cell", "displacement"]},
        {"refine": ["occupancy"], "occupancy": {"sites": ["Fe1", "Mg1"]}},
        ...
    ]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xbeam_bluesky._inputs import read_text
from xbeam_bluesky.errors import RietveldInputError

from .background import BACKGROUND_TYPES

__all__ = ["PARAMETER_GROUPS", "BackgroundSpec", "OccupancySpec", "Stage", "Strategy", "default_strategy"]

#: Parameter groups a stage may refine.
PARAMETER_GROUPS = (
    "background",
    "scale",
    "cell",
    "zero",
    "displacement",
    "transparency",
    "U",
    "V",
    "W",
    "X",
    "Y",
    "SH/L",
    "soller",
    "preferred_orientation",
    "atoms_xyz",
    "atoms_uiso",
    "occupancy",
    "absorption",
    "uniaxial_strain",
)


@dataclass(frozen=True)
class BackgroundSpec:
    """Background function: ``type`` (one of the background types) and number of ``terms``, plus
    ``peaks``: broad pseudo-Voigt humps (amorphous scattering, capillary, cell), each a starting
    ``(position, fwhm)`` in deg 2θ; their position, width and area refine with the ``background`` group."""

    type: str = "chebyshev"
    terms: int = 6
    peaks: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.type not in BACKGROUND_TYPES:
            raise RietveldInputError(
                f"background type {self.type!r}: expected one of {', '.join(BACKGROUND_TYPES)}"
            )
        if not isinstance(self.terms, int) or not 1 <= self.terms <= 36:
            raise RietveldInputError(f"background terms {self.terms!r}: expected an integer from 1 to 36")
        for pk in self.peaks:
            if len(pk) != 2 or not (0 < pk[0] < 180 and 0 < pk[1] < 180):
                raise RietveldInputError(
                    f"background peak {pk!r}: expected [position, fwhm] in deg 2θ, 0 < position < 180, "
                    "0 < fwhm < 180"
                )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackgroundSpec:
        """From ``{"type": ..., "terms": ..., "peaks": [[position, fwhm], ...]}``."""
        try:
            peaks = tuple((float(p[0]), float(p[1])) for p in d.get("peaks", ()))
        except (TypeError, ValueError, IndexError) as exc:
            raise RietveldInputError(
                f"background peaks {d.get('peaks')!r}: expected a list of [position, fwhm] pairs (deg 2θ)"
            ) from exc
        return cls(str(d.get("type", "chebyshev")), int(d.get("terms", 6)), peaks)


@dataclass(frozen=True)
class OccupancySpec:
    """Which site occupancies of one phase the ``occupancy`` group refines, and how they are tied.

    Attributes
    ----------
    sites
        Site labels (as in the CIF) whose occupancies are refined.
    phase
        Phase name; may be omitted when the refinement has a single phase.
    tie_shared_sites
        ``True``: listed sites on the same position (fractional coordinates equal within 1e-4) form one
        group whose occupancies keep their starting sum (one free parameter per group); ``False``: every
        listed site is refined on its own; or explicit groups of listed labels to tie that way.
    """

    sites: tuple[str, ...]
    phase: str | None = None
    tie_shared_sites: bool | tuple[tuple[str, ...], ...] = True

    def __post_init__(self) -> None:
        where = f"occupancy{'' if self.phase is None else f' of phase {self.phase!r}'}"
        if not self.sites or not all(isinstance(lab, str) and lab for lab in self.sites):
            raise RietveldInputError(
                f"{where}: 'sites' must be a non-empty list of site labels, got {self.sites!r}"
            )
        dup = sorted({lab for lab in self.sites if self.sites.count(lab) > 1})
        if dup:
            raise RietveldInputError(f"{where}: site labels listed twice: {', '.join(dup)}")
        if isinstance(self.tie_shared_sites, bool):
            return
        seen: set[str] = set()
        for group in self.tie_shared_sites:
            if len(group) < 2:
                raise RietveldInputError(
                    f"{where}: a tied group needs at least two labels, got {list(group)}"
                )
            missing = [lab for lab in group if lab not in self.sites]
            if missing:
                raise RietveldInputError(
                    f"{where}: tied labels {', '.join(missing)} are not among the refined sites "
                    f"{', '.join(self.sites)}"
                )
            again = seen.intersection(group)
            if again:
                raise RietveldInputError(
                    f"{where}: labels {', '.join(sorted(again))} are in more than one tied group"
                )
            seen.update(group)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> OccupancySpec:
        """Build from ``{"sites": [...], "phase": ..., "tie_shared_sites": ...}`` (unknown keys are an error)."""
        if not isinstance(d, dict):
            raise RietveldInputError(f"{where}: occupancy entries must be objects with 'sites', got {d!r}")
        allowed = {"sites", "phase", "tie_shared_sites"}
        extra = set(d) - allowed
        if extra:
            raise RietveldInputError(
                f"{where}: unknown occupancy keys {sorted(extra)}; allowed {sorted(allowed)}"
            )
        if "sites" not in d or isinstance(d["sites"], str):
            raise RietveldInputError(f"{where}: occupancy needs 'sites', a list of site labels")
        tie = d.get("tie_shared_sites", True)
        if not isinstance(tie, bool):
            if not isinstance(tie, list) or not all(isinstance(g, list) for g in tie):
                raise RietveldInputError(
                    f"{where}: 'tie_shared_sites' must be true, false or a list of label lists, got {tie!r}"
                )
            tie = tuple(tuple(g) for g in tie)
        try:
            return cls(
                sites=tuple(d["sites"]),
                phase=None if d.get("phase") is None else str(d["phase"]),
                tie_shared_sites=tie,
            )
        except ValueError as exc:
            raise RietveldInputError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (round-trips through :meth:`from_dict`)."""
        out: dict[str, Any] = {}
        if self.phase is not None:
            out["phase"] = self.phase
        out["sites"] = list(self.sites)
        if self.tie_shared_sites is not True:
            tie = self.tie_shared_sites
            out["tie_shared_sites"] = tie if isinstance(tie, bool) else [list(g) for g in tie]
        return out


@dataclass(frozen=True)
class Stage:
    """One refinement stage.

    Attributes
    ----------
    refine
        Parameter groups switched on in this stage (added to those of earlier stages).
    fix
        Parameter groups switched off from this stage on.
    range
        2θ range (deg) fitted in this stage; ``None`` = the run's range (whole pattern or ``--range``).
    background
        Background function from this stage on; ``None`` keeps the current one.
    po_axis
        March–Dollase axis [h, k, l] used when ``preferred_orientation`` is refined.
    strain_axis
        Unique axis [h, k, l] (reciprocal lattice) of the ``uniaxial_strain`` broadening, for every
        phase, or ``{phase name: [h, k, l]}`` for only the phases named (the others get none).
    max_cycles
        Maximum least-squares cycles (accepted steps) of this stage.
    occupancy
        Sites whose occupancies the ``occupancy`` group refines from this stage on, one entry per phase;
        empty keeps the earlier stage's choice (every site of every phase if none was made).
    atom_phases
        Names of the phases whose atoms the ``atoms_xyz`` and ``atoms_uiso`` groups refine from this stage
        on (e.g. only the major phases of a mixture); ``None`` keeps the earlier stage's choice (every
        phase if none was made).
    name
        Label for reports.
    """

    refine: tuple[str, ...] = ()
    fix: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    background: BackgroundSpec | None = None
    po_axis: tuple[int, int, int] | None = None
    strain_axis: tuple[int, int, int] | tuple[tuple[str, tuple[int, int, int]], ...] | None = None
    max_cycles: int = 15
    occupancy: tuple[OccupancySpec, ...] = ()
    atom_phases: tuple[str, ...] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        for g in (*self.refine, *self.fix):
            if g not in PARAMETER_GROUPS:
                raise RietveldInputError(
                    f"stage {self.name or '?'}: unknown parameter group {g!r}; expected one of {PARAMETER_GROUPS}"
                )
        if self.range is not None:
            lo, hi = self.range
            if not (0 < lo < hi < 180):
                raise RietveldInputError(
                    f"stage {self.name or '?'}: range {self.range} must satisfy 0 < min < max < 180 deg"
                )
        if not isinstance(self.max_cycles, int) or self.max_cycles < 1:
            raise RietveldInputError(
                f"stage {self.name or '?'}: max_cycles must be a positive integer, got {self.max_cycles!r}"
            )
        if len(self.occupancy) > 1 and any(o.phase is None for o in self.occupancy):
            raise RietveldInputError(
                f"stage {self.name or '?'}: several occupancy entries need a 'phase' each"
            )
        phases = [o.phase for o in self.occupancy]
        dup = sorted({ph for ph in phases if phases.count(ph) > 1})
        if dup:
            raise RietveldInputError(
                f"stage {self.name or '?'}: occupancy of phase(s) {dup} given more than once"
            )
        if self.atom_phases is not None and (
            not self.atom_phases or not all(isinstance(n, str) and n for n in self.atom_phases)
        ):
            raise RietveldInputError(
                f"stage {self.name or '?'}: atom_phases {list(self.atom_phases)!r}; expected a non-empty list "
                "of phase names"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any], index: int = 0) -> Stage:
        """Build a stage from its JSON form (unknown keys are an error)."""
        allowed = {
            "refine",
            "fix",
            "range",
            "background",
            "po_axis",
            "strain_axis",
            "max_cycles",
            "occupancy",
            "atom_phases",
            "name",
        }
        extra = set(d) - allowed
        if extra:
            raise RietveldInputError(
                f"strategy stage {index}: unknown keys {sorted(extra)}; allowed {sorted(allowed)}"
            )
        bkg = d.get("background")
        rng = d.get("range")
        occ = d.get("occupancy", [])
        where = f"strategy stage {d.get('name', index + 1)!r}"
        occ_specs = tuple(
            OccupancySpec.from_dict(o, where) for o in (occ if isinstance(occ, list) else [occ])
        )
        atom_phases = d.get("atom_phases")
        if atom_phases is not None:
            if not isinstance(atom_phases, list) or not all(isinstance(n, str) for n in atom_phases):
                raise RietveldInputError(
                    f"{where}: atom_phases {atom_phases!r}; expected a list of phase names"
                )
            atom_phases = tuple(atom_phases)
        return cls(
            refine=tuple(d.get("refine", ())),
            fix=tuple(d.get("fix", ())),
            range=None if rng is None else (float(rng[0]), float(rng[1])),
            background=None if bkg is None else BackgroundSpec.from_dict(bkg),
            po_axis=None if d.get("po_axis") is None else tuple(int(v) for v in d["po_axis"]),
            strain_axis=_strain_axis(d.get("strain_axis"), where),
            max_cycles=int(d.get("max_cycles", 15)),
            occupancy=occ_specs,
            atom_phases=atom_phases,
            name=str(d.get("name", f"stage {index + 1}")),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {"name": self.name, "refine": list(self.refine)}
        if self.fix:
            out["fix"] = list(self.fix)
        if self.range is not None:
            out["range"] = list(self.range)
        if self.background is not None:
            out["background"] = {k: v for k, v in asdict(self.background).items() if k != "peaks" or v}
        if self.po_axis is not None:
            out["po_axis"] = list(self.po_axis)
        if self.strain_axis is not None:
            sa = self.strain_axis
            out["strain_axis"] = (
                {name: list(ax) for name, ax in sa} if sa and isinstance(sa[0], tuple) else list(sa)
            )
        out["max_cycles"] = self.max_cycles
        if len(self.occupancy) == 1:
            out["occupancy"] = self.occupancy[0].to_dict()
        elif self.occupancy:
            out["occupancy"] = [o.to_dict() for o in self.occupancy]
        if self.atom_phases is not None:
            out["atom_phases"] = list(self.atom_phases)
        return out


def _strain_axis(
    value: Any, where: str
) -> tuple[int, int, int] | tuple[tuple[str, tuple[int, int, int]], ...] | None:
    """A stage's ``strain_axis``: [h, k, l] for every phase, or {phase: [h, k, l]}."""
    if value is None:
        return None

    def axis(ax: Any) -> tuple[int, int, int]:
        if not isinstance(ax, list | tuple) or len(ax) != 3:
            raise ValueError("not three indices")
        return tuple(int(v) for v in ax)  # type: ignore[return-value]

    try:
        if isinstance(value, dict):
            return tuple((str(k), axis(ax)) for k, ax in value.items())
        return axis(value)
    except (TypeError, ValueError) as exc:
        raise RietveldInputError(
            f"{where}: strain_axis {value!r}: expected [h, k, l] or {{phase: [h, k, l]}}"
        ) from exc


@dataclass(frozen=True)
class Strategy:
    """An ordered sequence of stages; refine flags accumulate.

    Attributes
    ----------
    stages
        The stages, in order.
    shared_sites
        Which atoms form one shared site (coordinates and Uiso refined as one, occupancies tied to their
        sum): ``True`` = atoms at one position (within ``crystal.SHARED_SITE_TOL_A``), ``False`` = none,
        or explicit groups of site labels (each group within one phase).
    """

    stages: tuple[Stage, ...] = field(default_factory=tuple)
    shared_sites: bool | tuple[tuple[str, ...], ...] = True

    def __post_init__(self) -> None:
        if not self.stages:
            raise RietveldInputError("strategy: needs at least one stage")
        if not isinstance(self.shared_sites, bool):
            for group in self.shared_sites:
                if len(group) < 2 or not all(isinstance(lab, str) and lab for lab in group):
                    raise RietveldInputError(
                        f"strategy: a shared_sites group needs at least two site labels, got {list(group)}"
                    )
        active: set[str] = set()
        for stage in self.stages:
            active = (active | set(stage.refine)) - set(stage.fix)
            if stage.occupancy and "occupancy" not in active:
                raise RietveldInputError(
                    f"stage {stage.name or '?'}: names occupancy sites but does not refine 'occupancy'"
                )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | list[Any]) -> Strategy:
        """From ``{"stages": [...]}``, a bare list of stages, or a result.json holding ``"strategy"``."""
        if isinstance(d, dict) and isinstance(d.get("strategy"), dict):
            d = d["strategy"]  # an ``xbeam refine`` result.json: replay the strategy it ran
        stages = d.get("stages") if isinstance(d, dict) else d
        if not isinstance(stages, list):
            raise RietveldInputError("strategy: expected {'stages': [...]} or a list of stages")
        shared = d.get("shared_sites", True) if isinstance(d, dict) else True
        if not isinstance(shared, bool):
            if not isinstance(shared, list) or not all(isinstance(g, list) for g in shared):
                raise RietveldInputError(
                    f"strategy: 'shared_sites' must be true, false or a list of label lists, got {shared!r}"
                )
            shared = tuple(tuple(g) for g in shared)
        return cls(tuple(Stage.from_dict(s, i) for i, s in enumerate(stages)), shared)

    @classmethod
    def from_json(cls, path: str | Path) -> Strategy:
        """Read a strategy JSON file."""
        p = Path(path)
        try:
            data = json.loads(read_text(p, "strategy file"))
        except json.JSONDecodeError as exc:
            raise RietveldInputError(f"strategy file {p}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (round-trips through :meth:`from_dict`)."""
        out: dict[str, Any] = {"stages": [s.to_dict() for s in self.stages]}
        if self.shared_sites is not True:
            sh = self.shared_sites
            out["shared_sites"] = sh if isinstance(sh, bool) else [list(g) for g in sh]
        return out


def default_strategy(
    background: BackgroundSpec | None = None, occupancy: tuple[OccupancySpec, ...] = ()
) -> Strategy:
    """The default staged sequence: background+scale → cell+displacement → profile → atoms → U V W.

    Mirrors the usual GSAS-II recipe for lab Bragg–Brentano data (the X, Y Lorentzian terms play the
    role of GSAS-II's isotropic size and microstrain).

    Parameters
    ----------
    background
        The first stage's background (default 6 Chebyshev terms).
    occupancy
        Site occupancies refined on request (a solid solution's shared site, its sum kept): the atoms stage
        also refines the ``occupancy`` group for these sites; empty (default) = occupancies fixed.
    """
    bkg = background or BackgroundSpec("chebyshev", 6)
    atoms = ("atoms_xyz", "atoms_uiso", "occupancy") if occupancy else ("atoms_xyz", "atoms_uiso")
    return Strategy(
        (
            Stage(name="background+scale", refine=("background", "scale"), background=bkg, max_cycles=5),
            # a few cycles suffice here: the cell keeps refining with the profile in the next stage
            Stage(name="cell+displacement", refine=("cell", "displacement"), max_cycles=6),
            Stage(name="profile X Y", refine=("X", "Y"), max_cycles=10),
            Stage(name="atoms", refine=atoms, occupancy=tuple(occupancy), max_cycles=15),
            Stage(name="profile U V W", refine=("U", "V", "W"), max_cycles=15),
        )
    )
