"""areaDetector record groups for the soft IOCs: the ADBase driver (``cam1:``) and NDFileHDF5 (``HDF1:``).

Only the records ophyd-async's ``ADBaseIO`` and ``NDFileHDF5IO`` connect to are served, with the types and
enum choices of ADCore's templates (``ADBase.template``, ``NDFile.template``, ``NDFileHDF5.template``).
Settings with a ``_RBV`` readback mirror the setting when it is written.
"""

from __future__ import annotations

from typing import Any

from caproto.server import PVGroup, pvproperty

from xbeam_bluesky.testing.iocs._server import bool_pv, enum_pv, long_string_pv

__all__ = ["DATA_TYPES", "DETECTOR_STATES", "ADDriverGroup", "HDF5PluginGroup", "mirror_rbv"]

#: ``DetectorState_RBV`` choices (ADDriver.h).
DETECTOR_STATES = (
    "Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error", "Waiting", "Initializing",
    "Disconnected", "Aborted",
)  # fmt: skip
#: ``DataType`` choices (NDArray.h).
DATA_TYPES = ("Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float32", "Float64")
COLOR_MODES = ("Mono", "Bayer", "RGB1", "RGB2", "RGB3", "YUV444", "YUV422", "YUV421")


async def mirror_rbv(group: PVGroup, setting: str, value: Any) -> None:
    """Write ``value`` to the ``{setting}_rbv`` readback of ``group`` (after a put to the setting)."""
    await getattr(group, setting + "_rbv").write(value)


def _setting(name: str, value: Any, **kwargs: Any) -> tuple[pvproperty, pvproperty]:
    """A setting and its ``_RBV`` readback (the putter mirroring them is added by the group)."""
    return (
        pvproperty(name=name, value=value, **kwargs),
        pvproperty(name=name + "_RBV", value=value, read_only=True, **kwargs),
    )


class _NDArrayBase(PVGroup):
    """NDArrayBase.template records common to drivers and plugins."""

    port_name = pvproperty(name="PortName_RBV", value="SIM", read_only=True)
    unique_id = pvproperty(name="UniqueId_RBV", value=0, read_only=True)
    nd_attributes_file = long_string_pv("NDAttributesFile")
    array_size_x = pvproperty(name="ArraySizeX_RBV", value=0, read_only=True)
    array_size_y = pvproperty(name="ArraySizeY_RBV", value=0, read_only=True)
    array_size_z = pvproperty(name="ArraySizeZ_RBV", value=0, read_only=True)
    array_size0 = pvproperty(name="ArraySize0_RBV", value=0, read_only=True)
    array_size1 = pvproperty(name="ArraySize1_RBV", value=0, read_only=True)
    array_size2 = pvproperty(name="ArraySize2_RBV", value=0, read_only=True)
    color_mode = enum_pv("ColorMode_RBV", COLOR_MODES, read_only=True)
    data_type = enum_pv("DataType_RBV", DATA_TYPES, "UInt16", read_only=True)
    array_counter, array_counter_rbv = _setting("ArrayCounter", 0)
    ad_core_version = pvproperty(name="ADCoreVersion_RBV", value="3.12.1", read_only=True)
    driver_version = pvproperty(name="DriverVersion_RBV", value="xbeam-soft-1", read_only=True)

    @array_counter.putter
    async def array_counter(self, instance: Any, value: int) -> None:
        await mirror_rbv(self, "array_counter", value)


class ADDriverGroup(_NDArrayBase):
    """ADBase.template driver records (``cam1:``); the acquisition itself is the owner's ``Acquire`` putter."""

    acquire_time, acquire_time_rbv = _setting("AcquireTime", 0.1, precision=4)
    acquire_period, acquire_period_rbv = _setting("AcquirePeriod", 0.11, precision=4)
    num_images, num_images_rbv = _setting("NumImages", 1)
    image_mode = enum_pv("ImageMode", ("Single", "Multiple", "Continuous"), "Multiple")
    image_mode_rbv = enum_pv(
        "ImageMode_RBV", ("Single", "Multiple", "Continuous"), "Multiple", read_only=True
    )
    detector_state = enum_pv("DetectorState_RBV", DETECTOR_STATES, read_only=True)
    acquire = bool_pv("Acquire", choices=("Done", "Acquire"))
    acquire_rbv = bool_pv("Acquire_RBV", choices=("Done", "Acquire"), read_only=True)
    wait_for_plugins = bool_pv("WaitForPlugins")
    manufacturer = pvproperty(name="Manufacturer_RBV", value="xbeam", read_only=True)
    model = pvproperty(name="Model_RBV", value="soft sCMOS", read_only=True)
    serial_number = pvproperty(name="SerialNumber_RBV", value="0001", read_only=True)
    sdk_version = pvproperty(name="SDKVersion_RBV", value="caproto", read_only=True)
    firmware_version = pvproperty(name="FirmwareVersion_RBV", value="soft-1.0", read_only=True)
    status_message = long_string_pv("StatusMessage_RBV", read_only=True)

    @acquire_time.putter
    async def acquire_time(self, instance: Any, value: float) -> None:
        await mirror_rbv(self, "acquire_time", value)

    @acquire_period.putter
    async def acquire_period(self, instance: Any, value: float) -> None:
        await mirror_rbv(self, "acquire_period", value)

    @num_images.putter
    async def num_images(self, instance: Any, value: int) -> None:
        await mirror_rbv(self, "num_images", value)

    @image_mode.putter
    async def image_mode(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "image_mode", value)


