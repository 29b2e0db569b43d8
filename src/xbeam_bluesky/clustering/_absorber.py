"""The "no <element>" class: pixels whose edge jump is not detected above their noise.

The jump is a linear functional of each pixel's absorbance spectrum (a least-squares amplitude of the element's
resonant shape next to a constant and smooth non-resonant backgrounds), so its standard error follows from the noise
model channel by channel, it is a sum over energy frames (streamable), and a per-pixel offset (pre-edge subtraction)
or a non-resonant thickness background cannot change it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from xbeam_bluesky.errors import ClusteringInputError

logger = logging.getLogger(__name__)

#: One-sided Φ⁻¹(0.999): a jump this many standard errors above 0 is a detection.
DETECTION_Z = 3.090


class AbsorberInputError(ClusteringInputError):
    """Bad energies, references, stack or variance given to the absorber test."""


def no_absorber_name(element: str | None) -> str:
    """Label of the no-absorber class: ``"no Fe"`` for ``element="Fe"`` (or ``"Fe-L3"``), else ``"no absorber"``."""
    if element is None or not element.strip():
        return "no absorber"
    return f"no {element.strip().split('-')[0]}"


def _unit_step(
    energies: NDArray[np.float64], shapes: NDArray[np.float64], background_powers: tuple[float, ...]
) -> NDArray[np.float64]:
    """Scale each reference to a unit edge step, measured above its own pre-edge background.

    The pre-edge is the lowest tenth of the energies (at least 3 points, one third of them for fewer than nine
    energies: a three-energy map has one below and one above the edge); a constant and the (E₀/E)ⁿ shapes are
    fitted there (as many as the points allow) and extrapolated, so a reference recorded with its non-resonant
    slope (raw OD) and one with the pre-edge removed get the same scale. The step is the mean of the highest tenth
    of the energies above that background.
    """
    order = np.argsort(energies, kind="stable")
    n = max(3, energies.size // 10) if energies.size >= 9 else max(1, energies.size // 3)
    pre, post = order[:n], order[-n:]
    e0 = energies.min()
    basis = np.column_stack([np.ones_like(energies)] + [(e0 / energies) ** p for p in background_powers])
    basis = basis[:, : max(1, min(basis.shape[1], n - 1))]
    coef, *_ = np.linalg.lstsq(basis[pre], shapes[:, pre].T, rcond=None)
    above = shapes - (basis @ coef).T
    step = above[:, post].mean(axis=1)
    scale = np.abs(shapes).max(axis=1, initial=0.0)
    bad = np.flatnonzero(~(np.abs(step) > 1e-9 * np.maximum(scale, 1e-300)))
    if bad.size:
        raise AbsorberInputError(
            f"references[{bad[0]}]: no edge step between the lowest and highest tenth of the energies; expected "
            "a spectrum of the element that rises across its edge"
        )
    return above / step[:, None]


@dataclass(frozen=True)
class AbsorberTest:
    """Per-pixel detection of the absorbing element from its edge jump.

    The jump J (optical density, OD) is the least-squares amplitude of ``shape`` in a fit of the pixel's
    absorbance spectrum by ``shape``, a constant and the non-resonant backgrounds (E₀/E)ⁿ; J = Σᵢ wᵢ ODᵢ.
    Its standard error is σ_J = sqrt(Σᵢ wᵢ² Var(ODᵢ)). A pixel absorbs when J / σ_J > ``z_threshold`` and
    J > ``min_jump_od``.

    Attributes
    ----------
    energies
        Energies in eV, shape (n_energies,).
    weights
        wᵢ (OD of jump per OD of channel i), shape (n_energies,).
    element
        Absorbing element (names the class, e.g. ``"Fe"``), or ``None``.
    z_threshold
        One-sided detection threshold in standard errors (default Φ⁻¹(0.999)).
    min_jump_od
        Additionally required jump in OD (0 = significance only), e.g. a practical "total element" floor.
    """

    energies: NDArray[np.float64]
    weights: NDArray[np.float64]
    element: str | None = None
    z_threshold: float = DETECTION_Z
    min_jump_od: float = 0.0

    @property
    def name(self) -> str:
        """Name of the no-absorber class."""
        return no_absorber_name(self.element)

    @property
    def false_detection_rate(self) -> float:
        """Chance that a pixel without the element passes the significance test (one-sided normal)."""
        return float(norm.sf(self.z_threshold))

    def jump(self, stack: ArrayLike, variance: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Edge jump and its standard error per pixel.

        Parameters
        ----------
        stack
            Absorbance (OD = μt) stack (n_energies, ...) on ``energies``.
        variance
            Var(OD) per channel (OD²), broadcastable to ``stack``: a number, (n_energies,) or a full stack (e.g.
            ``noise.var_absorbance(i0, stack)`` of the detector model, computed on the *raw* OD).

        Returns
        -------
        jump, sigma
            Shape ``stack.shape[1:]``, OD. NaN where a channel is not finite.
        """
        x = np.asarray(stack, dtype=np.float64)
        n_e = self.weights.shape[0]
        if x.ndim < 1 or x.shape[0] != n_e:
            raise AbsorberInputError(f"stack: shape {x.shape}; expected {n_e} energies on the first axis")
        var = np.asarray(variance, dtype=np.float64)
        if var.ndim == 1:
            if var.shape[0] != n_e:
                raise AbsorberInputError(f"variance: {var.shape[0]} values for {n_e} energies")
            var = var.reshape((n_e,) + (1,) * (x.ndim - 1))
        try:
            var = np.broadcast_to(var, x.shape)
        except ValueError:
            raise AbsorberInputError(
                f"variance: shape {var.shape} does not broadcast to the stack {x.shape}"
            ) from None
        if np.any(var < 0):
            raise AbsorberInputError("variance: negative values; expected Var(OD) ≥ 0 per channel")
        w = self.weights
        jump = np.tensordot(w, x, axes=(0, 0))
        sigma = np.sqrt(np.tensordot(w**2, var, axes=(0, 0)))
        return jump, sigma

    def absorbing(self, stack: ArrayLike, variance: ArrayLike) -> NDArray[np.bool_]:
        """True where the element is detected (see the class docstring); False for non-finite pixels."""
        jump, sigma = self.jump(stack, variance)
        return self.decide(jump, sigma)

    def decide(self, jump: ArrayLike, sigma: ArrayLike) -> NDArray[np.bool_]:
        """Detection from a jump and its standard error (e.g. accumulated frame by frame)."""
        j = np.asarray(jump, dtype=np.float64)
        s = np.asarray(sigma, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.isfinite(j) & (j > self.z_threshold * s) & (j > self.min_jump_od)


def absorber_test(
    energies: ArrayLike,
    *,
    references: ArrayLike | None = None,
    edge_ev: float | None = None,
    element: str | None = None,
    background_powers: tuple[float, ...] = (3.0,),
    z_threshold: float = DETECTION_Z,
    min_jump_od: float = 0.0,
) -> AbsorberTest:
    """Build the detection functional for a stack's energies.

    Parameters
    ----------
    energies
        Energies in eV of the stack, shape (n_energies,), any order.
    references
        Reference spectra of the element on these energies (m, n_energies), any scale and offset (OD or
        normalized μ): each is scaled to a unit step (last tenth minus first tenth of the energies) and their mean
        is the resonant shape, white lines included (the most sensitive test). ``None``: a unit arctan step at
        ``edge_ev`` (1 eV wide).
    edge_ev
        Edge energy in eV, needed without references.
    element
        Element name for the class label (``"no Fe"``).
    background_powers
        Non-resonant shapes (E₀/E)ⁿ (E₀ the lowest energy) fitted next to a constant, so a thickness of matrix
        that absorbs smoothly does not look like a jump.
    z_threshold, min_jump_od
        Detection threshold in standard errors and an optional OD floor on the jump.

    Raises
    ------
    AbsorberInputError
        If the energies are not finite and positive, the references do not match them or have no step, neither
        references nor ``edge_ev`` are given, or the design is singular (too few energies).
    """
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim != 1 or not np.all(np.isfinite(e) & (e > 0)):
        raise AbsorberInputError(
            f"energies: expected a 1-D array of positive energies in eV, got shape {e.shape}"
        )
    if not all(np.isfinite(p) for p in background_powers):
        raise AbsorberInputError(f"background_powers={background_powers!r}; expected finite powers")
    if references is not None:
        ref = np.atleast_2d(np.asarray(references, dtype=np.float64))
        if ref.shape[1] != e.size or not np.all(np.isfinite(ref)):
            raise AbsorberInputError(
                f"references: shape {ref.shape}, expected finite spectra on the stack's {e.size} energies"
            )
        shape = _unit_step(e, ref, background_powers).mean(axis=0)
    elif edge_ev is not None:
        if not (np.isfinite(edge_ev) and e.min() < edge_ev < e.max()):
            raise AbsorberInputError(
                f"edge_ev={edge_ev!r}; expected an edge inside the energies {e.min():.2f}–{e.max():.2f} eV"
            )
        shape = np.arctan(e - edge_ev) / np.pi + 0.5
    else:
        raise AbsorberInputError("absorber_test: give references of the element or its edge energy edge_ev")
    if e.size - 3 < len(background_powers):  # one degree of freedom left to test the jump against the noise
        logger.warning(
            "absorber test: %d energies fit the edge and a constant but not the backgrounds (E0/E)^%s; fitting %d",
            e.size, background_powers, max(e.size - 3, 0),
        )  # fmt: skip
        background_powers = background_powers[: max(e.size - 3, 0)]
    design = np.column_stack([shape, np.ones_like(e)] + [(e.min() / e) ** p for p in background_powers])
    if e.size <= design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        raise AbsorberInputError(
            f"energies: {e.size} energies cannot separate the edge from {design.shape[1] - 1} background shapes; "
            "expected more energies on both sides of the edge"
        )
    weights = np.linalg.pinv(design)[0]
    return AbsorberTest(e, weights, element, float(z_threshold), float(min_jump_od))


def label_no_absorber(labels: ArrayLike, absorbing: ArrayLike, n_clusters: int) -> NDArray[np.int32]:
    """Give the no-absorber label ``n_clusters + 1`` to assigned pixels where the element is not detected.

    Parameters
    ----------
    labels
        Chemical labels (0 = masked, 1..n_clusters).
    absorbing
        Detection map from :meth:`AbsorberTest.absorbing`, same shape.
    n_clusters
        Number of chemical clusters K.

    Returns
    -------
    labels
        int32 map: 0 masked, 1..K chemical, K + 1 "no <element>".
    """
    lab = np.asarray(labels).astype(np.int32)
    ab = np.asarray(absorbing, dtype=bool)
    if ab.shape != lab.shape:
        raise AbsorberInputError(f"absorbing: shape {ab.shape}, expected the label map's {lab.shape}")
    out = lab.copy()
    out[(lab > 0) & ~ab] = n_clusters + 1
    return out
