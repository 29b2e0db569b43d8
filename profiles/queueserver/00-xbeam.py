"""bluesky-queueserver startup code: the xbeam beamline namespace, built by ``build_namespace``.

Start the manager with this directory as ``--startup-dir``. The environment of ``start-re-manager`` selects the
beamline: ``XBEAM_MODE`` (``sim`` default, ``mock``, ``real``), ``XBEAM_CONFIG`` (TOML: ``data_dir``, ``tiled_uri``,
``[sim]``, ``[epics.*]``, ``zmq_proxy``), ``XBEAM_DATA_DIR``, ``XBEAM_TILED_URI``, ``XBEAM_TILED_API_KEY``,
``XBEAM_ZMQ_PROXY``. Besides the plugin's plans the common bluesky plans are available; which user group may run
what is set in ``user_group_permissions.yaml``.
"""

import os as _os

from bluesky.plan_stubs import mv, mvr, sleep  # noqa: F401
from bluesky.plans import count, grid_scan, list_scan, rel_grid_scan, rel_scan, scan  # noqa: F401

from xbeam_bluesky.startup import build_namespace as _build_namespace

globals().update(_build_namespace(_os.environ.get("XBEAM_MODE", "sim")))
