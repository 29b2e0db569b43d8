"""A beam shutter soft IOC: an ``Open``/``Closed`` command record and a status record that follows it.

The status changes ``--delay`` s after the command (a pneumatic shutter takes tens of ms); the command
put completes at once, as a ``bo`` record's does.

Run ``python -m xbeam_bluesky.testing.iocs.shutter --prefix BL08:SHTR: --port N`` (PVs ``BL08:SHTR:CMD`` and
``BL08:SHTR:STS``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from caproto.server import PVGroup

from xbeam_bluesky.testing.iocs._server import enum_pv, ioc_argument_parser, serve

__all__ = ["SHUTTER_STATES", "ShutterIOC", "main"]

#: The states of command and status, in record order (ZNAM, ONAM).
SHUTTER_STATES = ("Closed", "Open")


class ShutterIOC(PVGroup):
    """``CMD`` (command) and ``STS`` (status) enum records; the status follows after ``delay_s``."""

    command = enum_pv("CMD", SHUTTER_STATES)
    status = enum_pv("STS", SHUTTER_STATES, read_only=True)

    def __init__(self, *args: Any, delay_s: float = 0.05, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay_s = float(delay_s)

    @command.putter
    async def command(self, instance: Any, value: str) -> None:
        """Move the shutter; the status reports the new state when it gets there."""

        async def follow() -> None:
            await asyncio.sleep(self.delay_s)
            await self.status.write(value)

        asyncio.get_running_loop().create_task(follow())


def main(argv: list[str] | None = None) -> None:
    """``python -m xbeam_bluesky.testing.iocs.shutter``: serve the shutter until stopped."""
    parser = ioc_argument_parser("Soft IOC with a beam shutter (CMD/STS).", "BL08:SHTR:")
    parser.add_argument("--delay", type=float, default=0.05, help="time for the status to follow (s)")
    args = parser.parse_args(argv)
    serve(ShutterIOC(prefix=args.prefix, delay_s=args.delay).pvdb, args)


if __name__ == "__main__":
    main()
