"""Refinements of real data against GSAS-II's published / reference results (tests/data/xrd/README.md)."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from xbeam_bluesky.rietveld import (
    Refinement,
    Strategy,
    default_strategy,
    load_phase,
    read_instrument,
    read_pattern,
)


@pytest.fixture(scope="module")
def pbso4(data_dir):
    d = data_dir / "pbso4"
    ref = Refinement(
        read_pattern(d / "PBSO4.XRA"),
        [load_phase(d / "PbSO4-Wyckoff.cif")],
        read_instrument(d / "INST_XRY.PRM"),
        fit_range=(16.0, 158.4),  # GSAS-II's limits for its 10.28 % fit
    )
    return ref, ref.run()


def _gsas_esd(text: str) -> dict[str, float]:
    """Parse GSAS-II's printed (values, esds) tuple of dicts from the reference JSON."""
    esd_part = text.split("}, {", 1)[1]
    out = {}
    for key in ("length_a", "length_b", "length_c"):
        chunk = esd_part.split(f"'{key}': np.float64(", 1)[1]
        out[key] = float(chunk.split(")", 1)[0])
    return out


@pytest.mark.slow
def test_pbso4_default_sequence_matches_gsas2(pbso4, pbso4_reference):
    _, res = pbso4
    assert res.ok and res.status == "converged"
    assert res.rwp <= 10.5  # GSAS-II: 10.28 %
    assert res.n_reflections == 383  # GSAS-II: 383 reflections in 16–158.4°
    assert res.gof == pytest.approx(res.rwp / res.rexp, rel=1e-9)  # GOF = Rwp / Rexp by definition
    assert 0 < res.phases[0]["r_bragg"] < res.rwp
    esd = _gsas_esd(pbso4_reference["cell_esd"])
    lat = res.phases[0]["lattice"]
    for ours, key in (("a", "length_a"), ("b", "length_b"), ("c", "length_c")):
        assert abs(lat[ours] - pbso4_reference["cell"][key]) <= 3 * esd[key], (ours, lat[ours])
    ref_atoms = {label: np.array(xyz) for label, xyz, _u in pbso4_reference["atoms"]}
    for atom in res.phases[0]["atoms"]:
        np.testing.assert_allclose(atom["xyz"], ref_atoms[atom["label"]], atol=0.005, err_msg=atom["label"])
    # our esds are of the same size as GSAS-II's
    assert 0.5 < res.phases[0]["lattice_esd"]["a"] / esd["length_a"] < 2.0
    # sample displacement (μm) and the GSAS-II "Shift" agree
    assert res.instrument["displacement"] == pytest.approx(
        75.19, abs=3 * res.instrument["displacement_esd"] + 0.5
    )


@pytest.mark.slow
def test_fluorapatite_default_sequence(data_dir):
    d = data_dir / "fluorapatite"
    ref = json.loads((d / "gsas2_reference.json").read_text())
    res = Refinement(
        read_pattern(d / "FAP.XRA"), [load_phase(d / "FAP_start.cif")], read_instrument(d / "INST_XRY.PRM")
    ).run()
    assert res.ok
    assert res.rwp <= 10.4  # tutorial 10.38 %, GSAS-II on this machine 9.42 %
    esd = _gsas_esd(ref["cell"])
    lat = res.phases[0]["lattice"]
    assert abs(lat["a"] - 9.371865195092566) <= 3 * esd["length_a"]
    assert abs(lat["c"] - 6.885895155453286) <= 3 * esd["length_c"]
    assert lat["a"] == pytest.approx(lat["b"]) and lat["gamma"] == pytest.approx(120.0)


def _lab6_gsas2_recipe(data_dir, last: list[str], asymmetry: str = "fcj"):
    d = data_dir / "lab6"
    inst = read_instrument(d / "CuKa_lab_default.instprm").with_changes(
        x=1.8 * 1.5405 / np.pi,
        y=0.018 * 1000 / np.pi,  # GSAS-II's starting size 1 μm, microstrain 1000
        asymmetry=asymmetry,
    )
    strategy = Strategy.from_dict(
        [
            {
                "refine": ["background", "scale"],
                "background": {"type": "chebyshev", "terms": 8},
                "max_cycles": 8,
            },
            {"refine": ["displacement"], "max_cycles": 8},
            {"refine": ["cell"], "max_cycles": 8},
            {"refine": ["X", "Y"], "max_cycles": 8},
            {"refine": ["atoms_xyz", "atoms_uiso"], "max_cycles": 8},
            {"refine": last, "max_cycles": 8},
        ]
    )
    return Refinement(
        read_pattern(d / "NIST660CBI.gsas"), [load_phase(d / "LaB6_start.cif")], inst, fit_range=(20.0, 125.0)
    ).run(strategy)


@pytest.mark.slow
def test_lab6_gsas2_recipe_matches_gsas2_until_the_asymmetry_stage(data_dir):
    res = _lab6_gsas2_recipe(data_dir, ["U", "V", "W", "SH/L"])
    assert res.ok
    gsas2 = [42.289, 14.103, 12.601, 9.853, 9.108]  # tests/data/xrd/lab6/gsas2_reference.json
    np.testing.assert_allclose([s.rwp for s in res.stages[:5]], gsas2, atol=0.2)
    # the last stage (U V W + X Y + SH/L): we reach a lower minimum than GSAS-II's 8.66 %
    assert res.rwp < 8.66


