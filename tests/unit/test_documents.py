"""The start documents the plans write have exactly the keys the schema in ``xbeam_bluesky.documents`` declares."""

from __future__ import annotations

import pytest

from xbeam_bluesky.devices.sim import make_sim_beamline
from xbeam_bluesky.documents import (
    ENERGY_INDEX_KEY,
    EXPOSURE_KEY,
    TILE_INDEX_KEY,
    XANES_IMAGING,
    XRD,
    NoiseRecord,
    TilesRecord,
    XanesDataKeys,
    XanesImagingStart,
    XrdDataKeys,
    XrdStart,
    n_tiles,
    require_purpose,
    start_energies,
    start_tile_positions,
    xanes_data_keys,
    xrd_data_keys,
)
from xbeam_bluesky.plans import frame_order, xanes_imaging, xrd_powder

#: Keys of a start document that bluesky itself defines (event-model schema, RunEngine metadata).
BLUESKY_KEYS = {
    "uid", "time", "plan_name", "plan_type", "plan_args", "detectors", "motors", "num_points", "num_intervals",
    "hints", "scan_id", "versions",
}  # fmt: skip

ENERGIES = [7100.0, 7112.0, 7150.0]
TILES = [[0.0, 0.0], [0.5, 0.0]]


def _keys(typed_dict: type) -> set[str]:
    return set(typed_dict.__required_keys__) | set(typed_dict.__optional_keys__)


def _run(RE, plan) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    token = RE.subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        RE(plan)
    finally:
        RE.unsubscribe(token)
    return docs


@pytest.fixture
def bl(RE, tmp_path):
    return make_sim_beamline(tmp_path, frame_shape=(8, 12), time_scale=0.0)


def test_xanes_imaging_start_document_follows_the_schema(RE, bl) -> None:
    dwell = [0.01, 0.02, 0.01]
    docs = _run(RE, xanes_imaging(bl.camera, bl.mono, bl.stage, ENERGIES, TILES, dwell, shutter=bl.shutter,
                                  n_darks=1, n_flats=1))  # fmt: skip
    start = next(doc for name, doc in docs if name == "start")
    assert set(start) - BLUESKY_KEYS == _keys(XanesImagingStart)
    assert set(start["tiles"]) == _keys(TilesRecord)
    assert set(start["data_keys"]) == _keys(XanesDataKeys)
    assert set(start["noise_model"]) == _keys(NoiseRecord)  # a dwell list: i0_counts_per_energy as well
    assert start["purpose"] == XANES_IMAGING
    assert start_energies(start) == ENERGIES and start_tile_positions(start) == TILES and n_tiles(start) == 2
    assert frame_order(start) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    keys = xanes_data_keys(start)
    assert (keys["energy_index"], keys["tile_index"], keys["exposure_s"]) == (
        ENERGY_INDEX_KEY, TILE_INDEX_KEY, EXPOSURE_KEY,
    )  # fmt: skip
    descriptors = [doc for name, doc in docs if name == "descriptor" and doc["name"] != "baseline"]
    assert {d["name"] for d in descriptors} == {"dark", "flat", "primary"}
    for descriptor in descriptors:  # every named event field exists in every stream
        assert set(keys.values()) <= set(descriptor["data_keys"]), descriptor["name"]
    primary = {d["uid"] for d in descriptors if d["name"] == "primary"}
    tags = [(e["data"][ENERGY_INDEX_KEY], e["data"][TILE_INDEX_KEY], e["data"][EXPOSURE_KEY])
            for name, e in docs if name == "event" and e["descriptor"] in primary]  # fmt: skip
    assert tags == [(ie, it, dwell[ie]) for ie, it in frame_order(start)]


def test_xrd_start_document_follows_the_schema(RE, bl) -> None:
    docs = _run(RE, xrd_powder(bl.xrd, 0.5, ["PbSO4-Wyckoff.cif"], sample="anglesite"))
    start = next(doc for name, doc in docs if name == "start")
    assert set(start) - BLUESKY_KEYS == _keys(XrdStart)
    assert set(start["data_keys"]) == _keys(XrdDataKeys)
    keys = xrd_data_keys(start)
    descriptor = next(doc for name, doc in docs if name == "descriptor")
    assert set(keys.values()) <= set(descriptor["data_keys"])
    assert start["purpose"] == XRD


def test_readers_name_a_run_of_the_wrong_purpose() -> None:
    start = {"uid": "abc123", "purpose": XRD, "energies": [7100.0], "tiles": {"positions": [[0, 0]]}}
    for reader in (start_energies, start_tile_positions, xanes_data_keys, frame_order):
        with pytest.raises(ValueError, match="run abc123 has purpose 'xrd', not 'xanes_imaging'"):
            reader(start)
    with pytest.raises(ValueError, match="run None has purpose None, not 'xrd'"):
        xrd_data_keys({})
    require_purpose(start, XRD)  # the right purpose passes


def test_json_safe_keeps_numbers_and_names_objects() -> None:
    import math

    import numpy as np

    from xbeam_bluesky.documents import json_safe

    class Device:
        name = "camera"

    value = {1: (np.int64(3), np.float64(0.5)), "inf": math.inf, "dev": Device(), "obj": object, "none": None}
    safe = json_safe(value)
    assert safe["1"] == [3, 0.5] and type(safe["1"][0]) is int and type(safe["1"][1]) is float
    assert safe["inf"] == math.inf and safe["dev"] == "'camera'" and safe["obj"] == repr(object)
    assert safe["none"] is None
    assert json_safe([math.nan, -math.inf, 1.0], nonfinite_to_none=True) == [None, None, 1.0]
