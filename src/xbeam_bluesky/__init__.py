"""xbeam-bluesky: Bluesky plugin for synchrotron XAS imaging and powder XRD.

Layers, top to bottom (enforced by import-linter, ``[tool.importlinter]`` in ``pyproject.toml``: a module imports
only from its own layer's package or from layers below; ``|`` = side by side, independent of each other):

1. ``cli``: the ``xbeam`` commands
2. ``startup``: the beamline namespace (IPython profile, queueserver)
3. ``plans`` | ``callbacks``: what the RunEngine runs, and the live analyses of its documents
4. ``storage``: tiled (runs written and read back, analysis results, the spool)
5. ``devices``: ``devices.sim`` (physics simulation) and ``devices.epics`` (real hardware)
6. ``planning``: experiment design (energies, dwell, tiles)
7. ``clustering`` | ``rietveld``: the phase-map clustering and the Rietveld refinement
8. ``spectra``: XAS spectra, noise models, reference libraries
9. ``config``: the xbeam config file
10. ``protocols`` | ``documents`` | ``bundled`` | ``_inputs`` | ``_outputs`` | ``_procs``: what a device offers the
    plans, the start-document schema, where the bundled data are, input and output checks, pool workers that exit
    with their creator (pure modules)
11. ``errors``: the user-error family

The layer contract is exhaustive (every module of the package is in a layer; ``testing`` holds test helpers
only). ``clustering``, ``planning`` and ``devices.epics`` keep their code in private ``_modules`` behind one flat
public namespace, and no other package imports those private modules (a second import-linter contract).

Layers 6-8 are pure science: they never import bluesky, ophyd, tiled or the queueserver. See
``docs/architecture.md`` for how a frame and a pattern travel through them.
"""

__version__ = "0.1.0"
