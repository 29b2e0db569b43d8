"""The monochromator's energy axis as a soft IOC: one motor record ``{prefix}Energy`` in eV.

A DCM's energy is usually a pseudo-motor record (the IOC drives Bragg angle and gap); to a client it is a
motor record whose moves take time — here 20 eV/s with 0.1 s acceleration, like the simulated monochromator.
All the motor-record behaviour of :mod:`xbeam_bluesky.testing.iocs.motor` applies (limits, STOP, SPMG,
``Energy:SimStall``).

Run ``python -m xbeam_bluesky.testing.iocs.mono --prefix BL08:DCM: --port N``.
"""

from __future__ import annotations

from xbeam_bluesky.testing.iocs._server import ioc_argument_parser, serve
from xbeam_bluesky.testing.iocs.motor import axis_pvdb

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """``python -m xbeam_bluesky.testing.iocs.mono``: serve the energy motor record until stopped."""
    parser = ioc_argument_parser("Soft IOC with a monochromator energy axis (eV).", "BL08:DCM:")
    parser.add_argument(
        "--record", default="Energy", help="motor record name after the prefix (default Energy)"
    )
    parser.add_argument("--limits", type=float, nargs=2, default=(4500.0, 25000.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--velocity", type=float, default=20.0, help="VELO, eV/s (default 20)")
    parser.add_argument("--accel-time", type=float, default=0.1, help="ACCL, s (default 0.1)")
    parser.add_argument("--position", type=float, default=7100.0, help="initial energy, eV (default 7100)")
    args = parser.parse_args(argv)
    pvdb = axis_pvdb(
        args.prefix, {args.record: tuple(args.limits)}, units="eV", velocity=args.velocity,
        accel_time=args.accel_time, position=args.position, precision=3,
    )  # fmt: skip
    serve(pvdb, args)


if __name__ == "__main__":
    main()
