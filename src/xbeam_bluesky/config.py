"""Site configuration: where data live and which tiled server to write to.

Sources, later ones winning: built-in defaults, a TOML file (``$XBEAM_CONFIG`` or ``~/.config/xbeam/config.toml``),
environment variables ``XBEAM_DATA_DIR``, ``XBEAM_TILED_URI``, ``XBEAM_TILED_API_KEY``, ``XBEAM_ZMQ_PROXY``.
The ``[epics.*]`` tables (PV prefixes, see ``profiles/xbeam.example.toml``) are read by
:func:`xbeam_bluesky.devices.epics.load_epics_config`.

Example ``config.toml``::

    data_dir = "/data/xbeam"
    tiled_uri = "http://tiled.beamline:8000/api/v1"
    tiled_api_key = "secret"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from xbeam_bluesky._inputs import input_file, read_text
from xbeam_bluesky.errors import ConfigError


def default_data_dir() -> Path:
    """Persistent per-user data directory: ``$XBEAM_DATA_DIR``, else ``$XDG_DATA_HOME/xbeam-bluesky``
    (``~/.local/share/xbeam-bluesky``)."""
    if os.environ.get("XBEAM_DATA_DIR"):
        return Path(os.environ["XBEAM_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "xbeam-bluesky"


def default_config_path() -> Path:
    """``$XBEAM_CONFIG`` or ``~/.config/xbeam/config.toml``."""
    if os.environ.get("XBEAM_CONFIG"):
        return Path(os.environ["XBEAM_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "xbeam" / "config.toml"


@dataclass(frozen=True)
class XbeamConfig:
    """Resolved configuration.

    Attributes
    ----------
    data_dir : pathlib.Path
        Data directory: ``tiled/`` (embedded server catalog), ``detectors/`` (HDF5 frames), ``reports/``.
    tiled_uri : str or None
        A tiled server to write to instead of the embedded one.
    tiled_api_key : str or None
        API key for ``tiled_uri``.
    sim : dict
        The ``[sim]`` table: options of the simulated beamline (``frame_shape``, ``time_scale``, ...).
    zmq_proxy : str or None
        ``host:port`` of a bluesky 0MQ proxy's *in* address: publish documents there for
        ``xbeam analysis-server`` (``zmq_proxy`` key or ``XBEAM_ZMQ_PROXY``).
    live : dict
        The ``[live]`` table: options of the live analyses by name (``[live.clustering]``, ``[live.rietveld]``);
        their relative paths (``library_dir``, ``cif_dir``, ``instrument``) are made absolute against the
        config file's folder, so every process (IPython, queueserver worker, analysis server) reads the same files.
    path : pathlib.Path or None
        The TOML file read, if any (its ``[epics.*]`` tables configure ``mode="mock"`` / ``"real"``).
    """

    data_dir: Path
    tiled_uri: str | None = None
    tiled_api_key: str | None = None
    sim: dict = field(default_factory=dict)
    zmq_proxy: str | None = None
    live: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def detector_dir(self) -> Path:
        """Where detectors write their files (must be readable by the tiled server)."""
        return self.data_dir / "detectors"

    @property
    def report_dir(self) -> Path:
        """Where reports (PNG) are written."""
        return self.data_dir / "reports"


#: Path-valued options of the live analyses; relative paths are taken relative to the config file.
LIVE_PATH_OPTIONS: dict[str, tuple[str, ...]] = {
    "clustering": ("library_dir",),
    "rietveld": ("cif_dir", "instrument"),
}


def _resolve_live_paths(live: dict, base: Path) -> dict:
    """``live`` with the relative path options of :data:`LIVE_PATH_OPTIONS` made absolute against ``base``."""
    out = dict(live)
    for name, keys in LIVE_PATH_OPTIONS.items():
        table = out.get(name)
        if not isinstance(table, dict):
            continue
        table = dict(table)
        for key in keys:
            value = table.get(key)
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                table[key] = str((base / value).resolve())
            elif isinstance(value, str):
                table[key] = str(Path(value).expanduser())
        out[name] = table
    return out


def load_config(path: str | Path | None = None, *, data_dir: str | Path | None = None) -> XbeamConfig:
    """Read the configuration.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        TOML file (default :func:`default_config_path`; a missing default file is fine, a missing explicit
        one is an error).
    data_dir : str or pathlib.Path, optional
        Overrides every other source of the data directory.

    Raises
    ------
    InputFileError
        An explicitly given config file does not exist, is a directory or is not text (a FileNotFoundError).
    ConfigError
        The file is not valid TOML or has unknown keys (a ValueError).
    """
    explicit = path is not None
    file = Path(path) if explicit else default_config_path()
    values: dict[str, object] = {}
    if file.is_file():
        try:
            values = tomllib.loads(read_text(file, "config file"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file}: not valid TOML ({exc})") from exc
        known = {"data_dir", "tiled_uri", "tiled_api_key", "zmq_proxy", "sim", "epics", "live"}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(
                f"config file {file}: unknown keys {sorted(unknown)}; expected data_dir, tiled_uri, tiled_api_key, "
                "zmq_proxy, [sim], [epics.*], [live.*]"
            )
    elif explicit:
        input_file(file, "config file")
    resolved_dir = (
        Path(data_dir).expanduser()
        if data_dir is not None
        else Path(os.environ["XBEAM_DATA_DIR"]).expanduser()
        if os.environ.get("XBEAM_DATA_DIR")
        else Path(str(values["data_dir"])).expanduser()
        if "data_dir" in values
        else default_data_dir()
    )
    uri = os.environ.get("XBEAM_TILED_URI") or values.get("tiled_uri")
    key = os.environ.get("XBEAM_TILED_API_KEY") or values.get("tiled_api_key")
    sim, live = values.get("sim", {}), values.get("live", {})
    for name, table in (("sim", sim), ("live", live)):
        if not isinstance(table, dict):
            raise ConfigError(f"config file {file}: {name} = {table!r}; expected a [{name}] table of options")
    if file.is_file():
        live = _resolve_live_paths(live, file.resolve().parent)
    proxy = os.environ.get("XBEAM_ZMQ_PROXY") or values.get("zmq_proxy")
    return XbeamConfig(
        resolved_dir, str(uri) if uri else None, str(key) if key else None, sim=sim,
        zmq_proxy=str(proxy) if proxy else None, live=live, path=file if file.is_file() else None,
    )  # fmt: skip
