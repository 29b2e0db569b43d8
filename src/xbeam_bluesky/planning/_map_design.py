"""Energies and dwell designed for the phase map: separate candidate phases under photon noise per unit time.

The clustering (:mod:`xbeam_bluesky.clustering`) tells two phases apart by the separation statistic
``D(p→q) = (1 − z_p·z_q) / sqrt(Σ_i (z_p,i − z_q,i)² τ_p,i²)`` between spectra standardized over the measured
energies (z) with their photon noise (τ); sites closer than ``MERGE_THRESHOLD`` (3.719) are merged into one
cluster, and ``Φ(−D)`` is the chance that noise makes a pixel of p correlate better with q. This module chooses
the energies (and a dwell per energy) that make every pair of candidate phases separable, per second of beam time
including monochromator moves and settles (:class:`~xbeam_bluesky.planning._timing.ScanTimeModel`).

Objective: the expected pairwise confusion ``L = Σ_pairs Φ(−D_pq)``, D_pq the smaller of both directions at the
worst sample thickness; minimising L is a soft maximum of the weakest separations. Greedy forward selection per
second (a new energy opened with the best of 1, 4, 16, … dwell units; a repeat lengthens the dwell by one unit),
then exchange rounds that drop an energy and spend its time again. Adding a channel or dwell changes D through a
handful of sums over the measured channels (Σμ, Σμ², Σμ_pμ_q, and the noise-weighted Σwμ…): every candidate
channel is scored by closed-form updates of those sums, vectorised over the weakest pairs (the others' Φ(−D) is
negligible), and the chosen one is added to the sums of all pairs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import ndtr

from xbeam_bluesky.clustering import (
    MERGE_THRESHOLD,
    MODEL_ERROR_FLOOR_RMS,
    directed_separation,
    model_error_floor,
    standardize,
    standardized_noise,
)
from xbeam_bluesky.errors import DesignInputError
from xbeam_bluesky.planning._noise import TransmissionNoise
from xbeam_bluesky.planning._timing import ScanTimeModel

logger = logging.getLogger(__name__)

#: Candidates whose normalized spectra differ by less than this RMS over the candidate grid are one phase.
DEFAULT_MODEL_ERROR = 0.01
#: Model error ε in the design's D, as a fraction of a spectrum's RMS deviation from its mean (ε_i = e / sqrt(n)
#: on n measured energies): the clustering's floor, so the design's D is the clustering's at its floor.
DEFAULT_SEPARATION_MODEL_ERROR = MODEL_ERROR_FLOOR_RMS
#: The clustering merges sites closer than this D into one cluster: the separation every pair should reach.
DEFAULT_TARGET_SEPARATION = MERGE_THRESHOLD
#: Pairs scored exactly for every candidate channel at each greedy step (the weakest ones).
DEFAULT_ACTIVE_PAIRS = 16
#: Dwell units one greedy step may add at an energy (the best gain per second is taken).
DEFAULT_OPENINGS = (1, 4, 16)
#: A chosen repeat adds this fraction of the dwell units so far (at least one): the dwell is resolved to ~5 %.
REPEAT_GROWTH = 0.05
#: New energies are screened on every this many grid points, the best one refined among its neighbours.
DEFAULT_SCREEN_STRIDE = 4
#: Exchange rounds after the greedy (drop one energy, spend its time again; kept only if L falls).
DEFAULT_EXCHANGE_ROUNDS = 2


class MapDesignError(DesignInputError):
    """A phase-map design cannot be made from these inputs (the message says which and what is needed)."""


@dataclass(frozen=True)
class PhaseCandidates:
    """Candidate spectra the map must tell apart, grouped into phases.

    Attributes
    ----------
    names
        One name per candidate spectrum.
    spectra
        Normalized spectra on the candidate energy grid, shape (K, n_energies).
    phase
        Phase index (0..n_phases-1) of every candidate; candidates of one phase need not be separated.
    phase_names
        One name per phase (its members' names joined by ``"/"``).
    kind
        ``"library"``, ``"data"`` or ``"mixture"`` per candidate.
    pairs
        Candidate index pairs (a < b) that must be separated, shape (P, 2).
    model_error
        RMS difference (normalized units) under which candidates were put in one phase.
    """

    names: tuple[str, ...]
    spectra: NDArray[np.float64]
    phase: NDArray[np.intp]
    phase_names: tuple[str, ...]
    kind: tuple[str, ...]
    pairs: NDArray[np.intp]
    model_error: float

    @property
    def n_phases(self) -> int:
        """Number of phases."""
        return len(self.phase_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (names, phases, kinds; not the spectra)."""
        return {
            "n_candidates": len(self.names),
            "n_phases": self.n_phases,
            "n_pairs": int(self.pairs.shape[0]),
            "model_error_rms": self.model_error,
            "phases": list(self.phase_names),
            "mixtures": [n for n, k in zip(self.names, self.kind, strict=True) if k == "mixture"],
        }


def phase_candidates(
    spectra: ArrayLike,
    names: list[str] | tuple[str, ...],
    *,
    kind: str | list[str] = "library",
    model_error: float = DEFAULT_MODEL_ERROR,
    mixtures: tuple[float, ...] = (),
) -> PhaseCandidates:
    """Group candidate spectra into phases and add binary mixtures.

    Two candidates closer than ``model_error`` (RMS of normalized spectra over the grid) are one phase, by
    single linkage: no two candidates of different phases are within the model error of each other. For every
    weight ``w`` in ``mixtures`` and every pair of phases, the mixture ``w·A + (1 − w)·B`` of their first members
    is added as a candidate that must be separated from both end members (a pixel holding both phases must not
    be mistaken for either).

    Parameters
    ----------
    spectra
        Normalized spectra on the candidate grid, shape (K, n_energies).
    names
        One name per spectrum.
    kind
        ``"library"`` or ``"data"`` for all spectra, or one per spectrum.
    model_error
        RMS (normalized units) below which two spectra are one phase; ≥ 0.
    mixtures
        Weights in (0, 1) of binary mixtures to add, e.g. ``(0.5,)``.

    Raises
    ------
    MapDesignError
        Fewer than two spectra, non-finite values, or fewer than two phases after grouping (names the
        candidates that are identical within the model error).
    """
    s = np.atleast_2d(np.asarray(spectra, dtype=np.float64))
    names = tuple(str(n) for n in names)
    if s.shape[0] != len(names):
        raise MapDesignError(f"candidates: {s.shape[0]} spectra but {len(names)} names")
    if s.shape[0] < 2:
        raise MapDesignError(
            f"candidates: {s.shape[0]} spectrum ({', '.join(names) or 'none'}); a phase map needs at least "
            "two candidate phases"
        )
    if s.shape[1] < 3 or not np.all(np.isfinite(s)):
        raise MapDesignError(
            f"candidates: spectra must be finite on ≥ 3 energies, got shape {s.shape} "
            f"({int((~np.isfinite(s)).sum())} non-finite values)"
        )
    if not (np.isfinite(model_error) and model_error >= 0):
        raise MapDesignError(f"model_error = {model_error!r}; expected an RMS ≥ 0 in normalized units")
    kinds = (kind,) * len(names) if isinstance(kind, str) else tuple(kind)
    if len(kinds) != len(names):
        raise MapDesignError(f"candidates: {len(kinds)} kinds for {len(names)} spectra")
    for w in mixtures:
        if not 0 < w < 1:
            raise MapDesignError(f"mixture weight {w!r}; expected a number strictly between 0 and 1")
    rms = np.sqrt(np.mean((s[:, None, :] - s[None, :, :]) ** 2, axis=-1))
    close = np.argwhere(np.triu(rms <= model_error, 1))
    graph = coo_matrix((np.ones(len(close)), (close[:, 0], close[:, 1])), shape=(len(names),) * 2)
    n_phases, found = connected_components(graph, directed=False)
    _, first = np.unique(found, return_index=True)
    relabel = np.argsort(np.argsort(first))  # phases numbered in order of their first member
    phase = relabel[found]
    phase_names = tuple("/".join(names[m] for m in np.flatnonzero(phase == g)) for g in range(n_phases))
    if n_phases < 2:
        raise MapDesignError(
            f"candidates {', '.join(names)} are identical within the model error (RMS ≤ {model_error:g}, largest "
            f"difference {rms.max():.4g}): one phase, nothing to separate; give at least two distinct phases "
            "or a smaller model error"
        )
    pairs = [(a, b) for a in range(len(names)) for b in range(a + 1, len(names)) if phase[a] != phase[b]]
    all_spectra, all_names, all_kinds, all_phase = list(s), list(names), list(kinds), list(phase)
    reps = [int(np.flatnonzero(phase == g)[0]) for g in range(n_phases)]
    for w in mixtures:
        for ga in range(n_phases):
            for gb in range(ga + 1, n_phases):
                a, b = reps[ga], reps[gb]
                idx = len(all_names)
                all_spectra.append(w * s[a] + (1 - w) * s[b])
                all_names.append(f"{w:.2f} {names[a]} + {1 - w:.2f} {names[b]}")
                all_kinds.append("mixture")
                all_phase.append(-1)
                pairs.extend([(a, idx), (b, idx)])
    return PhaseCandidates(
        names=tuple(all_names),
        spectra=np.asarray(all_spectra),
        phase=np.asarray(all_phase, dtype=np.intp),
        phase_names=phase_names,
        kind=tuple(all_kinds),
        pairs=np.asarray(pairs, dtype=np.intp).reshape(-1, 2),
        model_error=float(model_error),
    )


def _noise_weights(
    mu: NDArray[np.float64], units: ArrayLike, noise: TransmissionNoise, dwell_s: float, thickness: NDArray
) -> NDArray[np.float64]:
    """``Var(μt)/t²`` of ``units`` dwell units at thickness factors t, shape (T, *mu.shape); 0 where units = 0."""
    k = np.asarray(units, dtype=float)
    i0 = noise.i0_counts_per_s * dwell_s * np.maximum(k, 1.0)
    t = thickness.reshape((-1,) + (1,) * mu.ndim)
    var = np.asarray(noise.detector.var_absorbance(i0, t * mu), dtype=float) / t**2
    return np.where(k > 0, var, 0.0)


def _directed_d(
    n: ArrayLike,
    ms: NDArray,
    md: NDArray,
    xss: NDArray,
    xdd: NDArray,
    xsd: NDArray,
    w: NDArray,
    a_s: NDArray,
    b_ss: NDArray,
    a_d: NDArray,
    b_dd: NDArray,
    b_sd: NDArray,
    eps2: float = 0.0,
) -> NDArray[np.float64]:
    """D(s→d) from sums over the measured channels (broadcasting); see :class:`_PairSums` for the symbols.

    ``eps2`` is e², the squared model error as a fraction of the spectrum's RMS: the clustering's floor
    ε_i = e / sqrt(n) on each of the n measured channels adds Σ (z_s − z_d)² ε_i² = 2 e² (1 − z_s·z_d) / n.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ns2 = xss - ms * ms / n
        nd2 = xdd - md * md / n
        norm = np.sqrt(ns2 * nd2)
        num = 1.0 - (xsd - ms * md / n) / norm
        ps, pd = ms / n, md / n
        s_ss = b_ss - 2.0 * ps * a_s + ps * ps * w
        s_dd = b_dd - 2.0 * pd * a_d + pd * pd * w
        s_sd = b_sd - pd * a_s - ps * a_d + ps * pd * w
        den2 = (s_ss / ns2 - 2.0 * s_sd / norm + s_dd / nd2) / ns2 + 2.0 * eps2 * num / n
        d = num / np.sqrt(den2)
    return np.where((ns2 > 0) & (nd2 > 0) & (den2 > 0) & np.isfinite(d), np.maximum(d, 0.0), 0.0)


class _PairSums:
    """Sums over the measured channels from which every pair's D follows in closed form.

    With μ_c the absorbance of candidate c (at thickness 1) and w_{t,c,i} = Var(μt)/t² of its channel i at
    thickness factor t (the standardized noise is τ = sqrt(w)/‖μ − mean μ‖, thickness-independent z): per
    candidate ``m = Σμ``, ``xx = Σμ²``; per pair ``xp = Σμ_aμ_b``; per (t, c) ``W = Σw``, ``A = Σwμ``,
    ``B = Σwμ²``; per directed combination (source s, destination d, t) ``Ad = Σw_sμ_d``, ``Bdd = Σw_sμ_d²``,
    ``Bsd = Σw_sμ_sμ_d``. Measuring a new channel adds one term to each; lengthening the dwell of a measured
    one changes only the w terms.
    """

    def __init__(
        self, mu: NDArray[np.float64], pairs: NDArray[np.intp], n_thickness: int, model_error_rms: float = 0.0
    ) -> None:
        self.mu = mu
        self.eps2 = float(model_error_rms) ** 2
        self.pairs = pairs
        n_pairs = pairs.shape[0]
        # directed combinations ordered (pair, direction, thickness) so a reshape gives the per-pair minimum
        self.src = np.repeat(np.stack([pairs[:, 0], pairs[:, 1]], axis=1), n_thickness, axis=1).ravel()
        self.dst = np.repeat(np.stack([pairs[:, 1], pairs[:, 0]], axis=1), n_thickness, axis=1).ravel()
        self.tix = np.tile(np.arange(n_thickness), 2 * n_pairs)
        self.pix = np.repeat(np.arange(n_pairs), 2 * n_thickness)
        self.per_pair = 2 * n_thickness
        k = mu.shape[0]
        self.n = 0.0
        self.m = np.zeros(k)
        self.xx = np.zeros(k)
        self.xp = np.zeros(n_pairs)
        self.w = np.zeros((n_thickness, k))
        self.a = np.zeros((n_thickness, k))
        self.b = np.zeros((n_thickness, k))
        q = self.src.size
        self.ad = np.zeros(q)
        self.bdd = np.zeros(q)
        self.bsd = np.zeros(q)

    def copy(self) -> _PairSums:
        """An independent copy (the index arrays are shared)."""
        out = object.__new__(_PairSums)
        out.__dict__.update(
            {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        )
        for name in ("mu", "pairs", "src", "dst", "tix", "pix"):
            setattr(out, name, getattr(self, name))
        return out

    def add(self, channel: int, fresh: int, dw: NDArray[np.float64]) -> None:
        """Add (``fresh`` = 1) or remove (−1) channel ``channel``, or only change its weights (0) by ``dw`` (T, K)."""
        mu_i = self.mu[:, channel]
        if fresh:
            self.n += fresh
            self.m += fresh * mu_i
            self.xx += fresh * mu_i**2
            self.xp += fresh * mu_i[self.pairs[:, 0]] * mu_i[self.pairs[:, 1]]
        self.w += dw
        self.a += dw * mu_i
        self.b += dw * mu_i**2
        dws = dw[self.tix, self.src]
        mu_s, mu_d = mu_i[self.src], mu_i[self.dst]
        self.ad += dws * mu_d
        self.bdd += dws * mu_d**2
        self.bsd += dws * mu_s * mu_d

    def directed(self, q: NDArray[np.intp] | slice = slice(None)) -> NDArray[np.float64]:
        """D of the directed combinations ``q`` (all by default)."""
        s, d, t = self.src[q], self.dst[q], self.tix[q]
        return _directed_d(
            self.n, self.m[s], self.m[d], self.xx[s], self.xx[d], self.xp[self.pix[q]],
            self.w[t, s], self.a[t, s], self.b[t, s], self.ad[q], self.bdd[q], self.bsd[q], self.eps2,
        )  # fmt: skip

    def separations(self) -> NDArray[np.float64]:
        """Symmetric D of every pair at its worst thickness, shape (P,)."""
        return self.directed().reshape(-1, self.per_pair).min(axis=1)


def _pair_probability(d: NDArray[np.float64]) -> NDArray[np.float64]:
    """Φ(−D): the chance noise puts a pixel on the wrong side of the pair."""
    return ndtr(-d)


def _trial_separations(
    sums: _PairSums,
    pair_idx: NDArray[np.intp],
    channels: NDArray[np.intp],
    fresh: NDArray[np.float64],
    dwq: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Symmetric D of pairs ``pair_idx`` after each trial change, shape (n_trials, len(pair_idx)).

    Trial j adds (``fresh[j]`` = 1), removes (−1) or re-weights (0) channel ``channels[j]``; ``dwq[j]`` is the
    weight change of each directed combination of those pairs (in :class:`_PairSums` order).
    """
    q = (pair_idx[:, None] * sums.per_pair + np.arange(sums.per_pair)).ravel()
    s, d, t = sums.src[q], sums.dst[q], sums.tix[q]
    mu_s = sums.mu[s][:, channels].T
    mu_d = sums.mu[d][:, channels].T
    f = fresh[:, None]
    out = _directed_d(
        sums.n + f,
        sums.m[s] + f * mu_s, sums.m[d] + f * mu_d,
        sums.xx[s] + f * mu_s**2, sums.xx[d] + f * mu_d**2, sums.xp[sums.pix[q]] + f * mu_s * mu_d,
        sums.w[t, s] + dwq, sums.a[t, s] + dwq * mu_s, sums.b[t, s] + dwq * mu_s**2,
        sums.ad[q] + dwq * mu_d, sums.bdd[q] + dwq * mu_d**2, sums.bsd[q] + dwq * mu_s * mu_d, sums.eps2,
    )  # fmt: skip
    return out.reshape(channels.size, pair_idx.size, sums.per_pair).min(axis=2)


@dataclass
class _Context:
    """Everything the greedy and exchange steps share."""

    mu: NDArray[np.float64]
    energies: NDArray[np.float64]
    noise: TransmissionNoise
    time_model: ScanTimeModel
    thickness: NDArray[np.float64]
    openings: tuple[int, ...]
    active_pairs: int
    stride: int
    _opened: dict[int, NDArray[np.float64]] = field(default_factory=dict)

    def weights(self, rows: NDArray[np.intp], tix: NDArray[np.intp], channels: Any, units: Any) -> NDArray:
        """Var(μt)/t² of candidates ``rows`` at thickness ``tix`` on ``channels`` with ``units`` dwell units."""
        mu = self.mu[rows][:, channels]
        t = self.thickness[tix][:, None]
        k = np.asarray(units, dtype=float)
        i0 = self.noise.i0_counts_per_s * self.time_model.dwell_s * np.maximum(k, 1.0)
        var = np.asarray(self.noise.detector.var_absorbance(i0, t * mu), dtype=float) / t**2
        return np.where(k > 0, var, 0.0)

    def opened(
        self, units: int, rows: NDArray[np.intp], tix: NDArray[np.intp], channels: NDArray[np.intp]
    ) -> NDArray:
        """:meth:`weights` of ``units`` dwell units on unmeasured ``channels``, from a table made once per ``units``."""
        table = self._opened.get(units)
        if table is None:
            table = self._opened[units] = _noise_weights(
                self.mu, units, self.noise, self.time_model.dwell_s, self.thickness
            )  # (T, K, n_energies)
        return table[tix[:, None], rows[:, None], channels[None, :]]

    def column(self, channel: int, units: int) -> NDArray[np.float64]:
        """Var(μt)/t² of every candidate at every thickness on one channel, shape (T, K); 0 for 0 units."""
        return _noise_weights(self.mu[:, channel], units, self.noise, self.time_model.dwell_s, self.thickness)


@dataclass
class _State:
    sums: _PairSums
    counts: NDArray[np.intp]
    order: list[int] = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    min_separation: list[float] = field(default_factory=list)
    #: Dwell units measured before this design (an earlier pass) and the time they took; this pass is its own sweep.
    base: NDArray[np.intp] | None = None
    base_time_s: float = 0.0

    def copy(self) -> _State:
        return _State(self.sums.copy(), self.counts.copy(), list(self.order), list(self.time_s),
                      list(self.min_separation), self.base, self.base_time_s)  # fmt: skip

    @property
    def swept(self) -> NDArray[np.bool_]:
        """Energies this pass measures (all measured ones without an earlier pass)."""
        return self.counts > 0 if self.base is None else self.counts > self.base

    @property
    def sweep_units(self) -> NDArray[np.intp]:
        """Dwell units of this pass's own sweep per energy (its frames are split by these)."""
        return self.counts if self.base is None else self.counts - self.base


def _scan_time(ctx: _Context, state: _State) -> float:
    """Time of the earlier pass plus this pass's own sweep (s)."""
    extra = state.counts if state.base is None else state.counts - state.base
    idx = np.flatnonzero(extra)
    sweep = (
        ctx.time_model.scan_time_s(ctx.energies[idx], extra[idx] * ctx.time_model.dwell_s)
        if idx.size
        else 0.0
    )
    return state.base_time_s + sweep


def _take(ctx: _Context, state: _State, channel: int, units: int) -> None:
    """Add ``units`` dwell units at ``channel`` (opening it if new) to the sums of every pair."""
    old = int(state.counts[channel])
    dw = ctx.column(channel, old + units) - ctx.column(channel, old)
    state.sums.add(channel, 1 if old == 0 else 0, dw)
    state.counts[channel] += units
    state.order.extend([channel] * units)
    state.time_s.append(_scan_time(ctx, state))
    state.min_separation.append(float(state.sums.separations().min()))


def _greedy(
    ctx: _Context,
    state: _State,
    *,
    max_picks: int,
    time_budget_s: float | None,
    target_separation: float | None,
) -> str:
    """Greedy forward selection per second of beam time until a stopping rule; returns the rule that stopped it."""
    while True:
        d_all = state.sums.separations()
        if target_separation is not None and d_all.min() >= target_separation:
            return "target_separation"
        picks = int(state.counts.sum())
        if picks >= max_picks:
            return "n_points"
        active = np.argsort(d_all)[: ctx.active_pairs]
        q = (active[:, None] * state.sums.per_pair + np.arange(state.sums.per_pair)).ravel()
        rows, tix = state.sums.src[q], state.sums.tix[q]
        p_old = float(_pair_probability(d_all[active]).sum())
        tm = ctx.time_model
        swept = state.swept
        measured = np.flatnonzero(swept)
        revisit = np.flatnonzero((state.counts > 0) & ~swept)
        unmeasured = state.counts == 0
        screened = np.zeros_like(unmeasured)
        screened[:: ctx.stride] = True
        fresh = np.flatnonzero(unmeasured & screened)
        trials = _trials(ctx, state, rows, tix, measured, revisit, fresh, picks, max_picks)
        if trials is None:
            return "n_points"
        ch, kind, units, cost, dwq = trials
        d_new = _trial_separations(state.sums, active, ch, kind, dwq)
        score = (p_old - _pair_probability(d_new).sum(axis=1)) / cost
        elapsed = state.time_s[-1] if state.time_s else 0.0
        if time_budget_s is not None:
            score[elapsed + cost > time_budget_s * (1 + 1e-12)] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            return "time_budget"
        if (
            kind[best] == 1 and ctx.stride > 1
        ):  # refine a new energy among the grid points skipped by the screen
            near = np.arange(max(ch[best] - ctx.stride + 1, 0), min(ch[best] + ctx.stride, unmeasured.size))
            near = near[unmeasured[near]]
            r = int(units[best])
            k = np.full(near.size, r)
            dw_near = ctx.opened(r, rows, tix, near).T
            cost_near = tm.dwell_cost_s(0, r) + tm.insertion_overhead_s(
                ctx.energies[near], ctx.energies[measured]
            )
            d_near = _trial_separations(state.sums, active, near, np.ones(near.size), dw_near)
            score_near = (p_old - _pair_probability(d_near).sum(axis=1)) / cost_near
            if time_budget_s is not None:
                score_near[elapsed + cost_near > time_budget_s * (1 + 1e-12)] = -np.inf
            if np.isfinite(score_near).any():
                ch, units, best = near, k, int(np.argmax(score_near))
        take = int(units[best])
        if kind[best] == 0 and swept[ch[best]]:  # lengthen by a step growing with the design (~REPEAT_GROWTH)
            take = max(1, min(int(REPEAT_GROWTH * picks), max_picks - picks))
            if (
                time_budget_s is not None
            ):  # the largest step that fits (split frames make the cost a staircase)
                steps = np.arange(1, take + 1)
                fits = elapsed + tm.dwell_cost_s(state.sweep_units[ch[best]], steps) <= time_budget_s * (
                    1 + 1e-12
                )
                take = int(steps[fits][-1]) if fits.any() else 1
        _take(ctx, state, int(ch[best]), take)


def _trials(
    ctx: _Context,
    state: _State,
    rows: NDArray[np.intp],
    tix: NDArray[np.intp],
    measured: NDArray[np.intp],
    revisit: NDArray[np.intp],
    fresh: NDArray[np.intp],
    picks: int,
    max_picks: int,
) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray] | None:
    """Candidate moves: one more dwell unit at an energy of this sweep (``measured``), or ``r`` in openings at an
    energy only an earlier pass measured (``revisit``: it pays the move and settle again) or a new one (``fresh``).

    Returns channels, kind (0 = more dwell, 1 = new energy), units, cost (s) and the weight changes of the active
    directed combinations ``(rows, tix)``, shape (n_trials, n_active); None if no move fits ``max_picks``.
    """
    tm = ctx.time_model
    overhead = tm.insertion_overhead_s(ctx.energies[fresh], ctx.energies[measured])
    overhead_revisit = tm.insertion_overhead_s(ctx.energies[revisit], ctx.energies[measured])
    parts: list[tuple[NDArray, NDArray, NDArray, NDArray, NDArray]] = []
    for r in ctx.openings:
        if picks + r > max_picks:
            continue
        if measured.size and r == 1:
            k = state.counts[measured][None, :]
            dwq = ctx.weights(rows, tix, measured, k + r) - ctx.weights(rows, tix, measured, k)
            n = measured.size
            cost = tm.dwell_cost_s(state.sweep_units[measured], r)
            parts.append((measured, np.zeros(n), np.full(n, r), cost, dwq.T))
        if revisit.size:
            k = state.counts[revisit][None, :]
            dwq = ctx.weights(rows, tix, revisit, k + r) - ctx.weights(rows, tix, revisit, k)
            n = revisit.size
            cost = tm.dwell_cost_s(0, r) + overhead_revisit
            parts.append((revisit, np.zeros(n), np.full(n, r), cost, dwq.T))
        if fresh.size:
            n = fresh.size
            dwq = ctx.opened(r, rows, tix, fresh)
            parts.append((fresh, np.ones(n), np.full(n, r), tm.dwell_cost_s(0, r) + overhead, dwq.T))
    if not parts:
        return None
    ch, kind, units, cost, dwq = (np.concatenate(p) for p in zip(*parts, strict=True))
    return ch.astype(np.intp), kind, units.astype(np.intp), cost, dwq


