"""``xbeam analysis-server``: the live analyses in their own process, fed by the bluesky 0MQ proxy.

The RunEngine process publishes its documents to a ``bluesky-0MQ-proxy``
(``build_namespace(..., publish_to="HOST:IN_PORT")``); this server subscribes to the proxy's out port with a
``RemoteDispatcher``, runs the live analyses registered in :data:`xbeam_bluesky.callbacks.remote.LIVE_ANALYSES`
for each run's ``purpose`` (they read frames from the detector files themselves) and writes their results to
the tiled server, linked to the raw run.
"""

from __future__ import annotations

import argparse
import logging

from xbeam_bluesky.cli import CLIError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analysis-server`` sub-command."""
    parser = subparsers.add_parser(
        "analysis-server",
        help="run the live analyses out of process, behind the bluesky 0MQ proxy",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument(
        "--proxy",
        required=True,
        metavar="HOST:PORT",
        help="out address of the bluesky 0MQ proxy, e.g. 127.0.0.1:5578",
    )
    parser.add_argument(
        "--prefix", default="", help="only documents published with this 0MQ prefix (default: all)"
    )
    parser.add_argument(
        "--tiled-uri", help="tiled server for results (default: tiled_uri of the xbeam config)"
    )
    parser.add_argument("--api-key", help="tiled API key (default: tiled_api_key of the xbeam config)")
    parser.add_argument(
        "--config", help="xbeam config TOML (default: $XBEAM_CONFIG or ~/.config/xbeam/config.toml)"
    )
    parser.add_argument(
        "--purpose",
        action="append",
        dest="purposes",
        metavar="PURPOSE",
        help="only analyse runs of this purpose (repeatable; default: every purpose with a live analysis)",
    )
    parser.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="PURPOSE=MODULE:FACTORY",
        help="also run this live-analysis factory on runs of PURPOSE (repeatable)",
    )
    parser.set_defaults(func=run)


def _parse_extra(entries: list[str]) -> dict[str, list[str]]:
    extra: dict[str, list[str]] = {}
    for entry in entries:
        purpose, sep, path = entry.partition("=")
        if not sep or not purpose or ":" not in path:
            raise CLIError(f"--add {entry!r}; expected PURPOSE=package.module:factory")
        extra.setdefault(purpose, []).append(path)
    return extra


def _check_proxy(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CLIError(f"--proxy {address!r}; expected HOST:PORT, e.g. 127.0.0.1:5578")
    return address


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C."""
    proxy = _check_proxy(args.proxy)
    extra = _parse_extra(args.add)

    from xbeam_bluesky.callbacks.remote import LiveContext, live_router, resolve_factories, serve_remote
    from xbeam_bluesky.config import load_config

    factories = resolve_factories(extra, args.purposes)
    config = load_config(args.config)
    uri = args.tiled_uri or config.tiled_uri
    if not uri:
        raise CLIError(
            "no tiled server to write results to: pass --tiled-uri (or set tiled_uri / XBEAM_TILED_URI); "
            "the embedded server lives inside the RunEngine process"
        )
    from tiled.client import from_uri

    try:
        client = from_uri(uri, api_key=args.api_key or config.tiled_api_key)
    except Exception as exc:
        raise CLIError(f"tiled server {uri} is not reachable: {exc}") from exc
    router = live_router(LiveContext(results=client, options=config.live), factories)
    active = {purpose: [f.__qualname__ for f in fs] for purpose, fs in factories.items() if fs}
    prefix = args.prefix.encode()

    def ready() -> None:
        shown = uri.split("?")[0]  # never print an API key given in the URI
        print(
            f"xbeam analysis-server: listening to {proxy}, results to {shown}, analyses {active}", flush=True
        )

    serve_remote(proxy, router, prefix=prefix, on_ready=ready)
    return 0
