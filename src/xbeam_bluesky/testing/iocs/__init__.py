"""Soft IOCs (caproto) that behave like the beamline hardware, for tests and dry runs of ``mode="real"``.

Each module is a CA server process: ``python -m xbeam_bluesky.testing.iocs.<name> --prefix P --port N``.

- :mod:`.motor`: motor records (moves that take time, soft limits, limit switches, STOP/SPMG);
- :mod:`.mono`: the monochromator energy axis (a motor record in eV);
- :mod:`.shutter`: a shutter's command and status records;
- :mod:`.camera`: an areaDetector sCMOS camera (``cam1:``) and its HDF5 file plugin (``HDF1:``) writing frames
  of the simulated phantom, as seen through the energy/stage/shutter PVs of the other IOCs;
- :mod:`.powder`: a 1D powder detector (``cam1:`` driver and ``image1:ArrayData``);
- :mod:`.beamline`: starts all of them and writes the matching ``[epics.*]`` config for ``XBEAM_MODE=real``.

:mod:`._launch` starts and stops them as subprocesses (by PID) on free loopback ports.
"""
