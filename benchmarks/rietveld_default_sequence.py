"""The default refinement against the fixed default stages on the three lab datasets (one JSON line).

For PbSO4 (whole pattern and GSAS-II's 16–158.4°), fluorapatite and LaB6 (20–125°): Rwp of
``Refinement.run(default_strategy())`` (the fixed stages, the peer) and of ``Refinement.run()`` (the default
refinement: background grown by Hamilton's test, preferred orientation when the residual asks), the stages the
default added, and the median CPU and wall time of each on PbSO4 (whole pattern), measured in the same process.
GSAS-II's Rwp on the same data (tests/data/xrd/README.md) is quoted for reference, not re-run.

Run: .venv/bin/python benchmarks/rietveld_default_sequence.py [--repeats N]
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

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "xrd"
GSAS2_RWP = {"PbSO4 16-158.4": 10.28, "fluorapatite": 9.42, "LaB6 20-125": 8.66}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs of each on PbSO4 (median reported)"
    )
    args = parser.parse_args()
    from xbeam_bluesky.rietveld import Refinement, default_strategy, load_phase, read_instrument, read_pattern

    pb = (read_pattern(DATA / "pbso4" / "PBSO4.XRA"), [load_phase(DATA / "pbso4" / "PbSO4-Wyckoff.cif")])
    pb_inst = read_instrument(DATA / "pbso4" / "INST_XRY.PRM")
    problems = {
        "PbSO4 whole": Refinement(*pb, pb_inst),
        "PbSO4 16-158.4": Refinement(*pb, pb_inst, fit_range=(16.0, 158.4)),
        "fluorapatite": Refinement(
            read_pattern(DATA / "fluorapatite" / "FAP.XRA"),
            [load_phase(DATA / "fluorapatite" / "FAP_start.cif")],
            read_instrument(DATA / "fluorapatite" / "INST_XRY.PRM"),
        ),
        "LaB6 20-125": Refinement(
            read_pattern(DATA / "lab6" / "NIST660CBI.gsas"),
            [load_phase(DATA / "lab6" / "LaB6_start.cif")],
            read_instrument(DATA / "lab6" / "CuKa_lab_default.instprm"),
            fit_range=(20.0, 125.0),
        ),
    }
    out: dict[str, object] = {"benchmark": "rietveld_default_sequence"}
    for name, ref in problems.items():
        fixed, default = ref.run(default_strategy()), ref.run()
        out[name] = {
            "rwp_fixed_stages": round(fixed.rwp, 3),
            "rwp_default": round(default.rwp, 3),
            "default_status": default.status,
            "default_last_stages": [s.name for s in default.stages[4:]],
            "background_terms": len(default.background["coefficients"]),
            "rwp_gsas2_reported": GSAS2_RWP.get(name),
        }
    ref = problems["PbSO4 whole"]
    times: dict[str, list[tuple[float, float]]] = {"fixed": [], "default": []}
    for _ in range(args.repeats):
        for key, run in (("fixed", lambda: ref.run(default_strategy())), ("default", ref.run)):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            times[key].append((time.perf_counter() - t0, time.process_time() - c0))
    for key, pairs in times.items():
        out[f"pbso4_{key}_wall_s_median"] = round(statistics.median(p[0] for p in pairs), 3)
        out[f"pbso4_{key}_cpu_s_median"] = round(statistics.median(p[1] for p in pairs), 3)
    out.update(
        peer="the fixed default stages (default_strategy), same process; GSAS-II Rwp quoted",
        target_s=1.0,
        repeats=args.repeats,
        load_average_1min=round(os.getloadavg()[0], 2),
        cpu_count=os.cpu_count(),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