def _objective(state: _State) -> float:
    return float(_pair_probability(state.sums.separations()).sum())


def _exchange(
    ctx: _Context,
    state: _State,
    *,
    rounds: int,
    fixed: tuple[int, ...],
    max_picks: int,
    time_budget_s: float,
    floor: float,
    drop_first: tuple[int, ...] = (),
) -> tuple[_State, dict[str, Any]]:
    """Drop the energy whose time buys the least, spend the freed time greedily; keep it only if L falls.

    Each energy of ``drop_first`` (the grid's ends, when they need not stay) is tried once before the rounds
    (its monochromator travel makes it look expensive to the ranking, but dropping it may pay). A move is also
    refused if it leaves the weakest pair below ``floor`` (the target separation, or the weakest separation
    before the move when that is lower), so the exchange never undoes what the greedy reached.
    """
    tried: set[int] = set(fixed)
    before = _objective(state)
    accepted = 0
    all_pairs = np.arange(state.sums.pairs.shape[0])

    def respend(j: int) -> _State:
        trial = state.copy()
        units = int(trial.counts[j])
        trial.sums.add(j, -1, -ctx.column(j, units))
        trial.counts[j] = 0
        trial.order = [c for c in trial.order if c != j]
        trial.time_s.append(_scan_time(ctx, trial))
        trial.min_separation.append(float(trial.sums.separations().min()))
        _greedy(ctx, trial, max_picks=max_picks, time_budget_s=time_budget_s, target_separation=None)
        return trial

    def better(trial: _State) -> bool:
        weakest = min(floor, state.min_separation[-1])
        return _objective(trial) < _objective(state) * (1 - 1e-9) and trial.min_separation[-1] >= weakest

    dropped_ends = []
    for j in drop_first:
        if state.counts[j] > 0 and np.count_nonzero(state.counts) > 3:
            trial = respend(j)
            if np.count_nonzero(trial.counts) >= 3 and better(trial):
                state = trial
                accepted += 1
                dropped_ends.append(float(ctx.energies[j]))
    for _ in range(rounds):
        measured = np.array([j for j in np.flatnonzero(state.counts) if j not in tried], dtype=np.intp)
        if measured.size == 0:
            break
        q = np.arange(state.sums.src.size)
        k = state.counts[measured][None, :]
        dwq = -ctx.weights(state.sums.src[q], state.sums.tix[q], measured, k).T
        d_new = _trial_separations(state.sums, all_pairs, measured, -np.ones(measured.size), dwq)
        loss = _pair_probability(d_new).sum(axis=1) - _objective(state)
        sel = np.flatnonzero(state.counts)
        saving = ctx.time_model.removal_saving_s(ctx.energies[sel])[np.searchsorted(sel, measured)]
        freed = ctx.time_model.dwell_cost_s(0, state.counts[measured]) + saving
        j = int(measured[np.argmin(loss / freed)])
        tried.add(j)
        trial = respend(j)
        if np.count_nonzero(trial.counts) >= 3 and better(trial):
            state = trial
            accepted += 1
            tried = set(fixed)
    return state, {"rounds": rounds, "accepted": accepted, "objective_before": before,
                   "objective_after": _objective(state), "dropped_ends_eV": dropped_ends}  # fmt: skip


