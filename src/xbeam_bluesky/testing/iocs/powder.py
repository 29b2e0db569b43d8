"""A 1D powder-detector soft IOC (a strip detector on areaDetector): ``cam1:`` driver and ``image1:ArrayData``.

``Acquire`` (busy) exposes ``AcquireTime`` s and then posts a pattern to the NDPluginStdArrays waveform
``{prefix}image1:ArrayData`` (int32, ``--channels`` elements) and completes — what ophyd-async's
``EpicsPowderDetector`` waits for. The pattern is the bundled PbSO4 structure rendered by the Rietveld forward
model (lab Cu Kα defaults) on the linear 2θ calibration ``--two-theta-start`` + i · ``--two-theta-step``
(deg), 5·10⁴ counts/s at the strongest peak on a flat 10³ counts/s background, with Poisson noise — the
same pattern as the mock detector (:class:`~xbeam_bluesky.devices.epics.PowderDetectorMock`).

Test-only control PV: ``{prefix}image1:SimChannels`` — when > 0, patterns have that many channels instead (a
detector with a module switched off).

Run ``python -m xbeam_bluesky.testing.iocs.powder --prefix BL08:MYTHEN: --port N --channels 5500``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from xbeam_bluesky.devices.epics._diffractometer import (
    MOCK_BACKGROUND_COUNTS_PER_S,
    MOCK_CIF,
    MOCK_PEAK_COUNTS_PER_S,
    calibrated_two_theta,
)
from xbeam_bluesky.testing.iocs._areadetector import ADDriverGroup
from xbeam_bluesky.testing.iocs._server import bool_pv, ioc_argument_parser, serve

__all__ = ["PowderIOC", "main"]


class _Driver(ADDriverGroup):
    acquire = bool_pv("Acquire", choices=("Done", "Acquire"))

    def __init__(self, *args: Any, owner: PowderIOC, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    @acquire.putter
    async def acquire(self, instance: Any, value: str) -> str:
        """1: one exposure, the put completes when the pattern is posted; 0: abort."""
        if value == "Acquire":
            await self.owner.expose()
        else:
            self.owner.abort.set()
        return "Done"


class PowderIOC:
    """Driver records and the array plugin's waveform of one strip detector.

    Parameters
    ----------
    prefix, driver_suffix, array_suffix
        PV names ``{prefix}{driver_suffix}Acquire``, ``{prefix}{array_suffix}ArrayData``.
    two_theta_deg
        2θ of every channel (deg).
    seed
        Seed of the Poisson noise.
    """

    def __init__(
        self, prefix: str, two_theta_deg: np.ndarray, seed: int = 0, driver_suffix: str = "cam1:",
        array_suffix: str = "image1:",
    ) -> None:  # fmt: skip
        self.two_theta = np.asarray(two_theta_deg, dtype=float)
        self.rng = np.random.default_rng(seed)
        self.abort = asyncio.Event()
        self._rate: np.ndarray | None = None
        self.driver = _Driver(prefix=prefix + driver_suffix, owner=self)
        n = self.two_theta.size

        class _Array(PVGroup):
            array_data = pvproperty(
                name="ArrayData", value=[0] * n, dtype=ChannelType.LONG, max_length=n, read_only=True
            )
            sim_channels = pvproperty(name="SimChannels", value=0, doc="test only: channels per pattern")

        self.array = _Array(prefix=prefix + array_suffix)

    @property
    def pvdb(self) -> dict[str, Any]:
        """All PVs of the detector."""
        return {**self.driver.pvdb, **self.array.pvdb}

    def rate(self) -> np.ndarray:
        """Expected counts/s per channel (computed once)."""
        if self._rate is None:
            from xbeam_bluesky.rietveld import simulate_pattern

            peaks = simulate_pattern([MOCK_CIF], self.two_theta)
            scale = MOCK_PEAK_COUNTS_PER_S / peaks.max() if peaks.max() > 0 else 0.0
            self._rate = scale * peaks + MOCK_BACKGROUND_COUNTS_PER_S
        return self._rate

    async def expose(self) -> None:
        """One exposure of ``AcquireTime`` s, then post the pattern."""
        drv = self.driver
        self.abort.clear()
        exposure = float(drv.acquire_time.value)
        await drv.acquire_rbv.write("Acquire")
        await drv.detector_state.write("Acquire")
        try:
            try:
                await asyncio.wait_for(self.abort.wait(), timeout=exposure)
                await drv.detector_state.write("Aborted")
                return
            except TimeoutError:
                pass
            rate = await asyncio.to_thread(self.rate)
            counts = self.rng.poisson(rate * exposure).astype(np.int32)
            n = int(self.array.sim_channels.value)
            if 0 < n != counts.size:
                counts = np.resize(counts, n)
            await self.array.array_data.write(counts)
            await drv.array_counter.write(int(drv.array_counter_rbv.value) + 1)
            await drv.detector_state.write("Idle")
        finally:
            await drv.acquire_rbv.write("Done")


def main(argv: list[str] | None = None) -> None:
    """``python -m xbeam_bluesky.testing.iocs.powder``: serve the powder detector until stopped."""
    parser = ioc_argument_parser("Soft 1D powder detector (areaDetector driver + StdArrays).", "BL08:MYTHEN:")
    parser.add_argument("--channels", type=int, default=5500, help="channels per pattern (default 5500)")
    parser.add_argument("--two-theta-start", type=float, default=10.0, help="2θ of channel 0 (deg)")
    parser.add_argument("--two-theta-step", type=float, default=0.02, help="2θ per channel (deg)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    grid = calibrated_two_theta(args.two_theta_start, args.two_theta_step, args.channels)
    serve(PowderIOC(args.prefix, grid, args.seed).pvdb, args)


if __name__ == "__main__":
    main()
