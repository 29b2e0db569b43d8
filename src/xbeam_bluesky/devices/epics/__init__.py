"""Real beamline hardware as ophyd-async EPICS devices, configured by PV prefixes in a TOML file.

The classes follow the simulated devices' interface (``limits``/``check_position`` on movables,
``frame_shape``/``pixel_um``/``exposure`` on the camera, ``"open"``/``"closed"`` on the shutter), so the same plans
run on either. Connected with ``init_devices(mock=True)`` they behave like an IOC: motors move instantly, the
shutter status follows its command, and the camera writes frames through its HDF5 plugin
(:class:`ScmosCameraMock`), and the powder detector posts a Rietveld-rendered pattern
(:class:`PowderDetectorMock`).
"""

from ._beamline import make_epics_devices
from ._camera import (
    CalibratedScmosCamera,
    CameraFaultError,
    CameraNoise,
    EpicsScmosCamera,
    EpicsShutter,
    ScmosCameraMock,
    ShutterState,
    mock_frame,
)
from ._config import (
    CameraConfig,
    EpicsBeamlineConfig,
    MonoConfig,
    ShutterConfig,
    StageConfig,
    XrdConfig,
    load_epics_config,
)
from ._diffractometer import EpicsPowderDetector, PowderDetectorError, PowderDetectorMock
from ._motion import EpicsAxis, EpicsMonochromator, EpicsSampleStage, FaultCheckingMotorLogic, MotorFaultError

__all__ = [
    "CalibratedScmosCamera",
    "CameraConfig",
    "CameraFaultError",
    "CameraNoise",
    "EpicsAxis",
    "EpicsBeamlineConfig",
    "EpicsMonochromator",
    "EpicsPowderDetector",
    "EpicsSampleStage",
    "EpicsScmosCamera",
    "EpicsShutter",
    "FaultCheckingMotorLogic",
    "MonoConfig",
    "MotorFaultError",
    "PowderDetectorError",
    "PowderDetectorMock",
    "ScmosCameraMock",
    "ShutterConfig",
    "ShutterState",
    "StageConfig",
    "XrdConfig",
    "load_epics_config",
    "make_epics_devices",
    "mock_frame",
]
