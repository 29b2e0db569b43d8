"""The user-error family: bad input or an unusable environment, reported without a traceback.

Anything raised as :class:`XbeamInputError` (or a subclass) is the user's to fix and says what to change; the
``xbeam`` command prints it as one line and exits with status 2. Any other exception is a bug in xbeam-bluesky
and the command shows its traceback and asks for it to be reported. ``XbeamInputError`` is a ``ValueError``, so
code that catches ``ValueError`` keeps working; :class:`InputFileError` is also a ``FileNotFoundError``.

One subclass per area (decision record 0040)::

    XbeamInputError (ValueError)
    ├── InputFileError (+ FileNotFoundError)  an input file missing, a directory, unreadable or not text
    ├── OutputPathError                       an output that would overwrite an input or cannot be written
    ├── StorageUnavailableError               the tiled server cannot be reached or written
    ├── ConfigError                           a configuration file or profile
    ├── PlanArgumentError                     a plan's arguments, devices in its slots, its md
    ├── SpectrumFormatError                   a spectrum file or array (spectra readers)
    ├── StackFormatError                      an image-stack file (stack readers)
    ├── ClusteringInputError                  arguments and data of the clustering
    ├── DesignInputError                      arguments and files of the experiment planning
    └── RietveldInputError                    instrument and strategy files, refinement arguments
        ├── CifError                          a CIF that cannot be read or describes an impossible structure
        └── PatternFormatError                a powder-pattern file

Internal invariants (a state the code itself should never reach) stay ``ValueError`` / ``RuntimeError``.
This module is pure (no imports) and sits in the lowest layer, so every package can raise these.
"""

from __future__ import annotations


class XbeamInputError(ValueError):
    """Bad input (an argument, a file, a device) named in the message with what was expected."""


class InputFileError(XbeamInputError, FileNotFoundError):
    """An input file that does not exist, is a directory, cannot be read or is not the text it should be."""


class OutputPathError(XbeamInputError):
    """An output path that would overwrite an input or cannot be written (named in the message)."""


class StorageUnavailableError(XbeamInputError):
    """The tiled server cannot be reached or written (the message names the URI and what to do)."""


class ConfigError(XbeamInputError):
    """A configuration file, profile or option that cannot be used (the message names it)."""


class PlanArgumentError(XbeamInputError):
    """A plan argument, a device in a plan slot or user metadata refused before anything moves."""


class SpectrumFormatError(XbeamInputError):
    """A spectrum file or array cannot be used; the message names the file and the problem."""


class StackFormatError(XbeamInputError):
    """A stack file cannot be used; the message names the file and what was expected."""


class ClusteringInputError(XbeamInputError):
    """Arguments or data the clustering cannot use (the message names which and what is needed)."""


class DesignInputError(XbeamInputError):
    """Arguments or a design file the experiment planning cannot use."""


class RietveldInputError(XbeamInputError):
    """An instrument file, a refinement strategy or a refinement argument that cannot be used."""


class CifError(RietveldInputError):
    """A CIF that cannot be read or describes an impossible structure (the message names the file)."""


class PatternFormatError(RietveldInputError):
    """A powder-pattern file that cannot be read or cannot be refined (the message names the file)."""