class HDF5PluginGroup(_NDArrayBase):
    """NDPluginBase + NDFile + NDFileHDF5 records (``HDF1:``); capturing is the owner's ``Capture`` putter."""

    nd_array_port, nd_array_port_rbv = _setting("NDArrayPort", "SIM")
    enable_callbacks = enum_pv("EnableCallbacks", ("Disable", "Enable"))
    enable_callbacks_rbv = enum_pv("EnableCallbacks_RBV", ("Disable", "Enable"), read_only=True)
    nd_array_address, nd_array_address_rbv = _setting("NDArrayAddress", 0)
    queue_size, queue_size_rbv = _setting("QueueSize", 20)
    file_path = long_string_pv("FilePath")
    file_path_rbv = long_string_pv("FilePath_RBV", read_only=True)
    file_name = long_string_pv("FileName")
    file_name_rbv = long_string_pv("FileName_RBV", read_only=True)
    file_path_exists = bool_pv("FilePathExists_RBV", read_only=True)
    file_template = long_string_pv("FileTemplate", "%s%s_%3.3d.h5")
    file_template_rbv = long_string_pv("FileTemplate_RBV", "%s%s_%3.3d.h5", read_only=True)
    full_file_name = long_string_pv("FullFileName_RBV", read_only=True)
    file_number = pvproperty(name="FileNumber", value=0)
    auto_increment = bool_pv("AutoIncrement")
    file_write_mode = enum_pv("FileWriteMode", ("Single", "Capture", "Stream"))
    file_write_mode_rbv = enum_pv("FileWriteMode_RBV", ("Single", "Capture", "Stream"), read_only=True)
    num_capture, num_capture_rbv = _setting("NumCapture", 1)
    num_captured = pvproperty(name="NumCaptured_RBV", value=0, read_only=True)
    capture = bool_pv("Capture", choices=("Done", "Capture"))
    capture_rbv = bool_pv("Capture_RBV", choices=("Done", "Capture"), read_only=True)
    write_file = bool_pv("WriteFile", choices=("Done", "Write"))
    write_file_rbv = bool_pv("WriteFile_RBV", choices=("Done", "Write"), read_only=True)
    write_status = enum_pv("WriteStatus", ("Write OK", "Write error"), read_only=True)
    write_message = long_string_pv("WriteMessage", read_only=True)
    file_array_size0 = pvproperty(name="ArraySize0", value=0, read_only=True)
    file_array_size1 = pvproperty(name="ArraySize1", value=0, read_only=True)
    create_directory = pvproperty(name="CreateDirectory", value=0)
    position_mode = bool_pv("PositionMode")
    position_mode_rbv = bool_pv("PositionMode_RBV", read_only=True)
    compression = enum_pv("Compression", ("None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG"))
    compression_rbv = enum_pv(
        "Compression_RBV", ("None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG"), read_only=True
    )
    num_extra_dims, num_extra_dims_rbv = _setting("NumExtraDims", 0)
    swmr_mode = bool_pv("SWMRMode", choices=("Off", "On"))
    swmr_mode_rbv = bool_pv("SWMRMode_RBV", choices=("Off", "On"), read_only=True)
    flush_now = bool_pv("FlushNow")
    xml_file_name = long_string_pv("XMLFileName")
    xml_file_name_rbv = long_string_pv("XMLFileName_RBV", read_only=True)
    num_frames_chunks, num_frames_chunks_rbv = _setting("NumFramesChunks", 0)
    chunk_size_auto = bool_pv("ChunkSizeAuto")
    chunk_size_auto_rbv = bool_pv("ChunkSizeAuto_RBV", read_only=True)
    lazy_open = bool_pv("LazyOpen")
    lazy_open_rbv = bool_pv("LazyOpen_RBV", read_only=True)
    sim_write_error = long_string_pv(
        "SimWriteError", doc="test only: a non-empty message makes the next frame's write fail with it"
    )

    @nd_array_port.putter
    async def nd_array_port(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "nd_array_port", value)

    @enable_callbacks.putter
    async def enable_callbacks(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "enable_callbacks", value)

    @nd_array_address.putter
    async def nd_array_address(self, instance: Any, value: int) -> None:
        await mirror_rbv(self, "nd_array_address", value)

    @queue_size.putter
    async def queue_size(self, instance: Any, value: int) -> None:
        await mirror_rbv(self, "queue_size", value)

    @file_path.putter
    async def file_path(self, instance: Any, value: str) -> None:
        """Like NDPluginFile: the readback and ``FilePathExists_RBV`` (a writable directory) follow."""
        import os

        await mirror_rbv(self, "file_path", value)
        exists = bool(value) and os.path.isdir(value) and os.access(value, os.W_OK)
        await self.file_path_exists.write("Yes" if exists else "No")

    @file_name.putter
    async def file_name(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "file_name", value)

    @file_template.putter
    async def file_template(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "file_template", value)

    @file_write_mode.putter
    async def file_write_mode(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "file_write_mode", value)

    @num_capture.putter
    async def num_capture(self, instance: Any, value: int) -> None:
        await mirror_rbv(self, "num_capture", value)

    @position_mode.putter
    async def position_mode(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "position_mode", value)

    @compression.putter
    async def compression(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "compression", value)

    @num_extra_dims.putter
    async def num_extra_dims(self, instance: Any, value: int) -> None:
        await mirror_rbv(self, "num_extra_dims", value)

    @swmr_mode.putter
    async def swmr_mode(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "swmr_mode", value)

    @xml_file_name.putter
    async def xml_file_name(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "xml_file_name", value)

    @num_frames_chunks.putter
    async def num_frames_chunks(self, instance: Any, value: int) -> None:
        await mirror_rbv(self, "num_frames_chunks", value)

    @chunk_size_auto.putter
    async def chunk_size_auto(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "chunk_size_auto", value)

    @lazy_open.putter
    async def lazy_open(self, instance: Any, value: str) -> None:
        await mirror_rbv(self, "lazy_open", value)
