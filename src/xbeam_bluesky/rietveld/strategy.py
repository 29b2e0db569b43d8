"""Refinement strategies as data: a JSON-serialisable sequence of stages.

A stage names the parameter groups to refine; refine flags accumulate from stage to stage unless a
stage lists a group under ``fix``. Schema (see docs/rietveld.md)::

    {"stages": [
        {"name": "bkg+scale", "refine": ["background", "scale"],
         "background": {"type": "chebyshev", "terms": 6}, "range": [16.0, 158.4], "max_cycles": 10},
        {"refine": ["cell", "displacement"]},
        ...
    ]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .background import BACKGROUND_TYPES

__all__ = ["PARAMETER_GROUPS", "BackgroundSpec", "Stage", "Strategy", "default_strategy"]

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
    "preferred_orientation",
    "atoms_xyz",
    "atoms_uiso",
)


@dataclass(frozen=True)
class BackgroundSpec:
    """Background function: ``type`` (one of the background types) and number of ``terms``."""

    type: str = "chebyshev"
    terms: int = 6

    def __post_init__(self) -> None:
        if self.type not in BACKGROUND_TYPES:
            raise ValueError(f"background type {self.type!r}: expected one of {', '.join(BACKGROUND_TYPES)}")
        if not isinstance(self.terms, int) or not 1 <= self.terms <= 36:
            raise ValueError(f"background terms {self.terms!r}: expected an integer from 1 to 36")


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
    max_cycles
        Maximum least-squares cycles (accepted steps) of this stage.
    name
        Label for reports.
    """

    refine: tuple[str, ...] = ()
    fix: tuple[str, ...] = ()
    range: tuple[float, float] | None = None
    background: BackgroundSpec | None = None
    po_axis: tuple[int, int, int] | None = None
    max_cycles: int = 15
    name: str = ""

    def __post_init__(self) -> None:
        for g in (*self.refine, *self.fix):
            if g not in PARAMETER_GROUPS:
                raise ValueError(
                    f"stage {self.name or '?'}: unknown parameter group {g!r}; expected one of {PARAMETER_GROUPS}"
                )
        if self.range is not None:
            lo, hi = self.range
            if not (0 < lo < hi < 180):
                raise ValueError(
                    f"stage {self.name or '?'}: range {self.range} must satisfy 0 < min < max < 180 deg"
                )
        if not isinstance(self.max_cycles, int) or self.max_cycles < 1:
            raise ValueError(
                f"stage {self.name or '?'}: max_cycles must be a positive integer, got {self.max_cycles!r}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any], index: int = 0) -> Stage:
        """Build a stage from its JSON form (unknown keys are an error)."""
        allowed = {"refine", "fix", "range", "background", "po_axis", "max_cycles", "name"}
        extra = set(d) - allowed
        if extra:
            raise ValueError(
                f"strategy stage {index}: unknown keys {sorted(extra)}; allowed {sorted(allowed)}"
            )
        bkg = d.get("background")
        rng = d.get("range")
        return cls(
            refine=tuple(d.get("refine", ())),
            fix=tuple(d.get("fix", ())),
            range=None if rng is None else (float(rng[0]), float(rng[1])),
            background=None
            if bkg is None
            else BackgroundSpec(str(bkg.get("type", "chebyshev")), int(bkg.get("terms", 6))),
            po_axis=None if d.get("po_axis") is None else tuple(int(v) for v in d["po_axis"]),
            max_cycles=int(d.get("max_cycles", 15)),
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
            out["background"] = asdict(self.background)
        if self.po_axis is not None:
            out["po_axis"] = list(self.po_axis)
        out["max_cycles"] = self.max_cycles
        return out


@dataclass(frozen=True)
class Strategy:
    """An ordered sequence of stages; refine flags accumulate."""

    stages: tuple[Stage, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("strategy: needs at least one stage")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | list[Any]) -> Strategy:
        """From ``{"stages": [...]}``, a bare list of stages, or a result.json holding ``"strategy"``."""
        if isinstance(d, dict) and isinstance(d.get("strategy"), dict):
            d = d["strategy"]  # an ``xbeam refine`` result.json: replay the strategy it ran
        stages = d.get("stages") if isinstance(d, dict) else d
        if not isinstance(stages, list):
            raise ValueError("strategy: expected {'stages': [...]} or a list of stages")
        return cls(tuple(Stage.from_dict(s, i) for i, s in enumerate(stages)))

    @classmethod
    def from_json(cls, path: str | Path) -> Strategy:
        """Read a strategy JSON file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"strategy file not found: {p}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"strategy file {p}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (round-trips through :meth:`from_dict`)."""
        return {"stages": [s.to_dict() for s in self.stages]}


def default_strategy(background: BackgroundSpec | None = None) -> Strategy:
    """The default staged sequence: background+scale → cell+displacement → profile → atoms → U V W.

    Mirrors the usual GSAS-II recipe for lab Bragg–Brentano data (the X, Y Lorentzian terms play the
    role of GSAS-II's isotropic size and microstrain).
    """
    bkg = background or BackgroundSpec("chebyshev", 6)
    return Strategy(
        (
            Stage(name="background+scale", refine=("background", "scale"), background=bkg, max_cycles=5),
            # a few cycles suffice here: the cell keeps refining with the profile in the next stage
            Stage(name="cell+displacement", refine=("cell", "displacement"), max_cycles=6),
            Stage(name="profile X Y", refine=("X", "Y"), max_cycles=10),
            Stage(name="atoms", refine=("atoms_xyz", "atoms_uiso"), max_cycles=15),
            Stage(name="profile U V W", refine=("U", "V", "W"), max_cycles=15),
        )
    )
