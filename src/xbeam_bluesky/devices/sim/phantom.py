"""A deterministic, procedurally rendered XAS-imaging sample (pure numpy/scipy, no beamline imports).

The phantom covers a rectangle of ``width_mm`` × ``height_mm`` centred on the stage origin. Every quantity is a
function of the absolute sample coordinate of a pixel, so any field of view can be rendered on its own and two
overlapping fields of view agree pixel for pixel: a 1 cm × 2 cm sample at 1 µm pixels is never held in memory.

Geometry
--------
* **Domains**: a warped Voronoi tessellation. One seed per cell of a ``domain_size_um`` grid (jittered), the pixel
  coordinates displaced by a smooth random field so that boundaries are irregular; each domain takes one of the
  majority phases (a phase may be a mixture of references).
* **Minority inclusions**: compact, lobed blobs of the minority phases, placed without overlap; their number and
  size are chosen so each minority covers its requested area fraction (``minority_fractions``).
* **Thickness**: a smooth random field (±``thickness_variation``) times a per-domain factor; 0 outside the sample.

Physics
-------
μt(E, x, y) = thickness(x, y) · μ_phase(x, y)(E), with μ_p(E) = ``edge_step`` · norm_p(E) + ``background`` ·
(E0 / E)³: the normalized spectrum of the phase's reference(s) from the bundled library (calibrated energy scale)
on top of a smooth non-resonant matrix absorption. Outside the library's measured range the normalized spectrum is
held at its end values.

Coordinates
-----------
A field of view centred at stage position (x, y) mm with ``shape = (ny, nx)`` and pixel size ``p`` µm has pixel
``[iy, ix]`` at sample coordinates x + (ix − (nx − 1)/2)·p/1000, y + (iy − (ny − 1)/2)·p/1000 mm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xbeam_bluesky.spectra import aligned_library, load_library

#: Majority phases of the default phantom: name → {reference spectrum name: weight}, and their area weights.
DEFAULT_PHASES: dict[str, dict[str, float]] = {
    "hematite": {"Fe2O3_rt_01": 1.0},
    "magnetite": {"Fe3O4_rt_01": 1.0},
    "goethite": {"larch_FeDem_Goerthite": 1.0},
    "fayalite": {"larch_ALS1032_Olivine_Fo0": 1.0},
    "hematite+magnetite": {"Fe2O3_rt_01": 0.5, "Fe3O4_rt_01": 0.5},
}
DEFAULT_PHASE_WEIGHTS: tuple[float, ...] = (0.35, 0.25, 0.2, 0.1, 0.1)
#: Minority phases of the default phantom (covering ``minority_fractions`` of the area, in this order).
DEFAULT_MINORITY_PHASES: dict[str, dict[str, float]] = {
    "pyrite": {"FeS2_rt_01": 1.0},
    "iron metal": {"Fe_metal_rt_01": 1.0},
}
#: Edge step (μt per unit thickness) per phase name; phases not listed use ``DEFAULT_EDGE_STEP``.
DEFAULT_EDGE_STEPS: dict[str, float] = {
    "hematite": 1.0,
    "magnetite": 1.05,
    "goethite": 0.9,
    "fayalite": 0.75,
    "hematite+magnetite": 1.02,
    "pyrite": 0.7,
    "iron metal": 1.4,
}
DEFAULT_EDGE_STEP = 1.0
_REFERENCE_E0 = 7112.0  # eV, Fe K (the library's calibration reference)


@dataclass(frozen=True)
class FieldOfView:
    """Ground truth of one rendered field of view.

    Attributes
    ----------
    labels : numpy.ndarray
        int32 (ny, nx): 0 outside the sample, i ↔ ``Phantom.phase_names[i - 1]``.
    thickness : numpy.ndarray
        float32 (ny, nx): relative thickness (mean ≈ 1 inside the sample, 0 outside).
    center_mm : tuple of float
        Stage position (x, y) in mm at the centre of the field.
    pixel_um : float
        Pixel size in µm.
    """

    labels: np.ndarray
    thickness: np.ndarray
    center_mm: tuple[float, float]
    pixel_um: float

    def absorbance(self, mu_per_thickness: np.ndarray) -> np.ndarray:
        """μt image for one energy given μ per unit thickness of each phase (length n_phases), float32."""
        lut = np.concatenate([[0.0], np.asarray(mu_per_thickness, dtype=np.float64)]).astype(np.float32)
        return lut[self.labels] * self.thickness


@dataclass(frozen=True)
class _Blob:
    label: int
    x_um: float
    y_um: float
    radius_um: float
    harmonics: tuple[tuple[int, float, float], ...]  # (order, amplitude, phase)


@dataclass
class _SmoothField:
    """Sum of random plane waves, evaluated separably as a matrix product (fast on large pixel grids)."""

    kx: np.ndarray  # rad/µm
    ky: np.ndarray
    phase: np.ndarray
    amplitude: np.ndarray

    @classmethod
    def random(
        cls, rng: np.random.Generator, n_modes: int, wavelength_um: tuple[float, float], rms: float
    ) -> _SmoothField:
        wavelength = rng.uniform(*wavelength_um, size=n_modes)
        angle = rng.uniform(0.0, np.pi, size=n_modes)
        k = 2 * np.pi / wavelength
        amplitude = np.full(n_modes, rms * np.sqrt(2.0 / n_modes))
        return cls(k * np.cos(angle), k * np.sin(angle), rng.uniform(0, 2 * np.pi, n_modes), amplitude)

    def __call__(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """Field on the grid y_um[:, None] × x_um[None, :], float32 (ny, nx)."""
        # cos(kx x + ky y + φ) = cos(kx x + φ) cos(ky y) − sin(kx x + φ) sin(ky y)
        ax = np.outer(self.kx, x_um) + self.phase[:, None]
        ay = np.outer(y_um, self.ky)
        left = np.hstack([np.cos(ay) * self.amplitude, -np.sin(ay) * self.amplitude])
        right = np.vstack([np.cos(ax), np.sin(ax)])
        return (left @ right).astype(np.float32)


@dataclass(kw_only=True, eq=False)
class Phantom:
    """Seeded, lazily rendered multi-phase sample for simulated XANES imaging.

    Parameters
    ----------
    width_mm, height_mm : float
        Size of the sample (x, y) in mm, centred on stage position (0, 0).
    seed : int
        Everything (geometry, phase assignment, thickness) follows from it.
    phases : mapping, optional
        Majority phases: name → {reference spectrum name: weight} (a mixture when several references).
        Defaults to :data:`DEFAULT_PHASES`.
    minority_fractions : sequence of float
        Area fraction of the sample covered by each minority phase (default 0.5 % and 0.1 %).
    minority_phases : mapping, optional
        Minority phases (same form as ``phases``), as many as ``minority_fractions``; defaults to
        :data:`DEFAULT_MINORITY_PHASES`.
    phase_weights : sequence of float, optional
        Relative area weight of each majority phase (default equal, or :data:`DEFAULT_PHASE_WEIGHTS` for the
        default phases).
    domain_size_um : float
        Typical domain diameter in µm.
    minority_radius_um : sequence of float
        Nominal inclusion radius per minority phase in µm (the count is chosen to match the fraction).
    thickness_variation : float
        Relative rms of the smooth thickness field.
    edge_steps : mapping, optional
        Edge step (μt per unit thickness) per phase name; see :data:`DEFAULT_EDGE_STEPS`.
    background : float
        Non-resonant absorption μt per unit thickness at the edge energy (falls as E⁻³).
    library_dir : str or pathlib.Path, optional
        Reference library directory; ``None`` = bundled Fe K library.

    Attributes
    ----------
    phase_names : list of str
        Label i (≥ 1) ↔ ``phase_names[i - 1]``; majority phases first, then minority phases. Label 0 = no sample.
    """

    width_mm: float = 20.0
    height_mm: float = 10.0
    seed: int = 0
    phases: Mapping[str, Mapping[str, float]] | None = None
    minority_fractions: Sequence[float] = (0.005, 0.001)
    minority_phases: Mapping[str, Mapping[str, float]] | None = None
    phase_weights: Sequence[float] | None = None
    domain_size_um: float = 300.0
    minority_radius_um: Sequence[float] = (80.0, 40.0)
    thickness_variation: float = 0.12
    edge_steps: Mapping[str, float] | None = None
    background: float = 0.3
    library_dir: str | Path | None = None
    phase_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if not (self.width_mm > 0 and self.height_mm > 0):
            raise ValueError(
                f"Phantom width_mm={self.width_mm!r}, height_mm={self.height_mm!r}; expected positive sizes in mm"
            )
        if self.domain_size_um <= 0:
            raise ValueError(f"Phantom domain_size_um={self.domain_size_um!r}; expected > 0 µm")
        default = self.phases is None
        majors = dict(DEFAULT_PHASES if default else self.phases)
        minors = dict(DEFAULT_MINORITY_PHASES if self.minority_phases is None else self.minority_phases)
        fractions = [float(f) for f in self.minority_fractions]
        if len(fractions) > len(minors):
            raise ValueError(
                f"Phantom minority_fractions has {len(fractions)} entries but only {len(minors)} minority "
                "phases are defined; pass minority_phases with one phase per fraction"
            )
        minors = dict(list(minors.items())[: len(fractions)])
        if any(not 0 <= f < 0.2 for f in fractions):
            raise ValueError(f"Phantom minority_fractions={fractions}; expected each in [0, 0.2)")
        if not majors:
            raise ValueError("Phantom phases is empty; expected at least one majority phase")
        if self.phase_weights is not None:
            weights = np.asarray(self.phase_weights, dtype=float)
        elif default:
            weights = np.asarray(DEFAULT_PHASE_WEIGHTS)
        else:
            weights = np.ones(len(majors))
        if weights.shape != (len(majors),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"Phantom phase_weights={list(weights)}; expected {len(majors)} non-negative weights"
            )
        radii = list(self.minority_radius_um) + [40.0] * len(fractions)
        self._majors = majors
        self._minors = minors
        self._weights = weights / weights.sum()
        self._fractions = fractions
        self._radii = [float(r) for r in radii[: len(fractions)]]
        self.phase_names = [*majors, *minors]
        self._build_geometry()
        self._build_spectra()
        self._area_fractions: dict[str, float] | None = None

    # ------------------------------------------------------------------ geometry
    def _build_geometry(self) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EED]))
        w_um, h_um = self.width_mm * 1000.0, self.height_mm * 1000.0
        cell = self.domain_size_um
        # Seed grid with a 2-cell margin so the 3x3 neighbourhood search never leaves it (warp ≤ 0.5 cell).
        self._x0 = -w_um / 2 - 2 * cell
        self._y0 = -h_um / 2 - 2 * cell
        nx = int(np.ceil(w_um / cell)) + 5
        ny = int(np.ceil(h_um / cell)) + 5
        self._seed_x = (self._x0 + (np.arange(nx)[None, :] + rng.uniform(0.1, 0.9, (ny, nx))) * cell).astype(
            np.float32
        )
        self._seed_y = (self._y0 + (np.arange(ny)[:, None] + rng.uniform(0.1, 0.9, (ny, nx))) * cell).astype(
            np.float32
        )
        self._domain_phase = (rng.choice(len(self._majors), size=(ny, nx), p=self._weights) + 1).astype(
            np.int32
        )
        self._domain_thickness = (1.0 + 0.08 * rng.standard_normal((ny, nx))).astype(np.float32)
        self._warp_x = _SmoothField.random(rng, 8, (1.5 * cell, 4.0 * cell), 0.15 * cell)
        self._warp_y = _SmoothField.random(rng, 8, (1.5 * cell, 4.0 * cell), 0.15 * cell)
        self._thickness_field = _SmoothField.random(
            rng, 12, (0.1 * min(w_um, h_um) + 500.0, 10000.0), self.thickness_variation
        )
        self._blobs = self._place_blobs(rng, w_um, h_um)

    def _place_blobs(self, rng: np.random.Generator, w_um: float, h_um: float) -> list[_Blob]:
        blobs: list[_Blob] = []
        area = w_um * h_um
        for k, (fraction, radius) in enumerate(zip(self._fractions, self._radii, strict=True)):
            if fraction == 0:
                continue
            target = fraction * area
            count = max(1, round(target / (np.pi * radius**2)))
            r0 = float(np.sqrt(target / (count * np.pi)))
            harmonics = []
            for _ in range(count):
                h = ((2, rng.uniform(0.05, 0.2), rng.uniform(0, 2 * np.pi)),
                     (3, rng.uniform(0.0, 0.1), rng.uniform(0, 2 * np.pi)))  # fmt: skip
                harmonics.append(h)
            label = len(self._majors) + k + 1
            for h in harmonics:
                # Area of r(θ) = r·(1 + Σ a cos(nθ+φ)) is π r² (1 + Σ a²/2): rescale to keep π r0².
                r = r0 / np.sqrt(1 + sum(a * a / 2 for _, a, _ in h))
                extent = r * (1 + sum(a for _, a, _ in h))
                for _attempt in range(1000):
                    x = rng.uniform(-w_um / 2 + extent, w_um / 2 - extent)
                    y = rng.uniform(-h_um / 2 + extent, h_um / 2 - extent)
                    if all(
                        np.hypot(x - b.x_um, y - b.y_um) > 1.2 * (extent + b.radius_um * 1.35) for b in blobs
                    ):
                        break
                else:
                    raise ValueError(
                        f"Phantom: cannot place {count} non-overlapping inclusions of {self.phase_names[label - 1]!r}"
                        f" in {self.width_mm}x{self.height_mm} mm; lower minority_fractions or the radius"
                    )
                blobs.append(_Blob(label, float(x), float(y), float(r), h))
        return blobs

    def field_of_view(
        self, center_mm: tuple[float, float], shape: tuple[int, int], pixel_um: float
    ) -> FieldOfView:
        """Render the ground truth (labels and thickness) of one field of view.

        Parameters
        ----------
        center_mm : tuple of float
            Stage position (x, y) in mm at the centre of the field of view.
        shape : tuple of int
            (ny, nx) pixels.
        pixel_um : float
            Pixel size in µm.

        Returns
        -------
        FieldOfView
        """
        ny, nx = (int(shape[0]), int(shape[1]))
        if ny <= 0 or nx <= 0 or pixel_um <= 0:
            raise ValueError(
                f"field of view shape={shape!r}, pixel_um={pixel_um!r}; expected positive values"
            )
        cx_um, cy_um = float(center_mm[0]) * 1000.0, float(center_mm[1]) * 1000.0
        x = cx_um + (np.arange(nx) - (nx - 1) / 2) * pixel_um
        y = cy_um + (np.arange(ny) - (ny - 1) / 2) * pixel_um
        labels = np.zeros((ny, nx), dtype=np.int32)
        thickness = np.zeros((ny, nx), dtype=np.float32)
        w2, h2 = self.width_mm * 500.0, self.height_mm * 500.0
        ix = np.flatnonzero((x >= -w2) & (x < w2))
        iy = np.flatnonzero((y >= -h2) & (y < h2))
        if ix.size == 0 or iy.size == 0:
            return FieldOfView(labels, thickness, (float(center_mm[0]), float(center_mm[1])), float(pixel_um))
        xs, ys = x[ix[0] : ix[-1] + 1], y[iy[0] : iy[-1] + 1]
        sub_labels, sub_thick = self._render(xs, ys)
        labels[iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1] = sub_labels
        thickness[iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1] = sub_thick
        return FieldOfView(labels, thickness, (float(center_mm[0]), float(center_mm[1])), float(pixel_um))

    def _render(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and thickness on the grid y × x (µm), all pixels inside the sample."""
        cell = self.domain_size_um
        u = x[None, :].astype(np.float32) + self._warp_x(x, y)
        v = y[:, None].astype(np.float32) + self._warp_y(x, y)
        ci = np.floor((u - self._x0) / cell).astype(np.int32)
        cj = np.floor((v - self._y0) / cell).astype(np.int32)
        best = np.full(u.shape, np.inf, dtype=np.float32)
        best_i = np.zeros(u.shape, dtype=np.int32)
        best_j = np.zeros(u.shape, dtype=np.int32)
        ny_c, nx_c = self._seed_x.shape
        for dj in (-1, 0, 1):
            jj = np.clip(cj + dj, 0, ny_c - 1)
            for di in (-1, 0, 1):
                ii = np.clip(ci + di, 0, nx_c - 1)
                d2 = (u - self._seed_x[jj, ii]) ** 2 + (v - self._seed_y[jj, ii]) ** 2
                closer = d2 < best
                best = np.where(closer, d2, best)
                best_i = np.where(closer, ii, best_i)
                best_j = np.where(closer, jj, best_j)
        labels = self._domain_phase[best_j, best_i]
        thickness = (1.0 + self._thickness_field(x, y)) * self._domain_thickness[best_j, best_i]
        for blob in self._blobs:
            reach = blob.radius_um * (1 + sum(a for _, a, _ in blob.harmonics))
            sx = np.flatnonzero(np.abs(x - blob.x_um) <= reach)
            sy = np.flatnonzero(np.abs(y - blob.y_um) <= reach)
            if sx.size == 0 or sy.size == 0:
                continue
            dx = x[sx][None, :] - blob.x_um
            dy = y[sy][:, None] - blob.y_um
            theta = np.arctan2(dy, dx)
            r = blob.radius_um * (1 + sum(a * np.cos(n * theta + p) for n, a, p in blob.harmonics))
            inside = dx**2 + dy**2 <= r**2
            block = labels[sy[0] : sy[-1] + 1, sx[0] : sx[-1] + 1]
            block[inside] = blob.label
        return labels, np.maximum(thickness, 0.05).astype(np.float32)

    def labels(self, center_mm: tuple[float, float], shape: tuple[int, int], pixel_um: float) -> np.ndarray:
        """Ground-truth phase labels of a field of view (int32 (ny, nx); see :meth:`field_of_view`)."""
        return self.field_of_view(center_mm, shape, pixel_um).labels

    def area_fractions(self, pixel_um: float = 5.0) -> dict[str, float]:
        """Fraction of the sample area covered by each phase, measured from a rendering of the whole sample.

        Parameters
        ----------
        pixel_um : float
            Pixel size of the measuring rendering in µm (the default resolves the smallest inclusions).

        Returns
        -------
        dict
            Phase name → area fraction (sums to 1 over the sample).
        """
        if self._area_fractions is not None and pixel_um == 5.0:
            return dict(self._area_fractions)
        nx = round(self.width_mm * 1000.0 / pixel_um)
        ny = round(self.height_mm * 1000.0 / pixel_um)
        counts = np.zeros(len(self.phase_names) + 1, dtype=np.int64)
        strip = max(1, 2_000_000 // nx)
        for start in range(0, ny, strip):
            rows = min(strip, ny - start)
            cy = (-self.height_mm * 1000.0 / 2 + (start + (rows - 1) / 2 + 0.5) * pixel_um) / 1000.0
            lab = self.labels((0.0, cy), (rows, nx), pixel_um)
            counts += np.bincount(lab.ravel(), minlength=counts.size)
        total = counts[1:].sum()
        result = {name: float(counts[i + 1] / total) for i, name in enumerate(self.phase_names)}
        if pixel_um == 5.0:
            self._area_fractions = dict(result)
        return result

    # ------------------------------------------------------------------ spectra
    def _build_spectra(self) -> None:
        needed = sorted({ref for mix in [*self._majors.values(), *self._minors.values()] for ref in mix})
        library = {s.name: s for s in load_library(self.library_dir)}
        missing = [name for name in needed if name not in library]
        if missing:
            raise ValueError(
                f"Phantom phases use reference spectra {missing} not found in the library "
                f"{self.library_dir or 'bundled Fe K'}; available: {sorted(library)}"
            )
        spectra = [library[name] for name in needed]
        lo = max(s.energy[0] for s in spectra) + 3.0
        hi = min(s.energy[-1] for s in spectra) - 3.0
        grid = np.arange(np.ceil(lo), np.floor(hi), 0.1)
        aligned = aligned_library(spectra, grid)
        if aligned.dropped:
            raise ValueError(f"Phantom: reference spectra could not be normalized: {aligned.dropped}")
        rows = dict(zip(aligned.names, aligned.matrix, strict=True))
        steps = dict(DEFAULT_EDGE_STEPS)
        steps.update(self.edge_steps or {})
        norm = []
        for mix in [*self._majors.values(), *self._minors.values()]:
            weights = np.asarray(list(mix.values()), dtype=float)
            if (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"Phantom phase mixture {dict(mix)}; expected non-negative weights")
            weights = weights / weights.sum()
            norm.append(sum(w * rows[ref] for w, ref in zip(weights, mix, strict=True)))
        self._grid = grid
        self._norm = np.vstack(norm)
        self._edge_steps = np.array([steps.get(name, DEFAULT_EDGE_STEP) for name in self.phase_names])

    @property
    def spectral_range_eV(self) -> tuple[float, float]:
        """Energy range (eV) covered by the measured reference spectra."""
        return float(self._grid[0]), float(self._grid[-1])

    def normalized_spectra(self, energies_eV: Sequence[float] | np.ndarray) -> np.ndarray:
        """Edge-step normalized spectra of the phases, shape (n_phases, n_energy)."""
        energies = np.atleast_1d(np.asarray(energies_eV, dtype=np.float64))
        return np.vstack([np.interp(energies, self._grid, row) for row in self._norm])

    def phase_spectra(self, energies_eV: Sequence[float] | np.ndarray) -> np.ndarray:
        """μt per unit thickness of each phase, shape (n_phases, n_energy).

        Parameters
        ----------
        energies_eV : array_like
            Photon energies in eV.
        """
        energies = np.atleast_1d(np.asarray(energies_eV, dtype=np.float64))
        if (energies <= 0).any():
            raise ValueError(f"Phantom energies must be positive eV, got min {energies.min()!r}")
        matrix = self.background * (_REFERENCE_E0 / energies) ** 3
        return self._edge_steps[:, None] * self.normalized_spectra(energies) + matrix[None, :]

    def absorbance(
        self,
        energies_eV: Sequence[float] | np.ndarray,
        center_mm: tuple[float, float],
        shape: tuple[int, int],
        pixel_um: float,
    ) -> np.ndarray:
        """μt of a field of view at each energy, float32 (n_energy, ny, nx).

        Parameters
        ----------
        energies_eV : array_like
            Photon energies in eV.
        center_mm : tuple of float
            Stage position (x, y) in mm.
        shape : tuple of int
            (ny, nx) pixels.
        pixel_um : float
            Pixel size in µm.
        """
        fov = self.field_of_view(center_mm, shape, pixel_um)
        spectra = self.phase_spectra(energies_eV)
        return np.stack([fov.absorbance(spectra[:, k]) for k in range(spectra.shape[1])])
