"""Model error: the spread of real spectra of one phase beyond photon noise, estimated from the data.

Photon noise shrinks as 1/sqrt(dose); energy calibration, thickness and self-absorption, disorder and beamline
artefacts do not. The discrimination limit is photon noise ⊕ model error ε, ε per energy on the standardized
scale (a fraction of each spectrum's own spread ‖μt − mean μt‖, so thickness and offsets do not change it), see
``docs/decisions/clustering-model-error.md``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbeam_bluesky.errors import ClusteringInputError

#: Smallest model error, as a fraction of a spectrum's RMS deviation from its mean (ε_i = floor / sqrt(n_E)):
#: 2 % of the RMS is ≈ 0.8 % of the edge jump of a K-edge XANES (RMS of a normalized XANES over ±50 eV ≈ 0.4 of
#: the jump), the reproducibility of normalized XANES of one compound between measurements. It keeps the grid
#: finite when photon noise vanishes.
MODEL_ERROR_FLOOR_RMS = 0.02

#: Median of the χ² distribution with one degree of freedom.
_CHI2_1_MEDIAN = 0.454936423119572


def model_error_floor(n_energies: int, floor_rms: float = MODEL_ERROR_FLOOR_RMS) -> NDArray[np.float64]:
    """The floor of ε per energy on the standardized scale: ``floor_rms / sqrt(n_energies)``, shape (n_energies,)."""
    if not (np.isfinite(floor_rms) and floor_rms >= 0):
        raise ClusteringInputError(f"model error floor {floor_rms!r}: expected a finite fraction ≥ 0")
    return np.full(int(n_energies), float(floor_rms) / np.sqrt(n_energies))


def estimate_model_error(
    z: ArrayLike,
    tau_photon: ArrayLike,
    centers: ArrayLike,
    labels: ArrayLike,
    *,
    floor: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Model error per energy from the spread of pixels around their cluster centre beyond photon noise.

    For each energy i, ε_i solves median_p [ r_p,i² / (v_p,i + ε_i²) ] = median(χ²₁) = m, with r_p = z_p − c_k(p)
    the residual of pixel p from its centre and v_p,i = τ_p,i² + c_i² Σ_j c_j² τ_p,j² its photon variance on
    the standardized scale (τ_p,i the channel noise, the second term from the noisy norm the spectrum is divided
    by): the robust (median) version of E[r²] = v + ε². The median ignores up to half of the pixels being
    outliers (a minority or a wrong centre).

    The solution is closed-form: r²/(v + ε²) > m exactly when r²/m − v > ε², so the median of the ratios is m
    where ε² is the median of r²/m − v (one partial sort per energy, no iteration; see
    ``docs/decisions/clustering-model-error.md``).

    Parameters
    ----------
    z
        Standardized pixel spectra, shape (n, n_energies).
    tau_photon
        Their photon noise on the standardized scale, shape (n, n_energies).
    centers
        Standardized cluster centres, shape (K, n_energies).
    labels
        Centre index (0..K-1) of each pixel, negative = not used.
    floor
        Smallest ε per energy (default: :func:`model_error_floor`).

    Returns
    -------
    numpy.ndarray
        ε per energy, shape (n_energies,), dimensionless, ≥ ``floor``.
    """
    z = np.asarray(z, dtype=np.float64)
    tau = np.asarray(tau_photon, dtype=np.float64)
    lab = np.asarray(labels)
    c = np.asarray(centers, dtype=np.float64)
    n_e = z.shape[1]
    lo_floor = model_error_floor(n_e) if floor is None else np.broadcast_to(np.asarray(floor, float), (n_e,))
    use = lab >= 0
    if use.sum() < 2:
        return np.array(lo_floor, dtype=np.float64)
    every = bool(use.all())  # the usual case: no copies of the used rows
    cz = c[lab if every else lab[use]]
    r2 = np.subtract(z if every else z[use], cz)
    r2 *= r2
    # standardizing by the noisy norm adds z_i · (z·δx)/‖x − mean‖ to channel i: variance c_i² Σ_j c_j² τ_j²
    t2 = np.square(tau if every else tau[use])
    cz *= cz
    t2 += cz * np.einsum("ne,ne->n", cz, t2)[:, None]
    r2 /= _CHI2_1_MEDIAN
    r2 -= t2
    excess = np.median(r2, axis=0)  # ε² at which the ratios' median is m
    return np.maximum(np.sqrt(np.maximum(excess, 0.0)), lo_floor)
