"""Speed of the Rietveld engine on the PbSO4 round-robin X-ray data and the 11-BM CuCr2O4 + CuO pattern (one JSON line).

Measures, on one core (BLAS threads pinned to 1): the full default staged refinement of PbSO4
(whole pattern, 10–160° 2θ, 6001 points), one forward pattern evaluation, and two Debye–Scherrer
refinements of CuCr2O4 + CuO at 7 K (APS 11-BM, 4.5–26.1°): the GSAS-II tutorial's recipe as a strategy
file, and the default refinement from the .prm alone (what ``xbeam refine`` runs without --strategy; GSAS-II
2.8 s for its recipe). Wall times depend on the
machine's load (reported); the process CPU time of a refinement is given too. GSAS-II is the named
peer but is not installable here, so its published per-refinement wall times on a machine of the same
kind (tests/data/xrd/README.md) are quoted, not re-measured: field names say so.

Run: .venv/bin/python benchmarks/rietveld_speed.py [--repeats N]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "xrd" / "pbso4"
SYNCH = DATA.parent / "cucr2o4"
#: GSAS-II's refined CuCr2O4 cell at 7 K (Å; tests/data/xrd/README.md)
GSAS2_CUCR2O4_ABC = {"a": 7.71270, "b": 8.54329, "c": 8.53643}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="refinements to time (median reported)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    from xbeam_bluesky.rietveld import Refinement, load_phase, read_instrument, read_pattern

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pattern = read_pattern(DATA / "PBSO4.XRA")
    phase = load_phase(DATA / "PbSO4-Wyckoff.cif")
    instrument = read_instrument(DATA / "INST_XRY.PRM")
    ref = Refinement(pattern, [phase], instrument)
    setup_s = time.perf_counter() - t0

    walls, cpus = [], []
    result = None
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = ref.run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)

    # the opt-in full axial model (default lab geometry, not refined), same default sequence
    axial_ref = Refinement(pattern, [phase], instrument.with_changes(asymmetry="full_axial"))
    axial_walls = []
    for _ in range(max(1, args.repeats // 2)):
        t0 = time.perf_counter()
        axial_result = axial_ref.run()
        axial_walls.append(time.perf_counter() - t0)

    # synchrotron capillary: CuCr2O4 + CuO at 7 K, GSAS-II's recipe (Debye–Scherrer geometry from the .prm)
    from xbeam_bluesky.rietveld import Strategy

    synch = Refinement(
        read_pattern(SYNCH / "OH_00.fxye"),
        [load_phase(SYNCH / "CuCr2O4.cif"), load_phase(SYNCH / "CuO.cif")],
        read_instrument(SYNCH / "OH_00.prm"),
        fit_range=(4.5, 26.096),
    )
    recipe = Strategy.from_json(SYNCH / "gsas2_recipe_strategy.json")
    synch_walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        synch_result = synch.run(recipe)
        synch_walls.append(time.perf_counter() - t0)
    synch_default_walls, synch_default_cpus = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        synch_default = synch.run()
        synch_default_walls.append(time.perf_counter() - t0)
        synch_default_cpus.append(time.process_time() - c0)
    spinel = next(p for p in synch_default.phases if p["name"] == "CuCr2O4")
    cuo = next(p for p in synch_default.phases if p["name"] == "CuO")

    calc, _ = ref.calculator(ref.fit_range)
    state = result.state
    calc.update_reflections(state)
    evals = []
    for _ in range(30):
        t0 = time.perf_counter()
        calc.evaluate(state)
        evals.append(time.perf_counter() - t0)

    print(
        json.dumps(
            {
                "benchmark": "rietveld_speed",
                "dataset": "PbSO4 X-ray (IUCr CPD round robin), whole pattern 10-160 deg",
                "default_refinement_wall_s_median": round(statistics.median(walls), 4),
                "default_refinement_wall_s_min": round(min(walls), 4),
                "default_refinement_wall_s_first": round(walls[0], 4),
                "default_refinement_cpu_s_median": round(statistics.median(cpus), 4),
                "repeats": args.repeats,
                "forward_evaluation_s_median": round(statistics.median(evals), 5),
                "import_s": round(import_s, 3),
                "parse_and_setup_s": round(setup_s, 4),
                "rwp": round(result.rwp, 3),
                "status": result.status,
                "n_points": result.n_points,
                "n_reflections": result.n_reflections,
                "n_params_final": result.n_params,
                "stages": len(result.stages),
                "full_axial_refinement_wall_s_median": round(statistics.median(axial_walls), 4),
                "full_axial_rwp": round(axial_result.rwp, 3),
                "full_axial_status": axial_result.status,
                "cucr2o4_ds_recipe_wall_s_median": round(statistics.median(synch_walls), 4),
                "cucr2o4_ds_rwp": round(synch_result.rwp, 3),
                "cucr2o4_ds_status": synch_result.status,
                "cucr2o4_ds_n_points": synch_result.n_points,
                "cucr2o4_ds_default_wall_s_median": round(statistics.median(synch_default_walls), 3),
                "cucr2o4_ds_default_cpu_s_median": round(statistics.median(synch_default_cpus), 3),
                "cucr2o4_ds_default_rwp": round(synch_default.rwp, 3),
                "cucr2o4_ds_default_status": synch_default.status,
                "cucr2o4_ds_default_cuo_wt_pct": round(100 * cuo["weight_fraction"], 3),
                "cucr2o4_ds_default_abc_minus_gsas2_1e4_A": [
                    round(1e4 * (spinel["lattice"][k] - v), 2) for k, v in GSAS2_CUCR2O4_ABC.items()
                ],
                "peer_gsas2_reported_cucr2o4_s": 2.8,
                "peer_gsas2_reported_cucr2o4_rwp": 13.68,
                "peer_gsas2_reported_cucr2o4_cuo_wt_pct": 1.11,
                "threads": 1,
                "load_average_1min": round(os.getloadavg()[0], 2),
                "cpu_count": os.cpu_count(),
                "target_s": 2.0,
                "peer": "GSAS-II (git 013259a0), not runnable here: published numbers from tests/data/xrd/README.md",
                "peer_gsas2_reported_s": 12.4,
                "peer_gsas2_reported_note": "PbSO4 5 stages x 8 cycles, 2-core machine, incl. 0.8 s import",
                "peer_gsas2_reported_bbo_trial_s": [1.5, 3.5],
                "speedup_vs_peer_reported": round(12.4 / statistics.median(walls), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
