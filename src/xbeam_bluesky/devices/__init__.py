"""Beamline devices: ``devices.sim`` (physics simulation) and ``devices.epics`` (real hardware)."""
