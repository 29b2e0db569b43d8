"""Issue 17, data lost 4: user metadata never overwrites the start-document keys a plan owns."""

from __future__ import annotations

import pytest

from xbeam_bluesky.errors import XbeamInputError
from xbeam_bluesky.plans import xanes_imaging, xrd_powder


@pytest.mark.parametrize("key", ["purpose", "energies", "tiles", "data_keys"])
def test_xanes_imaging_refuses_md_over_its_keys(RE, sim_beamline, key) -> None:
    bl = sim_beamline
    messages = []
    RE.msg_hook = messages.append
    plan = xanes_imaging(bl.camera, bl.mono, bl.stage, [7100.0, 7112.0], [[0.0, 0.0]], 0.05, n_darks=0,
                         md={key: "mine", "operator": "me"})  # fmt: skip
    with pytest.raises(XbeamInputError, match=rf"md sets \['{key}'\], which xanes_imaging writes itself"):
        RE(plan)
    assert not [m for m in messages if m.command in ("set", "open_run")]


def test_xrd_powder_refuses_md_over_its_keys_and_keeps_others(RE, sim_beamline) -> None:
    with pytest.raises(XbeamInputError, match=r"\['phases', 'purpose'\]"):
        RE(xrd_powder(sim_beamline.xrd, 0.1, ["PbSO4-Wyckoff.cif"], md={"purpose": "x", "phases": []}))
    docs = []
    RE(
        xrd_powder(sim_beamline.xrd, 0.1, ["PbSO4-Wyckoff.cif"], md={"operator": "me"}),
        lambda n, d: docs.append((n, d)),
    )
    start = docs[0][1]
    assert (
        start["purpose"] == "xrd" and start["operator"] == "me" and start["phases"] == ["PbSO4-Wyckoff.cif"]
    )


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        (("xrd", "mono", "stage", "shutter"), "camera = xrd"),
        (("mono", "mono", "stage", "shutter"), "camera = mono"),
        (("camera", "stage", "stage", "shutter"), "mono = stage"),
        (("camera", "mono", "mono", "shutter"), "stage = mono"),
        (("camera", "mono", "stage", "mono"), "as both mono and shutter"),
    ],
)
def test_wrong_device_in_a_slot_refused_before_anything_moves(RE, sim_beamline, slots, message) -> None:
    bl = sim_beamline
    camera, mono, stage, shutter = (getattr(bl, s) for s in slots)
    messages = []
    RE.msg_hook = messages.append
    with pytest.raises(XbeamInputError, match=message):
        RE(
            xanes_imaging(
                camera, mono, stage, [7100.0, 7112.0], [[0.0, 0.0]], 0.05, shutter=shutter, n_darks=1
            )
        )
    assert not [m for m in messages if m.command in ("set", "open_run", "trigger")]
