"""Shared fixtures for the Rietveld engine tests (real data copied into tests/data/xrd)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "xrd"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def pbso4_reference() -> dict:
    return json.loads((DATA / "pbso4" / "gsas2_reference_xray_only.json").read_text())


@pytest.fixture(scope="session")
def pbso4_phase():
    from xbeam_bluesky.rietveld import load_phase

    return load_phase(DATA / "pbso4" / "PbSO4-Wyckoff.cif")
