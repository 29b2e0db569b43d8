"""Command-line entry and helpers shared by the soft IOCs: one loopback CA server per process.

Every IOC module runs as ``python -m xbeam_bluesky.testing.iocs.<name> --prefix P --port N``; the port is
used for both the UDP search and the TCP circuit (``EPICS_CA_SERVER_PORT``), on the interfaces of
``--interface`` (``EPICS_CAS_INTF_ADDR_LIST``, default 127.0.0.1), and the server sends no beacons off the
host.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto.server import PvpropertyChar, PvpropertyEnum, pvproperty

__all__ = ["bool_pv", "enum_pv", "ioc_argument_parser", "long_string_pv", "serve"]

#: Element count of the char waveforms that carry long strings (areaDetector uses 256 for file paths).
LONG_STRING_LENGTH = 256


class PvpropertyLongString(PvpropertyChar):
    """A char waveform read and written as a string; accepts the empty string (all NUL bytes), which caproto's
    char conversion refuses (``int('')``) — clients clear ``XMLFileName`` and the like that way."""

    async def write_from_dbr(self, data: Any, data_type: Any, metadata: Any, *, flags: int = 0) -> None:
        if data_type == ChannelType.CHAR and not np.asarray(data, dtype=np.uint8).tobytes().strip(b"\0"):
            await self.write("")
            return
        await super().write_from_dbr(data, data_type, metadata, flags=flags)


def long_string_pv(name: str, value: str = "", **kwargs: Any) -> pvproperty:
    """A char-waveform PV holding a string longer than the 40 characters of a CA string (as areaDetector's
    ``FilePath``, ``FileName``, ...)."""
    return pvproperty(
        name=name, value=value, dtype=PvpropertyLongString, max_length=LONG_STRING_LENGTH,
        string_encoding="latin-1", **kwargs,
    )  # fmt: skip


class PvpropertyEnumChoice(PvpropertyEnum):
    """An enum PV whose putters always see the choice string: a client putting the index (DBR_ENUM, as
    libca/aioca do) arrives as a numpy integer, which caproto passes on unconverted."""

    def preprocess_value(self, value: Any) -> Any:
        if not isinstance(value, str):
            index = int(np.ravel(value)[0]) if np.ndim(value) else int(value)
            if not 0 <= index < len(self.enum_strings):
                raise ValueError(
                    f"{self.pvspec.name}: index {index}; expected 0..{len(self.enum_strings) - 1}"
                )
            value = self.enum_strings[index]
        return super().preprocess_value(value)


def enum_pv(name: str, choices: Sequence[str], value: str | None = None, **kwargs: Any) -> pvproperty:
    """An mbbo/bo-like enum PV with ``choices`` (the first is the default)."""
    return pvproperty(
        name=name, value=value if value is not None else choices[0], dtype=PvpropertyEnumChoice,
        enum_strings=list(choices), **kwargs,
    )  # fmt: skip


def bool_pv(name: str, value: bool = False, choices: tuple[str, str] = ("No", "Yes"), **kwargs: Any):
    """A two-state enum PV (a ``bo``/``bi`` record), read by ophyd-async as ``bool``."""
    return enum_pv(name, choices, choices[int(bool(value))], **kwargs)


def ioc_argument_parser(description: str, default_prefix: str) -> argparse.ArgumentParser:
    """The options every soft IOC takes: ``--prefix``, ``--port``, ``--interface``, ``--verbose``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--prefix", default=default_prefix, help=f"PV prefix (default {default_prefix!r})")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("EPICS_CA_SERVER_PORT", 5064)),
        help="CA server port, UDP search and TCP (default $EPICS_CA_SERVER_PORT or 5064)",
    )  # fmt: skip
    parser.add_argument(
        "--interface", default=os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "127.0.0.1"),
        help="interface address to serve on (default $EPICS_CAS_INTF_ADDR_LIST or 127.0.0.1)",
    )  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="log every connection and PV name")
    return parser


def _send_without_delay() -> None:
    """Set ``TCP_NODELAY`` on every client circuit of the caproto server, as an EPICS IOC (rsrv) does.

    caproto's asyncio server leaves Nagle's algorithm on: a reply written while the previous one is not yet
    acknowledged waits for the client's delayed ACK (~40 ms on Linux), so concurrent requests (ophyd-async gathers
    several gets or puts at once) took ~9 ms each instead of ~0.3 ms.
    """
    import socket

    from caproto.asyncio import utils

    if getattr(utils._TransportWrapper, "_xbeam_nodelay", False):
        return
    original = utils._TransportWrapper.__init__

    def init(self: Any, reader: Any, writer: Any) -> None:
        original(self, reader, writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    utils._TransportWrapper.__init__ = init
    utils._TransportWrapper._xbeam_nodelay = True


#: How long (s) the server waits for further monitor updates to batch with one it has (caproto's
#: ``CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC``, 10 ms by default).
MONITOR_BATCH_WAIT_S = 0.0005


def _monitor_updates_without_batching_delay() -> None:
    """Send a lone monitor update at once instead of after caproto's 10 ms batching wait.

    Every ophyd-async wait (``Acquire_RBV`` armed, ``NumCaptured_RBV`` counting, ``DetectorState_RBV`` idle) opens
    a monitor and waits for its first update; with the default each of them cost 10 ms, and a frame over CA took
    55 ms for a 13 ms acquisition. An explicit ``CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC`` is left as it is.
    """
    from caproto.server import common

    if "CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC" not in os.environ:
        common.HIGH_LOAD_TIMEOUT = MONITOR_BATCH_WAIT_S


class _NoBeaconErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to send beacon")


def serve(pvdb: dict[str, Any], args: argparse.Namespace, on_start: Callable[[], None] | None = None) -> None:
    """Run the CA server on ``pvdb`` until the process is stopped (SIGTERM/SIGINT).

    Parameters
    ----------
    pvdb
        PV name → caproto channel data, e.g. ``group.pvdb``.
    args
        Parsed :func:`ioc_argument_parser` options.
    on_start
        Called before the server starts (e.g. to print the PV list).
    """
    import signal

    from caproto.asyncio.server import run

    os.environ["EPICS_CA_SERVER_PORT"] = str(args.port)
    os.environ["EPICS_CAS_INTF_ADDR_LIST"] = args.interface
    os.environ.setdefault("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO")
    os.environ.setdefault("EPICS_CAS_BEACON_ADDR_LIST", args.interface)
    # XBEAM_IOC_DEBUG=1 logs every put and record write (diagnosing a client/IOC exchange from the IOC's log)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=logging.DEBUG if os.environ.get("XBEAM_IOC_DEBUG") else level)
    # Beacons go to the CA repeater port of the interface; without a repeater running (a test host) each one
    # is refused. Clients find a restarted IOC by their search retries instead, so these errors are noise.
    logging.getLogger("caproto.ctx").addFilter(_NoBeaconErrors())
    # SIGTERM ends the server like Ctrl-C does (its shutdown hooks close the open files)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    _send_without_delay()
    _monitor_updates_without_batching_delay()
    if on_start is not None:
        on_start()
    run(pvdb, interfaces=[args.interface], log_pv_names=args.verbose)
