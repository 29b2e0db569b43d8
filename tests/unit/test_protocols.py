"""Every device class satisfies the protocols the plans rely on, and only those it can honour."""

from __future__ import annotations

import numpy as np
import pytest
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices

from xbeam_bluesky.devices.epics import (
    EpicsAxis,
    EpicsMonochromator,
    EpicsPowderDetector,
    EpicsSampleStage,
    EpicsScmosCamera,
    EpicsShutter,
)
from xbeam_bluesky.devices.sim import (
    SimAxis,
    SimCamera,
    SimMonochromator,
    SimPowderDiffractometer,
    SimSampleStage,
    SimShutter,
    make_sim_beamline,
)
from xbeam_bluesky.plans.xanes_imaging import max_unsaturated_exposure_s
from xbeam_bluesky.protocols import (
    ExposureLimited,
    FrameTimed,
    HasExposure,
    HasLimits,
    HasPosition,
    ImagingCamera,
    LimitedAxis,
    ModelledCamera,
    Named,
    NoiseReporting,
    PowderDetector,
    SampleStage,
    ScanningMonochromator,
    Shutter,
    TimedAxis,
    TimedStage,
    XYStage,
    name_of,
)

ALL = {
    ExposureLimited, FrameTimed, HasExposure, HasLimits, HasPosition, ImagingCamera, LimitedAxis, ModelledCamera,
    Named, NoiseReporting, PowderDetector, SampleStage, ScanningMonochromator, Shutter, TimedAxis, TimedStage,
    XYStage,
}  # fmt: skip

#: What each device class must satisfy; every other protocol of ALL it must not (so a protocol that matches
#: anything, or a device that silently loses a capability, fails here).
EXPECTED = {
    SimCamera: {
        Named,
        HasExposure,
        FrameTimed,
        ImagingCamera,
        NoiseReporting,
        ExposureLimited,
        ModelledCamera,
    },
    EpicsScmosCamera: {Named, HasExposure, FrameTimed, ImagingCamera},
    SimAxis: {Named, HasLimits, LimitedAxis, HasPosition, TimedAxis},
    SimMonochromator: {Named, HasLimits, LimitedAxis, HasPosition, TimedAxis, ScanningMonochromator},
    EpicsAxis: {Named, HasLimits, LimitedAxis},
    EpicsMonochromator: {Named, HasLimits, LimitedAxis},
    SimSampleStage: {Named, XYStage, SampleStage, TimedStage},
    EpicsSampleStage: {Named, XYStage, SampleStage},
    SimShutter: {Named, Shutter},
    EpicsShutter: {Named, Shutter},
    SimPowderDiffractometer: {Named, HasExposure, PowderDetector},
    EpicsPowderDetector: {Named, HasExposure, PowderDetector},
}


@pytest.fixture
def sim(RE, tmp_path):
    return make_sim_beamline(tmp_path, frame_shape=(12, 16), time_scale=0.0)


@pytest.fixture
def epics(RE, tmp_path):
    with init_devices(mock=True):
        camera = EpicsScmosCamera(
            "BL:CAM:", StaticPathProvider(UUIDFilenameProvider(), tmp_path), shape=(6, 10), readout_time=0.002,
            pixel_size_um=0.65,
        )  # fmt: skip
        mono = EpicsMonochromator("BL:DCM:Energy", limits_eV=(7000.0, 7300.0))
        axis = EpicsAxis("BL:AX", (-1.0, 2.0), "mm")
        stage = EpicsSampleStage("BL:SMPL:X", "BL:SMPL:Y", out_position_mm=(12.0, 0.0))
        shutter = EpicsShutter("BL:SHTR:CMD")
        powder = EpicsPowderDetector(
            "BL:MYTHEN:", n_channels=100, two_theta_start_deg=10.0, two_theta_step_deg=0.1
        )
    return {
        "camera": camera,
        "mono": mono,
        "axis": axis,
        "stage": stage,
        "shutter": shutter,
        "powder": powder,
    }


def _devices(sim, epics) -> list:
    return [sim.camera, sim.mono, sim.stage.x, sim.stage, sim.shutter, sim.xrd, *epics.values()]


def test_each_device_class_satisfies_exactly_its_protocols(sim, epics) -> None:
    devices = _devices(sim, epics)
    assert {type(d) for d in devices} == set(EXPECTED)
    for device in devices:
        satisfied = {p for p in ALL if isinstance(device, p)}
        assert satisfied == EXPECTED[type(device)], type(device).__name__


def test_stage_axes_are_limited_axes(sim, epics) -> None:
    for stage in (sim.stage, epics["stage"]):
        for axis in (stage.x, stage.y):
            assert isinstance(axis, LimitedAxis)
            low, high = axis.limits
            assert low < high and axis.units == "mm"
            with pytest.raises(ValueError, match="outside the limits"):
                axis.check_position(high + 1.0)


def test_members_report_the_construction_values(sim, epics) -> None:
    assert sim.camera.frame_shape == (12, 16) and epics["camera"].frame_shape == (6, 10)
    assert epics["camera"].pixel_um == 0.65
    assert epics["camera"].frame_time_s(0.1) == pytest.approx(0.102)
    assert epics["stage"].out_position_mm == (12.0, 0.0)
    assert epics["mono"].limits == (7000.0, 7300.0) and epics["mono"].units == "eV"
    assert sim.mono.speed_eV_s == sim.config.mono_speed_eV_s and sim.mono.settle_s == sim.config.mono_settle_s
    assert sim.stage.move_time_s((0.0, 0.0), (0.0, 0.0)) == 0.0


def test_max_unsaturated_exposure_from_the_detector_model(sim, epics) -> None:
    """Brightest open-beam pixel: dark + gain · flux · t · max(flat) = 0.9 · 65535 ADU."""
    model = sim.camera.model
    expected = (0.9 * 65535 - model.dark_offset) / (
        model.gain * model.photon_flux * float(model.flat_field().max())
    )
    assert sim.camera.max_unsaturated_exposure_s() == pytest.approx(expected, rel=1e-5)
    assert max_unsaturated_exposure_s(sim.camera, margin=0.5) == pytest.approx(
        (0.5 * 65535 - model.dark_offset)
        / (model.gain * model.photon_flux * float(model.flat_field().max())),
        rel=1e-5,
    )
    assert max_unsaturated_exposure_s(epics["camera"]) is None  # an EPICS camera cannot tell: nothing checked
    frame = model.expected_frame(None, expected)
    assert float(frame.max()) == pytest.approx(0.9 * 65535, rel=1e-5)
    assert np.all(frame <= 0.9 * 65535 * (1 + 1e-5))


def test_name_of_falls_back_to_the_object() -> None:
    class Device:
        name = "det"

    assert name_of(Device()) == "det"
    assert name_of("no_such_camera") == "no_such_camera"
    assert name_of(3) == 3
