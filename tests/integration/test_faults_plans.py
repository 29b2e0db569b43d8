"""Issue 17: user metadata never overwrites a plan's start-document keys; wrong devices and bad CIFs are refused
before anything moves."""

from __future__ import annotations

import re

import pytest

from xbeam_bluesky.bundled import CIF_DIR
from xbeam_bluesky.errors import CifError, PlanArgumentError, XbeamInputError
from xbeam_bluesky.plans import xanes_imaging, xrd_powder
from xbeam_bluesky.rietveld import load_phase


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


@pytest.mark.parametrize("detector", ["camera", "mono", "stage"])
def test_xrd_powder_refuses_a_device_that_is_no_powder_detector(RE, sim_beamline, detector) -> None:
    messages = []
    RE.msg_hook = messages.append
    with pytest.raises(PlanArgumentError, match=rf"detector = '{detector}' .* is not a powder detector"):
        RE(xrd_powder(getattr(sim_beamline, detector), 0.1, ["PbSO4-Wyckoff.cif"]))
    assert not messages  # refused at the plan's first step: nothing staged, moved or opened


def test_xrd_powder_reads_its_cifs_before_the_measurement(RE, sim_beamline, tmp_path) -> None:
    """A CIF the Rietveld reader refuses (occupancy 2) is refused by the plan, before the first message."""
    good = (CIF_DIR / "PbSO4-Wyckoff.cif").read_text()
    bad = tmp_path / "bad.cif"
    bad.write_text(re.sub(r"(?m)^(Pb\s+Pb\S*\s+\S+\s+\S+\s+\S+\s+)\S+", r"\g<1>2.0", good, count=1))
    with pytest.raises(CifError) as bad_direct:  # the reader's own verdict on the file
        load_phase(bad)
    messages = []
    RE.msg_hook = messages.append
    with pytest.raises(CifError) as refused:
        RE(xrd_powder(sim_beamline.xrd, 0.1, ["PbSO4-Wyckoff.cif", str(bad)]))
    assert str(refused.value) == str(bad_direct.value) and str(bad) in str(refused.value)
    assert not messages
