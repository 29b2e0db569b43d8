"""A 1D powder-diffraction strip detector on an areaDetector IOC (e.g. DECTRIS MYTHEN with ADMythen).

The driver's ``Acquire`` busy record takes one exposure; the NDPluginStdArrays plugin publishes the 1D NDArray
as its ``ArrayData`` waveform. The device reads like :class:`~xbeam_bluesky.devices.sim.SimPowderDiffractometer`
(``{name}-two_theta`` in degrees and ``{name}-counts``, both float64 1D arrays) so ``xrd_powder``, tiled and the
automatic Rietveld refinement treat a real pattern exactly as a simulated one.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from bluesky.protocols import Reading
from ophyd_async.core import (
    Array1D,
    AsyncStatus,
    DeviceMock,
    SignalR,
    SignalRW,
    StandardReadable,
    callback_on_mock_put,
    default_mock_class,
    set_mock_value,
    soft_signal_r_and_setter,
)
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.epics.adcore import ADBaseIO, ADImageMode
from ophyd_async.epics.core import epics_signal_r

from xbeam_bluesky.bundled import CIF_DIR

logger = logging.getLogger(__name__)

__all__ = [
    "ARRAY_DTYPES",
    "EpicsPowderDetector",
    "PowderDetectorError",
    "PowderDetectorMock",
    "calibrated_two_theta",
]

#: ``ArrayData`` waveform element types (the plugin's FTVL) by config name; Channel Access has no unsigned
#: 16/32-bit arrays, so a UInt32 MYTHEN is served as ``int32`` (FTVL=LONG).
ARRAY_DTYPES: dict[str, type[np.generic]] = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "int32": np.int32,
    "float32": np.float32,
    "float64": np.float64,
}

#: Bundled CIF the default mock renders (the sample of the simulated beamline).
MOCK_CIF = CIF_DIR / "PbSO4-Wyckoff.cif"
#: Counts per second at the strongest peak of the mock pattern, and its flat background (counts/s).
MOCK_PEAK_COUNTS_PER_S = 5.0e4
MOCK_BACKGROUND_COUNTS_PER_S = 1.0e3


class PowderDetectorError(RuntimeError):
    """The detector delivered data that does not match its configuration (e.g. a wrong channel count)."""


def calibrated_two_theta(start_deg: float, step_deg: float, n_channels: int) -> np.ndarray:
    """2θ of each channel (deg) from a linear calibration: ``start_deg + i · step_deg``, i = 0 … n_channels − 1.

    Raises
    ------
    ValueError
        ``step_deg`` ≤ 0, ``n_channels`` < 2, or a channel outside (0, 180)°.
    """
    if not (np.isfinite(step_deg) and step_deg > 0):
        raise ValueError(f"two_theta_step_deg = {step_deg!r}; expected a positive 2θ step per channel (deg)")
    if int(n_channels) != n_channels or n_channels < 2:
        raise ValueError(f"n_channels = {n_channels!r}; expected an integer ≥ 2")
    grid = float(start_deg) + float(step_deg) * np.arange(int(n_channels), dtype=np.float64)
    if not (grid[0] > 0 and grid[-1] < 180):
        raise ValueError(
            f"two_theta_start_deg = {start_deg!r}, step {step_deg!r}°, {n_channels} channels span "
            f"{grid[0]:.4f}–{grid[-1]:.4f}°; expected every channel within (0, 180)° 2θ"
        )
    return grid


class PowderDetectorMock(DeviceMock["EpicsPowderDetector"]):
    """Mock behaviour standing in for the IOC: ``Acquire`` takes ``AcquireTime`` s and publishes a pattern.

    The pattern is the bundled PbSO4 structure rendered by the Rietveld forward model
    (:func:`xbeam_bluesky.rietveld.simulate_pattern`, lab Cu Kα defaults) on the device's calibrated 2θ grid,
    5·10⁴ counts/s at the strongest peak on a flat 10³ counts/s background, with Poisson noise; the busy record
    returns to 0 when the array is posted, as the IOC's does.
    """

    async def connect(self, device: EpicsPowderDetector) -> None:
        """Post an empty array, the 2θ waveform (if any) and install the acquisition callback."""
        grid = device.calibration_deg
        set_mock_value(device.array_data, np.zeros(grid.size, dtype=device.array_dtype))
        if device.two_theta_pv is not None:
            set_mock_value(device.two_theta_pv, grid)
        rng = np.random.default_rng(0)
        expected: list[np.ndarray] = []

        def rate() -> np.ndarray:
            if not expected:
                from xbeam_bluesky.rietveld import simulate_pattern

                peaks = simulate_pattern([MOCK_CIF], grid)
                # a 2θ range without any reflection gets the background alone
                scale = MOCK_PEAK_COUNTS_PER_S / peaks.max() if peaks.max() > 0 else 0.0
                expected.append(scale * peaks + MOCK_BACKGROUND_COUNTS_PER_S)
            return expected[0]

        async def acquire(value: bool) -> bool:
            if value:
                exposure = await device.driver.acquire_time.get_value()
                await asyncio.sleep(exposure)
                counts = rng.poisson(await asyncio.to_thread(rate) * exposure)
                set_mock_value(device.array_data, counts.astype(device.array_dtype))
            return False

        callback_on_mock_put(device.driver.acquire, acquire)


@default_mock_class(PowderDetectorMock)
class EpicsPowderDetector(StandardReadable):
    """A 1D powder detector served by an areaDetector IOC: one pattern per trigger.

    ``trigger`` puts 1 to the driver's ``Acquire`` busy record and waits for it to complete (at most
    ``AcquireTime`` + ``timeout_s``), then for the array plugin to post a new ``ArrayData`` waveform, checks it
    has ``n_channels`` elements and publishes it with its 2θ axis. Reads ``{name}-two_theta`` (deg) and
    ``{name}-counts`` (float64, counts per channel); ``{name}-driver-acquire_time`` (s) is configuration.

    Parameters
    ----------
    prefix
        PV prefix of the IOC, e.g. ``"BL08:MYTHEN:"``.
    n_channels
        Channels (strips) the detector delivers.
    two_theta_start_deg, two_theta_step_deg
        Linear 2θ calibration: channel ``i`` is at ``start + i · step`` degrees.
    driver_suffix
        Suffix of the driver records (``"cam1:"`` → ``BL08:MYTHEN:cam1:Acquire``).
    array_suffix
        Suffix of the NDPluginStdArrays plugin (``"image1:"`` → ``BL08:MYTHEN:image1:ArrayData``).
    array_dtype
        Element type of the ``ArrayData`` waveform, a key of :data:`ARRAY_DTYPES`.
    two_theta_pv
        A float64 waveform with the 2θ (deg) of each channel, read at every trigger instead of the linear
        calibration (which then only sets the mock's grid).
    timeout_s
        Time (s) allowed beyond ``AcquireTime`` for the acquisition and the array to arrive.
    name
        Device name.
    """

    def __init__(
        self,
        prefix: str,
        *,
        n_channels: int,
        two_theta_start_deg: float,
        two_theta_step_deg: float,
        driver_suffix: str = "cam1:",
        array_suffix: str = "image1:",
        array_dtype: str = "int32",
        two_theta_pv: str | None = None,
        timeout_s: float = 10.0,
        name: str = "",
    ) -> None:
        if array_dtype not in ARRAY_DTYPES:
            raise ValueError(f"array_dtype = {array_dtype!r}; expected one of {sorted(ARRAY_DTYPES)}")
        if not (np.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s = {timeout_s!r}; expected a positive time in s")
        self.calibration_deg = calibrated_two_theta(two_theta_start_deg, two_theta_step_deg, n_channels)
        self.n_channels = int(n_channels)
        self.array_dtype = ARRAY_DTYPES[array_dtype]
        self.timeout_s = float(timeout_s)
        self.driver = ADBaseIO(prefix + driver_suffix)
        self.acquire_pv = prefix + driver_suffix + "Acquire"
        self.array_data = epics_signal_r(Array1D[self.array_dtype], prefix + array_suffix + "ArrayData")
        self.two_theta_pv: SignalR[np.ndarray] | None = (
            epics_signal_r(Array1D[np.float64], two_theta_pv) if two_theta_pv else None
        )
        with self.add_children_as_readables():
            self.two_theta, self._set_two_theta = soft_signal_r_and_setter(
                Array1D[np.float64], self.calibration_deg, units="deg"
            )
            self.counts, self._set_counts = soft_signal_r_and_setter(
                Array1D[np.float64], np.zeros(self.n_channels), units="counts"
            )
        self.add_readables([self.driver.acquire_time], Format.CONFIG_SIGNAL)
        self._acquiring = False
        super().__init__(name=name)

    @property
    def exposure(self) -> SignalRW[float]:
        """The exposure time signal (s): the driver's ``AcquireTime`` (``xrd_powder`` sets it)."""
        return self.driver.acquire_time

    @AsyncStatus.wrap
    async def stage(self) -> None:
        """One exposure per ``Acquire``: ``ImageMode`` Single, ``NumImages`` 1."""
        await asyncio.gather(self.driver.image_mode.set(ADImageMode.SINGLE), self.driver.num_images.set(1))

    @AsyncStatus.wrap
    async def unstage(self) -> None:
        """Stop an exposure still running (a run aborted or stopped mid-exposure); the IOC keeps its settings."""
        if self._acquiring:
            logger.warning("%s: run ended during an exposure; %s", self.acquire_pv, await self._stop())

    @AsyncStatus.wrap
    async def stop(self, success: bool = True) -> None:
        """Stop an exposure in progress (put 0 to ``Acquire``); nothing happens when none is running.

        Parameters
        ----------
        success
            Unused (bluesky's ``Stoppable`` protocol).
        """
        if self._acquiring:
            logger.info("%s: %s", self.acquire_pv, await self._stop())

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        """Take one exposure and publish the pattern.

        Raises
        ------
        TimeoutError
            ``Acquire`` did not complete, or no new ``ArrayData`` arrived, within ``AcquireTime`` +
            ``timeout_s``; the message names the PV. The acquisition is stopped.
        PowderDetectorError
            The array or the 2θ waveform has not ``n_channels`` elements (the message names the PV).
        """
        exposure = await self.driver.acquire_time.get_value()
        limit = max(float(exposure), 0.0) + self.timeout_s
        before = await self._array_timestamp()
        self._acquiring = True
        try:
            async with asyncio.timeout(limit):
                await self.driver.acquire.set(True, timeout=None)
        except TimeoutError:
            raise TimeoutError(
                f"{self.acquire_pv}: the acquisition of {exposure} s did not complete within {limit:.3g} s "
                f"(AcquireTime + timeout_s = {self.timeout_s} s); {await self._stop()}"
            ) from None
        finally:
            self._acquiring = False
        counts = await self._new_array(before, self.timeout_s)
        two_theta = await self._two_theta()
        self._set_two_theta(two_theta)
        self._set_counts(counts)

    async def _stop(self) -> str:
        """Put 0 to ``Acquire`` (not a busy wait); say whether the IOC took it."""
        try:
            await self.driver.acquire.set(False, timeout=self.timeout_s)
        except TimeoutError:
            return f"stopping it (put 0) did not complete either within {self.timeout_s} s"
        return "acquisition stopped (put 0)"

    async def _array_timestamp(self) -> float:
        reading = await self.array_data.read(cached=False)
        return reading[self.array_data.name]["timestamp"]

    async def _new_array(self, before: float, timeout: float) -> np.ndarray:
        """Wait for ``ArrayData`` to be posted after ``before`` (timestamp); return it as float64."""
        loop = asyncio.get_running_loop()
        posted: asyncio.Future[np.ndarray] = loop.create_future()

        def on_reading(reading: dict[str, Reading]) -> None:
            value = reading[self.array_data.name]
            if value["timestamp"] != before and not posted.done():
                posted.set_result(np.asarray(value["value"]))

        self.array_data.subscribe_reading(on_reading)
        try:
            async with asyncio.timeout(timeout):
                data = await posted
        except TimeoutError:
            raise TimeoutError(
                f"{_pv(self.array_data)}: no new array within {timeout:.3g} s after the acquisition completed "
                f"(is the array plugin enabled and fed by the driver?)"
            ) from None
        finally:
            self.array_data.clear_sub(on_reading)
        _check_length(self.array_data, data, self.n_channels, "counts")
        return data.astype(np.float64)

    async def _two_theta(self) -> np.ndarray:
        if self.two_theta_pv is None:
            return self.calibration_deg
        grid = np.asarray(await self.two_theta_pv.get_value(), dtype=np.float64)
        _check_length(self.two_theta_pv, grid, self.n_channels, "2θ values (deg)")
        if not (np.all(np.isfinite(grid)) and np.all(np.diff(grid) > 0) and grid[0] > 0 and grid[-1] < 180):
            raise PowderDetectorError(
                f"{_pv(self.two_theta_pv)}: 2θ {grid[0]:.4g}…{grid[-1]:.4g}°; expected strictly increasing "
                f"angles within (0, 180)°"
            )
        return grid


def _pv(signal: SignalR) -> str:
    """The PV behind ``signal`` (``ca://`` / ``mock+ca://`` scheme removed)."""
    return signal.source.split("://", 1)[-1]


def _check_length(signal: SignalR, data: np.ndarray, n_channels: int, what: str) -> None:
    if data.ndim != 1 or data.size != n_channels:
        raise PowderDetectorError(
            f"{_pv(signal)} delivered {data.size} {what}; expected n_channels = {n_channels} "
            f"(the [epics.xrd] configuration): check the detector's active modules/channels or the config"
        )
