"""Speed of sequential (warm-started) refinement of a 20-pattern synchrotron series (one JSON line).

The series is simulated from the 7 K CuCr2O4 + CuO model refined on the APS 11-BM pattern
(tests/data/xrd/cucr2o4, the GSAS-II recipe strategy): the spinel's cell follows an orthorhombic →
tetragonal curve (b − c → 0 at 120 K, thermal expansion above), Poisson noise on the 11-BM counts. Each
pattern is refined with the same strategy, starting from the previous pattern's result
(:func:`~xbeam_bluesky.rietveld.sequential.refine_series`); the first (cold) pattern is reported
separately. One process, BLAS pinned to 1 thread (the series is serial: each pattern starts from the
last); the machine has 2 cores, shared. GSAS-II is the named peer but is not installable here: its
per-pattern times on a machine of the same kind (tests/data/xrd/README.md) are quoted, not re-measured.

Run: flock /tmp/xbeam-heavy.lock .venv/bin/python benchmarks/rietveld_sequential.py [--patterns 20]
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

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "xrd" / "cucr2o4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, default=20, help="patterns in the series (default 20)")
    args = parser.parse_args()

    from xbeam_bluesky.rietveld import Refinement, Strategy, load_phase, read_instrument, read_pattern
    from xbeam_bluesky.rietveld.lattice import cell_to_a
    from xbeam_bluesky.rietveld.pattern_io import Pattern
    from xbeam_bluesky.rietveld.sequential import refine_series

    real = read_pattern(DATA / "OH_00.fxye")
    phases = [load_phase(DATA / "CuCr2O4.cif"), load_phase(DATA / "CuO.cif")]
    inst = read_instrument(DATA / "OH_00.prm")
    strategy = Strategy.from_json(DATA / "gsas2_recipe_strategy.json")
    fit_range = (4.5, float(real.two_theta[-1]))
    base = Refinement(real, phases, inst, fit_range=fit_range).run(strategy)
    calc, mask = Refinement(real, phases, inst, fit_range=fit_range).calculator(fit_range)
    x = real.two_theta[mask]

    temps = np.linspace(7.0, 290.0, args.patterns)
    a0, b0, c0 = (base.phases[0]["lattice"][k] for k in "abc")
    split0, mean0 = b0 - c0, (b0 + c0) / 2
    rng = np.random.default_rng(20)
    patterns, truth_b, truth_c = [], [], []
    for t in temps:
        st = base.state.copy()
        split = split0 * np.sqrt(max(1.0 - t / 120.0, 0.0))
        mean = mean0 * (1 + 1.5e-6 * (t - 7.0))
        cell_a = a0 * (1 + 2.5e-6 * (t - 7.0))
        ph = phases[0]
        cell = np.array([cell_a, mean + split / 2, mean - split / 2, 90, 90, 90])
        st.phases[0].a_free = np.linalg.lstsq(ph.lattice_matrix, cell_to_a(cell), rcond=None)[0]
        calc.update_reflections(st)
        y = rng.poisson(np.maximum(calc.evaluate(st).y, 0.0)).astype(float)
        patterns.append(Pattern(x, y, np.sqrt(np.maximum(y, 1.0)), f"simulated {t:.0f} K"))
        truth_b.append(cell[1])
        truth_c.append(cell[2])

    t0 = time.perf_counter()
    seq = refine_series(patterns, phases, inst, values=temps, strategy=strategy, fit_range=fit_range)
    total = time.perf_counter() - t0
    warm = seq.wall_s[1:]
    table = seq.table()["phases"][phases[0].name]
    z_b = (np.array(table["b"]) - truth_b) / np.array(table["b_esd"])
    z_c = (np.array(table["c"]) - truth_c) / np.array(table["c_esd"])
    per_pattern = statistics.median(warm)
    print(
        json.dumps(
            {
                "benchmark": "rietveld_sequential",
                "dataset": f"{args.patterns} patterns simulated from the 7 K CuCr2O4+CuO 11-BM model "
                f"({len(x)} points, 4.5-26.1 deg), orthorhombic->tetragonal at 120 K, Poisson noise",
                "strategy": "tests/data/xrd/cucr2o4/gsas2_recipe_strategy.json (5 stages)",
                "first_pattern_cold_s": round(seq.wall_s[0], 3),
                "warm_s_per_pattern_median": round(per_pattern, 3),
                "warm_s_per_pattern_min": round(min(warm), 3),
                "warm_s_per_pattern_max": round(max(warm), 3),
                "series_total_s": round(total, 2),
                "patterns_per_hour_warm": round(3600.0 / per_pattern),
                "restarted": sum(bool(w) for w in seq.restarted),
                "all_ok": all(r.ok for r in seq.results),
                "rwp_range": [round(min(table_rwp := seq.table()["rwp"]), 2), round(max(table_rwp), 2)],
                "b_c_recovered_max_abs_z": round(float(max(np.abs(z_b).max(), np.abs(z_c).max())), 2),
                "threads": 1,
                "cpu_count": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "target_s_per_pattern": 1.0,
                "peer": "GSAS-II (git 013259a0), not runnable here: published numbers from tests/data/xrd/README.md",
                "peer_gsas2_reported_s_per_pattern_last_pass": [0.3, 1.8],
                "peer_gsas2_reported_note": "17 real CuCr2O4 patterns 7-289 K, 69 s in three sequential passes",
            }
        )
    )


if __name__ == "__main__":
    main()
