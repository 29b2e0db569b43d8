"""The user-error family: bad input or an unusable environment, reported without a traceback.

Anything raised as :class:`XbeamInputError` (or a subclass) is the user's to fix and says what to change; the
``xbeam`` command prints it as one line. Any other exception is a bug in xbeam-bluesky and is shown with its
traceback. ``XbeamInputError`` is a ``ValueError``, so code that catches ``ValueError`` keeps working.
"""

from __future__ import annotations


class XbeamInputError(ValueError):
    """Bad input (an argument, a file, a device) named in the message with what was expected."""


class StorageUnavailableError(XbeamInputError):
    """The tiled server cannot be reached or written (the message names the URI and what to do)."""


class OutputPathError(XbeamInputError):
    """An output path that would overwrite an input or cannot be written (named in the message)."""
