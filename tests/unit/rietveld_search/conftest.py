"""Real powder data (tests/data/xrd) and small helpers for the strategy-search tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from xbeam_bluesky.rietveld import Refinement, load_phase, read_instrument, read_pattern

DATA = Path(__file__).resolve().parents[2] / "data" / "xrd"

#: (pattern, CIF, instrument, final 2θ range) as in tests/data/xrd/README.md (GSAS-II's limits for PbSO4).
DATASETS = {
    "pbso4": ("pbso4/PBSO4.XRA", "pbso4/PbSO4-Wyckoff.cif", "pbso4/INST_XRY.PRM", (16.0, 158.4)),
    "fluorapatite": ("fluorapatite/FAP.XRA", "fluorapatite/FAP_start.cif", "fluorapatite/INST_XRY.PRM", None),
}


def make_refinement(name: str) -> Refinement:
    pattern, cif, inst, fit_range = DATASETS[name]
    return Refinement(
        read_pattern(DATA / pattern),
        [load_phase(DATA / cif)],
        read_instrument(DATA / inst),
        fit_range=fit_range,
    )


@pytest.fixture(scope="session")
def pbso4_refinement() -> Refinement:
    return make_refinement("pbso4")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