def map_separations(
    candidates: PhaseCandidates,
    grid_eV: ArrayLike,
    energies_eV: ArrayLike,
    dwell_s: ArrayLike,
    noise: TransmissionNoise,
    thickness: ArrayLike = (1.0,),
    model_error_rms: float = DEFAULT_SEPARATION_MODEL_ERROR,
) -> NDArray[np.float64]:
    """D of every required pair measured at ``energies_eV`` with ``dwell_s``, computed directly.

    The clustering's own functions (:func:`~xbeam_bluesky.clustering.standardize`,
    :func:`~xbeam_bluesky.clustering.standardized_noise`, :func:`~xbeam_bluesky.clustering.directed_separation`)
    on the candidates' absorbance at each thickness factor; the smaller direction at the worst thickness.

    Parameters
    ----------
    candidates
        Candidate phases on the grid ``grid_eV``.
    grid_eV
        Candidate energy grid (eV) of ``candidates.spectra``.
    energies_eV, dwell_s
        Measured energies (each on the grid, eV) and their exposure (s).
    noise
        Sample absorbance and detector model (``i0_counts_per_s`` per pixel).
    thickness
        Thickness factors scaling the sample absorbance.
    model_error_rms
        Model error ε of D as a fraction of the spectrum's RMS
        (:func:`~xbeam_bluesky.clustering.model_error_floor`: ε_i = e / sqrt(n_energies)); 0 = photon noise only.

    Returns
    -------
    numpy.ndarray
        Shape (P,), in ``candidates.pairs`` order.
    """
    grid = np.asarray(grid_eV, dtype=float)
    energies = np.asarray(energies_eV, dtype=float)
    idx = np.searchsorted(grid, energies)
    idx = np.clip(idx, 0, grid.size - 1)
    if not np.allclose(grid[idx], energies, atol=1e-6):
        raise MapDesignError("energies_eV: every measured energy must be a point of the candidate grid")
    i0 = noise.i0_counts_per_s * np.broadcast_to(np.asarray(dwell_s, dtype=float), energies.shape)
    mu = noise.absorbance(candidates.spectra[:, idx])
    a, b = candidates.pairs[:, 0], candidates.pairs[:, 1]
    z = standardize(mu)
    eps = model_error_floor(energies.size, _check_model_error(model_error_rms))
    out = np.full(a.size, np.inf)
    for t in np.asarray(thickness, dtype=float):
        tau = standardized_noise(t * mu, i0, noise.detector, model_error=eps)
        d = np.minimum(directed_separation(z[a], z[b], tau[a]), directed_separation(z[b], z[a], tau[b]))
        out = np.minimum(out, d)
    return out


