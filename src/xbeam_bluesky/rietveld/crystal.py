"""Crystal phases read from CIF with gemmi, held as plain numpy arrays (picklable).

Everything gemmi provides (space-group operations, form-factor coefficients, f′/f″, the
reflection list) is extracted once into arrays so that a :class:`Phase` can be copied and
sent to worker processes cheaply.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gemmi
import numpy as np

from xbeam_bluesky._inputs import input_file
from xbeam_bluesky.errors import CifError

from .lattice import a_to_cell, inv_d2, lattice_constraint_matrix, metric_tensor

__all__ = [
    "SHARED_SITE_TOL_A",
    "Phase",
    "Reflections",
    "generate_reflections",
    "load_phase",
    "position_groups",
]

#: h c in eV·Å, to turn a wavelength into a photon energy for f′, f″.
HC_EV_A = 12398.419843
#: atoms closer than this (Å, modulo lattice translations) share one crystallographic site
SHARED_SITE_TOL_A = 0.01
#: a shared site's occupancies may sum to at most 1 + this (rounding in CIFs: 0.333 + 0.667)
OCCUPANCY_SUM_TOL = 0.005


@dataclass
class Phase:
    """A crystal phase: cell, symmetry and atoms (fractional coordinates, Uiso in Å²).

    Attributes
    ----------
    name
        Phase name (CIF block name or file stem).
    cell
        a, b, c (Å), α, β, γ (degrees).
    space_group
        Hermann–Mauguin symbol.
    crystal_system
        Lower-case crystal system name.
    rotations, translations
        All symmetry operations, (n_ops, 3, 3) and (n_ops, 3), including centring.
    labels, elements
        Site labels and element symbols.
    xyz
        Fractional coordinates (n_sites, 3).
    occupancy
        Crystallographic site occupancy (fraction of the site).
    uiso
        Isotropic displacement parameters (Å²); for anisotropic sites, Ueq.
    u_aniso
        Anisotropic U (n_sites, 6: U11 U22 U33 U12 U13 U23, Å²); NaN rows for isotropic sites.
    multiplicity
        Number of distinct positions of each site in the cell.
    xyz_basis
        Per site, the (3, n_free) matrix of allowed coordinate shifts on its special position.
    ff_coefs
        IT92 coefficients per site (n_sites, 9: a1..a4, b1..b4, c).
    atomic_number, atomic_mass
        Z and standard atomic weight (g/mol) per site.
    lattice_matrix
        (6, n_free) matrix mapping free lattice parameters to the ``A`` terms.
    """

    name: str
    cell: np.ndarray
    space_group: str
    crystal_system: str
    rotations: np.ndarray
    translations: np.ndarray
    labels: list[str]
    elements: list[str]
    xyz: np.ndarray
    occupancy: np.ndarray
    uiso: np.ndarray
    u_aniso: np.ndarray
    multiplicity: np.ndarray
    xyz_basis: list[np.ndarray]
    ff_coefs: np.ndarray
    atomic_number: np.ndarray
    atomic_mass: np.ndarray
    lattice_matrix: np.ndarray
    laue_rotations: np.ndarray = field(repr=False, default_factory=lambda: np.eye(3)[None])

    @property
    def n_sites(self) -> int:
        """Number of independent sites."""
        return len(self.labels)

    @property
    def shared_sites(self) -> list[list[int]]:
        """Site indices grouped by position: atoms within :data:`SHARED_SITE_TOL_A` of each other (modulo
        lattice translations) share one site; every site is in exactly one group, in CIF order."""
        return position_groups(self.cell, self.xyz)

    @property
    def cell_mass(self) -> float:
        """Mass of the unit-cell contents (g/mol per cell, i.e. Z·M)."""
        return float(np.sum(self.occupancy * self.multiplicity * self.atomic_mass))

    def anomalous(self, wavelength: float) -> tuple[np.ndarray, np.ndarray]:
        """f′ and f″ (electrons) per site at ``wavelength`` (Å), Cromer–Liberman via gemmi."""
        energy = HC_EV_A / wavelength
        pairs = [gemmi.cromer_liberman(int(z), energy) for z in self.atomic_number]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


@dataclass
class Reflections:
    """Unique reflections of a phase (Laue-merged) with multiplicities and Laue equivalents."""

    hkl: np.ndarray
    multiplicity: np.ndarray
    equivalents: np.ndarray  # (n_refl, n_laue, 3): every Laue image, duplicates included


def position_groups(cell: np.ndarray, xyz: np.ndarray, tol: float = SHARED_SITE_TOL_A) -> list[list[int]]:
    """Group sites whose positions coincide within ``tol`` (Å), modulo lattice translations.

    Parameters
    ----------
    cell
        a, b, c (Å), α, β, γ (degrees).
    xyz
        Fractional coordinates (n_sites, 3).
    tol
        Largest distance (Å) between two atoms of one site.

    Returns
    -------
    list of list of int
        Groups of site indices (each starts with its first site in CIF order), ordered by that first site.
    """
    g = metric_tensor(np.asarray(cell, dtype=float))
    groups: list[list[int]] = []
    for j, p in enumerate(np.asarray(xyz, dtype=float)):
        for grp in groups:
            d = p - xyz[grp[0]]
            d -= np.round(d)
            if float(np.sqrt(max(d @ g @ d, 0.0))) <= tol:
                grp.append(j)
                break
        else:
            groups.append([j])
    return groups


def _wrap(v: np.ndarray) -> np.ndarray:
    return v - np.floor(v + 1e-9)


def _orbit_and_basis(xyz: np.ndarray, rots: np.ndarray, trans: np.ndarray) -> tuple[int, np.ndarray]:
    """Multiplicity of a site and the basis of allowed coordinate shifts on its special position."""
    images = _wrap(np.einsum("oij,j->oi", rots, xyz) + trans)
    diff = images - _wrap(xyz)
    diff -= np.round(diff)
    same = np.all(np.abs(diff) < 1e-4, axis=1)
    stab = rots[same]
    # distinct positions
    uniq: list[np.ndarray] = []
    for p in images:
        if not any(np.all(np.abs((p - q) - np.round(p - q)) < 1e-4) for q in uniq):
            uniq.append(p)
    stacked = np.concatenate([r - np.eye(3) for r in stab], axis=0)
    _, sv, vt = np.linalg.svd(stacked)
    rank = int(np.sum(sv > 1e-8))
    null = vt[rank:].T  # (3, n_free)
    if null.shape[1] == 0:
        return len(uniq), np.zeros((3, 0))
    # a readable basis: reduced row echelon form of null.T, unit pivots
    basis = _rref(null.T)
    return len(uniq), basis.T


def _rref(m: np.ndarray) -> np.ndarray:
    m = m.astype(float).copy()
    rows, cols = m.shape
    r = 0
    for c in range(cols):
        if r >= rows:
            break
        piv = r + int(np.argmax(np.abs(m[r:, c])))
        if abs(m[piv, c]) < 1e-9:
            continue
        m[[r, piv]] = m[[piv, r]]
        m[r] /= m[r, c]
        for i in range(rows):
            if i != r:
                m[i] -= m[i, c] * m[r]
        r += 1
    m[np.abs(m) < 1e-12] = 0.0
    return m[:r]


def load_phase(cif: str | Path, name: str | None = None) -> Phase:
    """Read a phase from a CIF file (first block with atom sites).

    Parameters
    ----------
    cif
        Path to the CIF file.
    name
        Phase name; defaults to the CIF's ``_pd_phase_name``, the block name or the file stem.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The CIF cannot be parsed, has no cell, space group or atoms, or names an unknown element.
    """
    path = input_file(cif, "CIF file")
    try:
        doc = gemmi.cif.read_file(str(path))
    except Exception as exc:  # gemmi raises RuntimeError/ValueError on syntax errors
        raise CifError(f"CIF {path}: cannot be parsed ({exc})") from exc
    block = next(
        (b for b in doc if b.find_value("_atom_site_fract_x") or b.find_loop("_atom_site_fract_x")), None
    )
    if block is None:
        raise CifError(f"CIF {path}: no block with atom sites (_atom_site_fract_x)")
    try:
        st = gemmi.make_small_structure_from_block(block)
    except Exception as exc:
        raise CifError(f"CIF {path}: cannot build the structure ({exc})") from exc
    if not st.cell.is_crystal() or st.cell.a <= 0:
        raise CifError(f"CIF {path}: missing or invalid unit cell (_cell_length_a ...)")
    sg = st.spacegroup
    if sg is None:
        sg = _spacegroup_from_symops(block)
    if sg is None:
        raise CifError(
            f"CIF {path}: no recognisable space group (H-M symbol, Hall symbol or symmetry operations)"
        )
    if not st.sites:
        raise CifError(f"CIF {path}: no atom sites")
    if not st.cell.is_compatible_with_spacegroup(sg, 1e-3):
        raise CifError(
            f"CIF {path}: the cell {_cell_text(st.cell)} contradicts space group {sg.hm} "
            f"({sg.crystal_system_str()}: expected {_CELL_RULES.get(sg.crystal_system_str(), 'its metric')}); "
            "fix the cell or the space group (nothing is symmetrised silently)"
        )
    ops = list(sg.operations())
    rots = np.array([np.array(op.rot, dtype=float) / gemmi.Op.DEN for op in ops])
    trans = np.array([np.array(op.tran, dtype=float) / gemmi.Op.DEN for op in ops])
    cell = np.array([st.cell.a, st.cell.b, st.cell.c, st.cell.alpha, st.cell.beta, st.cell.gamma])

    labels, elements, xyz, occ, uiso, aniso, mult, bases, coefs, znum, mass = ([] for _ in range(11))
    for site in st.sites:
        el = site.element
        if el.atomic_number == 0 or el.name in ("X", ""):
            raise CifError(f"CIF {path}: site {site.label!r} has unknown element {site.type_symbol!r}")
        it92 = el.it92
        if it92 is None:
            raise CifError(f"CIF {path}: no X-ray form factor for element {el.name!r} (site {site.label})")
        pos = np.array([site.fract.x, site.fract.y, site.fract.z])
        _check_site(path, site.label, pos, site.occ, site.u_iso)
        m, basis = _orbit_and_basis(pos, rots, trans)
        labels.append(site.label)
        elements.append(el.name)
        xyz.append(pos)
        occ.append(site.occ)
        a = site.aniso
        if a.nonzero():
            u6 = np.array([a.u11, a.u22, a.u33, a.u12, a.u13, a.u23])
            aniso.append(u6)
            uiso.append(float(np.mean(u6[:3])) if site.u_iso == 0 else site.u_iso)
        else:
            aniso.append(np.full(6, np.nan))
            uiso.append(site.u_iso)
        mult.append(m)
        bases.append(basis)
        coefs.append(list(it92.get_coefs()))
        znum.append(el.atomic_number)
        mass.append(el.weight)

    _check_duplicates(path, cell, labels, [s.type_symbol or s.element.name for s in st.sites], xyz, occ)
    system = sg.crystal_system_str()
    rhombo = system == "trigonal" and sg.ext == "R"
    unique_axis = sg.monoclinic_unique_axis() if system == "monoclinic" else "b"
    laue = np.unique(np.round(np.concatenate([rots, -rots])).astype(int).reshape(-1, 9), axis=0)
    phase_name = name or block.find_value("_pd_phase_name") or block.name or path.stem
    return Phase(
        name=gemmi.cif.as_string(phase_name) if phase_name else path.stem,
        cell=cell,
        space_group=sg.hm,
        crystal_system=system,
        rotations=rots,
        translations=trans,
        labels=labels,
        elements=elements,
        xyz=np.array(xyz),
        occupancy=np.array(occ, dtype=float),
        uiso=np.array(uiso, dtype=float),
        u_aniso=np.array(aniso, dtype=float),
        multiplicity=np.array(mult, dtype=float),
        xyz_basis=bases,
        ff_coefs=np.array(coefs, dtype=float),
        atomic_number=np.array(znum, dtype=int),
        atomic_mass=np.array(mass, dtype=float),
        lattice_matrix=lattice_constraint_matrix(system, unique_axis, rhombo),
        laue_rotations=laue.reshape(-1, 3, 3).astype(float),
    )


_CELL_RULES = {
    "cubic": "a = b = c, α = β = γ = 90°",
    "tetragonal": "a = b, α = β = γ = 90°",
    "orthorhombic": "α = β = γ = 90°",
    "hexagonal": "a = b, α = β = 90°, γ = 120°",
    "trigonal": "a = b, α = β = 90°, γ = 120° (hexagonal axes) or a = b = c, α = β = γ (rhombohedral axes)",
    "monoclinic": "the two angles other than the unique axis's = 90°",
}


def _cell_text(cell: gemmi.UnitCell) -> str:
    return f"a {cell.a:g} b {cell.b:g} c {cell.c:g} Å, α {cell.alpha:g} β {cell.beta:g} γ {cell.gamma:g}°"


def _check_site(path: Path, label: str, pos: np.ndarray, occ: float, uiso: float) -> None:
    """Reject a site with an unknown (``?``/``.``) coordinate, an occupancy outside [0, 1] or a
    non-finite Uiso; warn about a negative Uiso."""
    missing = [ax for ax, v in zip("xyz", pos, strict=True) if not np.isfinite(v)]
    if missing:
        raise CifError(
            f"CIF {path}: site {label!r} has no value for _atom_site_fract_{', _atom_site_fract_'.join(missing)} "
            "('?' or '.'); expected a fractional coordinate"
        )
    if not (np.isfinite(occ) and 0.0 <= occ <= 1.0 + OCCUPANCY_SUM_TOL):
        raise CifError(
            f"CIF {path}: site {label!r} has occupancy {occ:g}; expected a site fraction in [0, 1]"
        )
    if not np.isfinite(uiso):
        raise CifError(
            f"CIF {path}: site {label!r} has Uiso {uiso:g} Å²; expected a finite displacement parameter"
        )
    if (
        uiso < 0
    ):  # published CIFs carry them (e.g. GSAS-II's CuCr2O4 O at -0.004): say so once, keep the model
        warnings.warn(
            f"CIF {path}: site {label!r} has Uiso {uiso:g} Å², unphysical (expected a non-negative displacement "
            "parameter); kept as the starting value — refine or fix it",
            UserWarning,
            stacklevel=4,
        )


def _check_duplicates(
    path: Path, cell: np.ndarray, labels: list[str], types: list[str], xyz: list[np.ndarray], occ: list[float]
) -> None:
    """Reject repeated labels, the same atom type twice on one site, and a shared site filled beyond 1."""
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise CifError(f"CIF {path}: site label(s) {', '.join(map(repr, dup))} used more than once")
    for group in position_groups(cell, np.array(xyz)):
        names = [labels[j] for j in group]
        kinds = [types[j] for j in group]
        twice = sorted({t for t in kinds if kinds.count(t) > 1})
        if twice:
            same = [lab for lab, t in zip(names, kinds, strict=True) if t in twice]
            raise CifError(
                f"CIF {path}: duplicated atom: sites {', '.join(map(repr, same))} are both {twice[0]} on one "
                f"position (within {SHARED_SITE_TOL_A} Å); expected one site per atom type (merge their occupancies)"
            )
        total = float(sum(occ[j] for j in group))
        if len(group) > 1 and total > 1.0 + OCCUPANCY_SUM_TOL:
            raise CifError(
                f"CIF {path}: sites {', '.join(map(repr, names))} share one position with occupancies summing "
                f"to {total:.4g}; expected at most 1"
            )


def _spacegroup_from_symops(block: gemmi.cif.Block) -> gemmi.SpaceGroup | None:
    for tag in ("_space_group_symop_operation_xyz", "_symmetry_equiv_pos_as_xyz"):
        values = list(block.find_values(tag))
        if values:
            try:
                ops = gemmi.GroupOps([gemmi.Op(gemmi.cif.as_string(v)) for v in values])
                return gemmi.find_spacegroup_by_ops(ops)
            except Exception:
                return None
    return None


def generate_reflections(
    phase: Phase, a_terms: np.ndarray, d_min: float, d_max: float = math.inf
) -> Reflections:
    """Unique reflections with d in [d_min, d_max] (Å), systematic absences removed.

    Parameters
    ----------
    phase
        The phase (its space group gives absences and Laue class).
    a_terms
        Current reciprocal metric ``A`` terms (Å⁻²).
    d_min, d_max
        d-spacing limits (Å).
    """
    cell = gemmi.UnitCell(*a_to_cell(a_terms))
    sg = gemmi.SpaceGroup(phase.space_group)
    hkl = np.asarray(gemmi.make_miller_array(cell, sg, d_min * 0.999, 0.0, True), dtype=int)
    if len(hkl):
        q = inv_d2(hkl, a_terms)
        keep = (q <= 1.0 / d_min**2) & (q > 0) & (q >= (0.0 if math.isinf(d_max) else 1.0 / d_max**2))
        hkl = hkl[keep]
        hkl = hkl[np.argsort(inv_d2(hkl, a_terms), kind="stable")]
    eq = np.einsum("hc,rcd->hrd", hkl.astype(float), phase.laue_rotations)
    keys = np.round(eq).astype(np.int64)
    code = (keys[..., 0] + 512) * 1024 * 1024 + (keys[..., 1] + 512) * 1024 + (keys[..., 2] + 512)
    code.sort(axis=1)
    mult = 1 + np.count_nonzero(np.diff(code, axis=1), axis=1)
    return Reflections(hkl=hkl, multiplicity=mult.astype(float), equivalents=eq)
