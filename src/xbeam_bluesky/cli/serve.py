"""``xbeam serve``: serve the data directory's tiled catalog over HTTP until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    p = subparsers.add_parser(
        "serve",
        help="serve the data directory's runs with tiled (web UI and API) until Ctrl-C",
        description=(
            "Start tiled on DATA_DIR/tiled with read access to the detector files in DATA_DIR/detectors, on "
            "localhost. Connect with tiled.client.from_uri(URI) or databroker; stop with Ctrl-C."
        ),
    )
    p.add_argument(
        "--data-dir", type=Path, help="data directory (default: $XBEAM_DATA_DIR or the per-user one)"
    )
    p.add_argument(
        "--port", type=int, default=8000, help="TCP port on 127.0.0.1 (default 8000, 0 = any free)"
    )
    p.add_argument("--api-key", help="API key clients must present (default: a random one, printed)")
    p.set_defaults(func=_run)


def _check_port_free(port: int) -> None:
    """Raise ``CLIError`` naming ``port`` when another process listens on it (instead of a 20 s wait)."""
    import socket

    from xbeam_bluesky.cli import CLIError

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise CLIError(
                f"--port {port}: 127.0.0.1:{port} is in use ({exc.strerror}); stop the other server or pick "
                "another port (--port 0 = any free one)"
            ) from None


def _run(args: argparse.Namespace) -> int:
    from xbeam_bluesky.cli import CLIError
    from xbeam_bluesky.config import load_config
    from xbeam_bluesky.storage import start_embedded_server

    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port {args.port}: expected 0 to 65535")
    if args.api_key is not None and not args.api_key.isalnum():
        raise CLIError(f"--api-key {args.api_key!r}: expected letters and digits only (tiled's rule)")
    if args.port:
        _check_port_free(args.port)
    config = load_config(data_dir=args.data_dir)
    if not (config.data_dir / "tiled").is_dir():
        print(
            f"note: no catalog in {config.data_dir} yet; serving an empty one (run `xbeam demo` to fill it)"
        )
    try:
        server = start_embedded_server(config.data_dir, port=args.port, api_key=args.api_key)
    except OSError as exc:
        raise CLIError(f"cannot serve on port {args.port}: {exc}") from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(f"serving {config.data_dir}", flush=True)
        print(f"API:    {server.uri}", flush=True)
        print(f"web UI: {server.web_ui_link}", flush=True)
        print("Ctrl-C to stop", flush=True)
        stop.wait()
    finally:
        server.close()
    return 0