@dataclass
class MapDesign:
    """Energies and dwell designed for the phase map, and the separations they are expected to give.

    Attributes
    ----------
    energies_eV
        Energies to measure (eV), sorted, unique.
    dwell_s
        Exposure per energy (s): dwell units × base dwell.
    total_time_s
        Scan time (s) by the time model: dwell, pick overheads, monochromator moves and settles.
    pairs
        Phase pairs, weakest first: ``{"a", "b", "separation"}`` (D at the worst candidates, thickness and
        direction) and ``"confusion"`` Φ(−D).
    weakest_pair
        The first entry of ``pairs``.
    min_separation
        D of the weakest pair.
    confusion
        Σ Φ(−D) over the required candidate pairs (the objective).
    stop_reason
        ``"n_points"``, ``"time_budget"``, ``"target_separation"`` or ``"max_picks"``.
    curve
        ``time_s`` and ``min_separation`` after every greedy step.
    """

    energies_eV: NDArray[np.float64]
    dwell_s: NDArray[np.float64]
    total_time_s: float
    pairs: list[dict[str, Any]]
    min_separation: float
    confusion: float
    n_picks: int
    stop_reason: str
    target_separation: float | None
    thickness: list[float]
    model_error_rms: float
    candidates: dict[str, Any]
    noise: dict[str, Any]
    time_model: dict[str, Any]
    grid: dict[str, Any]
    curve: dict[str, list[float]]
    exchange: dict[str, Any]
    compute_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def weakest_pair(self) -> dict[str, Any]:
        """The pair of phases with the smallest expected separation."""
        return self.pairs[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary (``design.json``; readable by :func:`~xbeam_bluesky.planning.load_design`)."""
        return {
            "objective": "map",
            "energies_eV": [float(e) for e in self.energies_eV],
            "dwell_s": [float(d) for d in self.dwell_s],
            "total_time_s": self.total_time_s,
            "n_points": int(self.energies_eV.size),
            "n_picks": self.n_picks,
            "stop_reason": self.stop_reason,
            "min_separation": self.min_separation,
            "target_separation": self.target_separation,
            "confusion": self.confusion,
            "weakest_pair": self.weakest_pair,
            "pairs": self.pairs,
            "thickness": self.thickness,
            "model_error_rms": self.model_error_rms,
            "candidates": self.candidates,
            "noise": self.noise,
            "time_model": self.time_model,
            "candidate_grid": self.grid,
            "curve": self.curve,
            "exchange": self.exchange,
            "compute_s": self.compute_s,
            **self.extra,
        }

    def save(self, path: str | Path) -> Path:
        """Write the design as JSON and return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


#: Without the grid's ends the design starts from the first and last energy where the candidates' spread (standard
#: deviation over candidates) reaches this fraction of its maximum.
SPAN_FRACTION = 0.1


def _span_of_differences(spectra: NDArray[np.float64]) -> tuple[int, int]:
    """First and last grid index where the candidates differ by ≥ :data:`SPAN_FRACTION` of their largest spread."""
    spread = spectra.std(axis=0)
    inside = np.flatnonzero(spread >= SPAN_FRACTION * spread.max())
    lo, hi = int(inside[0]), int(inside[-1])
    if hi - lo < 2:
        lo, hi = max(lo - 1, 0), min(hi + 1, spectra.shape[1] - 1)
    return lo, hi


def _check_model_error(model_error_rms: float) -> float:
    if not (np.isfinite(model_error_rms) and model_error_rms >= 0):
        raise MapDesignError(
            f"model_error_rms = {model_error_rms!r}; expected a fraction ≥ 0 of the spectrum's RMS (0.02: the "
            "clustering's floor)"
        )
    return float(model_error_rms)


def _phase_pairs(candidates: PhaseCandidates, d: NDArray[np.float64]) -> list[dict[str, Any]]:
    """Weakest candidate pair per pair of phases (mixtures: per mixture and end member), weakest first."""
    best: dict[tuple[str, str], float] = {}
    for (a, b), value in zip(candidates.pairs, d, strict=True):
        key = tuple(
            candidates.phase_names[candidates.phase[c]] if candidates.phase[c] >= 0 else candidates.names[c]
            for c in (a, b)
        )
        best[key] = min(best.get(key, np.inf), float(value))  # type: ignore[index]
    items = sorted(best.items(), key=lambda kv: kv[1])
    return [{"a": a, "b": b, "separation": v, "confusion": float(ndtr(-v))} for (a, b), v in items]


def design_map_energies(
    candidates: PhaseCandidates,
    grid_eV: ArrayLike,
    noise: TransmissionNoise | None = None,
    time_model: ScanTimeModel | None = None,
    *,
    thickness: ArrayLike = (1.0,),
    model_error_rms: float = DEFAULT_SEPARATION_MODEL_ERROR,
    n_points: int | None = None,
    time_budget_s: float | None = None,
    target_separation: float | None = None,
    max_picks: int = 5000,
    active_pairs: int = DEFAULT_ACTIVE_PAIRS,
    openings: tuple[int, ...] = DEFAULT_OPENINGS,
    exchange_rounds: int = DEFAULT_EXCHANGE_ROUNDS,
    screen_stride: int = DEFAULT_SCREEN_STRIDE,
    measured_units: ArrayLike | None = None,
    keep_ends: bool = True,
    on_short_budget: Literal["raise", "warn"] = "raise",
) -> MapDesign:
    """Design energies and dwell that make the candidate phases separable in the map, per unit of beam time.

    Starts from one dwell unit at the two ends of the grid (pre- and post-edge: they anchor the standardization),
    then adds the dwell that lowers ``L = Σ Φ(−D_pq)`` most per second, D the clustering's separation between
    the pair's standardized absorbance spectra at the worst thickness factor; then at most ``exchange_rounds``
    rounds of dropping an energy and spending its time again (kept only if L falls and the weakest pair does
    not). Stops at ``n_points`` dwell units, a time budget, or when every pair reaches ``target_separation``.

    Parameters
    ----------
    candidates
        Phases to separate (:func:`phase_candidates`).
    grid_eV
        Candidate energies (eV), increasing, the grid of ``candidates.spectra``.
    noise
        Sample absorbance (pre-edge μt, edge jump) and detector: ``i0_counts_per_s`` per pixel.
    time_model
        Base dwell and monochromator overheads (:class:`ScanTimeModel`).
    thickness
        Thickness factors (e.g. ``(0.5, 2.0)`` for a range) scaling the sample absorbance; pairs must be separated
        at each.
    model_error_rms
        Model error ε in D as a fraction of each spectrum's RMS deviation from its mean: ε_i = e / sqrt(n) on the
        n measured energies, added in quadrature to the photon noise of the standardized spectrum, as the
        clustering does (default its floor, 0.02; a first pass's estimate: the clustering result's
        ``metadata["model_error"]["rms_fraction_of_spectrum_rms"]``). It bounds D at high dose, so dwell piled
        on few energies stops paying and the design spreads over more energies. 0: photon noise only.
    n_points, time_budget_s, target_separation
        Stopping rules (any set one ends the design): dwell units, scan time (s), D of the weakest pair.
    max_picks
        Limit on dwell units when no ``n_points`` is given.
    active_pairs
        Weakest pairs scored for every candidate channel per step.
    openings
        Dwell units a step may add: a new energy is opened with, or a measured one lengthened by, any of them.
    screen_stride
        New energies are screened every ``screen_stride`` grid points, then the best is refined among its
        neighbours (1: every grid point every step).
    exchange_rounds
        Exchange rounds after the greedy (0: greedy only).
    measured_units
        Dwell units already measured at each grid point (shape (n_energies,)), e.g. a first pass: the design
        continues from them (they count towards the separations, the picks and the time budget) and never
        removes them. The new dwell is a sweep of its own: an energy measured again pays its move and settle
        again; ``total_time_s`` is the earlier pass's scan time plus this sweep's. Default: start from the ends.
    keep_ends
        Start from and keep the two ends of the grid (default; a spectrum normalized at pre- and post-edge needs
        them, e.g. a first pass whose cluster spectra are reconstructed). ``False``: start from the first and last
        energy where the candidates differ (spread ≥ :data:`SPAN_FRACTION` of its maximum) and let the exchange
        try dropping those too — the map only needs the energies where the phases differ, and the range it spans
        costs monochromator travel.
    on_short_budget
        With a time budget and a target separation not reached: ``"raise"`` a :class:`MapDesignError` naming the
        weakest pair and the time it needs, or ``"warn"`` and return the design.

    Raises
    ------
    MapDesignError
        No stopping rule, bad grid, a budget smaller than the two end points, or (``on_short_budget="raise"``) a
        budget too small for the target separation.
    """
    started = time.perf_counter()
    noise = TransmissionNoise() if noise is None else noise
    time_model = ScanTimeModel() if time_model is None else time_model
    grid = np.asarray(grid_eV, dtype=float)
    if grid.ndim != 1 or grid.size != candidates.spectra.shape[1] or not np.all(np.diff(grid) > 0):
        raise MapDesignError(
            f"grid_eV: expected {candidates.spectra.shape[1]} increasing energies (eV), got shape {grid.shape}"
        )
    thick = np.asarray(thickness, dtype=float).ravel()
    if thick.size == 0 or not np.all(np.isfinite(thick) & (thick > 0)):
        raise MapDesignError(f"thickness = {thickness!r}; expected positive factors of the sample absorbance")
    if n_points is None and time_budget_s is None and target_separation is None:
        raise MapDesignError("give a stopping rule: n_points, time_budget_s or target_separation")
    if n_points is not None and n_points < 3:
        raise MapDesignError(f"n_points = {n_points}; a phase map needs at least 3 dwell units (3 energies)")
    if target_separation is not None and not target_separation > 0:
        raise MapDesignError(f"target_separation = {target_separation!r}; expected D > 0")
    if int(screen_stride) != screen_stride or screen_stride < 1:
        raise MapDesignError(f"screen_stride = {screen_stride!r}; expected a whole number of grid points ≥ 1")
    if any(int(r) != r or r < 1 for r in openings) or not openings:
        raise MapDesignError(f"openings = {openings!r}; expected positive whole dwell units")
    ends = (0, grid.size - 1) if keep_ends else _span_of_differences(candidates.spectra)
    lo, hi = ends
    shortest = time_model.scan_time_s(grid[[lo, lo + 1, hi]], time_model.dwell_s)
    if time_budget_s is not None and measured_units is None and time_budget_s < shortest:
        raise MapDesignError(
            f"time budget {time_budget_s:g} s is too small for a phase map: three energies (the end points "
            f"{grid[lo]:.2f} and {grid[hi]:.2f} eV and one between; two cannot tell spectra apart) take "
            f"{shortest:.3g} s"
        )
    mu = noise.absorbance(candidates.spectra)
    ctx = _Context(
        mu,
        grid,
        noise,
        time_model,
        thick,
        tuple(int(r) for r in openings),
        int(active_pairs),
        int(screen_stride),
    )
    eps_rms = _check_model_error(model_error_rms)
    state = _State(_PairSums(mu, candidates.pairs, thick.size, eps_rms), np.zeros(grid.size, dtype=np.intp))
    if measured_units is None:
        seed = np.zeros(grid.size, dtype=np.intp)
        seed[list(ends)] = 1
    else:
        seed = np.asarray(measured_units)
        if (
            seed.shape != grid.shape
            or np.any(seed < 0)
            or np.any(seed != np.round(seed))
            or (seed > 0).sum() < 2
        ):
            raise MapDesignError(
                f"measured_units: expected {grid.size} whole dwell-unit counts ≥ 0 with at least two energies measured"
            )
        seed = seed.astype(np.intp)
    for j in np.flatnonzero(seed):
        _take(ctx, state, int(j), int(seed[j]))
    if measured_units is not None:  # the earlier pass is done: this design is a sweep of its own
        state.base, state.base_time_s = seed.copy(), state.time_s[-1]
        state.time_s[-1] = _scan_time(ctx, state)
    fixed = tuple(int(j) for j in np.flatnonzero(seed)) if keep_ends or measured_units is not None else ()
    limit = n_points if n_points is not None else max_picks
    stop = _greedy(
        ctx, state, max_picks=limit, time_budget_s=time_budget_s, target_separation=target_separation
    )
    if stop == "n_points" and n_points is None:
        stop = "max_picks"
        logger.warning("map design stopped at max_picks=%d before its stopping rule", max_picks)
    curve = {"time_s": list(state.time_s), "min_separation": list(state.min_separation)}
    exchange: dict[str, Any] = {"rounds": 0, "accepted": 0}
    if exchange_rounds > 0:
        budget = time_budget_s if stop == "time_budget" else state.time_s[-1]
        state, exchange = _exchange(
            ctx,
            state,
            rounds=exchange_rounds,
            fixed=fixed,
            max_picks=int(state.counts.sum()) if stop == "n_points" else limit,
            time_budget_s=float(budget),  # type: ignore[arg-type]
            floor=np.inf if target_separation is None else target_separation,
            drop_first=() if fixed else ends,
        )
    d = state.sums.separations()
    picked = np.flatnonzero(state.counts)
    dwell = state.counts[picked] * time_model.dwell_s
    total = _scan_time(ctx, state)
    pairs = _phase_pairs(candidates, d)
    design = MapDesign(
        energies_eV=grid[picked],
        dwell_s=dwell.astype(float),
        total_time_s=float(total),
        pairs=pairs,
        min_separation=float(d.min()),
        confusion=float(_pair_probability(d).sum()),
        n_picks=int(state.counts.sum()),
        stop_reason=stop,
        target_separation=target_separation,
        thickness=[float(t) for t in thick],
        model_error_rms=eps_rms,
        candidates=candidates.to_dict(),
        noise=noise.to_dict(),
        time_model=time_model.to_dict(),
        grid={"start_eV": float(grid[0]), "stop_eV": float(grid[-1]), "n": int(grid.size)},
        curve=curve,
        exchange=exchange,
        compute_s=time.perf_counter() - started,
    )
    if (
        time_budget_s is not None
        and target_separation is not None
        and design.min_separation < target_separation
    ):
        needed = design_map_energies(
            candidates, grid, noise, time_model, thickness=thick, model_error_rms=eps_rms,
            target_separation=target_separation, max_picks=max_picks, active_pairs=active_pairs, openings=openings, exchange_rounds=0,
        )  # fmt: skip
        weak = design.weakest_pair
        need = (
            f"about {needed.total_time_s:.3g} s"
            if needed.stop_reason == "target_separation"
            else f"more than {needed.total_time_s:.3g} s ({max_picks} dwell units did not reach it)"
        )
        message = (
            f"time budget {time_budget_s:g} s separates the closest pair {weak['a']!r} / {weak['b']!r} only to "
            f"D = {weak['separation']:.3g} < target {target_separation:g}; it needs {need}"
        )
        if on_short_budget == "raise":
            raise MapDesignError(message)
        logger.warning("%s", message)
        design.extra["short_budget"] = message
    return design
