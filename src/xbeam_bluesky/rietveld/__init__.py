"""A Rietveld engine of our own: powder patterns from CIF structures, refined by staged least squares.

Pure numpy/scipy/gemmi; follows GSAS-II's conventions (TCH pseudo-Voigt in centidegrees, FCJ asymmetry,
Kα1/Kα2 doublet, Lorentz–polarisation with P from the instrument file, Bragg–Brentano displacement).
"""

from .crystal import Phase, load_phase
from .instrument import Instrument, read_instrument
from .simulate import simulate_pattern

__all__ = ["Instrument", "Phase", "load_phase", "read_instrument", "simulate_pattern"]
