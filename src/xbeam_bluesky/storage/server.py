"""Where runs go: an embedded tiled server on the data directory, or any tiled server by URI."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xbeam_bluesky.config import XbeamConfig, load_config
from xbeam_bluesky.errors import OutputPathError

logger = logging.getLogger(__name__)


def ensure_writable(directory: Path, what: str = "data directory") -> Path:
    """Create ``directory`` if needed and check that files can be written in it.

    Raises
    ------
    OutputPathError
        Naming the directory and the reason.
    """
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(
            f"{what} {directory} is not writable ({exc.strerror or exc}); set XBEAM_DATA_DIR or pass a "
            "writable --data-dir"
        ) from exc
    return directory


@dataclass
class Storage:
    """An open tiled catalog with a writer for RunEngine documents.

    Attributes
    ----------
    client : tiled.client.container.Container
        Root of the catalog; runs are ``client[uid]`` (databroker-compatible ``BlueskyRun`` objects).
    writer : xbeam_bluesky.storage.spool.SpoolingWriter
        Subscribe it to the RunEngine: ``RE.subscribe(storage.writer)``. Spools every document to
        ``DATA_DIR/spool`` before writing it to tiled, so a run survives tiled going away.
    config : XbeamConfig
        Data directory, URI.
    server : tiled.server.SimpleTiledServer or None
        The embedded server, if one was started.
    """

    client: Any
    writer: Any
    config: XbeamConfig
    server: Any = None

    @property
    def uri(self) -> str:
        """URI of the tiled server (with the API key for the embedded one)."""
        return self.server.uri if self.server is not None else str(self.config.tiled_uri)

    @property
    def spool_dir(self) -> Path:
        """Directory of the document spool (runs not yet in tiled)."""
        return self.config.data_dir / "spool"

    @property
    def detector_dir(self) -> Path:
        """Directory for detector files."""
        return self.config.detector_dir

    def close(self) -> None:
        """Stop the embedded server (data stay on disk)."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: One API key for every embedded server of this process. tiled keeps the single-user API key in
#: process-global settings, so a second ``SimpleTiledServer`` with its own random key would make the first
#: answer 401 to its clients (seen with tiled 0.2.20).
_PROCESS_API_KEY = secrets.token_hex(16)


def start_embedded_server(
    data_dir: Path, *, port: int = 0, api_key: str | None = None, readable_dirs: Sequence[Path] = ()
) -> Any:
    """Start a ``SimpleTiledServer`` on ``data_dir/tiled`` that can read ``data_dir/detectors`` (and
    ``readable_dirs``, e.g. an EPICS camera's frame directory).

    Without ``api_key`` every embedded server of the process shares one random key, so several can run at once.
    """
    from tiled.server import SimpleTiledServer

    data_dir = ensure_writable(data_dir)
    detector_dir = ensure_writable(data_dir / "detectors", "detector directory")
    return SimpleTiledServer(
        directory=data_dir / "tiled",
        readable_storage=[detector_dir, *(Path(d) for d in readable_dirs if Path(d) != detector_dir)],
        port=port,
        api_key=api_key or _PROCESS_API_KEY,
    )


def open_storage(
    config: XbeamConfig | None = None,
    *,
    data_dir: str | Path | None = None,
    uri: str | None = None,
    api_key: str | None = None,
    readable_dirs: Sequence[str | Path] = (),
) -> Storage:
    """Open the catalog runs are written to.

    Parameters
    ----------
    config : XbeamConfig, optional
        Default: :func:`xbeam_bluesky.config.load_config` (``XBEAM_DATA_DIR`` etc.).
    data_dir : str or pathlib.Path, optional
        Overrides the configured data directory.
    uri, api_key : str, optional
        A running tiled server (it must be able to read the detector directory, ``tiled serve ... -r DIR``);
        default: the configured ``tiled_uri`` or an embedded server on the data directory.
    readable_dirs : sequence of str or pathlib.Path, optional
        Further directories of detector files the embedded server may read (the frame directory of an EPICS
        camera, ``[epics.camera] read_dir``).

    Returns
    -------
    Storage
        Call :meth:`Storage.close` (or use it as a context manager) when done. Runs left in the spool by an
        earlier session (tiled was unreachable) are replayed into tiled here.

    Raises
    ------
    StorageUnavailableError
        When ``uri`` does not answer within a few seconds (named, instead of retrying for half a minute).
    """
    from tiled.client import from_uri

    from xbeam_bluesky.storage.spool import SpoolingWriter, replay_pending

    config = config or load_config(data_dir=data_dir)
    if data_dir is not None:
        config = replace(config, data_dir=Path(data_dir).expanduser())
    if uri is not None:
        config = replace(config, tiled_uri=uri, tiled_api_key=api_key or config.tiled_api_key)
    ensure_writable(config.detector_dir, "detector directory")
    server = None
    if config.tiled_uri:
        check_reachable(str(config.tiled_uri))
        client = from_uri(config.tiled_uri, api_key=config.tiled_api_key)
    else:
        server = start_embedded_server(config.data_dir, readable_dirs=[Path(d) for d in readable_dirs])
        client = from_uri(server.uri)
    logger.info("tiled catalog at %s, detector files in %s", server.uri if server else config.tiled_uri,
                config.detector_dir)  # fmt: skip
    spool_dir = ensure_writable(config.data_dir / "spool", "spool directory")
    for uid in replay_pending(spool_dir, client):
        logger.warning("run %s, left in the spool %s by an earlier session, is now in tiled", uid, spool_dir)
    return Storage(client=client, writer=SpoolingWriter(client, spool_dir), config=config, server=server)


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`StorageUnavailableError` unless an HTTP server answers at ``uri`` within ``timeout_s``."""
    import httpx

    from xbeam_bluesky.errors import StorageUnavailableError

    try:
        httpx.get(uri, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise StorageUnavailableError(
            f"tiled server {uri.split('?')[0]} is unreachable ({type(exc).__name__}: {exc}); start it "
            "(e.g. `xbeam serve`) or check --tiled-uri / XBEAM_TILED_URI"
        ) from None
