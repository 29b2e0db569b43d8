"""xbeam-bluesky: Bluesky plugin for synchrotron XAS imaging and powder XRD.

Layers (enforced by import-linter, see ``pyproject.toml``):

1. ``cli``, ``startup``
2. ``plans``, ``callbacks``, ``storage``
3. ``devices`` (``devices.sim`` physics simulation, ``devices.epics`` real hardware)
4. pure science, no bluesky/ophyd imports: ``spectra``, ``planning``, ``clustering``, ``rietveld``
"""

__version__ = "0.1.0"
