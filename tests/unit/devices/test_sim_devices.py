"""Simulated motion and camera in a RunEngine: limits before motion, timing model, frames, faults."""

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import FailedStatus

from xbeam_bluesky.devices.sim import DetectorTimeoutError, SimMonochromator


def test_move_time_model_is_speed_plus_settle(RE) -> None:
    mono = SimMonochromator("mono", speed_eV_s=20.0, settle_s=0.1)
    assert mono.move_time_s(7100.0, 7150.0) == pytest.approx(50.0 / 20.0 + 0.1)
    assert mono.move_time_s(7150.0, 7100.0) == pytest.approx(2.6)
    assert mono.move_time_s(7100.0, 7100.0) == 0.0
    assert mono.speed_eV_s == 20.0 and mono.settle_s == 0.1


def test_out_of_limit_move_raises_before_motion(RE, sim_beamline) -> None:
    mono = sim_beamline.mono
    low, high = mono.limits
    with pytest.raises(FailedStatus) as info:
        RE(bps.mv(mono, 30000.0))
    assert isinstance(info.value.__cause__, ValueError)
    assert f"requested 30000.0 eV is outside the limits [{low}, {high}] eV" in str(info.value.__cause__)
    assert call_in_bluesky_event_loop(mono.readback.get_value()) == 7112.0
    RE(bps.mv(mono, 7150.0))
    assert mono.position == 7150.0
    assert call_in_bluesky_event_loop(mono.readback.get_value()) == 7150.0


def test_stage_axes_move_and_report(RE, sim_beamline) -> None:
    stage = sim_beamline.stage
    RE(bps.mv(stage.x, 1.5, stage.y, -0.5))
    reading = call_in_bluesky_event_loop(stage.read())
    assert reading["stage-x"]["value"] == 1.5 and reading["stage-y"]["value"] == -0.5
    with pytest.raises(FailedStatus) as info:
        RE(bps.mv(stage.y, 100.0))
    assert "stage-y: requested 100.0 mm is outside the limits" in str(info.value.__cause__)


def test_camera_frame_matches_the_phantom_through_beer_lambert(RE, sim_beamline) -> None:
    camera, mono, stage = sim_beamline.camera, sim_beamline.mono, sim_beamline.stage
    RE(bps.mv(mono, 7130.0, stage.x, 0.2, stage.y, 0.1))
    mu = camera.absorbance(7130.0, (0.2, 0.1))
    expected = sim_beamline.phantom.absorbance([7130.0], (0.2, 0.1), camera.frame_shape, camera.pixel_um)[0]
    np.testing.assert_allclose(mu, expected, rtol=1e-6)
    rng = np.random.default_rng(0)
    frames = np.stack([camera.model.sample_frame(mu, 0.1, rng) for _ in range(50)]).astype(float)
    flat = camera.model.expected_frame(None, 0.1) - camera.model.dark_offset
    transmission = (frames.mean(axis=0) - camera.model.dark_offset) / flat
    np.testing.assert_allclose(-np.log(transmission), mu, atol=0.05)


def test_injected_timeout_fails_the_trigger(RE, sim_beamline) -> None:
    camera = sim_beamline.camera
    camera.frame_timeout_s = 0.2
    camera.inject_timeout(after_frames=1)

    def triggers():
        yield from bps.trigger(camera, wait=True)
        yield from bps.trigger(camera, wait=True)

    def plan():
        return (yield from bpp.stage_wrapper(triggers(), [camera]))

    with pytest.raises(FailedStatus) as info:
        RE(plan())
    assert isinstance(info.value.__cause__, DetectorTimeoutError)
    assert "no frame within 0.20 s" in str(info.value.__cause__)
    assert camera.frames_total == 1
    camera.inject_timeout(None)
    RE(plan())
    assert camera.frames_total == 3


def test_shutter_states(RE, sim_beamline) -> None:
    shutter = sim_beamline.shutter
    RE(bps.mv(shutter, "closed"))
    assert not call_in_bluesky_event_loop(shutter.is_open())
    RE(bps.mv(shutter, "open"))
    assert call_in_bluesky_event_loop(shutter.is_open())
