"""IPython profile for xbeam-bluesky: ``ipython --profile-dir=profiles/profile_xbeam``.

``XBEAM_MODE`` selects the beamline (``sim`` default, ``mock``, ``real``); ``XBEAM_CONFIG`` names the TOML config
(storage, ``[sim]`` options, ``[epics.*]`` PV prefixes). Everything comes from the one ``build_namespace`` the
queueserver and the tests use; this file only adds interactive conveniences.
"""

import os as _os

import bluesky.plans as bp  # noqa: F401
from bluesky.simulators import summarize_plan  # noqa: F401  (dry runs: summarize_plan(xanes_imaging(...)))

from xbeam_bluesky.startup import build_namespace as _build_namespace

globals().update(_build_namespace(_os.environ.get("XBEAM_MODE", "sim"), progress=True))
print(banner)  # noqa: F821 (defined by build_namespace)