@pytest.mark.slow
def test_lab6_lattice_within_2e4_of_gsas2_with_the_full_axial_model(data_dir):
    """GSAS-II's recipe with the asymmetry from the slit geometry (Cheary–Coelho full axial model, default
    lab geometry: 2.5° Sollers refined, 12/15/12 mm source/sample/receiver, R 200 mm) instead of FCJ's SH/L.

    With FCJ our converged fit has a 4.156963 Å (+4.0e-4: SH/L 0.066 absorbs the low-angle tails and
    biases a; docs/decisions/rietveld-lab6-asymmetry.md). The full axial model fits better and its a
    agrees with GSAS-II's and with the NIST certificates (4.15658–4.15666 Å on this file's 1.5405 Å scale).
    """
    res = _lab6_gsas2_recipe(data_dir, ["U", "V", "W", "soller"], asymmetry="full_axial")
    assert res.ok, res.message
    assert abs(res.phases[0]["lattice"]["a"] - 4.156559634582432) <= 2e-4
    assert res.rwp < 5.85  # below FCJ's converged 5.85 % (GSAS-II: 8.66 %)
    assert 1.0 < res.instrument["soller"] < 5.0  # a physical Soller aperture (deg)


def test_runs_start_from_the_same_model_and_are_reproducible(pbso4):
    ref, first = pbso4
    assert ref.run().rwp == pytest.approx(first.rwp, rel=1e-12)
    strategy = Strategy.from_dict(default_strategy().to_dict())  # JSON round trip
    fixed = ref.run(strategy)  # the fixed stages: the default runs the first four as they are
    assert [s.rwp for s in fixed.stages[:4]] == pytest.approx([s.rwp for s in first.stages[:4]], rel=1e-12)
    assert first.stages[4].name == "profile U V W, background 7 terms"  # grown by Hamilton's test
    assert first.rwp < fixed.rwp
    assert ref.initial.phases[0].uiso[0] == pytest.approx(0.01)  # the starting model is untouched


def _run_pickled(blob: bytes) -> float:
    ref, strategy = pickle.loads(blob)
    return ref.run(strategy).rwp


@pytest.mark.slow
def test_refinement_is_picklable_for_worker_processes(pbso4):
    ref, _ = pbso4
    strategy = Strategy.from_dict(
        {
            "stages": [
                {"refine": ["background", "scale"], "background": {"type": "cosine", "terms": 4}},
                {"refine": ["cell"]},
            ]
        }
    )
    local = ref.run(strategy).rwp
    blob = pickle.dumps((ref, strategy))
    with ProcessPoolExecutor(max_workers=1) as pool:
        remote = pool.submit(_run_pickled, blob).result()
    assert remote == pytest.approx(local, rel=1e-10)


@pytest.mark.slow
def test_fluorapatite_gsas2_recipe_reproduces_its_atoms(data_dir):
    """GSAS-II's own FAP recipe (log-interpolated 9-term background): same Rwp, same atoms."""
    d = data_dir / "fluorapatite"
    ref = json.loads((d / "gsas2_reference.json").read_text())
    strategy = Strategy.from_dict(
        [
            {"refine": ["background", "scale"], "background": {"type": "log_interpolate", "terms": 9}},
            {"refine": ["cell", "displacement"]},
            {"refine": ["X", "Y"]},  # GSAS-II: isotropic size and microstrain
            {"refine": ["atoms_xyz", "atoms_uiso"]},
        ]
    )
    res = Refinement(
        read_pattern(d / "FAP.XRA"), [load_phase(d / "FAP_start.cif")], read_instrument(d / "INST_XRY.PRM")
    ).run(strategy)
    assert res.ok
    assert res.rwp <= ref["residuals"]["wR"] + 0.1  # GSAS-II here: 9.42 %
    ours = {a["label"].upper(): a for a in res.phases[0]["atoms"]}
    for label, _el, xyz, uiso, _occ in ref["atoms"]:  # GSAS-II labels: CA1, CA2, P3, F4, O5, O6, O7
        match = ours[label.upper()]
        np.testing.assert_allclose(match["xyz"], xyz, atol=1e-3, err_msg=label)
        assert match["uiso"] == pytest.approx(uiso, abs=1e-3), label


@pytest.mark.slow
def test_pbso4_gsas2_recipe_matches_every_stage(data_dir, pbso4_reference):
    """GSAS-II's staged PbSO4 recipe, stage by stage (GSAS-II's starting size 1 μm and microstrain 1000
    are X = 1.8 λ/π and Y = 18/π centidegrees): each stage's Rwp within 0.2 % of GSAS-II's."""
    d = data_dir / "pbso4"
    lam = 1.5405
    inst = read_instrument(d / "INST_XRY.PRM").with_changes(x=1.8 * lam / np.pi, y=0.018 * 1000 / np.pi)
    strategy = Strategy.from_dict(
        [
            {
                "refine": ["background", "scale"],
                "background": {"type": "chebyshev", "terms": 3},
                "max_cycles": 8,
            },
            {"refine": ["cell"], "max_cycles": 8},
            {"refine": ["X", "Y"], "max_cycles": 8},
            {"refine": ["displacement", "atoms_xyz", "atoms_uiso"], "max_cycles": 8},
            {"refine": ["U", "V", "W"], "range": [16.0, 158.4], "max_cycles": 8},
        ]
    )
    res = Refinement(read_pattern(d / "PBSO4.XRA"), [load_phase(d / "PbSO4-Wyckoff.cif")], inst).run(strategy)
    assert res.ok
    gsas2 = [
        pbso4_reference[k]["PWDR PBSO4.XRA Bank 1"]
        for k in (
            "step4_bkg_scale",
            "step5_cell",
            "step7_size_strain",
            "step8_shift_atomsXU",
            "step9_limits_UVW",
        )
    ]
    np.testing.assert_allclose([s.rwp for s in res.stages], gsas2, atol=0.2)
