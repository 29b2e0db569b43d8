"""Beam-time cost of an energy scan: dwell plus monochromator move and settle overheads."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import DesignInputError


@dataclass(frozen=True)
class ScanTimeModel:
    """Time cost of measuring a sorted list of energies.

    A move from energy ``a`` to ``b`` takes ``move_overhead_s + |b - a| / speed_eV_per_s`` and every
    energy point then waits ``settle_s`` before the exposure. The scan is measured in increasing energy,
    so the distance part of all moves adds up to the energy span. Every pick (one dwell unit) costs
    ``dwell_s + pick_overhead_s``: the overhead is zero when a point picked ``k`` times is one exposure of
    ``k * dwell_s``, and the readout (plus whatever else is repeated) when it is ``k`` separate frames.

    Parameters
    ----------
    dwell_s
        Base exposure of one pick (s). A point picked ``k`` times is exposed ``k * dwell_s``.
    settle_s
        Wait after every monochromator move (s).
    speed_eV_per_s
        Monochromator speed (eV/s); ``inf`` for a move time independent of distance.
    move_overhead_s
        Fixed cost of starting and stopping each move (s).
    pick_overhead_s
        Fixed cost of every pick on top of its dwell (s).
    max_exposure_s
        Longest single exposure (s), e.g. the camera's unsaturated limit: a longer dwell at an energy is measured
        as ``ceil(dwell / max_exposure_s)`` equal frames (``inf``: never split).
    split_overhead_s
        Cost (s) of every frame beyond the first at one energy (what the run repeats per frame: readouts, the
        stage path through the tiles and flats).
    """

    dwell_s: float = 0.1
    settle_s: float = 0.0
    speed_eV_per_s: float = math.inf
    move_overhead_s: float = 0.0
    pick_overhead_s: float = 0.0
    max_exposure_s: float = math.inf
    split_overhead_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_exposure_s > 0:
            raise DesignInputError(f"max_exposure_s must be > 0 s, got {self.max_exposure_s!r}")
        for name in ("dwell_s", "settle_s", "move_overhead_s", "pick_overhead_s", "split_overhead_s"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise DesignInputError(f"{name} must be a finite number >= 0 s, got {value!r}")
        if self.dwell_s <= 0:
            raise DesignInputError(f"dwell_s must be > 0 s, got {self.dwell_s!r}")
        if not self.speed_eV_per_s > 0:
            raise DesignInputError(f"speed_eV_per_s must be > 0 eV/s, got {self.speed_eV_per_s!r}")

    def move_time_s(self, start_eV: ArrayLike, stop_eV: ArrayLike) -> NDArray[np.float64]:
        """Time (s) of monochromator moves from ``start_eV`` to ``stop_eV``, excluding settle; 0 if equal."""
        start = np.asarray(start_eV, dtype=float)
        stop = np.asarray(stop_eV, dtype=float)
        distance = np.abs(stop - start)
        travel = distance / self.speed_eV_per_s if np.isfinite(self.speed_eV_per_s) else 0.0 * distance
        return np.where(distance > 0, self.move_overhead_s + travel, 0.0)

    def insertion_overhead_s(self, candidates_eV: ArrayLike, selected_eV: ArrayLike) -> NDArray[np.float64]:
        """Extra time (s) that adding each candidate energy to a sorted scan of ``selected_eV`` costs.

        The cost of a new energy between its neighbours ``a < e < b`` is
        ``move(a, e) + move(e, b) - move(a, b) + settle``; outside the selected span it is one move plus settle.
        Candidates already selected cost no overhead (a repeat only lengthens the dwell).
        """
        cand = np.asarray(candidates_eV, dtype=float)
        sel = np.sort(np.asarray(selected_eV, dtype=float))
        if sel.size == 0:
            return np.full(cand.shape, self.settle_s)
        pos = np.searchsorted(sel, cand)
        left = sel[np.clip(pos - 1, 0, sel.size - 1)]
        right = sel[np.clip(pos, 0, sel.size - 1)]
        inside = (pos > 0) & (pos < sel.size)
        extra = np.where(
            inside,
            self.move_time_s(left, cand) + self.move_time_s(cand, right) - self.move_time_s(left, right),
            np.where(pos == 0, self.move_time_s(cand, right), self.move_time_s(left, cand)),
        )
        already = np.isin(cand, sel)
        return np.where(already, 0.0, extra + self.settle_s)

    def removal_saving_s(self, selected_eV: ArrayLike) -> NDArray[np.float64]:
        """Time (s) saved by dropping each energy of the scan ``selected_eV`` (sorted, unique), excluding its dwell.

        The inverse of :meth:`insertion_overhead_s`: for an energy between neighbours ``a < e < b``
        ``move(a, e) + move(e, b) - move(a, b) + settle``; for the first or last energy its one move plus settle.
        """
        sel = np.asarray(selected_eV, dtype=float)
        if sel.size < 2:
            return np.full(sel.shape, self.settle_s)
        step = self.move_time_s(sel[:-1], sel[1:])
        saving = np.full(sel.shape, self.settle_s)
        saving[0] += step[0]
        saving[-1] += step[-1]
        if sel.size > 2:
            saving[1:-1] += step[:-1] + step[1:] - self.move_time_s(sel[:-2], sel[2:])
        return saving

    def extra_frames(self, dwell_s: ArrayLike) -> NDArray[np.float64]:
        """Frames beyond the first that a dwell (s) needs at one energy: ``ceil(dwell / max_exposure_s) − 1``, ≥ 0."""
        d = np.asarray(dwell_s, dtype=float)
        if not np.isfinite(self.max_exposure_s):
            return np.zeros(d.shape)
        return np.maximum(np.ceil(d / self.max_exposure_s - 1e-9) - 1.0, 0.0)

    def dwell_cost_s(self, units_before: ArrayLike, units_added: ArrayLike) -> NDArray[np.float64]:
        """Time (s) of adding ``units_added`` dwell units at an energy that has ``units_before`` in this scan.

        The dwell and pick overheads plus the split frames it adds (excluding any move and settle).
        """
        k = np.asarray(units_before, dtype=float)
        r = np.asarray(units_added, dtype=float)
        frames = self.extra_frames((k + r) * self.dwell_s) - self.extra_frames(k * self.dwell_s)
        return r * self.pick_cost_s + self.split_overhead_s * frames

    @property
    def pick_cost_s(self) -> float:
        """Time (s) of one more pick at an energy already in the scan."""
        return self.dwell_s + self.pick_overhead_s

    def scan_time_s(self, energies_eV: ArrayLike, dwell_s: ArrayLike) -> float:
        """Total time (s) of measuring ``energies_eV`` in increasing order with the given dwell per point.

        Sum of dwells, the pick overheads (``dwell / dwell_s`` picks per point, rounded), the split frames'
        overheads, the moves between consecutive energies and one settle per energy. The move to the first energy
        (from wherever the monochromator is parked) is not included.
        """
        energies = np.asarray(energies_eV, dtype=float)
        dwell = np.broadcast_to(np.asarray(dwell_s, dtype=float), energies.shape)
        order = np.argsort(energies)
        e = energies[order]
        moves = float(self.move_time_s(e[:-1], e[1:]).sum()) if e.size > 1 else 0.0
        picks = float(np.maximum(np.round(dwell / self.dwell_s), 1).sum())
        splits = float(self.extra_frames(dwell).sum()) * self.split_overhead_s
        return float(dwell.sum()) + picks * self.pick_overhead_s + splits + moves + self.settle_s * e.size

    def to_dict(self) -> dict[str, float | str]:
        """JSON-friendly parameters (``speed_eV_per_s`` is the string ``"inf"`` when unlimited)."""
        out: dict[str, float | str] = dict(asdict(self))
        for key in ("speed_eV_per_s", "max_exposure_s"):
            if not np.isfinite(getattr(self, key)):
                out[key] = "inf"
        return out

    @classmethod
    def from_dict(cls, data: dict[str, float | str]) -> ScanTimeModel:
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: float(value) for key, value in data.items()})
